/**
 * Per-sample Fisher information of the output distribution w.r.t. the input (docs/math.md (9)–(18)):
 * G_x = Jᵀ M J, J = ∂z/∂x, M = diag(p) − p pᵀ. Units: nats per pixel² (KL(p(x) ‖ p(x+δ)) ≈
 * ½ δᵀ G_x δ with δ in pixel units); λ_max and the trace are in nats/pixel², the Frobenius norm too.
 *
 * Every function runs in eval mode without weight gradients and leaves the model as found; it
 * computes in the dtype of the model's parameters (a float64 TorchScript model gives float64).
 */
import { addon, NativeTensor, NativeSpeedOpts, NativeTuneRow } from '../binding/native';
import { runOp, OpOptions } from '../binding/op';
import { Model, modelHandle } from './model';
import { Tensor } from '../binding/tensor';
import { Dataset } from './data/dataset';
import { invalidArgument } from '../util/errors';
import { summarize, Summary } from '../util/stats';
import { uniformStream } from '../util/random';
import { peakMemory } from '../binding/backend';
import { autotuneFile, readTuning, tuningKey, writeTuning } from './tuning-store';
import { FISHER_DATASET_OPTIONS, FISHER_LAYOUTS, FISHER_METHODS as METHODS, FISHER_OPTIONS, FISHER_SPEED_OPTIONS } from './options';
import { checkOption, parseOptions } from '../util/schema';


import type { FisherEngine } from '../binding/types';
export type { FisherEngine };

export { FISHER_LAYOUTS };
export type FisherLayout = typeof FISHER_LAYOUTS[number];

/** Speed options shared by the Fisher functions (results do not depend on them beyond rounding). */
export interface FisherSpeedOptions extends OpOptions {
  /**
   * Run convolutions channels-last (input and 4-D weights; weights restored after). Default: true
   * for `fisherExact` (measured faster or equal), false for the matrix-free methods. `layout`, when
   * given, takes precedence.
   */
  channelsLast?: boolean;
  /**
   * Memory layout of the products. Default 'auto': the exact method measures both layouts (with
   * `classesPerPass`) on the first batch it sees per (model, per-sample input shape, device,
   * engine) and uses the faster for later calls (kept in-process and stored for later processes
   * on this machine, see {@link autotuneFile}; ExactFisherResult.tuning says which);
   * the matrix-free methods read 'auto' as 'nchw' unless `channelsLast` is set. The linearisation
   * is recorded in NCHW either way, so the layout changes only rounding.
   */
  layout?: FisherLayout;
  /**
   * Exact method, linear engine: classes' cotangents pushed through one VJP as a [k·B] batch
   * (larger kernels; memory of the backward's activations-sized buffers × k). A positive
   * integer (clamped to C−1), or 'auto' (default): chosen by the layout's measurement among
   * EXACT_TUNE.classesPerPass.
   */
  classesPerPass?: number | 'auto';
  /** Run the exact method's backward passes on this many threads at once. Default 1. */
  streams?: number;
  /**
   * Compute through autograd even where the model has a linearisation (built-in architectures
   * and lowerable TorchScript models do). The reference path: same numbers, slower
   * (double-backward JVPs). Default false.
   */
  autograd?: boolean;
}

/**
 * The exact method's autotune: candidate classes per pass, and the measuring budget (ms). Each
 * candidate (both layouts × these) costs one warm-up and three timed VJP passes over the batch
 * (at most its first `maxBatch` samples), always; while the budget lasts, up to two more timed
 * passes each. {@link chooseExactCandidate} decides from the passes' median and spread.
 */
export const EXACT_TUNE = { classesPerPass: [1, 3], budgetMs: 1000, maxBatch: 128, noiseFloor: 0.02 } as const;

/** One measured candidate of the exact method's autotune (ms per class's VJP over the batch). */
export interface ExactCandidate {
  layout: 'nchw' | 'channels-last';
  classesPerPass: number;
  /** Median of msSamples (NaN: not measured). */
  msPerClass: number;
  /** Each timed pass (absent in choices stored before they were recorded). */
  msSamples?: number[];
}

