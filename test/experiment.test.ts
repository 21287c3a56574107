import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { validateExperiment, parseConfigText, expandRuns, loadConfig, gridPoints } from '../lib/experiment/grid';
import { ExperimentInput } from '../lib/experiment/config';
import { runExperiment } from '../lib/experiment/runner';
import { ExperimentEvent } from '../lib/experiment/plan';
import { scienceExecutor } from '../lib/experiment/executor';
import { RunDir, readJson, readJsonl, writeJsonAtomic, SUMMARY_VERSION, RUN_FOLDER_VERSION } from '../lib/experiment/rundir';
import { fakeScience, FakeLog, knownAccuracy } from './helpers/fake-science';
import { backend } from '../lib/binding/backend';
import { nativeSourceHash } from '../lib/util/version';

const root = path.join(__dirname, '..', '..');
const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');
const tmp = (p: string) => fs.mkdtempSync(path.join(os.tmpdir(), `fl-${p}-`));

function configError(input: unknown): string {
  try {
    expandRuns(validateExperiment(input));
  } catch (e) {
    if ((e as { code?: string }).code !== 'ERR_CONFIG') throw e;
    return (e as Error).message;
  }
  return '';
}

const small: ExperimentInput = {
  name: 'small',
  defaults: {
    data: { dataset: 'fashion-mnist', trainSize: 300, testSize: 50, probeSize: 20 },
    train: { epochs: 3, batchSize: 100 },
    eval: { attacks: [{ name: 'pgd', type: 'pgd', epsilon: 0.1, steps: 5, stepSize: 0.02 }, { name: 'cw', type: 'cw', epsilon: 0.1, steps: 5, stepSize: 0.02 }], fisher: { samples: 10 }, cckl: { samples: 30, pairs: 100 } },
  },
  runs: [
    { model: { arch: 'small-cnn' }, grid: { 'train.method': ['natural', 'trades'] } },
    { model: { arch: 'mlp' }, train: { method: 'pgd-at' } },
  ],
};

