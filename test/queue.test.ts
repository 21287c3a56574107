/**
 * Sweeps on BullMQ/Redis and Slurm job arrays (lib/experiment/queue.ts, slurm.ts, lib/cli/queue.ts).
 * One redis-server on 127.0.0.1 (free port, temporary folder, no persistence) serves the file;
 * each test takes its own Redis database (redis://…/N), so tests never see each other's jobs.
 * Short locks and stall checks keep dead-worker recovery at a few seconds.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, ChildProcessWithoutNullStreams } from 'child_process';
import { Queue } from 'bullmq';
import { startRedis, haveRedis, RedisServer } from './helpers/redis';
import { fakeScience, FakeLog } from './helpers/fake-science';
import { ExperimentInput } from '../lib/experiment/config';
import { runExperiment } from '../lib/experiment/runner';
import { ExperimentEvent } from '../lib/experiment/plan';
import { RunExecutor, scienceExecutor } from '../lib/experiment/executor';
import { RunDir, readJsonl } from '../lib/experiment/rundir';
import { worker, WorkerOptions } from '../lib/experiment/worker';
import { queueStatus, cancelExperiment } from '../lib/experiment/queue-status';
import { JobData, JobProgress, currentBuild } from '../lib/experiment/queue-jobs';
import { runAsNobody, cleanupNobody } from './helpers/unprivileged';
import { slurmScript } from '../lib/experiment/slurm';
import { buildReport } from '../lib/report';
import { FisherLensError } from '../lib/util/errors';

const root = path.join(__dirname, '..', '..');
const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');
const fakeModule = path.join(__dirname, 'helpers', 'fake-science.js');
const tmp = (p: string) => fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), `fl-q-${p}-`)));
const maybe = haveRedis() ? test : test.skip;
const maybeSerial = haveRedis() ? test.serial : test.skip;

let redis: RedisServer | undefined;
let nextDb = 1;
/** A fresh Redis database of the file's server for one test. */
const dbUrl = () => `${redis!.url}/${nextDb++}`;

/** Whatever a failed test leaves running is stopped here, so the file always exits. */
const leftovers: (() => Promise<unknown> | void)[] = [];
test.before(async () => { if (haveRedis()) redis = await startRedis(); });
test.after.always(async () => {
  await Promise.allSettled(leftovers.map((f) => f()));
  await redis?.stop();
  cleanupNobody();
});

/** A fake-science sweep (no LibTorch): 2 methods × 2 seeds, 2 epochs. */
function fakeConfig(name: string, epochs = 2): ExperimentInput {
  return {
    name,
    seeds: [0, 1],
    defaults: { data: { dataset: 'fashion-mnist', trainSize: 300, testSize: 50, probeSize: 20 }, train: { epochs, batchSize: 100 } },
    runs: [{ model: { arch: 'mlp' }, grid: { 'train.method': ['natural', 'trades'] } }],
  };
}

/** A real sweep small enough for CI: LeNet on 400 Fashion-MNIST images, 4 runs (2 methods × 2 seeds). */
function realConfig(name: string, epochs = 2, trainSize = 400): ExperimentInput {
  return {
    name,
    seeds: [0, 1],
    defaults: {
      data: { dataset: 'fashion-mnist', trainSize, testSize: 40, probeSize: 20 },
      train: { epochs, batchSize: 50, optimizer: { type: 'adam', lr: 0.001 }, steps: 2, epsilon: 0.1, stepSize: 0.05, beta: 1, track: { cckl: false } },
      eval: { batchSize: 40, attacks: [{ name: 'pgd', type: 'pgd', epsilon: 0.1, stepSize: 0.05, steps: 2 }], fisher: { samples: 8 }, cckl: { samples: 40, pairs: 20 } },
    },
    runs: [{ model: { arch: 'lenet' }, grid: { 'train.method': ['natural', 'trades'] } }],
  };
}

interface CliWorker { proc: ChildProcessWithoutNullStreams; stderr(): string; ready: Promise<void>; exit: Promise<number | null> }

