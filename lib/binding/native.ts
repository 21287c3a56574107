/**
 * Loads the native addon (lib/binding/loader.ts: FISHERLENS_ADDON, the development build, or the prebuilt
 * variant / local build that fits the LibTorch found) and gives it the type lib/binding/addon-types.ts
 * declares for the whole native surface ({@link Addon}).
 */
import { LoadResult, loadAddon } from './loader';
import { GRADIENT_ENGINE_OPTION } from './gradient-engine';
import { checkOption } from '../util/schema';

export * from './addon-types';
import type { Addon } from './addon-types';

let loaded: LoadResult | null = null;

/** Loads the addon once (lib/binding/loader.ts chooses the binary and its LibTorch). */
function load(): LoadResult {
  if (loaded === null) {
    const r = loadAddon();
    // process-wide settings taken from the environment at load
    const engine = process.env.FISHERLENS_GRADIENT_ENGINE;
    if (engine !== undefined && engine !== '') {
      checkOption('FISHERLENS_GRADIENT_ENGINE', 'value', GRADIENT_ENGINE_OPTION, engine);
      (r.module as Addon).setGradientEngine(engine);
    }
    loaded = r;
  }
  return loaded;
}

/**
 * The addon's exports (loaded once, on first use). The one place its untyped module becomes
 * {@link Addon}; test/seam.test.ts checks the loaded keys against ADDON_EXPORTS.
 */
export function addon(): Addon {
  return load().module as Addon;
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
