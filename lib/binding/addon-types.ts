/**
 * Declarations of the native addon's surface (what native/ registers on its exports), apart
 * from the loader in native.ts. Handles are opaque: TypeScript wrappers (Tensor, Model) hold them.
 */

import type { FisherEngine, SyntheticOptions } from './types';

declare const handleKind: unique symbol;
/**
 * An opaque native handle of kind K. Only the addon makes them, and the brand keeps kinds apart
 * at compile time: a model handle where a tensor handle goes is a type error (the addon also
 * refuses it at run time with ERR_ARG).
 */
export interface Handle<K extends string> {
  readonly [handleKind]: K;
}

/** Options every async native op takes as its last argument. */
export interface NativeCtl {
  token?: NativeCancelToken;
  onProgress?: (json: string) => void;
}
export interface NativeCancelToken {
  cancel(): void;
  readonly cancelled: boolean;
}
export type NativeDtype = 'float32' | 'float64' | 'int64' | 'int32' | 'uint8';
export type NativeTypedArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

/** The native Tensor handle (ObjectWrap over torch::Tensor). */
export interface NativeTensor extends Handle<'tensor'> {
  readonly shape: number[];
  readonly dtype: NativeDtype;
  readonly device: string;
  readonly disposed: boolean;
  toArray(): NativeTypedArray;
  to(deviceOrDtype: string): NativeTensor;
  index(indices: NativeTensor): NativeTensor;
  slice(start: number, end: number): NativeTensor;
  reshape(shape: number[]): NativeTensor;
  clone(): NativeTensor;
  item(): number;
  dispose(): void;
}

/**
 * What the 'auto' gradient engine chose for one input batch of a model architecture: `key` is the
 * batch's shape, then its dtype and device codes; the best measured ms of one gradient on each
 * engine (linearMs NaN: no linearisation at that input).
 */
export interface NativeGradientChoice { key: number[]; engine: 'linear' | 'autograd'; linearMs: number; autogradMs: number }

/** The native Model handle (ObjectWrap over a Classifier). */
export interface NativeModel extends Handle<'model'> {
  forward(x: NativeTensor, ctl?: NativeCtl): Promise<NativeTensor>;
  /** An op (queued after the ops before it); `training` says the new mode at once. */
  setTraining(on: boolean, ctl?: NativeCtl): Promise<void>;
  to(device: string, ctl?: NativeCtl): Promise<void>;
  exportState(path: string, ctl?: NativeCtl): Promise<void>;
  /** Copies of the named parameters and buffers (PyTorch state_dict names), on the model's device. */
  state(ctl?: NativeCtl): Promise<Record<string, NativeTensor>>;
  dispose(): void;
  /** Cached on the JS side (no read of the model while an op runs on it). */
  readonly training: boolean;
  readonly kind: 'builtin' | 'torchscript' | 'exported';
  readonly spec: string;
  readonly device: string;
  readonly parameterCount: number;
  /** The attacks' input-gradient engine measured per input batch (lib/binding/backend.ts setGradientEngine 'auto'). */
  readonly gradientChoices: NativeGradientChoice[];
  /** Adds a stored choice for this model's architecture (lib/science/tuning-store.ts); an existing one stays. */
  setGradientChoice(c: NativeGradientChoice): void;
  readonly disposed: boolean;
}

/** The native optimiser handle (an External over the optimiser and the model it was made for; train.cc). */
export type NativeOptimizer = Handle<'optimizer'>;

export type TensorHandle = NativeTensor;
export type ModelHandle = NativeModel;
export type OptimizerHandle = NativeOptimizer;

