/**
 * The reliability suite's helpers: the CLI run in this process (one LibTorch load for a whole
 * table of cases), the one-line error contract, temp folders, a TorchScript fixture whose logits
 * are NaN for some samples, and .npy writing.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';

export const ROOT = path.resolve(__dirname, '..', '..', '..');
export const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
export const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';

export interface CliResult { code: number; stdout: string; stderr: string }

class ExitCalled extends Error {
  constructor(readonly exitCode: number) { super(`process.exit(${exitCode})`); }
}

/**
 * Runs `fisherlens <args>` in this process and captures its output and exit code. Only one at a
 * time (stdout/stderr are shared): call it from `test.serial` tests.
 */
export async function cli(args: string[]): Promise<CliResult> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(path.join(ROOT, 'dist', 'lib', 'cli', 'main.js')) as { main(argv: string[]): Promise<void> };
  let stdout = '';
  let stderr = '';
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  const oexit = process.exit.bind(process);
  const prevCode = process.exitCode;
  process.exitCode = undefined;
  (process.stdout as { write: unknown }).write = (s: string | Uint8Array) => { stdout += String(s); return true; };
  (process.stderr as { write: unknown }).write = (s: string | Uint8Array) => { stderr += String(s); return true; };
  (process as { exit: unknown }).exit = (c?: number) => { throw new ExitCalled(c ?? 0); };
  let code: number;
  try {
    await mod.main(args);
    code = Number(process.exitCode ?? 0);
  } catch (e) {
    if (!(e instanceof ExitCalled)) throw e;
    code = e.exitCode;
  } finally {
    (process.stdout as { write: unknown }).write = ow;
    (process.stderr as { write: unknown }).write = ew;
    (process as { exit: unknown }).exit = oexit;
    process.exitCode = prevCode;
  }
  return { code, stdout, stderr };
}

/** The failure contract: exactly one `fisherlens: ERR_X: …` line on stderr, no stack trace. Returns the code. */
export function errorLine(r: CliResult): { code: string | null; lines: number; stack: boolean; line: string } {
  const lines = r.stderr.split('\n').filter((l) => /^fisherlens: /.test(l));
  const m = lines.length === 1 ? /^fisherlens: (ERR_[A-Z]+): \S/.exec(lines[0]) : null;
  return { code: m ? m[1] : null, lines: lines.length, stack: /\n\s+at .+:\d+:\d+\)?/.test(r.stderr), line: lines[0] ?? '' };
}

export function tmpDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `fl-rel-${tag}-`));
}

/** Files whose name says "temporary" (`*.tmp-<pid>…`) anywhere under `dir`. */
export function tempLitter(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name));
      else if (/\.tmp-\d+/.test(e.name)) out.push(path.join(d, e.name));
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out;
}

export function writeNpy(file: string, data: Float32Array | Float64Array | BigInt64Array | Uint8Array, shape: number[]): void {
  const descr = data instanceof Float32Array ? '<f4' : data instanceof Float64Array ? '<f8' : data instanceof BigInt64Array ? '<i8' : '|u1';
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

/**
 * A small data set in `dir`: images.npy [n, 1, 8, 8] float32 in [0, 1] (image i is all zeros when
 * zero[i], else a ramp in [0.1, 0.9]) and labels.npy [n] int64 in [0, 3).
 */
export function smallData(dir: string, zero: boolean[]): { images: string; labels: string } {
  const n = zero.length;
  const x = new Float32Array(n * 64);
  for (let i = 0; i < n; i++) for (let j = 0; j < 64; j++) x[i * 64 + j] = zero[i] ? 0 : 0.1 + 0.8 * (((i * 7 + j) % 64) / 63);
  const y = BigInt64Array.from(zero.map((_, i) => BigInt(i % 3)));
  const images = path.join(dir, 'images.npy');
  const labels = path.join(dir, 'labels.npy');
  writeNpy(images, x, [n, 1, 8, 8]);
  writeNpy(labels, y, [n]);
  return { images, labels };
}

/**
 * TorchScript models for [B, 1, 8, 8] inputs and 3 classes, made with Python's torch (float32):
 * `nan.pt` adds log(Σx − 1) to the logits, NaN for an all-zero image and finite otherwise;
 * `linear.pt` is a plain linear layer (for the float64-input case). Returns the folder.
 */
export function scriptModels(dir: string): { nan: string; linear: string } {
  const code = `
import sys, torch
torch.manual_seed(0)
class Lin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 3)
    def forward(self, x):
        return self.fc(x.flatten(1))
class Nan(Lin):
    def forward(self, x):
        s = x.flatten(1).sum(1, keepdim=True)
        return self.fc(x.flatten(1)) + torch.log(s - 1.0)
torch.jit.save(torch.jit.script(Nan()), sys.argv[1] + '/nan.pt')
torch.jit.save(torch.jit.script(Lin()), sys.argv[1] + '/linear.pt')
`;
  // torch.jit.script reads the module's source: it must come from a file
  const script = path.join(dir, 'make_models.py');
  fs.writeFileSync(script, code);
  const r = spawnSync(PY, [script, dir], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`python3-torch (${PY}) could not make the TorchScript fixtures: ${r.stderr || r.error}`);
  return { nan: path.join(dir, 'nan.pt'), linear: path.join(dir, 'linear.pt') };
}
