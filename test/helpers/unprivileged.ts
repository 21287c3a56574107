/**
 * Runs a Node script as an unprivileged user, for the checks that mean nothing as root (root
 * writes through any permission bit) while CI runs as root. `setpriv` (util-linux) switches to
 * `nobody`; the script reads the compiled tree (dist/, node_modules/) in place when that user can
 * read it, else a copy in a temporary folder that it can read (a checkout under /root is not).
 */
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/** The repository root of the compiled tests (dist/test/helpers → ..). */
const ROOT = path.join(__dirname, '..', '..', '..');
const USER = 'nobody';

let cached: { root: string; node: string; cleanup: () => void } | string | undefined;

/** setpriv's arguments that drop to `nobody` (its own group, no supplementary groups). */
function dropArgs(): string[] {
  const gid = spawnSync('id', ['-g', USER], { encoding: 'utf8' }).stdout.trim();
  return [`--reuid=${USER}`, `--regid=${gid}`, '--clear-groups', '--'];
}

/** Whether `nobody` can run `node -e <code>` (exit 0). */
function canRun(node: string, code: string): boolean {
  return spawnSync('setpriv', [...dropArgs(), node, '-e', code], { stdio: 'ignore', timeout: 60_000 }).status === 0;
}

/**
 * Where `nobody` finds the compiled tree and a node binary: in place when readable, else a copy
 * (dist/, node_modules/, package.json and, if needed, the node binary) under a temporary folder
 * opened to all. A string: why it cannot run (not root, no setpriv, no such user).
 */
function prepare(): { root: string; node: string; cleanup: () => void } | string {
  if (cached !== undefined) return cached;
  if (process.getuid?.() !== 0) return (cached = 'not root: run the check in this process');
  if (spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status !== 0) return (cached = 'setpriv (util-linux) is not installed');
  if (spawnSync('id', [USER], { stdio: 'ignore' }).status !== 0) return (cached = `no user '${USER}'`);
  let node = process.execPath;
  let root = ROOT;
  let tmp: string | undefined;
  const open = () => {
    if (tmp) return tmp;
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-unpriv-'));
    fs.chmodSync(tmp, 0o755);
    return tmp;
  };
  if (!canRun(node, '0')) {
    const copy = path.join(open(), 'node');
    fs.copyFileSync(node, copy);
    fs.chmodSync(copy, 0o755);
    node = copy;
  }
  if (!canRun(node, `require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'index.js'))})`)) {
    root = path.join(open(), 'tree');
    for (const part of ['dist', 'node_modules', 'package.json']) fs.cpSync(path.join(ROOT, part), path.join(root, part), { recursive: true });
    spawnSync('chmod', ['-R', 'a+rX', root]);
  }
  return (cached = { root, node, cleanup: () => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); } });
}

/**
 * Runs `script` (CommonJS source; `ROOT` is defined in it as the readable tree's root) as
 * `nobody` with `cwd`; a string instead of a result when that cannot be done (see prepare).
 */
export function runAsNobody(script: string, cwd: string): SpawnSyncReturns<string> | string {
  const p = prepare();
  if (typeof p === 'string') return p;
  return spawnSync('setpriv', [...dropArgs(), p.node, '-e', `const ROOT = ${JSON.stringify(p.root)};\n${script}`],
    { encoding: 'utf8', cwd, timeout: 120_000 });
}

/** Removes the copy made for `nobody` (call from test.after.always). */
export function cleanupNobody(): void {
  if (cached && typeof cached !== 'string') cached.cleanup();
  cached = undefined;
}
