/**
 * Every science op's options, declared once (one declaration of each option, default and enum):
 * name, type, default, range, allowed values, a doc line and the unit, in the form of
 * lib/util/schema.ts, whose one parser (parseOptions) checks a user's options against a
 * declaration and fills the defaults; the
 * TypeScript wrappers hand the native side a COMPLETE options object (native/binding/options.h
 * reads every key strictly and knows no default). The experiment config schema
 * (lib/experiment/config.ts) and the CLI flags and help (lib/cli/*.ts) derive their defaults,
 * enums and ranges from here.
 *
 * This module loads nothing native: help, config validation and the attack capability table work
 * without LibTorch.
 */
import { invalidArgument } from '../util/errors';
import { OptionSchema, Parsed, given, parseOptions } from '../util/schema';

// ---------------- attacks ----------------

/** The attack kinds (native attacks.cc runs them; the table below says what each supports). */
export const ATTACK_KINDS = ['fgsm', 'pgd', 'cw', 'cw-l2', 'kl', 'fisher', 'apgd-ce', 'apgd-dlr', 'apgd-t', 'fab-t', 'fab', 'square'] as const;
export type AttackKind = typeof ATTACK_KINDS[number];
export const NORMS = ['linf', 'l2'] as const;
export type AttackNorm = typeof NORMS[number];

/** What one attack kind supports; an option it does not support is ERR_ARG. */
export interface AttackSpec {
  kind: AttackKind;
  /** Norms of the threat model; the first is the default. */
  norms: AttackNorm[];
  /** Takes `targeted` (success = classified as the target). */
  targeted: boolean;
  /** Untargeted (success = misclassified) but attacks target classes in turn (apgd-t, fab-t; see `targets`). */
  internalTargets: boolean;
  /** Honours `randomStart`. */
  randomStart: boolean;
  /** Honours `restarts` > 1. */
  restarts: boolean;
  /** Honours `stepSize` (APGD adapts its own from 2ε). */
  stepSize: boolean;
  /** Implemented by the addon. */
  available: boolean;
  /** Fewest classes the attack's loss is defined for (DLR: 3, targeted DLR: 4). */
  minClasses: number;
  /** Iterations (square: queries per sample) when `steps` is not given. */
  defaultSteps: number;
  summary: string;
}

const row = (kind: AttackKind, norms: AttackNorm[], f: string, minClasses: number, defaultSteps: number, summary: string): AttackSpec => ({
  // f: the flags targeted, internalTargets, randomStart, restarts, stepSize as 1/0 characters
  kind, norms, targeted: f[0] === '1', internalTargets: f[1] === '1', randomStart: f[2] === '1', restarts: f[3] === '1',
  stepSize: f[4] === '1', available: true, minClasses, defaultSteps, summary,
});

/** The attack capability table, one row per kind in ATTACK_KINDS order (docs/attacks.md). */
export const ATTACK_TABLE: readonly AttackSpec[] = [
  //   kind        norms            T IT RS R SS  minK steps
  row('fgsm', ['linf', 'l2'], '10001', 2, 1, 'one signed (L2: normalised) gradient step of size ε on the cross-entropy'),
  row('pgd', ['linf', 'l2'], '10111', 2, 20, 'projected gradient ascent on the cross-entropy'),
  row('cw', ['linf', 'l2'], '10111', 2, 20, 'PGD on the Carlini-Wagner margin loss (CW∞)'),
  row('cw-l2', ['l2'], '10000', 2, 100, 'Carlini-Wagner L2: Adam on ‖δ‖² + c·margin, binary search on c'),
  row('kl', ['linf', 'l2'], '00001', 2, 20, "TRADES' inner maximisation of KL(p(x) ‖ p(x+δ))"),
  row('fisher', ['linf', 'l2'], '10001', 2, 20, 'steps along the leading Fisher eigenvector (OSSA)'),
  row('apgd-ce', ['linf', 'l2'], '00110', 2, 100, 'APGD on the cross-entropy (step-size schedule, momentum)'),
  row('apgd-dlr', ['linf', 'l2'], '00110', 3, 100, 'APGD on the scale-invariant DLR loss'),
  row('apgd-t', ['linf', 'l2'], '01110', 4, 100, 'APGD on the targeted DLR loss, top `targets` classes in turn'),
  row('fab-t', ['linf', 'l2'], '01010', 2, 100, 'FAB, targeted version: minimal perturbations towards the top classes'),
  row('fab', ['linf', 'l2'], '00010', 2, 100, 'FAB (untargeted): minimal perturbations'),
  row('square', ['linf', 'l2'], '00010', 2, 5000, 'Square: score-based random search, no gradients'),
];