/**
 * The autotune's choice: the fastest candidate within the measurement's noise. Each candidate's
 * time is the median of its timed passes, not the best of them: the minimum of a candidate whose
 * passes scatter is biased low, and nothing told a real difference from noise (a bench run chose
 * 3 classes per pass at 217 ms per batch where 1 per pass ran at 182 ms). Its noise is half the
 * spread of its passes ((max − min) / 2). A candidate whose median exceeds the lowest median by no more than
 * the larger noise of the two, plus EXACT_TUNE.noiseFloor (2 %) of the lowest, cannot be told
 * from the fastest; among those, the fewest classes per pass (the least memory), then NCHW, wins.
 * So the choice is never measurably slower than another candidate.
 */
export function chooseExactCandidate<T extends ExactCandidate>(cands: T[]): T | undefined {
  const measured = cands.filter((c) => Number.isFinite(c.msPerClass));
  if (measured.length === 0) return undefined;
  const noise = (c: T): number => (c.msSamples && c.msSamples.length > 1 ? (Math.max(...c.msSamples) - Math.min(...c.msSamples)) / 2 : 0);
  const fastest = measured.reduce((a, b) => (b.msPerClass < a.msPerClass ? b : a));
  const tied = measured.filter((c) => c.msPerClass - fastest.msPerClass <= Math.max(noise(c), noise(fastest)) + EXACT_TUNE.noiseFloor * fastest.msPerClass);
  return tied.sort((a, b) => a.classesPerPass - b.classesPerPass || (a.layout === 'nchw' ? 0 : 1) - (b.layout === 'nchw' ? 0 : 1) || a.msPerClass - b.msPerClass)[0];
}

/** What the exact method ran with, and whether it was measured for this call. */
export interface ExactTuning {
  layout: 'nchw' | 'channels-last';
  classesPerPass: number;
  /**
   * 'pinned': both given by options; 'measured': this call measured; 'cached': an earlier call's
   * measurement in this process; 'stored': an earlier process's measurement on this machine
   * (see {@link autotuneFile}).
   */
  source: 'pinned' | 'measured' | 'cached' | 'stored';
  /** The measurement (ms per class's VJP over the batch; see {@link chooseExactCandidate}). */
  candidates?: ExactCandidate[];
}

// per model: per-sample input shape, device and engine -> the measured choice
const tuned = new WeakMap<Model, Map<string, ExactTuning>>();
let tuneRuns = 0;
/** How many autotune measurements this process has run (for tests and `profile fisher`). */
export function exactTuneCount(): number { return tuneRuns; }

export { autotuneFile };

type StoredTuning = Pick<ExactTuning, 'layout' | 'classesPerPass' | 'candidates'> & { measuredAt: string };

function storedTuning(skey: string): ExactTuning | undefined {
  const e = readTuning()[skey] as StoredTuning | undefined;
  if (!e || !['nchw', 'channels-last'].includes(e.layout) ||
      !Number.isInteger(e.classesPerPass) || e.classesPerPass < 1) return undefined;
  return { layout: e.layout, classesPerPass: e.classesPerPass, source: 'stored', candidates: e.candidates };
}

