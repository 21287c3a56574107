/**
 * How one run is carried out. The runner (runner.ts) owns the grid, run directories, skipping
 * and resuming; a {@link RunExecutor} trains and evaluates ONE resolved run inside its directory.
 *
 * {@link scienceExecutor} is the real executor: it composes the science API (data, models,
 * training, attacks, Fisher, CCKL) through the narrow {@link Science} interface, so that the
 * composition (what is computed, on which split, what lands in summary.json) lives here once,
 * and the bindings to lib/science/data, lib/model, lib/train, lib/attacks, lib/fisher, lib/metrics live
 * in science.ts.
 */
import type { AttackConfig, DataConfig, ModelConfig, ResolvedRun, TrainConfig } from './config';
import { CcklSummary, EpochRecord, FILES, FisherSummary, RunDir, RunResult, mean, quantiles, quantile, writeJsonAtomic } from './rundir';
import { FisherLensError } from '../util/errors';
import { removeStaleTemps } from '../util/files';
import { CLASSES_FILE, PICTURES_VERSION } from '../science/picture-files';
import type { ClassMatrices, ClassPictures } from '../science/picture-files';
import * as fs from 'fs';
import * as path from 'path';
import type { EventWriter } from '../util/tfevents';
import { logEvaluation, logRunEnd, logRunStart, openRunBoard } from './tensorboard';

/** Progress inside one run. `fraction` is the share of the run's work done, in [0, 1]. */
export interface RunProgress {
  phase: 'load' | 'train' | 'eval';
  fraction: number;
  epoch?: number;
  epochs?: number;
  batch?: number;
  batches?: number;
  loss?: number;
  accuracy?: number;
  samplesPerSec?: number;
  /** e.g. 'pgd', 'fisher', 'cckl' during evaluation. */
  step?: string;
}

/** What the runner hands an executor for one run. */
export interface RunContext {
  run: ResolvedRun;
  dir: RunDir;
  /** True when dir holds a checkpoint to continue from (training resumes; finished epochs are kept). */
  resume: boolean;
  signal?: AbortSignal;
  /** Graceful stop: training checkpoints at its next batch boundary; the run then stops with ERR_ABORTED. */
  stopAtBatch?: AbortSignal;
  /** With stopAtBatch: the grace in s; a batch that cannot end in time is abandoned and the last boundary checkpointed (TrainOptions.stopGraceSec). */
  stopGraceSec?: number;
  /** Mid-epoch checkpoints ('500b', '300s', 'off'), overriding run.train.checkpointEvery. */
  checkpointEvery?: string;
  /** false: no TensorBoard event files, whatever run.tensorboard says (`--no-tensorboard`). */
  tensorboard?: boolean;
  progress(p: RunProgress): void;
  /** Called after each epoch with the record that was appended to metrics.jsonl. */
  epoch(record: EpochRecord): void;
}

/**
 * Trains and evaluates one run. Contract: after `execute` resolves, `dir.checkpoint` holds the
 * final weights and `dir.metrics` one EpochRecord per trained epoch; the returned RunResult is
 * what the runner writes to summary.json. On abort it rejects with FisherLensError('ERR_ABORTED')
 * leaving the last checkpoint in place.
 */
export interface RunExecutor {
  execute(ctx: RunContext): Promise<RunResult>;
}

/** Shape facts of a dataset. */
export interface DataInfo { size: number; imageShape: number[]; numClasses: number }

/** Events the science layer reports during training. */
export interface TrainBatchEvent { epoch: number; batch: number; batches: number; loss: number; accuracy: number; samplesPerSec?: number }

