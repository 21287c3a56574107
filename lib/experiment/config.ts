/**
 * Experiment configs (YAML or JSON): the zod schemas of datasets, models, training methods with
 * their parameters, evaluation (attacks, Fisher, CCKL), seeds and grids. Every error is a
 * FisherLensError('ERR_CONFIG') naming the exact path and the allowed values, e.g.
 * `runs[2].train.method: expected one of natural | pgd-at | trades | mart | fire | jacobian | fisher-trace | fisher-lambda, got 'tradez'`
 * (lib/experiment/config-errors.ts); loading and grid expansion are lib/experiment/grid.ts.
 * The format is documented in docs/experiments.md.
 */
import { z } from 'zod';
import {
  ATTACK_KINDS, ATTACK_OPTIONS, AUGMENT_OPTIONS, AUTOATTACK_VERSIONS, FISHER_DATASET_OPTIONS, FISHER_METHODS as FISHER_METHOD_LIST, NORMS,
  OPTIMIZER_OPTIONS, OPTIMIZER_TYPES, TRAIN_METHODS, TRAIN_OPTIONS, TRAIN_STEP_OPTIONS, parseAttackOptions, parseCheckpointEvery,
} from '../science/options';
import type { OptionDecl } from '../util/schema';
import type { AttackKind, AttackNorm, AttackParams } from '../science/attacks';
import { PICTURE_SAMPLES } from '../science/pictures';

export const DATASETS = ['fashion-mnist', 'mnist', 'cifar10', 'synthetic'] as const;
export const ARCHS = [
  'mlp', 'small-cnn', 'mnist-net', 'lenet', 'vgg11', 'vgg13', 'vgg16',
  'resnet20', 'resnet32', 'resnet44', 'resnet56', 'wrn-34-10', 'preact-resnet18',
] as const;
export const METHODS = TRAIN_METHODS;
/** The attack kinds (lib/science/options.ts ATTACK_TABLE) and the AutoAttack cascade (lib/science/autoattack.ts). */
export const ATTACKS = [...ATTACK_KINDS, 'autoattack'] as const;
export const FISHER_METHODS = FISHER_METHOD_LIST;

/** A number option's range from its one declaration (lib/science/options.ts). */
function numberOf(d: OptionDecl): z.ZodNumber {
  let n = z.number();
  if (d.type === 'integer') n = n.int();
  if (d.min !== undefined) n = n.min(d.min);
  if (d.max !== undefined) n = n.max(d.max);
  if (d.above !== undefined) n = n.gt(d.above);
  if (d.below !== undefined) n = n.lt(d.below);
  return n;
}

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();
const prob = z.number().min(0).max(1);
/** Names (config, entries, models, attacks) become folder names: letters, digits, . _ -, never `.` or `..`. */
const NAME = z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, . _ - only')
  .refine((s) => s !== '.' && s !== '..', 'a name, not . or .. (it names a folder)');

/** Most runs a config may expand to unless the caller raises the cap (`fisherlens run --max-runs`). */
export const MAX_RUNS = 10_000;

/** Where the images come from. Inputs are pixels in [0, 1]. */
export const DataSchema = z.object({
  /** fashion-mnist | mnist (Debian dataset packages or `root`), cifar10 (`root` = cifar-10-batches-bin), synthetic. */
  dataset: z.enum(DATASETS),
  /** Folder of the dataset files (default: the Debian package's folder for (fashion-)mnist). */
  root: z.string().optional(),
  /** Training images used (a seeded, class-balanced-by-chance subset; default all). */
  trainSize: posInt.optional(),
  /** Test images used for the final evaluation (the first N of the test split; default all). */
  testSize: posInt.optional(),
  /**
   * Where the evaluation (and probe) images come from: `test` (the test split) or `heldout`: the
   * training split's images outside the run's training subset (the next testSize images of the
   * same seeded permutation that draws the trainSize subset), for tuning presets without looking
   * at the test split. `heldout` needs trainSize and testSize.
   */
  evalSplit: z.enum(['test', 'heldout']).default('test'),
  /** Test images on which Fisher norms, accuracy and CCKL are tracked every epoch (default 256). */
  probeSize: nonNegInt.default(256),
  /** Shape of the synthetic stand-in (dataset: synthetic). */
  synthetic: z.object({
    channels: posInt.default(3),
    size: posInt.default(32),
    classes: posInt.default(10),
    trainSize: posInt.default(256),
    testSize: posInt.default(128),
  }).strict().optional(),
}).strict().refine((d) => d.root !== undefined || d.dataset === 'fashion-mnist' || d.dataset === 'synthetic',
  { message: 'mnist and cifar10 need `root` (the folder of their files)', path: ['root'] })
  .refine((d) => d.evalSplit !== 'heldout' || (d.trainSize !== undefined && d.testSize !== undefined),
    { message: 'evalSplit heldout needs trainSize and testSize (the held-out images follow the training subset in its seeded permutation)', path: ['evalSplit'] });