/** The exact method's layout and classes per pass for this model and batch: pinned, cached or measured now. */
export async function exactTuning(model: Model, x: Tensor, opts: FisherSpeedOptions = {}): Promise<ExactTuning> {
  // the user's own options (not defaults filled in): a given channelsLast pins the layout
  const S = FISHER_SPEED_OPTIONS;
  const layout = (opts.layout === undefined ? 'auto' : checkOption('fisher', 'layout', S.layout, opts.layout)) as FisherLayout;
  if (opts.channelsLast !== undefined) checkOption('fisher', 'channelsLast', S.channelsLast, opts.channelsLast);
  const k = opts.classesPerPass === undefined || opts.classesPerPass === 'auto' ? 'auto' : checkOption('fisher', 'classesPerPass', S.classesPerPass, opts.classesPerPass) as number;
  const pinnedLayout = layout !== 'auto' ? layout : opts.channelsLast !== undefined ? (opts.channelsLast ? 'channels-last' : 'nchw') : undefined;
  if (pinnedLayout && k !== 'auto') return { layout: pinnedLayout, classesPerPass: k, source: 'pinned' };
  const autograd = opts.autograd ?? false;
  const key = JSON.stringify([x.shape.slice(1), model.device, autograd, pinnedLayout ?? 'auto', k]);
  let perModel = tuned.get(model);
  const hit = perModel?.get(key);
  if (hit) return { ...hit, source: 'cached' };
  if (!perModel) tuned.set(model, (perModel = new Map()));
  const skey = tuningKey(model, key);
  const stored = skey ? storedTuning(skey) : undefined;
  if (stored) {
    perModel.set(key, stored);
    return stored;
  }
  const layouts = pinnedLayout ? [pinnedLayout] : (['nchw', 'channels-last'] as const);
  const ks = k === 'auto' ? [...EXACT_TUNE.classesPerPass] : [k];
  const candidates = layouts.flatMap((l) => ks.map((c) => ({ channelsLast: l === 'channels-last', classesPerPass: c })));
  const slice = x.shape[0] > EXACT_TUNE.maxBatch ? x.slice(0, EXACT_TUNE.maxBatch) : x;
  let rows: NativeTuneRow[];
  try {
    rows = await runOp(opts, (ctl) => addon().fisherExactTune(modelHandle(model), slice.native, { candidates, budgetMs: EXACT_TUNE.budgetMs, autograd }, ctl));
  } finally {
    if (slice !== x) slice.dispose();
  }
  tuneRuns++;
  const named: ExactCandidate[] = rows.map((r) => ({ layout: r.channelsLast ? 'channels-last' as const : 'nchw' as const, classesPerPass: r.classesPerPass, msPerClass: r.msPerClass, msSamples: r.msSamples }));
  const chosen = chooseExactCandidate(named);
  const best = chosen ?? { layout: layouts[0], classesPerPass: ks[0] };
  const choice: ExactTuning = { layout: best.layout, classesPerPass: best.classesPerPass, source: 'measured', candidates: named };
  perModel.set(key, choice);
  if (skey && chosen) {
    const e: StoredTuning = { layout: choice.layout, classesPerPass: choice.classesPerPass, candidates: choice.candidates, measuredAt: new Date().toISOString() };
    writeTuning({ [skey]: e });
  }
  return choice;
}

/**
 * Per-op wall time (ms, tape order) of one exact-method VJP pass of `classesPerPass` classes
 * over the model's linearisation at x, with each op's input-gradient FLOPs over the pass's
 * classesPerPass·B rows (convolutions and linear layers, 2 per multiply-add; 0 for the rest):
 * the per-kernel profile behind bench/fisher's FLOP-bound figures. [] for models without a
 * linearisation (TorchScript models whose graph does not lower).
 */
export async function profileExactVjp(model: Model, x: Tensor, opts: { layout?: 'nchw' | 'channels-last'; classesPerPass?: number } & OpOptions = {}): Promise<{ op: string; ms: number; flops: number }[]> {
  const o = speed({ layout: opts.layout ?? 'nchw', classesPerPass: opts.classesPerPass ?? 1 });
  return runOp(opts, (ctl) => addon().profileVjp(modelHandle(model), x.native, o, ctl));
}

/** classesPerPass 'auto' as absent (lib/science/options.ts FISHER_SPEED_OPTIONS: an optional positive integer). */
function autoK<T extends FisherSpeedOptions>(o: T): Omit<T, 'classesPerPass'> & { classesPerPass?: number } {
  return (o.classesPerPass === 'auto' ? { ...o, classesPerPass: undefined } : o) as Omit<T, 'classesPerPass'> & { classesPerPass?: number };
}

/**
 * The speed options, validated and complete (lib/science/options.ts FISHER_SPEED_OPTIONS); a given
 * `layout` other than 'auto' pins `channelsLast`.
 */
function speed(o: FisherSpeedOptions, defaults: Partial<NativeSpeedOpts> = {}): NativeSpeedOpts {
  const p = parseOptions('fisher', FISHER_SPEED_OPTIONS, autoK(o), defaults);
  if (p.layout !== 'auto') p.channelsLast = p.layout === 'channels-last';
  p.classesPerPass ??= 1;  // the methods without a tuning push one class per pass; fisherExact sets its tuned value
  return p as unknown as NativeSpeedOpts;
}

