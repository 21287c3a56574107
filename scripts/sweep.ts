/**
 * A scripted sweep: the TRADES trade-off β on Fashion-MNIST, built in TypeScript instead of YAML,
 * run with the same runner as `fisherlens run` (same run folders, skipping and resuming), then
 * reported. Run it with ts-node from the package folder (after `npm run build:native`):
 *
 *   npx ts-node scripts/sweep.ts [OUT_DIR]        (default runs/sweep-trades-beta)
 *
 * Interrupt it with Ctrl-C and start it again: finished runs are skipped, the current one resumes.
 */
import { runExperiment, writeReport, SweepProgress, ExperimentInput } from '../lib';

const config: ExperimentInput = {
  name: 'sweep-trades-beta',
  description: 'TRADES beta on Fashion-MNIST: standard vs robust accuracy and the Fisher norm',
  defaults: {
    data: { dataset: 'fashion-mnist', trainSize: 2000, testSize: 300, probeSize: 100 },
    model: { arch: 'small-cnn' },
    train: { method: 'trades', epochs: 2, batchSize: 100, epsilon: 0.1, stepSize: 0.04, steps: 3,
      optimizer: { type: 'adam', lr: 0.001 } },
    eval: {
      attacks: [{ name: 'pgd', type: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 10 }],
      fisher: { samples: 100 },
      cckl: { samples: 300, pairs: 500 },
    },
  },
  // a grid over any dotted path: here β, plus a natural-training reference run
  runs: [
    { grid: { 'train.beta': [0.5, 2, 6] } },
    { train: { method: 'natural' } },
  ],
};

async function main(): Promise<void> {
  const out = process.argv[2] ?? 'runs/sweep-trades-beta';
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  const progress = new SweepProgress();
  const result = await runExperiment(config, { out, signal: controller.signal, onEvent: progress.onEvent });
  if (result.aborted) {
    console.error(`interrupted; run the same command again to resume (${result.runs.filter((r) => r.status === 'finished' || r.status === 'skipped').length} runs done)`);
    process.exitCode = 130;
    return;
  }
  // Runs are plain objects: script your own comparison from result.runs[i].summary …
  for (const r of result.runs) {
    const s = r.summary;
    if (s) console.log(`${r.id.padEnd(32)} clean ${(s.accuracy * 100).toFixed(1)}%  PGD ${((s.attacks.pgd ?? NaN) * 100).toFixed(1)}%  mean ||G||_F ${s.fisher?.frobeniusMean.toPrecision(3)}`);
  }
  // … or write the standard report.
  const w = await writeReport(result.out);
  console.log(`report: ${w.html}`);
  if (result.failed > 0) process.exitCode = 3;
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