test('config errors name the exact path and the allowed values', (t) => {
  const base = { name: 'x', defaults: { data: { dataset: 'fashion-mnist' } } };
  t.is(configError({ ...base, runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' } }, { model: { arch: 'mlp' }, train: { method: 'natural' }, name: 'b' },
    { model: { arch: 'mlp' }, train: { method: 'tradez' } }] }),
  "runs[2].train.method: expected one of natural | pgd-at | trades | mart | fire | jacobian | fisher-trace | fisher-lambda, got 'tradez'");
  t.is(configError({ ...base, runs: [{ model: { arch: 'vgg12' }, train: { method: 'natural' } }] }),
    "runs[0].model.arch: expected one of mlp | small-cnn | mnist-net | lenet | vgg11 | vgg13 | vgg16 | resnet20 | resnet32 | resnet44 | resnet56 | wrn-34-10 | preact-resnet18, got 'vgg12'");
  t.regex(configError({ ...base, runs: [{ model: { arch: 'mlp', activaton: 'relu' }, train: { method: 'natural' } }] }),
    /^runs\[0\]\.model: unknown key 'activaton'; allowed: name, arch, path, width, activation, pool/);
  t.is(configError({ ...base, runs: [{ model: { arch: 'mlp' }, train: { method: 'natural', epochs: 'ten' } }] }),
    "runs[0].train.epochs: expected number, got string 'ten'");
  t.is(configError({ ...base, runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' }, grid: { 'train.beta': [1, -6] } }] }),
    'runs[0].train.beta: expected a number ≥ 0, got -6 (grid point train.beta=-6)');
  t.is(configError({ ...base, runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' }, grid: { beta: [1] } }] }),
    "runs[0].grid.beta: grid keys are dotted paths under data | model | train | eval (or 'seed'), got 'beta'");
  t.is(configError({ ...base, runs: [{ model: { arch: 'mlp' } }] }), "runs[0].train.method: required (expected 'natural' | 'pgd-at' | 'trades' | 'mart' | 'fire' | 'jacobian' | 'fisher-trace' | 'fisher-lambda')");
  t.is(configError({ name: 'x', runs: [] }), 'runs: expected at least 1 item(s), got 0');
  t.is(configError({ name: 'x', rusn: [] }), "runs: required (expected array); (top level): unknown key 'rusn'; allowed: name, description, out, device, tensorboard, seeds, defaults, grid, runs");
  t.regex(configError({ ...base, runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' } }, { model: { arch: 'mlp' }, train: { method: 'natural' } }] }),
    /^runs\[1\]: run id 'mlp_natural_seed0' is also produced by runs\[0\]/);
  t.regex(configError({ ...base, runs: [{ model: { name: 'a' }, train: { method: 'natural' } }] }), /^runs\[0\]\.model: expected `arch`/);
  const e = t.throws(() => parseConfigText('name: x\nruns: [\n', 'bad.yaml'));
  t.regex(e!.message, /^bad\.yaml: not valid YAML \(line \d+, column \d+\)/);
  t.is((e as { code?: string }).code, 'ERR_CONFIG');
  t.throws(() => loadConfig('/nonexistent.yaml'), { code: 'ERR_IO' } as never);
});

test('grid expansion: defaults ← entry ← grid point, per seed, with stable readable ids', (t) => {
  t.deepEqual(gridPoints({ a: [1, 2], b: ['x', 'y'] }), [{ a: 1, b: 'x' }, { a: 1, b: 'y' }, { a: 2, b: 'x' }, { a: 2, b: 'y' }]);
  const cfg = validateExperiment({
    ...small,
    seeds: [0, 1],
    runs: [
      { model: { arch: 'small-cnn' }, train: { method: 'trades' }, grid: { 'train.beta': [1, 6] } },
      { model: { arch: 'vgg11', activation: 'identity', pool: 'avg' }, train: { method: 'natural', epochs: 1 }, seeds: [7] },
      { name: 'wide', model: { arch: 'resnet20' }, train: { method: 'natural' }, grid: { 'model.width': [1, 4] }, seeds: [0] },
    ],
  });
  const runs = expandRuns(cfg);
  t.deepEqual(runs.map((r) => r.id), [
    'small-cnn_trades_beta1_seed0', 'small-cnn_trades_beta1_seed1', 'small-cnn_trades_beta6_seed0', 'small-cnn_trades_beta6_seed1',
    'vgg11-identity-avgpool_natural_seed7', 'wide_natural_width1_seed0', 'wide_natural_width4_seed0',
  ]);
  t.is(runs[2].train.beta, 6);
  t.is(runs[2].train.epochs, 3); // from defaults
  t.is(runs[2].data.trainSize, 300);
  t.is(runs[4].train.epochs, 1); // entry wins
  t.is(runs[6].model.width, 4);
  t.deepEqual(runs[6].gridPoint, { 'model.width': 4 });
  t.is(runs[0].eval.attacks[0].norm, 'linf'); // schema defaults filled in
  t.deepEqual(expandRuns(cfg).map((r) => r.id), runs.map((r) => r.id), 'ids are stable');
});

test('the shipped configs validate: demo (6 runs) and the paper\'s CIFAR-10 table (TRADES settings, PGD-20, CW)', (t) => {
  const demo = expandRuns(loadConfig(path.join(root, 'configs', 'demo.yaml')));
  t.deepEqual(demo.map((r) => r.id), ['small-cnn_natural_seed0', 'small-cnn_pgd-at_seed0', 'small-cnn_trades_seed0',
    'pure-linear_trades_seed0', 'half-linear_trades_seed0', 'normal_trades_seed0']);
  t.true(demo.every((r) => r.data.dataset === 'fashion-mnist'));
  t.deepEqual(demo.map((r) => r.train.method), ['natural', 'pgd-at', 'trades', 'trades', 'trades', 'trades']);
  t.deepEqual(demo.slice(3).map((r) => [r.model.activation, r.model.pool]), [['identity', 'avg'], ['identity', 'max'], ['relu', 'max']]);
  const paper = expandRuns(loadConfig(path.join(root, 'configs', 'paper-cifar10.yaml')));
  t.is(paper.length, 5);
  for (const r of paper) {
    t.is(r.train.method, 'trades');
    t.is(r.train.epsilon, 0.031);
    t.is(r.train.stepSize, 0.007);
    t.is(r.train.steps, 10);
    t.is(r.train.beta, 6);
    t.is(r.data.dataset, 'cifar10');
    t.deepEqual(r.eval.attacks.map((a) => [a.name, a.type, a.epsilon, a.steps, a.stepSize]), [['pgd', 'pgd', 0.031, 20, 0.003], ['cw', 'cw', 0.031, 20, 0.003]]);
  }
  t.deepEqual(paper.map((r) => [r.model.arch, r.model.activation ?? 'relu', r.model.pool ?? 'max', r.model.width ?? 1]),
    [['vgg13', 'identity', 'avg', 1], ['vgg13', 'identity', 'max', 1], ['vgg13', 'relu', 'max', 1], ['resnet20', 'relu', 'max', 1], ['resnet32', 'relu', 'max', 10]]);
});

test('a sweep writes the run-dir layout; summary.json holds the executor\'s numbers unchanged', async (t) => {
  const out = tmp('sweep');
  const log: FakeLog = { trainCalls: [], evaluated: [] };
  const events: ExperimentEvent[] = [];
  const r = await runExperiment(small, { out, executor: scienceExecutor(fakeScience({ log })), onEvent: (e) => events.push(e) });
  t.deepEqual(r.runs.map((x) => [x.id, x.status]), [['small-cnn_natural_seed0', 'finished'], ['small-cnn_trades_seed0', 'finished'], ['mlp_pgd-at_seed0', 'finished']]);
  t.is(r.finished, 3);
  t.false(r.aborted);
  const exp = readJson<{ runs: string[] }>(path.join(out, 'experiment.json'));
  t.deepEqual(exp.runs, r.runs.map((x) => x.id));
  for (const id of exp.runs) {
    const rd = RunDir.of(out, id);
    t.is(rd.state(), 'finished');
    t.deepEqual(fs.readdirSync(rd.dir).sort(), ['checkpoint.pt', 'config.json', 'metrics.jsonl', 'run.json', 'summary.json', 'tb']);
    t.deepEqual(readJson(rd.run), { version: RUN_FOLDER_VERSION, checkpointVersion: 2 });
    t.is(rd.readConfig().id, id);
    t.deepEqual(rd.readEpochs().map((e) => e.epoch), [1, 2, 3]);
    const s = rd.readSummary();
    const arch = id.startsWith('mlp') ? 'mlp' : 'small-cnn';
    t.is(s.accuracy, knownAccuracy('natural', arch, 0));
    t.deepEqual(s.attacks, { pgd: Math.round(s.accuracy / 2 * 1e4) / 1e4, cw: Math.round(s.accuracy / 3 * 1e4) / 1e4 });
    t.is(s.evalCount, 50);
    t.is(s.fisher!.samples, 10);
    t.is(s.fisher!.frobeniusMean, 11); // mean of 2..20
    t.is(s.fisher!.lambdaMaxQuantiles.q50, 5.5);
    t.deepEqual(s.fisher!.lambdaMax, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    t.deepEqual(s.cckl, { samples: 30, cckl: 4, jsMean: 1.5, lowerBound: 0.5, nonRobust: 1, nonRobustStderr: 0.1, robust: 3, nonRobustFraction: 0.25, pairs: 100 });
    t.is(s.method, rd.readConfig().train.method);
    // provenance: what this process loaded (backend()) and the package's own source hash
    const b = backend();
    t.deepEqual(s.provenance && [s.provenance.packageVersion, s.provenance.variant, s.provenance.libtorch, s.provenance.nativeSourceHash, s.provenance.device],
      [b.packageVersion, b.variant, b.libtorch, nativeSourceHash(), 'cpu']);
    t.is(s.epochs, 3);
  }
  // progress events are monotone in the overall share and end at 1
  const overall = events.filter((e): e is Extract<ExperimentEvent, { type: 'progress' }> => e.type === 'progress').map((e) => e.overall);
  t.true(overall.length > 10);
  t.true(overall.every((v, i) => i === 0 || v >= overall[i - 1] - 1e-12));
  t.true(Math.abs(overall[overall.length - 1] - 1) < 1e-9);
  t.is(events.filter((e) => e.type === 'epoch').length, 9);
  t.is(events[events.length - 1].type, 'done');

  // run again: everything is skipped, nothing is trained
  const again = await runExperiment(small, { out, executor: scienceExecutor(fakeScience({ log })) });
  t.is(again.skipped, 3);
  t.is(again.finished, 0);
  t.is(log.trainCalls.length, 3);
});

test('an interrupted sweep keeps finished runs and resumes the current one from its checkpoint', async (t) => {
  const out = tmp('resume');
  const controller = new AbortController();
  const log: FakeLog = { trainCalls: [], evaluated: [] };
  // abort after 5 epochs: run 1 finished (3 epochs), run 2 stopped after its epoch 2
  const r1 = await runExperiment(small, { out, signal: controller.signal, executor: scienceExecutor(fakeScience({ log, abortAfterEpochs: { controller, epochs: 5 } })) });
  t.true(r1.aborted);
  t.deepEqual(r1.runs.map((x) => x.status), ['finished', 'aborted', 'pending']);
  t.is(RunDir.of(out, 'small-cnn_natural_seed0').state(), 'finished');
  t.is(RunDir.of(out, 'small-cnn_trades_seed0').state(), 'resumable');
  t.false(fs.existsSync(RunDir.of(out, 'small-cnn_trades_seed0').summary));
  t.false(fs.existsSync(RunDir.of(out, 'small-cnn_trades_seed0').error), 'an interruption is not a failure');
  t.is(RunDir.of(out, 'mlp_pgd-at_seed0').state(), 'new');
  const finishedSummary = fs.readFileSync(RunDir.of(out, 'small-cnn_natural_seed0').summary, 'utf8');

  const log2: FakeLog = { trainCalls: [], evaluated: [] };
  const r2 = await runExperiment(small, { out, executor: scienceExecutor(fakeScience({ log: log2 })) });
  t.false(r2.aborted);
  t.deepEqual(r2.runs.map((x) => x.status), ['skipped', 'finished', 'finished']);
  t.deepEqual(log2.trainCalls, [
    { dir: 'small-cnn_trades_seed0', resume: true, startEpoch: 3 },
    { dir: 'mlp_pgd-at_seed0', resume: false, startEpoch: 1 },
  ]);
  t.is(fs.readFileSync(RunDir.of(out, 'small-cnn_natural_seed0').summary, 'utf8'), finishedSummary, 'finished work untouched');
  t.deepEqual(readJsonl<{ epoch: number }>(RunDir.of(out, 'small-cnn_trades_seed0').metrics).map((e) => e.epoch), [1, 2, 3]);
});

test('a run folder of another format is refused for resume and re-evaluation with ERR_FORMAT naming the versions, and nothing is touched', async (t) => {
  const out = tmp('format');
  const controller = new AbortController();
  // run 1 finishes, run 2 stops after its epoch 2 (resumable)
  await runExperiment(small, { out, signal: controller.signal, executor: scienceExecutor(fakeScience({ abortAfterEpochs: { controller, epochs: 5 } })) });
  const rd = RunDir.of(out, 'small-cnn_trades_seed0');
  t.is(rd.state(), 'resumable');
  t.is(rd.folderVersion(), RUN_FOLDER_VERSION);
  // a folder written before run.json existed (format 1: the old randomness)
  fs.rmSync(rd.run);
  const before = fs.readdirSync(rd.dir, { recursive: true, encoding: 'utf8' }).sort().filter((f) => fs.statSync(path.join(rd.dir, f)).isFile()).map((f) => [f, fs.readFileSync(path.join(rd.dir, f), 'utf8')]);
  const log: FakeLog = { trainCalls: [], evaluated: [] };
  const err = await t.throwsAsync(runExperiment(small, { out, executor: scienceExecutor(fakeScience({ log })) }));
  t.is((err as { code?: string }).code, 'ERR_FORMAT');
  t.regex(err!.message, /small-cnn_trades_seed0: run folder format 1 cannot be resumed exactly by this FisherLens \(run folder format 2, checkpoint format 2/);
  t.deepEqual(log.trainCalls, [], 'refused before any run starts');
  t.deepEqual(fs.readdirSync(rd.dir, { recursive: true, encoding: 'utf8' }).sort().filter((f) => fs.statSync(path.join(rd.dir, f)).isFile()).map((f) => [f, fs.readFileSync(path.join(rd.dir, f), 'utf8')]), before, 'the folder is untouched');
  // a newer format is refused too
  writeJsonAtomic(rd.run, { version: RUN_FOLDER_VERSION + 1 });
  await t.throwsAsync(runExperiment(small, { out, executor: scienceExecutor(fakeScience({ log })) }), { code: 'ERR_FORMAT', message: /run folder format 3 is newer than this FisherLens reads \(2\)/ } as never);
  writeJsonAtomic(rd.run, { version: 'two' });
  await t.throwsAsync(runExperiment(small, { out, executor: scienceExecutor(fakeScience({ log })) }), { code: 'ERR_FORMAT', message: /run\.json: expected/ } as never);
  // re-evaluating a finished folder of format 1 is refused the same way
  const fin = RunDir.of(out, 'small-cnn_natural_seed0');
  rd.writeFolderVersion();
  fs.rmSync(fin.run);
  await t.throwsAsync(runExperiment(small, { out, reevaluate: true, executor: scienceExecutor(fakeScience({ log })) }), { code: 'ERR_FORMAT', message: /small-cnn_natural_seed0: run folder format 1 cannot be re-evaluated exactly/ } as never);
  // while a finished folder of format 1 is simply skipped, and this format's folder resumes
  const r = await runExperiment(small, { out, executor: scienceExecutor(fakeScience({ log })) });
  t.deepEqual(r.runs.map((x) => x.status), ['skipped', 'finished', 'finished']);
  t.deepEqual(log.trainCalls[0], { dir: 'small-cnn_trades_seed0', resume: true, startEpoch: 3 });
  t.deepEqual(readJsonl<{ epoch: number }>(rd.metrics).map((e) => e.epoch), [1, 2, 3]);
});

test('a failing run is recorded in error.json and the sweep goes on; a changed config in the same folder is refused', async (t) => {
  const out = tmp('fail');
  const r = await runExperiment(small, { out, executor: scienceExecutor(fakeScience({ failRuns: ['small-cnn_trades_seed0'] })) });
  t.deepEqual(r.runs.map((x) => x.status), ['finished', 'failed', 'finished']);
  t.is(r.failed, 1);
  t.regex(r.runs[1].error!, /ERR_VALUE: loss became NaN/);
  const rd = RunDir.of(out, 'small-cnn_trades_seed0');
  t.is(rd.readError()!.code, 'ERR_VALUE');
  const stop = await runExperiment(small, { out: tmp('stop'), continueOnError: false, executor: scienceExecutor(fakeScience({ failRuns: ['small-cnn_natural_seed0'] })) });
  t.deepEqual(stop.runs.map((x) => x.status), ['failed', 'pending', 'pending']);
  // the fixed run succeeds on the next call and its error.json goes away
  const r2 = await runExperiment(small, { out, executor: scienceExecutor(fakeScience()) });
  t.deepEqual(r2.runs.map((x) => x.status), ['skipped', 'finished', 'skipped']);
  t.false(fs.existsSync(rd.error));
  // same ids, different settings: refused before anything runs
  const changed = structuredClone(small) as { defaults: { train: { epochs: number } } } & ExperimentInput;
  changed.defaults.train.epochs = 5;
  const e = await t.throwsAsync(runExperiment(changed, { out, executor: scienceExecutor(fakeScience()) }));
  t.is((e as { code?: string }).code, 'ERR_CONFIG');
  t.regex(e!.message, /holds run 'small-cnn_natural_seed0' of a different config \(train\.epochs: 3 → 5\)/);
  await t.throwsAsync(runExperiment(small, { out, only: ['nope'], executor: scienceExecutor(fakeScience()) }), { code: 'ERR_CONFIG', message: /--only: unknown run id\(s\) 'nope'/ } as never);
});

function runCli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
}

test('CLI: --help for every command, exit codes for usage and config errors, dry run', (t) => {
  for (const c of ['run', 'report', 'demo']) {
    const r = runCli([c, '--help']);
    t.is(r.status, 0, c);
    t.regex(r.stdout, new RegExp(`Usage: fisherlens ${c}`));
  }
  t.regex(runCli(['run', '--help']).stdout, /130 interrupted/);
  t.is(runCli(['run']).status, 2);
  const dir = tmp('cli');
  const bad = path.join(dir, 'bad.yaml');
  fs.writeFileSync(bad, 'name: bad\ndefaults: { data: { dataset: fashion-mnist } }\nruns:\n  - model: { arch: mlp }\n    train: { method: tradez }\n');
  const r = runCli(['run', bad]);
  t.is(r.status, 1);
  t.is(r.stderr.trim(), "fisherlens: ERR_CONFIG: bad.yaml: runs[0].train.method: expected one of natural | pgd-at | trades | mart | fire | jacobian | fisher-trace | fisher-lambda, got 'tradez'");
  const cuda = runCli(['run', path.join(root, 'configs', 'paper-cifar10.yaml'), '--out', path.join(dir, 'paper')]);
  if (/CUDA is not available/.test(cuda.stderr)) {
    t.is(cuda.status, 1);
    t.regex(cuda.stderr, /^fisherlens: ERR_DEVICE: device 'cuda' asked for/);
    t.false(fs.existsSync(path.join(dir, 'paper')), 'nothing is written before the device is known to exist');
  }
  const dry = runCli(['run', path.join(root, 'configs', 'demo.yaml'), '--dry-run', '--json', '--out', path.join(dir, 'demo')]);
  t.is(dry.status, 0);
  t.deepEqual((JSON.parse(dry.stdout) as { runs: { state: string }[] }).runs.map((x) => x.state), Array(6).fill('new'));
});

// The trades run waits at the start of its epoch 2 (after epoch 1's checkpoint) until the signal
// aborts it: one SIGINT sent when epoch 1 is logged lands there however late this process reads
// the child's output. (With a timer after '[2/3] starting' it once came after the whole sweep,
// when a concurrent test's spawnSync held this process's event loop, and killed the child.)
test('CLI: SIGINT stops with exit 130 keeping finished runs; the same command resumes and exits 0; report follows', async (t) => {
  const dir = tmp('cli-int');
  const cfgFile = path.join(dir, 'small.json');
  fs.writeFileSync(cfgFile, JSON.stringify(small));
  const out = path.join(dir, 'runs');
  const env = { FISHERLENS_EXECUTOR: path.join(__dirname, 'helpers', 'fake-science.js'), FAKE_BATCH_MS: '20' };
  const child = spawn(process.execPath, [cli, 'run', cfgFile, '--out', out], { env: { ...process.env, ...env, FAKE_HOLD: 'small-cnn_trades_seed0@2' } });
  let stderr = '';
  let sent = 0;
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (!sent && stderr.includes('small-cnn_trades_seed0 epoch 1:')) { sent++; child.kill('SIGINT'); }
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  t.is(sent, 1);
  t.is(code, 130, stderr);
  t.regex(stderr, /SIGINT: stopping after the current step/);
  t.is(RunDir.of(out, 'small-cnn_natural_seed0').state(), 'finished');
  const trades = RunDir.of(out, 'small-cnn_trades_seed0');
  t.is(trades.state(), 'resumable');
  t.deepEqual(trades.readEpochs().map((e) => e.epoch), [1]);
  t.is(RunDir.of(out, 'mlp_pgd-at_seed0').state(), 'new');
  const again = runCli(['run', cfgFile, '--out', out, '--report'], env);
  t.is(again.status, 0, again.stderr);
  t.regex(again.stderr, /\[1\/3\] small-cnn_natural_seed0: finished earlier, skipped/);
  t.regex(again.stderr, /\[2\/3\] small-cnn_trades_seed0: resuming from its checkpoint/);
  t.regex(again.stderr, /1 earlier, 0 failed/);
  t.deepEqual(trades.readEpochs().map((e) => e.epoch), [1, 2, 3]);
  t.true(fs.existsSync(path.join(out, 'report.md')));
  const rep = runCli(['report', out, '--json']);
  t.is(rep.status, 0, rep.stderr);
  t.is((JSON.parse(rep.stdout) as { finished: number }).finished, 3);
  t.is(runCli(['report', path.join(dir, 'missing')]).status, 1);
});

test('an environment error (ERR_LOAD, ERR_DEVICE) stops the sweep instead of failing every run', async (t) => {
  const out = tmp('env');
  const sci = fakeScience();
  sci.train = async () => { throw Object.assign(new Error('experiments need train() from lib/science/train.ts'), { code: 'ERR_LOAD' }); };
  await t.throwsAsync(runExperiment(small, { out, executor: scienceExecutor(sci) }), { message: /need train\(\)/ });
  t.false(fs.existsSync(RunDir.of(out, 'small-cnn_natural_seed0').error));
  t.is(RunDir.of(out, 'small-cnn_trades_seed0').state(), 'new');
});

test('the complete example of docs/experiments.md validates and expands to the 13 runs it describes', (t) => {
  const doc = fs.readFileSync(path.join(root, 'docs', 'experiments.md'), 'utf8');
  const yaml = /```yaml\n([\s\S]*?)```/.exec(doc)![1];
  const runs = expandRuns(validateExperiment(parseConfigText(yaml, 'example.yaml')));
  t.is(runs.length, 13);
  t.deepEqual([runs[0].id, runs[6].id, runs[12].id], ['small-cnn_natural_seed0', 'beta_trades_beta1_seed0', 'lenet-linear_trades_seed0']);
  t.is(runs[12].train.epochs, 3);
  t.is(runs[0].eval.attacks.length, 3);
});

// `run --reevaluate`: a finished sweep gets a new eval section without retraining; the plain run
// refuses the changed config and points at --reevaluate; unfinished runs are left alone.
test('reevaluate: finished checkpoints are evaluated with the new eval section, no training, summaries rewritten', async (t) => {
  const out = tmp('reeval');
  const log: FakeLog = { trainCalls: [], evaluated: [] };
  const first = await runExperiment(small, { out, executor: scienceExecutor(fakeScience({ log })), only: ['small-cnn_natural_seed0', 'mlp_pgd-at_seed0'] });
  t.is(first.finished, 2);
  const before = RunDir.of(out, 'mlp_pgd-at_seed0').readSummary();
  const changed = structuredClone(small) as ExperimentInput & { defaults: { eval: { attacks: unknown[] } } };
  changed.defaults.eval.attacks = [...changed.defaults.eval.attacks, { name: 'autoattack', type: 'autoattack', epsilon: 0.1, version: 'custom', attacks: ['apgd-ce'] }];
  await t.throwsAsync(runExperiment(changed, { out, executor: scienceExecutor(fakeScience()) }), { code: 'ERR_CONFIG', message: /only the evaluation changed: `fisherlens run CONFIG --reevaluate`/ } as never);
  const log2: FakeLog = { trainCalls: [], evaluated: [] };
  const r = await runExperiment(changed, { out, reevaluate: true, executor: scienceExecutor(fakeScience({ log: log2 })) });
  t.deepEqual(r.runs.map((x) => [x.id, x.status]), [['small-cnn_natural_seed0', 'finished'], ['small-cnn_trades_seed0', 'pending'], ['mlp_pgd-at_seed0', 'finished']]);
  // resumed from the final checkpoint: no epoch trained again
  t.deepEqual(log2.trainCalls.map((c) => [c.dir, c.resume, c.startEpoch]), [['small-cnn_natural_seed0', true, 4], ['mlp_pgd-at_seed0', true, 4]]);
  const dir = RunDir.of(out, 'mlp_pgd-at_seed0');
  const after = dir.readSummary();
  t.deepEqual(Object.keys(after.attacks), ['pgd', 'cw', 'autoattack']);
  t.is(after.attacks.autoattack, Math.round((after.accuracy / 4) * 1e4) / 1e4);
  t.is(after.startedAt, before.startedAt);
  t.is(after.epochs, before.epochs);
  t.truthy(after.reevaluatedAt);
  t.is(dir.readConfig().eval.attacks.length, 3);
  t.is(dir.readEpochs().length, 3, 'metrics.jsonl keeps its epochs');
  // the plain run now sees the new config as its own: everything finished is skipped
  const again = await runExperiment(changed, { out, executor: scienceExecutor(fakeScience()), only: ['mlp_pgd-at_seed0'] });
  t.is(again.skipped, 1);
  // a summary from a newer FisherLens is refused clearly
  writeJsonAtomic(dir.summary, { ...after, version: SUMMARY_VERSION + 1 });
  await t.throwsAsync(runExperiment(changed, { out, reevaluate: true, executor: scienceExecutor(fakeScience()) }), { code: 'ERR_FORMAT', message: /newer than this FisherLens reads/ } as never);
});
