/**
 * Checkpoints (bit-exact round trip, meta, RNG state, atomic write, truncated / corrupted /
 * mismatched files), Model.from detection, TorchScript export back to PyTorch, and the eval CLI.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync, spawnSync } from 'child_process';
import { Model, Tensor, FisherLensError, evaluate, loadNpy } from '../lib';
import { modelHandle } from '../lib/science/model';
import { addon } from '../lib/binding/native';
import { testAddon } from './helpers/test-hooks';

const root = path.resolve(__dirname, '..', '..');
const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-ckpt-'));
process.env.FISHERLENS_PYTHON = PY;

/** A resnet20 with non-trivial BatchNorm buffers: weights written by PyTorch (seeded). */
async function trainedLike(): Promise<Model> {
  const pt = path.join(tmp, 'r20.pt');
  if (!fs.existsSync(pt)) {
    execFileSync(PY, ['-c', `
import sys, torch
sys.path.insert(0, '${root}/scripts/reference')
import models
torch.manual_seed(0)
m = models.build({'arch': 'resnet20', 'mean': [0.3], 'std': [0.2]})
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_mean.uniform_(-0.1, 0.1); mod.running_var.uniform_(0.5, 1.5); mod.num_batches_tracked.fill_(11)
torch.jit.script(m.eval()).save('${pt}')
`]);
  }
  const ts = await Model.load(pt);
  const ck = path.join(tmp, 'r20-from-ts.ckpt');
  await ts.save(ck);
  const m = Model.create({ arch: 'resnet20', mean: [0.3], std: [0.2] });
  await m.loadState(ck);
  ts.dispose();
  return m;
}

function probe(n = 4): Tensor {
  return Tensor.from(Float32Array.from({ length: n * 784 }, (_, i) => ((i * 7919) % 1000) / 1000), [n, 1, 28, 28]);
}

async function sameState(t: { true: (v: boolean, m?: string) => void; deepEqual: (a: unknown, b: unknown) => void }, a: Model, b: Model) {
  const [sa, sb] = [await a.state(), await b.state()];
  t.deepEqual([...sa.keys()].sort(), [...sb.keys()].sort());
  for (const [k, v] of sa) {
    const w = sb.get(k)!;
    t.deepEqual(v.shape, w.shape);
    const [x, y] = [v.toArray(), w.toArray()];
    let same = x.length === y.length && v.dtype === w.dtype;
    for (let i = 0; same && i < x.length; i++) same = Object.is(x[i], y[i]);
    t.true(same, `${k} differs`);
  }
}

test('checkpoint round trip is bit-exact: every parameter and buffer, logits, meta', async (t) => {
  const m = await trainedLike();
  const file = path.join(tmp, 'a.ckpt');
  const meta = { epoch: 7, history: [{ loss: 0.5 }, { loss: 0.25 }], note: 'π' };
  await m.save(file, { meta });
  t.deepEqual(fs.readdirSync(tmp).filter((f) => f.startsWith('a.ckpt.tmp-')), [], 'no temporary file left');
  t.is(fs.readFileSync(file).subarray(0, 6).toString(), 'FLCKPT');
  const back = await Model.loadCheckpoint(file);
  t.deepEqual(back.checkpointMeta, meta);
  t.false(back.checkpoint!.hasOptimizer);
  t.deepEqual(back.spec, m.spec);
  await sameState(t, m, back);
  const x = probe();
  t.deepEqual((await back.forward(x)).toNumbers(), (await m.forward(x)).toNumbers());
  // BatchNorm running statistics came through (the buffers PyTorch wrote)
  const st = await back.state();
  t.is(Number((st.get('layer1.0.bn1.num_batches_tracked')!.toArray() as BigInt64Array)[0]), 11);
});

test.serial('the CPU generator state is saved and restored with restoreRng', async (t) => {
  const file = path.join(tmp, 'rng.ckpt');
  const m = Model.create({ arch: 'mlp', inputSize: 4, hidden: [8] });
  await m.save(file);
  const a = Model.create({ arch: 'mlp', inputSize: 4, hidden: [8] });  // initialised from the generator
  await Model.loadCheckpoint(file);  // does not touch the generator
  const b = Model.create({ arch: 'mlp', inputSize: 4, hidden: [8] });
  await Model.loadCheckpoint(file, { restoreRng: true });
  const c = Model.create({ arch: 'mlp', inputSize: 4, hidden: [8] });
  const w = async (q: Model) => (await q.state()).get('fcs.0.weight')!.toNumbers();
  t.notDeepEqual(await w(a), await w(b));
  t.deepEqual(await w(a), await w(c));
});

