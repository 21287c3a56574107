/**
 * The native layout (docs/architecture.md): N-API glue lives in native/binding/ alone, apart from
 * the mathematics. A file outside native/binding/ must not reach napi.h (or node_api.h, or any
 * binding header) through its #include chain; a file inside it must reach napi.h (a plain helper
 * belongs in native/common/ or beside its capability). Both native builds (CMakeLists.txt's
 * source glob and binding.gyp's folder list) compile every folder that holds sources. Reads the
 * sources only: no addon, no LibTorch.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');
const NATIVE = path.join(ROOT, 'native');
// native/shim: the loader's torch-free shim, a separate plain-C addon over node_api.h
const SKIP = new Set(['shim']);
const NAPI_HEADERS = new Set(['napi.h', 'node_api.h', 'js_native_api.h']);

/** Every .cc / .h under `native` (paths relative to it, '/'-separated), skipping SKIP. */
function sources(native: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(native, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      if (!rel && SKIP.has(name)) continue;
      if (fs.statSync(path.join(native, r)).isDirectory()) walk(r);
      else if (/\.(cc|h)$/.test(name)) out.push(r);
    }
  };
  walk('');
  return out;
}

/** The #include lines of a file (comments stripped first, so a mention in a comment is no include). */
function includes(native: string, rel: string): Array<{ name: string; angle: boolean }> {
  const text = fs.readFileSync(path.join(native, rel), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  return [...text.matchAll(/^\s*#\s*include\s*([<"])([^>"]+)[>"]/gm)].map((m) => ({ name: m[2], angle: m[1] === '<' }));
}

/** A quoted include resolved as the compiler does: the including file's folder first, then native/. */
function resolve(native: string, from: string, name: string): string | null {
  for (const cand of [path.posix.join(path.posix.dirname(from), name), name]) {
    if (fs.existsSync(path.join(native, cand))) return path.posix.normalize(cand);
  }
  return null;
}

/**
 * The chain by which `rel` reaches an N-API header (or, with stopAtBinding, a binding header),
 * e.g. ['attacks.cc', 'binding/tensor.h'] or ['binding/fisher.cc', 'binding/worker.h', '<napi.h>'];
 * null when it reaches none.
 */
function napiChain(native: string, rel: string, stopAtBinding: boolean, seen = new Set<string>()): string[] | null {
  if (seen.has(rel)) return null;
  seen.add(rel);
  for (const inc of includes(native, rel)) {
    if (NAPI_HEADERS.has(path.posix.basename(inc.name))) return [rel, `<${inc.name}>`];
    if (inc.angle) continue;
    const r = resolve(native, rel, inc.name);
    if (r === null) continue; // a LibTorch or system header spelled with quotes
    if (stopAtBinding && r.startsWith('binding/')) return [rel, r];
    const rest = napiChain(native, r, stopAtBinding, seen);
    if (rest) return [rel, ...rest];
  }
  return null;
}

/** The files outside binding/ that reach N-API, each as its include chain. */
function offenders(native: string): string[] {
  return sources(native).filter((f) => !f.startsWith('binding/'))
    .map((f) => napiChain(native, f, true)).filter((c): c is string[] => c !== null).map((c) => c.join(' -> '));
}

test('no file outside native/binding/ includes napi.h, directly or through its includes', (t) => {
  const files = sources(NATIVE);
  // the capabilities' mathematics and the shared headers are all outside native/binding/
  for (const f of ['fisher.cc', 'attacks.cc', 'data.cc', 'gradient.cc', 'metrics.cc', 'train.cc', 'common/op_context.h']) {
    t.true(files.includes(f), `${f} exists`);
  }
  t.deepEqual(offenders(NATIVE), [], 'the mathematics must not see N-API: move the glue to native/binding/');
});

test('every file in native/binding/ is N-API glue (it reaches napi.h)', (t) => {
  const glue = sources(NATIVE).filter((f) => f.startsWith('binding/'));
  t.true(glue.length >= 10, `native/binding/ holds the glue files (found ${glue.length})`);
  t.deepEqual(glue.filter((f) => napiChain(NATIVE, f, false) === null), [],
    'a file without N-API belongs in native/common/ or beside its capability');
});

test('the include check finds napi.h two includes down and ignores a mention in a comment', (t) => {
  // the checks above are only as good as this reader: a made-up tree with one violation of each kind
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-native-layout-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const put = (rel: string, text: string): void => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), text);
  };
  put('binding/glue.h', '#pragma once\n#include <napi.h>\n');
  put('common/helper.h', '#pragma once\n#include "glue_user.h"\n');         // resolved beside it first
  put('common/glue_user.h', '#include "binding/glue.h"\n');
  put('math.cc', '#include "common/helper.h"\n#include <torch/torch.h>\n');  // two includes down
  put('direct.cc', '  #  include <node_api.h>\n');
  put('clean.cc', '// #include <napi.h> is what the glue does\n/* #include "binding/glue.h" */\n#include "common/errors.h"\n');
  put('shim/shim.c.h', '#include <node_api.h>\n');                          // skipped: its own addon
  t.deepEqual(offenders(dir).sort(), [
    'common/glue_user.h -> binding/glue.h',
    'common/helper.h -> common/glue_user.h -> binding/glue.h',
    'direct.cc -> <node_api.h>',
    'math.cc -> common/helper.h -> common/glue_user.h -> binding/glue.h',
  ]);
  t.deepEqual(napiChain(dir, 'math.cc', false), ['math.cc', 'common/helper.h', 'common/glue_user.h', 'binding/glue.h', '<napi.h>']);
  t.is(napiChain(dir, 'clean.cc', false), null);
});

test('CMakeLists.txt and binding.gyp compile every native folder that holds sources', (t) => {
  const dirs = [...new Set(sources(NATIVE).filter((f) => f.endsWith('.cc')).map((f) => path.posix.dirname(f)))].sort();
  t.true(dirs.includes('binding') && dirs.includes('models'), dirs.join(', '));
  const cmake = fs.readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8');
  const glob = /file\(GLOB FL_SOURCES[^)]*\)/.exec(cmake);
  t.truthy(glob, 'CMakeLists.txt has file(GLOB FL_SOURCES ...)');
  const gyp = fs.readFileSync(path.join(ROOT, 'binding.gyp'), 'utf8');
  const list = /for\(const d of \[([^\]]*)\]\)/.exec(gyp);
  t.truthy(list, 'binding.gyp lists its source folders as for(const d of [...])');
  const gypDirs = [...list![1].matchAll(/'([^']+)'/g)].map((m) => m[1]);
  for (const d of dirs) {
    const folder = d === '.' ? 'native' : `native/${d}`;
    t.true(glob![0].includes(`\${CMAKE_SOURCE_DIR}/${folder}/*.cc`), `CMakeLists.txt's FL_SOURCES globs ${folder}/*.cc`);
    t.true(gypDirs.includes(folder), `binding.gyp compiles ${folder}`);
  }
});