/** A built-in architecture (lib/science/model.ts ModelSpec) or a saved model (`path`). */
export const ModelSchema = z.object({
  /** Label used in run ids and reports (default: derived from arch, activation, pool, width). */
  name: NAME.optional(),
  arch: z.enum(ARCHS).optional(),
  /** A TorchScript archive or FisherLens checkpoint to start from instead of fresh weights. */
  path: z.string().optional(),
  width: posInt.optional(),
  activation: z.enum(['relu', 'identity', 'tanh', 'softplus', 'gelu']).optional(),
  pool: z.enum(['max', 'avg']).optional(),
  hidden: z.array(posInt).optional(),
  mean: z.array(z.number()).optional(),
  std: z.array(z.number().positive()).optional(),
  /**
   * A PyTorch state dict loaded into the model once built (torch.save .pt/.pth, zip or legacy, or
   * .safetensors; read weights-only): the config's form of `--model SPEC --weights FILE`.
   */
  weights: z.string().optional(),
  /** Where the state dict sits in the `weights` file ('state_dict', 'ema'; default: found by looking). */
  weightsEntry: z.string().optional(),
}).strict().refine((m) => m.arch !== undefined || m.path !== undefined, { message: 'expected `arch` (a built-in architecture) or `path` (a saved model)' });

/** Enums and the library defaults from lib/science/options.ts OPTIMIZER_OPTIONS; lr and weightDecay are the sweeps' own defaults. */
export const OptimizerSchema = z.object({
  type: z.enum(OPTIMIZER_TYPES).default(OPTIMIZER_OPTIONS.type.default),
  lr: z.number().positive().default(0.05),
  momentum: z.number().min(0).max(1).default(OPTIMIZER_OPTIONS.momentum.default),
  weightDecay: z.number().nonnegative().default(5e-4),
  nesterov: z.boolean().default(OPTIMIZER_OPTIONS.nesterov.default),
}).strict();

export const ScheduleSchema = z.object({
  type: z.enum(['constant', 'cosine', 'step', 'multistep']).default('constant'),
  /** multistep: epochs at which lr is multiplied by gamma. */
  milestones: z.array(posInt).optional(),
  /** step: every `stepSize` epochs. */
  stepSize: posInt.optional(),
  gamma: z.number().positive().default(0.1),
  /** cosine: final factor of the base lr (default 0). */
  minFactor: z.number().min(0).max(1).optional(),
  /** Linear warm-up epochs. */
  warmupEpochs: z.number().nonnegative().default(0),
}).strict();

/** Training: method and its parameters (ε, step, steps, β are in pixel units, L∞ unless `norm`). */
export const TrainSchema = z.object({
  method: z.enum(METHODS),
  epochs: nonNegInt.default(5),
  batchSize: posInt.default(128),
  /** Checkpoints inside an epoch too: every N batches ('500b') or S seconds ('300s'), or 'off' (default: options.ts CHECKPOINT_EVERY_DEFAULT). */
  checkpointEvery: z.string().refine((v) => { try { parseCheckpointEvery('checkpointEvery', v); return true; } catch { return false; } },
    { message: "expected a number of batches such as 500b, seconds such as 300s, or 'off'" }).optional(),
  /** Stop each epoch after this many batches (smoke tests of large configs). */
  maxBatches: posInt.optional(),
  optimizer: OptimizerSchema.default({}),
  schedule: ScheduleSchema.default({}),
  /** Attack radius of the PGD-AT / TRADES / MART / FIRE inner maximisation. */
  epsilon: numberOf(TRAIN_STEP_OPTIONS.epsilon).optional(),
  stepSize: z.number().positive().optional(),
  steps: posInt.optional(),
  /** TRADES and MART trade-off β. */
  beta: numberOf(TRAIN_STEP_OPTIONS.beta).optional(),
  /** The penalty's weight λ (fire, jacobian, fisher-trace, fisher-lambda; default per method). */
  lambda: numberOf(TRAIN_STEP_OPTIONS.lambda).optional(),
  /** jacobian: random projections; fisher-trace: sampled classes per input. */
  samples: numberOf(TRAIN_STEP_OPTIONS.samples).optional(),
  /** jacobian, fisher-trace: the exact all-classes penalty. */
  exact: z.boolean().optional(),
  /** fisher-lambda: detached power iterations per batch. */
  powerIters: numberOf(TRAIN_STEP_OPTIONS.powerIters).optional(),
  norm: z.enum(NORMS).default(TRAIN_STEP_OPTIONS.norm.default),
  /** Convolutions in channels-last memory format during training steps (faster on CPU; default false). */
  channelsLast: z.boolean().default(TRAIN_STEP_OPTIONS.channelsLast.default),
  /** Random crop with zero padding and horizontal flip (CIFAR; default none; when given, data.cc augment's defaults). */
  augment: z.object({ cropPad: numberOf(AUGMENT_OPTIONS.pad).default(AUGMENT_OPTIONS.pad.default), flip: z.boolean().default(AUGMENT_OPTIONS.flip.default) }).strict().optional(),
  /** What is tracked on the probe after every epoch (metrics.jsonl). */
  track: z.object({
    /** Mean/median Fisher Frobenius norm and λ_max (default true). */
    fisher: z.boolean().default(true),
    /** CCKL over the probe (default true). */
    cckl: z.boolean().default(true),
    /** CCKL's non-robust fraction N / CCKL from this many sampled pairs of the probe (default 0: off; one JVP per pair). */
    nonRobustPairs: nonNegInt.default(0),
    /** Probe accuracy under this attack every epoch (default none). */
    attack: z.lazy(() => AttackSchema).optional(),
  }).strict().default({}),
}).strict();

