/**
 * Per-op options declared once (lib/science/options.ts): one parser, the attack capability table on the
 * TypeScript side, CLI help and config validation derived from the declaration and working
 * without LibTorch, and the native side's strict reader (no defaults in C++).
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { ATTACK_KINDS, ATTACK_OPTIONS, ATTACK_TABLE, FISHER_OPTIONS, FISHER_SPEED_OPTIONS, NORMS, optimizerOptions, parseAttackOptions } from '../lib/science/options';
import { parseOptions } from '../lib/util/schema';
import { Model, Tensor, fisherPower, fisherDataset, attack, FisherLensError, ProgressEvent, StepProgress, BatchProgress } from '../lib';
import { modelHandle } from '../lib/science/model';
import { addon, addonPath, NativeModel, NativeOptimizer, NativeTensor } from '../lib/binding/native';
import { ROOT } from './fisher-fixtures';
import { startRedis, haveRedis } from './helpers/redis';

const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-options-'));
// a file that cannot load as an addon: any attempt to load LibTorch through it is ERR_LOAD
const BOGUS = path.join(tmp, 'not-an-addon.node');
fs.writeFileSync(BOGUS, 'not an ELF file\n');
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Runs node with FISHERLENS_ADDON pointing at the bogus file (so nothing native can load). */
function noTorch(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 60_000, cwd: tmp, env: { ...process.env, FISHERLENS_ADDON: BOGUS } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('a wrong enum value is ERR_ARG naming the option and the allowed values of the one declaration', async (t) => {
  const e = t.throws(() => parseAttackOptions({ kind: 'pgd', norm: 'l3' }), { instanceOf: FisherLensError });
  t.is(e?.code, 'ERR_ARG');
  t.is(e?.message, `attack option 'norm': expected one of ${NORMS.join(', ')}, got 'l3'`);
  const k = t.throws(() => parseAttackOptions({ kind: 'pgd-20' }), { instanceOf: FisherLensError });
  t.regex(k?.message ?? '', new RegExp(`option 'kind': expected one of ${ATTACK_KINDS.join(', ')}, got 'pgd-20'`));
  // ranges, integers and types, each naming the option
  t.regex(t.throws(() => parseAttackOptions({ kind: 'fab', beta: 1 }))?.message ?? '', /option 'beta': expected a finite number in \(0, 1\), got 1$/);
  t.regex(t.throws(() => parseAttackOptions({ kind: 'pgd', steps: 2.5 }))?.message ?? '', /option 'steps': expected an integer >= 0, got 2.5$/);
  t.regex(t.throws(() => parseOptions('fisher', FISHER_SPEED_OPTIONS, { streams: 65 }))?.message ?? '', /option 'streams': expected an integer in \[0, 64\], got 65$/);
  t.regex(t.throws(() => parseOptions('fisher power', FISHER_OPTIONS.power, { tol: '1e-6' }))?.message ?? '', /option 'tol': expected a finite number >= 0, got '1e-6'$/);
  // the public wrapper refuses before any native work (rejects, the same error)
  await t.throwsAsync(attack(undefined as unknown as Model, undefined as unknown as Tensor, undefined as unknown as Tensor, { norm: 'l3' as never }),
    { code: 'ERR_ARG', message: /expected one of linf, l2/ } as never);
});

test('the parser fills every declared default, and a kind\'s own defaults from its table row', (t) => {
  const pgd = parseAttackOptions({});
  for (const [k, d] of Object.entries(ATTACK_OPTIONS)) t.is(pgd[k], d.default, k);
  const cwl2 = parseAttackOptions({ kind: 'cw-l2' });
  t.is(cwl2.norm, 'l2');
  t.is(cwl2.epsilon, Infinity);
  t.is(cwl2.steps, ATTACK_TABLE.find((a) => a.kind === 'cw-l2')!.defaultSteps);
  t.is(parseAttackOptions({ kind: 'square' }).steps, 5000);
  // given values win over defaults, and the parser never invents keys outside the declaration
  const p = parseAttackOptions({ kind: 'apgd-t', targets: 3, steps: 7, name: 'x', signal: 1 } as never);
  t.like(p, { kind: 'apgd-t', targets: 3, steps: 7 });
  t.deepEqual(Object.keys(p).sort(), Object.keys(ATTACK_OPTIONS).sort());
});

test('help, the capability table and config validation need no LibTorch (FISHERLENS_ADDON points at a file that cannot load)', (t) => {
  // the table and option errors in a process where loading the addon would fail
  const script = `
    const fl = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'index.js'))});
    const native = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib', 'binding', 'native.js'))});
    let err = null;
    try { fl.parseAttackOptions({ kind: 'apgd-t', targeted: true }); } catch (e) { err = e.code + ': ' + e.message; }
    console.log(JSON.stringify({ table: fl.attackKinds(), err, loaded: native.addonPath(),
      nodeFiles: Object.keys(require.cache).filter((f) => f.endsWith('.node')) }));`;
  const r = noTorch(['-e', script]);
  t.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  t.deepEqual(out.table.map((a: { kind: string }) => a.kind), [...ATTACK_KINDS]);
  t.like(out.table.find((a: { kind: string }) => a.kind === 'apgd-t'), { targeted: false, internalTargets: true, minClasses: 4, defaultSteps: 100 });
  t.regex(out.err, /^ERR_ARG: attack option 'targeted': expected false for apgd-t \(it is an untargeted attack that tries target classes internally/);
  t.is(out.loaded, '');
  t.deepEqual(out.nodeFiles, []);

  // CLI help shows the declared defaults and allowed values
  const help = noTorch([CLI, 'attack', '--help']);
  t.is(help.status, 0, help.stderr);
  const flat = help.stdout.replace(/\s+/g, ' ');
  t.true(flat.includes(`default ${ATTACK_OPTIONS.stepSize.default}`), flat);
  t.true(flat.includes(`linf | l2`), flat);
  t.true(flat.includes(`default ${ATTACK_OPTIONS.kappa.default}`), flat);
  // each kind's default step count comes from its table row
  t.true(flat.includes(`${ATTACK_TABLE.find((a) => a.kind === 'square')!.defaultSteps}: square`), flat);
  const fh = noTorch([CLI, 'fisher', '--help']);
  t.is(fh.status, 0, fh.stderr);
  t.true(fh.stdout.replace(/\s+/g, ' ').includes(`(default: "${FISHER_OPTIONS.power.maxIter.default}")`), fh.stdout);
  for (const cmd of ['train', 'run', 'status', 'worker', 'cckl', 'eval']) {
    const h = noTorch([CLI, cmd, '--help']);
    t.is(h.status, 0, `${cmd} --help: ${h.stderr}`);
  }

  // config validation (dry run) without LibTorch: a valid config plans its runs, a bad enum names the allowed values
  const good = noTorch([CLI, 'run', path.join(ROOT, 'configs', 'demo.yaml'), '--dry-run', '--json', '--out', path.join(tmp, 'runs')]);
  t.is(good.status, 0, good.stderr);
  t.is(JSON.parse(good.stdout).runs.length, 6);
  const bad = path.join(tmp, 'bad.yaml');
  fs.writeFileSync(bad, fs.readFileSync(path.join(ROOT, 'configs', 'demo.yaml'), 'utf8').replace('{ name: cw, type: cw, epsilon: 0.1,', '{ name: cw, type: cw, norm: l3, epsilon: 0.1,'));
  const b = noTorch([CLI, 'run', bad, '--dry-run', '--out', path.join(tmp, 'runs')]);
  t.is(b.status, 1);
  t.regex(b.stderr, /ERR_CONFIG: .*norm: expected one of linf \| l2, got 'l3'/);
  t.notRegex(b.stderr, /ERR_LOAD/);
  // what an attack supports (ATTACK_TABLE) is checked when the config is validated, not when a run reaches the attack
  const unsupported = path.join(tmp, 'unsupported.yaml');
  fs.writeFileSync(unsupported, fs.readFileSync(path.join(ROOT, 'configs', 'demo.yaml'), 'utf8')
    .replace('{ name: cw, type: cw, epsilon: 0.1, stepSize: 0.02, steps: 10 }', '{ name: apgd, type: apgd-ce, epsilon: 0.1, stepSize: 0.02, steps: 10 }')
    .replace('{ type: apgd-t, targets: 3, steps: 10 }', '{ type: apgd-ce, targets: 3, steps: 10 }'));
  const u = noTorch([CLI, 'run', unsupported, '--dry-run', '--out', path.join(tmp, 'runs')]);
  t.is(u.status, 1);
  t.regex(u.stderr, /ERR_CONFIG: .*attack option 'stepSize': expected none for apgd-ce \(APGD starts at 2ε and adapts it\), got 0.02/);
  t.regex(u.stderr, /attack option 'targets': expected none for apgd-ce \(apgd-t and fab-t take it\), got 3/);
  t.notRegex(u.stderr, /ERR_LOAD/);
});

test('the native side reads complete options strictly: a missing key is ERR_INTERNAL naming it, a wrong type ERR_ARG', async (t) => {
  const m = Model.create({ arch: 'mlp', inputSize: 4, hidden: [8] });
  const x = Tensor.from(Float32Array.from({ length: 48 }, (_, i) => ((i * 7) % 13) / 13), [3, 1, 4, 4]);
  const full = { tol: 1e-6, maxIter: 100, channelsLast: false, streams: 1, autograd: false, classesPerPass: 1 };
  const { autograd: _a, ...missing } = full;
  const e = await t.throwsAsync(async () => addon().fisherPower(modelHandle(m), x.native, missing)) as unknown as { code: string; message: string };
  t.is(e.code, 'ERR_INTERNAL');
  t.regex(e.message, /option 'autograd' missing/);
  const w = await t.throwsAsync(async () => addon().fisherPower(modelHandle(m), x.native, { ...full, maxIter: 2.5 })) as unknown as { code: string; message: string };
  t.is(w.code, 'ERR_ARG');
  t.regex(w.message, /option 'maxIter': expected an integer/);
  // booleans cross as booleans: `converged` arrives as a Uint8Array of 0/1, the wrapper gives boolean[]
  const raw = await addon().fisherPower(modelHandle(m), x.native, { ...full, maxIter: 3 });
  t.true(raw.converged instanceof Uint8Array);
  const r = await fisherPower(m, x, { maxIter: 3 });
  t.deepEqual(r.converged, Array.from(raw.converged as Uint8Array, (v) => v === 1));
  t.true(r.converged.every((c) => typeof c === 'boolean'));
  // a sample that stopped before the cap met the tolerance
  r.converged.forEach((c, i) => { if (r.iterations[i] < 3) t.true(c, `sample ${i}`); });
  r.eigvec.dispose();
  t.not(addonPath(), '');
  x.dispose();
  m.dispose();
});

test('handles are branded: a model or a plain object where a tensor or optimiser handle goes is a type error, and ERR_ARG at run time', async (t) => {
  const m = Model.create({ arch: 'mlp', inputSize: 4, hidden: [8] });
  // compile-time assertions: tsc fails on an @ts-expect-error that has no error under it, so
  // these lines prove the brands keep the kinds apart (never called)
  const typeChecks = (): void => {
    // @ts-expect-error a model handle is not a tensor handle
    void addon().tensorTo(m.native, 'cpu');
    // @ts-expect-error any object is not an optimiser handle (it was `object` before the brand)
    const fake: NativeOptimizer = {};
    // @ts-expect-error a tensor handle is not an optimiser handle
    const wrong: NativeOptimizer = Tensor.from(new Float32Array(1), [1]).native;
    void fake; void wrong;
  };
  void typeChecks;
  // run time: the addon refuses the wrong kind with ERR_ARG, as the types would have
  const e = await t.throwsAsync(async () => addon().tensorTo(modelHandle(m) as unknown as NativeTensor, 'cpu')) as unknown as { code: string };
  t.is(e.code, 'ERR_ARG');
  const opt = await addon().createOptimizer(modelHandle(m), optimizerOptions({}));
  const e2 = await t.throwsAsync(async () => addon().tensorTo(opt as unknown as NativeTensor, 'cpu')) as unknown as { code: string };
  t.is(e2.code, 'ERR_ARG');
  m.dispose();
});

// spawnSync would block the event loop the test's own redis-server answers on: run the CLI asynchronously
function noTorchAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { cwd: tmp, env: { ...process.env, FISHERLENS_ADDON: BOGUS } });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

(haveRedis() ? test : test.skip)('fisherlens status reads a queue without LibTorch', async (t) => {
  const redis = await startRedis();
  try {
    const r = await noTorchAsync([CLI, 'status', '--queue', redis.url, '--json']);
    t.is(r.status, 0, r.stderr);
    t.deepEqual(JSON.parse(r.stdout), { runs: [] });
    t.notRegex(r.stderr, /ERR_LOAD/);
  } finally {
    await redis.stop();
  }
});

test('progress events are one discriminated union: native steps are `step`, dataset loops `batch`', async (t) => {
  const m = Model.create({ arch: 'mlp', inputSize: 4, hidden: [8] });
  const x = Tensor.from(Float32Array.from({ length: 80 }, (_, i) => ((i * 5) % 11) / 11), [5, 1, 4, 4]);
  const events: ProgressEvent[] = [];
  const r = await fisherPower(m, x, { tol: 0, maxIter: 4, onProgress: (e) => events.push(e) });
  r.eigvec.dispose();
  const d = await fisherDataset(m, x, { method: 'exact', batchSize: 2, onProgress: (e) => events.push(e) });
  // progress of native ops travels separately from the result: let the queued ones arrive
  await new Promise((res) => setTimeout(res, 50));
  const steps = events.filter((e): e is StepProgress => e.type === 'step');
  const batches = events.filter((e): e is BatchProgress => e.type === 'batch');
  t.is(steps.length + batches.length, events.length, JSON.stringify(events));
  t.true(steps.length > 0 && steps.every((e) => e.method === 'power' && e.steps === 4 && e.step <= e.steps), JSON.stringify(steps));
  // 5 samples in batches of 2: done 2, 4, 5 of 5
  t.deepEqual(batches.map((e) => [e.done, e.total]), [[2, 5], [4, 5], [5, 5]]);
  t.is(d.n, 5);
  x.dispose();
  m.dispose();
});
