/**
 * Weight files written by PyTorch at test time (scripts/reference/write_weights.py, never
 * committed): Debian's torch 1.13 (PY), and torch 2.x when its venv is on the machine.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import { PY, hasTorch } from './python';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const WRITER = path.join(ROOT, 'scripts', 'reference', 'write_weights.py');
const HASH = createHash('sha1').update(fs.readFileSync(WRITER)).digest('hex').slice(0, 10);

/** torch 2.x's Python: $FISHERLENS_TORCH2_PYTHON, else the venv of scripts/torch-env.sh 2.13-cpu. */
export function torch2Python(): string | null {
  const env = process.env.FISHERLENS_TORCH2_PYTHON;
  if (env) return fs.existsSync(env) ? env : null;
  const root = process.env.FISHERLENS_VENVS ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'fisherlens', 'venv');
  const py = path.join(root, '2.13-cpu', 'bin', 'python');
  return fs.existsSync(py) ? py : null;
}

/** The Pythons to write fixtures with: label → interpreter (Debian's torch first, when present). */
export function fixturePythons(): Map<string, string> {
  const m = new Map<string, string>();
  if (hasTorch('torch')) m.set('torch1', PY);
  const t2 = torch2Python();
  if (t2) m.set('torch2', t2);
  return m;
}

export interface Expected {
  torch: string;
  files: Record<string, { inner: string[]; how?: string; tensors: Record<string, { dtype: string; shape: number[]; b64: string }> }>;
  hostile: Record<string, { pkl?: string; zip?: string; legacy?: string }>;
  hostile_marker: string;
}

/** Writes the fixture set with `python` once per script version (tmp dir + rename: no races). */
export function weightFixtures(label: string, python: string): { dir: string; expected: Expected } {
  const dir = path.join(ROOT, 'test', 'fixtures', 'generated', `weights-${label}-${HASH}`);
  if (!fs.existsSync(path.join(dir, 'expected.json'))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    const r = spawnSync(python, [WRITER, tmp, path.join(dir, 'hostile-marker')], { encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) throw new Error(`write_weights.py (${label}) failed: ${r.stderr || r.error}`);
    try {
      fs.renameSync(tmp, dir);
    } catch {
      fs.rmSync(tmp, { recursive: true, force: true }); // another test file won the race
    }
  }
  return { dir, expected: JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) };
}

export const MODEL_WRITER = path.join(ROOT, 'scripts', 'reference', 'model_weights.py');
const MODEL_HASH = createHash('sha1').update(fs.readFileSync(MODEL_WRITER)).update(fs.readFileSync(path.join(ROOT, 'scripts', 'reference', 'models.py'))).digest('hex').slice(0, 10);

export interface ModelExpected {
  torch: string;
  files: Record<string, { spec: { arch: string } & Record<string, unknown>; x: string; logits: string; how: string; strict: boolean }>;
  /** a scripted lenet and another lenet's state dict (legacy format) with that model's logits on x */
  torchscript: { model: string; weights: string; spec: { arch: string } & Record<string, unknown>; x: string; logits: string };
}

/** State dicts of every built-in in published layouts (model_weights.py write), made once per script version. */
export function modelWeightFixtures(label: string, python: string, cmd: 'write' | 'write-slow' = 'write'): { dir: string; expected: ModelExpected } {
  const dir = path.join(ROOT, 'test', 'fixtures', 'generated', `model-weights${cmd === 'write' ? '' : '-slow'}-${label}-${MODEL_HASH}`);
  if (!fs.existsSync(path.join(dir, 'expected.json'))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    const r = spawnSync(python, [MODEL_WRITER, cmd, tmp], { encoding: 'utf8', timeout: 600_000 });
    if (r.status !== 0) throw new Error(`model_weights.py ${cmd} (${label}) failed: ${r.stderr || r.error}`);
    try {
      fs.renameSync(tmp, dir);
    } catch {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }
  return { dir, expected: JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) };
}

export const PT2_WRITER = path.join(ROOT, 'scripts', 'reference', 'export_pt2.py');

/**
 * The torch.export exporters on this machine: torch 2.13 (the CI venv, scripts/torch-env.sh
 * 2.13-cpu) and torch 2.14.1 where its venv exists (scripts/torch-env.sh 2.14-cu130: developers'
 * machines, `npm run test:slow`), label → its Python.
 */
export function pt2Exporters(): Map<string, string> {
  const m = new Map<string, string>();
  const t213 = torch2Python();
  if (t213) m.set('torch2.13', t213);
  const root = process.env.FISHERLENS_VENVS ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'fisherlens', 'venv');
  const t214 = path.join(root, '2.14-cu130', 'bin', 'python');
  if (fs.existsSync(t214)) m.set('torch2.14', t214);
  return m;
}

/** scripts/reference/export_pt2.py's archives for one exporter, written once per script version (a tmp folder renamed into place: no races). */
export function pt2Fixtures(label: string, python: string): string {
  const hash = createHash('sha1').update(fs.readFileSync(PT2_WRITER)).update(fs.readFileSync(path.join(ROOT, 'scripts', 'reference', 'models.py'))).digest('hex').slice(0, 10);
  const dir = path.join(ROOT, 'test', 'fixtures', 'generated', `pt2-${label}-${hash}`);
  if (!fs.existsSync(path.join(dir, 'expected.json'))) {
    const t = `${dir}.tmp-${process.pid}`;
    fs.rmSync(t, { recursive: true, force: true });
    const r = spawnSync(python, [PT2_WRITER, t], { encoding: 'utf8', timeout: 600_000 });
    if (r.status !== 0) throw new Error(`export_pt2.py (${label}) failed: ${r.stderr || r.error}`);
    try {
      fs.renameSync(t, dir);
    } catch {
      fs.rmSync(t, { recursive: true, force: true });
    }
  }
  return dir;
}
