/**
 * The bindings of the runner's {@link Science} interface to the science API (lib/science/model.ts,
 * lib/science/data, lib/science/train.ts, lib/science/attacks.ts, lib/science/fisher.ts fisherDataset, lib/science/metrics.ts ccklMetrics,
 * lib/science/pictures.ts). This file is the ONE
 * place where experiments touch those modules: when one of them changes its signature, only the
 * matching function below changes.
 */
import { Model, ModelSpec, evaluate as evaluateClean } from '../science/model';
import { Dataset, fashionMnist, mnist, cifar10, synthetic, permutation } from '../science/data';
import type { AttackConfig, DataConfig, TrainConfig } from './config';
import { configAttackParams } from './config';
import type { CcklSummary } from './rundir';
import { fisherDataset, FisherMethod } from '../science/fisher';
import { ccklMetrics } from '../science/metrics';
import { train as trainModel, manualSeed, TrainOptions, ScheduleOptions } from '../science/train';
import { evaluateRobustness, KeptExamples, NamedAttack } from '../science/robust';
import { AttackParams } from '../science/attacks';
import { FisherLensError } from '../util/errors';
import { classMatrices, pictureGrid, PictureAttack, pictureSamples } from '../science/pictures';
import { writePictureGrid } from '../science/picture-files';
import type { Science, RunExecutor } from './executor';
import { scienceExecutor } from './executor';

/**
 * The configured split: fashion-mnist (data.root, else $FISHERLENS_FASHION_MNIST, else Debian's
 * /usr/share/datasets/fashion-mnist), mnist / cifar10 (data.root), or the synthetic stand-in (one
 * seeded Gaussian-class set of trainSize + testSize images cut into train and test, so both share
 * the class structure). trainSize keeps a seeded random subset of the training split; testSize the
 * first images of the test split.
 */
export async function loadRunData(data: DataConfig, split: 'train' | 'test', opts: { seed: number; device: string; signal?: AbortSignal }): Promise<Dataset> {
  if (split === 'test' && data.evalSplit === 'heldout') return heldOut(data, opts);
  let full: Dataset;
  if (data.dataset === 'synthetic') {
    const s = data.synthetic ?? { channels: 3, size: 32, classes: 10, trainSize: 256, testSize: 128 };
    const all = await synthetic({ kind: 'gaussian', n: s.trainSize + s.testSize, numClasses: s.classes, channels: s.channels, size: s.size, seed: opts.seed, signal: opts.signal });
    const idx = split === 'train' ? range(0, s.trainSize) : range(s.trainSize, s.trainSize + s.testSize);
    full = await all.subset(idx, `synthetic/${split}`, { signal: opts.signal });
    all.dispose();
  } else if (data.dataset === 'fashion-mnist') {
    full = await fashionMnist({ split, dir: data.root, signal: opts.signal });
  } else if (data.dataset === 'mnist') {
    full = await mnist(requireRoot(data), { split, signal: opts.signal });
  } else {
    full = await cifar10(requireRoot(data), split, { signal: opts.signal });
  }
  const keep = split === 'train' ? data.trainSize : data.testSize;
  if (keep === undefined || keep >= full.size) return moveTo(full, opts.device, opts.signal);
  const idx = split === 'train' ? permutation(full.size, opts.seed).slice(0, keep) : range(0, keep);
  const sub = await full.subset(idx, full.name, { signal: opts.signal });
  full.dispose();
  return moveTo(sub, opts.device, opts.signal);
}

/**
 * evalSplit heldout: the training split's images at positions [trainSize, trainSize + testSize) of
 * the seeded permutation whose first trainSize positions are the training subset (disjoint from it).
 */
async function heldOut(data: DataConfig, opts: { seed: number; device: string; signal?: AbortSignal }): Promise<Dataset> {
  const { trainSize, testSize } = data;
  if (trainSize === undefined || testSize === undefined) throw new FisherLensError('ERR_CONFIG', 'data.evalSplit heldout needs data.trainSize and data.testSize');
  const full = await loadRunData({ ...data, trainSize: undefined, evalSplit: 'test' }, 'train', { ...opts, device: 'cpu' });
  if (trainSize + testSize > full.size) {
    const n = full.size;
    full.dispose();
    throw new FisherLensError('ERR_CONFIG', `data.evalSplit heldout: trainSize + testSize = ${trainSize + testSize} exceeds the ${n} training images`);
  }
  const idx = permutation(full.size, opts.seed).slice(trainSize, trainSize + testSize);
  const sub = await full.subset(idx, `${full.name}/heldout`, { signal: opts.signal });
  full.dispose();
  return moveTo(sub, opts.device, opts.signal);
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}