/** The kinds' default step counts from ATTACK_TABLE, grouped: e.g. "20: pgd, cw, kl, fisher; 100: cw-l2, …". */
export function defaultStepsText(): string {
  const by = new Map<number, string[]>();
  for (const a of ATTACK_TABLE) by.set(a.defaultSteps, [...(by.get(a.defaultSteps) ?? []), a.kind]);
  return [...by.entries()].map(([n, kinds]) => `${n}: ${kinds.join(', ')}`).join('; ');
}

/** The capability row of `kind`; ERR_ARG naming the known kinds when there is none. */
export function attackSpec(kind: unknown): AttackSpec {
  const s = ATTACK_TABLE.find((a) => a.kind === kind);
  if (!s) throw invalidArgument("attack option 'kind'", `one of ${ATTACK_KINDS.join(', ')}`, kind);
  return s;
}

/** Options of one attack (native attack(); also each AutoAttack stage). */
export const ATTACK_OPTIONS = {
  kind: { type: 'enum', values: ATTACK_KINDS, default: 'pgd', doc: 'which attack' },
  norm: { type: 'enum', values: NORMS, default: 'linf', doc: 'threat model (cw-l2: l2 only)' },
  epsilon: { type: 'number', min: 0, infinite: true, default: 0.031, unit: 'pixel units', doc: 'radius of the ball (cw-l2: unbounded by default)' },
  stepSize: { type: 'number', min: 0, default: 0.003, unit: 'pixel units', doc: 'step size α: α·sign(g) (L∞) or α·g/‖g‖ (L2)' },
  steps: { type: 'integer', min: 0, default: 20, doc: 'iterations (square: queries per sample; cw-l2: Adam steps per binary-search step); default per kind: ATTACK_TABLE' },
  randomStart: { type: 'boolean', default: true, doc: 'uniform random start in the ball (pgd, cw)' },
  restarts: { type: 'integer', min: 1, default: 1, doc: 'restarts, keeping the worst case per sample' },
  targeted: { type: 'boolean', default: false, doc: 'move towards `target` (fgsm, pgd, cw, cw-l2, fisher)' },
  kappa: { type: 'number', default: 50, unit: 'logits', doc: 'κ of the CW margin loss (cw)' },
  binarySteps: { type: 'integer', min: 1, default: 9, doc: 'cw-l2: binary search steps on c' },
  learningRate: { type: 'number', min: 0, default: 0.01, doc: 'cw-l2: Adam learning rate' },
  initialConst: { type: 'number', min: 0, default: 1e-3, doc: 'cw-l2: initial c' },
  confidence: { type: 'number', default: 0, unit: 'logits', doc: 'cw-l2: confidence κ' },
  targets: { type: 'integer', min: 1, default: 9, doc: 'apgd-t / fab-t: target classes tried (at most K − 1)' },
  eotIter: { type: 'integer', min: 1, default: 1, doc: 'apgd: gradients averaged per step (EOT, randomised models)' },
  alphaMax: { type: 'number', min: 0, max: 1, default: 0.1, doc: "fab, fab-t: largest weight of the original point's projection in a step" },
  eta: { type: 'number', min: 1, default: 1.05, doc: 'fab, fab-t: extrapolation η of the projection steps' },
  beta: { type: 'number', above: 0, below: 1, default: 0.9, doc: 'fab, fab-t: backward step towards x after a success' },
  pInit: { type: 'number', above: 0, max: 1, default: 0.8, doc: 'square: initial fraction of the image a square covers' },
  seed: { type: 'integer', min: 0, default: 0, doc: "seed of the attack's generator (random start, KL start noise, square's search)" },
  channelsLast: { type: 'boolean', default: false, doc: 'run convolutions channels-last (faster on CPU; last bits may differ)' },
} as const satisfies OptionSchema;

