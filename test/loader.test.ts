/**
 * LibTorch discovery (scripts/libtorch.js) and variant matching (lib/binding/loader.ts) on folders laid
 * out like a pip torch, an unpacked libtorch and a bare lib folder (empty library files: nothing
 * is loaded here, so no LibTorch is needed). The expected values are read off the fixtures.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { discovery, loadOrder, mismatch, VariantEntry } from '../lib/binding/loader';

const tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-loader-')));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

function touch(file: string, text = ''): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
}

/** A pip torch package folder: torch/version.py and torch/lib with unversioned SONAMEs. */
function pipTorch(name: string, version: string, cuda: string | null): string {
  const dir = path.join(tmp, name, 'site-packages', 'torch');
  touch(path.join(dir, 'version.py'), `__version__ = '${version}'\ndebug = False\ncuda: Optional[str] = ${cuda ? `'${cuda}'` : 'None'}\n`);
  for (const l of ['c10', 'torch_cpu', 'torch', ...(cuda ? ['c10_cuda', 'torch_cuda'] : [])]) touch(path.join(dir, 'lib', `lib${l}.so`));
  touch(path.join(dir, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'));
  fs.mkdirSync(path.join(dir, 'include', 'torch', 'csrc', 'api', 'include'), { recursive: true });
  return dir;
}

const v113: VariantEntry = {
  id: 'torch1.13-cpu', platform: `${process.platform}-${process.arch}`, file: 'torch1.13-cpu/x.node', torch: '1.13', torchVersion: '1.13.1',
  cuda: null, cxx11Abi: 1, needed: ['libc10.so.1.13', 'libtorch_cpu.so.1.13', 'libtorch.so.1.13', 'libc.so.6'],
  torchNeeded: ['libc10.so.1.13', 'libtorch_cpu.so.1.13', 'libtorch.so.1.13'], glibc: '2.32', glibcxx: '3.4.30', sha256: '0', bytes: 1, nativeSourceHash: '0',
};
const v25cu: VariantEntry = { ...v113, id: 'torch2.5-cu124', torch: '2.5', torchVersion: '2.5.1+cu124', cuda: '12.4',
  torchNeeded: ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so'] };

test('a pip torch folder: version and CUDA from version.py, headers from the wheel, libraries in load order', (t) => {
  const dir = pipTorch('pip-cuda', '2.5.1+cu124', '12.4');
  const d = discovery();
  const { found, rejected } = d.candidates({ FISHERLENS_TORCH: dir });
  t.is(found.length, 1);
  const c = found[0];
  t.is(c.source, `$FISHERLENS_TORCH=${dir}`);
  t.is(c.libDir, path.join(dir, 'lib'));
  t.is(c.version, '2.5.1+cu124');
  t.is(c.cuda, '12.4');
  t.deepEqual(Object.keys(c.libs), ['c10', 'c10_cuda', 'torch_cpu', 'torch_cuda', 'torch']);
  t.deepEqual(c.includeDirs, [path.join(dir, 'include'), path.join(dir, 'include', 'torch', 'csrc', 'api', 'include')]);
  // an explicit choice is the only candidate
  t.deepEqual(rejected.map((r) => r.why), ['not considered: $FISHERLENS_TORCH is set']);
  t.is(d.majorMinor(c.version), '2.5');
});

test('an unpacked libtorch (build-version) and a bare lib folder with versioned SONAMEs only', (t) => {
  const zip = path.join(tmp, 'libtorch');
  touch(path.join(zip, 'build-version'), '2.3.0+cpu\n');
  for (const l of ['c10', 'torch_cpu', 'torch']) touch(path.join(zip, 'lib', `lib${l}.so`));
  const a = discovery().candidates({ LIBTORCH: zip }).found[0];
  t.is(a.version, '2.3.0+cpu');
  t.is(a.cuda, null);
  t.is(a.includeDirs, undefined, 'no share/cmake/Torch: no headers to build with');

  const bare = path.join(tmp, 'bare');
  for (const l of ['c10', 'torch_cpu', 'torch']) touch(path.join(bare, `lib${l}.so.1.13`));
  const b = discovery().candidates({ FISHERLENS_TORCH: bare }).found[0];
  t.is(b.libDir, bare);
  t.is(b.libs.torch_cpu, path.join(bare, 'libtorch_cpu.so.1.13'));
  t.is(b.version, '1.13', 'no build-version or version.py: the SONAME gives major.minor');
});

test('a folder without LibTorch is rejected with the reason', (t) => {
  const empty = path.join(tmp, 'empty');
  fs.mkdirSync(empty, { recursive: true });
  const r = discovery().candidates({ FISHERLENS_TORCH: empty });
  t.is(r.found.length, 0);
  t.regex(r.rejected[0].why, /no libtorch_cpu\.so \/ libc10\.so in .*empty/);
  const missing = discovery().candidates({ FISHERLENS_TORCH: path.join(tmp, 'nope') });
  t.regex(missing.rejected[0].why, /nope does not exist/);
});

test('variant matching: torch major.minor, CUDA or not, and the LibTorch libraries it needs', (t) => {
  const d = discovery();
  const cu = d.candidates({ FISHERLENS_TORCH: pipTorch('pip-cu-2', '2.5.1+cu124', '12.4') }).found[0];
  const cpu = d.candidates({ FISHERLENS_TORCH: pipTorch('pip-cpu', '2.5.1+cpu', null) }).found[0];
  const cu11 = d.candidates({ FISHERLENS_TORCH: pipTorch('pip-cu11', '2.5.1+cu118', '11.8') }).found[0];
  t.is(mismatch(v113, cu, d.majorMinor), 'needs LibTorch 1.13.x, this one is 2.5.1+cu124');
  t.is(mismatch(v25cu, cu, d.majorMinor), null);
  t.is(mismatch(v25cu, cpu, d.majorMinor), 'needs a CUDA 12.4 LibTorch, this one is CPU-only');
  t.is(mismatch(v25cu, cu11, d.majorMinor), 'needs CUDA 12.4, this LibTorch has CUDA 11.8');
  t.is(mismatch({ ...v25cu, platform: 'darwin-arm64' }, cu, d.majorMinor), `built for darwin-arm64, this is ${process.platform}-${process.arch}`);
  // pip torch 1.13 has unversioned libraries: a variant linked against Debian's SONAMEs cannot bind to them
  const pip113 = d.candidates({ FISHERLENS_TORCH: pipTorch('pip-113', '1.13.1+cpu', null) }).found[0];
  t.is(mismatch(v113, pip113, d.majorMinor), `needs libc10.so.1.13, libtorch_cpu.so.1.13, libtorch.so.1.13, not in ${pip113.libDir}`);
});

test('LibTorch libraries open in dependency order whatever order NEEDED lists them in', (t) => {
  t.deepEqual(loadOrder(['libtorch.so.1.13', 'libtorch_cpu.so.1.13', 'libc10.so.1.13']), ['libc10.so.1.13', 'libtorch_cpu.so.1.13', 'libtorch.so.1.13']);
  t.deepEqual(loadOrder(['libtorch.so', 'libtorch_cuda.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libc10.so']),
    ['libc10.so', 'libc10_cuda.so', 'libtorch_cpu.so', 'libtorch_cuda.so', 'libtorch.so']);
});
