/**
 * Leak: 100 000 small ops with dispose() and 100 000 without: each makes three tensors
 * (Tensor.from, slice, to), and every tenth also runs an async forward of a tiny model (an async
 * op costs a compute-thread round trip, ~0.1 ms: all-async would take the suite's whole budget).
 * Live tensor handles (memory().tensors) and RSS are sampled every 5 000 ops: with dispose() the
 * live count never moves; without, the garbage collector keeps it bounded (the second half's peak
 * no higher than the first half's, no upward trend) and a full collection brings it back to where
 * it started.
 */
import test from 'ava';
import * as v8 from 'v8';
import * as vm from 'vm';
import { Model, Tensor, memory } from '../../lib';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

const OPS = 100_000;
const EVERY = 5_000;

/** Least-squares slope of y over x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0, den = 0;
  for (let i = 0; i < n; i++) { num += (xs[i] - mx) * (ys[i] - my); den += (xs[i] - mx) ** 2; }
  return num / den;
}

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));  // napi finalizers run after the collection
  }
}

interface Samples { at: number[]; live: number[]; rss: number[] }

async function loop(op: () => Promise<void> | void): Promise<Samples> {
  const s: Samples = { at: [], live: [], rss: [] };
  for (let i = 1; i <= OPS; i++) {
    await op();
    if (i % EVERY === 0) { s.at.push(i); s.live.push(memory().tensors); s.rss.push(process.memoryUsage.rss()); }
  }
  return s;
}

test.serial('100 000 ops with and without dispose(): live tensors and RSS stay bounded', async (t) => {
  const m = await Model.create({ arch: 'mlp', inChannels: 1, inputSize: 2, numClasses: 2, hidden: [4] });
  await settle();
  const base = memory().tensors;
  const data = new Float32Array(4).fill(0.5);
  const t0 = Date.now();
  let i = 0;
  const op = async (dispose: boolean) => {
    const x = Tensor.from(data, [1, 1, 2, 2]);
    const a = x.slice(0, 1);
    const b = a.to('float64');
    const z = ++i % 10 === 0 ? await m.forward(x) : undefined;
    if (dispose) { x.dispose(); a.dispose(); b.dispose(); z?.dispose(); }
  };
  const withDispose = await loop(() => op(true));
  const t1 = Date.now();
  const without = await loop(() => op(false));
  const t2 = Date.now();
  await settle();
  const after = memory().tensors;
  const half = without.at.length / 2;
  const liveSlope = slope(without.at.slice(half), without.live.slice(half));
  const rssSlope = slope(without.at.slice(half), without.rss.slice(half));
  t.log(`with dispose: ${t1 - t0} ms, live ${Math.min(...withDispose.live)}..${Math.max(...withDispose.live)}; ` +
    `without: ${t2 - t1} ms, live max ${Math.max(...without.live)}, second-half slope ${(liveSlope * 1e5).toFixed(1)} tensors / 100k ops, ` +
    `RSS slope ${(rssSlope * 1e5 / 2 ** 20).toFixed(2)} MiB / 100k ops, after a full GC ${after} (base ${base})`);
  // with dispose(): exactly the handles that existed before, at every sample
  t.deepEqual(withDispose.live, withDispose.live.map(() => base));
  // without: a leak of the 3.1 handles per op would add 155 000 between the halves' peaks, a slope
  // of 310 000 per 100k ops and 310 000 live at the end. The GC's sawtooth is not a leak, and its
  // height depends on V8's heap sizing and the machine's load (peaks of 15 000 to 62 000 seen here),
  // so each bound is half of what a leak would give, not a guess at the sawtooth
  const peak1 = Math.max(...without.live.slice(0, half));
  const peak2 = Math.max(...without.live.slice(half));
  t.true(peak2 - peak1 < 77_500, `peaks ${peak1} then ${peak2}`);
  t.true(liveSlope * 1e5 < 155_000, `live-tensor slope ${liveSlope * 1e5} per 100k ops`);
  t.true(Math.max(...without.live) - base < 155_000, `live max ${Math.max(...without.live)}`);
  // RSS: a leak of 3 tensors per op (wrapper + TensorImpl + storage, ≥ 300 B each) is ≥ 90 MiB per
  // 100k ops; V8's old space growing until its next major collection moves it by ~15 MiB
  t.true(rssSlope * 1e5 < 64 * 2 ** 20, `RSS slope ${rssSlope * 1e5 / 2 ** 20} MiB per 100k ops`);
  t.is(after, base);
  m.dispose();
});