/** `fisherlens worker` in a child process; `ready` resolves when it listens on the queue. */
function cliWorker(url: string, args: string[], env: Record<string, string> = {}, lockMs = 10000): CliWorker {
  const proc = spawn(process.execPath, [cli, 'worker', '--queue', url, '--lock-duration', String(lockMs), '--stalled-interval', String(Math.min(lockMs, 5000)), ...args],
    { env: { ...process.env, ...env } });
  let err = '';
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => { onReady = resolve; });
  proc.stderr.on('data', (d: Buffer) => { err += d.toString(); if (err.includes(': ready on ')) onReady(); });
  proc.stdout.resume();
  const exit = new Promise<number | null>((resolve) => proc.on('close', (code) => { onReady(); resolve(code); }));
  leftovers.push(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); });
  return { proc, stderr: () => err, ready, exit };
}

async function waitFor<T>(what: () => Promise<T | undefined> | T | undefined, label: string | (() => string), timeoutMs = 120000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await what();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${typeof label === 'string' ? label : label()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The CLI in a child process without blocking this one (in-process workers must keep renewing their locks). */
async function runCli(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ...env } });
  let stdout = ''; let stderr = '';
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const status = await new Promise<number | null>((resolve) => p.on('close', resolve));
  return { status, stdout, stderr };
}

async function bash(script: string, env: Record<string, string>): Promise<{ status: number | null; stderr: string }> {
  const p = spawn('bash', [script], { env: { ...process.env, ...env } });
  let stderr = '';
  p.stdout.resume();
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const status = await new Promise<number | null>((resolve) => p.on('close', resolve));
  return { status, stderr };
}

/**
 * Waits until a job of the queue is active with at least `minEpochs` epochs through (0: as soon as
 * its worker reported the run's start). One connection polled every 20 ms, so a short window is
 * not missed on a loaded machine; fails at once if a run finished first (nothing left to interrupt).
 */