/** Options only some kinds take: given to another kind they are ERR_ARG. */
const KIND_ONLY: Record<string, { kinds: readonly AttackKind[]; say: string }> = {
  alphaMax: { kinds: ['fab', 'fab-t'], say: 'fab and fab-t take it' },
  eta: { kinds: ['fab', 'fab-t'], say: 'fab and fab-t take it' },
  beta: { kinds: ['fab', 'fab-t'], say: 'fab and fab-t take it' },
  pInit: { kinds: ['square'], say: 'square takes it' },
  kappa: { kinds: ['cw'], say: 'cw takes it; cw-l2 has confidence' },
  binarySteps: { kinds: ['cw-l2'], say: 'cw-l2 takes it' },
  learningRate: { kinds: ['cw-l2'], say: 'cw-l2 takes it' },
  initialConst: { kinds: ['cw-l2'], say: 'cw-l2 takes it' },
  confidence: { kinds: ['cw-l2'], say: 'cw-l2 takes it; cw has kappa' },
};

/**
 * An attack's complete options: validated against ATTACK_OPTIONS and the kind's row of
 * ATTACK_TABLE (an option the attack does not support is ERR_ARG, never silently ignored), with
 * the kind's own defaults (norm, steps, cw-l2's unbounded ε) filled in.
 */
export function parseAttackOptions(p: object): Parsed {
  const g = p as Record<string, unknown>;
  const kind = given(p, 'kind') ? g.kind : ATTACK_OPTIONS.kind.default;
  if (typeof kind !== 'string') throw invalidArgument("attack option 'kind'", `one of ${ATTACK_KINDS.join(', ')}`, kind);
  const spec = attackSpec(kind);
  if (!spec.available) throw invalidArgument("attack option 'kind'", `an attack of this build (${kind} is not available in this build: ${spec.summary})`, kind);
  const o = parseOptions('attack', ATTACK_OPTIONS, p, {
    norm: spec.norms[0], steps: spec.defaultSteps, ...(kind === 'cw-l2' ? { epsilon: Infinity } : {}),
  });
  const norm = o.norm as AttackNorm;
  if (!spec.norms.includes(norm)) throw invalidArgument("attack option 'norm'", `${spec.norms.join(' or ')} for ${kind} (it supports no other norm)`, norm);
  if (!spec.stepSize && given(p, 'stepSize')) {
    throw invalidArgument("attack option 'stepSize'", `none for ${kind}${kind.startsWith('apgd') ? ' (APGD starts at 2ε and adapts it)' : ''}`, g.stepSize);
  }
  if (!spec.randomStart && g.randomStart === true) throw invalidArgument("attack option 'randomStart'", `false for ${kind} (it has no random start)`, true);
  if (!spec.restarts && (o.restarts as number) > 1) throw invalidArgument("attack option 'restarts'", `1 for ${kind} (it has no restarts)`, o.restarts);
  if (!spec.targeted && o.targeted) {
    throw invalidArgument("attack option 'targeted'", `false for ${kind}${spec.internalTargets ? ' (it is an untargeted attack that tries target classes internally; see `targets`)' : ' (it cannot be targeted)'}`, o.targeted);
  }
  if (!spec.internalTargets && given(p, 'targets')) throw invalidArgument("attack option 'targets'", `none for ${kind} (apgd-t and fab-t take it)`, g.targets);
  if (o.eotIter !== 1 && !kind.startsWith('apgd')) {
    throw invalidArgument("attack option 'eotIter'", `1 for ${kind} (only APGD averages gradients over several forwards)`, o.eotIter);
  }
  if (given(p, 'init') && !kind.startsWith('apgd')) throw invalidArgument("attack option 'init'", `none for ${kind} (a start point: APGD takes one)`, g.init);
  for (const [k, only] of Object.entries(KIND_ONLY)) {
    if (given(p, k) && !only.kinds.includes(spec.kind)) throw invalidArgument(`attack option '${k}'`, `none for ${kind} (${only.say})`, g[k]);
  }
  if (kind === 'square' && (o.steps as number) < 1) throw invalidArgument("attack option 'steps'", 'an integer >= 1 for square (queries per sample)', o.steps);
  if (kind !== 'cw-l2' && !Number.isFinite(o.epsilon)) throw invalidArgument("attack option 'epsilon'", `a finite number for ${kind} (only cw-l2 takes an unbounded ε)`, o.epsilon);
  return o;
}

