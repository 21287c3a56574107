/**
 * A long evaluation resumes by batch (issue 26): evaluateRobustness with `resumeDir` keeps each
 * finished batch's results in the folder; stopped after k batches (an abort, or a graceful stop at
 * a batch boundary), the same call attacks only the remaining batches and returns exactly the
 * uninterrupted call's result. The run executor passes the run folder's eval-batches/ (tested at
 * the end through `fisherlens run`).
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { evaluateRobustness, NamedAttack } from '../../lib/science/robust';
import { addon } from '../../lib/binding/native';
import { trainedMlp, fashionSubset } from '../helpers/train-fixtures';
import { runExperiment } from '../../lib/experiment/runner';
import { RunDir } from '../../lib/experiment/rundir';

const dirs: string[] = [];
const tmp = () => { const d = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-evalres-'))); dirs.push(d); return d; };
test.after.always(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

// an AutoAttack cascade (its stages seeded per batch) beside a plain attack; 6 batches of 40
const attacks: NamedAttack[] = [
  { kind: 'autoattack', name: 'aa', epsilon: 0.1, version: 'custom', attacks: [{ kind: 'apgd-ce', steps: 10 }, { kind: 'square', steps: 40 }], seed: 4 },
  { kind: 'pgd', name: 'pgd', epsilon: 0.1, stepSize: 0.03, steps: 5, seed: 2 },
];
const BATCH = 40, N = 240;

/** Counts the native AutoAttack calls (one per batch) while `f` runs. */
async function countingCascades<T>(f: () => Promise<T>): Promise<{ value: T; calls: number }> {
  const native = addon() as unknown as { autoAttack: (...a: unknown[]) => Promise<unknown> };
  const real = native.autoAttack;
  let calls = 0;
  native.autoAttack = (...a: unknown[]) => { calls++; return real(...a); };
  try {
    return { value: await f(), calls };
  } finally {
    native.autoAttack = real;
  }
}

for (const how of ['abort', 'graceful'] as const) {
  test.serial(`an evaluation stopped (${how}) after 3 of 6 batches resumes from its folder: only the other 3 are attacked and the result equals an uninterrupted one`, async (t) => {
    const model = await trainedMlp();
    const data = fashionSubset('test', N);
    const full = await evaluateRobustness(model, data, attacks, { batchSize: BATCH });
    // the model breaks some samples and not others: the counts carry information
    t.true(full.attacks[0].robustAccuracy > 0 && full.attacks[0].robustAccuracy < full.accuracy, JSON.stringify(full.attacks[0]));
    const dir = path.join(tmp(), 'eval-batches');
    const stop = new AbortController();
    const cut = evaluateRobustness(model, data, attacks, {
      batchSize: BATCH, resumeDir: dir, resumeKey: 'mlp',
      ...(how === 'abort' ? { signal: stop.signal } : { stopAtBatch: stop.signal }),
      onBatch: (e) => { if (e.done === 3 * BATCH) stop.abort(); },
    });
    await t.throwsAsync(cut, { code: 'ERR_ABORTED' } as never);
    const [key] = fs.readdirSync(dir);
    t.deepEqual(fs.readdirSync(path.join(dir, key)).sort(), ['batch-0.json', 'batch-1.json', 'batch-2.json']);
    const { value: resumed, calls } = await countingCascades(() => evaluateRobustness(model, data, attacks, { batchSize: BATCH, resumeDir: dir, resumeKey: 'mlp' }));
    t.is(calls, 3, 'only batches 4 to 6 were attacked');
    t.deepEqual(resumed, full);
    t.false(fs.existsSync(dir), 'the kept batches are removed once the evaluation is complete');
    model.dispose();
    data.dispose();
  });
}

test.serial('kept batches are reused only for the same attacks, sample count, batch size and model key', async (t) => {
  const model = await trainedMlp();
  const data = fashionSubset('test', 80);
  const dir = path.join(tmp(), 'eval-batches');
  const stop = new AbortController();
  await t.throwsAsync(evaluateRobustness(model, data, attacks, { batchSize: BATCH, resumeDir: dir, resumeKey: 'a', stopAtBatch: stop.signal, onBatch: () => stop.abort() }), { code: 'ERR_ABORTED' } as never);
  const other = await countingCascades(() => evaluateRobustness(model, data, attacks, { batchSize: BATCH, resumeDir: dir, resumeKey: 'b' }));
  t.is(other.calls, 2, 'another model key attacks every batch');
  const same = await countingCascades(() => evaluateRobustness(model, data, attacks, { batchSize: BATCH, resumeDir: dir, resumeKey: 'a' }));
  t.is(same.calls, 1);
  t.deepEqual(same.value, other.value);
  await t.throwsAsync(evaluateRobustness(model, data, attacks, { resumeDir: dir, save: path.join(dir, 'x.npy') }), { code: 'ERR_ARG', message: /resumeDir/ } as never);
  model.dispose();
  data.dispose();
});

test.serial('a run stopped (SIGTERM\'s graceful stop) inside its AutoAttack evaluation resumes it by batch from eval-batches/ in its folder and ends as an uninterrupted run', async (t) => {
  const dir = tmp();
  const cfg = {
    name: 'evalres', seeds: [1],
    defaults: {
      data: { dataset: 'fashion-mnist', trainSize: 200, testSize: 160, probeSize: 20 },
      train: { epochs: 1, batchSize: 50, track: { cckl: false } },
      eval: { batchSize: 40, attacks: [{ name: 'aa', type: 'autoattack', epsilon: 0.1, version: 'custom', attacks: ['apgd-ce'] }], fisher: { samples: 8 }, cckl: { samples: 20, pairs: 10 } },
    },
    runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' } }],
  };
  const { value: ref, calls: refCalls } = await countingCascades(() => runExperiment(cfg as never, { out: path.join(dir, 'ref') }));
  t.is(ref.runs[0].status, 'finished');
  const out = path.join(dir, 'cut');
  const stop = new AbortController();
  const cut = await runExperiment(cfg as never, {
    out, stopAtBatch: stop.signal,
    // the first finished batch of the attacks
    onEvent: (e) => { if (e.type === 'progress' && e.phase === 'eval' && e.step === 'attacks') stop.abort(); },
  });
  t.is(cut.runs[0].status, 'aborted');
  const rd = RunDir.of(out, cut.runs[0].id);
  const keyDir = path.join(rd.dir, 'eval-batches', fs.readdirSync(path.join(rd.dir, 'eval-batches'))[0]);
  t.deepEqual(fs.readdirSync(keyDir), ['batch-0.json']);
  const { value: again, calls } = await countingCascades(() => runExperiment(cfg as never, { out }));
  t.is(again.runs[0].status, 'finished');
  // one cascade call per batch of 40 (4), plus whatever else the run's phases attack (its pictures)
  t.is(calls, refCalls - 1, 'batches 2 to 4 of the evaluation were attacked, batch 1 was not');
  const untimed = (o: object) => Object.fromEntries(Object.entries(o).filter(([k]) => !['seconds', 'samplesPerSec', 'startedAt', 'finishedAt', 'provenance'].includes(k)));
  t.deepEqual(untimed(again.runs[0].summary!), untimed(ref.runs[0].summary!));
  t.false(fs.existsSync(path.join(rd.dir, 'eval-batches')));
});