/** One method's options and the speed options, validated and complete (lib/science/options.ts FISHER_OPTIONS). */
function methodOpts<M extends keyof typeof FISHER_OPTIONS>(method: M, o: FisherSpeedOptions, defaults: Partial<NativeSpeedOpts> = {}) {
  return { ...parseOptions(`fisher ${method}`, FISHER_OPTIONS[method], o), ...speed(o, defaults) };
}

/** Exact per-sample Fisher quantities of one batch. */
export interface ExactFisherResult {
  /** λ_max(G_x) per sample [B] (nats/pixel²). */
  lambdaMax: Float64Array;
  /** tr G_x per sample [B]. */
  trace: Float64Array;
  /** ‖G_x‖_F per sample [B]. */
  frobenius: Float64Array;
  /** Non-zero spectrum of G_x, descending, padded with one zero: [B, C] float64. */
  spectrum: Tensor;
  /** p(x): [B, C] float64. */
  probs: Tensor;
  /** Unit leading eigenvector of G_x, shaped like x (when `eigvec: true`). */
  eigvec?: Tensor;
  /** How the C−1 input-gradient passes ran (see FisherEngine). */
  engine: FisherEngine;
  /** Why the engine is 'autograd' ('' when 'linear'); see {@link PowerResult.engineReason}. */
  engineReason: string;
  /** The layout and classes per pass used (see FisherSpeedOptions.layout). */
  tuning: ExactTuning;
}

/**
 * Exact Fisher of each sample of the batch x [B, C, H, W] from K = J Jᵀ (one forward and C−1
 * input-gradient passes), in eval mode without weight gradients; the model is left as found.
 */
export async function fisherExact(model: Model, x: Tensor, opts: { eigvec?: boolean } & FisherSpeedOptions = {}): Promise<ExactFisherResult> {
  const tuning = await exactTuning(model, x, opts);
  const o = { ...methodOpts('exact', opts), channelsLast: tuning.layout === 'channels-last', classesPerPass: tuning.classesPerPass };
  const r = await runOp(opts, (ctl) => addon().fisherExact(modelHandle(model), x.native, o as { eigvec: boolean } & NativeSpeedOpts, ctl));
  return {
    lambdaMax: r.lambdaMax, trace: r.trace, frobenius: r.frobenius,
    spectrum: new Tensor(r.spectrum), probs: new Tensor(r.probs),
    eigvec: r.eigvec ? new Tensor(r.eigvec) : undefined, engine: r.engine, engineReason: r.engineReason, tuning,
  };
}

/** Power iteration result per sample. */
export interface PowerResult {
  /** λ_max(G_x) [B]. */
  lambdaMax: Float64Array;
  /** Iterations used per sample [B]. */
  iterations: Float64Array;
  /** Whether each sample met the tolerance before maxIter. */
  converged: boolean[];
  /** Unit leading eigenvector, float64, shaped like x. */
  eigvec: Tensor;
  /** How the Fisher-vector products ran (see FisherEngine). */
  engine: FisherEngine;
  /**
   * Why the engine is 'autograd' ('' when 'linear'): the first op on the input's path the linear
   * engine does not know, with its place (e.g. "aten::hardswish (%x.5) at model.py:12"), "the
   * model is in train mode", or "the autograd option".
   */
  engineReason: string;
}

/**
 * λ_max(G_x) per sample by power iteration on Fisher-vector products (one JVP and one VJP per
 * iteration; see FisherEngine), started at ∇ₓ log p_ŷ. A sample stops when its Rayleigh quotient
 * changes by ≤ tol (relative; default 1e-6) between iterations, or after maxIter (default 100);
 * with the linear engine stopped samples are no longer computed (the batch costs about the sum of
 * its samples' iterations).
 */
export async function fisherPower(model: Model, x: Tensor, opts: { tol?: number; maxIter?: number } & FisherSpeedOptions = {}): Promise<PowerResult> {
  const r = await runOp(opts, (ctl) => addon().fisherPower(modelHandle(model), x.native, methodOpts('power', opts) as { tol: number; maxIter: number } & NativeSpeedOpts, ctl));
  return { lambdaMax: r.lambdaMax, iterations: r.iterations, converged: Array.from(r.converged, (v) => v !== 0), eigvec: new Tensor(r.eigvec), engine: r.engine, engineReason: r.engineReason };
}