/** Options of the streaming evaluations (evaluateRobustness, autoAttack) beyond the attacks'. */
export const EVALUATE_OPTIONS = {
  batchSize: { type: 'integer', min: 1, default: 128, doc: 'samples per batch (one native op each)' },
  limit: { type: 'integer', min: 1, optional: true, doc: 'only the first n samples (default: all)' },
} as const satisfies OptionSchema;

/** AutoAttack versions: standard | plus | rand (EOT 20) | custom (`attacks`). */
export const AUTOATTACK_VERSIONS = ['standard', 'plus', 'rand', 'custom'] as const;

/** Options of the AutoAttack cascade (lib/science/autoattack.ts; stages are attack options). */
export const AUTOATTACK_OPTIONS = {
  version: { type: 'enum', values: AUTOATTACK_VERSIONS, default: 'standard', doc: 'cascade version (custom: the stages in `attacks`)' },
  norm: { type: 'enum', values: NORMS, default: 'linf', doc: 'threat model of every stage' },
  epsilon: { type: 'number', min: 0, default: 0.031, unit: 'pixel units', doc: 'radius of the ball' },
  seed: { type: 'integer', min: 0, default: 0, doc: 'seed of every stage' },
  checks: { type: 'boolean', default: true, doc: 'run the gradient-masking and randomness sanity checks' },
} as const satisfies OptionSchema;

// ---------------- Fisher information ----------------

/** Methods of the per-sample Fisher quantities. */
export const FISHER_METHODS = ['exact', 'power', 'lanczos', 'hutchinson'] as const;

/** Speed options of every Fisher op (results do not depend on them beyond rounding). */
/** Memory layouts of the convolutions' products: 'auto' measures (the exact method; see lib/science/fisher.ts exactTuning). */
export const FISHER_LAYOUTS = ['auto', 'nchw', 'channels-last'] as const;

export const FISHER_SPEED_OPTIONS = {
  channelsLast: { type: 'boolean', default: false, doc: 'run convolutions channels-last (exact: pins the layout; `layout` takes precedence)' },
  layout: {
    type: 'enum', values: FISHER_LAYOUTS, default: 'auto',
    doc: 'memory layout of the products (auto: the exact method measures both on first use per model and input shape on this machine, stored in the cache folder; the matrix-free methods follow channelsLast)',
  },
  classesPerPass: {
    type: 'integer', min: 1, max: 4096, optional: true,
    doc: "exact, linear engine: classes' cotangents per backward pass (absent or 'auto': measured with the layout)",
  },
  streams: { type: 'integer', min: 0, max: 64, default: 1, doc: "exact: backward passes run at once" },
  autograd: { type: 'boolean', default: false, doc: 'compute through autograd even where the model has a linearisation' },
} as const satisfies OptionSchema;

/** Per-method options of the Fisher ops (each also takes FISHER_SPEED_OPTIONS). */
export const FISHER_OPTIONS = {
  exact: {
    eigvec: { type: 'boolean', default: false, doc: 'also return the unit leading eigenvector' },
  },
  power: {
    tol: { type: 'number', min: 0, default: 1e-6, doc: 'power: relative tolerance on the Rayleigh quotient' },
    maxIter: { type: 'integer', min: 1, default: 100, doc: 'power: iteration cap' },
  },
  lanczos: {
    steps: { type: 'integer', min: 0, default: 0, doc: 'lanczos: Krylov dimension (0: the number of classes)' },
  },
  hutchinson: {
    probes: { type: 'integer', min: 1, default: 32, doc: 'hutchinson: Rademacher probes' },
    seed: { type: 'integer', min: 0, default: 0, doc: 'hutchinson: probe seed' },
  },
} as const satisfies Record<string, OptionSchema>;

