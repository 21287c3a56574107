/**
 * Chooses and loads the native addon, in this order:
 *  1. `FISHERLENS_ADDON` (an explicit .node file; nothing else is tried);
 *  2. the development build of a checkout (build/Release/fisherlens.node);
 *  3. for each LibTorch found (scripts/libtorch.js: `$FISHERLENS_TORCH`/`$LIBTORCH`, Python torch,
 *     the system library; what Python and dpkg answered is cached in the cache folder, keyed by the
 *     stamps of the interpreters, library and version files that decide it): the prebuilt
 *     variants of variants/manifest.json that fit it, then the
 *     builds `fisherlens build` made for it in the cache folder. Each (binary, LibTorch) pair is
 *     probed once in a child process (two LibTorch versions can never share a process, and a
 *     wrong one may crash it); the verdict is cached. The chosen LibTorch's libraries are opened
 *     by absolute path through the torch-free shim (native/shim) before the addon, so its NEEDED
 *     entries bind to them with no LD_LIBRARY_PATH.
 * When nothing fits, ERR_LOAD lists every (binary, LibTorch, reason) and the fixes.
 */
import * as crypto from 'crypto';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FisherLensError } from '../util/errors';
import { nativeSourceHash, packageRoot } from '../util/version';
import { writeFileAtomic } from '../util/files';

/** The LibTorch the addon runs on. */
export interface LibTorchInfo {
  /** Folder its libraries were loaded from (symlinks resolved). */
  path: string;
  /** Its version (build-version, torch/version.py, the Debian package, or the SONAME). */
  version: string;
  /** Its CUDA version, or null for a CPU-only LibTorch. */
  cuda: string | null;
  /** How it was found: '$FISHERLENS_TORCH=…', 'python (…)', 'system', or 'loaded' (read from the process). */
  source: string;
}

/** What was loaded, and what was passed over on the way. */
export interface LoadResult {
  module: unknown;
  /** The .node file loaded. */
  file: string;
  /** Prebuilt variant id (e.g. 'torch1.13-cpu'), or 'source' for a local build. */
  variant: string;
  libtorch: LibTorchInfo;
  /** Every binary tried before it and why it was passed over ('variant × LibTorch: reason'). */
  skipped: string[];
}

/** One entry of variants/manifest.json (written by scripts/package.js). */
export interface VariantEntry {
  id: string;
  platform: string;
  /** Path relative to variants/. */
  file: string;
  /** LibTorch major.minor it was built against, e.g. '1.13'. */
  torch: string;
  /** The pip requirement that brings its LibTorch (e.g. 'torch==2.13.0+cpu'), or null (Debian's). */
  pip?: string | null;
  torchVersion: string;
  cuda: string | null;
  cxx11Abi: number;
  needed: string[];
  /** The LibTorch libraries among `needed`, in load order. */
  torchNeeded: string[];
  glibc: string | null;
  glibcxx: string | null;
  sha256: string;
  bytes: number;
  nativeSourceHash: string;
}

export interface VariantManifest {
  format: number;
  version: string;
  nativeSourceHash: string;
  shim: { file: string; sha256: string; bytes: number };
  variants: VariantEntry[];
}

/** build.json next to a `fisherlens build` output in the cache folder. */
export interface SourceBuild {
  file: string;
  libDir: string;
  torchVersion: string;
  cuda: string | null;
  torchNeeded: string[];
  sha256: string;
  nativeSourceHash: string;
  packageVersion: string;
  builtAt: string;
}

/** A LibTorch as scripts/libtorch.js describes it. */
export interface TorchCandidate {
  source: string;
  libDir: string;
  libs: Record<string, string>;
  version: string;
  cuda: string | null;
  prefix: string;
  includeDirs?: string[];
  cmakePrefixPath?: string;
}
interface Discovery {
  /** `opts.cacheDir`: remember the Pythons' and dpkg's answers there, re-asked when a stamp of what decides them changes. */
  candidates(env?: NodeJS.ProcessEnv, opts?: { cacheDir?: string }): { found: TorchCandidate[]; rejected: Array<{ source: string; libDir: string; why: string }> };
  describe(libDir: string, source: string, hint?: object, cacheDir?: string): TorchCandidate & { why?: string };
  majorMinor(v: string): string | null;
  TORCH_LIBS: string[];
}

/** The LibTorch discovery shared with the build (scripts/libtorch.js). */
export function discovery(): Discovery {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return require(path.join(packageRoot(), 'scripts', 'libtorch.js')) as Discovery;
}

