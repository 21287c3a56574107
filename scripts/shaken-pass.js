#!/usr/bin/env node
// The shaken pass (issue 22): runs the numerically sensitive test files (test/numeric-files.json)
// a second time with other kernels than the ones this machine picks, so rounding differs as it
// does between CPUs, and a test that only held on one CPU's rounding fails here instead of on a
// newcomer's machine:
//   - OpenBLAS: another kernel family (OPENBLAS_CORETYPE), always an older one than the family in
//     use (an older family runs on a newer CPU; a newer one can crash), read from the loaded
//     library's openblas_get_corename(), which honours an OPENBLAS_CORETYPE the environment sets;
//   - ATen: ATEN_CPU_CAPABILITY one level below the detected one (avx512 → avx2 → default), read
//     from LibTorch's config (torch.__config__.show(), the same libtorch_cpu as the addon's);
//   - oneDNN (LibTorch's convolutions): ONEDNN_MAX_CPU_ISA one level below the ISA it reports
//     (AVX-512 → AVX2 → AVX → SSE4.1), read from ONEDNN_VERBOSE of a convolution in the addon;
//   - one thread: FISHERLENS_THREADS=1 (the addon's intra-op threads, native/common/process.cc),
//     OMP_NUM_THREADS=1 (OpenMP, oneDNN), OPENBLAS_NUM_THREADS=1 (OpenBLAS's own pool).
// Each knob is checked after setting it (the library reports the new family, ISA, thread count);
// a knob that did not take is a failure. A fresh FISHERLENS_CACHE keeps the first pass's stored
// autotune choices out and this pass's (made on one thread) out of the user's cache.
//
// Run after `npm test` (or `npm run build`): it runs the compiled files under dist/test. Prints
// its choices first, the files' TAP output, then one line "shaken pass: N passed, N failed (T s)"
// that .ci/run adds to its totals. Exits non-zero on any failure.
//   node scripts/shaken-pass.js [--dry-run]   (--dry-run: print the choices, run nothing)
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');

const root = path.join(__dirname, '..');
const PY = process.env.FISHERLENS_PYTHON || '/usr/bin/python3';
const started = Date.now();

function finish(pass, fail, why) {
  if (why) console.log(`shaken pass: ${why}`);
  console.log(`shaken pass: ${pass} passed, ${fail} failed (${Math.round((Date.now() - started) / 1000)} s)`);
  process.exit(fail === 0 ? 0 : 1);
}

// What the addon runs on in a process with environment `env`: the BLAS file it mapped, its
// threads, the ISA oneDNN reports for a convolution (null: no oneDNN line, e.g. not used).
const PROBE = `
const { Model, Tensor, backend } = require(${JSON.stringify(root)});
(async () => {
  const b = backend();
  const m = Model.create({ arch: 'small-cnn' });
  const z = await m.forward(Tensor.from(new Float32Array(4 * 784).fill(0.5), [4, 1, 28, 28]));
  z.dispose(); m.dispose();
  process.stdout.write('\\nPROBE ' + JSON.stringify({ blas: b.blas, threads: b.threads, torch: b.torchVersion, libtorch: b.libtorch.path }) + '\\n');
})().catch((e) => { console.error(e); process.exit(1); });`;