/** fisherExact runs channels-last unless told otherwise (docs/fisher.md, speed options). */

/** Options of the method-generic dataset functions. */
export const FISHER_DATASET_OPTIONS = {
  method: { type: 'enum', values: FISHER_METHODS, default: 'exact', doc: 'Fisher method' },
  batchSize: { type: 'integer', min: 1, default: 128, doc: 'samples per native op' },
} as const satisfies OptionSchema;

// ---------------- metrics ----------------

export const PAIR_MEANS_OPTIONS = {
  exactMax: { type: 'integer', min: 0, default: 10000, doc: 'all pairs exactly up to this many samples' },
  samples: { type: 'integer', min: 1, default: 1000000, doc: 'sampled pairs beyond exactMax' },
  seed: { type: 'integer', min: 0, default: 0, doc: 'seed of the sampled pairs' },
} as const satisfies OptionSchema;

export const RHO_OPTIONS = {
  eps: { type: 'number', above: 0, unit: 'pixel units (L2)', doc: 'radius ε of ρ(x, ε)' },
  steps: { type: 'integer', min: 0, default: 20, doc: 'KL-PGD steps of 2.5 ε / steps' },
  clip: { type: 'boolean', default: false, doc: 'keep x + δ inside [0, 1] too (the paper: the ball only)' },
} as const satisfies OptionSchema;

// ---------------- training ----------------

/** The optimisers (native train.cc createOptimizer). */
export const OPTIMIZER_TYPES = ['sgd', 'adam', 'adamw'] as const;
export type OptimizerType = typeof OPTIMIZER_TYPES[number];
/**
 * The training methods: natural (cross-entropy), PGD-AT (Madry et al. 2018), TRADES (Zhang et al.
 * 2019), MART (Wang et al. 2020), FIRE (Picot et al. 2021), jacobian (Hoffman, Roberts & Yaida
 * 2019) and the Fisher penalties fisher-trace and fisher-lambda (native/train.cc; docs/training.md
 * cites each paper and states its defaults and, for the sampled penalties, the estimator and its
 * variance).
 */
export const TRAIN_METHODS = ['natural', 'pgd-at', 'trades', 'mart', 'fire', 'jacobian', 'fisher-trace', 'fisher-lambda'] as const;
export type TrainMethod = typeof TRAIN_METHODS[number];

/** Options of createOptimizer (the TS API's `betas` pair crosses as beta1, beta2). */
export const OPTIMIZER_OPTIONS = {
  type: { type: 'enum', values: OPTIMIZER_TYPES, default: 'sgd', doc: 'optimiser' },
  lr: { type: 'number', min: 0, default: 0.1, doc: 'base learning rate (adam, adamw: 1e-3)' },
  momentum: { type: 'number', min: 0, default: 0.9, doc: 'SGD momentum (adam, adamw: 0)' },
  nesterov: { type: 'boolean', default: false, doc: 'SGD Nesterov momentum (needs momentum > 0)' },
  weightDecay: { type: 'number', min: 0, default: 0, doc: 'L2 weight decay (adamw: decoupled)' },
  beta1: { type: 'number', min: 0, below: 1, default: 0.9, doc: 'Adam β₁' },
  beta2: { type: 'number', min: 0, below: 1, default: 0.999, doc: 'Adam β₂' },
  eps: { type: 'number', above: 0, default: 1e-8, doc: 'Adam ε' },
} as const satisfies OptionSchema;

/** The defaults that depend on the optimiser type. */
export const OPTIMIZER_TYPE_DEFAULTS: Record<OptimizerType, Partial<Parsed>> = {
  sgd: {}, adam: { lr: 1e-3, momentum: 0 }, adamw: { lr: 1e-3, momentum: 0 },
};