/** What backend() reports (native/binding/backend.cc). */
export interface NativeBackend {
  /** LibTorch version the addon was built against, e.g. "1.13.1". */
  torchVersion: string;
  /** Whether CUDA is usable (a CUDA LibTorch and at least one GPU). */
  cuda: boolean;
  cudaDeviceCount: number;
  /** LibTorch intra-op threads (defaults to the available cores; FISHERLENS_THREADS overrides). */
  threads: number;
  /** The BLAS library loaded in this process (path). */
  blas: string;
  /**
   * Allocator policy applied when the addon loaded: 'glibc-reuse' (freed blocks up to 32 MiB stay
   * in the heap for the next tensor instead of being unmapped and page-faulted in again; its
   * measured effect is in docs/fisher.md) or 'system' (FISHERLENS_MALLOC=system, or not glibc).
   */
  allocator: 'glibc-reuse' | 'system';
  /** Version of the native addon. */
  addonVersion: string;
  /** Whether CUDA matrix products and convolutions may use TF32 (setTf32; FISHERLENS_TF32=1 at load). */
  tf32: boolean;
  /** How attacks compute input gradients (setGradientEngine; lib/binding/gradient-engine.ts GRADIENT_ENGINES). */
  gradientEngine: 'auto' | 'linear' | 'autograd';
  /** LibTorch's parallel backend description. */
  parallel: string;
}

/** Speed options every Fisher op takes (fisher.cc's SpeedOptions; results do not depend on them beyond rounding). */
export interface NativeSpeedOpts { channelsLast?: boolean; streams?: number; autograd?: boolean; classesPerPass?: number }
/** One row of fisherExactTune's timing table. */
export interface NativeTuneRow { channelsLast: boolean; classesPerPass: number; msPerClass: number; msSamples: number[] }
/** Per-batch sums ccklBatch returns (metrics.cc). */
export interface NativeBatchSums {
  n: Float64Array; A: Float64Array; P: Float64Array; S: Float64Array;
  correct: number; ceSum: number; count: number; logp: NativeTensor;
}
/** What the data loaders return (data.cc). */
export interface NativeLoaded {
  images: NativeTensor;
  labels?: NativeTensor;
  numClasses: number;
}
/** AutoAttack's sanity-check counters (autoattack.cc). */
export interface NativeChecks { classes: number; probabilityRows: number; zeroGradient: number; nonFiniteGradient: number; forwardDifference: number }

/**
 * The whole native surface: every export native/ registers (`exports.Set(...)`) in the shipped
 * addon, grouped by the C++ file that registers it. {@link ADDON_EXPORTS} lists the same names
 * (test/seam.test.ts checks them against the loaded addon). Test-only exports are in
 * {@link TestHooks}. Options objects arrive complete (lib/science/options.ts fills the defaults); the
 * native parsers check every key.
 */
export interface Addon {
  // binding/backend.cc: process-wide settings and diagnostics
  backend(): NativeBackend;
  setThreads(n: number): void;
  /** Ends the process now, skipping destructors (a forced exit while an op runs). */
  exitNow(code: number): never;
  setTf32(on: boolean): void;
  setGradientEngine(engine: string): void;
  /** Process RSS and its high-water mark in bytes (reset: malloc_trim, then clear the mark). */
  peakMemory(reset?: boolean): { rss: number; peak: number };

  // binding/cancel_token.cc: cancellation of async ops
  CancelToken: new () => NativeCancelToken;

  // binding/tensor.cc: the Tensor handle
  Tensor: new () => NativeTensor;
  tensorFromTypedArray(data: NativeTypedArray, shape: number[], device?: string): NativeTensor;
  /** Live tensor handles and their bytes; v8External: V8's external-memory count (AdjustExternalMemory reports and ArrayBuffers). */
  memory(): { tensors: number; bytes: number; v8External: number };
  /** Tensor.to as an op on the compute thread (large copies). */
  tensorTo(t: NativeTensor, deviceOrDtype: string, ctl?: NativeCtl): Promise<NativeTensor>;
  /** Tensor.index as an op on the compute thread (large gathers). */
  tensorIndex(t: NativeTensor, indices: NativeTensor, ctl?: NativeCtl): Promise<NativeTensor>;

