/**
 * Cost of FAB-T, FAB and Square per step on one batch of 128 (small-cnn, 1×28×28, 2 threads), next
 * to a PGD step (1 forward + 1 input-gradient backward). Labels are the model's own predictions and
 * ε is tiny, so no sample breaks and every step runs on the whole batch (the worst case: broken
 * samples drop out). Prints ms per step, the ratio to a PGD step, and Square's queries per second
 * (forwards of one sample). Best of BENCH_REPS (default 2) runs.
 */
import { Model, Tensor, setThreads } from '../lib';
import { attack, AttackParams } from '../lib/science/attacks';
import { manualSeed } from '../lib/science/train';
import { passiveOpenMp } from './pyserver';

async function best(model: Model, x: Tensor, y: Tensor, p: AttackParams, reps: number): Promise<number> {
  let t = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    const a = await attack(model, x, y, p);
    t = Math.min(t, Number(process.hrtime.bigint() - t0) / 1e9);
    a.xAdv.dispose();
  }
  return t;
}

export async function main(): Promise<void> {
  passiveOpenMp();
  const reps = Number(process.env.BENCH_REPS ?? 2);
  const batch = 128;
  setThreads(2);
  manualSeed(0);
  const model = Model.create({ arch: 'small-cnn' });
  await model.setTraining(false);
  const x = Tensor.from(Float32Array.from({ length: batch * 784 }, (_, i) => ((i * 7919) % 1000) / 1000), [batch, 1, 28, 28]);
  const z = (await model.forward(x)).toArray() as Float32Array;
  const pred = Array.from({ length: batch }, (_, i) => {
    let a = 0;
    for (let j = 1; j < 10; j++) if (z[i * 10 + j] > z[i * 10 + a]) a = j;
    return BigInt(a);
  });
  const y = Tensor.from(BigInt64Array.from(pred), [batch]);
  const eps = 1e-4;
  await attack(model, x, y, { kind: 'pgd', epsilon: eps, stepSize: eps, steps: 2, randomStart: false }); // warm-up
  const cases: [string, AttackParams, number][] = [
    ['pgd (L∞)', { kind: 'pgd', epsilon: eps, stepSize: eps, steps: 10, randomStart: false }, 10],
    ['fab-t (L∞, 1 target)', { kind: 'fab-t', norm: 'linf', epsilon: eps, steps: 10, targets: 1 }, 10],
    ['fab-t (L2, 1 target)', { kind: 'fab-t', norm: 'l2', epsilon: eps, steps: 10, targets: 1 }, 10],
    ['fab (L∞, K = 10)', { kind: 'fab', norm: 'linf', epsilon: eps, steps: 4 }, 4],
    ['square (L∞)', { kind: 'square', norm: 'linf', epsilon: eps, steps: 200 }, 200],
    ['square (L2)', { kind: 'square', norm: 'l2', epsilon: eps, steps: 200 }, 200],
  ];
  let pgdStep = NaN;
  console.log(`small-cnn, batch ${batch}, 2 threads, nothing breaks (ε ${eps}); best of ${reps}`);
  console.log('| attack | ms per step | × PGD step | sample-queries/s |');
  console.log('|:---|---:|---:|---:|');
  for (const [name, p, steps] of cases) {
    const t = await best(model, x, y, p, reps);
    const ms = (t / steps) * 1000;
    if (name.startsWith('pgd')) pgdStep = ms;
    const qps = p.kind === 'square' ? Math.round((batch * steps) / t).toString() : '';
    console.log(`| ${name} | ${ms.toFixed(1)} | ${(ms / pgdStep).toFixed(2)} | ${qps} |`);
  }
  console.log('(AutoAttack standard per robust sample: fab-t 9 targets × 100 steps, square 5000 queries)');
}
