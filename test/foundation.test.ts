import test from 'ava';
import { backend, setThreads, Tensor, memory, Model, FisherLensError } from '../lib';
import { addon } from '../lib/binding/native';
import { testAddon } from './helpers/test-hooks';
import { runOp } from '../lib/binding/op';

// Serial tests run before the concurrent ones: this one forks while no op is running.
test.serial('the allocator policy: freed blocks stay in the heap (glibc-reuse) unless FISHERLENS_MALLOC=system', (t) => {
  t.is(backend().allocator, process.env.FISHERLENS_MALLOC === 'system' ? 'system' : 'glibc-reuse');
  const probe = `process.stdout.write(require(${JSON.stringify(require.resolve('../lib'))}).backend().allocator)`;
  const { execFileSync } = require('child_process') as typeof import('child_process');
  t.is(execFileSync(process.execPath, ['-e', probe], { env: { ...process.env, FISHERLENS_MALLOC: 'system' } }).toString(), 'system');
  t.is(execFileSync(process.execPath, ['-e', probe], { env: { ...process.env, FISHERLENS_MALLOC: '' } }).toString(), 'glibc-reuse');
});

test('backend reports versions, threads = cores, OpenBLAS', (t) => {
  const b = backend();
  t.regex(b.torchVersion, /^\d+\.\d+/);
  t.is(typeof b.cuda, 'boolean');
  t.is(b.cuda ? b.cudaDeviceCount > 0 : b.cudaDeviceCount === 0, true);
  t.true(b.threads >= 1);
  t.is(b.addonVersion, b.packageVersion);
  t.regex(b.blas, /blas/i);
});

test('intra-op threads apply on worker threads and are settable', async (t) => {
  const n = require('os').availableParallelism?.() ?? require('os').cpus().length;
  t.is(await testAddon().noop(), backend().threads);
  setThreads(1);
  t.is(await testAddon().noop(), 1);
  setThreads(n);
  t.is(await testAddon().noop(), n);
  t.throws(() => setThreads(0), { instanceOf: FisherLensError });
});

test('tensor round trip for every dtype keeps values and shape', (t) => {
  const cases: [ArrayLike<number | bigint> & { constructor: unknown }, string][] = [
    [new Float32Array([1.5, -2, 3.25, 0, 7, 8]), 'float32'],
    [new Float64Array([1e-300, -2, Math.PI, 0, 7, 8]), 'float64'],
    [new BigInt64Array([1n, -2n, 3n, 2n ** 40n, 7n, 8n]), 'int64'],
    [new Int32Array([1, -2, 3, 4, 7, 8]), 'int32'],
    [new Uint8Array([1, 2, 3, 255, 7, 8]), 'uint8'],
  ];
  for (const [arr, dtype] of cases) {
    const x = Tensor.from(arr as never, [2, 3]);
    t.deepEqual(x.shape, [2, 3]);
    t.is(x.dtype as string, dtype);
    t.is(x.device, 'cpu');
    t.deepEqual(Array.from(x.toArray() as never), Array.from(arr as never));
    x.dispose();
  }
});

test('typed array views with offsets are read from their offset', (t) => {
  const buf = new Float32Array([9, 9, 1, 2, 3, 4]);
  const x = Tensor.from(buf.subarray(2), [4]);
  t.deepEqual(Array.from(x.toArray() as Float32Array), [1, 2, 3, 4]);
});

test('nested arrays, index, slice, reshape', (t) => {
  const x = Tensor.fromNested([[1, 2], [3, 4], [5, 6]]);
  t.deepEqual(x.shape, [3, 2]);
  const idx = Tensor.fromNested([2, 0], { dtype: 'int64' });
  t.deepEqual(x.index(idx).toNumbers(), [5, 6, 1, 2]);
  t.deepEqual(x.slice(1, 3).toNumbers(), [3, 4, 5, 6]);
  t.deepEqual(x.reshape([2, 3]).shape, [2, 3]);
  t.throws(() => Tensor.fromNested([[1, 2], [3]]), { code: 'ERR_SHAPE' } as never);
  t.throws(() => x.index(Tensor.fromNested([3], { dtype: 'int64' })), { code: 'ERR_SHAPE' } as never);
  t.throws(() => x.index(Tensor.fromNested([0])), { code: 'ERR_DTYPE' } as never);
  t.throws(() => x.slice(2, 1), { code: 'ERR_SHAPE' } as never);
  t.throws(() => x.reshape([4, 2]), { code: 'ERR_SHAPE' } as never);
});

