/**
 * The tuning store (lib/science/tuning-store.ts) is a cache: it shrugs off what a cache file can
 * suffer (absent, unreadable, half written, not ours, a read-only folder) and nothing else. A
 * TypeError is a bug and must reach the caller, not be swallowed as "no choices stored".
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { Model, setGradientEngine } from '../lib';
import { autotuneFile, readTuning, withGradientChoices, writeTuning } from '../lib/science/tuning-store';
import { restoreEnv, useTempCache } from './helpers/env';

/** Makes fs.readFileSync throw `err` for the autotune file for the rest of test t (the store reads through the live fs binding). */
function failReads(t: { teardown(fn: () => void): void }, err: Error): void {
  // the module object itself (the namespace import above only has getters onto it)
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require('fs') as { readFileSync: (p: fs.PathOrFileDescriptor, o?: unknown) => unknown };
  const real = mod.readFileSync;
  const file = autotuneFile();
  mod.readFileSync = (p, o) => {
    if (p === file) throw err;
    return real(p, o);
  };
  t.teardown(() => { mod.readFileSync = real; });
}

function storing(t: { teardown(fn: () => void): void }): void {
  const saved = process.env.FISHERLENS_AUTOTUNE_STORE;
  delete process.env.FISHERLENS_AUTOTUNE_STORE;
  t.teardown(() => restoreEnv('FISHERLENS_AUTOTUNE_STORE', saved));
}

// serial: these tests change process.env and fs.readFileSync, which every test of this process shares
test.serial('readTuning: an absent, damaged or foreign file reads as no entries', (t) => {
  useTempCache(t, 'fl-tuning-');
  const file = autotuneFile();
  t.deepEqual(readTuning(), {}, 'absent (ENOENT)');
  for (const text of ['{"version": 1, "entr', 'null', '[1, 2]', '{"version": 2, "entries": {"a": 1}}', '{"version": 1, "entries": null}']) {
    fs.writeFileSync(file, text);
    t.deepEqual(readTuning(), {}, text);
  }
  fs.writeFileSync(file, '{"version": 1, "entries": {"a": 1}}');
  t.deepEqual(readTuning(), { a: 1 }, 'a well-formed file reads back');
});

test.serial('readTuning rethrows a TypeError instead of reading it as an empty store', (t) => {
  useTempCache(t, 'fl-tuning-');
  failReads(t, new TypeError('a bug in the reader'));
  t.throws(() => readTuning(), { instanceOf: TypeError, message: 'a bug in the reader' });
});

test.serial('readTuning reads a permission error (a system error with errno) as no entries', (t) => {
  useTempCache(t, 'fl-tuning-');
  failReads(t, Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES', errno: -13, syscall: 'open' }));
  t.deepEqual(readTuning(), {});
});

test.serial('writeTuning: a cache folder that cannot be written keeps the choices in-process, without an error', (t) => {
  const dir = useTempCache(t, 'fl-tuning-');
  const blocker = path.join(dir, 'a-file');
  fs.writeFileSync(blocker, 'not a folder');
  process.env.FISHERLENS_CACHE = path.join(blocker, 'cache');  // restored by useTempCache's teardown
  t.notThrows(() => writeTuning({ k: { measuredAt: '2024-01-01T00:00:00Z' } }));
  t.false(fs.existsSync(path.join(blocker, 'cache')));
});

test.serial('writeTuning drops entries whose key is not ours (bad JSON, a non-string archive path) instead of failing on them', (t) => {
  useTempCache(t, 'fl-tuning-');
  const file = autotuneFile();
  const good = JSON.stringify([JSON.stringify({ arch: 'mlp' }), 'op', ['cpu']]);
  const entries = {
    'not json': { measuredAt: 'x' },
    [JSON.stringify(['[1, 2, 3]', 'op', []])]: { measuredAt: 'x' },  // archive id whose path is a number
    [JSON.stringify([42, 'op', []])]: { measuredAt: 'x' },  // id not a string
  };
  fs.writeFileSync(file, JSON.stringify({ version: 1, entries }));
  writeTuning({ [good]: { measuredAt: '2024-01-01T00:00:00Z' } });
  t.deepEqual(Object.keys(readTuning()), [good]);
});

test.serial('withGradientChoices: a TypeError inside the store reaches the caller; a missing store file does not', async (t) => {
  useTempCache(t, 'fl-tuning-');
  storing(t);
  setGradientEngine('auto');  // the store is read only under 'auto'
  const model = Model.create({ arch: 'mlp', inChannels: 1, inputSize: 4, numClasses: 3, hidden: [5] });
  t.teardown(() => model.dispose());
  t.is(await withGradientChoices(model, async () => 7), 7, 'absent file: the op runs and its result stands');
  const other = Model.create({ arch: 'mlp', inChannels: 1, inputSize: 4, numClasses: 3, hidden: [6] });
  t.teardown(() => other.dispose());
  failReads(t, new TypeError('a bug in the reader'));
  let ran = false;
  await t.throwsAsync(withGradientChoices(other, async () => { ran = true; return 7; }), { instanceOf: TypeError, message: 'a bug in the reader' });
  t.false(ran, 'the bug surfaces before the op, not hidden behind it');
});
