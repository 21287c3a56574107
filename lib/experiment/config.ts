/**
 * Experiment configs (YAML or JSON): datasets, models, training methods with their parameters,
 * evaluation (attacks, Fisher, CCKL), seeds and grids. Validated with zod; every error is a
 * FisherLensError('ERR_CONFIG') naming the exact path and the allowed values, e.g.
 * `runs[2].train.method: expected one of natural | pgd-at | trades, got 'tradez'`.
 * The format is documented in docs/experiments.md.
 */
import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';
import * as YAML from 'yaml';
import { FisherLensError } from '../util/errors';
import { ATTACK_KINDS, ATTACK_OPTIONS, AUGMENT_OPTIONS, AUTOATTACK_VERSIONS, FISHER_DATASET_OPTIONS, FISHER_METHODS as FISHER_METHOD_LIST, NORMS, OPTIMIZER_OPTIONS, OPTIMIZER_TYPES, TRAIN_METHODS, TRAIN_STEP_OPTIONS, parseAttackOptions } from '../science/options';
import { OptionDecl } from '../util/schema';
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
  { message: 'mnist and cifar10 need `root` (the folder of their files)', path: ['root'] });

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
  /** Stop each epoch after this many batches (smoke tests of large configs). */
  maxBatches: posInt.optional(),
  optimizer: OptimizerSchema.default({}),
  schedule: ScheduleSchema.default({}),
  /** Attack radius of PGD-AT / TRADES inner maximisation. */
  epsilon: numberOf(TRAIN_STEP_OPTIONS.epsilon).optional(),
  stepSize: z.number().positive().optional(),
  steps: posInt.optional(),
  /** TRADES trade-off β. */
  beta: numberOf(TRAIN_STEP_OPTIONS.beta).optional(),
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

// ---------------------------------------------------------------------------------------------
// Error formatting: one line per issue, `path: what was expected, what came`