/** Options of {@link Science.train}. */
export interface ScienceTrainOptions<D> {
  config: TrainConfig;
  seed: number;
  device: string;
  /** Fixed test subset on which the per-epoch metrics (EpochRecord) are tracked. */
  probe?: D;
  /** The run directory: checkpoint.ckpt and metrics.jsonl go here. */
  dir: RunDir;
  /** Continue from dir.checkpoint (its epoch count, optimizer and schedule state). */
  resume: boolean;
  signal?: AbortSignal;
  /** Graceful stop at the next batch boundary, with a checkpoint (ERR_ABORTED). */
  stopAtBatch?: AbortSignal;
  /** With stopAtBatch: the grace in s; a batch that cannot end in time is abandoned and the last boundary checkpointed (TrainOptions.stopGraceSec). */
  stopGraceSec?: number;
  /** Mid-epoch checkpoints ('500b', '300s', 'off'; default config.checkpointEvery, else every 300 s). */
  checkpointEvery?: string;
  /** The run's open TensorBoard event writer (training adds its curves, SessionLog and flushes) and the batch-curve interval. */
  tensorboard?: { writer: EventWriter; batchEvery: number };
  onBatch(e: TrainBatchEvent): void;
  /** After each epoch, once its EpochRecord is in metrics.jsonl. */
  onEpoch(r: EpochRecord): void;
}

/** Per-sample Fisher quantities over a dataset (docs/math.md (9)–(18)), in dataset order. */
export interface FisherArrays { lambdaMax: ArrayLike<number>; frobenius: ArrayLike<number>; trace: ArrayLike<number> }

/** The science API as the runner needs it (bound to the real modules in science.ts). */
export interface Science<M, D> {
  /** The split of the configured dataset, restricted to trainSize (seeded subset) or testSize (first N). */
  loadData(data: DataConfig, split: 'train' | 'test', opts: { seed: number; device: string; signal?: AbortSignal }): Promise<D>;
  info(data: D): DataInfo;
  /** The first n samples. */
  take(data: D, n: number): D | Promise<D>;
  /** A model with fresh weights seeded by `seed` (or loaded from spec.path). */
  createModel(spec: ModelConfig, info: DataInfo, opts: { seed: number; device: string }): Promise<M>;
  /** Trains in place (or resumes), writing checkpoint.ckpt and metrics.jsonl into opts.dir; resolves with the trained model. */
  train(model: M, data: D, opts: ScienceTrainOptions<D>): Promise<M>;
  /**
   * Clean accuracy / cross-entropy and the accuracy under each attack (by attack name). With
   * `pictureSamples`, it keeps the examples of the samples {@link pictures} will show (same count
   * and seed), so the grid shows the evaluation's outcomes instead of attacking again.
   */
  evaluate(model: M, data: D, attacks: { name: string; attack: AttackConfig }[],
    opts: {
      batchSize: number; seed: number; pictureSamples?: number; signal?: AbortSignal; onProgress?: (fraction: number, step: string) => void;
      /** Keep each finished batch here, and skip the batches found (a stopped evaluation resumes by batch); `modelKey` identifies the model. */
      keepDir?: string; modelKey?: string;
      /** Graceful stop at the next batch boundary (ERR_ABORTED; the batches done are kept). */
      stopAtBatch?: AbortSignal;
    }):
    Promise<{ accuracy: number; crossEntropy: number; count: number; attacks: Record<string, number>; worstCaseAccuracy?: number; warnings?: Record<string, string[]> }>;
  /** Per-sample Fisher of every sample of data (eval mode). */
  fisher(model: M, data: D, opts: { method: string; iterations?: number; batchSize: number; signal?: AbortSignal }): Promise<FisherArrays>;
  /** CCKL over all different-class pairs of data and its decomposition over `pairs` sampled pairs. */
  cckl(model: M, data: D, opts: { pairs: number; seed: number; batchSize: number; signal?: AbortSignal }): Promise<Omit<CcklSummary, 'samples'>>;
  /**
   * The picture grid (lib/science/pictures.ts) of `samples` seeded test images, written into `dir`:
   * clean, each attack's example and perturbation, the Fisher eigenvector. Optional (stand-ins skip pictures).
   */
  pictures?(model: M, data: D, attacks: { name: string; attack: AttackConfig }[], opts: { samples: number; seed: number; dir: string; signal?: AbortSignal }): Promise<void>;
  /** Mean predicted distribution per true class and mean KL between classes over data (lib/science/pictures.ts ClassMatrices). Optional. */
  classes?(model: M, data: D, opts: { batchSize: number; signal?: AbortSignal }): Promise<ClassMatrices>;
  dispose(x: M | D): void;
}

