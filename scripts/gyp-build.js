'use strict';
// One node-gyp build of the addon, shared by `npm run package` (scripts/package.js, through
// prebuildify) and `npx fisherlens build` (lib/cli/build.ts): the sources are staged into a
// scratch folder with the same relative layout every time (native/, scripts/, binding.gyp and a
// copy of node-addon-api's headers under node_modules/), so the compiler sees identical command
// lines and preprocessed sources wherever the package lives, and ccache (CXX="ccache g++") hits.
// Also reads what a built binary needs (readelf/objdump) for the variant manifest.
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

/** binding.gyp of a checkout (repository root) or of an installed package (scripts/binding.gyp). */
function gypFile(root) {
  for (const f of [path.join(root, 'binding.gyp'), path.join(root, 'scripts', 'binding.gyp')]) {
    if (fs.existsSync(f)) return f;
  }
  throw Object.assign(new Error(`no binding.gyp in ${root} or ${root}/scripts`), { code: 'ERR_IO' });
}

/**
 * Copies the addon's build inputs from the package at root into dir (created). version is the
 * package's version (lib/util/version.ts packageVersion(), its one reader at run time): the staged
 * package.json carries it for binding.gyp, which compiles it in as FL_ADDON_VERSION.
 */
function stageAddon(root, dir, version) {
  if (typeof version !== 'string' || !version) throw Object.assign(new Error('stageAddon: the package version is required'), { code: 'ERR_ARG' });
  fs.mkdirSync(path.join(dir, 'scripts'), { recursive: true });
  fs.cpSync(path.join(root, 'native'), path.join(dir, 'native'), {
    recursive: true, filter: (src) => !src.startsWith(path.join(root, 'native', 'shim')),
  });
  for (const f of ['libtorch.js', 'find-libtorch.js']) fs.copyFileSync(path.join(root, 'scripts', f), path.join(dir, 'scripts', f));
  fs.copyFileSync(gypFile(root), path.join(dir, 'binding.gyp'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'fisherlens', version, private: true }, null, 2));
  const napi = path.dirname(require.resolve('node-addon-api/package.json', { paths: [root] }));
  fs.cpSync(napi, path.join(dir, 'node_modules', 'node-addon-api'), { recursive: true });
}

/** Copies the torch-free shim's sources (native/shim) into dir (created). */
function stageShim(root, dir) {
  fs.cpSync(path.join(root, 'native', 'shim'), dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'fisherlens_shim', version: '0.0.0', private: true }));
}

/** node-gyp arguments that use this Node's own headers when it has them (no download). */
function nodedirArgs() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

function sha256(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function maxVersion(list) {
  const key = (v) => v.split('.').map((n) => n.padStart(6, '0')).join('.');
  return list.length ? list.sort((a, b) => (key(a) < key(b) ? -1 : 1))[list.length - 1] : null;
}

/**
 * What a built binary needs: { needed, runpath, rpath, glibc, glibcxx, cxxabi, sha256, bytes }
 * (glibc/glibcxx/cxxabi: the highest symbol version it references, e.g. "2.34", "3.4.30").
 */
function inspect(file) {
  const dyn = execFileSync('readelf', ['-dW', file]).toString();
  const needed = [...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  const runpath = (/\(RUNPATH\)\s+Library runpath: \[([^\]]*)\]/.exec(dyn) || [])[1] || null;
  const rpath = (/\(RPATH\)\s+Library rpath: \[([^\]]*)\]/.exec(dyn) || [])[1] || null;
  const syms = execFileSync('objdump', ['-T', file], { maxBuffer: 1 << 28 }).toString();
  const versions = (family) => [...new Set([...syms.matchAll(new RegExp(`\\b${family}_([0-9][0-9.]*)`, 'g'))].map((m) => m[1]))];
  return {
    needed, runpath, rpath,
    glibc: maxVersion(versions('GLIBC')), glibcxx: maxVersion(versions('GLIBCXX')), cxxabi: maxVersion(versions('CXXABI')),
    sha256: sha256(file), bytes: fs.statSync(file).size,
  };
}

/**
 * The LibTorch libraries among a binary's NEEDED entries (what the loader must open first), in
 * dependency order (c10, c10_cuda, torch_cpu, torch_cuda, torch): each one's own NEEDED entries
 * are then satisfied by the ones already open, never looked up on the system.
 */
function torchNeeded(needed) {
  const order = ['c10', 'c10_cuda', 'torch_cpu', 'torch_cuda', 'torch'];
  const rank = (n) => { const i = order.indexOf(/^lib([a-z_0-9]+?)\.so/.exec(n)[1]); return i < 0 ? order.length : i; };
  return needed.filter((n) => /^lib(torch|c10)[a-z_]*\.so/.test(n)).sort((a, b) => rank(a) - rank(b));
}

module.exports = { gypFile, stageAddon, stageShim, nodedirArgs, inspect, sha256, torchNeeded };
