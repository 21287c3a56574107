import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** Sets an environment variable back to a saved value (undefined: unset), for tests' teardowns. */
export function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

/**
 * Points FISHERLENS_CACHE (the cache folder: autotune.json, probes, builds) at a new temporary
 * folder for the rest of test t, so nothing stored by an earlier run is read; the teardown removes
 * it and restores the variable. Returns the folder.
 */
export function useTempCache(t: { teardown(fn: () => void): void }, prefix: string): string {
  const saved = process.env.FISHERLENS_CACHE;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  process.env.FISHERLENS_CACHE = dir;
  t.teardown(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    restoreEnv('FISHERLENS_CACHE', saved);
  });
  return dir;
}
