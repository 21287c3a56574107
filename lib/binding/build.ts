/**
 * `fisherlens build`: compiles the addon from the package's own sources (node-gyp, the staged
 * layout of scripts/gyp-build.js) against the LibTorch the loader finds, for users whose LibTorch
 * has no prebuilt variant. The result goes to `<cache>/builds/<id>/` (lib/binding/loader.ts searches it)
 * and is probed in a child process before this returns. Needs a C++17 compiler, make, python3
 * (node-gyp) and LibTorch's headers; every missing one is named in one ERR_BUILD.
 */
import * as crypto from 'crypto';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FisherLensError } from '../util/errors';
import { cacheDir, discovery, loadOrder, probe, readManifest, SourceBuild, TorchCandidate } from './loader';
import { nativeSourceHash, packageRoot, packageVersion } from '../util/version';
import { writeFileAtomic } from '../util/files';

export interface BuildOptions {
  /** Parallel compile jobs (default: the available cores). */
  jobs?: number;
  /** Called after each compiled source file: (done, total, file). */
  onProgress?: (done: number, total: number, file: string) => void;
}

export interface BuildResult {
  /** The built addon. */
  file: string;
  libtorch: { path: string; version: string; cuda: string | null; source: string };
  /** Wall seconds of the compile. */
  seconds: number;
  /** The full compiler log. */
  log: string;
}

interface GypBuild {
  stageAddon(root: string, dir: string, version: string): void;
  nodedirArgs(): string[];
  inspect(file: string): { needed: string[]; runpath: string | null; rpath: string | null; sha256: string; bytes: number };
  torchNeeded(needed: string[]): string[];
}

function runs(cmd: string, args: string[] = ['--version']): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 30_000 });
  return r.status === 0;
}

/** The LibTorch a build targets: the first the loader finds that ships headers. */
function target(): { c: TorchCandidate; tried: string[] } | { c: null; tried: string[] } {
  const { found, rejected } = discovery().candidates();
  const tried = rejected.map((r) => `${r.source}${r.libDir ? ` at ${r.libDir}` : ''}: ${r.why}`);
  for (const c of found) {
    if (c.includeDirs) return { c, tried };
    tried.push(`${c.source} at ${c.libDir}: LibTorch ${c.version} has no headers (no share/cmake/Torch under ${c.prefix})`);
  }
  return { c: null, tried };
}

/** Folder name of a build for one LibTorch: torch tag + a hash of its library folder. */
export function buildId(c: TorchCandidate): string {
  const mm = discovery().majorMinor(c.version) ?? 'unknown';
  const tag = `torch${mm}-${c.cuda ? `cu${c.cuda.replace('.', '')}` : 'cpu'}`;
  return `${tag}-${crypto.createHash('sha256').update(c.libDir).digest('hex').slice(0, 8)}`;
}

