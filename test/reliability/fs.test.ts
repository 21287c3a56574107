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

const dir = tmpDir('fs');
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

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

test('an output folder that cannot be written is ERR_IO naming it (a file in the way, a pseudo file system, no permission)', async (t) => {
  const file = victim('in-the-way');
  const outs = [path.join(file, 'out'), '/proc/self/fl-out', '/sys/fl-out'];
  if (process.getuid?.() !== 0) {
    // root writes anywhere: the permission case only means something for other users
    const ro = path.join(dir, 'read-only');
    fs.mkdirSync(ro, { mode: 0o555 });
    outs.push(path.join(ro, 'out'));
  }
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
