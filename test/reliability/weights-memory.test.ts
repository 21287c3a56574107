/**
 * Peak memory of reading weights: a child process reads one file and reports its peak RSS
 * (process.resourceUsage().maxRSS). Files that declare huge shapes or storages — 2^80 elements
 * over a stride-0 view, a 2^60-element legacy storage record, a 2^40 × 2^40 safetensors tensor over
 * 64 MiB of data, a header length of 2^62 — are refused without allocating what they declare: the
 * child's peak stays within the baseline (the same child reading a 1 KiB file) plus the file's
 * size plus 32 MiB (V8's heap growing with the parse, module loading noise). A valid 64 MiB file
 * read fully stays within the same bound, since its tensors are views of the file's bytes.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { ROOT, tmpDir } from './harness';
import { fixturePythons, modelWeightFixtures, weightFixtures } from '../helpers/weights-fixtures';

const dir = tmpDir('weights-mem');
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));
const MIB = 1024 * 1024;
const SLACK = 32 * MIB;

/** Runs a child that reads `file` with readWeightsFile and materialises every tensor; its peak RSS in bytes and outcome. */
function child(file: string): { peak: number; outcome: string } {
  const code = `
const w = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'science', 'weights'))});
w.readWeightsFile(process.argv[1]).then((f) => {
  let n = 0;
  for (const t of f.tensors) n += w.contiguousBytes(t).length;
  return 'read ' + f.tensors.length + ' tensors, ' + n + ' bytes';
}, (e) => (e.code || 'no code') + ': ' + e.message).then((outcome) => {
  process.stdout.write(JSON.stringify({ peak: process.resourceUsage().maxRSS * 1024, outcome }));
});`;
  const r = spawnSync(process.execPath, ['-e', code, file], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** A safetensors file: `header` as given, then `dataBytes` zero bytes. */
function safetensors(file: string, header: object, dataBytes: number, headerLen?: bigint): string {
  let h = Buffer.from(JSON.stringify(header));
  h = Buffer.concat([h, Buffer.alloc(-h.length & 7, 0x20)]);
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(headerLen ?? BigInt(h.length));
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, Buffer.concat([n, h]));
  const chunk = Buffer.alloc(MIB);
  for (let left = dataBytes; left > 0; left -= MIB) fs.writeSync(fd, chunk, 0, Math.min(MIB, left));
  fs.closeSync(fd);
  return file;
}

test.serial('reading files that declare huge sizes peaks below baseline + file size + 32 MiB', (t) => {
  const D = 64 * MIB;
  const small = safetensors(path.join(dir, 'small.safetensors'), { a: { dtype: 'F32', shape: [256], data_offsets: [0, 1024] } }, 1024);
  const base = child(small);
  t.regex(base.outcome, /^read 1 tensors/);
  const cases: [string, string, RegExp][] = [
    ['valid 64 MiB', safetensors(path.join(dir, 'valid.safetensors'), { a: { dtype: 'F32', shape: [D / 8], data_offsets: [0, D / 2] }, b: { dtype: 'F32', shape: [D / 16, 2], data_offsets: [D / 2, D] } }, D), /^read 2 tensors, 67108864 bytes/],
    ['2^40 × 2^40 over 64 MiB', safetensors(path.join(dir, 'huge.safetensors'), { a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, D] } }, D), /^ERR_FORMAT: .*needs 4835703278458516698824704 bytes/],
    ['header length 2^62', safetensors(path.join(dir, 'hlen.safetensors'), { a: { dtype: 'F32', shape: [D / 4], data_offsets: [0, D] } }, D, 2n ** 62n), /^ERR_FORMAT: .*header length/],
  ];
  const py = fixturePythons().get('torch1');
  if (py) {
    const { dir: fx } = weightFixtures('torch1', py);
    cases.push(
      ['2^80-element stride-0 view (zip)', path.join(fx, 'crafted-huge-shape.pt'), /^ERR_FORMAT: .*overlapping view/],
      ['2^80-element stride-0 view (legacy)', path.join(fx, 'crafted-huge-shape-legacy.pt'), /^ERR_FORMAT: .*overlapping view/],
      ['2^60-element legacy storage record', path.join(fx, 'crafted-lying-numel-legacy.pt'), /^ERR_FORMAT: .*lying header/],
    );
  } else {
    t.log('no python3-torch: the torch-file cases are skipped');
  }
  const rows: string[] = [];
  for (const [what, file, outcome] of cases) {
    const size = fs.statSync(file).size;
    const r = child(file);
    t.regex(r.outcome, outcome, what);
    const over = r.peak - base.peak;
    rows.push(`${what}: file ${(size / MIB).toFixed(1)} MiB, peak ${(r.peak / MIB).toFixed(1)} MiB (+${(over / MIB).toFixed(1)} over baseline ${(base.peak / MIB).toFixed(1)})`);
    t.true(over <= size + SLACK, `${what}: peak ${r.peak} exceeds baseline ${base.peak} + file ${size} + ${SLACK}`);
  }
  t.log(rows.join('\n'));
});

/** A child that builds `spec` and, when `file` is given, loads it with loadWeights: peak RSS in bytes. */
function loadChild(spec: object, file?: string): { peak: number; outcome: string } {
  const code = `
const { Model } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
const m = Model.create(JSON.parse(process.argv[1]));
(process.argv[2] ? m.loadWeights(process.argv[2]).then((r) => 'loaded ' + r.loaded, (e) => e.code + ': ' + e.message) : Promise.resolve('built'))
  .then((outcome) => process.stdout.write(JSON.stringify({ peak: process.resourceUsage().maxRSS * 1024, outcome })));`;
  const r = spawnSync(process.execPath, ['-e', code, JSON.stringify(spec), ...(file ? [file] : [])], { encoding: 'utf8', timeout: 300_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

test.serial('loadWeights peaks below the built model + the file + 32 MiB', (t) => {
  const py = fixturePythons().get('torch1');
  if (!py) return t.pass('no python3-torch: no state dict to load');
  const { dir: fx, expected } = modelWeightFixtures('torch1', py);
  const rows: string[] = [];
  for (const file of ['vgg16.pt', 'preact-resnet18.pt']) {
    const spec = expected.files[file].spec;
    const size = fs.statSync(path.join(fx, file)).size;
    const built = loadChild(spec);
    const loaded = loadChild(spec, path.join(fx, file));
    t.regex(loaded.outcome, /^loaded \d+/);
    const over = loaded.peak - built.peak;
    rows.push(`${file}: file ${(size / MIB).toFixed(1)} MiB, model built ${(built.peak / MIB).toFixed(1)} MiB, loaded ${(loaded.peak / MIB).toFixed(1)} MiB (+${(over / MIB).toFixed(1)})`);
    t.true(over <= size + SLACK, `${file}: loading added ${over} bytes for a ${size}-byte file`);
  }
  t.log(rows.join('\n'));
});