/** Cache folder for probe verdicts and `fisherlens build` outputs: $FISHERLENS_CACHE, else $XDG_CACHE_HOME/fisherlens, else ~/.cache/fisherlens. */
export function cacheDir(): string {
  if (process.env.FISHERLENS_CACHE) return path.resolve(process.env.FISHERLENS_CACHE);
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'fisherlens');
}

/** The platform tag variants are built for, e.g. 'linux-x64'. */
export function platformTag(): string {
  return `${process.platform}-${process.arch}`;
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function firstLine(s: string): string {
  const lines = s.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  // node's uncaught-error output starts with the source line; the message is the 'Error:' line
  return lines.find((l) => /^(Error|\w+Error)\b/.test(l)) ?? lines[0] ?? '';
}

/** Reads variants/manifest.json of the package at root (null when absent). */
export function readManifest(root: string = packageRoot()): VariantManifest | null {
  const file = path.join(root, 'variants', 'manifest.json');
  if (!fs.existsSync(file)) return null;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as VariantManifest;
  } catch (e) {
    throw new FisherLensError('ERR_FORMAT', `${file}: not valid JSON (${(e as Error).message}); reinstall fisherlens`);
  }
}

/** Builds `fisherlens build` made, from the cache folder. */
export function sourceBuilds(): Array<SourceBuild & { dir: string }> {
  const dir = path.join(cacheDir(), 'builds');
  if (!fs.existsSync(dir)) return [];
  const out: Array<SourceBuild & { dir: string }> = [];
  for (const d of fs.readdirSync(dir).sort()) {
    try {
      out.push({ ...(JSON.parse(fs.readFileSync(path.join(dir, d, 'build.json'), 'utf8')) as SourceBuild), dir: path.join(dir, d) });
    } catch { /* an unfinished or foreign folder: not a build */ }
  }
  return out;
}

/** Why a variant cannot run on a LibTorch (null when it may: the probe decides). */
export function mismatch(v: VariantEntry, c: TorchCandidate, majorMinor: (s: string) => string | null): string | null {
  if (v.platform !== platformTag()) return `built for ${v.platform}, this is ${platformTag()}`;
  const mm = majorMinor(c.version);
  if (mm !== v.torch) return `needs LibTorch ${v.torch}.x, this one is ${c.version}`;
  if (!!v.cuda !== !!c.cuda) return `needs a ${v.cuda ? `CUDA ${v.cuda}` : 'CPU-only'} LibTorch, this one is ${c.cuda ? `CUDA ${c.cuda}` : 'CPU-only'}`;
  if (v.cuda && c.cuda && v.cuda.split('.')[0] !== c.cuda.split('.')[0]) return `needs CUDA ${v.cuda}, this LibTorch has CUDA ${c.cuda}`;
  const missing = v.torchNeeded.filter((n) => !fs.existsSync(path.join(c.libDir, n)));
  if (missing.length) return `needs ${missing.join(', ')}, not in ${c.libDir}`;
  return null;
}

/** LibTorch library file names in dependency order: c10, c10_cuda, torch_cpu, torch_cuda, torch (others last). */
export function loadOrder(names: string[]): string[] {
  const order = ['c10', 'c10_cuda', 'torch_cpu', 'torch_cuda', 'torch'];
  const rank = (n: string): number => {
    const m = /^lib([a-z_0-9]+?)\.so/.exec(n);
    const i = m ? order.indexOf(m[1]) : -1;
    return i < 0 ? order.length : i;
  };
  return [...names].sort((a, b) => rank(a) - rank(b));
}

interface Verdict { ok: boolean; reason: string; torchVersion?: string; at: string }

const PROBE = [
  'const a = JSON.parse(process.argv[1]);',
  'if (a.shim) { const s = require(a.shim); for (const f of a.preload) s.load(f); }',
  'const b = require(a.file).backend();',
  'process.stdout.write(JSON.stringify({ torchVersion: b.torchVersion }));',
].join('\n');

/**
 * Loads `file` after `preload` in a child process and reports whether it worked; the verdict is
 * cached under cacheDir()/probes, keyed by the binary's sha256, the preloaded files (path, size,
 * mtime) and Node's N-API version.
 */
