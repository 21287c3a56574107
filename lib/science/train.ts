/**
 * Training: natural (cross-entropy), PGD-AT (Madry et al. 2018) and TRADES (Zhang et al. 2019),
 * with SGD/Adam/AdamW, learning-rate schedules, per-epoch tracking of accuracy and Fisher
 * quantities on a fixed probe set, atomic per-epoch checkpoints, exact resume, progress events
 * and AbortSignal. Each batch step is one native op (native/train.cc); the epoch loop, schedules
 * and logging live here. See docs/training.md.
 */
import * as fs from 'fs';
import * as path from 'path';
import { addon } from '../binding/native';
import { runOp, OpOptions } from '../binding/op';
import { Model, modelHandle } from './model';
import { Dataset, permutation } from './data/dataset';
import { FisherLensError, invalidArgument, sync } from '../util/errors';
import { fisherExact } from './fisher';
import { AttackParams } from './attacks';
import { evaluateRobustness } from './robust';
import { ccklMetrics, CcklAccumulator, CcklResult } from './metrics';
import { ensureDir, removeStaleTemps, writeFileAtomic } from '../util/files';
import { mean, median } from '../util/stats';
import { abandonAfterSec, CHECKPOINT_EVERY_DEFAULT, CheckpointEvery, TRAIN_OPTIONS, TRAIN_STEP_OPTIONS, optimizerOptions, parseCheckpointEvery, trainStepOptions, AttackNorm, OptimizerType, TrainMethod } from './options';
import { parseOptions } from '../util/schema';
import { withGradientChoices } from './tuning-store';
import { EventWriter } from '../util/tfevents';

export type { TrainMethod } from './options';

/** Optimiser; defaults in brackets. */
export interface OptimizerOptions {
  /** ['sgd'] */
  type?: OptimizerType;
  /** Base learning rate [0.1 for sgd, 1e-3 for adam/adamw]. */
  lr?: number;
  /** SGD momentum [0.9]. */
  momentum?: number;
  /** SGD Nesterov momentum [false]. */
  nesterov?: boolean;
  /** L2 weight decay (AdamW: decoupled) [0]. */
  weightDecay?: number;
  /** Adam betas [[0.9, 0.999]]. */
  betas?: [number, number];
  /** Adam ε [1e-8]. */
  eps?: number;
}

/**
 * Learning-rate schedule as a multiplier of the base lr, a function of the fractional epoch
 * t = epoch + batch/batches (epoch 0-based). `warmupEpochs` ramps linearly from 0 first.
 */
export type ScheduleOptions = ({
  type: 'constant';
} | {
  /** × gamma at each milestone: the lr of (1-based) epoch e is base · gamma^#{m ≤ e} (TRADES: `epoch >= 75`). */
  type: 'multistep'; milestones: number[]; gamma?: number;
} | {
  /** Cosine from 1 to minFactor over all epochs. */
  type: 'cosine'; minFactor?: number;
} | {
  /** Linear interpolation through (epoch, factor) points, e.g. one-cycle [[0, 0], [2, 1], [10, 0]]. */
  type: 'piecewise'; points: [number, number][];
} | {
  /** One-cycle: linear 0 → 1 at peak fraction of the run (default 0.3), then linear to 0. */
  type: 'onecycle'; peak?: number;
}) & { warmupEpochs?: number };

/** The method's parameters: the inner maximisation of PGD-AT, TRADES, MART and FIRE (L∞ unless norm says otherwise) and the penalties' weights and estimators. */
export interface TrainAttackOptions {
  /** Ball radius in pixel units [0.031]. */
  epsilon?: number;
  /** Step size [0.007]. */
  stepSize?: number;
  /** Inner steps [10]. */
  steps?: number;
  /** TRADES and MART β [6]. */
  beta?: number;
  /** The penalty's weight λ (fire [6], jacobian [0.01], fisher-trace [0.01], fisher-lambda [0.01]). */
  lambda?: number;
  /** jacobian: random projections; fisher-trace: sampled classes per input [1]. */
  samples?: number;
  /** jacobian, fisher-trace: the exact all-classes penalty instead of the estimate [false]. */
  exact?: boolean;
  /** fisher-lambda: detached power iterations per batch [3]. */
  powerIters?: number;
  /** ['linf'] */
  norm?: AttackNorm;
  /** PGD-AT random start [true]; TRADES, MART and FIRE always start at x + 0.001·N(0, I). */
  randomStart?: boolean;
}

