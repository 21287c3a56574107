import { Command } from 'commander';
import { loadData } from '../science/data';
import { ccklMetrics } from '../science/metrics';
import { action, dataOptions, declared, deviceOption, emit, jsonOption, limitOption, log, modelArg, modelOption, natInt, posInt, Progress, splitArg, WeightsCliOptions } from './common';
import { PAIR_MEANS_OPTIONS } from '../science/options';

interface CcklCliOptions extends WeightsCliOptions {
  model: string; data: string; labels?: string; split: string; pairs: string; jsSamples: string; exactMax: string;
  seed: string; batchSize: string; limit?: string; device: string; json?: boolean;
}

/** `fisherlens cckl`: CCKL, its bounds and its disentanglement on a dataset. */
export function register(program: Command): void {
  const cmd = program
    .command('cckl')
    .description('CCKL over all different-class pairs, JS mean, lower bound, accuracy, cross-entropy, and CCKL = non-robust + robust (nats)');
  modelOption(cmd);
  dataOptions(cmd, { split: true });
  cmd
    .option('--pairs <n>', 'sampled different-class pairs for the non-robust component (0: skip)', '1000')
    .option('--js-samples <n>', 'sampled pairs for the JS mean and bound beyond --exact-max samples', String(PAIR_MEANS_OPTIONS.samples.default))
    .option('--exact-max <n>', 'JS mean and bound exact over all pairs up to this many samples', String(PAIR_MEANS_OPTIONS.exactMax.default))
    .option('--seed <n>', PAIR_MEANS_OPTIONS.seed.doc, String(PAIR_MEANS_OPTIONS.seed.default))
    .option('--batch-size <n>', 'samples per native op', '256');
  limitOption(cmd);
  deviceOption(cmd);
  jsonOption(cmd)
    .action(action(async (o: CcklCliOptions) => {
      const split = splitArg(o.split);
      const limit = posInt('limit', o.limit);
      const params = {
        pairs: natInt('pairs', o.pairs), jsSamples: declared('js-samples', o.jsSamples, PAIR_MEANS_OPTIONS.samples),
        exactMax: declared('exact-max', o.exactMax, PAIR_MEANS_OPTIONS.exactMax),
        seed: declared('seed', o.seed, PAIR_MEANS_OPTIONS.seed), batchSize: posInt('batch-size', o.batchSize),
      };
      const model = await modelArg(o.model, o.device, { weights: o });
      const all = await loadData(o.data, { labels: o.labels, split });
      const data = limit !== undefined ? await all.take(limit) : all;
      log(`cckl: ${data.size} images [${data.imageShape.join(', ')}] of ${data.name}, ${model.kind} model`);
      const progress = new Progress('cckl');
      const r = await ccklMetrics(model, data, {
        ...params,
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
