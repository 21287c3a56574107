import { Command } from 'commander';
import { evaluate } from '../science/model';
import { loadData } from '../science/data';
import { action, dataOptions, deviceOption, emit, jsonOption, limitOption, log, modelArg, modelOption, posInt, Progress, splitArg, WeightsCliOptions } from './common';

interface EvalOptions extends WeightsCliOptions {
  model: string;
  data: string;
  labels?: string;
  split: string;
  batchSize: string;
  limit?: string;
  device: string;
  json?: boolean;
}

/** `fisherlens eval`: accuracy and mean cross-entropy (nats) of a model on a dataset. */
export function register(program: Command): void {
  const cmd = program
    .command('eval')
    .description('accuracy and mean cross-entropy (nats) of a model on a dataset');
  modelOption(cmd);
  dataOptions(cmd, { split: true });
  cmd.option('--batch-size <n>', 'samples per batch', '256');
  limitOption(cmd);
  deviceOption(cmd);
  jsonOption(cmd)
    .action(action(async (o: EvalOptions) => {
      const batchSize = posInt('batch-size', o.batchSize);
      const limit = posInt('limit', o.limit);
      const split = splitArg(o.split);
      const model = await modelArg(o.model, o.device, { weights: o });
      const data = await loadData(o.data, { labels: o.labels, split });
      const shape = data.imageShape;
      log(`eval: ${model.kind} model (${model.parameterCount} parameters) on ${data.name}: ${data.size} images [${shape.join(', ')}]`);
      const progress = new Progress('eval');
      const r = await evaluate(model, data, {
        batchSize, limit, onProgress: (e) => { if (e.type === 'batch') progress.update(e.done, e.total); },
      });
      emit(Boolean(o.json), r, () =>
        `accuracy      ${(100 * r.accuracy).toFixed(2)} %\ncrossEntropy  ${r.crossEntropy.toFixed(4)} nats\ncount         ${r.count}`);
      data.dispose();
      model.dispose();
    }));
}