  // binding/model.cc: the Model handle (built-in zoo and TorchScript)
  Model: new () => NativeModel;
  createModel(specJson: string, device?: string): NativeModel;
  /** An exported program (native/models/exported.h) with zero weights. */
  createExported(specJson: string, device?: string): NativeModel;
  loadTorchScript(path: string, device: string, ctl?: NativeCtl): Promise<NativeModel>;
  evaluateBatch(m: NativeModel, x: NativeTensor, y: NativeTensor, ctl?: NativeCtl): Promise<{ correct: number; ceSum: number; count: number }>;

  // binding/checkpoint.cc: model checkpoints
  saveCheckpoint(m: NativeModel, path: string, metaJson: string, ctl?: NativeCtl): Promise<void>;
  loadCheckpoint(path: string, device: string, restoreRng: boolean, ctl?: NativeCtl): Promise<{
    model: NativeModel; meta: string; hasOptimizer: boolean; version: number;
  }>;
  loadCheckpointState(m: NativeModel, path: string, ctl?: NativeCtl): Promise<void>;

  // binding/weights.cc: PyTorch state dicts into a model (lib/science/weights reads the files)
  /** The model's parameters and buffers in namedState order (names as in PyTorch's state_dict). */
  stateInfo(m: NativeModel, ctl?: NativeCtl): Promise<{ name: string; shape: number[]; dtype: string }[]>;
  /**
   * Copies tensors of the file at `path` into the model: `sourcesJson` is a JSON array of
   * { target, dtype, shape, strides, offset, byteStart, byteLength } (models/weights.h
   * WeightSource); all are checked before the first copy (ERR_FORMAT changes nothing).
   */
  loadWeights(m: NativeModel, path: string, sourcesJson: string, ctl?: NativeCtl): Promise<void>;

  // data.cc: loaders, the .npy writer, synthetic data, augmentation
  loadIdx(images: string, labels: string, numClasses: number, ctl?: NativeCtl): Promise<NativeLoaded>;
  loadCifar(paths: string[], variant: 10 | 100, coarse: boolean, ctl?: NativeCtl): Promise<NativeLoaded>;
  loadNpy(path: string, role: 'images' | 'labels' | 'raw', ctl?: NativeCtl): Promise<NativeTensor>;
  appendNpy(path: string, t: NativeTensor, ctl?: NativeCtl): Promise<number>;
  synthetic(o: SyntheticOptions, ctl?: NativeCtl): Promise<NativeLoaded>;
  augment(x: NativeTensor, seed: number, pad: number, flip: boolean, ctl?: NativeCtl): Promise<NativeTensor>;

  // fisher.cc: the Fisher information of the output distribution
  fisherExact(m: NativeModel, x: NativeTensor, o: { eigvec?: boolean } & NativeSpeedOpts, ctl?: NativeCtl): Promise<{
    lambdaMax: Float64Array; trace: Float64Array; frobenius: Float64Array;
    spectrum: NativeTensor; probs: NativeTensor; eigvec?: NativeTensor; engine: FisherEngine; engineReason: string;
  }>;
  fisherPower(m: NativeModel, x: NativeTensor, o: { tol: number; maxIter: number } & NativeSpeedOpts, ctl?: NativeCtl): Promise<{
    lambdaMax: Float64Array; iterations: Float64Array; converged: Uint8Array; eigvec: NativeTensor; engine: FisherEngine; engineReason: string;
  }>;
  fisherLanczos(m: NativeModel, x: NativeTensor, o: { steps: number } & NativeSpeedOpts, ctl?: NativeCtl): Promise<{
    lambdaMax: Float64Array; trace: Float64Array; frobenius: Float64Array; steps: Float64Array; ritz: NativeTensor; eigvec: NativeTensor;
  }>;
  fisherHutchinson(m: NativeModel, x: NativeTensor, o: { probes: number; seed: number } & NativeSpeedOpts, ctl?: NativeCtl): Promise<{
    trace: Float64Array; traceSe: Float64Array; frobenius: Float64Array; frobeniusSe: Float64Array;
  }>;
  fisherQuadratic(m: NativeModel, x: NativeTensor, v: NativeTensor, o: NativeSpeedOpts, ctl?: NativeCtl): Promise<Float64Array>;
  fisherVectorProduct(m: NativeModel, x: NativeTensor, v: NativeTensor, o: NativeSpeedOpts, ctl?: NativeCtl): Promise<NativeTensor>;
  klSegment(m: NativeModel, x: NativeTensor, d: NativeTensor, ts: number[], o: NativeSpeedOpts, ctl?: NativeCtl): Promise<{ kl: NativeTensor; quadratic: Float64Array }>;
  fisherExactTune(m: NativeModel, x: NativeTensor, o: { candidates: { channelsLast: boolean; classesPerPass: number }[]; budgetMs: number; autograd: boolean }, ctl?: NativeCtl): Promise<NativeTuneRow[]>;
  profileVjp(m: NativeModel, x: NativeTensor, o: NativeSpeedOpts, ctl?: NativeCtl): Promise<{ op: string; ms: number; flops: number }[]>;

