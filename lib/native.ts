/**
 * Loads the native addon (prebuilds/ first, then build/Release via node-gyp-build; or the file
 * named by FISHERLENS_ADDON) and gives a typed view of its core exports. Capability modules
 * (fisher.ts, attacks.ts, …) declare the slice of exports they use and call {@link addon}.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError } from './errors';
import { packageRoot } from './provenance';

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

let loaded: unknown = null;
let addonFile = '';

function load(): unknown {
  const root = packageRoot();
  const tried: string[] = [];
  const explicit = process.env.FISHERLENS_ADDON;
  const candidates: string[] = [];
  if (explicit) candidates.push(path.resolve(explicit));
  // node-gyp-build's own resolution (prebuilds/<platform>-<arch>/, build/Release, build/Debug)
  let gypBuildPath: string | null = null;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const ngb = require('node-gyp-build') as { resolve?: (dir: string) => string };
    if (!explicit && ngb.resolve) gypBuildPath = ngb.resolve(root);
  } catch (e) {
    tried.push(`node-gyp-build in ${root}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (gypBuildPath) candidates.push(gypBuildPath);
  for (const file of candidates) {
    try {
      const mod = require(file);
      addonFile = file;
      return mod;
    } catch (e) {
      const msg = (e as Error).message.split('\n')[0];
      const hint = /lib(torch|c10)[^ ]*\.so/.test(msg)
        ? ' (LibTorch shared libraries not found: install libtorch-dev or set LD_LIBRARY_PATH to $LIBTORCH/lib)'
        : '';
      tried.push(`${file}: ${msg}${hint}`);
    }
  }
  if (candidates.length === 0 && tried.length === 0) tried.push(`${path.join(root, 'build', 'Release')}: no fisherlens.node`);
  throw new FisherLensError('ERR_LOAD',
    'fisherlens: the native addon could not be loaded. Tried:\n' + tried.map((t) => `  - ${t}`).join('\n') +
    '\nFix: run `bash scripts/setup.sh` in the package folder (installs LibTorch and builds the addon), ' +
    'or `npm run build:native` if LibTorch is already installed.');
}

/** The addon's exports, typed as the caller's slice `T` (loaded once, on first use). */
export function addon<T = CoreAddon>(): T & CoreAddon {
  if (loaded === null) loaded = load();
  return loaded as T & CoreAddon;
}

/** Path of the loaded addon file ('' before the first load). */
export function addonPath(): string {
  return addonFile;
}
