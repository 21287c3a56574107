import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { execFileSync } from 'child_process';
import { Tensor, Model, FisherLensError } from '../lib';
import { fashionMnist, mnist, cifar10, cifar100, loadNpy, synthetic, augment, loadData, Dataset, DEBIAN_FASHION_MNIST, NpyWriter } from '../lib/science/data';
import { readNpy } from './fisher-fixtures';
import { evaluate } from '../lib/science/model';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-data-'));
const PY = '/usr/bin/python3';

/** An IDX file: magic 0 0 8 ndim, big-endian sizes, bytes. */
function idxBytes(dims: number[], data: Uint8Array): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h[2] = 8;
  h[3] = dims.length;
  dims.forEach((d, i) => h.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([h, Buffer.from(data)]);
}

/** Independent IDX decode (node zlib + manual header parse) of the Debian files. */
function decodeIdx(file: string): { dims: number[]; data: Buffer } {
  const b = zlib.gunzipSync(fs.readFileSync(file));
  const nd = b[3];
  const dims = Array.from({ length: nd }, (_, i) => b.readUInt32BE(4 + 4 * i));
  return { dims, data: b.subarray(4 + 4 * nd) };
}

const haveDebian = fs.existsSync(path.join(DEBIAN_FASHION_MNIST, 't10k-images-idx3-ubyte.gz'));

test('fashionMnist reads the Debian test set exactly (against an independent decode)', async (t) => {
  if (!haveDebian) return t.pass('Debian fashion-mnist not installed');
  const ds = await fashionMnist({ split: 'test' });
  t.is(ds.size, 10000);
  t.deepEqual(ds.imageShape, [1, 28, 28]);
  t.is(ds.numClasses, 10);
  t.is(ds.images.dtype, 'float32');
  const img = decodeIdx(path.join(DEBIAN_FASHION_MNIST, 't10k-images-idx3-ubyte.gz'));
  const lbl = decodeIdx(path.join(DEBIAN_FASHION_MNIST, 't10k-labels-idx1-ubyte.gz'));
  t.deepEqual(img.dims, [10000, 28, 28]);
  // first, a middle and the last image, and all labels
  for (const i of [0, 4321, 9999]) {
    const got = ds.images.slice(i, i + 1).toArray() as Float32Array;
    const want = Float32Array.from(img.data.subarray(i * 784, (i + 1) * 784), (v) => v / 255);
    t.deepEqual(Array.from(got), Array.from(want));
  }
  t.deepEqual(Array.from(ds.labels.toArray() as BigInt64Array, Number), Array.from(lbl.data));
  t.deepEqual(ds.classCounts(), new Array(10).fill(1000));
  ds.dispose();
});

// serial: it sets FISHERLENS_FASHION_MNIST, which every concurrent fashionMnist() call would read
test.serial('fashionMnist honours dir and FISHERLENS_FASHION_MNIST; a missing dir is ERR_IO', async (t) => {
  const dir = path.join(tmp, 'fm');
  fs.mkdirSync(dir);
  const imgs = new Uint8Array(3 * 4 * 4).map((_, i) => i);
  fs.writeFileSync(path.join(dir, 'train-images-idx3-ubyte'), idxBytes([3, 4, 4], imgs));
  fs.writeFileSync(path.join(dir, 'train-labels-idx1-ubyte.gz'), zlib.gzipSync(idxBytes([3], new Uint8Array([2, 0, 9]))));
  const a = await fashionMnist({ dir, split: 'train' });
  t.deepEqual(a.images.shape, [3, 1, 4, 4]);
  t.deepEqual(Array.from(a.labels.toArray() as BigInt64Array, Number), [2, 0, 9]);
  t.is((a.images.toArray() as Float32Array)[47], Math.fround(47 / 255));
  process.env.FISHERLENS_FASHION_MNIST = dir;
  try {
    t.is((await fashionMnist({ split: 'train' })).size, 3);
  } finally {
    delete process.env.FISHERLENS_FASHION_MNIST;
  }
  t.is((await t.throwsAsync<FisherLensError>(fashionMnist({ dir: path.join(tmp, 'nope') })))?.code, 'ERR_IO');
  t.is((await t.throwsAsync<FisherLensError>(mnist(dir, { split: 'test' })))?.code, 'ERR_IO');
});

