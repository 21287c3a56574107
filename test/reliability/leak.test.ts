/**
 * Leak: 100 000 small ops (Tensor.from + an async forward of a tiny model) with dispose() and
 * 100 000 without. Live tensor handles (memory().tensors) and RSS are sampled every 5 000 ops:
 * with dispose() the live count never moves; without, the garbage collector keeps it bounded (no
 * upward trend in the second half) and a full collection brings it back to where it started.
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

async function loop(m: Model, dispose: boolean): Promise<{ at: number[]; live: number[]; rss: number[] }> {
  const data = new Float32Array(4).fill(0.5);
  const at: number[] = [], live: number[] = [], rss: number[] = [];
  for (let i = 1; i <= OPS; i++) {
    const x = Tensor.from(data, [1, 1, 2, 2]);
    const z = await m.forward(x);
    if (dispose) { x.dispose(); z.dispose(); }
    if (i % EVERY === 0) { at.push(i); live.push(memory().tensors); rss.push(process.memoryUsage.rss()); }
  }
  return { at, live, rss };
}

test.serial('100 000 ops with and without dispose(): live tensors and RSS stay bounded', async (t) => {
  const m = await Model.create({ arch: 'mlp', inChannels: 1, inputSize: 2, numClasses: 2, hidden: [4] });
  await settle();
  const base = memory().tensors;
  const t0 = Date.now();
  const withDispose = await loop(m, true);
  const t1 = Date.now();
  const without = await loop(m, false);
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
  // without: a leak of the two handles per op would add 100 000 over the second half; the GC's
  // sawtooth moves the samples by a few thousand at most, so 5 000 per 100k ops is the bound
  t.true(Math.abs(liveSlope) * 1e5 < 5_000, `live-tensor slope ${liveSlope * 1e5} per 100k ops`);
  t.true(Math.max(...without.live) - base < 50_000, `live max ${Math.max(...without.live)}`);
  // RSS: a leak of two tensors per op (≥ 2 × 200 B of native state) is ≥ 40 MiB per 100k ops
  t.true(rssSlope * 1e5 < 32 * 2 ** 20, `RSS slope ${rssSlope * 1e5 / 2 ** 20} MiB per 100k ops`);
  t.is(after, base);
  m.dispose();
});
