/**
 * Table-driven CLI fuzz: every subcommand × missing / folder / corrupt / odd-dtype files, bad
 * numbers and bad enums. Each case must fail with its exit code, exactly one
 * `fisherlens: ERR_X: …` line naming the expected code, no stack trace, and leave no output file
 * that looks valid. All cases run in this process (one LibTorch load).
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { cli, errorLine, tmpDir, smallData, writeNpy, tempLitter } from './harness';
import { encodeSafetensors } from '../../lib/science/weights';

const dir = tmpDir('fuzz');
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const d = smallData(dir, Array.from({ length: 6 }, () => false));
const f = (name: string, content: string | Buffer) => { const p = path.join(dir, name); fs.writeFileSync(p, content); return p; };
const MISSING = path.join(dir, 'no-such-file.npy');
const EMPTY_DIR = path.join(dir, 'empty-dir');
fs.mkdirSync(EMPTY_DIR);
const GARBAGE = f('garbage.pt', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 2654435761) % 251)));
const TRUNC_NPY = f('trunc.npy', fs.readFileSync(d.images).subarray(0, 200));
const NOT_NPY = f('text.npy', 'just text\n');
const C8 = path.join(dir, 'complex.npy');
writeNpy(C8, new Float32Array(6 * 64 * 2), [6, 1, 8, 8]);
fs.writeFileSync(C8, fs.readFileSync(C8).toString('latin1').replace("'<f4'", "'<c8'"), 'latin1');
// int64 pixels: a dtype .npy allows but images are not
const I64 = path.join(dir, 'i64.npy');
writeNpy(I64, new BigInt64Array(6 * 64), [6, 1, 8, 8]);
const BIG_ENDIAN = path.join(dir, 'be.npy');
writeNpy(BIG_ENDIAN, new Float32Array(6 * 64), [6, 1, 8, 8]);
fs.writeFileSync(BIG_ENDIAN, fs.readFileSync(BIG_ENDIAN).toString('latin1').replace("'<f4'", "'>f4'"), 'latin1');
const FLOAT_LABELS = path.join(dir, 'flabels.npy');
writeNpy(FLOAT_LABELS, new Float32Array(6), [6]);
const SHORT_LABELS = path.join(dir, 'slabels.npy');
writeNpy(SHORT_LABELS, new BigInt64Array(4), [4]);
const BAD_YAML = f('bad.yaml', 'name: x\nruns: [\n');
const BAD_ENUM_CFG = f('enum.yaml', 'name: x\nruns:\n  - model: { arch: mlp }\n    data: { dataset: synthetic }\n    train: { method: tradez }\n');
const FILE_AS_DIR = f('plain-file', 'x');
// an inline spec that fits the 1×8×8, 3-class data, so only the case's own defect can fail
const MODEL = '{"arch":"mlp","inChannels":1,"inputSize":8,"numClasses":3}';
// a state dict (safetensors) of that mlp with a 5-class last layer: it fits nothing here
const WRONG_WEIGHTS = f('wrong.safetensors', encodeSafetensors([
  [256, 64], [256], [256, 256], [256], [5, 256], [5],
].map((shape, i) => ({ name: `fcs.${i >> 1}.${i % 2 ? 'bias' : 'weight'}`, dtype: 'float32' as const, shape, data: Buffer.alloc(4 * shape.reduce((a, b) => a * b, 1)) }))));

type Case = { args: string[]; code: string; exit?: number; out?: string };
const out = (name: string) => path.join(dir, 'outs', name);
const DATA = ['--data', d.images, '--labels', d.labels];
const cases: Case[] = [];
// the commands that read a model and data, each with every kind of bad file and flag
for (const cmd of ['eval', 'fisher', 'cckl', 'attack', 'train']) {
  const extra = cmd === 'train' ? ['--probe-size', '0', '--epochs', '1'] : [];
  const add = (args: string[], code: string, exit?: number) => {
    const o = out(`${cmd}-${cases.length}`);
    const outArgs = cmd === 'attack' ? ['--out', `${o}.npy`] : cmd === 'train' ? ['--out', o] : [];
    cases.push({ args: [cmd, ...args, ...extra, ...outArgs], code, exit, out: outArgs.length ? o : undefined });
  };
  add(['--model', MISSING.replace('.npy', '.pt'), ...DATA], 'ERR_IO');
  add(['--model', EMPTY_DIR, ...DATA], 'ERR_IO');
  add(['--model', GARBAGE, ...DATA], 'ERR_FORMAT');
  add(['--model', '{"arch": "mlp", ', ...DATA], 'ERR_ARG');
  add(['--model', '{"arch": "nope"}', ...DATA], 'ERR_ARG');
  add(['--model', WRONG_WEIGHTS, ...DATA], 'ERR_FORMAT');
  add(['--model', MODEL, '--weights', MISSING.replace('.npy', '.pt'), ...DATA], 'ERR_IO');
  add(['--model', MODEL, '--weights', GARBAGE, ...DATA], 'ERR_FORMAT');
  add(['--model', MODEL, '--weights', WRONG_WEIGHTS, ...DATA], 'ERR_FORMAT');
  add(['--model', MODEL, '--weights', EMPTY_DIR, ...DATA], 'ERR_IO');
  add(['--model', MODEL, '--weights-entry', 'ema', ...DATA], 'ERR_ARG');
  add(['--model', MODEL, '--data', MISSING, '--labels', d.labels], 'ERR_ARG');
  add(['--model', MODEL, '--data', EMPTY_DIR], 'ERR_ARG');
  add(['--model', MODEL, '--data', TRUNC_NPY, '--labels', d.labels], 'ERR_FORMAT');
  add(['--model', MODEL, '--data', NOT_NPY, '--labels', d.labels], 'ERR_FORMAT');
  add(['--model', MODEL, '--data', C8, '--labels', d.labels], 'ERR_FORMAT');
  add(['--model', MODEL, '--data', BIG_ENDIAN, '--labels', d.labels], 'ERR_FORMAT');
  add(['--model', MODEL, '--data', I64, '--labels', d.labels], 'ERR_FORMAT');
  add(['--model', MODEL, '--data', d.images, '--labels', EMPTY_DIR], 'ERR_IO');
  add(['--model', MODEL, '--data', d.images, '--labels', FLOAT_LABELS], 'ERR_FORMAT');
  add(['--model', MODEL, '--data', d.images, '--labels', SHORT_LABELS], 'ERR_FORMAT');
  add(['--model', MODEL, '--data', 'cifar10:' + EMPTY_DIR], 'ERR_IO');
  add(['--model', MODEL, ...DATA, '--device', 'tpu'], 'ERR_DEVICE');
  add(['--model', MODEL, ...DATA, '--batch-size', 'abc'], 'ERR_ARG');
  add(['--model', MODEL, ...DATA, '--batch-size', '0'], 'ERR_ARG');
  add(['--model', MODEL, ...DATA, '--batch-size', '1e400'], 'ERR_ARG');
  add(['--model', MODEL, ...DATA, '--batch-size', '0x10'], 'ERR_ARG');
  add(['--model', MODEL, ...DATA, '--batch-size', ''], 'ERR_ARG');
  add(['--model', MODEL, ...DATA, '--nope'], 'ERR_ARG', 2);
  if (cmd !== 'train') add(['--model', MODEL, ...DATA, '--limit', '-1'], 'ERR_ARG');
  if (cmd !== 'train') add(['--model', MODEL, ...DATA, '--split', 'valid'], 'ERR_ARG');
}
cases.push(
  { args: ['attack', '--model', MODEL, ...DATA, '--attack', 'nope'], code: 'ERR_ARG' },
  { args: ['attack', '--model', MODEL, ...DATA, '--norm', 'l3'], code: 'ERR_ARG' },
  { args: ['attack', '--model', MODEL, ...DATA, '--epsilon', 'NaN'], code: 'ERR_ARG' },
  { args: ['attack', '--model', MODEL, ...DATA, '--epsilon', '-0.1'], code: 'ERR_ARG' },
  { args: ['attack', '--model', MODEL, ...DATA, '--restarts', '0'], code: 'ERR_ARG' },
  { args: ['attack', '--model', MODEL, ...DATA, '--preset', 'nope'], code: 'ERR_ARG' },
  { args: ['attack', '--model', MODEL, ...DATA, '--out', path.join(FILE_AS_DIR, 'adv.npy')], code: 'ERR_IO' },
  { args: ['fisher', '--model', MODEL, ...DATA, '--method', 'nope'], code: 'ERR_ARG' },
  { args: ['fisher', '--model', MODEL, ...DATA, '--method', 'power', '--tol', 'abc'], code: 'ERR_ARG' },
  { args: ['cckl', '--model', MODEL, ...DATA, '--pairs', '-5'], code: 'ERR_ARG' },
  { args: ['train', '--model', MODEL, ...DATA, '--method', 'nope'], code: 'ERR_ARG' },
  { args: ['train', '--model', MODEL, ...DATA, '--optimizer', 'nope'], code: 'ERR_ARG' },
  { args: ['train', '--model', MODEL, ...DATA, '--schedule', 'nope'], code: 'ERR_ARG' },
  { args: ['train', '--model', MODEL, ...DATA, '--preset', 'nope'], code: 'ERR_ARG' },
  { args: ['train', '--model', MODEL, ...DATA, '--epochs', '1.5'], code: 'ERR_ARG' },
  { args: ['train', '--model', MODEL, ...DATA, '--lr', '0'], code: 'ERR_ARG' },
  { args: ['train', '--model', MODEL, ...DATA, '--out', path.join(FILE_AS_DIR, 'run')], code: 'ERR_IO' },
  { args: ['train', '--model', MODEL, ...DATA, '--out', '/proc/self/fl'], code: 'ERR_IO' },
  { args: ['profile', 'fisher', '--model', MODEL, '--batch', '0,-1'], code: 'ERR_ARG' },
  { args: ['profile', 'fisher', '--model', MODEL, '--methods', 'nope'], code: 'ERR_ARG' },
  { args: ['profile', 'fisher', '--model', MODEL, '--repeats', '0x3'], code: 'ERR_ARG' },
  { args: ['profile', 'fisher', '--model', GARBAGE], code: 'ERR_FORMAT' },
  { args: ['run', MISSING.replace('.npy', '.yaml')], code: 'ERR_IO' },
  { args: ['run', EMPTY_DIR], code: 'ERR_IO' },
  { args: ['run', BAD_YAML], code: 'ERR_CONFIG' },
  { args: ['run', BAD_ENUM_CFG], code: 'ERR_CONFIG' },
  { args: ['run', BAD_ENUM_CFG, '--max-runs', 'x'], code: 'ERR_ARG' },
  { args: ['run'], code: 'ERR_ARG', exit: 2 },
  { args: ['report', MISSING], code: 'ERR_IO' },
  { args: ['report', FILE_AS_DIR], code: 'ERR_IO' },
  { args: ['demo', '--config', MISSING], code: 'ERR_IO' },
  { args: ['nope'], code: 'ERR_ARG', exit: 2 },
  { args: ['info', '--nope'], code: 'ERR_ARG', exit: 2 },
  { args: ['info', '--model', GARBAGE], code: 'ERR_FORMAT' },
  { args: ['info', '--model', MISSING], code: 'ERR_IO' },
  { args: ['profile', 'fisher', '--model', MODEL, '--weights', WRONG_WEIGHTS], code: 'ERR_FORMAT' },
  { args: ['report', EMPTY_DIR, '--out', '/proc/self/fl-report'], code: 'ERR_IO' },
  { args: ['run', BAD_ENUM_CFG, '--out', '/proc/self/fl-runs'], code: 'ERR_CONFIG' },
);

/** An output that "looks valid": a non-empty .npy/.pt/.json/.jsonl file under `p`. */
function validLooking(p: string | undefined): string[] {
  if (!p) return [];
  const found: string[] = [];
  for (const q of [p, `${p}.npy`]) {
    if (!fs.existsSync(q)) continue;
    const st = fs.statSync(q);
    if (st.isFile() && st.size > 0) found.push(q);
    if (st.isDirectory()) {
      for (const n of fs.readdirSync(q)) if (/\.(npy|pt|json|jsonl)$/.test(n) && fs.statSync(path.join(q, n)).size > 0) found.push(path.join(q, n));
    }
  }
  return found;
}

test.serial(`CLI fuzz: ${cases.length} bad invocations, one coded line each, no stack, no valid-looking output`, async (t) => {
  const failed: string[] = [];
  for (const c of cases) {
    const r = await cli(c.args);
    const e = errorLine(r);
    const exit = c.exit ?? 1;
    const problems: string[] = [];
    if (r.code !== exit) problems.push(`exit ${r.code} (expected ${exit})`);
    if (e.lines !== 1) problems.push(`${e.lines} 'fisherlens:' lines`);
    if (e.code !== c.code) problems.push(`code ${e.code} (expected ${c.code}): ${e.line}`);
    if (e.stack) problems.push('stack trace');
    if (r.stdout.trim() !== '') problems.push(`stdout: ${r.stdout.slice(0, 80)}`);
    const outs = validLooking(c.out);
    if (outs.length) problems.push(`output left: ${outs.join(', ')}`);
    if (problems.length) failed.push(`${c.args.map((a) => a.replace(dir, '<tmp>')).join(' ')}\n    ${problems.join('; ')}`);
  }
  t.log(`${cases.length} cases, ${cases.length - failed.length} held, ${failed.length} failed`);
  t.deepEqual(failed, []);
  t.deepEqual(tempLitter(dir), []);
});