/** Options of one training step (native trainStep): the method, its inner attack and augmentation. */
export const TRAIN_STEP_OPTIONS = {
  method: { type: 'enum', values: TRAIN_METHODS, doc: 'training method' },
  lr: { type: 'number', min: 0, doc: "this step's learning rate" },
  epsilon: { type: 'number', min: 0, default: 0.031, unit: 'pixel units', doc: 'radius of the inner attack (pgd-at, trades, mart, fire)' },
  stepSize: { type: 'number', min: 0, default: 0.007, unit: 'pixel units', doc: 'step size of the inner attack' },
  steps: { type: 'integer', min: 0, default: 10, doc: 'inner attack steps' },
  beta: { type: 'number', min: 0, default: 6, doc: 'TRADES and MART trade-off β' },
  lambda: { type: 'number', min: 0, doc: 'weight λ of the penalty: fire 6, jacobian 0.01, fisher-trace 0.01, fisher-lambda 0.01 (TRAIN_METHOD_DEFAULTS)' },
  samples: { type: 'integer', min: 1, default: 1, doc: 'jacobian: random projections; fisher-trace: sampled classes ŷ ∼ p(·|x) per input' },
  exact: { type: 'boolean', default: false, doc: 'jacobian, fisher-trace: the exact all-classes penalty (K double backprops) instead of the sampled estimate' },
  powerIters: { type: 'integer', min: 0, default: 3, doc: 'fisher-lambda: detached power iterations k per batch' },
  norm: { type: 'enum', values: NORMS, default: 'linf', doc: 'threat model of the inner attack' },
  randomStart: { type: 'boolean', default: true, doc: 'pgd-at: uniform random start (trades, mart, fire start at x + 0.001·N(0, I))' },
  cropPad: { type: 'integer', min: 0, default: 0, unit: 'pixels', doc: 'random crop with this zero padding (0: none)' },
  flip: { type: 'boolean', default: false, doc: 'random horizontal flip' },
  seed: { type: 'integer', min: 0, default: 0, doc: "seed of the step's attack start, augmentation and dropout" },
  channelsLast: { type: 'boolean', default: false, doc: 'convolutions channels-last during the step' },
} as const satisfies OptionSchema;

/**
 * The defaults that depend on the training method (λ: the penalty's weight). FIRE: the trade-off
 * 6 it shares with TRADES' β in its comparisons; jacobian: Hoffman et al.'s λ_JR = 0.01; the Fisher
 * penalties (ours): 0.01, a starting point for the sweep's tuning (docs/training.md).
 */
export const TRAIN_METHOD_DEFAULTS: Record<TrainMethod, Partial<Parsed>> = {
  natural: { lambda: 0 }, 'pgd-at': { lambda: 0 }, trades: { lambda: 0 }, mart: { lambda: 0 },
  fire: { lambda: 6 }, jacobian: { lambda: 0.01 }, 'fisher-trace': { lambda: 0.01 }, 'fisher-lambda': { lambda: 0.01 },
};

/** Options of train() beyond the step's. */
export const TRAIN_OPTIONS = {
  epochs: { type: 'integer', min: 0, default: 10, doc: 'epochs' },
  batchSize: { type: 'integer', min: 1, default: 128, doc: 'samples per step' },
  seed: { type: 'integer', min: 0, default: 0, doc: 'seed of shuffling, attack starts, augmentation and dropout' },
  probeSize: { type: 'integer', min: 1, default: 512, doc: 'probe samples tracked after every epoch' },
  tensorboard: { type: 'boolean', default: true, doc: 'with an output folder, TensorBoard event files in its tb/' },
  tensorboardBatchEvery: { type: 'integer', min: 0, default: 0, unit: 'batches', doc: 'TensorBoard: the train loss every k batches too, under batch/ tags (0: off)' },
} as const satisfies OptionSchema;

// ---------------- mid-epoch checkpoints ----------------

/**
 * How often training writes a checkpoint inside an epoch, at a batch boundary: every `batches`
 * batches and/or every `seconds` s of training (whichever comes first). Written '500b' or '300s'.
 */
export interface CheckpointEvery { batches?: number; seconds?: number }

