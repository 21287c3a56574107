import { Command } from 'commander';
import { evaluate } from '../science/model';
import { loadData } from '../science/data';
import { FisherLensError } from '../util/errors';
import { action, emit, int, log, Progress, modelArg, weightsOptions, WeightsCliOptions } from './common';

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
  program
    .command('eval')
    .description('accuracy and mean cross-entropy (nats) of a model on a dataset')
    .requiredOption('--model <path>', 'model: spec .json, FisherLens checkpoint or TorchScript .pt (trusted sources only: TorchScript runs code)')
    .addOption(weightsOptions()[0]).addOption(weightsOptions()[1]).addOption(weightsOptions()[2])
    .requiredOption('--data <spec>', 'data: fashion-mnist[:dir], mnist:<dir>, cifar10:<dir>, cifar100:<dir>, synthetic[:kind], a dataset directory or images .npy')
    .option('--labels <path>', 'labels .npy (with an .npy --data)')
    .option('--split <split>', 'train or test', 'test')
    .option('--batch-size <n>', 'samples per batch', '256')
    .option('--limit <n>', 'evaluate only the first n samples')
    .option('--device <device>', "'cpu', 'cuda' or 'cuda:N'", 'cpu')
    .option('--json', 'print JSON')
    .action(action(async (o: EvalOptions) => {
      const batchSize = int('batch-size', o.batchSize, 1);
      const limit = o.limit === undefined ? undefined : int('limit', o.limit, 1);
      if (o.split !== 'train' && o.split !== 'test') throw new FisherLensError('ERR_ARG', `--split: expected train or test, got '${o.split}'`);
      const model = await modelArg(o.model, o.device, { weights: o });
      const data = await loadData(o.data, { labels: o.labels, split: o.split });
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