export interface TrackOptions {
  /** Mean/median Fisher Frobenius norm and λ_max over the probe set [true]. */
  fisher?: boolean;
  /** CCKL over the probe set (exact over all pairs, from p(x)) [true]. */
  cckl?: boolean;
  /**
   * CCKL's non-robust fraction N / CCKL from this many sampled different-class pairs of the
   * probe (lib/metrics ccklMetrics: one JVP per pair) [0: off].
   */
  nonRobustPairs?: number;
}

export interface TrainOptions {
  method: TrainMethod;
  /** Epochs [10]. */
  epochs?: number;
  /** Batch size [128]. */
  batchSize?: number;
  optimizer?: OptimizerOptions;
  /** [constant] */
  schedule?: ScheduleOptions;
  /** Seed of shuffling, attack starts, augmentation and dropout [0]. */
  seed?: number;
  /** Inner maximisation (pgd-at, trades). */
  attack?: TrainAttackOptions;
  /** Random crop with zero padding and horizontal flip [none]. */
  augment?: { cropPad?: number; flip?: boolean };
  /** Use only the first n training samples. */
  subset?: number;
  /** Run convolutions in channels-last memory format during each step (and its inner attack) [false]. */
  channelsLast?: boolean;
  /** Fixed probe set (e.g. the test set) for per-epoch tracking; a seeded subset of probeSize is used. */
  probe?: Dataset;
  /** Probe samples [512]. */
  probeSize?: number;
  track?: TrackOptions;
  /** Robust accuracy on the probe under this attack, per epoch [off]. */
  trackAttack?: AttackParams;
  /** Directory for checkpoint.pt (after every epoch, atomic) and metrics.jsonl. */
  outDir?: string;
  /** Continue from outDir's checkpoint when there is one [false]. */
  resume?: boolean;
  /**
   * Checkpoints inside an epoch too, at batch boundaries (outDir only): every n batches and/or
   * s seconds of training ['300s', CHECKPOINT_EVERY_DEFAULT; 'off': epoch ends only]. A resume
   * continues from that batch with the same data order, augmentation draws, RNG streams and
   * optimiser state, so the finished run equals an uninterrupted one.
   */
  checkpointEvery?: CheckpointEvery | string;
  /**
   * Graceful stop (SIGTERM under preemption): at the next batch boundary the state is checkpointed
   * (outDir only) and train rejects with ERR_ABORTED. `signal` instead aborts within the batch,
   * leaving the last checkpoint.
   */
  stopAtBatch?: AbortSignal;
  /**
   * With outDir: TensorBoard event files in outDir/tb [true]: per epoch (step = epoch) every
   * numeric field of metrics.jsonl under `epoch/<field>` and histograms of the probe's per-sample
   * λ_max and ‖G_x‖_F under `probe/`; flushed at each epoch end and before each checkpoint. A
   * resumed run writes a SessionLog START at its first new step. docs/experiments.md.
   */
  tensorboard?: boolean;
  /** TensorBoard: the batch loss every k batches too (step = global batch number, 1-based), in outDir/tb/batches [0: off]. */
  tensorboardBatchEvery?: number;
  /** An open event writer to log into instead of opening one in outDir/tb (the runner's, which logs the evaluation too); train leaves it open. */
  tensorboardWriter?: EventWriter;
  /**
   * With stopAtBatch: the grace in s from its abort to the process's exit. A batch still running
   * {@link abandonAfterSec}(grace) s after the stop is abandoned: its native op is cancelled (the
   * model and optimiser are left as they were before it) and the checkpoint holds the state at the
   * last batch boundary [undefined: wait for the batch however long it takes].
   */
  stopGraceSec?: number;
  onEvent?: (e: TrainEvent) => void;
}

export interface BatchEvent {
  type: 'batch';
  /** 1-based epoch. */
  epoch: number;
  /** 1-based batch within the epoch. */
  batch: number;
  batches: number;
  /** Minimised loss of this batch. */
  loss: number;
  /** Accuracy on the batch the outer step saw (pgd-at: the adversarial batch). */
  accuracy: number;
  samplesPerSec: number;
}

