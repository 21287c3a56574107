/**
 * AutoAttack on Fashion-MNIST test images of a small-cnn trained here (natural training, 2 epochs
 * on 6000 images, seed 0): seconds per stage of the cascade and APGD-CE iterations/s on one batch
 * of 128 (forward + input gradient per iteration). BENCH_AA_IMAGES (default 500) sets the number of
 * test images, BENCH_AA_VERSION (default custom: APGD-CE + APGD-T with 3 targets; 'standard' once
 * FAB-T and Square are built in) the cascade. Then the demo's cheap AutoAttack column against its
 * PGD-10 + CW-10 on the same images. Figures only; they go to docs/findings.md.
 */
import { Model, setThreads } from '../lib';
import { attack, attackKinds, evaluate } from '../lib/attacks';
import { autoAttack, AutoAttackVersion } from '../lib/autoattack';
import { fashionMnist } from '../lib/data';
import { manualSeed, train } from '../lib/train';

export async function main(): Promise<void> {
  setThreads(2);
  const images = Number(process.env.BENCH_AA_IMAGES ?? 500);
  const standardAvailable = attackKinds().filter((a) => ['fab-t', 'square'].includes(a.kind)).every((a) => a.available);
  const version = (process.env.BENCH_AA_VERSION ?? 'custom') as AutoAttackVersion;
  const trainSet = await fashionMnist({ split: 'train' });
  const testSet = await fashionMnist({ split: 'test' });
  const tr = trainSet.take(6000);
  manualSeed(0);
  const model = Model.create({ arch: 'small-cnn' });
  await train(model, tr, { method: 'natural', epochs: 2, batchSize: 100, optimizer: { type: 'adam', lr: 1e-3 }, seed: 0 });
  model.setTraining(false);

  const b = testSet.batch(Array.from({ length: 128 }, (_, i) => i));
  await attack(model, b.x, b.y, { kind: 'apgd-ce', epsilon: 0.1, steps: 2 }).then((r) => r.xAdv.dispose());
  const t0 = process.hrtime.bigint();
  const r = await attack(model, b.x, b.y, { kind: 'apgd-ce', epsilon: 0.1, steps: 50, restarts: 1 });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  r.xAdv.dispose();
  // APGD-CE drops no samples within a run, so 50 iterations on 128 images: 50 forward+backward passes
  console.log(`APGD-CE small-cnn batch 128: ${(50 / s).toFixed(1)} iterations/s (${(128 * 50 / s).toFixed(0)} image-iterations/s)`);

  const t1 = process.hrtime.bigint();
  const aa = await autoAttack(model, testSet, {
    norm: 'linf', epsilon: 0.1, version, limit: images, batchSize: 250,
    attacks: version === 'custom' ? ['apgd-ce', { kind: 'apgd-t', targets: 3 }] : undefined,
  });
  const total = Number(process.hrtime.bigint() - t1) / 1e9;
  console.log(`AutoAttack ${version}${standardAvailable ? '' : ' (FAB-T / Square not in this build)'}, L∞ ε 0.1, ${aa.samples} images: ` +
    `clean ${(100 * aa.accuracy).toFixed(2)} %, robust ${(100 * aa.robustAccuracy).toFixed(2)} ± ${(100 * aa.robustAccuracyStderr).toFixed(2)} %, ${total.toFixed(1)} s`);
  for (const st of aa.stages) {
    console.log(`  ${st.name.padEnd(10)} ${st.seconds.toFixed(1).padStart(7)} s   broke ${String(st.broken).padStart(4)}   robust after ${(100 * st.robustAccuracy).toFixed(2)} %`);
  }
  for (const w of aa.warnings) console.log(`  warning: ${w}`);

  // the demo's cheap column (configs/demo.yaml) against the demo's PGD-10 + CW-10 on the same images
  const t2 = process.hrtime.bigint();
  const ev = await evaluate(model, testSet, [
    { name: 'pgd', kind: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 10 },
    { name: 'cw', kind: 'cw', epsilon: 0.1, stepSize: 0.02, steps: 10 },
  ], { limit: images, batchSize: 250 });
  const tPgdCw = Number(process.hrtime.bigint() - t2) / 1e9;
  const t3 = process.hrtime.bigint();
  const cheap = await autoAttack(model, testSet, {
    epsilon: 0.1, version: 'custom', limit: images, batchSize: 250,
    attacks: [{ kind: 'apgd-ce', steps: 10 }, { kind: 'apgd-t', targets: 3, steps: 10 }],
  });
  const tCheap = Number(process.hrtime.bigint() - t3) / 1e9;
  console.log(`demo columns, ${images} images: PGD-10 ${(100 * ev.attacks[0].robustAccuracy).toFixed(2)} %, CW-10 ${(100 * ev.attacks[1].robustAccuracy).toFixed(2)} % ` +
    `(${tPgdCw.toFixed(1)} s together); AutoAttack custom APGD-CE-10 + APGD-T-10×3 ${(100 * cheap.robustAccuracy).toFixed(2)} % (${tCheap.toFixed(1)} s, ${(tCheap / tPgdCw).toFixed(2)}× PGD+CW)`);
  b.x.dispose(); b.y.dispose(); model.dispose(); tr.dispose(); trainSet.dispose(); testSet.dispose();
}

if (require.main === module) main().catch((e) => { console.error(e); process.exitCode = 1; });
