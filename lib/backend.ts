/** Backend facts and settings (LibTorch version, CUDA, threads, BLAS). */
import { addon, loadInfo } from './native';
import type { LibTorchInfo } from './loader';
import { FisherLensError, sync } from './errors';
// eslint-disable-next-line @typescript-eslint/no-var-requires
const pkg = (() => {
  // dist/lib/backend.js → ../../package.json; lib/backend.ts under ts-node → ../package.json
  try { return require('../../package.json'); } catch { return require('../package.json'); }
})() as { version: string };

export interface BackendInfo {
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
   * in the heap for the next tensor instead of being unmapped and page-faulted in again: single
   * convolutions 2–14× faster by median here, bench/python/conv_kernels.py) or 'system' (FISHERLENS_MALLOC=system, or not glibc).
   */
  allocator: 'glibc-reuse' | 'system';
  /** Version of the native addon. */
  addonVersion: string;
  /** Version of the fisherlens package. */
  packageVersion: string;
  /** The prebuilt variant loaded (e.g. 'torch1.13-cpu'), or 'source' for a local build. */
  variant: string;
  /** The LibTorch the addon runs on: folder, version, CUDA version (null: CPU-only). */
  libtorch: { path: string; version: string; cuda: string | null };
  /** The native addon file loaded. */
  addonPath: string;
}

/** Versions and capabilities of the loaded backend. */
export function backend(): BackendInfo {
  const b = sync(() => addon().backend());
  const l = loadInfo();
  const lt: LibTorchInfo = l.libtorch;
  return {
    torchVersion: b.torchVersion, cuda: b.cuda, cudaDeviceCount: b.cudaDeviceCount, threads: b.threads,
    blas: b.blas, allocator: b.allocator, addonVersion: b.addonVersion, packageVersion: pkg.version,
    variant: l.variant, libtorch: { path: lt.path, version: lt.version, cuda: lt.cuda }, addonPath: l.file,
  };
}

/** Sets LibTorch's intra-op thread count for ops started afterwards. */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new FisherLensError('ERR_ARG', `setThreads(n): expected a positive integer, got ${n}`);
  sync(() => addon().setThreads(n));
}

/** Checks a device name and that it exists here ('cpu' | 'cuda' | 'cuda:N'); throws ERR_DEVICE otherwise. */
export function checkDevice(device: string): string {
  if (device === 'cpu') return device;
  const m = /^cuda(?::(\d+))?$/.exec(device);
  if (!m) throw new FisherLensError('ERR_DEVICE', `unknown device '${device}'; expected 'cpu', 'cuda' or 'cuda:N'`);
  const b = backend();
  if (!b.cuda) {
    throw new FisherLensError('ERR_DEVICE',
      `device '${device}' asked for, but CUDA is not available (LibTorch ${b.torchVersion} without CUDA or no GPU visible); use 'cpu'`);
  }
  const idx = m[1] ? Number(m[1]) : 0;
  if (idx >= b.cudaDeviceCount) {
    throw new FisherLensError('ERR_DEVICE', `device '${device}' asked for, but only ${b.cudaDeviceCount} CUDA device(s) exist`);
  }
  return device;
}
