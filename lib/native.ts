/**
 * Loads the native addon (lib/loader.ts: FISHERLENS_ADDON, the development build, or the prebuilt
 * variant / local build that fits the LibTorch found) and gives a typed view of its core exports.
 * Capability modules (fisher.ts, attacks.ts, …) declare the slice of exports they use and call
 * {@link addon}.
 */
import { LoadResult, loadAddon } from './loader';

export * from './addon-types';
import type { CoreAddon } from './addon-types';

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
