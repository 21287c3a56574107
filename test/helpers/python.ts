/**
 * The Python that runs the reference implementations (Debian's python3-torch: the same LibTorch).
 * FISHERLENS_PYTHON overrides; `hasTorch(mods)` says whether it imports those modules, so a test
 * can skip, with its reason in the title, on a machine without them.
 */
import { execFileSync } from 'child_process';

export const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';

const cache = new Map<string, boolean>();

/** Whether PY imports every module of `mods` (default: torch and numpy); asked once per list. */
export function hasTorch(mods = 'torch, numpy'): boolean {
  let ok = cache.get(mods);
  if (ok === undefined) {
    try {
      execFileSync(PY, ['-c', `import ${mods}`], { stdio: 'ignore' });
      ok = true;
    } catch {
      ok = false;
    }
    cache.set(mods, ok);
  }
  return ok;
}