export const AttackSchema = z.object({
  /** Column name in reports (default: the type). `pgd` and `cw` fill the paper's table. */
  name: NAME.optional(),
  type: z.enum(ATTACKS),
  epsilon: numberOf(ATTACK_OPTIONS.epsilon),
  stepSize: z.number().positive().optional(),
  steps: posInt.optional(),
  norm: z.enum(NORMS).default(ATTACK_OPTIONS.norm.default),
  restarts: numberOf(ATTACK_OPTIONS.restarts).default(ATTACK_OPTIONS.restarts.default),
  /** CW: margin confidence κ. */
  confidence: z.number().nonnegative().optional(),
  /** apgd-t / fab-t: target classes tried (lib/science/options.ts ATTACK_OPTIONS.targets: default 9, at most K − 1). */
  targets: numberOf(ATTACK_OPTIONS.targets).optional(),
  /** autoattack: standard | plus | rand | custom (default standard; custom with `attacks`). */
  version: z.enum(AUTOATTACK_VERSIONS).optional(),
  /** autoattack custom: the stages in order (kinds, or objects with `steps`, `restarts`, `targets`). */
  attacks: z.array(z.union([z.enum(ATTACK_KINDS), z.object({
    type: z.enum(ATTACK_KINDS), steps: posInt.optional(), restarts: posInt.optional(), targets: posInt.optional(),
  }).strict()])).min(1).optional(),
}).strict().refine((a) => a.type === 'autoattack' || (a.version === undefined && a.attacks === undefined),
  { message: '`version` and `attacks` are for type autoattack' })
  .refine((a) => a.type !== 'autoattack' || (a.stepSize === undefined && a.steps === undefined && a.confidence === undefined && a.targets === undefined),
    { message: 'autoattack takes norm, epsilon, version and attacks (per-stage `steps`/`restarts`/`targets` go in `attacks` entries)' })
  // what each attack supports (lib/science/options.ts ATTACK_TABLE), checked when the config is validated
  // (`run --dry-run`), not when the run reaches the attack
  .superRefine((a, ctx) => {
    const stages = a.type === 'autoattack' ? (a.attacks ?? []).map((s) => (typeof s === 'string' ? { type: s } : s)) : [a];
    for (const s of stages) {
      try {
        parseAttackOptions(configAttackParams({ ...s, norm: a.norm, epsilon: a.epsilon }));
      } catch (e) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
      }
    }
  });

/** An attack of the config in lib/science/attacks.ts's form (CW's κ is `confidence`). */
export function configAttackParams(a: {
  type: string; norm?: AttackNorm; epsilon?: number; restarts?: number; targets?: number; stepSize?: number; steps?: number; confidence?: number;
}, seed?: number): AttackParams {
  const p: AttackParams = { kind: a.type as AttackKind, norm: a.norm, epsilon: a.epsilon, restarts: a.restarts, seed };
  if (a.targets !== undefined) p.targets = a.targets;
  if (a.stepSize !== undefined) p.stepSize = a.stepSize;
  if (a.steps !== undefined) p.steps = a.steps;
  if (a.confidence !== undefined) {
    if (a.type === 'cw') p.kappa = a.confidence;
    else p.confidence = a.confidence;
  }
  return p;
}