/** Lanczos result per sample (from the Ritz values). */
export interface LanczosResult {
  lambdaMax: Float64Array;
  trace: Float64Array;
  frobenius: Float64Array;
  /** Krylov dimension reached per sample (stops early at breakdown: the spectrum is exhausted). */
  steps: Float64Array;
  /** Ritz values, descending: [B, S] float64. */
  ritz: Tensor;
  /** Unit leading Ritz vector, float64, shaped like x. */
  eigvec: Tensor;
}

/**
 * Lanczos with full reorthogonalisation on G_x per sample, `steps` Fisher-vector products
 * (default: the number of classes C, which exceeds rank G ≤ C−1 and makes λ_max, trace and
 * Frobenius norm exact up to rounding).
 */
export async function fisherLanczos(model: Model, x: Tensor, opts: { steps?: number } & FisherSpeedOptions = {}): Promise<LanczosResult> {
  const r = await runOp(opts, (ctl) => addon().fisherLanczos(modelHandle(model), x.native, methodOpts('lanczos', opts) as { steps: number } & NativeSpeedOpts, ctl));
  return { lambdaMax: r.lambdaMax, trace: r.trace, frobenius: r.frobenius, steps: r.steps, ritz: new Tensor(r.ritz), eigvec: new Tensor(r.eigvec) };
}

/** Hutchinson estimates per sample with their standard errors. */
export interface HutchinsonResult {
  trace: Float64Array;
  traceSe: Float64Array;
  frobenius: Float64Array;
  /** Standard error of the Frobenius estimate (delta method from ‖G v‖²'s). */
  frobeniusSe: Float64Array;
}

/**
 * Hutchinson estimates of tr G_x = E vᵀGv and ‖G_x‖_F² = E ‖G v‖² with `probes` Rademacher
 * vectors (default 32; seeded, the same probes for every sample). Cost: one JVP and one VJP per probe.
 */
export async function fisherHutchinson(model: Model, x: Tensor, opts: { probes?: number; seed?: number } & FisherSpeedOptions = {}): Promise<HutchinsonResult> {
  return runOp(opts, (ctl) => addon().fisherHutchinson(modelHandle(model), x.native, methodOpts('hutchinson', opts) as { probes: number; seed: number } & NativeSpeedOpts, ctl));
}

/** δᵀ G_x δ per sample for directions v shaped like x (one JVP). Half of it approximates KL(p(x) ‖ p(x+v)). */
export async function fisherQuadratic(model: Model, x: Tensor, v: Tensor, opts: FisherSpeedOptions = {}): Promise<Float64Array> {
  return runOp(opts, (ctl) => addon().fisherQuadratic(modelHandle(model), x.native, v.native, speed(opts), ctl));
}

/** G_x v per sample (float64, shaped like x): one JVP and one VJP. */
export async function fisherVectorProduct(model: Model, x: Tensor, v: Tensor, opts: FisherSpeedOptions = {}): Promise<Tensor> {
  return new Tensor(await runOp(opts, (ctl) => addon().fisherVectorProduct(modelHandle(model), x.native, v.native, speed(opts), ctl)));
}

/**
 * KL(p(x) ‖ p(x + t δ)) for each t of `ts` (nats), per sample, beside the quadratic term
 * ½ t² δᵀ G_x δ: where the two part, higher-order terms take over (docs/math.md §4, the paper's appendix B).
 */
export async function klSegment(model: Model, x: Tensor, delta: Tensor, ts: number[], opts: FisherSpeedOptions = {}):
  Promise<{ ts: number[]; kl: Float64Array[]; quadratic: Float64Array[]; dGd: Float64Array }> {
  const r = await runOp(opts, (ctl) => addon().klSegment(modelHandle(model), x.native, delta.native, ts, speed(opts), ctl));
  return { ts, ...segmentRows(r.kl, r.quadratic, ts), dGd: r.quadratic };
}

/**
 * @internal Per sample b, the row KL(p(x_b) ‖ p(x_b + t δ_b)) over `ts` (from the native [B, T]
 * float64 result, which it frees) and ½ t² δᵀGδ from dGd [B].
 */