/** Attack names as they appear in summaries and reports (name, else type; duplicates numbered). */
export function attackNames(attacks: AttackConfig[]): { name: string; attack: AttackConfig }[] {
  const used = new Map<string, number>();
  return attacks.map((a) => {
    const base = a.name ?? a.type;
    const n = (used.get(base) ?? 0) + 1;
    used.set(base, n);
    return { name: n === 1 ? base : `${base}-${n}`, attack: a };
  });
}

/** Relative cost of one training batch of a method (forward+backward passes). */
export function methodCost(train: TrainConfig): number {
  const steps = train.steps ?? 10;
  return train.method === 'natural' ? 1 : train.method === 'pgd-at' ? steps + 1 : steps + 2;
}

function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted) throw new FisherLensError('ERR_ABORTED', 'run aborted');
}

/** Summarises per-sample Fisher arrays for summary.json. */
export function summariseFisher(method: string, f: FisherArrays): FisherSummary {
  // methods that give only λ_max (power) leave the other arrays NaN: their summaries are NaN
  const fro = Array.from(f.frobenius).sort((a, b) => a - b);
  return {
    method,
    samples: fro.length,
    frobeniusMean: mean(fro),
    frobeniusMedian: quantile(fro, 0.5),
    traceMean: mean(f.trace),
    lambdaMaxMean: mean(f.lambdaMax),
    lambdaMaxQuantiles: quantiles(f.lambdaMax),
    lambdaMax: Array.from(f.lambdaMax),
  };
}

/**
 * The real executor: load data → model → train (resumable) → evaluate clean + attacks on the test
 * subset → exact Fisher spectra → CCKL and its split → pictures/ (class heatmaps of the initial
 * and final model, the image grid). Progress weights: training batches × the
 * method's passes per batch, then evaluation.
 */
