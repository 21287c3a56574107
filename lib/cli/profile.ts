import { Command } from 'commander';
import { invalidArgument } from '../util/errors';
import { profileFisher, FISHER_METHODS } from '../science/fisher';
import { action, choice, deviceOption, emit, intList, jsonOption, log, modelArg, modelOption, posInt, WeightsCliOptions } from './common';
import { CLASSES_PER_PASS_HELP, LAYOUT_HELP, speedArgs } from './fisher';
import { FISHER_SPEED_OPTIONS } from '../science/options';

interface ProfileOptions extends WeightsCliOptions {
  model: string; batch: string; methods: string; inputShape?: string; repeats: string; device: string;
  channelsLast?: boolean; layout?: string; classesPerPass?: string; streams: string; json?: boolean;
}

/** `fisherlens profile fisher`: per-batch cost of each Fisher method. */
export function register(program: Command): void {
  const profile = program.command('profile').description('measure the cost of FisherLens operations');
  const cmd = profile
    .command('fisher')
    .description('per-batch cost of each Fisher method (ms, samples/s, peak memory) on random inputs');
  modelOption(cmd)
    .option('--batch <sizes>', 'batch sizes, comma-separated', '32,128,512')
    .option('--methods <list>', `comma-separated of ${FISHER_METHODS.join(', ')}`, FISHER_METHODS.join(','))
    .option('--input-shape <c,h,w>', "input shape (default: the built-in spec's inChannels × inputSize²)")
    .option('--repeats <n>', 'timed runs per cell (median reported)', '3')
    .option('--channels-last', FISHER_SPEED_OPTIONS.channelsLast.doc)
    .option('--layout <layout>', LAYOUT_HELP)
    .option('--classes-per-pass <n>', CLASSES_PER_PASS_HELP)
    .option('--streams <n>', FISHER_SPEED_OPTIONS.streams.doc, String(FISHER_SPEED_OPTIONS.streams.default));
  deviceOption(cmd);
  jsonOption(cmd)
    .action(action(async (o: ProfileOptions) => {
      const methods = o.methods.split(',').map((s) => choice('methods', FISHER_METHODS, s.trim()));
      const batchSizes = intList('batch', o.batch);
      const repeats = posInt('repeats', o.repeats);
      const speed = speedArgs(o);
      const inputShape = o.inputShape === undefined ? undefined : intList('input-shape', o.inputShape);
      const model = await modelArg(o.model, o.device, { weights: o });
      let shape: number[];
      if (inputShape) shape = inputShape;
      else {
        const s = model.spec;
        if (s.arch === 'torchscript') throw invalidArgument('--input-shape', 'the input shape C,H,W of a TorchScript model (e.g. 1,28,28)', o.inputShape);
        shape = [s.inChannels ?? 1, s.inputSize ?? 28, s.inputSize ?? 28];
      }
      log(`profile fisher: ${model.kind} model, input [${shape.join(', ')}], batches ${o.batch}`);
      const rows = await profileFisher(model, {
        inputShape: shape, batchSizes, methods, repeats, channelsLast: o.channelsLast ? true : undefined, ...speed,
      });
      emit(Boolean(o.json), { inputShape: shape, rows }, () => {
        const head = `${'method'.padEnd(11)} ${'batch'.padStart(6)} ${'ms/batch'.padStart(10)} ${'samples/s'.padStart(10)} ${'peak MiB'.padStart(9)}  layout, classes/pass`;
        const eng = rows.length === 0 ? [] : [`engine: ${rows[0].engine}${rows[0].engineReason ? ` (${rows[0].engineReason})` : ''}`];
        return [...eng, head, ...rows.map((r) => `${r.method.padEnd(11)} ${String(r.batchSize).padStart(6)} ${r.ms.toFixed(1).padStart(10)} ${r.samplesPerSecond.toFixed(1).padStart(10)} ${(r.peakBytes / 2 ** 20).toFixed(1).padStart(9)}` +
          (r.layout ? `  ${r.layout}, ${r.classesPerPass}` : ''))].join('\n');
      });
      model.dispose();
    }));
}
