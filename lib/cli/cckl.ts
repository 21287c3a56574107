import { Command } from 'commander';
import { loadData } from '../science/data';
import { ccklMetrics } from '../science/metrics';
import { action, emit, log, Progress, modelArg, weightsOptions, WeightsCliOptions } from './common';
import { posInt } from './fisher';
import { PAIR_MEANS_OPTIONS } from '../science/options';

interface CcklCliOptions extends WeightsCliOptions {
  model: string; data: string; labels?: string; split: string; pairs: string; jsSamples: string; exactMax: string;
  seed: string; batchSize: string; limit?: string; device: string; json?: boolean;
}

/** `fisherlens cckl`: CCKL, its bounds and its disentanglement on a dataset. */
export function register(program: Command): void {
  program
    .command('cckl')
    .description('CCKL over all different-class pairs, JS mean, lower bound, accuracy, cross-entropy, and CCKL = non-robust + robust (nats)')
    .requiredOption('--model <model>', 'spec .json, FisherLens checkpoint, TorchScript .pt (trusted sources only) or a built-in architecture name')
    .addOption(weightsOptions()[0]).addOption(weightsOptions()[1]).addOption(weightsOptions()[2])
    .requiredOption('--data <spec>', 'fashion-mnist[:dir], mnist:<dir>, cifar10:<dir>, synthetic[:kind], a dataset directory or images .npy')
    .option('--labels <path>', 'labels .npy (with an .npy --data)')
    .option('--split <split>', 'train or test', 'test')
    .option('--pairs <n>', 'sampled different-class pairs for the non-robust component (0: skip)', '1000')
    .option('--js-samples <n>', 'sampled pairs for the JS mean and bound beyond --exact-max samples', String(PAIR_MEANS_OPTIONS.samples.default))
    .option('--exact-max <n>', 'JS mean and bound exact over all pairs up to this many samples', String(PAIR_MEANS_OPTIONS.exactMax.default))
    .option('--seed <n>', PAIR_MEANS_OPTIONS.seed.doc, String(PAIR_MEANS_OPTIONS.seed.default))
    .option('--batch-size <n>', 'samples per native op', '256')
    .option('--limit <n>', 'only the first n samples')
    .option('--device <device>', "'cpu', 'cuda' or 'cuda:N'", 'cpu')
    .option('--json', 'print one JSON document')
    .action(action(async (o: CcklCliOptions) => {
      const model = await modelArg(o.model, o.device, { weights: o });
      const all = await loadData(o.data, { labels: o.labels, split: o.split as 'train' | 'test' });
      const limit = posInt('limit', o.limit);
      const data = limit !== undefined ? await all.take(limit) : all;
      log(`cckl: ${data.size} images [${data.imageShape.join(', ')}] of ${data.name}, ${model.kind} model`);
      const progress = new Progress('cckl');
      const r = await ccklMetrics(model, data, {
        pairs: posInt('pairs', o.pairs), jsSamples: posInt('js-samples', o.jsSamples), exactMax: posInt('exact-max', o.exactMax),
        seed: posInt('seed', o.seed), batchSize: posInt('batch-size', o.batchSize),
        onProgress: (e) => { if (e.type === 'batch') progress.update(e.done, e.total, e.stage ?? ''); },
      });
      const out = {
        cckl: r.cckl, jsMean: r.jsMean, lowerBound: r.lowerBound, accuracy: r.accuracy, crossEntropy: r.crossEntropy,
        nonRobust: r.nonRobust, robust: r.robust, nonRobustFraction: r.nonRobustFraction,
        nonRobustSe: r.nonRobustSe, jsSe: r.jsSe, lowerBoundSe: r.lowerBoundSe, jsExact: r.exact, jsPairs: r.pairsUsed,
        nonRobustPairs: r.nonRobustPairs, n: r.n, pairs: r.pairs,
      };
      const f = (v: number) => (Number.isFinite(v) ? v.toFixed(4) : String(v));
      emit(Boolean(o.json), out, () => [
        `samples           ${r.n} (${r.pairs} different-class ordered pairs)`,
        `accuracy          ${(100 * r.accuracy).toFixed(2)} %`,
        `crossEntropy      ${f(r.crossEntropy)} nats`,
        `cckl              ${f(r.cckl)} nats (exact over all pairs)`,
        `2·jsMean          ${f(2 * r.jsMean)} nats${r.exact ? ' (exact)' : ` (± ${f(2 * r.jsSe)}, ${r.pairsUsed} sampled pairs)`}`,
        `lowerBound        ${f(r.lowerBound)} nats   [lowerBound ≤ 2·jsMean ≤ cckl]`,
        `nonRobust         ${f(r.nonRobust)} ± ${f(r.nonRobustSe)} nats (mean ½δᵀGδ over ${r.nonRobustPairs} pairs)`,
        `robust            ${f(r.robust)} nats (cckl − nonRobust)`,
        `nonRobustFraction ${f(r.nonRobustFraction)}`,
      ].join('\n'));
      if (data !== all) data.dispose();
      all.dispose();
      model.dispose();
    }));
}