/** The default of train.checkpointEvery / --checkpoint-every: every 5 minutes of training. */
export const CHECKPOINT_EVERY_DEFAULT = '300s';
/** The default of --grace: seconds from SIGTERM to the exit (Slurm and spot instances give 30–120 s). */
export const GRACE_DEFAULT_SEC = 30;
/**
 * When a batch that is still running after a graceful stop is abandoned, in s after the stop: the
 * grace less what cancelling the batch's native op and writing the checkpoint need (a third of the
 * grace, at most 10 s: a WRN-34-10 checkpoint with its optimiser state is ~0.4 GB).
 */
export function abandonAfterSec(graceSec: number): number {
  return graceSec - Math.min(10, graceSec / 3);
}

/** '500b' (batches), '300s' (seconds), 'off' or '0' (epoch ends only) → CheckpointEvery; ERR_ARG naming `what` otherwise. */
export function parseCheckpointEvery(what: string, v: unknown): CheckpointEvery {
  if (v === 'off' || v === '0' || v === 0) return {};
  const m = typeof v === 'string' ? /^(\d+(?:\.\d+)?)([bs])$/.exec(v.trim()) : null;
  if (!m || !(Number(m[1]) > 0) || (m[2] === 'b' && !Number.isInteger(Number(m[1])))) {
    throw invalidArgument(what, 'a number of batches such as 500b, seconds such as 300s, or off', v);
  }
  return m[2] === 'b' ? { batches: Number(m[1]) } : { seconds: Number(m[1]) };
}

// ---------------- data ----------------

/** Synthetic datasets with known structure (data.cc synthetic). */
export const SYNTHETIC_OPTIONS = {
  kind: { type: 'enum', values: ['gaussian', 'linear'], default: 'gaussian', doc: 'class structure' },
  n: { type: 'integer', min: 1, default: 1000, doc: 'samples' },
  numClasses: { type: 'integer', min: 1, default: 10, doc: 'classes K' },
  channels: { type: 'integer', min: 1, default: 1, doc: 'image channels' },
  size: { type: 'integer', min: 1, default: 8, unit: 'pixels', doc: 'image height = width' },
  noise: { type: 'number', min: 0, default: 0.1, unit: 'pixel units', doc: 'gaussian: noise std' },
  margin: { type: 'number', min: 0, default: 0.05, doc: 'linear: top-two logit margin kept' },
  seed: { type: 'integer', min: 0, default: 0, doc: 'seed: the same seed gives the same set' },
} as const satisfies OptionSchema;

/** CIFAR-style augmentation of a batch (data.cc augment; Dataset.batches({ augment })). */
export const AUGMENT_OPTIONS = {
  pad: { type: 'integer', min: 0, default: 4, unit: 'pixels', doc: 'zero padding of the random crop' },
  flip: { type: 'boolean', default: true, doc: 'random horizontal flip' },
} as const satisfies OptionSchema;

/**
 * createOptimizer's complete options: `o` validated against OPTIMIZER_OPTIONS, with the type's
 * own defaults (Adam: lr 1e-3, no momentum); the TS API's `betas` pair becomes beta1, beta2.
 */
export function optimizerOptions(o: { type?: string; betas?: [number, number] } & Record<string, unknown>): Parsed {
  const type = parseOptions('optimizer', { type: OPTIMIZER_OPTIONS.type }, o).type as OptimizerType;
  const p = parseOptions('optimizer', OPTIMIZER_OPTIONS, { ...o, beta1: o.betas?.[0] ?? o.beta1, beta2: o.betas?.[1] ?? o.beta2 }, OPTIMIZER_TYPE_DEFAULTS[type]);
  if (p.nesterov && !((p.momentum as number) > 0)) throw invalidArgument("optimizer option 'momentum'", 'a number > 0 with nesterov (Nesterov momentum needs momentum)', p.momentum);
  return p;
}

/** trainStep's complete options: `o` validated against TRAIN_STEP_OPTIONS, the method's defaults filled in. */
export function trainStepOptions(o: object): Parsed {
  const method = parseOptions('trainStep', { method: TRAIN_STEP_OPTIONS.method }, o).method as TrainMethod;
  return parseOptions('trainStep', TRAIN_STEP_OPTIONS, o, TRAIN_METHOD_DEFAULTS[method]);
}