/** Compiles the addon against the discovered LibTorch into the cache folder; see the file comment. */
export async function buildFromSource(opts: BuildOptions = {}): Promise<BuildResult> {
  const root = packageRoot();
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const gyp = require(path.join(root, 'scripts', 'gyp-build.js')) as GypBuild;
  const missing: string[] = [];
  const t = target();
  if (!t.c) missing.push(`LibTorch with headers (tried: ${t.tried.join('; ')}): apt-get install libtorch-dev, or set FISHERLENS_TORCH to an unpacked libtorch`);
  const cxx = (process.env.CXX || 'g++').split(/\s+/).filter(Boolean);
  if (!runs(cxx[0], [...cxx.slice(1), '--version'])) missing.push(`a C++17 compiler (${process.env.CXX ? `CXX=${process.env.CXX}` : 'g++'} does not run): apt-get install g++, or set CXX`);
  if (!runs('make')) missing.push('make: apt-get install make');
  if (!runs(process.env.PYTHON || 'python3')) missing.push('python3 (node-gyp needs it): apt-get install python3, or set PYTHON');
  let nodeGyp = '';
  try {
    nodeGyp = path.join(path.dirname(require.resolve('node-gyp/package.json', { paths: [root] })), 'bin', 'node-gyp.js');
  } catch {
    missing.push('node-gyp (a dependency of fisherlens): reinstall fisherlens');
  }
  if (missing.length || !t.c) {
    throw new FisherLensError('ERR_BUILD', `fisherlens build: missing ${missing.join('; ')}`);
  }
  const c = t.c;
  const jobs = opts.jobs ?? (os.availableParallelism ? os.availableParallelism() : os.cpus().length);
  const outDir = path.join(cacheDir(), 'builds', buildId(c));
  const stage = `${outDir}.tmp-${process.pid}`;
  fs.rmSync(stage, { recursive: true, force: true });
  gyp.stageAddon(root, stage, packageVersion());
  const total = ['native', 'native/binding', 'native/common', 'native/models']
    .map((d) => fs.readdirSync(path.join(stage, d)).filter((f) => f.endsWith('.cc')).length).reduce((a, b) => a + b, 0);
  const logFile = path.join(stage, 'build.log');
  const logFd = fs.openSync(logFile, 'w');
  const started = Date.now();
  const code = await new Promise<number>((resolve) => {
    const child = spawn(process.execPath, [nodeGyp, 'rebuild', '--release', `--jobs=${jobs}`, ...gyp.nodedirArgs()],
      { cwd: stage, env: { ...process.env, JOBS: String(jobs) }, stdio: ['ignore', 'pipe', 'pipe'] });
    let done = 0;
    let buf = '';
    const onData = (chunk: Buffer): void => {
      fs.writeSync(logFd, chunk);
      buf += chunk.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        const m = /CXX\(target\) \S*?\/(native\/\S+)\.o/.exec(l);
        if (m) opts.onProgress?.(++done, total, `${m[1]}.cc`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', () => resolve(-1));
    child.on('close', (status) => resolve(status ?? -1));
  });
  fs.closeSync(logFd);
  const seconds = (Date.now() - started) / 1000;
  const built = path.join(stage, 'build', 'Release', 'fisherlens.node');
  if (code !== 0 || !fs.existsSync(built)) {
    const tail = fs.readFileSync(logFile, 'utf8').split('\n').filter((l) => /error|Error|not found|No such/.test(l)).slice(-5);
    throw new FisherLensError('ERR_BUILD', `fisherlens build: node-gyp failed (exit ${code}) against LibTorch ${c.version} at ${c.libDir}: ` +
      `${tail.join(' | ') || 'see the log'}; full log: ${logFile}`);
  }
  const info = gyp.inspect(built);
  const torchNeeded = gyp.torchNeeded(info.needed);
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  const file = path.join(outDir, 'fisherlens.node');
  fs.copyFileSync(built, file);
  fs.copyFileSync(logFile, path.join(outDir, 'build.log'));
  fs.rmSync(stage, { recursive: true, force: true });
  // The shipped shim opens this LibTorch first, as for a prebuilt variant
  const manifest = readManifest(root);
  const shim = manifest ? path.join(root, 'variants', manifest.shim.file) : null;
  const preload = loadOrder(torchNeeded).map((n) => path.join(c.libDir, n));
  const verdict = probe(file, info.sha256, shim && fs.existsSync(shim) ? shim : null, preload);
  if (!verdict.ok) {
    fs.rmSync(outDir, { recursive: true, force: true });
    throw new FisherLensError('ERR_BUILD', `fisherlens build: the build against LibTorch ${c.version} at ${c.libDir} ${verdict.reason}`);
  }
  const meta: SourceBuild = {
    file: 'fisherlens.node', libDir: c.libDir, torchVersion: c.version, cuda: c.cuda, torchNeeded,
    sha256: info.sha256, nativeSourceHash: nativeSourceHash(root), packageVersion: packageVersion(), builtAt: new Date().toISOString(),
  };
  // build.json last: its presence marks a finished build for the loader
  writeFileAtomic(path.join(outDir, 'build.json'), JSON.stringify(meta, null, 2) + '\n');
  return { file, libtorch: { path: c.libDir, version: c.version, cuda: c.cuda, source: c.source }, seconds, log: path.join(outDir, 'build.log') };
}