/**
 * Metrics of one epoch, tracked at its end on the fixed probe set (probe quantities are absent
 * when no probe is given; the tracked ones only when asked for). Accuracies are fractions in
 * [0, 1]; losses and cross-entropies in nats; Fisher norms in nats per pixel². One line of a run
 * folder's metrics.jsonl is this record (lib/experiment/rundir.ts EpochRecord).
 */
export interface EpochMetrics {
  /** 1-based epoch number. */
  epoch: number;
  /** Learning rate at the epoch's last step. */
  lr: number;
  /** Mean training loss (the minimised one) and accuracy over the epoch. */
  trainLoss: number;
  trainAccuracy: number;
  /** Wall seconds of the epoch and training throughput (samples per second). */
  seconds: number;
  samplesPerSec: number;
  /** Probe (test-subset) accuracy and cross-entropy (nats). */
  probeAccuracy?: number;
  probeCrossEntropy?: number;
  /** Mean and median ‖G_x‖_F over the probe. */
  fisherFrobeniusMean?: number;
  fisherFrobeniusMedian?: number;
  /** Mean and median λ_max(G_x) over the probe. */
  fisherLambdaMaxMean?: number;
  fisherLambdaMaxMedian?: number;
  /** CCKL over the probe (all pairs) and its non-robust fraction N / CCKL (when tracked). */
  cckl?: number;
  ccklNonRobustFraction?: number;
  /** Probe accuracy under the tracked attack (when tracked). */
  robustAccuracy?: number;
}

export type EpochEvent = { type: 'epoch' } & EpochMetrics;
export type TrainEvent = BatchEvent | EpochEvent;

export interface TrainResult {
  history: EpochMetrics[];
  model: Model;
}


/** Seeds LibTorch's global CPU generator: call before Model.create for reproducible initial weights. */
export function manualSeed(seed: number): void {
  sync(() => addon().manualSeed(seed));
}

/** Published settings (and a CPU-scale one); spread into train()'s options and override. */
export const presets = {
  /** TRADES CIFAR-10 (Zhang et al. 2019): ε 0.031, step 0.007, 10 steps, β 6, batch 128, SGD 0.1 m 0.9 wd 2e-4, 76 epochs, ×0.1 at 75, crop + flip. */
  'trades-cifar10': {
    method: 'trades', epochs: 76, batchSize: 128,
    optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 2e-4 },
    schedule: { type: 'multistep', milestones: [75], gamma: 0.1 },
    attack: { epsilon: 0.031, stepSize: 0.007, steps: 10, beta: 6, norm: 'linf' },
    augment: { cropPad: 4, flip: true },
  },
  /** TRADES MNIST: ε 0.3, step 0.01, 40 steps, β 1, batch 128, SGD 0.01 m 0.9, 100 epochs, ×0.1 at 55, 75, 90. */
  'trades-mnist': {
    method: 'trades', epochs: 100, batchSize: 128,
    optimizer: { type: 'sgd', lr: 0.01, momentum: 0.9, weightDecay: 0 },
    schedule: { type: 'multistep', milestones: [55, 75, 90], gamma: 0.1 },
    attack: { epsilon: 0.3, stepSize: 0.01, steps: 40, beta: 1, norm: 'linf' },
  },
  /** Madry et al. PGD-AT CIFAR-10: ε 8/255, 10 steps of 2/255, random start (SGD 0.1, m 0.9, wd 2e-4, crop + flip). */
  'madry-cifar10': {
    method: 'pgd-at', epochs: 76, batchSize: 128,
    optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 2e-4 },
    schedule: { type: 'multistep', milestones: [75], gamma: 0.1 },
    attack: { epsilon: 8 / 255, stepSize: 2 / 255, steps: 10, randomStart: true, norm: 'linf' },
    augment: { cropPad: 4, flip: true },
  },
  /**
   * CPU scale (Fashion-MNIST subsets): ε 0.1 L∞, 3 inner steps of 0.04, β 1, batch 128, Adam 1e-3,
   * 4 epochs on the first 4000 images (Adam, since small-cnn with SGD learns far slower in so few
   * epochs; docs/training.md has the accuracies measured with each).
   */
  'fashion-mnist-cpu': {
    method: 'trades', epochs: 4, batchSize: 128, subset: 4000,
    optimizer: { type: 'adam', lr: 1e-3 },
    schedule: { type: 'constant' },
    attack: { epsilon: 0.1, stepSize: 0.04, steps: 3, beta: 1, norm: 'linf' },
  },
} as const satisfies Record<string, TrainOptions>;
export type PresetName = keyof typeof presets;