  // metrics.cc: CCKL, pair statistics, ρ
  ccklBatch(m: NativeModel | null, x: NativeTensor, y: NativeTensor, o: { probs: boolean }, ctl?: NativeCtl): Promise<NativeBatchSums>;
  pairMeans(logps: NativeTensor[], ys: NativeTensor[], o: { exactMax: number; samples: number; seed: number }, ctl?: NativeCtl): Promise<{
    jsMean: number; jsSe: number; boundMean: number; boundSe: number; pairs: number; exact: boolean;
  }>;
  klPairSegment(m: NativeModel, xi: NativeTensor, xj: NativeTensor, ts: number[], ctl?: NativeCtl): Promise<{ kl: NativeTensor; quadratic: Float64Array }>;
  samplePairs(labels: NativeTensor, count: number, seed: number, ctl?: NativeCtl): Promise<{ i: Float64Array; j: Float64Array }>;
  rho(m: NativeModel, x: NativeTensor, o: { eps: number; steps: number; clip: boolean }, ctl?: NativeCtl): Promise<{
    rho: Float64Array; fisherBound: Float64Array; lambdaMax: Float64Array; initial: Float64Array;
  }>;

  // attacks.cc: adversarial attacks (options from lib/science/options.ts's attack table)
  attack(m: NativeModel, x: NativeTensor, y: NativeTensor, o: Record<string, unknown>, ctl?: NativeCtl): Promise<{
    xAdv: NativeTensor; loss: Float64Array; success: Uint8Array; norm: Float64Array; cleanCorrect: Uint8Array;
    queries?: Float64Array;
  }>;
  firstSuccessful(advs: NativeTensor[], successes: Uint8Array[], ctl?: NativeCtl): Promise<NativeTensor>;

  // autoattack.cc: the AutoAttack cascade
  autoAttack(m: NativeModel, x: NativeTensor, y: NativeTensor, o: Record<string, unknown>, ctl?: NativeCtl): Promise<{
    xAdv: NativeTensor; brokenBy: Float64Array; norm: Float64Array; stageSeconds: Float64Array; checks: NativeChecks;
  }>;

  // train.cc: optimisers and training steps
  createOptimizer(m: NativeModel, o: Record<string, unknown>, ctl?: NativeCtl): Promise<NativeOptimizer>;
  trainStep(m: NativeModel, opt: NativeOptimizer, x: NativeTensor, y: NativeTensor, o: Record<string, unknown>, ctl?: NativeCtl): Promise<{
    loss: number; lossNatural: number; lossRobust: number; correct: number; batch: number;
  }>;
  saveTrainState(path: string, m: NativeModel, opt: NativeOptimizer, meta: string, ctl?: NativeCtl): Promise<void>;
  loadTrainState(path: string, m: NativeModel, opt: NativeOptimizer, ctl?: NativeCtl): Promise<string>;
  manualSeed(seed: number): void;
}