function requireRoot(data: DataConfig): string {
  if (!data.root) throw new FisherLensError('ERR_CONFIG', `data.root: required for dataset '${data.dataset}' (the folder of its files)`);
  return data.root;
}

async function moveTo(d: Dataset, device: string, signal?: AbortSignal): Promise<Dataset> {
  if (device === 'cpu') return d;
  const moved = await d.to(device, { signal });
  d.dispose();
  return moved;
}

/** The lr schedule in lib/science/train.ts's form. `step` becomes multistep at every stepSize epochs. */
export function trainSchedule(t: TrainConfig): ScheduleOptions {
  const s = t.schedule;
  const warmupEpochs = s.warmupEpochs;
  switch (s.type) {
    case 'constant': return { type: 'constant', warmupEpochs };
    case 'cosine': return { type: 'cosine', minFactor: s.minFactor ?? 0, warmupEpochs };
    case 'multistep': return { type: 'multistep', milestones: s.milestones ?? [], gamma: s.gamma, warmupEpochs };
    case 'step': {
      const every = s.stepSize ?? Math.max(1, Math.floor(t.epochs / 3));
      const milestones: number[] = [];
      for (let e = every; e < t.epochs; e += every) milestones.push(e);
      return { type: 'multistep', milestones, gamma: s.gamma, warmupEpochs };
    }
  }
}

/** An evaluation attack of the config in lib/science/attacks.ts's form (autoattack: the cascade's parameters). */
export function evalAttackParams(a: AttackConfig, seed: number): NamedAttack {
  if (a.type !== 'autoattack') return attackParams(a, seed);
  const stages = a.attacks?.map((s) => (typeof s === 'string' ? s : { kind: s.type, steps: s.steps, restarts: s.restarts, targets: s.targets }));
  return { kind: 'autoattack', norm: a.norm, epsilon: a.epsilon, version: a.version ?? (stages ? 'custom' : 'standard'), attacks: stages, seed };
}

/** An attack of the config in lib/science/attacks.ts's form (CW's κ is `confidence`). */
export function attackParams(a: AttackConfig, seed: number): AttackParams {
  if (a.type === 'autoattack') throw new FisherLensError('ERR_CONFIG', 'autoattack is an evaluation (eval.attacks), not a per-batch attack');
  return configAttackParams(a, seed);
}

/** CCKL over all different-class pairs of data, JS mean, lower bound, and the N / R split over `pairs` sampled pairs (lib/science/metrics.ts ccklMetrics). */
export async function ccklSplit(model: Model, data: Dataset, opts: { pairs: number; seed: number; batchSize: number; signal?: AbortSignal }): Promise<Omit<CcklSummary, 'samples'>> {
  const r = await ccklMetrics(model, data, { pairs: opts.pairs, seed: opts.seed, batchSize: opts.batchSize, signal: opts.signal });
  return {
    cckl: r.cckl, jsMean: r.jsMean, lowerBound: r.lowerBound, nonRobust: r.nonRobust, nonRobustStderr: r.nonRobustSe,
    robust: r.robust, nonRobustFraction: r.nonRobustFraction, pairs: r.nonRobustPairs,
  };
}