test('truncated and corrupted checkpoints are ERR_FORMAT; mismatched ones change nothing', async (t) => {
  const m = await trainedLike();
  const file = path.join(tmp, 'good.ckpt');
  await m.save(file, { meta: { epoch: 1 } });
  const good = fs.readFileSync(file);
  const bad = path.join(tmp, 'bad.ckpt');
  const cuts = [0, 3, 6, 10, 19, 20, 21, 100, ...Array.from({ length: 20 }, (_, i) => Math.floor((good.length * (i + 1)) / 21)), good.length - 1];
  for (const n of cuts) {
    fs.writeFileSync(bad, good.subarray(0, n));
    const e = await t.throwsAsync<FisherLensError>(Model.loadCheckpoint(bad));
    t.is(e?.code, 'ERR_FORMAT', `cut at ${n}: ${e?.message}`);
  }
  for (let k = 0; k < 25; k++) {
    const b = Buffer.from(good);
    const at = 20 + Math.floor(((k * 7919) % 1000) / 1000 * (good.length - 20));
    b[at] ^= 0x5a;
    fs.writeFileSync(bad, b);
    const e = await t.throwsAsync<FisherLensError>(Model.loadCheckpoint(bad));
    t.is(e?.code, 'ERR_FORMAT', `byte ${at} flipped`);
    t.regex(e?.message ?? '', /corrupted|bad\.ckpt/);
  }
  const future = Buffer.from(good);
  future.writeUInt16LE(99, 6);  // a format version from the future (the header is outside the CRC)
  fs.writeFileSync(bad, future);
  t.regex((await t.throwsAsync<FisherLensError>(Model.loadCheckpoint(bad)))?.message ?? '', /format version 99; this FisherLens reads versions 1\.\.2/);
  fs.writeFileSync(bad, Buffer.concat([good, Buffer.from([0])]));
  t.is((await t.throwsAsync<FisherLensError>(Model.loadCheckpoint(bad)))?.code, 'ERR_FORMAT');
  // a checkpoint of another architecture: ERR_FORMAT, the model keeps its weights
  const other = Model.create({ arch: 'resnet32' });
  const x = probe(2);
  const before = (await other.forward(x)).toNumbers();
  const e = await t.throwsAsync<FisherLensError>(other.loadState(file));
  t.is(e?.code, 'ERR_FORMAT');
  t.regex(e?.message ?? '', /does not match the model/);
  t.deepEqual((await other.forward(x)).toNumbers(), before);
  // same names, other shapes (numClasses 7): also refused before anything is copied
  const seven = Model.create({ arch: 'resnet20', numClasses: 7, mean: [0.3], std: [0.2] });
  const z7 = (await seven.forward(x)).toNumbers();
  t.regex((await t.throwsAsync<FisherLensError>(seven.loadState(file)))?.message ?? '', /linear\.weight' has shape/);
  t.deepEqual((await seven.forward(x)).toNumbers(), z7);
  // missing file, unwritable target
  t.is((await t.throwsAsync<FisherLensError>(Model.loadCheckpoint(path.join(tmp, 'none.ckpt'))))?.code, 'ERR_IO');
  t.is((await t.throwsAsync<FisherLensError>(m.save(path.join(tmp, 'no-dir', 'x.ckpt'))))?.code, 'ERR_IO');
});

test('Model.from tells spec objects, spec files, checkpoints and TorchScript apart by content', async (t) => {
  const m = await trainedLike();
  const ck = path.join(tmp, 'weights.bin');
  await m.save(ck);
  const specFile = path.join(tmp, 'spec.json');
  fs.writeFileSync(specFile, JSON.stringify({ arch: 'lenet', numClasses: 4 }));
  const pt = path.join(tmp, 'model-no-extension');
  fs.copyFileSync(path.join(tmp, 'r20.pt'), pt);
  t.is((await Model.from({ arch: 'mnist-net' })).spec.arch, 'mnist-net');
  const fromSpec = await Model.from(specFile);
  t.is(fromSpec.spec.arch, 'lenet');
  t.is(fromSpec.parameterCount, Model.create({ arch: 'lenet', numClasses: 4 }).parameterCount);
  const fromCk = await Model.from(ck);
  t.is(fromCk.kind, 'builtin');
  const fromPt = await Model.from(pt);
  t.is(fromPt.kind, 'torchscript');
  const x = probe(2);
  const z = Array.from((await m.forward(x)).toArray() as Float32Array);
  t.deepEqual((await fromCk.forward(x)).toNumbers(), z);
  const zt = (await fromPt.forward(x)).toArray() as Float32Array;
  // the same weights run as the built-in and as PyTorch's TorchScript graph: float32 kernels in
  // another op order (~6e-8 per op over resnet20's ~20 layers, |z| ≲ 1): ~1e-6; 1e-5 on any CPU
  t.true(z.every((v, i) => Math.abs(v - zt[i]) < 1e-5));
  const junk = path.join(tmp, 'junk');
  fs.writeFileSync(junk, 'not a model');
  t.is((await t.throwsAsync<FisherLensError>(Model.from(junk)))?.code, 'ERR_FORMAT');
  t.is((await t.throwsAsync<FisherLensError>(Model.from(path.join(tmp, 'missing.json'))))?.code, 'ERR_IO');
});

test('TorchScript models save and reload their weights through a checkpoint', async (t) => {
  const ts = await Model.load(path.join(tmp, 'r20.pt'));
  const file = path.join(tmp, 'ts.ckpt');
  await ts.save(file, { meta: { from: 'pytorch' } });
  const back = await Model.loadCheckpoint(file);
  t.is(back.kind, 'torchscript');
  t.deepEqual(back.checkpointMeta, { from: 'pytorch' });
  await sameState(t, ts, back);
});

test('exportTorchScript: PyTorch reloads a built-in model with the same logits (< 1e-5)', async (t) => {
  const m = await trainedLike();
  const out = path.join(tmp, 'exported.pt');
  await m.exportTorchScript(out);
  const x = probe(3);
  const z = (await m.forward(x)).toArray() as Float32Array;
  // in PyTorch itself
  const xs = path.join(tmp, 'x.json');
  fs.writeFileSync(xs, JSON.stringify(Array.from(x.toArray() as Float32Array)));
  const r = spawnSync(PY, ['-c', `
import json, torch
m = torch.jit.load('${out}')
x = torch.tensor(json.load(open('${xs}')), dtype=torch.float32).view(3, 1, 28, 28)
print(json.dumps(m(x).flatten().tolist()))
`], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const zp = JSON.parse(r.stdout) as number[];
  // PyTorch's process runs the exported graph with its own thread count and op order: float32
  // rounding only, as above (~1e-6 on these logits), so 1e-5
  t.true(zp.every((v, i) => Math.abs(v - z[i]) < 1e-5), 'PyTorch logits of the exported model');
  // and back in FisherLens as a TorchScript model
  const back = await Model.load(out);
  const zb = (await back.forward(x)).toArray() as Float32Array;
  t.true(zb.every((v, i) => Math.abs(v - z[i]) < 1e-5));
});

test('fisherlens eval --json matches evaluate() on the same data', async (t) => {
  const m = await trainedLike();
  const ck = path.join(tmp, 'eval.ckpt');
  await m.save(ck);
  const d = path.join(tmp, 'npy');
  fs.mkdirSync(d, { recursive: true });
  execFileSync(PY, ['-c', `
import numpy as np
rng = np.random.default_rng(1)
np.save('${d}/x.npy', rng.random((50, 28, 28, 1)).astype(np.float32))
np.save('${d}/y.npy', rng.integers(0, 10, 50))
`]);
  const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');
  const r = spawnSync(process.execPath, [cli, 'eval', '--model', ck, '--data', path.join(d, 'x.npy'), '--labels', path.join(d, 'y.npy'), '--batch-size', '16', '--json'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const got = JSON.parse(r.stdout) as { accuracy: number; crossEntropy: number; count: number };
  const ds = await loadNpy(path.join(d, 'x.npy'), path.join(d, 'y.npy'));
  const want = await evaluate(m, ds, { batchSize: 50 });
  t.is(got.count, 50);
  // The CLI ran batches of 16, evaluate() one of 50: float32 convolutions block and sum by batch
  // shape and CPU (AVX2 vs AVX-512, OpenBLAS/oneDNN kernels), so the logits agree only to float32
  // rounding, not bit for bit. Bound: a logit moves by at most DZ = 1e-4 · max(1, max|z|) (about
  // 800 float32 ulps of the largest logit; this resnet20 sums at most 576 products per output);
  // cross-entropy is 1-Lipschitz per sample in each logit's L1 sum (|∂CE/∂z|₁ = |p − e_y|₁ ≤ 2),
  // so the means differ by at most 2·DZ; a sample's arg-max can change only where its top two
  // logits lie within 2·DZ of each other.
  const z = (await m.forward(ds.images)).toArray() as Float32Array;
  const K = z.length / 50;
  const DZ = 1e-4 * Math.max(1, ...Array.from(z, Math.abs));
  let nearTies = 0;
  for (let i = 0; i < 50; i++) {
    const row = Array.from(z.subarray(i * K, (i + 1) * K)).sort((a, b) => b - a);
    if (row[0] - row[1] <= 2 * DZ) nearTies++;
  }
  t.true(Math.abs(got.accuracy - want.accuracy) <= nearTies / 50, `accuracy ${got.accuracy} vs ${want.accuracy} (${nearTies} near ties)`);
  t.true(Math.abs(got.crossEntropy - want.crossEntropy) <= 2 * DZ, `cross-entropy ${got.crossEntropy} vs ${want.crossEntropy} (bound ${2 * DZ})`);
  ds.dispose();
  const bad = spawnSync(process.execPath, [cli, 'eval', '--model', ck, '--data', path.join(d, 'nope.npy')], { encoding: 'utf8' });
  t.is(bad.status, 1);
  t.regex(bad.stderr, /^fisherlens: ERR_ARG: /);
});

test('optimizer state round-trips through the "optimizer" sub-archive (C++ API used by training)', async (t) => {
  const m = Model.create({ arch: 'small-cnn' });
  const file = path.join(tmp, 'opt.ckpt');
  const r = await testAddon().__checkpointOptimizerSelfTest(modelHandle(m), file);
  t.true(r.hasOptimizer);
  t.is(r.steps, 2);
  t.is(r.maxDiff, 0);
  const back = await Model.loadCheckpoint(file);
  t.true(back.checkpoint!.hasOptimizer);
});
