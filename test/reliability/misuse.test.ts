/**
 * API misuse and concurrency: disposed handles, dispose while an op runs, and abort storms over
 * concurrent forwards and PGD attacks whose surviving results are checked against the same op run
 * alone (bitwise: one compute thread, the same kernels, the same seed) and against the attack's
 * own contract (ε-ball, pixel range, the reported loss = cross-entropy of the model at x_adv).
 */
import test from 'ava';
import { Model, Tensor, FisherLensError, attack, memory, manualSeed } from '../../lib';

const SHAPE = [16, 1, 16, 16];
const SPEC = { arch: 'small-cnn', inChannels: 1, inputSize: 16, numClasses: 3 } as const;

/** Deterministic images in [0, 1] and labels in [0, 3). */
function batch(seed: number): { x: Tensor; y: Tensor } {
  const n = SHAPE.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed * 2654435761 % 4294967296;
  for (let i = 0; i < n; i++) { s = (1103515245 * s + 12345) % 2147483648; data[i] = s / 2147483648; }
  return { x: Tensor.from(data, SHAPE), y: Tensor.from(BigInt64Array.from({ length: SHAPE[0] }, (_, i) => BigInt((i + seed) % 3)), [SHAPE[0]]) };
}

function code(e: unknown): string | undefined {
  return e instanceof FisherLensError ? e.code : undefined;
}

test.serial('disposed handles: every use is ERR_DISPOSED, dispose twice is harmless', async (t) => {
  const m = await Model.create(SPEC);
  const { x, y } = batch(1);
  x.dispose();
  x.dispose();
  t.is(code(t.throws(() => x.toArray())), 'ERR_DISPOSED');
  t.is(code(t.throws(() => x.shape)), 'ERR_DISPOSED');
  t.is(code(await t.throwsAsync(m.forward(x))), 'ERR_DISPOSED');
  const { x: x2 } = batch(2);
  m.dispose();
  m.dispose();
  t.is(code(await t.throwsAsync(m.forward(x2))), 'ERR_DISPOSED');
  t.is(code(await t.throwsAsync(attack(m, x2, y, { kind: 'pgd', epsilon: 0.1, steps: 2 }))), 'ERR_DISPOSED');
  t.is(code(t.throws(() => m.parameterCount)), 'ERR_DISPOSED');
  // wrong things where handles belong
  t.is(code(await t.throwsAsync(m.forward(null as unknown as Tensor))), 'ERR_ARG');
  const m2 = await Model.create(SPEC);
  t.is(code(await t.throwsAsync(m2.forward({} as unknown as Tensor))), 'ERR_ARG');
  t.is(code(await t.throwsAsync(attack(m2, x2, undefined as unknown as Tensor))), 'ERR_ARG');
  m2.dispose();
  x2.dispose();
  y.dispose();
});

test.serial('dispose during an op: the op finishes with the same numbers (native state is held by value)', async (t) => {
  manualSeed(9);
  const ref = await Model.create(SPEC);
  const { x, y } = batch(3);
  const want = await attack(ref, x, y, { kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 40, seed: 5 });
  const wantAdv = want.xAdv.toArray() as Float32Array;
  manualSeed(9);  // the same weights again
  const m = await Model.create(SPEC);
  const { x: x2, y: y2 } = batch(3);
  const p = attack(m, x2, y2, { kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 40, seed: 5 });
  m.dispose();
  x2.dispose();
  y2.dispose();
  const got = await p;
  t.deepEqual(got.xAdv.toArray(), wantAdv);
  t.deepEqual(got.loss, want.loss);
  got.xAdv.dispose();
  want.xAdv.dispose();
  [x, y].forEach((v) => v.dispose());
  ref.dispose();
});

