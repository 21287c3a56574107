/**
 * Provenance of numbers: which package version and which native sources produced them. One place
 * computes the native-source hash, so the packer (stale variants), the loader (variant manifest),
 * run folders, reports and queue jobs all compare the same thing.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';

/** The package root (the folder holding package.json and native/). */
export function packageRoot(): string {
  // dist/lib/provenance.js -> two levels up; lib/experiment/provenance.ts under ts-node -> one level
  let dir = __dirname;
  for (let i = 0; i < 4; i++) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'native'))) return dir;
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '..', '..');
}

/** Version of the fisherlens package (package.json). */
export function packageVersion(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
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

/** What produced a run's numbers: recorded in summary.json, shown and compared by the report. */
export interface RunProvenance {
  /** fisherlens package version. */
  packageVersion: string;
  /** Prebuilt variant id ('torch1.13-cpu', …) or 'source' for a local build. */
  variant: string;
  /** LibTorch the addon ran on: version, CUDA version (null: CPU-only), folder. */
  libtorch: { version: string; cuda: string | null; path: string };
  /** nativeSourceHash() of the package that ran. */
  nativeSourceHash: string;
  /** Device the run used ('cpu', 'cuda:0', …) and the CPU model of the machine. */
  device: string;
  cpu: string;
  /** Host name (recorded, not compared: sweeps run on many hosts of one kind). */
  host: string;
}

/** The provenance of a run on `device` in this process (loads the addon). */
export function runProvenance(device: string): RunProvenance {
  // required lazily: backend loads the addon, whose loader imports this module
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { backend } = require('../binding/backend') as typeof import('../binding/backend');
  const b = backend();
  const os = require('os') as typeof import('os');
  return {
    packageVersion: packageVersion(), variant: b.variant,
    libtorch: { version: b.libtorch.version, cuda: b.libtorch.cuda, path: b.libtorch.path },
    nativeSourceHash: nativeSourceHash(), device, cpu: os.cpus()[0]?.model ?? 'unknown', host: os.hostname(),
  };
}

/** One line naming what produced a run, for reports ('fisherlens 0.1.0 · torch1.13-cpu · LibTorch 1.13.1 · native 1a2b… · cpu (CPU model)'). */
export function provenanceText(p: RunProvenance): string {
  const lt = `LibTorch ${p.libtorch.version}${p.libtorch.cuda ? ` CUDA ${p.libtorch.cuda}` : ''}`;
  return `fisherlens ${p.packageVersion} · ${p.variant} · ${lt} · native ${p.nativeSourceHash.slice(0, 8)} · ${p.device} (${p.cpu})`;
}