export function segmentRows(klNative: NativeTensor, dGd: Float64Array, ts: number[]): { kl: Float64Array[]; quadratic: Float64Array[] } {
  const klT = new Tensor(klNative);
  const flat = klT.toArray() as Float64Array;
  klT.dispose();
  const B = dGd.length, T = ts.length;
  const kl: Float64Array[] = [], quadratic: Float64Array[] = [];
  for (let b = 0; b < B; b++) {
    kl.push(flat.slice(b * T, (b + 1) * T));
    quadratic.push(Float64Array.from(ts, (t) => 0.5 * t * t * dGd[b]));
  }
  return { kl, quadratic };
}

// ---------------- summaries and datasets ----------------

export { summarize, Summary } from '../util/stats';

/** Methods of {@link fisherBatch} / {@link fisherDataset}. */
export type FisherMethod = typeof METHODS[number];
export const FISHER_METHODS: FisherMethod[] = [...METHODS];

/** Options of the method-generic functions. */
export interface FisherMethodOptions extends FisherSpeedOptions {
  /** Default 'exact'. */
  method?: FisherMethod;
  /** power: relative tolerance (1e-6) and iteration cap (100). */
  tol?: number;
  maxIter?: number;
  /** lanczos: Krylov dimension (default C). */
  steps?: number;
  /** hutchinson: probes (32) and seed (0). */
  probes?: number;
  seed?: number;
}

/** Per-sample values of one method (fields the method does not compute are absent). */
export interface FisherValues {
  lambdaMax?: Float64Array;
  trace?: Float64Array;
  frobenius?: Float64Array;
  traceSe?: Float64Array;
  frobeniusSe?: Float64Array;
  converged?: boolean[];
}

/** The Fisher quantities of one batch by the chosen method (eigenvectors and spectra freed). */
export async function fisherBatch(model: Model, x: Tensor, opts: FisherMethodOptions = {}): Promise<FisherValues> {
  const method = parseOptions('fisher', { method: FISHER_DATASET_OPTIONS.method }, opts).method as FisherMethod;
  switch (method) {
    case 'exact': {
      const r = await fisherExact(model, x, opts);
      r.spectrum.dispose();
      r.probs.dispose();
      return { lambdaMax: r.lambdaMax, trace: r.trace, frobenius: r.frobenius };
    }
    case 'power': {
      const r = await fisherPower(model, x, opts);
      r.eigvec.dispose();
      return { lambdaMax: r.lambdaMax, converged: r.converged };
    }
    case 'lanczos': {
      const r = await fisherLanczos(model, x, opts);
      r.eigvec.dispose();
      r.ritz.dispose();
      return { lambdaMax: r.lambdaMax, trace: r.trace, frobenius: r.frobenius };
    }
    case 'hutchinson':
      return fisherHutchinson(model, x, opts);
    default:
      throw invalidArgument("fisher option 'method'", `one of ${FISHER_METHODS.join(', ')}`, method);
  }
}

/** Per-sample Fisher values over a dataset, with their summaries. */
export interface FisherDatasetResult extends FisherValues {
  method: FisherMethod;
  /** Samples measured. */
  n: number;
  summary: { lambdaMax?: Summary; trace?: Summary; frobenius?: Summary };
  /** Samples whose power iteration did not converge (power only). */
  unconverged?: number;
  /** Seconds spent. */
  seconds: number;
}

function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Per-sample Fisher quantities over a dataset, or over images x [N, C, H, W] alone (the Fisher
 * information needs no labels), in batches of `batchSize` (default 128; the first `limit`
 * samples if given) and their summaries. The per-epoch tracker of training:
 * `(await fisherDataset(model, testSubset)).summary.frobenius.mean` (Figures 3–6 of the paper).
 */