test.serial('abort storm: 100 concurrent forwards and PGD attacks, a seeded half aborted; survivors equal solo runs', async (t) => {
  const before = memory().tensors;
  const m = await Model.create(SPEC);
  const inputs = Array.from({ length: 6 }, (_, i) => batch(10 + i));
  // solo references, one op at a time
  const refLogits: Float32Array[] = [];
  const refAdv: Float32Array[] = [];
  const refLoss: Float64Array[] = [];
  for (const b of inputs) {
    const z = await m.forward(b.x);
    refLogits.push(z.toArray() as Float32Array);
    z.dispose();
    const r = await attack(m, b.x, b.y, { kind: 'pgd', epsilon: 0.1, stepSize: 0.03, steps: 10, seed: 7 });
    refAdv.push(r.xAdv.toArray() as Float32Array);
    refLoss.push(r.loss);
    r.xAdv.dispose();
  }
  let rng = 12345;
  const rand = () => { rng = (1103515245 * rng + 12345) % 2147483648; return rng / 2147483648; };
  const jobs: Promise<void>[] = [];
  let survived = 0, aborted = 0;
  for (let k = 0; k < 100; k++) {
    const i = k % inputs.length;
    const ac = new AbortController();
    const isAttack = k % 2 === 1;
    const p = isAttack
      ? attack(m, inputs[i].x, inputs[i].y, { kind: 'pgd', epsilon: 0.1, stepSize: 0.03, steps: 10, seed: 7, signal: ac.signal })
        .then((r) => {
          // survivors: bitwise the solo result, inside the ε-ball and the pixel range
          const adv = r.xAdv.toArray() as Float32Array;
          const x = inputs[i].x.toArray() as Float32Array;
          t.deepEqual(adv, refAdv[i]);
          t.deepEqual(r.loss, refLoss[i]);
          let maxDev = 0, lo = 1, hi = 0;
          for (let j = 0; j < adv.length; j++) { maxDev = Math.max(maxDev, Math.abs(adv[j] - x[j])); lo = Math.min(lo, adv[j]); hi = Math.max(hi, adv[j]); }
          // ε = 0.1 in float32 arithmetic: the projection may round up by one ulp of ~1
          t.true(maxDev <= 0.1 + 1e-6 && lo >= 0 && hi <= 1, `dev ${maxDev} range [${lo}, ${hi}]`);
          r.xAdv.dispose();
          survived++;
        })
      : m.forward(inputs[i].x, { signal: ac.signal }).then((z) => {
        t.deepEqual(z.toArray(), refLogits[i]);
        z.dispose();
        survived++;
      });
    jobs.push(p.catch((e: unknown) => {
      t.is(code(e), 'ERR_ABORTED');
      aborted++;
    }));
    if (rand() < 0.5) {
      const delay = Math.floor(rand() * 20);
      if (delay === 0) ac.abort(); else setTimeout(() => ac.abort(), delay);
    }
  }
  await Promise.all(jobs);
  t.is(survived + aborted, 100);
  t.log(`${survived} survived (checked), ${aborted} aborted`);
  t.true(survived > 0 && aborted > 0, `${survived} survived, ${aborted} aborted`);
  // the loss the attack reports is the cross-entropy of the model at its x_adv (float64 in JS)
  const r = await attack(m, inputs[0].x, inputs[0].y, { kind: 'pgd', epsilon: 0.1, stepSize: 0.03, steps: 10, seed: 7 });
  const z = await m.forward(r.xAdv);
  const zs = z.toArray() as Float32Array;
  const ys = inputs[0].y.toArray() as BigInt64Array;
  for (let b = 0; b < SHAPE[0]; b++) {
    const row = Array.from(zs.subarray(b * 3, b * 3 + 3));
    const mx = Math.max(...row);
    const ce = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0)) - row[Number(ys[b])];
    // float32 logits, log-softmax in float32 inside the op vs float64 here: ~1e-6 relative
    t.true(Math.abs(ce - r.loss[b]) <= 1e-5 * Math.max(1, Math.abs(ce)), `sample ${b}: ${ce} vs ${r.loss[b]}`);
  }
  z.dispose();
  r.xAdv.dispose();
  inputs.forEach((b) => { b.x.dispose(); b.y.dispose(); });
  m.dispose();
  // nothing of the storm stays alive (an earlier test's garbage may have been collected meanwhile)
  t.true(memory().tensors <= before, `${memory().tensors} live tensors, ${before} before`);
});

test.serial('child processes started while ops run: no hang (a fork waits for the running op, so OpenBLAS never loses its threads mid-call)', async (t) => {
  // Large matrix products keep OpenBLAS's worker threads busy on the compute thread while the JS
  // thread forks children. Before the fork guard (native/common/compute_thread.cc), OpenBLAS's fork
  // handler stopped its threads under a call in flight, which then waited for them forever (seen in
  // eigh).
  // The 120 s limit is ~20× this test's time on a loaded 2-core machine: only a hang exceeds it.
  t.timeout(120_000);
  const { spawn } = await import('child_process');
  const m = await Model.create({ arch: 'mlp', inChannels: 1, inputSize: 32, numClasses: 10, hidden: [1024, 1024] } as never);
  const x = Tensor.from(Float32Array.from({ length: 256 * 1024 }, (_, i) => (i % 97) / 97), [256, 1, 32, 32]);
  const ref = (await m.forward(x)).toArray() as Float32Array;
  let stop = false;
  const ops = (async () => {
    let n = 0;
    while (!stop) {
      const z = await m.forward(x);
      const a = z.toArray() as Float32Array;
      z.dispose();
      // the same op gives the same numbers whether or not a fork waited for it
      if (a.some((v, i) => v !== ref[i])) throw new Error(`forward ${n} differs from the first`);
      n++;
    }
    return n;
  })();
  const started: number[] = [];
  for (let k = 0; k < 40; k++) {
    started.push(await new Promise<number>((resolve, reject) => {
      const p = spawn('true');
      p.on('error', reject);
      p.on('close', (c) => resolve(c ?? -1));
    }));
  }
  stop = true;
  const forwards = await ops;
  t.deepEqual(started, Array(40).fill(0));
  t.true(forwards > 0);
  t.log(`40 children started during ${forwards} forwards`);
  x.dispose();
  m.dispose();
});