/** The learning-rate multiplier at fractional epoch t (0-based) of a run of `epochs` epochs. */
export function scheduleFactor(s: ScheduleOptions | undefined, t: number, epochs: number): number {
  const sch: ScheduleOptions = s ?? { type: 'constant' };
  let f: number;
  switch (sch.type) {
    case 'constant': f = 1; break;
    case 'multistep': {
      const e = Math.floor(t) + 1; // 1-based epoch
      f = (sch.gamma ?? 0.1) ** sch.milestones.filter((m) => e >= m).length;
      break;
    }
    case 'cosine': {
      const minF = sch.minFactor ?? 0;
      f = minF + (1 - minF) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, t / epochs)));
      break;
    }
    case 'piecewise': {
      const p = sch.points;
      if (p.length === 0) throw invalidArgument("schedule option 'points'", 'at least one (epoch, factor) point for a piecewise schedule', p);
      if (t <= p[0][0]) f = p[0][1];
      else if (t >= p[p.length - 1][0]) f = p[p.length - 1][1];
      else {
        let i = 0;
        while (t > p[i + 1][0]) i++;
        const [t0, f0] = p[i];
        const [t1, f1] = p[i + 1];
        f = f0 + ((f1 - f0) * (t - t0)) / (t1 - t0);
      }
      break;
    }
    case 'onecycle': {
      const peak = (sch.peak ?? 0.3) * epochs;
      f = t <= peak ? t / peak : Math.max(0, (epochs - t) / (epochs - peak));
      break;
    }
    default: throw invalidArgument("schedule option 'type'", 'one of constant, multistep, cosine, piecewise, onecycle', (sch as { type: unknown }).type);
  }
  const w = sch.warmupEpochs ?? 0;
  if (w > 0 && t < w) f *= t / w;
  return f;
}

/** Probe metrics: accuracy, CE, Fisher norms, CCKL, robust accuracy (eval mode; model left as found). */
export async function probeMetrics(model: Model, probe: Dataset, opts: {
  track?: TrackOptions; trackAttack?: AttackParams; batchSize?: number; seed?: number;
  /** Receives the per-sample ‖G_x‖_F and λ_max over the probe, in probe order (nats per pixel²). */
  onPerSample?: (frobenius: number[], lambdaMax: number[]) => void;
} & OpOptions = {}): Promise<Partial<EpochMetrics>> {
  const fro: number[] = [];
  const lam: number[] = [];
  // accuracy, CE and CCKL stream from native class sums of fisherExact's probabilities (metrics.cc)
  const acc = new CcklAccumulator({ keepLogp: false });
  let c: CcklResult;
  try {
    for (const b of probe.batches({ batchSize: opts.batchSize ?? 128 })) {
      const r = await fisherExact(model, b.x, { signal: opts.signal });
      try {
        await acc.addProbs(r.probs, b.y, { signal: opts.signal });
      } finally {
        r.probs.dispose(); r.spectrum.dispose();
      }
      fro.push(...r.frobenius);
      lam.push(...r.lambdaMax);
    }
    c = acc.result();
  } finally {
    acc.dispose();
  }
  opts.onPerSample?.(fro, lam);
  const m: Partial<EpochMetrics> = { probeAccuracy: c.accuracy, probeCrossEntropy: c.crossEntropy };
  if (opts.track?.fisher ?? true) {
    m.fisherFrobeniusMean = mean(fro);
    m.fisherFrobeniusMedian = median(fro);
    m.fisherLambdaMaxMean = mean(lam);
    m.fisherLambdaMaxMedian = median(lam);
  }
  if (opts.track?.cckl ?? true) m.cckl = c.cckl;
  if ((opts.track?.nonRobustPairs ?? 0) > 0) {
    const c = await ccklMetrics(model, probe, { pairs: opts.track!.nonRobustPairs, seed: opts.seed ?? 0, signal: opts.signal });
    m.ccklNonRobustFraction = c.nonRobustFraction;
  }
  if (opts.trackAttack) {
    const r = await evaluateRobustness(model, probe, [opts.trackAttack], { signal: opts.signal, batchSize: opts.batchSize ?? 128 });
    m.robustAccuracy = r.attacks[0].robustAccuracy;
  }
  return m;
}