function probeAddon(env) {
  const r = spawnSync(process.execPath, ['-e', PROBE], { encoding: 'utf8', env: { ...env, ONEDNN_VERBOSE: '1', DNNL_VERBOSE: '1' }, cwd: root });
  const line = (r.stdout || '').split('\n').find((l) => l.startsWith('PROBE '));
  if (r.status !== 0 || !line) throw new Error(`the addon probe failed (${r.status}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
  const isa = /(?:onednn|dnnl)_verbose,info,cpu,isa:([^\n]*)/.exec(r.stdout);
  return { ...JSON.parse(line.slice(6)), dnnlIsa: isa ? isa[1].trim() : null };
}

// OpenBLAS's kernel family in the library the addon mapped (null: that BLAS is not OpenBLAS)
function openblasCore(blas, env) {
  const code = 'import ctypes, sys\nl = ctypes.CDLL(sys.argv[1])\n' +
    'f = getattr(l, "openblas_get_corename", None)\nif f is None: print("none"); sys.exit(0)\n' +
    'f.restype = ctypes.c_char_p\nc = l.openblas_get_config; c.restype = ctypes.c_char_p\n' +
    'print(f().decode()); print(c().decode())';
  const r = spawnSync(PY, ['-c', code, blas], { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`${PY} could not load ${blas}: ${(r.stderr || r.error || '').toString().trim()}`);
  const [core, config] = r.stdout.trim().split('\n');
  return core === 'none' ? null : { core, config };
}

// ATen's CPU capability as LibTorch reports it ('AVX512', 'AVX2', 'NO AVX' ...), and the folder
// of the libtorch_cpu that Python's torch mapped (to say whether it is the addon's)
function atenCapability(env) {
  const code = 'import re, torch\nm = re.search(r"CPU capability usage: ([^\\n]+)", torch.__config__.show())\n' +
    'print(m.group(1).strip() if m else "unknown")\n' +
    'print(next((l.split()[-1] for l in open("/proc/self/maps") if "libtorch_cpu" in l), "?"))';
  const r = spawnSync(PY, ['-c', code], { encoding: 'utf8', env });
  if (r.status !== 0) return { level: 'unknown', lib: `? (${PY}: ${(r.stderr || '').trim().split('\n').pop()})` };
  const [level, lib] = r.stdout.trim().split('\n');
  return { level, lib };
}

// An older OpenBLAS family than `core` with other kernels (Zen runs Haswell's kernels: Sandybridge)
function olderOpenblas(core, cpuFlags) {
  const c = core.toLowerCase();
  if (['sapphirerapids', 'cooperlake', 'skylakex'].includes(c)) return 'Haswell';
  if (['haswell', 'zen'].includes(c)) return 'Sandybridge';
  if (['sandybridge', 'bulldozer', 'piledriver', 'steamroller', 'excavator'].includes(c)) return 'Nehalem';
  if (['nehalem', 'core2', 'penryn', 'dunnington', 'barcelona', 'atom', 'nano', 'opteron', 'opteron_sse3'].includes(c)) return 'Prescott';
  if (c === 'prescott' && cpuFlags.includes('ssse3')) return 'Core2';  // every x86-64 CPU LibTorch runs on has SSSE3
  return null;
}

function lowerAten(level) {
  const l = level.toUpperCase();
  if (l.startsWith('AVX512')) return 'avx2';
  if (l === 'AVX2') return 'default';
  if (l === 'NO AVX' || l === 'DEFAULT') return null;
  return 'default';  // not read: the lowest level is below whatever was detected
}

function lowerDnnl(isa) {
  if (!isa) return null;
  if (/AVX-?512/i.test(isa)) return 'AVX2';
  if (/AVX2/i.test(isa)) return 'AVX';
  if (/AVX/i.test(isa)) return 'SSE41';
  return null;
}

function main() {
  const listFile = path.join(root, 'test', 'numeric-files.json');
  const list = JSON.parse(fs.readFileSync(listFile, 'utf8')).files;
  const files = list.map((f) => path.join('dist', 'test', f.replace(/\.ts$/, '.js')));
  const missing = files.filter((f) => !fs.existsSync(path.join(root, f)));
  if (missing.length > 0) return finish(0, 1, `not built: ${missing.join(', ')} (run npm test or npm run build first)`);

  const base = { ...process.env };
  const cpuFlags = (() => { try { return /^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))[1].split(' '); } catch { return []; } })();
  const before = probeAddon(base);
  const blas = openblasCore(before.blas, base);
  const aten = atenCapability(base);

  const env = { ...base, FISHERLENS_THREADS: '1', OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' };
  const chosen = { openblas: blas ? olderOpenblas(blas.core, cpuFlags) : null, aten: lowerAten(aten.level), dnnl: lowerDnnl(before.dnnlIsa) };
  if (chosen.openblas) env.OPENBLAS_CORETYPE = chosen.openblas;
  if (chosen.aten) env.ATEN_CPU_CAPABILITY = chosen.aten;
  if (chosen.dnnl) { env.ONEDNN_MAX_CPU_ISA = chosen.dnnl; env.DNNL_MAX_CPU_ISA = chosen.dnnl; }
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-shaken-cache-'));
  process.on('exit', () => fs.rmSync(cache, { recursive: true, force: true }));
  env.FISHERLENS_CACHE = cache;

  // what the libraries report under the new settings
  const after = probeAddon(env);
  const blasAfter = blas ? openblasCore(after.blas, env) : null;
  const atenAfter = atenCapability(env);

  console.log(`shaken pass: CPU ${(/^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8')) || [])[1] || os.arch()}, LibTorch ${before.torch} (${before.libtorch})`);
  console.log(`  OpenBLAS (${blas ? blas.config : `not OpenBLAS: ${before.blas}`})`);
  console.log(`    kernel family  ${blas ? blas.core : '-'}${base.OPENBLAS_CORETYPE ? ` (OPENBLAS_CORETYPE=${base.OPENBLAS_CORETYPE} set by the environment)` : ' (detected)'} → ` +
    `${chosen.openblas ? `OPENBLAS_CORETYPE=${chosen.openblas}, reports ${blasAfter.core}` : 'unchanged (no older family known)'}`);
  console.log(`  ATen CPU capability  ${aten.level} (libtorch_cpu: ${aten.lib}) → ${chosen.aten ? `ATEN_CPU_CAPABILITY=${chosen.aten}, reports ${atenAfter.level}` : 'unchanged (already the lowest)'}`);
  console.log(`  oneDNN ISA  ${before.dnnlIsa ?? 'not reported'} → ${chosen.dnnl ? `ONEDNN_MAX_CPU_ISA=${chosen.dnnl}, reports ${after.dnnlIsa}` : 'unchanged'}`);
  console.log(`  threads  ${before.threads} → ${after.threads} (FISHERLENS_THREADS=1, OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1)`);
  console.log(`  files (test/numeric-files.json): ${list.join(' ')}`);

  const wrong = [];
  if (chosen.openblas && blasAfter.core.toLowerCase() !== chosen.openblas.toLowerCase()) wrong.push(`OpenBLAS reports ${blasAfter.core}, not ${chosen.openblas}`);
  const atenWant = { avx2: 'AVX2', default: 'NO AVX' }[chosen.aten];
  if (chosen.aten && aten.level !== 'unknown' && atenAfter.level !== atenWant) wrong.push(`ATen reports ${atenAfter.level}, not ${atenWant}`);
  if (chosen.dnnl && after.dnnlIsa && after.dnnlIsa === before.dnnlIsa) wrong.push(`oneDNN still reports ${after.dnnlIsa}`);
  if (after.threads !== 1) wrong.push(`the addon runs ${after.threads} threads, not 1`);
  if (wrong.length > 0) return finish(0, 1, `a setting did not take: ${wrong.join('; ')}`);
  if (process.argv.includes('--dry-run')) return finish(0, 0, 'dry run: no files run');

  const ava = path.join(root, 'node_modules', '.bin', 'ava');
  const child = spawn(ava, ['--tap', ...files], { cwd: root, env, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; process.stdout.write(d); });
  child.on('close', (code) => {
    const count = (k) => { const m = [...out.matchAll(new RegExp(`^# ${k} (\\d+)$`, 'gm'))].pop(); return m ? Number(m[1]) : 0; };
    const pass = count('pass');
    let fail = count('fail');
    if (code !== 0 && fail === 0) fail = 1;
    finish(pass, fail);
  });
}

try {
  main();
} catch (e) {
  finish(0, 1, `could not set up: ${e.message}`);
}