/**
 * The names {@link Addon} declares, as a value: a test compares them with the loaded addon's keys
 * (less the test hooks), so an export without a declaration, or a declaration without an export,
 * fails. The checks below make this list and the interface agree at compile time.
 */
export const ADDON_EXPORTS = [
  'backend', 'setThreads', 'setTf32', 'setGradientEngine', 'peakMemory', 'exitNow',
  'CancelToken',
  'Tensor', 'tensorFromTypedArray', 'memory', 'tensorTo', 'tensorIndex',
  'Model', 'createModel', 'createExported', 'loadTorchScript', 'evaluateBatch',
  'saveCheckpoint', 'loadCheckpoint', 'loadCheckpointState',
  'stateInfo', 'loadWeights',
  'loadIdx', 'loadCifar', 'loadNpy', 'appendNpy', 'synthetic', 'augment',
  'fisherExact', 'fisherPower', 'fisherLanczos', 'fisherHutchinson', 'fisherQuadratic', 'fisherVectorProduct',
  'klSegment', 'fisherExactTune', 'profileVjp',
  'ccklBatch', 'pairMeans', 'klPairSegment', 'samplePairs', 'rho',
  'attack', 'firstSuccessful',
  'autoAttack',
  'createOptimizer', 'trainStep', 'saveTrainState', 'loadTrainState', 'manualSeed',
] as const satisfies readonly (keyof Addon)[];

/**
 * Test and diagnostic entry points: only in the development build (CMakeLists.txt's
 * FL_TEST_HOOKS); the shipped addon (binding.gyp: prebuilds, npm installs) lacks them.
 */
export interface TestHooks {
  /** A trivial op; resolves to the intra-op thread count the compute thread sees. */
  noop(ctl?: NativeCtl): Promise<number>;
  /** Works for `ms` in 5 ms slices, checking abort and reporting `{ elapsedMs }` progress. */
  spin(ms: number, ctl?: NativeCtl): Promise<number>;
  /** Two Adam steps, a checkpoint with the optimizer sub-archive, and the restored state's largest difference (changes the model). */
  __checkpointOptimizerSelfTest(m: NativeModel, path: string, ctl?: NativeCtl): Promise<{ hasOptimizer: boolean; steps: number; maxDiff: number }>;
  /**
   * A training method's loss (native/train.h methodLoss) on a batch with the given draws (xAdv:
   * the inner maximisation's result; proj [n, B, K]: jacobian's projections; labels [n, B] int64:
   * the Fisher penalties' sampled classes), no optimizer step; grad: the parameter gradient,
   * flattened in parameters() order, float64. `o` is trainStep's complete options.
   */
  __trainLoss(m: NativeModel, x: NativeTensor, y: NativeTensor, o: object,
    draws: { xAdv?: NativeTensor; proj?: NativeTensor; labels?: NativeTensor }, ctl?: NativeCtl):
  Promise<{ loss: number; lossNatural: number; lossRobust: number; grad: NativeTensor }>;
}

/** The names {@link TestHooks} declares (checked against the interface like {@link ADDON_EXPORTS}). */
export const TEST_HOOK_EXPORTS = ['noop', 'spin', '__checkpointOptimizerSelfTest', '__trainLoss'] as const satisfies readonly (keyof TestHooks)[];

/** Test builds only: a model's mode and requires-grad / .grad counts, read on the compute thread. */
export interface NativeModelTestHooks {
  gradState(ctl?: NativeCtl): Promise<{ training: boolean; parameters: number; requiresGrad: number; withGrad: number }>;
}

/**
 * Compile-time checks that each list names every member of its interface (`satisfies` above
 * already keeps them to members): an unlisted name fails here with that name in the message.
 */
type NoneUnlisted<Unlisted extends never> = Unlisted;
type EveryExportListed = NoneUnlisted<Exclude<keyof Addon, (typeof ADDON_EXPORTS)[number]>>;
type EveryHookListed = NoneUnlisted<Exclude<keyof TestHooks, (typeof TEST_HOOK_EXPORTS)[number]>>;
