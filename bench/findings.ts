/**
 * The paper's findings at CPU scale on Fashion-MNIST (docs/findings.md):
 *  1. Fig. 3: during natural training the mean Fisher Frobenius norm (test probe) rises with
 *     test accuracy, epoch by epoch.
 *  2. Fig. 4: after the same epochs, natural training's mean Fisher norm is many times PGD-AT's
 *     and TRADES'; their standard accuracy is lower.
 *  3. Table: TRADES on LeNet-style nets (VGG-style: conv/pool stacks): identity + avg pool
 *     ("pure linear") < identity + max pool ("half linear") ≤ ReLU ("normal") in standard and
 *     PGD-20 accuracy.
 * Settings: the fashion-mnist-cpu preset's inner maximisation (ε 0.1 L∞, 3 steps of 0.04, β 1),
 * SGD 0.05 m 0.9, batch 128, FINDINGS_EPOCHS (6) epochs on the first FINDINGS_SUBSET (6000)
 * training images, probe = 500 seeded test images, PGD-20 (ε 0.1, step 0.01, random start) on
 * the first 1000 test images. Seeded; prints JSON lines and markdown tables.
 * usage: node dist/bench/findings.js [--arch lenet]
 */
import { Model, ModelSpec } from '../lib';
import { fashionMnist } from '../lib/science/data';
import { evaluateRobustness } from '../lib/science/robust';
import { attackPresets } from '../lib/science/attacks';
import { train, manualSeed, presets, TrainMethod, EpochMetrics } from '../lib/science/train';

function pearson(a: number[], b: number[]): number {
  const n = a.length, ma = a.reduce((s, v) => s + v, 0) / n, mb = b.reduce((s, v) => s + v, 0) / n;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) ** 2; sbb += (b[i] - mb) ** 2; }
  return sab / Math.sqrt(saa * sbb);
}

export async function main(): Promise<void> {
  const epochs = Number(process.env.FINDINGS_EPOCHS ?? 6);
  const subset = Number(process.env.FINDINGS_SUBSET ?? 6000);
  const archIdx = process.argv.indexOf('--arch');
  const arch = archIdx > 0 ? process.argv[archIdx + 1] : 'lenet';
  const trainSet = await fashionMnist({ split: 'train' });
  const test = await fashionMnist({ split: 'test' });
  const evalSet = await test.take(1000);
  const cpu = presets['fashion-mnist-cpu'];
  const pgd = { name: 'pgd20', ...attackPresets['pgd20-fashion-mnist'] };
  const run = async (method: TrainMethod, spec: ModelSpec): Promise<{ history: EpochMetrics[]; acc: number; pgdAcc: number; seconds: number }> => {
    manualSeed(0);
    const m = Model.create(spec);
    const t0 = Date.now();
    const r = await train(m, trainSet, {
      method, epochs, subset, batchSize: 128, seed: 0,
      optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, attack: cpu.attack, probe: test, probeSize: 500,
    });
    const seconds = (Date.now() - t0) / 1000;
    const e = await evaluateRobustness(m, evalSet, [pgd]);
    const out = { history: r.history, acc: e.accuracy, pgdAcc: e.attacks[0].robustAccuracy, seconds };
    console.log(JSON.stringify({ method, spec, ...out }));
    m.dispose();
    return out;
  };

  // 1 + 2: natural vs PGD-AT vs TRADES on the same architecture
  const base: ModelSpec = { arch };
  const nat = await run('natural', base);
  const pgdAt = await run('pgd-at', base);
  const trades = await run('trades', base);
  const acc = nat.history.map((h) => h.probeAccuracy!), fro = nat.history.map((h) => h.fisherFrobeniusMean!);
  console.log(`\n### Fig. 3 (natural training, ${arch}): epoch | test acc | mean ‖G‖_F | median ‖G‖_F | mean λ_max | CCKL`);
  console.log('| epoch | test accuracy | mean ‖G_x‖_F | median ‖G_x‖_F | mean λ_max | CCKL |\n|---|---|---|---|---|---|');
  for (const h of nat.history) {
    console.log(`| ${h.epoch} | ${(100 * h.probeAccuracy!).toFixed(1)} % | ${h.fisherFrobeniusMean!.toFixed(3)} | ${h.fisherFrobeniusMedian!.toFixed(3)} | ${h.fisherLambdaMaxMean!.toFixed(3)} | ${h.cckl!.toFixed(2)} |`);
  }
  console.log(`Pearson correlation (test accuracy, mean ‖G‖_F) over epochs: ${pearson(acc, fro).toFixed(3)}`);
  console.log(`\n### Fig. 4 (after ${epochs} epochs, ${arch})`);
  console.log('| method | test accuracy | PGD-20 accuracy | mean ‖G_x‖_F | natural / method | train s |\n|---|---|---|---|---|---|');
  for (const [name, r] of [['natural', nat], ['PGD-AT', pgdAt], ['TRADES', trades]] as const) {
    const f = r.history[r.history.length - 1].fisherFrobeniusMean!;
    console.log(`| ${name} | ${(100 * r.acc).toFixed(1)} % | ${(100 * r.pgdAcc).toFixed(1)} % | ${f.toFixed(4)} | ${(nat.history[nat.history.length - 1].fisherFrobeniusMean! / f).toFixed(1)}× | ${r.seconds.toFixed(0)} |`);
  }

  // 3: TRADES on the three LeNet variants
  const variants: [string, ModelSpec][] = [
    ['pure linear (identity, avg pool)', { arch: 'lenet', activation: 'identity', pool: 'avg' }],
    ['half linear (identity, max pool)', { arch: 'lenet', activation: 'identity', pool: 'max' }],
    ['normal (ReLU, max pool)', { arch: 'lenet', activation: 'relu', pool: 'max' }],
  ];
  const rows: string[] = [];
  for (const [name, spec] of variants) {
    const r = arch === 'lenet' && spec.activation === 'relu' ? trades : await run('trades', spec);
    rows.push(`| ${name} | ${(100 * r.acc).toFixed(1)} % | ${(100 * r.pgdAcc).toFixed(1)} % | ${r.history[r.history.length - 1].fisherFrobeniusMean!.toFixed(4)} |`);
  }
  console.log(`\n### Table (TRADES, LeNet variants, ${epochs} epochs)`);
  console.log('| model | standard accuracy | PGD-20 accuracy | mean ‖G_x‖_F |\n|---|---|---|---|');
  rows.forEach((r) => console.log(r));
}

if (require.main === module) main().catch((e) => { console.error(e); process.exitCode = 1; });
