import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { loadData } from '../science/data';
import { FisherLensError, invalidArgument } from '../util/errors';
import { attackPresets, AttackPresetName } from '../science/attacks';
import { presets, PresetName, ScheduleOptions, train, TrainOptions, EpochMetrics } from '../science/train';
import {
  action, tensorboardOption, choice, graceArg, preemptController, dataOptions, declared, deviceOption, emit, jsonOption, log, modelArg, modelOption, natInt, num, posInt, Progress, WeightsCliOptions,
} from './common';
import { checkField } from '../experiment/config-errors';
import { OptimizerSchema, ScheduleSchema, TrainSchema } from '../experiment/config';
import { CHECKPOINT_EVERY_DEFAULT, GRACE_DEFAULT_SEC, OPTIMIZER_OPTIONS, TRAIN_METHODS, TRAIN_OPTIONS, TRAIN_STEP_OPTIONS, parseCheckpointEvery } from '../science/options';
import { optionHelp } from '../util/schema';

interface TrainCliOptions extends WeightsCliOptions {
  tensorboard: boolean;
  tensorboardBatchEvery?: string;
  model: string;
  exportWeights?: string;
  data: string;
  labels?: string;
  method?: string;
  preset?: string;
  epochs?: string;
  batchSize?: string;
  subset?: string;
  optimizer?: string;
  lr?: string;
  momentum?: string;
  nesterov?: boolean;
  weightDecay?: string;
  schedule?: string;
  warmup?: string;
  epsilon?: string;
  stepSize?: string;
  steps?: string;
  beta?: string;
  lambda?: string;
  samples?: string;
  exact?: boolean;
  powerIters?: string;
  norm?: string;
  seed: string;
  probeSize: string;
  trackAttack?: string;
  nonRobustPairs?: string;
  out?: string;
  resume?: boolean;
  checkpointEvery: string;
  grace: string;
  device: string;
  json?: boolean;
}

/** A schedule from the CLI: constant | cosine | multistep:75,90[:0.1] | onecycle[:0.3]. */
export function parseSchedule(s: string): ScheduleOptions {
  const [name, a, b] = s.split(':');
  if (name === 'constant') return { type: 'constant' };
  if (name === 'cosine') return { type: 'cosine' };
  if (name === 'multistep') {
    const ms = (a ?? '').split(',').filter(Boolean).map(Number);
    if (!ms.length || ms.some((v) => !Number.isInteger(v) || v < 1)) throw invalidArgument('--schedule multistep:<epochs>', 'epochs >= 1 like 75,90', s);
    return { type: 'multistep', milestones: ms, gamma: b === undefined ? 0.1 : num('schedule', b) };
  }
  if (name === 'onecycle') return { type: 'onecycle', peak: a === undefined ? 0.3 : num('schedule', a) };
  throw invalidArgument('--schedule', 'constant, cosine, multistep:E1,E2[:gamma] or onecycle[:peak]', s);
}

