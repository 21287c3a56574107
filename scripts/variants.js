'use strict';
// The prebuilt variants FisherLens ships, declared once: scripts/package.js builds them,
// test/package.test.ts installs them, .ci/run and `npm run test:slow` pick theirs by `ci`.
//   id        variant id, torch<major.minor>-<cpu|cu<ver>> of the LibTorch it is built against
//   libtorch  where that LibTorch comes from: 'system' (Debian's libtorch-dev, /usr) or
//             { venv: tag } (scripts/torch-env.sh <tag>: a pip torch)
//   ci        built and tested by .ci/run (otherwise by `npm run package` when its venv exists,
//             and checked by `npm run test:slow`)
//   verified  what has been verified where, written into its manifest entry (a GPU run of
//             scripts/cuda-variant.sh rewrites it for the CUDA variant)
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const VARIANTS = [
  {
    id: 'torch1.13-cpu', libtorch: 'system', ci: true,
    verified: "built against Debian 12's libtorch 1.13 and CI-tested there (.ci/run's torch 1.13 leg: the full test suite " +
      'on the development build of the same sources; this binary: clean-folder install with no compiler, test/package.test.ts)',
  },
  {
    id: 'torch2.13-cpu', libtorch: { venv: '2.13-cpu' }, ci: true,
    verified: 'built against pip torch 2.13.0+cpu and CI-tested there (.ci/run\'s torch 2.13 leg: the full test suite on the ' +
      'development build of the same sources; this binary: clean-folder install with no compiler, test/package.test.ts)',
  },
  {
    id: 'torch2.14-cu130', libtorch: { venv: '2.14-cu130' }, ci: false,
    verified: 'built, loaded and CPU-tested on a machine without a GPU; not yet run on a GPU',
  },
];

/** Root of scripts/torch-env.sh's venvs (the same rule as that script). */
function venvRoot(env = process.env) {
  return env.FISHERLENS_VENVS || path.join(env.XDG_CACHE_HOME || path.join(require('os').homedir(), '.cache'), 'fisherlens', 'venv');
}

/** The python of a finished venv of scripts/torch-env.sh (its stamp written), or null. */
function venvPython(tag, env = process.env) {
  const dir = path.join(venvRoot(env), tag);
  return fs.existsSync(path.join(dir, '.fisherlens-env')) && fs.existsSync(path.join(dir, 'bin', 'python')) ? path.join(dir, 'bin', 'python') : null;
}

/** Makes (or reuses) the venv of tag with scripts/torch-env.sh; returns its python. */
function ensureVenv(tag) {
  return execFileSync('bash', [path.join(__dirname, 'torch-env.sh'), tag], { stdio: ['ignore', 'pipe', 'inherit'] }).toString().trim().split('\n').pop();
}

/**
 * The environment under which scripts/find-libtorch.js finds a variant's LibTorch (and nothing
 * else): FISHERLENS_TORCH set to it. null when its venv does not exist.
 */
function libtorchEnv(v, env = process.env) {
  if (v.libtorch === 'system') return { ...env, FISHERLENS_TORCH: '/usr' };
  const py = venvPython(v.libtorch.venv, env);
  if (!py) return null;
  const torchDir = execFileSync(py, ['-c', "import importlib.util as u; print(u.find_spec('torch').submodule_search_locations[0])"]).toString().trim();
  return { ...env, FISHERLENS_TORCH: torchDir };
}

module.exports = { VARIANTS, venvRoot, venvPython, ensureVenv, libtorchEnv };