async function whenActive(url: string, minEpochs: number, what: () => string): Promise<string> {
  const q = new Queue<JobData>('fisherlens', { connection: { url } });
  try {
    const end = Date.now() + 120000;
    for (;;) {
      for (const j of await q.getJobs(['active'], 0, -1)) {
        const p = j.progress as Partial<JobProgress> | undefined;
        if (p && typeof p === 'object' && p.epochs !== undefined && (p.records?.length ?? 0) >= minEpochs && p.startedAt === j.processedOn) return j.data.runId;
      }
      if ((await q.getJobCounts('completed')).completed > 0) throw new Error(`a run finished before it could be interrupted: ${what()}`);
      if (Date.now() > end) throw new Error(`timed out waiting for an active run: ${what()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await q.close();
  }
}

/** The jobs of a queue database, via BullMQ itself. */
async function jobsOf(url: string) {
  const q = new Queue<JobData>('fisherlens', { connection: { url } });
  try {
    return await q.getJobs(['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'], 0, -1);
  } finally {
    await q.close();
  }
}

/** Run folders with their timing fields cleared (they differ between any two executions). */
function withoutTimes(out: string): string {
  const copy = tmp('cmp');
  fs.cpSync(out, copy, { recursive: true });
  for (const d of fs.readdirSync(copy)) {
    const rd = RunDir.of(copy, d);
    if (fs.existsSync(rd.summary)) {
      const s = rd.readSummary();
      fs.writeFileSync(rd.summary, JSON.stringify({ ...s, seconds: 0, startedAt: '', finishedAt: '' }));
    }
    if (fs.existsSync(rd.metrics)) {
      fs.writeFileSync(rd.metrics, readJsonl<Record<string, unknown>>(rd.metrics).map((r) => JSON.stringify({ ...r, seconds: 0, samplesPerSec: 0 })).join('\n') + '\n');
    }
  }
  return copy;
}

const NUMERIC_KEYS = ['accuracy', 'crossEntropy', 'evalCount', 'epochs'] as const;

maybeSerial('two worker processes share a 4-run sweep: each run once, both busy, the report equals a local run\'s', async (t) => {
  const url = dbUrl();
  const dir = tmp('two');
  const cfg = realConfig('two');
  const w1 = cliWorker(url, ['--root', dir, '--idle-exit', '3']);
  const w2 = cliWorker(url, ['--root', dir, '--idle-exit', '3']);
  await Promise.all([w1.ready, w2.ready]);
  const events: ExperimentEvent[] = [];
  const queued = await runExperiment(cfg, { out: path.join(dir, 'queue'), queue: { url, pollMs: 100 }, onEvent: (e) => events.push(e) });
  const local = await runExperiment(cfg, { out: path.join(dir, 'local') });
  await Promise.all([w1.exit, w2.exit]);
  t.deepEqual(queued.runs.map((r) => [r.id, r.status]), local.runs.map((r) => [r.id, 'finished']), w1.stderr() + w2.stderr());
  // every run taken exactly once, and by both workers together
  const took = (s: string) => [...s.matchAll(/: took (\S+) /g)].map((m) => m[1]);
  const all = [...took(w1.stderr()), ...took(w2.stderr())].sort();
  t.deepEqual(all, local.runs.map((r) => r.id).sort());
  t.true(took(w1.stderr()).length > 0 && took(w2.stderr()).length > 0, `worker 1 took ${took(w1.stderr())}, worker 2 took ${took(w2.stderr())}`);
  // the submitter saw each run start, its epochs (through the queue) and its end
  for (const r of local.runs) {
    t.is(events.filter((e) => e.type === 'run-start' && e.runId === r.id).length, 1);
    t.deepEqual(events.filter((e) => e.type === 'epoch' && e.runId === r.id).map((e) => (e as { record: { epoch: number } }).record.epoch), [1, 2]);
    t.is(events.filter((e) => e.type === 'run-end' && e.runId === r.id).length, 1);
  }
  // Same binary, same CPU, same seeds: the runs are the same computation whatever process runs
  // them; 1e-6 relative leaves room only for a different OpenMP split of a float32 reduction.
  for (const [q, l] of queued.runs.map((r, i) => [r.summary!, local.runs[i].summary!] as const)) {
    for (const k of NUMERIC_KEYS) t.true(Math.abs(q[k] - l[k]) <= 1e-6 * Math.max(1, Math.abs(l[k])), `${q.runId} ${k}: ${q[k]} vs ${l[k]}`);
    t.true(Math.abs(q.attacks.pgd - l.attacks.pgd) <= 1e-6, `${q.runId} pgd`);
    q.fisher!.lambdaMax.forEach((v, i) => t.true(Math.abs(v - l.fisher!.lambdaMax[i]) <= 1e-6 * Math.max(1, Math.abs(l.fisher!.lambdaMax[i])), `${q.runId} λmax[${i}]`));
  }
  // one report, the same as the local run's (timings cleared on both sides)
  const [mq, ml] = [(await buildReport(withoutTimes(path.join(dir, 'queue')))).markdown, (await buildReport(withoutTimes(path.join(dir, 'local')))).markdown];
  t.is(mq, ml);
  // status after the fact: every run finished, with the worker that ran it
  const st = await queueStatus(url, 'two');
  t.deepEqual(st.map((s) => s.state), ['finished', 'finished', 'finished', 'finished']);
  t.true(st.every((s) => s.worker !== undefined && s.device === 'cpu' && s.epoch === 2 && s.epochs === 2));
});

maybeSerial('kill -9 of a worker mid-run: another worker resumes it from the checkpoint; the numbers equal an uninterrupted run\'s', async (t) => {
  const url = dbUrl();
  const dir = tmp('kill');
  const cfg: ExperimentInput = { ...realConfig('kill', 4, 2000), seeds: [3], runs: [{ model: { arch: 'lenet' }, train: { method: 'natural' } }] };
  const out = path.join(dir, 'queue');
  // short locks: the dead worker's run is handed on within seconds
  const w1 = cliWorker(url, ['--root', dir], {}, 2000);
  await w1.ready;
  await runExperiment(cfg, { out, queue: { url, detach: true } });
  // kill as soon as the first epoch has gone through the queue
  await whenActive(url, 1, () => w1.stderr());
  w1.proc.kill('SIGKILL');
  await w1.exit;
  const rd = RunDir.of(out, 'lenet_natural_seed3');
  t.not(rd.state(), 'finished', 'killed before the run finished');
  // the dead worker's job comes back after its lock expires and the stalled check has seen it
  // (2 s each here, and up to two checks): a short idle exit could end w2 before that, and the
  // follower would wait for ever (it did once on CI with 5 s). So w2 waits long and is stopped
  // once the run is done.
  const w2 = cliWorker(url, ['--root', dir, '--idle-exit', '120'], {}, 2000);
  const followed = await runExperiment(cfg, { out, queue: { url, pollMs: 100 } });
  w2.proc.kill('SIGTERM');
  await w2.exit;
  t.is(followed.runs[0].status, 'finished', w2.stderr());
  t.regex(w2.stderr(), /took lenet_natural_seed3/);
  const local = await runExperiment(cfg, { out: path.join(dir, 'local') });
  const [q, l] = [followed.runs[0].summary!, local.runs[0].summary!];
  // resume restores weights, optimizer state and the random generator: the same numbers as one
  // uninterrupted run (1e-6 relative: see the two-worker test)
  for (const k of NUMERIC_KEYS) t.true(Math.abs(q[k] - l[k]) <= 1e-6 * Math.max(1, Math.abs(l[k])), `${k}: ${q[k]} vs ${l[k]}`);
  t.true(Math.abs(q.attacks.pgd - l.attacks.pgd) <= 1e-6);
  q.fisher!.lambdaMax.forEach((v, i) => t.true(Math.abs(v - l.fisher!.lambdaMax[i]) <= 1e-6 * Math.max(1, Math.abs(l.fisher!.lambdaMax[i])), `λmax[${i}] ${v} vs ${l.fisher!.lambdaMax[i]}`));
  t.deepEqual(rd.readEpochs().map((e) => e.epoch), [1, 2, 3, 4]);
  const probe = (o: string) => RunDir.of(o, 'lenet_natural_seed3').readEpochs().map((e) => e.probeAccuracy);
  t.deepEqual(probe(out), probe(path.join(dir, 'local')));
});

/** An in-process worker on the fake science; stop() ends it. */
function fakeWorker(url: string, opts: Partial<WorkerOptions> & { fakeLog?: FakeLog } = {}): { done: Promise<unknown>; stop(): void } {
  const stop = new AbortController();
  const done = worker({
    queue: url, executor: scienceExecutor(fakeScience({ log: opts.fakeLog })), lockDurationMs: 10000, stalledIntervalMs: 5000, signal: stop.signal, ...opts,
  });
  leftovers.push(() => { stop.abort(); return done.catch(() => undefined); });
  return { done, stop: () => stop.abort() };
}

maybe('enqueuing twice adds no duplicate; an edited config gets new jobs; --detach returns at once', async (t) => {
  const url = dbUrl();
  const out = tmp('dup');
  const cfg = fakeConfig('dup');
  const r1 = await runExperiment(cfg, { out, queue: { url, detach: true } });
  t.deepEqual(r1.runs.map((r) => r.status), ['pending', 'pending', 'pending', 'pending']);
  await runExperiment(cfg, { out, queue: { url, detach: true } });
  const jobs = await jobsOf(url);
  t.is(jobs.length, 4);
  t.true(jobs.every((j) => !j.id!.includes(':') && j.id!.startsWith('dup__') && j.id!.endsWith(`__${j.data.runId}`)));
  // an edited config (another β) is another job, even for the same run id
  const edited = { ...cfg, defaults: { ...cfg.defaults, train: { ...cfg.defaults!.train, beta: 3 } } };
  await runExperiment(edited, { out: tmp('dup2'), queue: { url, detach: true } });
  t.is((await jobsOf(url)).length, 8);
});

maybe('a deterministic failure fails once with its reason; enqueuing again retries it; a transient one is retried with backoff', async (t) => {
  const url = dbUrl();
  const out = tmp('fail');
  const cfg = fakeConfig('fail', 1);
  const calls = new Map<string, number>();
  const inner = scienceExecutor(fakeScience());
  const executor: RunExecutor = {
    async execute(ctx) {
      const n = (calls.get(ctx.run.id) ?? 0) + 1;
      calls.set(ctx.run.id, n);
      if (ctx.run.id === 'mlp_natural_seed0' && n === 1) throw new FisherLensError('ERR_VALUE', 'loss became NaN at epoch 1');
      if (ctx.run.id === 'mlp_trades_seed1' && n === 1) throw new Error('connection reset by peer');
      return inner.execute(ctx);
    },
  };
  const w = fakeWorker(url, { executor, roots: [out] });
  const r1 = await runExperiment(cfg, { out, queue: { url, pollMs: 100, backoffMs: 200 } });
  t.deepEqual(r1.runs.map((r) => [r.id, r.status]), [
    ['mlp_natural_seed0', 'failed'], ['mlp_natural_seed1', 'finished'], ['mlp_trades_seed0', 'finished'], ['mlp_trades_seed1', 'finished'],
  ]);
  t.is(r1.runs[0].error, 'ERR_VALUE: loss became NaN at epoch 1');
  t.is(calls.get('mlp_natural_seed0'), 1, 'a deterministic failure is not retried');
  t.is(calls.get('mlp_trades_seed1'), 2, 'a transient failure is retried');
  const failed = (await queueStatus(url, 'fail')).find((s) => s.runId === 'mlp_natural_seed0')!;
  t.like(failed, { state: 'failed', reason: 'ERR_VALUE: loss became NaN at epoch 1', attempts: 1 });
  // enqueue the same config again: the failed job is retried explicitly, the finished ones skipped
  const r2 = await runExperiment(cfg, { out, queue: { url, pollMs: 100 } });
  t.deepEqual(r2.runs.map((r) => r.status), ['finished', 'skipped', 'skipped', 'skipped']);
  t.is(calls.get('mlp_natural_seed0'), 2);
  t.is((await jobsOf(url)).length, 4);
  w.stop();
  await w.done;
});

maybe('a worker refuses paths outside its roots, TorchScript without trust, other builds and unwritable folders, each with its reason', async (t) => {
  const url = dbUrl();
  const rootDir = tmp('root');
  const outside = tmp('outside');
  const ts = path.join(rootDir, 'model.pt');
  fs.writeFileSync(ts, Buffer.from([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0])); // a zip header: TorchScript by content
  const locked = path.join(rootDir, 'locked');
  fs.mkdirSync(locked, { mode: 0o500 });
  const one = (name: string, extra: Partial<ExperimentInput> = {}, model: Record<string, unknown> = { arch: 'mlp' }): ExperimentInput =>
    ({ name, defaults: { data: { dataset: 'fashion-mnist' }, train: { epochs: 1 } }, runs: [{ model, train: { method: 'natural' } }], ...extra });
  const w = fakeWorker(url, { roots: [rootDir] });
  const reason = async (cfg: ExperimentInput, out: string) => {
    const r = await runExperiment(cfg, { out, queue: { url, pollMs: 100 } });
    return r.runs[0].error ?? r.runs[0].status;
  };
  t.regex(await reason(one('outside'), path.join(outside, 'x')), /^ERR_ARG: out: expected a path under this worker's roots \(.*; start the worker with --root for it\), got '.*'/);
  t.regex(await reason(one('dataroot', {}, { arch: 'mlp' }), path.join(rootDir, 'a')), /finished/);
  t.regex(await reason({ ...one('data'), defaults: { data: { dataset: 'fashion-mnist', root: outside }, train: { epochs: 1 } } }, path.join(rootDir, 'b')), /^ERR_ARG: data.root: expected a path under this worker's roots/);
  t.regex(await reason(one('ts', {}, { path: ts }), path.join(rootDir, 'c')), /^ERR_ARG: model.path: expected a model that is not TorchScript \(a TorchScript model runs arbitrary code: this worker refuses it unless started with --trust-torchscript\), got '.*'/);
  if (process.getuid?.() !== 0) t.regex(await reason(one('locked'), path.join(locked, 'out')), /^ERR_IO: cannot write the experiment folder/);
  w.stop();
  await w.done;
  if (process.getuid?.() === 0) {
    // root writes through any permission bit: the unwritable folder is checked by a worker running
    // as `nobody` (test/helpers/unprivileged.ts), with this build's identity and the fake science
    fs.chmodSync(rootDir, 0o755);
    await runExperiment(one('locked'), { out: path.join(locked, 'out'), queue: { url, detach: true } });
    const r = runAsNobody(`
      const { worker } = require(ROOT + '/dist/lib/experiment/worker');
      const { scienceExecutor } = require(ROOT + '/dist/lib/experiment/executor');
      const { fakeScience } = require(ROOT + '/dist/test/helpers/fake-science');
      console.log('uid', process.getuid());
      worker({ queue: ${JSON.stringify(url)}, roots: [${JSON.stringify(rootDir)}], build: ${JSON.stringify(currentBuild())},
        executor: scienceExecutor(fakeScience({})), idleExitSec: 3, lockDurationMs: 10000, stalledIntervalMs: 5000 })
        .then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });`, os.tmpdir());
    if (typeof r === 'string') t.log(`the unwritable-folder case as nobody did not run: ${r}`);
    else {
      t.is(r.status, 0, r.stderr);
      t.notRegex(r.stdout, /^uid 0$/m, 'the worker ran unprivileged');
      const job = (await jobsOf(url)).find((j) => j.data.out === path.join(locked, 'out'));
      t.regex(job?.failedReason ?? '', /ERR_IO: cannot write the experiment folder/);
    }
  }
  // a worker of another build refuses the job (the job carries the submitter's build)
  const w2 = fakeWorker(url, { roots: [rootDir], build: { version: '0.0.0-other', native: 'ffffffffffffffff' } });
  t.regex(await reason(one('build'), path.join(rootDir, 'd')), /^ERR_VALUE: enqueued from fisherlens .* but this worker runs 0\.0\.0-other \(native sources ffffffffffffffff\); numbers from different builds are not mixed/);
  w2.stop();
  await w2.done;
  // relative data/model paths are refused at enqueue time (workers have other working folders)
  await t.throwsAsync(runExperiment(one('rel', {}, { path: 'model.pt' }), { out: rootDir, queue: { url } }), { message: /model\.path 'model\.pt' is relative/ });
});

maybe('SIGTERM: the worker stops at the end of the epoch, the run goes back to the queue and another worker resumes it', async (t) => {
  const url = dbUrl();
  const dir = tmp('term');
  const out = path.join(dir, 'runs');
  const cfg: ExperimentInput = { ...fakeConfig('term', 3), seeds: [0], runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' } }] };
  // the run is held at the start of epoch 2 until its signal aborts, so the SIGTERM always lands
  // while it is under way (timed batches alone let a loaded machine finish the run first)
  const w1 = cliWorker(url, ['--root', dir], { FISHERLENS_EXECUTOR: fakeModule, FAKE_BATCH_MS: '150', FAKE_HOLD: 'mlp_natural_seed0@2' });
  await w1.ready;
  // enqueue through the CLI: `run --queue --detach` returns once the run is on the queue
  const cfgFile = path.join(dir, 'term.json');
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  const sub = await runCli(['run', cfgFile, '--out', out, '--queue', url, '--detach']);
  t.is(sub.status, 0, sub.stderr);
  t.regex(sub.stderr, /fisherlens: enqueued; follow with `fisherlens status --queue URL`/);
  await whenActive(url, 0, () => w1.stderr());
  w1.proc.kill('SIGTERM');
  t.is(await w1.exit, 143, w1.stderr());
  t.regex(w1.stderr(), /stopped mlp_natural_seed0 with its checkpoint; back in the queue/);
  const st = (await queueStatus(url, 'term'))[0];
  t.is(st.state, 'waiting');
  const rd = RunDir.of(out, 'mlp_natural_seed0');
  const stoppedAt = rd.readEpochs().map((e) => e.epoch);
  // the epoch under way when SIGTERM came was finished and checkpointed, and no other was started
  t.true(stoppedAt.length >= 1 && stoppedAt.length < 3, `stopped after epochs ${stoppedAt}`);
  const log: FakeLog = { trainCalls: [], evaluated: [] };
  const w2 = fakeWorker(url, { roots: [dir], fakeLog: log, idleExitSec: 0.5 });
  await w2.done;
  t.deepEqual(log.trainCalls, [{ dir: 'mlp_natural_seed0', resume: true, startEpoch: stoppedAt.length + 1 }]);
  t.is(rd.state(), 'finished');
  t.deepEqual(rd.readEpochs().map((e) => e.epoch), [1, 2, 3]);
});

maybe('cancel removes waiting runs and stops the active one in another process; enqueuing again resumes it', async (t) => {
  const url = dbUrl();
  const dir = tmp('cancel');
  const out = path.join(dir, 'runs');
  const cfg = fakeConfig('cancel', 3);
  // enqueued before the worker starts: its 1 s idle exit must not run out while a loaded machine
  // enqueues (it did once: 'idle for 1 s: exiting' before the first job was there)
  await runExperiment(cfg, { out, queue: { url, detach: true } });
  // every run is held at the start of epoch 2 until its signal aborts, so the cancel always lands
  // while the first is under way (timed batches alone let a loaded machine finish it first)
  const w1 = cliWorker(url, ['--root', dir, '--idle-exit', '1'], { FISHERLENS_EXECUTOR: fakeModule, FAKE_BATCH_MS: '100', FAKE_HOLD: '*@2' });
  await w1.ready;
  await whenActive(url, 1, () => w1.stderr());
  // in process, so the cancel lands while that run is under way (the CLI is the same call)
  const r = await cancelExperiment(url, 'cancel');
  // the worker runs one run at a time: the held one is stopped, the three waiting ones removed
  t.is(r.stopping.length, 1);
  const stopped = r.stopping[0];
  const failed = await waitFor(async () => (await queueStatus(url, 'cancel')).find((s) => s.state === 'failed'), 'cancelled run');
  t.is(failed.runId, stopped);
  t.regex(failed.reason!, /^ERR_ABORTED: cancelled/);
  const left = await queueStatus(url, 'cancel');
  t.is(left.length, 4 - r.removed.length, 'the waiting runs are gone');
  t.true(left.every((s) => s.runId === stopped || s.state === 'finished'));
  t.is(r.removed.length, 3, `removed ${r.removed}`);
  t.is(await w1.exit, 0, w1.stderr());
  t.is(RunDir.of(out, stopped).state(), 'resumable');
  // the status command shows it
  const s = await runCli(['status', '--queue', url, 'cancel']);
  t.regex(s.stdout, new RegExp(`${stopped}\\s+failed epoch \\d/3: ERR_ABORTED: cancelled`));
  const c = await runCli(['cancel', '--queue', url, 'nothing-here', '--json']);
  t.is(c.status, 0, c.stderr);
  t.deepEqual(JSON.parse(c.stdout), { removed: [], stopping: [] });
  // enqueue again: everything runs, the cancelled run from its checkpoint
  const log: FakeLog = { trainCalls: [], evaluated: [] };
  const w2 = fakeWorker(url, { roots: [dir], fakeLog: log });
  const again = await runExperiment(cfg, { out, queue: { url, pollMs: 100 } });
  t.deepEqual(again.runs.map((x) => (x.status === 'skipped' ? 'finished' : x.status)), ['finished', 'finished', 'finished', 'finished']);
  t.deepEqual(again.runs.filter((x) => x.status === 'finished').map((x) => x.id).sort(), [stopped, ...r.removed].sort());
  t.true(log.trainCalls.some((c2) => c2.dir === stopped && c2.resume && c2.startEpoch > 1));
  w2.stop();
  await w2.done;
});

maybe('a password-protected Redis works through the URL; a wrong password is a one-line ERR_IO', async (t) => {
  const server = await startRedis({ password: 'p@ss w0rd' });
  try {
    t.deepEqual(await queueStatus(server.url), []);
    const bad = server.url.replace(encodeURIComponent('p@ss w0rd'), 'nope');
    const r = await runCli(['status', '--queue', bad]);
    t.is(r.status, 1);
    t.regex(r.stderr, /^fisherlens: ERR_IO: cannot reach Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+: .*(WRONGPASS|invalid|password)/i);
    t.false(r.stderr.includes('nope'), 'the password is not printed');
    t.is(r.stderr.trim().split('\n').length, 1);
  } finally {
    await server.stop();
  }
});

test('the Slurm script runs the run of its array index with the local runner, and nothing from the config reaches the shell', async (t) => {
  const dir = tmp('slurm');
  const cfgFile = path.join(dir, 'sweep.json');
  fs.writeFileSync(cfgFile, JSON.stringify(fakeConfig('slurm', 1)));
  const out = path.join(dir, 'runs');
  const script = path.join(dir, 'sweep.sbatch');
  const w = await runCli(['run', cfgFile, '--out', out, '--slurm', script, '--slurm-args', '--gres=gpu:1 --time=01:00:00', '--json']);
  t.is(w.status, 0, w.stderr);
  const listed = (JSON.parse(w.stdout) as { runs: string[] }).runs;
  t.deepEqual(listed, ['mlp_natural_seed0', 'mlp_natural_seed1', 'mlp_trades_seed0', 'mlp_trades_seed1']);
  const text = fs.readFileSync(script, 'utf8');
  t.regex(text, /^#SBATCH --array=0-3$/m);
  t.regex(text, /^#SBATCH --job-name=fisherlens-slurm$/m);
  t.regex(text, /^#SBATCH --gres=gpu:1$/m);
  t.regex(text, /^#SBATCH --time=01:00:00$/m);
  // preemption: the signal ahead of the time limit, to the batch shell that execs fisherlens, and requeue
  t.regex(text, /^#SBATCH --signal=B:TERM@120$/m);
  t.regex(text, /^#SBATCH --requeue$/m);
  const env = { FISHERLENS_EXECUTOR: fakeModule, SLURM_ARRAY_TASK_ID: '2' };
  const task = await bash(script, env);
  t.is(task.status, 0, task.stderr);
  t.deepEqual(listed.map((id) => RunDir.of(out, id).state()), ['new', 'new', 'finished', 'new']);
  const bad = await bash(script, { ...env, SLURM_ARRAY_TASK_ID: '7' });
  t.is(bad.status, 2);
  t.regex(bad.stderr, /SLURM_ARRAY_TASK_ID=7 is outside 0\.\.3/);
  // the next script lists only the unfinished runs
  t.deepEqual(slurmScript(cfgFile, { out }).runs, ['mlp_natural_seed0', 'mlp_natural_seed1', 'mlp_trades_seed1']);
  // sbatch options cannot smuggle lines in
  const inj = await runCli(['run', cfgFile, '--out', out, '--slurm', script, '--slurm-args', 'echo hi']);
  t.is(inj.status, 1);
  t.regex(inj.stderr, /^fisherlens: ERR_ARG: --slurm-args: expected sbatch options/);
});

maybe('retention removes ended jobs by count; queue clean removes the rest; status still reports every run from its folder; enqueuing again adds nothing', async (t) => {
  const url = dbUrl();
  const dir = tmp('keep');
  const out = path.join(dir, 'runs');
  const cfg = fakeConfig('keep', 1);
  const w = fakeWorker(url, { roots: [dir] });
  const r = await runExperiment(cfg, { out, queue: { url, pollMs: 100, keepCompleted: { count: 1 } } });
  w.stop();
  await w.done;
  t.deepEqual(r.runs.map((x) => x.status), ['finished', 'finished', 'finished', 'finished']);
  // BullMQ keeps the newest `count` completed jobs
  const left = (await jobsOf(url)).map((j) => j.data.runId);
  t.is(left.length, 1, `jobs left: ${left}`);
  const st = await queueStatus(url, 'keep');
  t.deepEqual(st.map((s) => [s.runId, s.state]), r.runs.map((x) => [x.id, 'finished']));
  t.is(st.filter((s) => s.source === 'folder').length, 3);
  t.true(st.filter((s) => s.source === 'folder').every((s) => s.epochs === 1 && s.out === out));
  // queue clean removes the last one, and says which
  const c = await runCli(['queue', 'clean', '--queue', url, '--json']);
  t.is(c.status, 0, c.stderr);
  t.deepEqual(JSON.parse(c.stdout).failed, []);
  t.is(JSON.parse(c.stdout).completed.length, 1);
  t.true((JSON.parse(c.stdout).completed[0] as string).endsWith(`__${left[0]}`));
  t.is((await jobsOf(url)).length, 0);
  const s = await runCli(['status', '--queue', url, 'keep']);
  t.is(s.stdout.trim().split('\n').filter((l) => /\sfinished .*job removed; from its run folder/.test(l)).length, 4, s.stdout);
  // enqueuing again: the finished runs are not added
  const again = await runExperiment(cfg, { out, queue: { url, detach: true } });
  t.deepEqual(again.runs.map((x) => x.status), ['skipped', 'skipped', 'skipped', 'skipped']);
  t.is((await jobsOf(url)).length, 0);
  // a wrong retention is a usage error naming the flag
  const bad = await runCli(['run', path.join(dir, 'nope.json'), '--queue', url, '--keep-completed', '7x']);
  t.regex(bad.stderr, /ERR_ARG: --keep-completed: expected AGE \(90s, 30m, 12h, 7d\), COUNT/);
  const bad2 = await runCli(['queue', 'clean', '--queue', url, '--older-than', 'soon']);
  t.regex(bad2.stderr, /ERR_ARG: --older-than: expected an age/);
});
