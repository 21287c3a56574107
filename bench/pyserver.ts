/**
 * On a shared machine OpenMP's default spin-waiting makes 2-thread runs several times slower
 * whenever other processes compete for the cores (measured here: a small-cnn training step took
 * 1.2–2.2 s with 2 spinning threads vs 0.2–0.4 s passive). Both sides of every benchmark
 * therefore run with OMP_WAIT_POLICY=PASSIVE unless the caller sets it: call before the addon loads.
 * It also keeps the benches' speed choices to the run (FISHERLENS_AUTOTUNE_STORE=0).
 */
export function passiveOpenMp(): void {
  process.env.OMP_WAIT_POLICY = process.env.OMP_WAIT_POLICY ?? 'PASSIVE';
  // and the speed choices (exact autotune, gradient engine) are measured in this run, not read
  // from an earlier run's autotune.json (lib/science/tuning-store.ts), unless the caller sets it
  process.env.FISHERLENS_AUTOTUNE_STORE = process.env.FISHERLENS_AUTOTUNE_STORE ?? '0';
}

/** A Python timing server (bench/python/*_bench.py): one JSON line per request, for interleaving. */
import { execFileSync, spawn, ChildProcessWithoutNullStreams } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as readline from 'readline';
import { backend } from '../lib';

/**
 * The median of a side's interleaved runs (NaN when none): the figure every bench's ratio uses.
 * The best run is biased towards whichever side's runs scatter more on a shared machine; the
 * median of at least 5 interleaved runs is not moved by one or two runs that met a load spike.
 */
export function median(v: number[]): number {
  if (v.length === 0) return NaN;
  const s = [...v].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

export const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';

/**
 * One line for a bench's header: the Python side's torch and the LibTorch the addon runs on. A
 * side-by-side figure compares implementations only when both run one LibTorch (Debian:
 * /usr/bin/python3 with the development build; pip torch 2.13: FISHERLENS_PYTHON=<venv>/bin/python
 * with FISHERLENS_ADDON=build-torch2.13-cpu/Release/fisherlens.node, docs/install.md); a
 * mismatch is said loudly, not hidden.
 */
export function torchPairing(): string {
  let py = 'unknown';
  try {
    py = execFileSync(PY, ['-c', 'import torch; print(torch.__version__, torch.__file__)'], { encoding: 'utf8', timeout: 120_000 }).trim();
  } catch { /* reported as unknown */ }
  const [pyVersion, pyFile] = py.split(' ');
  const lt = backend().libtorch;
  // the folder the Python torch's libtorch_cpu really lives in (Debian's python3-torch links to the system library)
  let pyLib = '';
  try { pyLib = path.dirname(fs.realpathSync(path.join(path.dirname(pyFile ?? ''), 'lib', 'libtorch_cpu.so'))); } catch { /* unknown */ }
  const same = pyLib !== '' && pyLib === lt.path;
  return `Python ${PY}: torch ${pyVersion}; addon: LibTorch ${lt.version} at ${lt.path}` +
    (same ? ' (the same LibTorch)' : pyVersion.replace(/\+.*/, '') === lt.version.replace(/\+.*/, '') ? ' (same version, another copy)' : ' — NOT the same LibTorch: ratios compare two versions');
}
export const PY_DIR = path.join(__dirname, '..', '..', 'bench', 'python');

export class PyServer {
  private proc: ChildProcessWithoutNullStreams;
  private lines: AsyncIterableIterator<string>;
  constructor(script: string, args: string[]) {
    this.proc = spawn(PY, [path.join(PY_DIR, script), ...args], { cwd: PY_DIR, env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' } });
    this.proc.stderr.on('data', (d) => process.stderr.write(d));
    this.lines = readline.createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
  }
  async next(): Promise<Record<string, number>> {
    const r = await this.lines.next();
    if (r.done) throw new Error('python benchmark server exited');
    return JSON.parse(r.value) as Record<string, number>;
  }
  async ready(): Promise<void> { await this.next(); }
  /** Runs one timed request; returns seconds. */
  async time(name: string): Promise<number> {
    this.proc.stdin.write(name + '\n');
    return (await this.next())[name];
  }
  close(): void { this.proc.stdin.end(); }
}