test('bad tensor input gives clear errors, never a crash', (t) => {
  const e1 = t.throws(() => Tensor.from(new Float32Array(3), [2, 2]), { instanceOf: FisherLensError });
  t.is(e1?.code, 'ERR_SHAPE');
  t.regex(e1?.message ?? '', /4 elements but data has 3/);
  t.is(t.throws(() => Tensor.from(new Float32Array(3), [-1, 3]), { instanceOf: FisherLensError })?.code, 'ERR_SHAPE');
  t.is(t.throws(() => Tensor.from(new Int16Array(3) as never, [3]), { instanceOf: FisherLensError })?.code, 'ERR_DTYPE');
  t.is(t.throws(() => Tensor.from(new Float32Array(3), [3], { device: 'cuda:7' }), { instanceOf: FisherLensError })?.code, 'ERR_DEVICE');
  t.is(t.throws(() => Tensor.from(new Float32Array(3), [3], { device: 'tpu' }), { instanceOf: FisherLensError })?.code, 'ERR_DEVICE');
  t.is(t.throws(() => Model.create({ arch: 'small-cnn' }, { device: 'cuda' }), { instanceOf: FisherLensError })?.code, 'ERR_DEVICE');
});

test('disposed tensors are a clear error and memory() tracks live tensors', (t) => {
  const before = memory();
  const x = Tensor.from(new Float32Array(1000), [10, 100]);
  const during = memory();
  t.is(during.tensors - before.tensors, 1);
  t.is(during.bytes - before.bytes, 4000);
  x.dispose();
  t.true(x.disposed);
  t.deepEqual(memory(), before);
  const e = t.throws(() => x.toArray(), { instanceOf: FisherLensError });
  t.is(e?.code, 'ERR_DISPOSED');
  t.is(t.throws(() => x.shape, { instanceOf: FisherLensError })?.code, 'ERR_DISPOSED');
  x.dispose(); // twice is harmless
  t.is(String(x), 'Tensor(disposed)');
});

test.serial('async ops: abort rejects with ERR_ABORTED long before the op would end', async (t) => {
  // A 5 s op aborted after 50 ms: it must stop at its next check (every 5 ms natively). The
  // latency itself is a figure printed by bench/foundation (this machine is shared and noisy).
  const ac = new AbortController();
  let abortedAt = 0;
  setTimeout(() => { abortedAt = Date.now(); ac.abort(); }, 50);
  const err = await t.throwsAsync(runOp({ signal: ac.signal }, (ctl) => testAddon().spin(5000, ctl)), { instanceOf: FisherLensError });
  const latency = Date.now() - abortedAt;
  t.is(err?.code, 'ERR_ABORTED');
  t.true(abortedAt > 0 && latency < 2500, `rejected ${latency} ms after abort`);
  t.log(`abort → rejection: ${latency} ms`);
  // an already-aborted signal never starts the op
  await t.throwsAsync(runOp({ signal: ac.signal }, (ctl) => testAddon().spin(5000, ctl)), { code: 'ERR_ABORTED' } as never);
});

test('async ops: progress events arrive on the main thread while the op runs', async (t) => {
  const events: number[] = [];
  await runOp({ onProgress: (e) => { if (e.type === 'elapsed') events.push(e.elapsedMs); } }, (ctl) => testAddon().spin(200, ctl));
  t.true(events.length >= 3, `${events.length} events`);
  t.true(events.every((v, i) => i === 0 || v >= events[i - 1]));
});

test.serial('the event loop keeps running during a long op', async (t) => {
  // A blocked loop would give no tick at all while the 300 ms op runs
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  await testAddon().spin(300);
  clearInterval(timer);
  t.true(ticks >= 3, `${ticks} ticks in 300 ms`);
});

test('model forward: shapes, bad input and concurrent use on one model', async (t) => {
  const m = Model.create({ arch: 'small-cnn' });
  const x = Tensor.from(new Float32Array(4 * 784).fill(0.5), [4, 1, 28, 28]);
  const outs = await Promise.all([m.forward(x), m.forward(x), m.forward(x)]);
  for (const z of outs) t.deepEqual(z.shape, [4, 10]);
  t.deepEqual(outs[0].toNumbers(), outs[2].toNumbers());
  t.is((await t.throwsAsync(m.forward(Tensor.from(new Float32Array(784), [1, 784])), { instanceOf: FisherLensError }))?.code, 'ERR_SHAPE');
  t.is((await t.throwsAsync(m.forward(Tensor.from(new Float32Array(784 * 3), [1, 3, 28, 28])), { instanceOf: FisherLensError }))?.code, 'ERR_SHAPE');
  const nan = new Float32Array(784); nan[5] = NaN;
  t.is((await t.throwsAsync(m.forward(Tensor.from(nan, [1, 1, 28, 28])), { instanceOf: FisherLensError }))?.code, 'ERR_VALUE');
  t.is((await t.throwsAsync(m.forward(Tensor.from(new BigInt64Array(784), [1, 1, 28, 28])), { instanceOf: FisherLensError }))?.code, 'ERR_DTYPE');
  m.dispose();
  t.is((await t.throwsAsync(async () => m.forward(x), { instanceOf: FisherLensError }))?.code, 'ERR_DISPOSED');
});

test('ESM entry exports the same API', async (t) => {
  const esm = await import('../esm/index.mjs' as string);
  t.is(typeof esm.backend, 'function');
  t.is(esm.Tensor, Tensor);
});