export function probe(file: string, fileSha: string, shim: string | null, preload: string[]): Verdict {
  const stamp = preload.map((f) => { const st = fs.statSync(f); return `${f}:${st.size}:${st.mtimeMs}`; });
  const key = crypto.createHash('sha256').update(JSON.stringify([fileSha, shim, stamp, process.versions.napi])).digest('hex').slice(0, 32);
  const cacheFile = path.join(cacheDir(), 'probes', `${key}.json`);
  try {
    return JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as Verdict;
  } catch { /* not probed yet */ }
  const r = spawnSync(process.execPath, ['-e', PROBE, JSON.stringify({ file, shim, preload })],
    { encoding: 'utf8', timeout: 120_000, env: { ...process.env, FISHERLENS_ADDON: '' } });
  let verdict: Verdict;
  if (r.status === 0) {
    let tv: string | undefined;
    try { tv = (JSON.parse(r.stdout) as { torchVersion: string }).torchVersion; } catch { /* keep undefined */ }
    verdict = { ok: true, reason: '', torchVersion: tv, at: new Date().toISOString() };
  } else {
    const why = r.error ? r.error.message : r.signal ? `crashed (${r.signal})` : firstLine(r.stderr) || `exit code ${r.status}`;
    verdict = { ok: false, reason: `does not load: ${why}`, at: new Date().toISOString() };
  }
  try {
    writeFileAtomic(cacheFile, JSON.stringify(verdict));
  } catch (e) {
    // a read-only cache only costs a probe next time
    if (!(e instanceof FisherLensError && e.code === 'ERR_IO')) throw e;
  }
  return verdict;
}

/** The LibTorch this process has mapped (from /proc/self/maps), for binaries loaded without discovery. */
function mappedLibTorch(d: Discovery | null): LibTorchInfo {
  try {
    const maps = fs.readFileSync('/proc/self/maps', 'utf8');
    const m = /(\/\S*\/libtorch_cpu\.so[^\s]*)/.exec(maps);
    if (m) {
      const dir = path.dirname(m[1]);
      const c = d ? d.describe(dir, 'loaded', {}, cacheDir()) : null;
      return { path: dir, version: c && !c.why ? c.version : 'unknown', cuda: c && !c.why ? c.cuda : null, source: 'loaded' };
    }
  } catch { /* not Linux */ }
  return { path: 'unknown', version: 'unknown', cuda: null, source: 'loaded' };
}

function requireFile(file: string): unknown {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return require(file);
}

/** The fixes an ERR_LOAD names, with the CUDA variants this package ships. */
function fixes(manifest: VariantManifest | null): string {
  // pip variants: those that name their pip requirement (older manifests: the CUDA ones)
  const pipVariants = (manifest?.variants ?? []).filter((v) => v.pip || (v.pip === undefined && v.cuda));
  return 'Fix, by the LibTorch you have:\n' +
    '  - Debian 12 / Ubuntu: `apt-get install libtorch1.13` (the prebuilt torch1.13-cpu variant);\n' +
    pipVariants.map((v) => `  - pip: \`pip install ${v.pip ?? `torch==${v.torchVersion}`}\` in the Python first on PATH (the prebuilt ${v.id} variant);\n`).join('') +
    '  - a LibTorch elsewhere: set FISHERLENS_TORCH to its folder (an unpacked libtorch or a pip torch package folder);\n' +
    '  - any other LibTorch: `npx fisherlens build` compiles the addon against it (needs a C++17 compiler, C++20 for LibTorch >= 2.14, make, python3 and LibTorch\'s headers).';
}