/** `fisherlens train`: natural, PGD-AT, TRADES, MART, FIRE, Jacobian or Fisher-penalty training with per-epoch tracking and checkpoints. */
export function register(program: Command): void {
  const cmd = program
    .command('train')
    .description(`train a model (${TRAIN_METHODS.join(' | ')}); per-epoch accuracy, Fisher norms and CCKL on a probe of the test set; checkpoints + metrics.jsonl in --out`);
  modelOption(cmd);
  dataOptions(cmd)
    .option('--method <m>', `${optionHelp(TRAIN_STEP_OPTIONS.method)} (default natural, or the preset's)`)
    .option('--preset <name>', `published settings: ${Object.keys(presets).join(', ')} (explicit options override)`)
    .option('--epochs <n>', optionHelp(TRAIN_OPTIONS.epochs))
    .option('--batch-size <n>', optionHelp(TRAIN_OPTIONS.batchSize))
    .option('--subset <n>', 'train on the first n training images only')
    .option('--optimizer <name>', optionHelp(OPTIMIZER_OPTIONS.type))
    .option('--lr <lr>', optionHelp(OPTIMIZER_OPTIONS.lr))
    .option('--momentum <m>', optionHelp(OPTIMIZER_OPTIONS.momentum))
    .option('--nesterov', 'Nesterov momentum')
    .option('--weight-decay <wd>', optionHelp(OPTIMIZER_OPTIONS.weightDecay))
    .option('--schedule <s>', 'constant | cosine | multistep:E1,E2[:gamma] | onecycle[:peak]')
    .option('--warmup <epochs>', 'linear warm-up epochs')
    .option('--epsilon <e>', optionHelp(TRAIN_STEP_OPTIONS.epsilon))
    .option('--step-size <a>', optionHelp(TRAIN_STEP_OPTIONS.stepSize))
    .option('--steps <k>', optionHelp(TRAIN_STEP_OPTIONS.steps))
    .option('--beta <b>', optionHelp(TRAIN_STEP_OPTIONS.beta))
    .option('--lambda <l>', optionHelp(TRAIN_STEP_OPTIONS.lambda))
    .option('--samples <n>', optionHelp(TRAIN_STEP_OPTIONS.samples))
    .option('--exact', TRAIN_STEP_OPTIONS.exact.doc)
    .option('--power-iters <k>', optionHelp(TRAIN_STEP_OPTIONS.powerIters))
    .option('--norm <n>', optionHelp(TRAIN_STEP_OPTIONS.norm))
    .option('--seed <n>', TRAIN_OPTIONS.seed.doc, String(TRAIN_OPTIONS.seed.default))
    .option('--probe-size <n>', 'test-set probe for per-epoch tracking (0: none)', String(TRAIN_OPTIONS.probeSize.default))
    .option('--track-attack <preset>', `robust accuracy per epoch under an attack preset: ${Object.keys(attackPresets).join(', ')}`)
    .option('--non-robust-pairs <n>', 'CCKL non-robust fraction per epoch from n sampled pairs (slow)')
    .option('--out <dir>', 'write checkpoint.pt (every epoch) and metrics.jsonl here')
    .option('--resume', 'continue from --out\'s checkpoint')
    .option('--checkpoint-every <every>', `with --out: also checkpoint inside an epoch, every N batches (500b) or S seconds (300s), or off`, CHECKPOINT_EVERY_DEFAULT)
    .option('--grace <seconds>', 'on SIGTERM/SIGINT: checkpoint at the next batch boundary and exit (143 after SIGTERM) within this many seconds; a batch that cannot end in time is abandoned and the boundary before it checkpointed', String(GRACE_DEFAULT_SEC))
    .option('--tensorboard-batch-every <k>', `with --out: ${TRAIN_OPTIONS.tensorboardBatchEvery.doc} (default ${TRAIN_OPTIONS.tensorboardBatchEvery.default})`)
    .option('--export-weights <file>', 'at the end, write the weights as a PyTorch state dict: .safetensors, else a zip .pt that torch.load(weights_only=True) reads');
  deviceOption(cmd);
  tensorboardOption(cmd);
  jsonOption(cmd)
    .action(action(async (o: TrainCliOptions) => {
      // flags that a config also sets are checked by the config schema's declaration of that field
      const field = (name: string, schema: Parameters<typeof checkField>[0], v: string): number => checkField(schema, num(name, v), `--${name}`) as number;
      if (o.resume && !o.out) throw invalidArgument('--resume', '--out with it (the folder whose checkpoint.pt to continue from)');
      // checked before training, not after it
      if (o.exportWeights !== undefined && !fs.existsSync(path.dirname(path.resolve(o.exportWeights)))) {
        throw new FisherLensError('ERR_IO', `--export-weights: folder ${path.dirname(path.resolve(o.exportWeights))} does not exist`);
      }
      const checkpointEvery = parseCheckpointEvery('--checkpoint-every', o.checkpointEvery);
      const grace = graceArg(o.grace);
      let opts: TrainOptions = { method: 'natural' };
      if (o.preset !== undefined) {
        opts = JSON.parse(JSON.stringify(presets[choice('preset', Object.keys(presets) as PresetName[], o.preset)])) as TrainOptions;
      }
      if (o.method !== undefined) opts.method = declared('method', o.method, TRAIN_STEP_OPTIONS.method);
      if (o.epochs !== undefined) opts.epochs = posInt('epochs', o.epochs);  // the API takes 0; from the command line it is a mistake
      if (o.batchSize !== undefined) opts.batchSize = declared('batch-size', o.batchSize, TRAIN_OPTIONS.batchSize);
      if (o.subset !== undefined) opts.subset = posInt('subset', o.subset);
      const opt = { ...(opts.optimizer ?? {}) };
      if (o.optimizer !== undefined) opt.type = declared('optimizer', o.optimizer, OPTIMIZER_OPTIONS.type);
      if (o.lr !== undefined) opt.lr = field('lr', OptimizerSchema.shape.lr, o.lr);
      if (o.momentum !== undefined) opt.momentum = field('momentum', OptimizerSchema.shape.momentum, o.momentum);
      if (o.nesterov) opt.nesterov = true;
      if (o.weightDecay !== undefined) opt.weightDecay = field('weight-decay', OptimizerSchema.shape.weightDecay, o.weightDecay);
      opts.optimizer = opt;
      if (o.schedule !== undefined) opts.schedule = parseSchedule(o.schedule);
      if (o.warmup !== undefined) opts.schedule = { ...(opts.schedule ?? { type: 'constant' }), warmupEpochs: field('warmup', ScheduleSchema.shape.warmupEpochs, o.warmup) };
      const att = { ...(opts.attack ?? {}) };
      if (o.epsilon !== undefined) att.epsilon = field('epsilon', TrainSchema.shape.epsilon, o.epsilon);
      if (o.stepSize !== undefined) att.stepSize = field('step-size', TrainSchema.shape.stepSize, o.stepSize);
      if (o.steps !== undefined) att.steps = field('steps', TrainSchema.shape.steps, o.steps);
      if (o.beta !== undefined) att.beta = field('beta', TrainSchema.shape.beta, o.beta);
      if (o.lambda !== undefined) att.lambda = field('lambda', TrainSchema.shape.lambda, o.lambda);
      if (o.samples !== undefined) att.samples = field('samples', TrainSchema.shape.samples, o.samples);
      if (o.exact) att.exact = true;
      if (o.powerIters !== undefined) att.powerIters = field('power-iters', TrainSchema.shape.powerIters, o.powerIters);
      if (o.norm !== undefined) att.norm = declared('norm', o.norm, TRAIN_STEP_OPTIONS.norm);
      opts.attack = att;
      opts.seed = declared('seed', o.seed, TRAIN_OPTIONS.seed);
      if (o.trackAttack !== undefined) opts.trackAttack = { ...attackPresets[choice('track-attack', Object.keys(attackPresets) as AttackPresetName[], o.trackAttack)] };
      if (o.nonRobustPairs !== undefined) opts.track = { nonRobustPairs: posInt('non-robust-pairs', o.nonRobustPairs) };
      const probeSize = natInt('probe-size', o.probeSize);
      const trainSet = await loadData(o.data, { labels: o.labels, split: 'train' });
      const probe = probeSize > 0 && !o.labels ? await loadData(o.data, { split: 'test' }) : undefined;
      const model = await modelArg(o.model, o.device, {
        defaults: { inChannels: trainSet.imageShape[0], inputSize: trainSet.imageShape[1], numClasses: trainSet.numClasses },
        announceFresh: false, seed: opts.seed, weights: o,
      });
      if (o.out) opts.outDir = path.resolve(o.out);
      opts.resume = Boolean(o.resume);
      opts.tensorboard = o.tensorboard;
      if (o.tensorboardBatchEvery !== undefined) opts.tensorboardBatchEvery = declared('tensorboard-batch-every', o.tensorboardBatchEvery, TRAIN_OPTIONS.tensorboardBatchEvery);
      const pre = preemptController(grace, o.out ? `checkpointing at the next batch boundary into ${o.out}; --resume continues from it` : 'stopping at the next batch boundary (no --out: nothing is kept)');
      let progress = new Progress('epoch 1');
      log(`train: ${opts.method} on ${trainSet.name} (${Math.min(trainSet.size, opts.subset ?? Infinity)} images), ` +
        `${model.parameterCount} parameters, ${opts.epochs ?? TRAIN_OPTIONS.epochs.default} epochs${o.out ? `, writing ${o.out}` : ''}`);
      let r;
      try {
        r = await train(model, trainSet, {
          ...opts, probe, probeSize: probe ? probeSize : undefined,  // --probe-size 0: no probe (the API's probeSize is ≥ 1)
          checkpointEvery, stopAtBatch: pre.stop.signal, stopGraceSec: pre.graceSec,
          onEvent: (e) => {
            if (e.type === 'batch') {
              if (e.batch === 1) progress = new Progress(`epoch ${e.epoch}`);
              progress.update(e.batch, e.batches, `loss ${e.loss.toFixed(3)} acc ${(100 * e.accuracy).toFixed(1)}% ${e.samplesPerSec.toFixed(0)} img/s`);
            } else log(epochLine(e));
          },
        });
      } catch (e) {
        if (pre.stop.signal.aborted && (e as { code?: string }).code === 'ERR_ABORTED') {
          log(`fisherlens: train stopped${o.out ? `; its checkpoint is in ${o.out}: run the same command with --resume to continue` : ''}`);
          process.exitCode = pre.exitCode();
          return;
        }
        throw e;
      } finally {
        pre.dispose();
      }
      if (o.exportWeights !== undefined) {
        await model.exportWeights(o.exportWeights);
        log(`train: weights written to ${o.exportWeights} (PyTorch state dict, ${/\.safetensors$/i.test(o.exportWeights) ? 'safetensors' : 'zip .pt'})`);
      }
      emit(Boolean(o.json), { method: opts.method, outDir: opts.outDir ?? null, history: r.history },
        () => r.history.map(epochLine).join('\n'));
      trainSet.dispose();
      probe?.dispose();
      model.dispose();
    }));
}

function epochLine(m: EpochMetrics): string {
  const parts = [`epoch ${m.epoch}`, `loss ${m.trainLoss.toFixed(4)}`, `train acc ${(100 * m.trainAccuracy).toFixed(2)}%`];
  if (m.probeAccuracy !== undefined) parts.push(`test acc ${(100 * m.probeAccuracy).toFixed(2)}%`);
  if (m.fisherFrobeniusMean !== undefined) parts.push(`‖G‖F mean ${m.fisherFrobeniusMean.toPrecision(4)}`);
  if (m.fisherLambdaMaxMean !== undefined) parts.push(`λmax mean ${m.fisherLambdaMaxMean.toPrecision(4)}`);
  if (m.cckl !== undefined) parts.push(`CCKL ${m.cckl.toFixed(3)}`);
  if (m.ccklNonRobustFraction !== undefined) parts.push(`non-robust ${(100 * m.ccklNonRobustFraction).toFixed(1)}%`);
  if (m.robustAccuracy !== undefined) parts.push(`robust acc ${(100 * m.robustAccuracy).toFixed(2)}%`);
  parts.push(`${m.seconds.toFixed(1)} s`);
  return parts.join('  ');
}