export async function fisherDataset(model: Model, data: Dataset | Tensor, opts: FisherMethodOptions & { batchSize?: number; limit?: number } = {}): Promise<FisherDatasetResult> {
  const t0 = Date.now();
  const { method: m, batchSize: bs } = parseOptions('fisherDataset', FISHER_DATASET_OPTIONS, opts);
  const method = m as FisherMethod;
  const images = data instanceof Tensor ? data : data.images;
  const size = images.shape[0];
  const n = Math.min(size, opts.limit ?? size);
  const keys = ['lambdaMax', 'trace', 'frobenius', 'traceSe', 'frobeniusSe'] as const;
  const parts: Record<string, Float64Array[]> = {};
  const conv: boolean[] = [];
  const batchSize = bs as number;
  const { onProgress, ...rest } = opts;
  for (let done = 0; done < n;) {
    const end = Math.min(n, done + batchSize);
    // rows [done, end) of the images: one native copy of a batch, no image through JavaScript
    const x = images.slice(done, end);
    try {
      const v = await fisherBatch(model, x, rest);
      for (const k of keys) if (v[k]) (parts[k] ??= []).push(v[k] as Float64Array);
      if (v.converged) conv.push(...v.converged);
    } finally {
      x.dispose();
    }
    done = end;
    onProgress?.({ type: 'batch', done, total: n });
  }
  const out: FisherDatasetResult = { method, n, summary: {}, seconds: (Date.now() - t0) / 1000 };
  for (const k of keys) if (parts[k]) out[k] = concat(parts[k]);
  if (out.lambdaMax) out.summary.lambdaMax = summarize(out.lambdaMax);
  if (out.trace) out.summary.trace = summarize(out.trace);
  if (out.frobenius) out.summary.frobenius = summarize(out.frobenius);
  if (method === 'power') {
    out.converged = conv;
    out.unconverged = conv.filter((c) => !c).length;
  }
  return out;
}

// ---------------- profile ----------------

/** One row of {@link profileFisher}. */
export interface ProfileRow {
  method: FisherMethod;
  batchSize: number;
  /** Milliseconds per batch (median of the repeats). */
  ms: number;
  samplesPerSecond: number;
  /** Peak resident memory above the level before the run (bytes; CPU process RSS high-water mark). */
  peakBytes: number;
  /** The engine the methods ran on, and why autograd ('' when linear); see FisherEngine. */
  engine: FisherEngine;
  engineReason: string;
  /** exact: the layout and classes per pass it ran with (measured or cached by the warm-up run). */
  layout?: 'nchw' | 'channels-last';
  classesPerPass?: number;
}

/**
 * Per-batch cost of each method for each batch size on random inputs of the model's shape
 * (`inputShape` [C, H, W]): median ms over `repeats` (default 3) after one warm-up, samples/s,
 * and peak memory.
 */
export async function profileFisher(model: Model, opts: {
  inputShape: number[]; batchSizes: number[]; methods?: FisherMethod[]; repeats?: number;
} & FisherMethodOptions): Promise<ProfileRow[]> {
  const rows: ProfileRow[] = [];
  const repeats = opts.repeats ?? 3;
  let engine: { engine: FisherEngine; engineReason: string } | undefined;
  for (const bs of opts.batchSizes) {
    const size = bs * opts.inputShape.reduce((a, b) => a * b, 1);
    // seeded inputs in [0, 1) (the timing does not depend on them; the run is reproducible)
    const next = uniformStream(bs);
    const data = Float32Array.from({ length: size }, next);
    const x = Tensor.from(data, [bs, ...opts.inputShape], { device: model.device });
    try {
      if (!engine) {  // every method runs on the same engine: ask one power step
        const p = await fisherPower(model, x, { ...opts, maxIter: 1, tol: 0 });
        p.eigvec.dispose();
        engine = { engine: p.engine, engineReason: p.engineReason };
      }
      for (const method of opts.methods ?? FISHER_METHODS) {
        const o = { ...opts, method };
        await fisherBatch(model, x, o);  // warm-up
        const before = peakMemory(true).rss;
        const times: number[] = [];
        for (let r = 0; r < repeats; r++) {
          const t = process.hrtime.bigint();
          await fisherBatch(model, x, o);
          times.push(Number(process.hrtime.bigint() - t) / 1e6);
        }
        const peak = peakMemory(false).peak;
        times.sort((a, b) => a - b);
        const ms = times[Math.floor(times.length / 2)];
        const row: ProfileRow = { method, batchSize: bs, ms, samplesPerSecond: (bs * 1000) / ms, peakBytes: Math.max(0, peak - before), ...engine };
        if (method === 'exact') {
          const t = await exactTuning(model, x, o);  // the warm-up's choice (cached)
          row.layout = t.layout;
          row.classesPerPass = t.classesPerPass;
        }
        rows.push(row);
      }
    } finally {
      x.dispose();
    }
  }
  return rows;
}