/**
 * A checkpoint's meta: `epoch` epochs done; a mid-epoch checkpoint also has `batch` batches of the
 * next epoch done and that epoch's running sums (float64, so the epoch's metrics come out the same).
 */
interface Meta {
  epoch: number; history: EpochMetrics[]; method: TrainMethod; seed: number;
  batch?: number; partial?: { lossSum: number; correct: number; seen: number; seconds: number };
}

/**
 * Trains `model` on `trainData` (see {@link TrainOptions}); resolves with the per-epoch history
 * and the (same, trained) model. Abort with opts.signal: rejects with ERR_ABORTED within one
 * batch, leaving the last epoch's checkpoint intact.
 */
export async function train(model: Model, trainData: Dataset, opts: TrainOptions & OpOptions): Promise<TrainResult> {
  // every option validated against lib/science/options.ts and complete before the native calls
  const method = parseOptions('train', { method: TRAIN_STEP_OPTIONS.method }, opts).method as TrainMethod;
  const top = parseOptions('train', TRAIN_OPTIONS, opts);
  const epochs = top.epochs as number, batchSize = top.batchSize as number, seed = top.seed as number;
  const every = typeof opts.checkpointEvery === 'string' || opts.checkpointEvery === undefined
    ? parseCheckpointEvery('checkpointEvery', opts.checkpointEvery ?? CHECKPOINT_EVERY_DEFAULT) : opts.checkpointEvery;
  const o = opts.optimizer ?? {};
  const optOpts = optimizerOptions(o as OptimizerOptions & Record<string, unknown>);
  const baseLr = optOpts.lr as number;
  const opt = await runOp(opts, (ctl) => addon().createOptimizer(modelHandle(model), optOpts, ctl));
  const data = opts.subset !== undefined && opts.subset < trainData.size ? await trainData.take(opts.subset, { signal: opts.signal }) : trainData;
  const probeSize = top.probeSize as number;
  const probe = opts.probe
    ? probeSize < opts.probe.size
      ? await opts.probe.subset(permutation(opts.probe.size, seed + 1).slice(0, probeSize).sort((a, b) => a - b), undefined, { signal: opts.signal })
      : opts.probe
    : undefined;
  const a = opts.attack ?? {};
  // lr and seed change every step: placeholders here, set per step below
  const stepOpts = trainStepOptions({
    ...a, method, lr: 0, seed: 0, cropPad: opts.augment?.cropPad, flip: opts.augment?.flip, channelsLast: opts.channelsLast,
  });
  const ckpt = opts.outDir ? path.join(opts.outDir, 'checkpoint.pt') : undefined;
  const metricsFile = opts.outDir ? path.join(opts.outDir, 'metrics.jsonl') : undefined;
  let history: EpochMetrics[] = [];
  let start = 0;
  let startBatch = 0;
  let partial: Meta['partial'];
  if (opts.outDir) {
    ensureDir(opts.outDir);
    // a checkpoint write killed midway leaves checkpoint.pt.tmp-<pid>-<n>: remove it now
    removeStaleTemps(opts.outDir);
  }
  if (opts.resume && ckpt && fs.existsSync(ckpt)) {
    const meta = JSON.parse(await runOp(opts, (ctl) => addon().loadTrainState(ckpt, modelHandle(model), opt, ctl))) as Meta;
    history = meta.history;
    start = meta.epoch;
    if (meta.batch !== undefined && meta.partial) {
      startBatch = meta.batch;
      partial = meta.partial;
    }
  }
  const save = async (meta: Meta) => {
    await runOp(opts, (ctl) => addon().saveTrainState(ckpt!, modelHandle(model), opt, JSON.stringify(meta), ctl));
  };
  const stopped = () => new FisherLensError('ERR_ABORTED', 'training stopped at a batch boundary; its checkpoint is written and a resume continues from it');
  // a graceful stop whose next boundary is out of reach: the running batch's op is cancelled
  // abandonAfterSec(grace) s after the stop (one huge batch: a WRN-34-10 TRADES step on a CPU)
  const abandon = new AbortController();
  let abandonTimer: NodeJS.Timeout | undefined;
  const armAbandon = () => {
    if (opts.stopGraceSec === undefined) return;
    abandonTimer = setTimeout(() => abandon.abort(), abandonAfterSec(opts.stopGraceSec) * 1000);
    abandonTimer.unref();
  };
  if (opts.stopAtBatch?.aborted) armAbandon();
  else opts.stopAtBatch?.addEventListener('abort', armAbandon, { once: true });
  const stepSignal = opts.signal ? AbortSignal.any([opts.signal, abandon.signal]) : abandon.signal;
  let lastSave = Date.now();
  // metrics.jsonl is rewritten atomically (a symlink there is replaced, never followed)
  const writeMetrics = () => { if (metricsFile) writeFileAtomic(metricsFile, history.map((h) => JSON.stringify(h) + '\n').join('')); };
  writeMetrics();
  // TensorBoard: the caller's writer, else one of our own in outDir/tb; the batch curve in its own
  // run (tb/batches), since a SessionLog START drops every tag's later steps and batch steps are
  // on another scale than epochs
  const ownBoard = !opts.tensorboardWriter && opts.outDir !== undefined && top.tensorboard === true;
  const board = opts.tensorboardWriter ?? (ownBoard ? new EventWriter(path.join(opts.outDir!, 'tb')) : undefined);
  const batchEvery = top.tensorboardBatchEvery as number;
  const batchBoard = board && batchEvery > 0 ? new EventWriter(path.join(board.dir, 'batches')) : undefined;
  // steps ≥ start + 1 written before (after the checkpoint we resume from) are orphans: drop them
  board?.sessionStart(start + 1);
  if (ownBoard) board!.text('config', start, trainConfigText(opts));
  board?.flush();
  const flushBoards = () => { board?.flush(); batchBoard?.flush(); };
  try {
    for (let epoch = start; epoch < epochs; epoch++) {
      const idx = data.batchIndices({ batchSize, shuffle: true, seed: seed * 1000 + epoch });
      let t0 = Date.now();
      let lossSum = 0, correct = 0, seen = 0, lr = baseLr;
      const first = epoch === start ? startBatch : 0;
      if (first > 0 && partial) {
        ({ lossSum, correct, seen } = partial);
        t0 -= partial.seconds * 1000;
      }
      for (let bi = first; bi < idx.length; bi++) {
        if (bi > first && ckpt && metricsFile) {
          // a batch boundary inside the epoch: checkpoint when asked to stop or when due
          const due = opts.stopAtBatch?.aborted
            || (every.batches !== undefined && bi % every.batches === 0)
            || (every.seconds !== undefined && Date.now() - lastSave >= every.seconds * 1000);
          if (due) {
            flushBoards();
            await save({ epoch, history, method, seed, batch: bi, partial: { lossSum, correct, seen, seconds: (Date.now() - t0) / 1000 } });
            lastSave = Date.now();
          }
        }
        // at the epoch's first batch the state is the last checkpoint's already
        if (opts.stopAtBatch?.aborted) throw stopped();
        if (batchBoard && bi === first && epoch === start) batchBoard.sessionStart(epoch * idx.length + bi + 1);
        const b = data.batch(idx[bi]);
        const tb = Date.now();
        lr = baseLr * scheduleFactor(opts.schedule, epoch + bi / idx.length, epochs);
        let r;
        try {
          // the inner maximisation's gradient engine: the one stored on this machine for this
          // architecture (a resumed run in another process continues on the engine it started
          // with); a choice made by this step is stored at once, for a resume after a kill
          r = await withGradientChoices(model, () => runOp({ ...opts, signal: stepSignal }, (ctl) => addon().trainStep(modelHandle(model), opt, b.x.native, b.y.native, {
            ...stepOpts, lr, seed: (seed * 1009 + epoch) * 100003 + bi,
          }, ctl)));
        } catch (e) {
          if (!(abandon.signal.aborted && !opts.signal?.aborted && (e as FisherLensError).code === 'ERR_ABORTED')) throw e;
          // the batch is abandoned: a cancelled step leaves the model and optimiser as they were at
          // this boundary (native/train.cc trainStep), so that state is what the checkpoint holds
          // (at the first batch of this call it is on disk already)
          if (ckpt && metricsFile && bi > first) {
            await save({ epoch, history, method, seed, batch: bi, partial: { lossSum, correct, seen, seconds: (Date.now() - t0) / 1000 } });
          }
          throw new FisherLensError('ERR_ABORTED', `training stopped: batch ${bi + 1} of epoch ${epoch + 1} could not end within the grace and was abandoned; the checkpoint holds the state before it and a resume continues from it`);
        } finally {
          b.x.dispose(); b.y.dispose();
        }
        lossSum += r.loss * r.batch;
        correct += r.correct;
        seen += r.batch;
        if (batchBoard && (bi + 1) % batchEvery === 0) batchBoard.scalars(epoch * idx.length + bi + 1, { 'batch/loss': r.loss, 'batch/accuracy': r.correct / r.batch });
        opts.onEvent?.({
          type: 'batch', epoch: epoch + 1, batch: bi + 1, batches: idx.length, loss: r.loss,
          accuracy: r.correct / r.batch, samplesPerSec: r.batch / Math.max(1e-3, (Date.now() - tb) / 1000),
        });
      }
      const seconds = (Date.now() - t0) / 1000;
      let m: EpochMetrics = {
        epoch: epoch + 1, lr, trainLoss: lossSum / seen, trainAccuracy: correct / seen, seconds, samplesPerSec: seen / seconds,
      };
      if (probe) {
        m = { ...m, ...(await probeMetrics(model, probe, {
          track: opts.track, trackAttack: opts.trackAttack, seed, signal: opts.signal,
          onPerSample: board && (opts.track?.fisher ?? true) ? (fro, lam) => {
            board.histogram('probe/fisherLambdaMax', epoch + 1, lam);
            board.histogram('probe/fisherFrobenius', epoch + 1, fro);
          } : undefined,
        })) };
      }
      history.push(m);
      if (board) {
        // every numeric field of the metrics.jsonl line (a NaN is null there, and left out here);
        // flushed before the checkpoint, so events past a checkpoint are only ever ones a
        // resume's SessionLog START drops
        board.scalars(epoch + 1, Object.fromEntries(Object.entries(m)
          .filter(([k, v]) => k !== 'epoch' && typeof v === 'number' && Number.isFinite(v)).map(([k, v]) => [`epoch/${k}`, v as number])));
        flushBoards();
      }
      if (ckpt && metricsFile) {
        await save({ epoch: epoch + 1, history, method, seed });
        lastSave = Date.now();
        writeMetrics();
      }
      opts.onEvent?.({ type: 'epoch', ...m });
      if (opts.stopAtBatch?.aborted && epoch + 1 < epochs) throw stopped();
    }
  } finally {
    clearTimeout(abandonTimer);
    opts.stopAtBatch?.removeEventListener('abort', armAbandon);
    if (data !== trainData) data.dispose();
    if (probe && probe !== opts.probe) probe.dispose();
    batchBoard?.close();
    if (ownBoard) board!.close();
    else board?.flush();
  }
  return { history, model };
}

/** The training options as markdown (TensorBoard's text dashboard): the JSON of the settings, data sets and callbacks left out. */
function trainConfigText(opts: TrainOptions): string {
  const keep: (keyof TrainOptions)[] = ['method', 'epochs', 'batchSize', 'optimizer', 'schedule', 'seed', 'attack', 'augment', 'subset',
    'channelsLast', 'probeSize', 'track', 'trackAttack', 'checkpointEvery', 'tensorboardBatchEvery'];
  const o = Object.fromEntries(keep.filter((k) => opts[k] !== undefined).map((k) => [k, opts[k]]));
  return JSON.stringify(o, null, 2).split('\n').map((l) => `    ${l}`).join('\n');
}
