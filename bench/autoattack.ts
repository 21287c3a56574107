/**
 * AutoAttack on Fashion-MNIST test images of a small-cnn trained here (natural training, 2 epochs
 * on 6000 images, seed 0): seconds per stage of the cascade; APGD-CE iterations/s on one batch of
 * 128 (forward + input gradient per iteration) against the same loop in Python on the same LibTorch. BENCH_AA_IMAGES (default 500) sets the number of
 * test images, BENCH_AA_VERSION (default custom: APGD-CE + APGD-T with 3 targets; 'standard' once
 * FAB-T and Square are built in) the cascade. Then the demo's cheap AutoAttack column against its
 * PGD-10 + CW-10 on the same images. Figures only; they go to docs/findings.md.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model, Tensor, setThreads } from '../lib';
import { PyServer, passiveOpenMp } from './pyserver';
import { attack, attackKinds } from '../lib/science/attacks';
import { evaluateRobustness } from '../lib/science/robust';
import { autoAttack, AutoAttackVersion } from '../lib/science/autoattack';
import { fashionMnist } from '../lib/science/data';
import { manualSeed, train } from '../lib/science/train';

export async function main(): Promise<void> {
  passiveOpenMp();
  setThreads(2);
  const images = Number(process.env.BENCH_AA_IMAGES ?? 500);
  const standardAvailable = attackKinds().filter((a) => ['fab-t', 'square'].includes(a.kind)).every((a) => a.available);
  const version = (process.env.BENCH_AA_VERSION ?? 'custom') as AutoAttackVersion;
  const trainSet = await fashionMnist({ split: 'train' });
  const testSet = await fashionMnist({ split: 'test' });
  const tr = await trainSet.take(6000);
  manualSeed(0);
  const model = Model.create({ arch: 'small-cnn' });
  await train(model, tr, { method: 'natural', epochs: 2, batchSize: 100, optimizer: { type: 'adam', lr: 1e-3 }, seed: 0 });
  await model.setTraining(false);

  // APGD-CE, 50 iterations on one batch of 128 (a run drops no samples: 50 forward+backward passes),
  // FisherLens (built-in small-cnn and the TorchScript module Python exported) against the same loop
  // in Python (bench/python/apgd_bench.py), interleaved BENCH_REPS times (default 2), best of each
  const reps = Number(process.env.BENCH_REPS ?? 2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-bench-aa-'));
  const ts = path.join(dir, 'small-cnn.pt');
  const server = new PyServer('apgd_bench.py', ['small-cnn', '128', ts]);
  await server.ready();
  const x = Tensor.from(Float32Array.from({ length: 128 * 784 }, (_, i) => ((i * 7919) % 1000) / 1000), [128, 1, 28, 28]);
  const y = Tensor.from(BigInt64Array.from({ length: 128 }, (_, i) => BigInt(i % 10)), [128]);
  const builtin = Model.create({ arch: 'small-cnn' });
  const script = await Model.load(ts);
  const timeApgd = async (m: Model, steps = 50): Promise<number> => {
    const t0 = process.hrtime.bigint();
    const r = await attack(m, x, y, { kind: 'apgd-ce', epsilon: 0.031, steps });
    r.xAdv.dispose();
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  await timeApgd(builtin, 2);
  await timeApgd(script, 2);
  let tPy = Infinity, tB = Infinity, tS = Infinity;
  for (let rep = 0; rep < reps; rep++) {
    tPy = Math.min(tPy, await server.time('apgd'));
    tB = Math.min(tB, await timeApgd(builtin));
    tS = Math.min(tS, await timeApgd(script));
  }
  server.close();
  const its = (t: number) => (50 / t).toFixed(2);
  console.log(`APGD-CE small-cnn batch 128, 50 iterations: python ${its(tPy)} it/s | FisherLens built-in ${its(tB)} it/s (${(tB / tPy).toFixed(2)}× python time) | ` +
    `FisherLens TorchScript ${its(tS)} it/s (${(tS / tPy).toFixed(2)}× python time)`);
  builtin.dispose(); script.dispose(); x.dispose(); y.dispose();
  fs.rmSync(dir, { recursive: true, force: true });

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
  const ev = await evaluateRobustness(model, testSet, [
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
  model.dispose(); tr.dispose(); trainSet.dispose(); testSet.dispose();
}

if (require.main === module) main().catch((e) => { console.error(e); process.exitCode = 1; });