/** The real science API bound for the runner. */
export function defaultScience(): Science<Model, Dataset> {
  // per model, the examples evaluate() kept of the samples pictures() shows (then dropped)
  const kept = new WeakMap<Model, KeptExamples>();
  return {
    loadData: loadRunData,
    info: (d) => ({ size: d.size, imageShape: d.imageShape, numClasses: d.numClasses }),
    take: (d, n) => d.take(n),
    async createModel(spec, info, opts) {
      const { name: _name, path: file, weights, weightsEntry, ...arch } = spec;
      let model: Model;
      if (file !== undefined) model = await Model.from(file, { device: opts.device });
      else {
        // seeded initial weights (the global generator; lib/science/train.ts manualSeed)
        manualSeed(opts.seed);
        model = await Model.from({ ...arch, inChannels: info.imageShape[0], inputSize: info.imageShape[1], numClasses: info.numClasses } as ModelSpec,
          { device: opts.device });
      }
      if (weights !== undefined) {
        try {
          await model.loadWeights(weights, { entry: weightsEntry });
        } catch (e) {
          model.dispose();
          throw e;
        }
      }
      return model;
    },
    async train(model, data, opts) {
      const t = opts.config;
      const track = t.track;
      const o: TrainOptions = {
        method: t.method, epochs: t.epochs, batchSize: t.batchSize, seed: opts.seed,
        optimizer: t.optimizer, schedule: trainSchedule(t),
        attack: { epsilon: t.epsilon, stepSize: t.stepSize, steps: t.steps, beta: t.beta, lambda: t.lambda, samples: t.samples, exact: t.exact, powerIters: t.powerIters, norm: t.norm },
        augment: t.augment,
        probe: opts.probe, probeSize: opts.probe?.size,
        track: { fisher: track.fisher, cckl: track.cckl, nonRobustPairs: track.nonRobustPairs },
        trackAttack: track.attack ? attackParams(track.attack, opts.seed) : undefined,
        channelsLast: t.channelsLast,
        outDir: opts.dir.dir, resume: opts.resume, checkpointEvery: opts.checkpointEvery, stopAtBatch: opts.stopAtBatch, stopGraceSec: opts.stopGraceSec,
        // the runner's event writer (tb/ of the run folder), else none: train opens no file of its own
        tensorboard: opts.tensorboard !== undefined, tensorboardWriter: opts.tensorboard?.writer, tensorboardBatchEvery: opts.tensorboard?.batchEvery,
        onEvent: (e) => {
          if (e.type === 'batch') opts.onBatch(e);
          else {
            const { type: _t, ...record } = e;
            opts.onEpoch(record);
          }
        },
      };
      const r = await trainModel(model, data, { ...o, signal: opts.signal });
      return r.model;
    },
    async evaluate(model, data, attacks, opts) {
      // clean accuracy and cross-entropy (lib/science/model.ts evaluate), then each attack (lib/science/robust.ts evaluateRobustness)
      const clean = await evaluateClean(model, data, { batchSize: opts.batchSize, signal: opts.signal });
      opts.onProgress?.(1 / (1 + attacks.length), 'clean');
      if (attacks.length === 0) return { accuracy: clean.accuracy, crossEntropy: clean.crossEntropy, count: clean.count, attacks: {} };
      // the samples the picture grid will show (pictures() below draws the same): kept from these batches
      const keep = opts.pictureSamples ? pictureSamples(data.labels.toNumbers(), opts.pictureSamples, opts.seed) : undefined;
      const r = await evaluateRobustness(model, data, attacks.map((a) => ({ ...evalAttackParams(a.attack, opts.seed), name: a.name })), {
        batchSize: opts.batchSize, signal: opts.signal, resumeDir: opts.keepDir, resumeKey: opts.modelKey, stopAtBatch: opts.stopAtBatch, keep,
        onBatch: (e) => opts.onProgress?.((1 + attacks.length * e.done / e.total) / (1 + attacks.length), 'attacks'),
      });
      if (Math.abs(r.accuracy - clean.accuracy) > 1e-9) {
        throw new FisherLensError('ERR_VALUE', `clean accuracy differs between science/model.ts evaluate (${clean.accuracy}) and science/robust.ts evaluateRobustness (${r.accuracy})`);
      }
      if (r.kept) kept.set(model, r.kept);
      return {
        accuracy: clean.accuracy, crossEntropy: clean.crossEntropy, count: clean.count,
        attacks: Object.fromEntries(r.attacks.map((a) => [a.name, a.robustAccuracy])),
        worstCaseAccuracy: r.worstCaseAccuracy,
        warnings: Object.fromEntries(r.attacks.filter((a) => (a.warnings?.length ?? 0) > 0).map((a) => [a.name, a.warnings!])),
      };
    },
    async fisher(model, data, opts) {
      const r = await fisherDataset(model, data, { method: opts.method as FisherMethod, steps: opts.iterations, maxIter: opts.iterations, batchSize: opts.batchSize, signal: opts.signal });
      const nan = () => new Float64Array(r.n).fill(NaN);
      return { lambdaMax: r.lambdaMax ?? nan(), frobenius: r.frobenius ?? nan(), trace: r.trace ?? nan() };
    },
    cckl: (model, data, opts) => ccklSplit(model, data, opts),
    async pictures(model, data, attacks, opts) {
      const indices = pictureSamples(data.labels.toNumbers(), opts.samples, opts.seed);
      // the evaluation's examples and outcomes of these samples (evaluate() kept them), so every mark
      // is the table's; a cascade's column shows the breaking stage's example, else the last stage's attempt
      const ex = kept.get(model);
      const examples = ex && ex.indices.length === indices.length && ex.indices.every((v, k) => v === indices[k]) ? ex : undefined;
      const pd = await pictureGrid(model, data, attacks.map((a) => ({ ...evalAttackParams(a.attack, opts.seed), name: a.name }) as PictureAttack), { indices, examples, signal: opts.signal });
      kept.delete(model);
      writePictureGrid(opts.dir, pd);
    },
    classes: (model, data, opts) => classMatrices(model, data, opts),
    dispose: (x) => x.dispose(),
  };
}

/** The runner's default executor: {@link scienceExecutor} over {@link defaultScience}. */
export function defaultExecutor(): RunExecutor {
  return scienceExecutor(defaultScience());
}