export function scienceExecutor<M, D>(science: Science<M, D>): RunExecutor {
  return {
    async execute(ctx: RunContext): Promise<RunResult> {
      const { run, signal } = ctx;
      // phase boundaries: an abort, or a graceful stop (the training's checkpoint is written)
      const stopCheck = () => { checkAbort(signal); checkAbort(ctx.stopAtBatch); };
      const seed = run.seed;
      ctx.progress({ phase: 'load', fraction: 0 });
      const owned: (M | D)[] = [];
      // TensorBoard: this process's event file in <run>/tb (lib/experiment/tensorboard.ts)
      const board = run.tensorboard.enabled && ctx.tensorboard !== false ? openRunBoard(ctx.dir.dir) : undefined;
      try {
        if (board) logRunStart(board, run, 0);
        let trainData: D = await science.loadData(run.data, 'train', { seed, device: run.device, signal });
        owned.push(trainData);
        if (run.train.maxBatches !== undefined) {
          // smoke runs: an epoch of at most maxBatches batches = the first maxBatches × batchSize samples
          const cut = await science.take(trainData, run.train.maxBatches * run.train.batchSize);
          if (cut !== trainData) { owned.push(cut); trainData = cut; }
        }
        const testData = await science.loadData(run.data, 'test', { seed, device: run.device, signal });
        owned.push(testData);
        stopCheck();
        const info = science.info(trainData);
        const testInfo = science.info(testData);
        const probe = run.data.probeSize > 0 ? await science.take(testData, Math.min(run.data.probeSize, testInfo.size)) : undefined;
        if (probe && probe !== testData) owned.push(probe);

        let model = await science.createModel(run.model, info, { seed, device: run.device });
        owned.push(model);
        const t = run.train;
        // the class heatmaps of the initial weights (before training; on resume the model is still the seeded initial one)
        const pics = run.eval.pictures;
        const ccklSamples = Math.min(run.eval.cckl.samples, testInfo.size);
        let initialClasses: ClassMatrices | undefined;
        if (pics.classes && science.classes && t.epochs > 0) {
          const d = await science.take(testData, ccklSamples);
          if (d !== testData) owned.push(d);
          initialClasses = await science.classes(model, d, { batchSize: Math.min(run.eval.batchSize, 256), signal });
        }
        const batches = Math.min(Math.ceil(info.size / t.batchSize), t.maxBatches ?? Infinity);
        const trainWork = t.epochs * batches * methodCost(t);
        const evalWork = evalCost(run, testInfo.size);
        const total = trainWork + evalWork || 1;
        if (t.epochs > 0) {
          const trained = await science.train(model, trainData, {
            config: t, seed, device: run.device, probe, dir: ctx.dir, resume: ctx.resume, signal,
            stopAtBatch: ctx.stopAtBatch, stopGraceSec: ctx.stopGraceSec, checkpointEvery: ctx.checkpointEvery ?? t.checkpointEvery,
            tensorboard: board ? { writer: board, batchEvery: run.tensorboard.batchEvery } : undefined,
            onBatch: (e) => ctx.progress({
              phase: 'train', fraction: (((e.epoch - 1) * e.batches + e.batch) * methodCost(t)) / total,
              epoch: e.epoch, epochs: t.epochs, batch: e.batch, batches: e.batches, loss: e.loss, accuracy: e.accuracy,
              samplesPerSec: e.samplesPerSec,
            }),
            onEpoch: (r) => ctx.epoch(r),
          });
          if (trained !== model) { owned.push(trained); model = trained; }
        }
        stopCheck();

        // Final evaluation on the test subset.
        const ev = run.eval;
        const evalData = testData;
        let done = trainWork;
        const evalProgress = (fraction: number, step: string) => ctx.progress({ phase: 'eval', step, fraction: Math.min(1, (done + fraction * attackCost(run, testInfo.size)) / total) });
        const named = attackNames(ev.attacks);
        // the attacks (an AutoAttack of many images can take hours) keep each finished batch in the
        // run folder: a stopped or killed run resumes its evaluation by batch; the model is the
        // final checkpoint (its size and mtime say which)
        const ck = fs.existsSync(ctx.dir.checkpoint) ? fs.statSync(ctx.dir.checkpoint) : undefined;
        const acc = await science.evaluate(model, evalData, named, {
          batchSize: ev.batchSize, seed, signal, onProgress: evalProgress, stopAtBatch: ctx.stopAtBatch,
          keepDir: path.join(ctx.dir.dir, FILES.evalBatches), modelKey: ck ? `${ck.size}:${ck.mtimeMs}` : JSON.stringify(run.model),
          ...(science.pictures && pics.samples > 0 ? { pictureSamples: pics.samples } : {}),
        });
        done += attackCost(run, testInfo.size);
        stopCheck();

        ctx.progress({ phase: 'eval', step: 'fisher', fraction: done / total });
        const fisherData = await science.take(testData, Math.min(ev.fisher.samples, testInfo.size));
        if (fisherData !== testData) owned.push(fisherData);
        const f = await science.fisher(model, fisherData, { method: ev.fisher.method, iterations: ev.fisher.iterations, batchSize: Math.min(ev.batchSize, 128), signal });
        done += Math.min(ev.fisher.samples, testInfo.size) * info.numClasses / 64;
        stopCheck();

        ctx.progress({ phase: 'eval', step: 'cckl', fraction: done / total });
        const ccklData = await science.take(testData, Math.min(ev.cckl.samples, testInfo.size));
        if (ccklData !== testData) owned.push(ccklData);
        const c = await science.cckl(model, ccklData, { pairs: ev.cckl.pairs, seed, batchSize: Math.min(ev.batchSize, 128), signal });
        stopCheck();

        // pictures: the class heatmaps over the CCKL samples, the image grid of a few test images
        const picDir = path.join(ctx.dir.dir, FILES.pictures);
        removeStaleTemps(picDir);  // a killed earlier attempt's half-written picture files
        if (pics.classes && science.classes) {
          ctx.progress({ phase: 'eval', step: 'pictures', fraction: done / total });
          const final = await science.classes(model, ccklData, { batchSize: Math.min(ev.batchSize, 256), signal });
          const cp: ClassPictures = { version: PICTURES_VERSION, final, ...(initialClasses ? { initial: initialClasses } : {}) };
          writeJsonAtomic(path.join(picDir, CLASSES_FILE), cp);
        }
        if (pics.samples > 0 && science.pictures) {
          ctx.progress({ phase: 'eval', step: 'pictures', fraction: done / total });
          await science.pictures(model, testData, named, { samples: pics.samples, seed, dir: picDir, signal });
        }
        ctx.progress({ phase: 'eval', step: 'done', fraction: 1 });
        const result: RunResult = {
          evalCount: acc.count,
          accuracy: acc.accuracy,
          crossEntropy: acc.crossEntropy,
          attacks: acc.attacks,
          ...(acc.worstCaseAccuracy !== undefined ? { worstCaseAccuracy: acc.worstCaseAccuracy } : {}),
          ...(acc.warnings && Object.keys(acc.warnings).length > 0 ? { attackWarnings: acc.warnings } : {}),
          fisher: summariseFisher(ev.fisher.method, f),
          cckl: { samples: science.info(ccklData).size, ...c },
          epochs: t.epochs,
        };
        if (board) {
          // at the last epoch's step: the HParams dashboard pairs the grid values with these metrics
          logEvaluation(ctx.dir.dir, t.epochs, result, f, picDir);
          logRunEnd(board);
        }
        return result;
      } finally {
        board?.close();
        for (const x of owned.reverse()) {
          try { science.dispose(x); } catch { /* already disposed */ }
        }
      }
    },
  };
}

