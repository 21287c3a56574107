/**
 * Shared by the fisher and metrics tests: the TorchScript fixture made at test time by
 * scripts/reference/fisher_ref.py (never committed), .npy reading/writing, and runs of the Python
 * float64 reference on the same files.
 */
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import { Tensor } from '../lib';

export const ROOT = path.resolve(__dirname, '..', '..');
export const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';
export const REF = path.join(ROOT, 'scripts', 'reference', 'fisher_ref.py');
// keyed by the reference script's content and the Python running it (CI's two legs run it with
// Debian's torch 1.13 and a pip torch 2.13), so a changed reference or another torch never meets
// stale cached results
const REF_HASH = createHash('sha1').update(fs.readFileSync(REF)).update(PY).digest('hex').slice(0, 10);
export const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'generated', `fisher-tiny-${REF_HASH}`);

function runPy(args: string[]): string {
  if (!fs.existsSync(PY)) throw new Error(`the Python reference needs ${PY} with torch 1.13 and numpy (python3-torch); set FISHERLENS_PYTHON`);
  const r = spawnSync(PY, [REF, ...args], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`python reference failed (${args[0]}): ${r.stderr || r.error}`);
  return r.stdout;
}

/** Makes the fixture once (tmp dir + rename, so parallel test files do not race). */
export function ensureFixture(): string {
  if (fs.existsSync(path.join(FIXTURE, 'done'))) return FIXTURE;
  const tmp = `${FIXTURE}.tmp-${process.pid}`;
  fs.mkdirSync(tmp, { recursive: true });
  runPy(['make-fixture', '--out', tmp]);
  fs.writeFileSync(path.join(tmp, 'done'), '');
  try {
    fs.renameSync(tmp, FIXTURE);
  } catch {
    fs.rmSync(tmp, { recursive: true, force: true });  // another process won the race
  }
  return FIXTURE;
}

/**
 * Runs the Python reference's `fisher` on a model and inputs; returns its JSON (cached per key).
 * With `hutchinson`, also the Hutchinson estimates of the explicit G on the probes the native op
 * draws for that seed (hutch* arrays; empty without it).
 */
export function refFisher(model: string, x: string, v: string | null, key: string, hutchinson?: { probes: number; seed: number }): {
  lambdaMax: number[]; trace: number[]; frobenius: number[]; spectrum: number[][]; eigvec: number[][];
  probs: number[][]; vGv: number[]; logits: number[][];
  hutchTrace: number[]; hutchTraceSe: number[]; hutchFrobenius: number[]; hutchFrobeniusSe: number[];
} {
  const out = path.join(FIXTURE, `ref-${key}.json`);
  if (!fs.existsSync(out)) {
    const tmp = `${out}.${process.pid}`;
    const h = hutchinson ? ['--probes', String(hutchinson.probes), '--seed', String(hutchinson.seed)] : [];
    runPy(['fisher', '--model', model, '--x', x, ...(v ? ['--v', v] : []), ...h, '--out', tmp]);
    fs.renameSync(tmp, out);
  }
  return JSON.parse(fs.readFileSync(out, 'utf8'));
}

export function refCckl(logits: string, labels: string, out: string): {
  cckl: number; jsMean: number; lowerBound: number; pairs: number; accuracy: number; crossEntropy: number;
} {
  runPy(['cckl', '--logits', logits, '--labels', labels, '--out', out]);
  return JSON.parse(fs.readFileSync(out, 'utf8'));
}

type NpyData = Float32Array | Float64Array | BigInt64Array;
/** Reads a little-endian .npy file (float32, float64, int64; C order). */
export function readNpy(file: string): { data: NpyData; shape: number[] } {
  const buf = fs.readFileSync(file);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const off = major === 1 ? 10 : 12;
  const header = buf.subarray(off, off + hlen).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)![1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)![1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const body = buf.subarray(off + hlen);
  const ab = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);
  const data = descr === '<f4' ? new Float32Array(ab) : descr === '<f8' ? new Float64Array(ab) : descr === '<i8' ? new BigInt64Array(ab) : null;
  if (!data) throw new Error(`readNpy: unsupported dtype ${descr}`);
  return { data, shape };
}

/** Writes a .npy file (version 1.0) of float32 / float64 / int64 data. */
export function writeNpy(file: string, data: NpyData, shape: number[]): void {
  const descr = data instanceof Float32Array ? '<f4' : data instanceof Float64Array ? '<f8' : '<i8';
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

export function npyTensor(file: string): Tensor {
  const { data, shape } = readNpy(file);
  return Tensor.from(data, shape);
}

/** max_i |a_i − b_i|; Infinity when the lengths differ. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return a.length === b.length ? m : Infinity;
}

export function relErr(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-300);
}

/** Largest relative error of a against b, relative to max |b| (for vectors with tiny entries). */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0, s = 0;
  for (let i = 0; i < b.length; i++) s = Math.max(s, Math.abs(b[i]));
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(s, 1e-300));
  return m;
}
