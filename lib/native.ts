/**
 * Loads the native addon (prebuilds/ first, then build/Release via node-gyp-build; or the file
 * named by FISHERLENS_ADDON) and gives a typed view of its core exports. Capability modules
 * (fisher.ts, attacks.ts, …) declare the slice of exports they use and call {@link addon}.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError } from './errors';
import { packageRoot } from './provenance';

export * from './addon-types';
import type { CoreAddon } from './addon-types';

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