test('IDX: counts that disagree, labels out of range, wrong dtype, wrong ndim -> ERR_FORMAT with the file name', async (t) => {
  const dir = path.join(tmp, 'bad-idx');
  fs.mkdirSync(dir);
  const img = path.join(dir, 'train-images-idx3-ubyte');
  const lbl = path.join(dir, 'train-labels-idx1-ubyte');
  fs.writeFileSync(img, idxBytes([3, 2, 2], new Uint8Array(12)));
  const cases: [Buffer, RegExp][] = [
    [idxBytes([2], new Uint8Array([1, 2])), /has 2 labels but .* has 3 images/],
    [idxBytes([3], new Uint8Array([1, 10, 2])), /label 10 is out of range/],
    [Buffer.from([0, 0, 0x0d, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), /data type 0xd is not supported/],
    [idxBytes([3, 1], new Uint8Array(3)), /with 1 dimensions, got 2/],
    [Buffer.concat([idxBytes([3], new Uint8Array(3)), Buffer.from([0])]), /extra bytes/],
  ];
  for (const [bytes, re] of cases) {
    fs.writeFileSync(lbl, bytes);
    const e = await t.throwsAsync<FisherLensError>(mnist(dir));
    t.is(e?.code, 'ERR_FORMAT');
    t.regex(e?.message ?? '', re);
    t.true(e?.message.includes(dir), e?.message);
  }
});

/** Writes a CIFAR binary file with n records: label bytes, then pixel value (i + j) % 256. */
function cifarRecords(n: number, labels: number[][]): Buffer {
  const lb = labels[0].length;
  const b = Buffer.alloc(n * (lb + 3072));
  for (let i = 0; i < n; i++) {
    const o = i * (lb + 3072);
    for (let k = 0; k < lb; k++) b[o + k] = labels[i][k];
    for (let j = 0; j < 3072; j++) b[o + lb + j] = (i * 7 + j) % 256;
  }
  return b;
}

test('CIFAR-10 and CIFAR-100 binary readers: layout, labels, splits, errors', async (t) => {
  const d10 = path.join(tmp, 'c10', 'cifar-10-batches-bin');
  fs.mkdirSync(d10, { recursive: true });
  for (let f = 1; f <= 5; f++) fs.writeFileSync(path.join(d10, `data_batch_${f}.bin`), cifarRecords(2, [[f], [f + 1]]));
  fs.writeFileSync(path.join(d10, 'test_batch.bin'), cifarRecords(3, [[0], [9], [4]]));
  const tr = await cifar10(path.dirname(d10), 'train');
  t.deepEqual(tr.images.shape, [10, 3, 32, 32]);
  t.deepEqual(Array.from(tr.labels.toArray() as BigInt64Array, Number), [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
  const te = await loadData(path.dirname(d10));  // auto-detected, split test
  t.deepEqual(Array.from(te.labels.toArray() as BigInt64Array, Number), [0, 9, 4]);
  // record 1 of the test file: channel-major R, G, B planes of 32×32, value (7 + j) % 256 / 255
  const px = te.images.slice(1, 2).toArray() as Float32Array;
  t.is(px[0], Math.fround(7 / 255));
  t.is(px[1024 + 33], Math.fround(((7 + 1024 + 33) % 256) / 255));
  fs.writeFileSync(path.join(d10, 'test_batch.bin'), cifarRecords(1, [[10]]));
  const e = await t.throwsAsync<FisherLensError>(cifar10(d10, 'test'));
  t.is(e?.code, 'ERR_FORMAT');
  t.regex(e?.message ?? '', /test_batch\.bin.*label 10/);
  fs.writeFileSync(path.join(d10, 'test_batch.bin'), cifarRecords(1, [[1]]).subarray(0, 3000));
  t.regex((await t.throwsAsync<FisherLensError>(cifar10(d10, 'test')))?.message ?? '', /not a whole number of CIFAR-10 records/);

  const d100 = path.join(tmp, 'c100', 'cifar-100-binary');
  fs.mkdirSync(d100, { recursive: true });
  fs.writeFileSync(path.join(d100, 'train.bin'), cifarRecords(2, [[3, 99], [19, 0]]));
  fs.writeFileSync(path.join(d100, 'test.bin'), cifarRecords(1, [[0, 5]]));
  const fine = await cifar100(d100, 'train');
  t.is(fine.numClasses, 100);
  t.deepEqual(Array.from(fine.labels.toArray() as BigInt64Array, Number), [99, 0]);
  const coarse = await cifar100(path.dirname(d100), 'train', { labels: 'coarse' });
  t.is(coarse.numClasses, 20);
  t.deepEqual(Array.from(coarse.labels.toArray() as BigInt64Array, Number), [3, 19]);
  t.is((await loadData(`cifar100:${d100}`, { split: 'test' })).size, 1);
});

function py(code: string): string {
  return execFileSync(PY, ['-c', code], { encoding: 'utf8' });
}

test('NumPy .npy: dtypes, layouts and labels written by numpy', async (t) => {
  const d = path.join(tmp, 'npy');
  fs.mkdirSync(d);
  py(`
import numpy as np
rng = np.random.default_rng(0)
x = rng.random((5, 3, 4, 4))
np.save('${d}/x64.npy', x)
np.save('${d}/x32.npy', x.astype(np.float32))
np.save('${d}/xhwc.npy', np.ascontiguousarray(x.transpose(0, 2, 3, 1)).astype(np.float32))
np.save('${d}/xu8.npy', (x[:, 0] * 255).astype(np.uint8))
np.save('${d}/y.npy', np.array([0, 1, 2, 1, 4], dtype=np.int64))
np.save('${d}/yu8.npy', np.array([0, 1, 2, 1, 4], dtype=np.uint8))
np.save('${d}/yf.npy', np.array([0, 1, 2, 1, 4], dtype=np.float32))
np.save('${d}/yneg.npy', np.array([0, -1, 2, 1, 4], dtype=np.int64))
np.save('${d}/xbig.npy', x * 255)
np.save('${d}/xfortran.npy', np.asfortranarray(x))
np.save('${d}/xbe.npy', x.astype('>f8'))
np.save('${d}/xshort.npy', x[:3])
np.savetxt('${d}/ref.txt', x.reshape(-1), fmt='%.17g')
`);
  const ref = fs.readFileSync(path.join(d, 'ref.txt'), 'utf8').trim().split('\n').map(Number);
  const a = await loadNpy(path.join(d, 'x64.npy'), path.join(d, 'y.npy'));
  t.deepEqual(a.images.shape, [5, 3, 4, 4]);
  t.is(a.numClasses, 5);
  const got = a.images.toArray() as Float32Array;
  t.true(ref.every((v, i) => Math.abs(got[i] - Math.fround(v)) === 0));
  const b = await loadNpy(path.join(d, 'x32.npy'));  // labels: sibling y.npy
  t.deepEqual(Array.from(b.images.toArray() as Float32Array), Array.from(got));
  const c = await loadNpy(path.join(d, 'xhwc.npy'), path.join(d, 'yu8.npy'));
  t.deepEqual(c.images.shape, [5, 3, 4, 4]);
  t.deepEqual(Array.from(c.images.toArray() as Float32Array), Array.from(got));
  const u = await loadNpy(path.join(d, 'xu8.npy'), path.join(d, 'y.npy'));
  t.deepEqual(u.images.shape, [5, 1, 4, 4]);
  const u8 = u.images.toArray() as Float32Array;
  // a byte k read as float32 k/255 against the float64 quotient: half a float32 ulp below 1, ≤ 3e-8
  t.true(Array.from(u8).every((v, i) => Math.abs(v - Math.floor(ref[Math.floor(i / 16) * 48 + (i % 16)] * 255) / 255) < 1e-7));
  const viaLoadData = await loadData(path.join(d, 'x64.npy'), { labels: path.join(d, 'y.npy') });
  t.is(viaLoadData.size, 5);
  const bad: [string, string, RegExp][] = [
    ['x64.npy', 'yf.npy', /labels must be integers/],
    ['x64.npy', 'yneg.npy', /label -1 is out of range/],
    ['xbig.npy', 'y.npy', /must lie in \[0, 1\]/],
    ['xfortran.npy', 'y.npy', /Fortran-order/],
    ['xbe.npy', 'y.npy', /dtype '>f8' is not supported/],
    ['xshort.npy', 'y.npy', /has 5 labels but .* has 3 images/],
  ];
  for (const [x, y, re] of bad) {
    const e = await t.throwsAsync<FisherLensError>(loadNpy(path.join(d, x), path.join(d, y)));
    t.is(e?.code, 'ERR_FORMAT', `${x} ${y}: ${e?.message}`);
    t.regex(e?.message ?? '', re);
  }
});

test('synthetic sets are seeded and have the structure they promise', async (t) => {
  const a = await synthetic({ kind: 'gaussian', n: 600, numClasses: 4, size: 4, noise: 0.05, seed: 3 });
  const b = await synthetic({ kind: 'gaussian', n: 600, numClasses: 4, size: 4, noise: 0.05, seed: 3 });
  const c = await synthetic({ kind: 'gaussian', n: 600, numClasses: 4, size: 4, noise: 0.05, seed: 4 });
  const xa = a.images.toArray() as Float32Array;
  t.deepEqual(Array.from(xa), Array.from(b.images.toArray() as Float32Array));
  t.notDeepEqual(Array.from(xa), Array.from(c.images.toArray() as Float32Array));
  t.true(xa.every((v) => v >= 0 && v <= 1));
  // nearest class mean (estimated from the data) classifies nearly all points
  const y = Array.from(a.labels.toArray() as BigInt64Array, Number);
  const D = 16;
  const means = Array.from({ length: 4 }, () => new Float64Array(D));
  const counts = new Array(4).fill(0);
  y.forEach((k, i) => { counts[k]++; for (let j = 0; j < D; j++) means[k][j] += xa[i * D + j]; });
  means.forEach((m, k) => m.forEach((_, j) => (m[j] /= counts[k])));
  let ok = 0;
  y.forEach((k, i) => {
    const d = means.map((m) => m.reduce((s, v, j) => s + (xa[i * D + j] - v) ** 2, 0));
    if (d.indexOf(Math.min(...d)) === k) ok++;
  });
  t.log(`nearest-mean accuracy ${ok / 600}`);
  // class means ~0.8 apart (uniform in [0.25, 0.75]¹⁶, native/data.cc) against noise of 0.05 per
  // pixel: the midpoint between two means is ~8σ away; measured 1.0
  t.true(ok / 600 > 0.98, `nearest-mean accuracy ${ok / 600}`);
  const lin = await synthetic({ kind: 'linear', n: 300, numClasses: 3, size: 3, margin: 0.1, seed: 1 });
  t.deepEqual(lin.images.shape, [300, 1, 3, 3]);
  t.true(lin.classCounts().every((n) => n > 30));
});

test('augment: every output image is a padded crop (optionally mirrored) of its input; seeded', async (t) => {
  const B = 16, C = 2, H = 6, W = 5, pad = 2;
  const data = Float32Array.from({ length: B * C * H * W }, (_, i) => ((i * 37) % 101) / 101 + 0.001);
  const x = Tensor.from(data, [B, C, H, W]);
  const y1 = (await augment(x, { seed: 7, pad })).toArray() as Float32Array;
  const y2 = (await augment(x, { seed: 7, pad })).toArray() as Float32Array;
  const y3 = (await augment(x, { seed: 8, pad })).toArray() as Float32Array;
  t.deepEqual(Array.from(y1), Array.from(y2));
  t.notDeepEqual(Array.from(y1), Array.from(y3));
  const at = (b: number, c: number, i: number, j: number) =>
    i < 0 || i >= H || j < 0 || j >= W ? 0 : data[((b * C + c) * H + i) * W + j];
  let flips = 0;
  for (let b = 0; b < B; b++) {
    let found = 0;
    for (let dy = -pad; dy <= pad; dy++) for (let dx = -pad; dx <= pad; dx++) for (const mirror of [false, true]) {
      let same = true;
      for (let c = 0; c < C && same; c++) for (let i = 0; i < H && same; i++) for (let j = 0; j < W && same; j++) {
        const jj = mirror ? W - 1 - j : j;
        if (y1[((b * C + c) * H + i) * W + j] !== at(b, c, i + dy, jj + dx)) same = false;
      }
      if (same) { found++; if (mirror) flips++; }
    }
    t.true(found >= 1, `image ${b} is no crop of its input`);
  }
  t.true(flips > 0 && flips < B, `${flips} of ${B} mirrored`);
  // the float32 CPU kernel and the generic tensor-op path (float64) make the same crops
  const y64 = (await augment(x.to('float64'), { seed: 7, pad })).toArray() as Float64Array;
  t.deepEqual(Array.from(y64), Array.from(y1));
  const noop = (await augment(x, { seed: 1, pad: 0, flip: false })).toArray() as Float32Array;
  t.deepEqual(Array.from(noop), Array.from(data));
});

test('Dataset: augmentedBatches, split, subsets', async (t) => {
  const ds = await synthetic({ n: 50, channels: 3, size: 8, numClasses: 5, seed: 2 });
  let seen = 0;
  const order: number[] = [];
  for await (const b of ds.augmentedBatches({ batchSize: 16, shuffle: true, seed: 1 })) {
    t.deepEqual(b.x.shape.slice(1), [3, 8, 8]);
    t.deepEqual(b.y.toNumbers(), ds.labels.index(Tensor.from(BigInt64Array.from(b.indices.map(BigInt)), [b.indices.length])).toNumbers());
    seen += b.indices.length;
    order.push(...b.indices);
  }
  t.is(seen, 50);
  t.deepEqual([...order].sort((p, q) => p - q), Array.from({ length: 50 }, (_, i) => i));
  const [a, b] = await ds.split(0.8, { seed: 3 });
  t.is(a.size, 40);
  t.is(b.size, 10);
  const all = [...a.classCounts()].map((v, k) => v + b.classCounts()[k]);
  t.deepEqual(all, ds.classCounts());
  await t.throwsAsync(ds.split(1.5), { code: 'ERR_ARG' } as never);
  t.is(ds.device, 'cpu');
  t.is(await ds.to('cpu'), ds);
});

test('loadData: names, directories and errors', async (t) => {
  const s = await loadData('synthetic:linear');
  t.is(s.size, 1000);
  t.is((await t.throwsAsync<FisherLensError>(loadData('no-such-thing')))?.code, 'ERR_ARG');
  t.is((await t.throwsAsync<FisherLensError>(loadData('mnist')))?.code, 'ERR_ARG');
  const notNpy = path.join(tmp, 'plain.txt');
  fs.writeFileSync(notNpy, 'hello');
  t.is((await t.throwsAsync<FisherLensError>(loadData(notNpy)))?.code, 'ERR_FORMAT');
  if (haveDebian) t.is((await loadData('fashion-mnist', { split: 'test' })).size, 10000);
});

test('evaluate: accuracy and mean cross-entropy match a float64 computation from the logits', async (t) => {
  const ds: Dataset = await synthetic({ n: 70, size: 6, numClasses: 4, seed: 5 });
  const m = Model.create({ arch: 'mlp', inputSize: 6, numClasses: 4, hidden: [16] });
  const r = await evaluate(m, ds, { batchSize: 32 });
  const z = (await m.forward(ds.images)).toArray() as Float32Array;
  const y = Array.from(ds.labels.toArray() as BigInt64Array, Number);
  let correct = 0, ce = 0, nearTies = 0;
  y.forEach((k, i) => {
    const row = Array.from(z.subarray(i * 4, i * 4 + 4));
    const mx = Math.max(...row);
    const lse = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0));
    ce += lse - row[k];
    if (row.indexOf(mx) === k) correct++;
    // top two logits within 1e-5 (the bound on Δz below): another batch shape's rounding may flip the arg-max
    if (mx - [...row].sort((a, b) => b - a)[1] <= 1e-5) nearTies++;
  });
  t.is(r.count, 70);
  t.true(Math.abs(r.accuracy - correct / 70) <= nearTies / 70 + 1e-12, `accuracy ${r.accuracy} vs ${correct / 70} (${nearTies} near ties)`);
  // evaluate() ran batches of 32, the reference one forward of 70: float32 logits differ by
  // batch shape and CPU in the last bits; the mean CE moves by at most 2·max|Δz| (|∂CE/∂z|₁ ≤ 2),
  // so 1e-5 allows Δz up to 5e-6, ~40 float32 ulps of these O(1) logits
  t.true(Math.abs(r.crossEntropy - ce / 70) < 1e-5, `${r.crossEntropy} vs ${ce / 70}`);
});

test('NpyWriter: tensors appended natively (float64 converted to float32) and JS values form one .npy; a wrong count is ERR_IO and leaves no file', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-npyw-'));
  try {
    const a = Float64Array.from({ length: 2 * 3 * 4 }, (_, k) => Math.sin(k) / 3);
    const b = Float32Array.from({ length: 3 * 4 }, (_, k) => k - 0.25);
    const file = path.join(dir, 'x.npy');
    const w = new NpyWriter(file, [3, 1, 3, 4]);
    const ta = Tensor.from(a, [2, 1, 3, 4]);
    await w.append(ta);
    ta.dispose();
    w.appendValues(b);
    w.close();
    const r = readNpy(file);
    t.deepEqual(r.shape, [3, 1, 3, 4]);
    // float32 rounding of each float64 value is exact and unique (Math.fround), so equality is exact
    t.deepEqual(Array.from(r.data as Float32Array), [...Array.from(a, Math.fround), ...Array.from(b)]);
    const bad = new NpyWriter(path.join(dir, 'bad.npy'), [5]);
    await bad.append(Tensor.from(Float32Array.of(1, 2), [2]));
    t.throws(() => bad.close(), { code: 'ERR_IO', message: /wrote 2 of 5 values/ } as never);
    t.deepEqual(fs.readdirSync(dir).sort(), ['x.npy']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
