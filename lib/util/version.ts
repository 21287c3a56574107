/**
 * What this package is: its root folder, its version (package.json, read once) and the hash of
 * its native sources. One place computes them, so the packer (stale variants), the loader
 * (variant manifest), run folders, reports and queue jobs all compare the same thing.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

/** The package root (the folder holding package.json and native/). */
export function packageRoot(): string {
  // dist/lib/util/version.js -> three levels up; lib/util/version.ts under ts-node -> two levels
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'native'))) return dir;
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '..', '..', '..');
}

let version: string | undefined;

/** Version of the fisherlens package (package.json, read on first use). */
export function packageVersion(): string {
  if (version === undefined) {
    const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
    version = pkg.version;
  }
  return version;
}

/**
 * Files that determine the native binary: every file under native/ but the loader's shim, plus the two build
 * descriptions. binding.gyp is at the root of a checkout and ships as scripts/binding.gyp in the
 * npm package (at the package root npm would build at install): both hash under one name.
 */
function nativeSourceFiles(root: string): Array<[string, string]> {
  const out: string[] = [];
  const walk = (rel: string): void => {
    const abs = path.join(root, rel);
    for (const name of fs.readdirSync(abs).sort()) {
      const r = path.posix.join(rel, name);
      if (r === 'native/shim') continue; // the loader's shim is a separate binary (variants/shim)
      const st = fs.statSync(path.join(abs, name));
      if (st.isDirectory()) walk(r);
      else if (st.isFile()) out.push(r);
    }
  };
  walk('native');
  const files: Array<[string, string]> = out.map((r) => [r, r]);
  if (fs.existsSync(path.join(root, 'CMakeLists.txt'))) files.push(['CMakeLists.txt', 'CMakeLists.txt']);
  for (const f of ['binding.gyp', 'scripts/binding.gyp']) {
    if (fs.existsSync(path.join(root, f))) { files.push(['binding.gyp', f]); break; }
  }
  return files;
}

const hashCache = new Map<string, string>();

/**
 * sha256 (hex, first 16 characters) over the native sources' relative paths and contents, in a
 * fixed order: equal hashes mean the same C++ went into the binary. Cached per root.
 */
export function nativeSourceHash(root: string = packageRoot()): string {
  const hit = hashCache.get(root);
  if (hit) return hit;
  const h = crypto.createHash('sha256');
  for (const [name, rel] of nativeSourceFiles(root)) {
    h.update(name).update('\0').update(fs.readFileSync(path.join(root, rel))).update('\0');
  }
  const hex = h.digest('hex').slice(0, 16);
  hashCache.set(root, hex);
  return hex;
}
