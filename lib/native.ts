/**
 * Loads the native addon (lib/loader.ts: FISHERLENS_ADDON, the development build, or the prebuilt
 * variant / local build that fits the LibTorch found) and gives a typed view of its core exports.
 * Capability modules (fisher.ts, attacks.ts, …) declare the slice of exports they use and call
 * {@link addon}.
 */
import { LoadResult, loadAddon } from './loader';

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
export interface NativeTensor {
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
export interface NativeModel {
  forward(x: NativeTensor, ctl?: NativeCtl): Promise<NativeTensor>;
  setTraining(on: boolean): void;
  to(device: string, ctl?: NativeCtl): Promise<void>;
  exportState(path: string, ctl?: NativeCtl): Promise<void>;
  dispose(): void;
  readonly training: boolean;
  readonly kind: 'builtin' | 'torchscript';
  readonly spec: string;
  readonly device: string;
  readonly parameterCount: number;
  readonly disposed: boolean;
}

export interface NativeBackend {
  torchVersion: string;
  cuda: boolean;
  cudaDeviceCount: number;
  threads: number;
  blas: string;
  allocator: 'glibc-reuse' | 'system';
  addonVersion: string;
  parallel: string;
}

/** Core exports of the addon (common/, backend.cc, models/model_wrap.cc). */
export interface CoreAddon {
  backend(): NativeBackend;
  setThreads(n: number): void;
  noop(ctl?: NativeCtl): Promise<number>;
  spin(ms: number, ctl?: NativeCtl): Promise<number>;
  memory(): { tensors: number; bytes: number };
  CancelToken: new () => NativeCancelToken;
  Tensor: new () => NativeTensor;
  tensorFromTypedArray(data: NativeTypedArray, shape: number[], device?: string): NativeTensor;
  createModel(specJson: string, device?: string): NativeModel;
  loadTorchScript(path: string, device: string, ctl?: NativeCtl): Promise<NativeModel>;
}

let loaded: LoadResult | null = null;

/** Loads the addon once (lib/loader.ts chooses the binary and its LibTorch). */
function load(): LoadResult {
  if (loaded === null) loaded = loadAddon();
  return loaded;
}

/** The addon's exports, typed as the caller's slice `T` (loaded once, on first use). */
export function addon<T = CoreAddon>(): T & CoreAddon {
  return load().module as T & CoreAddon;
}

/** Path of the loaded addon file ('' before the first load). */
export function addonPath(): string {
  return loaded ? loaded.file : '';
}

/** Which binary was loaded, on which LibTorch, and what was passed over (loads the addon). */
export function loadInfo(): Omit<LoadResult, 'module'> {
  const { module: _m, ...info } = load();
  return info;
}