export const EvalSchema = z.object({
  /** Evaluation batch size. */
  batchSize: posInt.default(256),
  attacks: z.array(AttackSchema).default([]),
  fisher: z.object({
    method: z.enum(FISHER_METHODS).default(FISHER_DATASET_OPTIONS.method.default),
    /** Test images whose per-sample Fisher spectrum is computed (default 512). */
    samples: posInt.default(512),
    /** Krylov dimension / iterations of the matrix-free methods. */
    iterations: posInt.optional(),
  }).strict().default({}),
  cckl: z.object({
    /** Test images over which CCKL (all pairs, exact) is computed (default 1000). */
    samples: posInt.default(1000),
    /** Different-class pairs sampled for the non-robust component N (default 2000). */
    pairs: posInt.default(2000),
  }).strict().default({}),
  /** Pictures in the run folder (lib/science/pictures.ts): the image grid and the class heatmaps. */
  pictures: z.object({
    /** Test images in the grid (clean, each attack, its perturbation, the Fisher eigenvector); 0: no grid (default 8). */
    samples: nonNegInt.default(PICTURE_SAMPLES),
    /** Class heatmaps (mean predicted distribution per class, mean KL between classes) over the CCKL samples (default true). */
    classes: z.boolean().default(true),
  }).strict().default({}),
}).strict();

/**
 * TensorBoard event files in each run folder's tb/ (lib/experiment/tensorboard.ts): on unless
 * `enabled: false`; `batchEvery` adds the train loss every k batches. Defaults from
 * lib/science/options.ts TRAIN_OPTIONS. Not part of a run's identity (like the device).
 */
export const TensorBoardSchema = z.object({
  enabled: z.boolean().default(TRAIN_OPTIONS.tensorboard.default),
  batchEvery: numberOf(TRAIN_OPTIONS.tensorboardBatchEvery).default(TRAIN_OPTIONS.tensorboardBatchEvery.default),
}).strict();

/** One fully resolved run: everything the executor needs, nothing left to default. */
export const ResolvedRunSchema = z.object({
  id: z.string(),
  /** Model label (run ids and report rows). */
  model: ModelSchema,
  data: DataSchema,
  train: TrainSchema,
  eval: EvalSchema.default({}),
  seed: nonNegInt,
  device: z.string().default('cpu'),
  /** TensorBoard event files of this run (the config's top-level `tensorboard`). */
  tensorboard: TensorBoardSchema.default({}),
  /** The grid point that produced this run ({ 'train.beta': 6 }), for reports. */
  gridPoint: z.record(z.unknown()).default({}),
}).strict();

export type DataConfig = z.infer<typeof DataSchema>;
export type ModelConfig = z.infer<typeof ModelSchema>;
export type TrainConfig = z.infer<typeof TrainSchema>;
export type AttackConfig = z.infer<typeof AttackSchema>;
export type EvalConfig = z.infer<typeof EvalSchema>;
export type ResolvedRun = z.infer<typeof ResolvedRunSchema>;

/** A partial run: any field may come from `defaults`. */
const RunEntrySchema = z.object({
  /** Prefix of this entry's run ids (default: the model label). */
  name: NAME.optional(),
  data: z.record(z.unknown()).optional(),
  model: z.record(z.unknown()).optional(),
  train: z.record(z.unknown()).optional(),
  eval: z.record(z.unknown()).optional(),
  seeds: z.array(nonNegInt).nonempty().optional(),
  device: z.string().optional(),
  /** Dotted path → list of values; the runs are the cartesian product. */
  grid: z.record(z.array(z.unknown()).nonempty()).optional(),
}).strict();

/** The top level of a config file. */
export const ExperimentSchema = z.object({
  name: NAME,
  description: z.string().optional(),
  /** Output folder (relative to the working directory); `--out` overrides. */
  out: z.string().optional(),
  device: z.string().default('cpu'),
  /** TensorBoard event files in every run folder's tb/: true (default), false, or { enabled, batchEvery }. */
  tensorboard: z.union([z.boolean(), TensorBoardSchema]).optional(),
  seeds: z.array(nonNegInt).nonempty().default([0]),
  /** Merged into every run entry (entry fields win; objects merge deeply, arrays replace). */
  defaults: z.object({
    data: z.record(z.unknown()).optional(),
    model: z.record(z.unknown()).optional(),
    train: z.record(z.unknown()).optional(),
    eval: z.record(z.unknown()).optional(),
  }).strict().default({}),
  /** A grid applied to every entry (entry grids add to it). */
  grid: z.record(z.array(z.unknown()).nonempty()).optional(),
  runs: z.array(RunEntrySchema).nonempty(),
}).strict();

export type ExperimentConfig = z.infer<typeof ExperimentSchema>;
export type ExperimentInput = z.input<typeof ExperimentSchema>;
