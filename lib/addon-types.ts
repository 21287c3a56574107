/**
 * Declarations of the native addon's surface (what native/ registers on its exports), apart
 * from the loader in native.ts. Handles are opaque: TypeScript wrappers (Tensor, Model) hold them.
 */

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

/** The native Model handle (ObjectWrap over a Classifier). */
export interface NativeModel extends Handle<'model'> {
  forward(x: NativeTensor, ctl?: NativeCtl): Promise<NativeTensor>;
  /** An op (queued after the ops before it); `training` says the new mode at once. */
  setTraining(on: boolean, ctl?: NativeCtl): Promise<void>;
  to(device: string, ctl?: NativeCtl): Promise<void>;
  exportState(path: string, ctl?: NativeCtl): Promise<void>;
  dispose(): void;
  /** Cached on the JS side (no read of the model while an op runs on it). */
  readonly training: boolean;
  readonly kind: 'builtin' | 'torchscript';
  readonly spec: string;
  readonly device: string;
  readonly parameterCount: number;
  readonly disposed: boolean;
}

/** The native optimiser handle (an External over the optimiser and the model it was made for; train.cc). */
export type NativeOptimizer = Handle<'optimizer'>;

export type TensorHandle = NativeTensor;
export type ModelHandle = NativeModel;
export type OptimizerHandle = NativeOptimizer;

/** What backend() reports (native/backend.cc). */
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
  /** LibTorch's parallel backend description. */
  parallel: string;
}

/** Core exports of the addon (common/, backend.cc, models/model_wrap.cc). */
export interface CoreAddon {
  backend(): NativeBackend;
  setThreads(n: number): void;
  setTf32(on: boolean): void;
  /** Process RSS and its high-water mark in bytes (reset: malloc_trim, then clear the mark). */
  peakMemory(reset?: boolean): { rss: number; peak: number };
  /** Live tensor handles and their bytes; v8External: V8's external-memory count (AdjustExternalMemory reports and ArrayBuffers). */
  memory(): { tensors: number; bytes: number; v8External: number };
  /** Tensor.to as an op on the compute thread (large copies). */
  tensorTo(t: NativeTensor, deviceOrDtype: string, ctl?: NativeCtl): Promise<NativeTensor>;
  /** Tensor.index as an op on the compute thread (large gathers). */
  tensorIndex(t: NativeTensor, indices: NativeTensor, ctl?: NativeCtl): Promise<NativeTensor>;
  CancelToken: new () => NativeCancelToken;
  Tensor: new () => NativeTensor;
  tensorFromTypedArray(data: NativeTypedArray, shape: number[], device?: string): NativeTensor;
  createModel(specJson: string, device?: string): NativeModel;
  loadTorchScript(path: string, device: string, ctl?: NativeCtl): Promise<NativeModel>;
}

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
}

/** Test builds only: a model's mode and requires-grad / .grad counts, read on the compute thread. */
export interface NativeModelTestHooks {
  gradState(ctl?: NativeCtl): Promise<{ training: boolean; parameters: number; requiresGrad: number; withGrad: number }>;
}
