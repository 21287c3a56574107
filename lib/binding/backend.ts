/** Backend facts and settings (LibTorch version, CUDA, threads, BLAS). */
import { addon, addonPath, loadInfo, NativeBackend } from './native';
import type { LibTorchInfo } from './loader';
import { FisherLensError, sync, invalidArgument } from '../util/errors';
import { packageVersion } from '../util/version';
import { GRADIENT_ENGINE_OPTION, GRADIENT_ENGINES } from './gradient-engine';
import { checkOption } from '../util/schema';

export type GradientEngine = typeof GRADIENT_ENGINES[number];

/** The backend's facts (fields documented on {@link NativeBackend}) and the package version. */
export interface BackendInfo extends Omit<NativeBackend, 'parallel'> {
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
    blas: b.blas, allocator: b.allocator, addonVersion: b.addonVersion, tf32: b.tf32, gradientEngine: b.gradientEngine, packageVersion: packageVersion(),
    variant: l.variant, libtorch: { path: lt.path, version: lt.version, cuda: lt.cuda }, addonPath: l.file,
  };
}

/** Sets LibTorch's intra-op thread count for ops started afterwards. */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw invalidArgument('setThreads(n)', 'a positive integer', n);
  sync(() => addon().setThreads(n));
}

/**
 * Allows (true) or forbids (false, the default unless FISHERLENS_TF32=1 at load) TF32 CUDA matrix
 * products and convolutions for the whole process: faster on Ampere+ GPUs, but λ_max moves in the
 * 3rd digit. {@link backend} reports the setting.
 */
/**
 * Exits at once with `code` (a second signal, a grace that ran out): through the addon when it is
 * loaded, which skips the static destructors that would crash under an op still running on the
 * compute thread; else process.exit.
 */
export function exitNow(code: number): never {
  if (addonPath()) addon().exitNow(code);
  process.exit(code);
}

export function setTf32(on: boolean): void {
  if (typeof on !== 'boolean') throw invalidArgument('setTf32(on)', 'a boolean', on);
  sync(() => addon().setTf32(on));
}

/**
 * How attacks and training's inner maximisation compute input gradients, for the whole process
 * (lib/binding/gradient-engine.ts GRADIENT_ENGINES): 'linear' through the model's linearisation where it has one,
 * 'autograd', or 'auto' (the default; FISHERLENS_GRADIENT_ENGINE sets it at load). Under 'auto',
 * the first gradient for a model architecture and input batch shape measures both engines on
 * that point (six gradients, discarded), and every later gradient of that architecture and shape
 * in this process uses the linearisation where it measured at least 5 % faster, else autograd
 * ({@link Model.gradientChoices} lists the choices). The choice is stored in the cache folder
 * (lib/science/tuning-store.ts), so later processes on this machine take it without measuring. The
 * engines' gradients agree to float rounding; pin an engine for bitwise-equal results across
 * machines. {@link backend} reports the setting.
 */
export function setGradientEngine(engine: GradientEngine): void {
  checkOption('setGradientEngine', 'engine', GRADIENT_ENGINE_OPTION, engine);
  sync(() => addon().setGradientEngine(engine));
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

/**
 * Process resident memory and its high-water mark (bytes; Linux /proc; zeros elsewhere). `reset`
 * first returns freed heap memory to the system (glibc malloc_trim: the allocator policy keeps it
 * resident otherwise), then clears the mark.
 */
export function peakMemory(reset = false): { rss: number; peak: number } {
  return sync(() => addon().peakMemory(reset));
}