function fmtPath(p: (string | number)[]): string {
  let s = '';
  for (const k of p) {
    if (typeof k === 'number') s += `[${k}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(k)) s += s ? `.${k}` : k;
    else s += `[${JSON.stringify(k)}]`;
  }
  return s || '(top level)';
}

function show(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s && s.length > 60 ? s.slice(0, 57) + '...' : String(s);
}

function valueAt(root: unknown, p: (string | number)[]): unknown {
  let cur: unknown = root;
  for (const k of p) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return cur;
}

/** Allowed keys of the object schema at a path (for 'unknown key' errors). */
function issueMessage(issue: z.ZodIssue, input: unknown): string {
  const got = valueAt(input, issue.path);
  switch (issue.code) {
    case 'invalid_enum_value':
      return `expected one of ${issue.options.join(' | ')}, got ${show(issue.received)}`;
    case 'invalid_union_discriminator':
      return `expected one of ${issue.options.map(String).join(' | ')}, got ${show(got)}`;
    case 'invalid_type':
      if (issue.received === 'undefined') return `required (expected ${issue.expected})`;
      return `expected ${issue.expected}, got ${issue.received} ${show(got)}`;
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
    case 'too_small':
      if (issue.type === 'array') return `expected at least ${issue.minimum} item(s), got ${Array.isArray(got) ? got.length : show(got)}`;
      return `expected a number ${issue.inclusive ? '≥' : '>'} ${issue.minimum}, got ${show(got)}`;
    case 'too_big':
      return `expected a number ${issue.inclusive ? '≤' : '<'} ${issue.maximum}, got ${show(got)}`;
    default:
      return `${issue.message}${got !== undefined ? `, got ${show(got)}` : ''}`;
  }
}

/** Keys allowed by a zod object schema (unwrapping defaults/optionals/effects). */
function objectKeys(schema: z.ZodTypeAny): string[] | null {
  let s: z.ZodTypeAny = schema;
  for (;;) {
    if (s instanceof z.ZodDefault) s = s._def.innerType;
    else if (s instanceof z.ZodOptional) s = s._def.innerType;
    else if (s instanceof z.ZodEffects) s = s._def.schema;
    else break;
  }
  return s instanceof z.ZodObject ? Object.keys(s.shape as Record<string, unknown>) : null;
}

function formatIssues(error: z.ZodError, input: unknown, prefix: (string | number)[], schema: z.ZodTypeAny, suffix = ''): string {
  const lines = error.issues.map((issue) => {
    let msg = issueMessage(issue, input);
    if (issue.code === 'unrecognized_keys') {
      const sub = schemaAt(schema, issue.path);
      const keys = sub ? objectKeys(sub) : null;
      if (keys) msg += `; allowed: ${keys.join(', ')}`;
    }
    return `${fmtPath([...prefix, ...issue.path])}: ${msg}${suffix}`;
  });
  return lines.join('; ');
}

/** The sub-schema at a path of an object schema (best effort; null when unknown). */
function schemaAt(schema: z.ZodTypeAny, p: (string | number)[]): z.ZodTypeAny | null {
  let s: z.ZodTypeAny | null = schema;
  for (const k of p) {
    if (!s) return null;
    for (;;) {
      if (s instanceof z.ZodDefault) s = s._def.innerType;
      else if (s instanceof z.ZodOptional) s = s._def.innerType;
      else if (s instanceof z.ZodEffects) s = s._def.schema;
      else break;
    }
    if (s instanceof z.ZodObject && typeof k === 'string') s = (s.shape as Record<string, z.ZodTypeAny>)[k] ?? null;
    else if (s instanceof z.ZodArray && typeof k === 'number') s = s._def.type;
    else return null;
  }
  return s;
}

function configError(message: string, file?: string): FisherLensError {
  return new FisherLensError('ERR_CONFIG', file ? `${file}: ${message}` : message);
}

/**
 * Checks one value against a field of the schemas above and returns it, or ERR_ARG naming `label`
 * (a CLI flag): the CLI validates its flags through the same declarations as configs.
 */
export function checkField<T>(schema: z.ZodType<T>, value: unknown, label: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw new FisherLensError('ERR_ARG', `${label}: ${issueMessage(r.error.issues[0], value)}`);
  return r.data;
}

// ---------------------------------------------------------------------------------------------
// Loading, merging, expanding

/** Parses YAML or JSON text (by extension; YAML is a superset of JSON, so text without one works). */
export function parseConfigText(text: string, file = 'config'): unknown {
  try {
    if (file.endsWith('.json')) return JSON.parse(text) as unknown;
    const doc = YAML.parseDocument(text, { prettyErrors: true });
    if (doc.errors.length > 0) {
      const e = doc.errors[0];
      const where = e.linePos ? ` (line ${e.linePos[0].line}, column ${e.linePos[0].col})` : '';
      throw configError(`not valid YAML${where}: ${e.message.split('\n')[0]}`, file);
    }
    return doc.toJS() as unknown;
  } catch (e) {
    if (e instanceof FisherLensError) throw e;
    throw configError(`not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`, file);
  }
}

/** The path of the first number that is NaN or ±Infinity (YAML's .nan / .inf), or null. */
function nonFinite(v: unknown, at: (string | number)[] = []): (string | number)[] | null {
  if (typeof v === 'number') return Number.isFinite(v) ? null : at;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) { const p = nonFinite(v[i], [...at, i]); if (p) return p; }
  } else if (isPlainObject(v)) {
    for (const [k, x] of Object.entries(v)) { const p = nonFinite(x, [...at, k]); if (p) return p; }
  }
  return null;
}

/** Validates the top level of a config (before the grid is expanded). Every number must be finite. */
export function validateExperiment(input: unknown, file?: string): ExperimentConfig {
  const bad = nonFinite(input);
  if (bad) throw configError(`${fmtPath(bad)}: expected a finite number, got ${String(valueAt(input, bad))}`, file);
  const r = ExperimentSchema.safeParse(input);
  if (!r.success) throw configError(formatIssues(r.error, input, [], ExperimentSchema), file);
  return r.data;
}

/** Reads and validates a YAML/JSON config file. */
export function loadConfig(file: string): ExperimentConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new FisherLensError('ERR_IO', `cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return validateExperiment(parseConfigText(text, file), path.basename(file));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Deep merge: objects merge key by key, everything else (arrays included) is replaced by `b`. */
export function deepMerge(a: unknown, b: unknown): unknown {
  if (b === undefined) return structuredClone(a);
  if (isPlainObject(a) && isPlainObject(b)) {
    const out: Record<string, unknown> = structuredClone(a);
    for (const [k, v] of Object.entries(b)) out[k] = deepMerge(a[k], v);
    return out;
  }
  return structuredClone(b);
}

/** Sets a dotted path ('train.beta', 'eval.attacks.0.epsilon') in a plain object, creating objects on the way. */
export function setPath(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  const keys = dotted.split('.');
  let cur: Record<string, unknown> = obj;
  for (let i = 0; i < keys.length - 1; i++) {
    const k = keys[i];
    if (!isPlainObject(cur[k]) && !Array.isArray(cur[k])) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[keys[keys.length - 1]] = structuredClone(value);
}

/** The cartesian product of a grid { path: [values] } as a list of points, in key order. */
export function gridPoints(grid: Record<string, unknown[]>): Record<string, unknown>[] {
  let points: Record<string, unknown>[] = [{}];
  for (const [k, values] of Object.entries(grid)) {
    const next: Record<string, unknown>[] = [];
    for (const p of points) for (const v of values) next.push({ ...p, [k]: v });
    points = next;
  }
  return points;
}

/** A readable label of a model spec: `small-cnn`, `vgg13-identity-avg`, `resnet32-w10`. */
export function modelLabel(m: ModelConfig): string {
  if (m.name) return m.name;
  if (!m.arch) return path.basename(m.path ?? 'model').replace(/\.[^.]+$/, '').replace(/[^A-Za-z0-9._-]/g, '-');
  let s: string = m.arch;
  if (m.activation && m.activation !== 'relu') s += `-${m.activation}`;
  if (m.pool && m.pool !== 'max') s += `-${m.pool}pool`;
  if (m.width && m.width !== 1) s += `-w${m.width}`;
  if (m.hidden) s += `-h${m.hidden.join('x')}`;
  return s;
}

function slug(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'x';
}

/**
 * Expands a config into its runs: defaults ← entry ← grid point, for each seed. Run ids are
 * stable and readable, derived from the grid point: `<entry name or model label>_<method>
 * [_<key><value> for grid keys other than model/method/seed]_seed<k>`, so a re-run finds them.
 */
export function expandRuns(config: ExperimentConfig, opts: { device?: string; maxRuns?: number } = {}): ResolvedRun[] {
  // count before expanding: a grid of a million points must be refused, not built
  const maxRuns = opts.maxRuns ?? MAX_RUNS;
  const count = config.runs.reduce((sum, entry) => {
    const grid = { ...(config.grid ?? {}), ...(entry.grid ?? {}) };
    const points = Object.values(grid).reduce((n, v) => n * v.length, 1);
    return sum + points * ('seed' in grid ? 1 : (entry.seeds ?? config.seeds).length);
  }, 0);
  if (count > maxRuns) {
    throw configError(`the config expands to ${count} runs, more than the cap of ${maxRuns}; narrow the grid, or raise the cap (fisherlens run --max-runs ${count})`);
  }
  const runs: ResolvedRun[] = [];
  const seen = new Map<string, string>();
  config.runs.forEach((entry, i) => {
    const grid = { ...(config.grid ?? {}), ...(entry.grid ?? {}) };
    for (const point of gridPoints(grid)) {
      const base: Record<string, unknown> = {
        data: deepMerge(config.defaults.data ?? {}, entry.data),
        model: deepMerge(config.defaults.model ?? {}, entry.model),
        train: deepMerge(config.defaults.train ?? {}, entry.train),
        eval: deepMerge(config.defaults.eval ?? {}, entry.eval),
      };
      for (const [k, v] of Object.entries(point)) {
        if (k === 'seed') continue;
        if (!/^(data|model|train|eval)\./.test(k)) {
          throw configError(`${fmtPath(['runs', i, 'grid', k])}: grid keys are dotted paths under data | model | train | eval (or 'seed'), got '${k}'`);
        }
        setPath(base, k, v);
      }
      const seeds = 'seed' in point ? [point.seed] : (entry.seeds ?? config.seeds);
      for (const seed of seeds) {
        const candidate = {
          ...base,
          id: 'pending',
          seed,
          device: opts.device ?? entry.device ?? config.device,
          gridPoint: point,
        };
        const where = Object.keys(point).length > 0
          ? ` (grid point ${Object.entries(point).map(([k, v]) => `${k}=${show(v)}`).join(', ')})` : '';
        const r = ResolvedRunSchema.safeParse(candidate);
        if (!r.success) throw configError(formatIssues(r.error, candidate, ['runs', i], ResolvedRunSchema, where));
        const run = r.data;
        const extra = Object.entries(point)
          .filter(([k]) => !(k === 'train.method' || k === 'seed' || (entry.name === undefined && k.startsWith('model.'))))
          .map(([k, v]) => `${k.split('.').pop()}${slug(v)}`);
        const modelPart = entry.name ?? modelLabel(run.model);
        run.id = [modelPart, run.train.method, ...extra, `seed${run.seed}`].join('_');
        const prev = seen.get(run.id);
        if (prev !== undefined) {
          throw configError(`runs[${i}]: run id '${run.id}' is also produced by ${prev}; give the entries different \`name\`s`);
        }
        seen.set(run.id, `runs[${i}]${where}`);
        runs.push(run);
      }
    }
  });
  return runs;
}
