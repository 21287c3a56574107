/**
 * Filesystem safety of the run folder contract: symlinks planted in an output folder are never
 * written through, run folders that are symlinks are refused, hostile names never leave `out`,
 * and folders FisherLens cannot write are a clear ERR_IO. The runner runs with the fake executor
 * (test/helpers/fake-science.ts): these cases are about files, not training.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { runExperiment, FisherLensError, ExperimentInput } from '../../lib';
import { executor } from '../helpers/fake-science';
import { tmpDir, tempLitter } from './harness';
import * as os from 'os';
import { cleanupNobody, runAsNobody } from '../helpers/unprivileged';

const dir = tmpDir('fs');
test.after.always(() => { fs.rmSync(dir, { recursive: true, force: true }); cleanupNobody(); });

const config = (name: string, extra: Partial<ExperimentInput> = {}): ExperimentInput => ({
  name,
  runs: [{ model: { arch: 'mlp' }, train: { method: 'natural', epochs: 2 }, data: { dataset: 'fashion-mnist' } }],
  ...extra,
});
const RUN = 'mlp_natural_seed0';

function victim(name: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, 'precious\n');
  return f;
}

test('symlinked experiment.json, metrics.jsonl and error.json are replaced, their targets untouched', async (t) => {
  const out = path.join(dir, 'planted');
  fs.mkdirSync(path.join(out, RUN), { recursive: true });
  const targets = ['experiment.json', `${RUN}/metrics.jsonl`, `${RUN}/error.json`].map((rel, i) => {
    const v = victim(`victim-${i}`);
    fs.symlinkSync(v, path.join(out, rel));
    return { rel, v };
  });
  const r = await runExperiment(config('planted'), { out, executor });
  t.is(r.finished, 1);
  for (const { rel, v } of targets) {
    t.is(fs.readFileSync(v, 'utf8'), 'precious\n', rel);
    const st = fs.lstatSync(path.join(out, rel), { throwIfNoEntry: false });
    t.true(st === undefined || st.isFile(), `${rel} is no longer a link`);
  }
  t.is((JSON.parse(fs.readFileSync(path.join(out, RUN, 'summary.json'), 'utf8')) as { runId: string }).runId, RUN);
  t.deepEqual(tempLitter(out), []);
  // a planted summary.json marks the run finished; one that is not a summary is ERR_FORMAT, nothing written
  const out2 = path.join(dir, 'planted-summary');
  fs.mkdirSync(path.join(out2, RUN), { recursive: true });
  const v = victim('victim-summary');
  fs.symlinkSync(v, path.join(out2, RUN, 'summary.json'));
  const e = await t.throwsAsync(runExperiment(config('planted'), { out: out2, executor }));
  t.is((e as FisherLensError).code, 'ERR_FORMAT');
  t.is(fs.readFileSync(v, 'utf8'), 'precious\n');
});

test('a run folder that is a symlink out of `out` is refused before anything is written', async (t) => {
  const out = path.join(dir, 'linked-run');
  const elsewhere = path.join(dir, 'elsewhere');
  fs.mkdirSync(out);
  fs.mkdirSync(elsewhere);
  fs.symlinkSync(elsewhere, path.join(out, RUN));
  const e = await t.throwsAsync(runExperiment(config('linked'), { out, executor }));
  t.is((e as FisherLensError).code, 'ERR_IO');
  t.deepEqual(fs.readdirSync(elsewhere), []);
  t.false(fs.existsSync(path.join(out, 'experiment.json')));
});

test('hostile names: path separators, . and .. in config, entry, model and attack names are ERR_CONFIG', async (t) => {
  const cases: ExperimentInput[] = [
    config('../escape'),
    config('..'),
    config('.'),
    config('a/b'),
    { ...config('ok'), runs: [{ name: '..', model: { arch: 'mlp' }, train: { method: 'natural' }, data: { dataset: 'fashion-mnist' } }] },
    { ...config('ok'), runs: [{ name: 'x/../../y', model: { arch: 'mlp' }, train: { method: 'natural' }, data: { dataset: 'fashion-mnist' } }] },
    { ...config('ok'), runs: [{ model: { arch: 'mlp', name: '../m' }, train: { method: 'natural' }, data: { dataset: 'fashion-mnist' } }] },
    { ...config('ok'), runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' }, data: { dataset: 'fashion-mnist' }, eval: { attacks: [{ type: 'pgd', epsilon: 0.1, name: '..' }] } }] },
  ];
  const out = path.join(dir, 'names');
  for (const c of cases) {
    const e = await t.throwsAsync(runExperiment(c, { out, executor }));
    t.is((e as FisherLensError).code, 'ERR_CONFIG', JSON.stringify(c).slice(0, 120));
  }
  t.false(fs.existsSync(out));
});

// Root writes through any permission bit, and CI runs as root: there this case runs as `nobody`
// (setpriv, test/helpers/unprivileged.ts) in a child reading a tree that user can read; as any
// other user it runs in this process. Either way the folder is one the running user cannot write.
test('a folder without write permission is ERR_IO naming it, as an unprivileged user (nobody via setpriv when root)', async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-rel-perm-'));
  fs.chmodSync(base, 0o755);  // nobody must reach the folder to be refused by it
  const ro = path.join(base, 'read-only');
  fs.mkdirSync(ro, { mode: 0o555 });
  fs.chmodSync(ro, 0o555);  // whatever the umask
  const out = path.join(ro, 'out');
  try {
    let got: { code?: string; message?: string; uid?: number };
    if (process.getuid?.() !== 0) {
      const e = await t.throwsAsync(runExperiment(config('ro'), { out, executor }));
      got = { code: (e as FisherLensError).code, message: (e as Error).message, uid: process.getuid?.() };
    } else {
      const script = `const { runExperiment } = require(ROOT + '/dist/lib/index.js');
const { executor } = require(ROOT + '/dist/test/helpers/fake-science.js');
runExperiment(${JSON.stringify(config('ro'))}, { out: ${JSON.stringify(out)}, executor }).then(
  () => console.log(JSON.stringify({ uid: process.getuid() })),
  (e) => console.log(JSON.stringify({ code: e.code, message: e.message, uid: process.getuid() })));`;
      const r = runAsNobody(script, base);
      if (typeof r === 'string') { t.fail(`cannot run as an unprivileged user: ${r}`); return; }
      t.is(r.status, 0, r.stderr);
      got = JSON.parse(r.stdout.trim().split('\n').pop()!);
    }
    t.not(got.uid, 0, 'the check ran unprivileged');
    t.is(got.code, 'ERR_IO', got.message);
    t.true(got.message?.includes(out), got.message);
    t.false(fs.existsSync(out));
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
});

test('an output folder that cannot be written is ERR_IO naming it (a file in the way, a pseudo file system)', async (t) => {
  const file = victim('in-the-way');
  const outs = [path.join(file, 'out'), '/proc/self/fl-out', '/sys/fl-out'];
  for (const out of outs) {
    const e = await t.throwsAsync(runExperiment(config('ro'), { out, executor }));
    t.is((e as FisherLensError).code, 'ERR_IO', out);
    t.true((e as Error).message.includes(out), (e as Error).message);
  }
  t.is(fs.readFileSync(file, 'utf8'), 'precious\n');
  // /dev/shm is a real (tmpfs) file system under /dev: allowed
  if (fs.existsSync('/dev/shm')) {
    const shm = fs.mkdtempSync('/dev/shm/fl-rel-');
    try {
      const r = await runExperiment(config('shm'), { out: path.join(shm, 'out'), executor });
      t.is(r.finished, 1);
    } finally {
      fs.rmSync(shm, { recursive: true, force: true });
    }
  }
});