function attackCost(run: ResolvedRun, testSize: number): number {
  const n = Math.min(run.data.testSize ?? testSize, testSize) / run.train.batchSize;
  return n * (1 + run.eval.attacks.reduce((s, a) => s + attackSteps(a), 0));
}

/** Gradient steps per image of an evaluation attack (autoattack: its stages', 100 per APGD run and target; an estimate). */
function attackSteps(a: AttackConfig): number {
  if (a.type !== 'autoattack') return (a.steps ?? 1) * a.restarts;
  const stages = a.attacks ?? (a.version === 'rand' ? [{ type: 'apgd-ce' }, { type: 'apgd-dlr' }] : [{ type: 'apgd-ce' }, { type: 'apgd-t' }, { type: 'fab-t' }, { type: 'square' }]);
  return stages.reduce((s: number, st) => {
    const o = typeof st === 'string' ? { type: st } : st;
    const targets = o.type === 'apgd-t' || o.type === 'fab-t' ? ('targets' in o && o.targets ? o.targets : 9) : 1;
    const steps = 'steps' in o && o.steps ? o.steps : o.type === 'square' ? 5000 / 20 : 100; // a Square query is a forward only
    return s + steps * targets * ('restarts' in o && o.restarts ? o.restarts : 1) * (a.version === 'rand' ? 20 : 1);
  }, 0);
}

function evalCost(run: ResolvedRun, testSize: number): number {
  return attackCost(run, testSize) + Math.min(run.eval.fisher.samples, testSize) * 10 / 64 + Math.min(run.eval.cckl.pairs, 1e5) / 256;
}

const DATASET_SIZES: Record<string, [number, number]> = {
  'fashion-mnist': [60000, 10000], mnist: [60000, 10000], cifar10: [50000, 10000],
};

/** Rough cost of one forward+backward of an architecture relative to small-cnn (measured on 28×28 here; × width²). */
const ARCH_COST: Record<string, number> = {
  mlp: 0.1, lenet: 0.15, 'mnist-net': 0.2, 'small-cnn': 1, vgg11: 10, vgg13: 15, vgg16: 20,
  resnet20: 4, resnet32: 7, resnet44: 9, resnet56: 12, 'wrn-34-10': 300, 'preact-resnet18': 30,
};

/** Estimated relative cost of a run (training + evaluation work units × architecture cost), for overall progress. */
export function estimateCost(run: ResolvedRun): number {
  const arch = run.model.arch ? (ARCH_COST[run.model.arch] ?? 1) * (run.model.width ?? 1) ** 2 : 1;
  return arch * workUnits(run);
}

function workUnits(run: ResolvedRun): number {
  const [trainN, testN] = run.data.dataset === 'synthetic'
    ? [run.data.synthetic?.trainSize ?? 256, run.data.synthetic?.testSize ?? 128]
    : DATASET_SIZES[run.data.dataset];
  const n = Math.min(run.data.trainSize ?? trainN, trainN);
  const t = run.train;
  const batches = Math.min(Math.ceil(n / t.batchSize), t.maxBatches ?? Infinity);
  return t.epochs * batches * methodCost(t) + evalCost(run, Math.min(run.data.testSize ?? testN, testN));
}