/** Loads the addon (see the file comment for the order); throws ERR_LOAD listing every candidate. */
export function loadAddon(): LoadResult {
  const root = packageRoot();
  const explicit = process.env.FISHERLENS_ADDON;
  let d: Discovery | null = null;
  try { d = discovery(); } catch { /* a checkout without scripts/: only explicit and dev builds */ }
  if (explicit) {
    const file = path.resolve(explicit);
    try {
      const module = requireFile(file);
      return { module, file, variant: 'source', libtorch: mappedLibTorch(d), skipped: [] };
    } catch (e) {
      throw new FisherLensError('ERR_LOAD', `fisherlens: FISHERLENS_ADDON=${explicit} could not be loaded: ${firstLine((e as Error).message)}` +
        '\nFix: point FISHERLENS_ADDON at a fisherlens.node built for this LibTorch, or unset it.');
    }
  }
  const tried: string[] = [];
  const dev = path.join(root, 'build', 'Release', 'fisherlens.node');
  if (fs.existsSync(dev)) {
    try {
      const module = requireFile(dev);
      return { module, file: dev, variant: 'source', libtorch: mappedLibTorch(d), skipped: [] };
    } catch (e) {
      tried.push(`development build ${dev}: ${firstLine((e as Error).message)}`);
    }
  }
  const manifest = readManifest(root);
  if (!d) throw new FisherLensError('ERR_LOAD', `fisherlens: ${path.join(root, 'scripts', 'libtorch.js')} is missing; reinstall fisherlens`);
  const disc = d;
  // the Pythons' answers are cached (a start spawns no Python until a torch install changes)
  const { found, rejected } = disc.candidates(process.env, { cacheDir: cacheDir() });
  const shim = manifest ? path.join(root, 'variants', manifest.shim.file) : null;
  let shimOk = shim !== null && fs.existsSync(shim);
  if (shimOk) {
    // torch-free: loading it here costs nothing and tells whether this glibc/Node can use it;
    // without it the binaries still load where the system's loader finds LibTorch
    try { requireFile(shim as string); } catch (e) {
      shimOk = false;
      tried.push(`the shim ${shim} does not load here (${firstLine((e as Error).message)}): LibTorch is left to the system's library search`);
    }
  }
  const hash = nativeSourceHash(root);
  const builds = sourceBuilds();

  const attempt = (label: string, file: string, fileSha: string, c: TorchCandidate, torchNeeded: string[], variant: string): LoadResult | null => {
    const where = `${label} × LibTorch ${c.version} at ${c.libDir} (${c.source})`;
    const preload = loadOrder(torchNeeded).map((n) => path.join(c.libDir, n));
    const absent = preload.filter((f) => !fs.existsSync(f));
    if (absent.length) { tried.push(`${where}: needs ${absent.join(', ')}, missing`); return null; }
    const v = probe(file, fileSha, shimOk ? shim : null, preload);
    if (!v.ok) { tried.push(`${where}: ${v.reason}`); return null; }
    try {
      if (shimOk) {
        const s = requireFile(shim as string) as { load(file: string): void };
        for (const f of preload) s.load(f);
      }
      const module = requireFile(file);
      return { module, file, variant, libtorch: { path: c.libDir, version: c.version, cuda: c.cuda, source: c.source }, skipped: tried.slice() };
    } catch (e) {
      tried.push(`${where}: passed its probe but failed here: ${firstLine((e as Error).message)}`);
      return null;
    }
  };

  for (const c of found) {
    for (const v of manifest?.variants ?? []) {
      const where = `variant ${v.id} × LibTorch ${c.version} at ${c.libDir} (${c.source})`;
      const why = mismatch(v, c, disc.majorMinor);
      if (why) { tried.push(`${where}: ${why}`); continue; }
      const file = path.join(root, 'variants', v.file);
      if (v.nativeSourceHash !== hash) { tried.push(`${where}: stale (built from native sources ${v.nativeSourceHash}, this package's are ${hash})`); continue; }
      if (!fs.existsSync(file)) { tried.push(`${where}: ${file} is missing`); continue; }
      if (sha256(file) !== v.sha256) { tried.push(`${where}: ${file} differs from the manifest's sha256 (damaged or replaced)`); continue; }
      const r = attempt(`variant ${v.id}`, file, v.sha256, c, v.torchNeeded, v.id);
      if (r) return r;
    }
    for (const b of builds.filter((b) => b.libDir === c.libDir)) {
      const file = path.join(b.dir, b.file);
      const where = `local build ${b.dir} × LibTorch ${c.version} at ${c.libDir} (${c.source})`;
      if (b.nativeSourceHash !== hash) { tried.push(`${where}: stale (built from native sources ${b.nativeSourceHash}, this package's are ${hash}); run \`npx fisherlens build\` again`); continue; }
      if (!fs.existsSync(file) || sha256(file) !== b.sha256) { tried.push(`${where}: ${file} missing or changed since it was built`); continue; }
      const r = attempt(`local build ${b.dir}`, file, b.sha256, c, b.torchNeeded, 'source');
      if (r) return r;
    }
  }
  if (!manifest) tried.push(`prebuilt variants: ${path.join(root, 'variants', 'manifest.json')} not found (a checkout: \`npm run build\` or \`npm run package\`)`);
  else if (shim !== null && !fs.existsSync(shim)) tried.push(`prebuilt variants: the shim ${shim} is missing; reinstall fisherlens`);
  if (found.length === 0) tried.push('no LibTorch found');
  for (const r of rejected) tried.push(`LibTorch ${r.source}${r.libDir ? ` at ${r.libDir}` : ''}: ${r.why}`);
  throw new FisherLensError('ERR_LOAD',
    'fisherlens: no native addon fits this machine. Tried:\n' + tried.map((t) => `  - ${t}`).join('\n') + '\n' + fixes(manifest));
}
