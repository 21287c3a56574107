/**
 * Sweeps across processes, machines and GPUs on BullMQ (Redis). No scheduler of our own: one
 * BullMQ job per run, and each job is executed by the local runner (runner.ts runExperiment with
 * `only: [runId]`) into the experiment's run folder, so stable run ids, skipping finished runs,
 * exact resume and one report hold exactly as for a local sweep.
 *
 * - Job id = `<experiment>__<hash of the resolved run (device aside) and out>__<run id>`: enqueuing
 *   twice never duplicates a run and an edited config never reuses a stale job. A failed job is
 *   retried explicitly when its run is enqueued again (BullMQ's add() is a no-op for an existing id).
 * - Jobs carry the package version and native-source hash (lib/util/version.ts); a worker whose build
 *   differs refuses the job with the reason.
 * - Deterministic failures (config, files, NaN loss) fail once with their reason
 *   (UnrecoverableError); transient ones (out of memory, no such device here, lost connection) are
 *   retried with exponential backoff a bounded number of times. A dead worker's job stalls and
 *   BullMQ's stalled-job check hands it to another worker, which resumes from the checkpoint;
 *   several stalls are allowed, so preemption never fails a run.
 * - Per-run progress and epoch records travel in the job's progress, so the submitter and
 *   `status` need no shared filesystem; cancellation reaches other machines by Redis pub/sub.
 * - Security: configs never become commands; a worker reads and writes only under its roots and
 *   refuses TorchScript models (they run code) unless trusted.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Job, Queue } from 'bullmq';
import type IORedis from 'ioredis';
import { FisherLensError, ErrorCode } from '../util/errors';
import { packageVersion, nativeSourceHash } from '../util/version';
import { detectModelFile } from '../science/model';
import { backend, checkDevice } from '../binding/backend';
import type { ExperimentConfig, ExperimentInput, ResolvedRun } from './config';
import type { RunExecutor, RunProgress } from './executor';
import { estimateCost } from './executor';
import type { EpochRecord, RunSummary } from './rundir';
import { RunDir } from './rundir';
import { ExperimentEvent, ExperimentResult, RunExperimentOptions, RunOutcome, checkRunFolders, planExperiment, resolveConfig, runExperiment } from './runner';
import { stable, withoutDevice } from './grid';

/** Where the queue lives and how jobs are retried. */
export interface QueueOptions {
  /** `redis://[:PASSWORD@]HOST:PORT[/DB]` or `rediss://…` (TLS). */
  url: string;
  /** BullMQ queue name (default 'fisherlens'); workers and submitters must agree. */
  name?: string;
  /** Enqueue and return without following the sweep (default false). */
  detach?: boolean;
  /** How often the submitter polls the jobs' states, in ms (default 1000). */
  pollMs?: number;
  /** Attempts of a run that fails transiently (default 3); deterministic failures fail at once. */
  attempts?: number;
  /** First retry delay of a transient failure in ms, doubled per attempt (default 10000). */
  backoffMs?: number;
}

/** The build a job was enqueued from (or a worker runs): numbers from different builds are not mixed. */
export interface Build { version: string; native: string }

/** The data of one job: everything a worker needs to run one run of an experiment. */
export interface JobData {
  format: 1;
  experiment: string;
  runId: string;
  /** Hash of the resolved run (device aside) and out: part of the job id. */
  runHash: string;
  /** Absolute output folder (on a filesystem every worker sees). */
  out: string;
  /** The validated experiment config; the worker expands it and runs `runId` only. */
  config: ExperimentConfig;
  build: Build;
  /** The submitter's limit on the runs of a config (runExperiment's maxRuns), when it set one. */
  maxRuns?: number;
  /** Redis server time (ms) of the latest enqueue; a cancel after it applies to this job. */
  submittedAt: number;
}

/** The progress a worker publishes on the job (read by the submitter and `status`). */
export interface JobProgress {
  /** The attempt this progress belongs to (the job's processedOn when it was taken). */
  startedAt: number;
  worker: string;
  device: string;
  resume: boolean;
  phase?: RunProgress['phase'];
  fraction?: number;
  epoch?: number;
  epochs?: number;
  step?: string;
  /** The epoch records written so far by this attempt (metrics.jsonl lines). */
  records: EpochRecord[];
}

/** What a finished job returns. */
export interface JobResult {
  worker: string;
  device: string;
  /** 'finished' now, or 'skipped' (its summary.json was already there). */
  status: 'finished' | 'skipped';
  summary: RunSummary;
}

/** One run's state in the queue (`fisherlens status`). */
export interface QueueRunStatus {
  experiment: string;
  runId: string;
  jobId: string;
  state: 'waiting' | 'active' | 'delayed' | 'finished' | 'failed' | 'paused' | 'unknown';
  worker?: string;
  device?: string;
  epoch?: number;
  epochs?: number;
  /** Share of the run done, in [0, 1]. */
  fraction?: number;
  /** failed: the reason. */
  reason?: string;
  /** Attempts that ended in a (transient) failure so far. */
  attempts: number;
  out: string;
}

/** bullmq and ioredis, loaded on first use (≈ 0.5 s): commands and sweeps without a queue never pay for them. */
function bull(): typeof import('bullmq') {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return require('bullmq') as typeof import('bullmq');
}

const DEFAULT_QUEUE = 'fisherlens';
/** Error codes of deterministic failures: retrying them on another worker would fail the same way. */
const DETERMINISTIC = new Set<string>(['ERR_CONFIG', 'ERR_ARG', 'ERR_IO', 'ERR_FORMAT', 'ERR_SHAPE', 'ERR_DTYPE', 'ERR_VALUE', 'ERR_ABORTED']);

function queueOptions(q: string | QueueOptions): Required<Omit<QueueOptions, 'detach'>> & { detach: boolean } {
  const o = typeof q === 'string' ? { url: q } : q;
  checkUrl(o.url);
  return {
    url: o.url, name: o.name ?? DEFAULT_QUEUE, detach: o.detach ?? false, pollMs: o.pollMs ?? 1000,
    attempts: o.attempts ?? 3, backoffMs: o.backoffMs ?? 10000,
  };
}

/** A Redis URL with its password masked, for messages. */
export function maskUrl(url: string): string {
  return url.replace(/^(rediss?:\/\/)([^@/]*)@/, (_m, scheme: string, auth: string) => `${scheme}${auth.includes(':') ? `${auth.split(':')[0]}:***` : '***'}@`);
}

function checkUrl(url: string): void {
  if (!/^rediss?:\/\/[^\s]+$/.test(url)) {
    throw new FisherLensError('ERR_ARG', `--queue: expected redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://… (TLS), got '${maskUrl(url)}'`);
  }
}

/** ioredis options for BullMQ: blocking workers need maxRetriesPerRequest null. */
function connection(url: string, worker: boolean): { url: string; maxRetriesPerRequest: number | null; connectTimeout: number } {
  return { url, maxRetriesPerRequest: worker ? null : 3, connectTimeout: 10000 };
}

/** Waits until a BullMQ object (or ioredis client) is connected; ERR_IO naming the masked URL otherwise. */
async function ready<T>(what: Promise<T>, url: string, client?: IORedis, timeoutMs = 15000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      what,
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs / 1000} s`)), timeoutMs); }),
    ]);
  } catch (e) {
    const why = (client && lastRedisError.get(client)) ?? (e as Error).message;
    throw new FisherLensError('ERR_IO', `cannot reach Redis at ${maskUrl(url)}: ${why}`);
  } finally {
    clearTimeout(timer);
  }
}

function redisClient(url: string): IORedis {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const Redis = (require('ioredis') as { default: typeof IORedis }).default;
  // a bounded number of reconnection attempts, so a wrong URL fails instead of hanging
  const client = new Redis(url, { maxRetriesPerRequest: 3, connectTimeout: 10000, lazyConnect: true, retryStrategy: (n) => (n > 3 ? null : Math.min(n * 200, 1000)) });
  client.on('error', (e: Error) => { lastRedisError.set(client, e.message); });
  return client;
}

/** The last connection error of each client (ioredis reports 'Connection is closed' once it gives up). */
const lastRedisError = new WeakMap<object, string>();

/** Redis server time in ms (one clock for every machine, for cancel-vs-enqueue order). */
async function redisTime(client: IORedis): Promise<number> {
  const [s, us] = await client.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

const cancelChannel = (queue: string) => `fisherlens:${queue}:cancel`;
const cancelKey = (queue: string) => `fisherlens:${queue}:cancelled`;

/** This process's build. */
export function currentBuild(): Build {
  return { version: packageVersion(), native: nativeSourceHash() };
}

/** The job id of a run: experiment, a hash of the resolved run (device aside) and out, and the run id (no ':' for BullMQ). */
export function jobIdOf(experiment: string, run: ResolvedRun, out: string): { jobId: string; runHash: string } {
  const runHash = crypto.createHash('sha256').update(JSON.stringify(stable({ run: withoutDevice(run), out }))).digest('hex').slice(0, 12);
  const jobId = `${experiment}__${runHash}__${run.id}`.replace(/[^A-Za-z0-9._-]/g, '-');
  return { jobId, runHash };
}

/** Queue sweeps run on other machines: data and model paths must not depend on a working folder. */
function checkAbsolutePaths(runs: ResolvedRun[]): void {
  for (const r of runs) {
    for (const [key, p] of [['data.root', r.data.root], ['model.path', r.model.path]] as const) {
      if (p !== undefined && !path.isAbsolute(p)) {
        throw new FisherLensError('ERR_CONFIG', `run '${r.id}': ${key} '${p}' is relative; a queue sweep runs on workers with other working folders: give an absolute path (on a filesystem every worker sees)`);
      }
    }
  }
}

interface Tracked { run: ResolvedRun; jobId: string; cost: number }

/**
 * Enqueues every run of a config that is not finished and (unless `detach`) follows the sweep:
 * the same ExperimentEvents as a local run, from the jobs' states and progress, until every run
 * is finished or failed. `opts.signal` stops following, not the sweep. Used by runExperiment
 * when `opts.queue` is set.
 */
export async function runOnQueue(config: ExperimentConfig | ExperimentInput | string, opts: RunExperimentOptions): Promise<ExperimentResult> {
  const q = queueOptions(opts.queue!);
  const cfg = resolveConfig(config);
  const plan = planExperiment(config, { out: opts.out, device: opts.device, maxRuns: opts.maxRuns });
  const out = plan.out;
  const runs = plan.runs.map((r) => r.run);
  checkAbsolutePaths(runs);
  if (opts.only) {
    const ids = new Set(runs.map((r) => r.id));
    const unknown = opts.only.filter((id) => !ids.has(id));
    if (unknown.length > 0) throw new FisherLensError('ERR_CONFIG', `--only: unknown run id(s) ${unknown.map((u) => `'${u}'`).join(', ')}; this config has: ${[...ids].join(', ')}`);
  }
  if (opts.executor) throw new FisherLensError('ERR_ARG', 'queue sweeps run on the workers\' executor: pass `executor` to worker(), not to runExperiment');
  // the submitter sees the run folders when it shares the filesystem: refuse mixed configs early
  if (fs.existsSync(out)) checkRunFolders(out, runs);
  const emit = (e: ExperimentEvent) => {
    try { opts.onEvent?.(e); } catch { /* a throwing listener must not break following */ }
  };

  const queue = new (bull().Queue)<JobData, JobResult>(q.name, { connection: connection(q.url, false) });
  queue.on('error', () => { /* reported by the call that fails */ });
  const client = redisClient(q.url);
  try {
    await ready(Promise.all([client.connect(), queue.waitUntilReady()]), q.url, client);
    const now = await redisTime(client);
    const build = currentBuild();
    const tracked: Tracked[] = [];
    const finishedBefore = new Set<string>();
    for (const { run, state } of plan.runs) {
      if (opts.only && !opts.only.includes(run.id)) continue;
      const { jobId, runHash } = jobIdOf(cfg.name, run, out);
      tracked.push({ run, jobId, cost: estimateCost(run) });
      const data: JobData = { format: 1, experiment: cfg.name, runId: run.id, runHash, out, config: cfg, build, submittedAt: now, ...(opts.maxRuns !== undefined ? { maxRuns: opts.maxRuns } : {}) };
      const job = await queue.getJob(jobId);
      const add = () => queue.add(run.id, data, {
        jobId, attempts: q.attempts, backoff: { type: 'exponential', delay: q.backoffMs },
        removeOnComplete: false, removeOnFail: false,
      });
      if (state === 'finished') finishedBefore.add(run.id);
      if (!job) {
        if (state !== 'finished') await add();
        continue;
      }
      const js = await job.getState();
      if (js === 'completed') finishedBefore.add(run.id);
      if (js === 'failed') {
        // BullMQ's add() is a no-op for an existing id: a failed run is retried explicitly
        await job.updateData({ ...data, submittedAt: now });
        await job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true });
      } else if (js === 'completed' && fs.existsSync(out) && state !== 'finished') {
        // its folder was deleted since: run it again
        finishedBefore.delete(run.id);
        await job.remove();
        await add();
      }
    }
    const plannedRuns = plan.runs.map(({ run, state }) => ({ id: run.id, state, cost: estimateCost(run) }));
    emit({ type: 'plan', out, runs: plannedRuns });
    if (q.detach) {
      const result: ExperimentResult = {
        out, finished: 0, skipped: plan.runs.filter((r) => r.state === 'finished').length, failed: 0, aborted: false,
        runs: plan.runs.map(({ run, state }) => ({ id: run.id, status: opts.only && !opts.only.includes(run.id) ? 'filtered' : state === 'finished' ? 'skipped' : 'pending' })),
      };
      emit({ type: 'done', result });
      return result;
    }
    return await follow(queue, out, plan.runs.map((r) => r.run), tracked, finishedBefore, q.pollMs, opts, emit);
  } finally {
    await Promise.allSettled([queue.close(), client.quit()]);
  }
}

async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** Polls the jobs of a sweep and turns their states and progress into ExperimentEvents. */
async function follow(queue: Queue<JobData, JobResult>, out: string, runs: ResolvedRun[], tracked: Tracked[], finishedBefore: Set<string>, pollMs: number,
  opts: RunExperimentOptions, emit: (e: ExperimentEvent) => void): Promise<ExperimentResult> {
  const total = runs.length;
  const index = new Map(runs.map((r, i) => [r.id, i]));
  const costs = runs.map((r) => estimateCost(r));
  const totalCost = costs.reduce((a, b) => a + b, 0) || 1;
  const trackedIds = new Set(tracked.map((t) => t.run.id));
  // runs not tracked (filtered by --only) count as done for the overall share, like the local runner
  const outcome = new Map<string, RunOutcome>();
  for (const r of runs) if (!trackedIds.has(r.id)) outcome.set(r.id, { id: r.id, status: 'filtered' });
  const seen = new Map<string, { started: boolean; attemptStart: number; records: number; fraction: number }>();
  let finished = 0; let skipped = 0; let failed = 0;
  const doneCost = () => tracked.filter((t) => outcome.has(t.run.id)).reduce((s, t) => s + t.cost, 0)
    + runs.filter((r) => !trackedIds.has(r.id)).reduce((s, r) => s + estimateCost(r), 0);
  while (outcome.size < total && !opts.signal?.aborted) {
    for (const t of tracked) {
      if (outcome.has(t.run.id)) continue;
      const i = index.get(t.run.id)!;
      const base = { runId: t.run.id, index: i, total };
      // the state first, then the job: a job read before it completed would lack its return value
      const state = await queue.getJobState(t.jobId);
      const job = state === 'unknown' ? undefined : await queue.getJob(t.jobId);
      const s = seen.get(t.run.id) ?? { started: false, attemptStart: -1, records: 0, fraction: 0 };
      seen.set(t.run.id, s);
      if (!job) {
        // removed (cancelled while waiting) or never added because it was finished earlier
        const dir = RunDir.of(out, t.run.id);
        if (fs.existsSync(dir.summary)) {
          skipped++;
          outcome.set(t.run.id, { id: t.run.id, status: 'skipped', summary: dir.readSummary() });
          emit({ type: 'run-skip', ...base, reason: 'finished' });
        } else {
          outcome.set(t.run.id, { id: t.run.id, status: 'aborted', error: 'removed from the queue (cancelled)' });
        }
        continue;
      }
      const p = (job.progress && typeof job.progress === 'object' ? job.progress : undefined) as JobProgress | undefined;
      // progress left by an earlier attempt (stopped, stalled) is not this attempt's
      if (state === 'active' && p && p.records && p.startedAt === job.processedOn) {
        const attempt = job.processedOn ?? 0;
        if (!s.started || attempt !== s.attemptStart) {
          s.started = true; s.attemptStart = attempt; s.records = 0;
          emit({ type: 'run-start', ...base, resume: p.resume });
        }
        for (const r of p.records.slice(s.records)) emit({ type: 'epoch', runId: t.run.id, record: r });
        s.records = p.records.length;
        if (p.phase !== undefined && p.fraction !== undefined && p.fraction !== s.fraction) {
          s.fraction = p.fraction;
          emit({ type: 'progress', ...base, phase: p.phase, fraction: p.fraction, epoch: p.epoch, epochs: p.epochs, step: p.step,
            overall: Math.min(1, (doneCost() + Math.max(0, Math.min(1, p.fraction)) * t.cost) / totalCost) });
        }
      } else if (state === 'completed') {
        const r = job.returnvalue;
        const before = r.status === 'skipped' || finishedBefore.has(t.run.id);
        // a run that went through between two polls: its start and epochs all the same
        if (!before && !s.started) emit({ type: 'run-start', ...base, resume: p?.resume ?? false });
        if (p?.records && !before) for (const rec of p.records.slice(s.attemptStart === p.startedAt ? s.records : 0)) emit({ type: 'epoch', runId: t.run.id, record: rec });
        if (before) {
          skipped++;
          outcome.set(t.run.id, { id: t.run.id, status: 'skipped', summary: r.summary });
          emit({ type: 'run-skip', ...base, reason: 'finished' });
        } else {
          finished++;
          outcome.set(t.run.id, { id: t.run.id, status: 'finished', summary: r.summary });
          emit({ type: 'run-end', runId: t.run.id, summary: r.summary });
        }
      } else if (state === 'failed') {
        failed++;
        const reason = job.failedReason ?? 'failed';
        outcome.set(t.run.id, { id: t.run.id, status: 'failed', error: reason });
        const m = /^(ERR_[A-Z]+): /.exec(reason);
        const err = new FisherLensError((m?.[1] ?? 'ERR_INTERNAL') as ErrorCode, m ? reason.slice(m[0].length) : reason);
        emit({ type: 'run-error', runId: t.run.id, error: err });
      }
    }
    if (outcome.size < total) await sleep(pollMs, opts.signal);
  }
  const aborted = outcome.size < total;
  const result: ExperimentResult = {
    out, finished, skipped, failed, aborted,
    runs: runs.map((r) => outcome.get(r.id) ?? { id: r.id, status: 'pending' }),
  };
  emit({ type: 'done', result });
  return result;
}

// ---------------------------------------------------------------------------------------------
// Worker

/** Options of {@link worker}. */
export interface WorkerOptions {
  /** The queue (`redis://…`/`rediss://…` or queue options). */
  queue: string | QueueOptions;
  /** Device for every run this worker takes, overriding the run's ('cpu' | 'cuda' | 'cuda:N'; default: the run's). */
  device?: string;
  /** Runs at once in this process (default 1; one worker per GPU). */
  concurrency?: number;
  /** Exit after this many seconds without a job (default: never). */
  idleExitSec?: number;
  /** Folders under which configs may put `out`, data and model paths (default: the working folder). */
  roots?: string[];
  /** Accept TorchScript models (they run arbitrary code; default false). */
  trustTorchScript?: boolean;
  /** Who trains and evaluates a run (default: the built-in one). */
  executor?: RunExecutor;
  /** Lock of an active job in ms (default 30000): a dead worker's job is handed on after about this long. */
  lockDurationMs?: number;
  /** Period of the stalled-job check in ms (default 30000). */
  stalledIntervalMs?: number;
  /** Stalls (dead workers, preemptions) a run may suffer before it fails (default 10). */
  maxStalledCount?: number;
  /** Name shown in `status` (default hostname/pid[/device]). */
  name?: string;
  /** Graceful stop: take no more jobs; active runs stop at the end of their current epoch and go back to the queue. */
  signal?: AbortSignal;
  /** Immediate stop: active runs stop at their next step (keeping their last checkpoint) and go back to the queue. */
  stopNow?: AbortSignal;
  /** The build this worker accepts jobs from (default: this package's version and native-source hash). */
  build?: Build;
  /** Minimum interval between progress updates of a job in ms (default 1000; epochs are always sent). */
  progressMs?: number;
  /** One line per event (job taken, finished, refused, …); default: none. */
  log?: (line: string) => void;
}

/** What {@link worker} did before it stopped. */
export interface WorkerReport {
  name: string;
  /** Run ids this worker finished (or found finished), failed, and handed back to the queue. */
  finished: string[];
  failed: string[];
  requeued: string[];
}

function within(p: string, root: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The real path of p, following symbolic links of the part that exists. */
function realish(p: string): string {
  let cur = path.resolve(p);
  const rest: string[] = [];
  for (;;) {
    try {
      return path.join(fs.realpathSync(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return path.join(cur, ...rest.reverse());
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

function refuse(code: ErrorCode, message: string): Error {
  return new (bull().UnrecoverableError)(`${code}: ${message}`);
}

/** A conservative TorchScript test: archives, JSON specs naming one, and checkpoints that mention one. */
function runsTorchScript(file: string): boolean {
  const kind = detectModelFile(file);
  if (kind === 'torchscript') return true;
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).includes('torchscript');
  } finally {
    fs.closeSync(fd);
  }
}

/** The checks a worker makes before it runs a job; each refusal is an UnrecoverableError with the reason. */
export function checkJob(data: JobData, o: { build: Build; roots: string[]; trustTorchScript: boolean }): ResolvedRun {
  if (data.build.version !== o.build.version || data.build.native !== o.build.native) {
    throw refuse('ERR_VALUE', `enqueued from fisherlens ${data.build.version} (native sources ${data.build.native}) but this worker runs ${o.build.version} (native sources ${o.build.native}); numbers from different builds are not mixed: update one side and enqueue again`);
  }
  let runs: ResolvedRun[];
  try {
    runs = planExperiment(data.config, { out: data.out, maxRuns: data.maxRuns }).runs.map((r) => r.run);
  } catch (e) {
    throw refuse(((e as { code?: ErrorCode }).code ?? 'ERR_CONFIG'), (e as Error).message);
  }
  const run = runs.find((r) => r.id === data.runId);
  if (!run) throw refuse('ERR_CONFIG', `the config of this job has no run '${data.runId}'`);
  const roots = o.roots.map(realish);
  const outside = (p: string) => !roots.some((r) => within(realish(p), r));
  const paths: [string, string | undefined][] = [['out', data.out], ['data.root', run.data.root], ['model.path', run.model.path]];
  for (const [key, p] of paths) {
    if (p === undefined) continue;
    if (!path.isAbsolute(p)) throw refuse('ERR_ARG', `${key} '${p}' is relative; a worker accepts absolute paths only`);
    if (outside(p)) throw refuse('ERR_ARG', `${key} '${p}' is outside this worker's roots (${o.roots.join(', ')}); start the worker with --root for it`);
  }
  if (run.model.path !== undefined && fs.existsSync(run.model.path) && !o.trustTorchScript && runsTorchScript(run.model.path)) {
    throw refuse('ERR_ARG', `model.path '${run.model.path}' is a TorchScript model, which runs arbitrary code: this worker refuses it unless started with --trust-torchscript`);
  }
  try {
    fs.mkdirSync(data.out, { recursive: true });
    fs.accessSync(data.out, fs.constants.W_OK);
  } catch (e) {
    throw refuse('ERR_IO', `cannot write the experiment folder ${data.out} on this worker: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return run;
}

interface Active { job: Job<JobData, JobResult>; controller: AbortController; stopAtEpoch: boolean; cancelled: boolean }

/**
 * Takes runs from the queue and executes each with the local runner into its experiment's run
 * folder, until `idleExitSec` without work or a stop signal. Resolves with what it did.
 */
export async function worker(opts: WorkerOptions): Promise<WorkerReport> {
  const q = queueOptions(opts.queue);
  const build = opts.build ?? currentBuild();
  const roots = (opts.roots && opts.roots.length > 0 ? opts.roots : [process.cwd()]).map((r) => path.resolve(r));
  for (const r of roots) {
    if (!fs.existsSync(r) || !fs.statSync(r).isDirectory()) throw new FisherLensError('ERR_ARG', `--root '${r}': no such directory`);
  }
  if (!opts.executor) {
    // load LibTorch (a second or more, synchronously) and check the device before taking a job:
    // a job's lock is only renewed while the event loop runs
    backend();
    if (opts.device) checkDevice(opts.device);
  } else if (opts.device && !/^(cpu|cuda(:\d+)?)$/.test(opts.device)) {
    throw new FisherLensError('ERR_DEVICE', `unknown device '${opts.device}'; expected 'cpu', 'cuda' or 'cuda:N'`);
  }
  const name = opts.name ?? `${os.hostname()}/${process.pid}${opts.device ? `/${opts.device}` : ''}`;
  const log = (s: string) => opts.log?.(`worker ${name}: ${s}`);
  const report: WorkerReport = { name, finished: [], failed: [], requeued: [] };
  const active = new Map<string, Active>();
  const sub = redisClient(q.url);
  const client = redisClient(q.url);
  await ready(Promise.all([sub.connect(), client.connect()]), q.url, client);
  // cancel requests reach every worker, wherever it runs
  await sub.subscribe(cancelChannel(q.name));
  sub.on('message', (_ch, msg) => {
    let experiment: string | undefined;
    try { experiment = (JSON.parse(msg) as { experiment?: string }).experiment; } catch { return; }
    for (const a of active.values()) {
      if (a.job.data.experiment === experiment) {
        a.cancelled = true;
        a.controller.abort();
        log(`cancel: stopping ${a.job.data.runId}`);
      }
    }
  });
  let lastBusy = Date.now();
  const progressMs = opts.progressMs ?? 1000;

  const process_ = async (job: Job<JobData, JobResult>, token?: string): Promise<JobResult> => {
    const data = job.data;
    if (data.format !== 1) throw refuse('ERR_FORMAT', `job format ${String(data.format)} is not understood by this worker (fisherlens ${build.version})`);
    const cancelledAt = Number(await client.hget(cancelKey(q.name), data.experiment) ?? 0);
    if (cancelledAt > data.submittedAt) throw refuse('ERR_ABORTED', `cancelled (fisherlens cancel ${data.experiment})`);
    checkJob(data, { build, roots, trustTorchScript: opts.trustTorchScript ?? false });
    const controller = new AbortController();
    const a: Active = { job, controller, stopAtEpoch: Boolean(opts.signal?.aborted), cancelled: false };
    active.set(job.id!, a);
    const records: EpochRecord[] = [];
    let progress: JobProgress = { startedAt: job.processedOn ?? 0, worker: name, device: opts.device ?? '', resume: false, records };
    let lastSent = 0;
    let pending: Promise<void> = Promise.resolve();
    const send = (force: boolean) => {
      const now = Date.now();
      if (!force && now - lastSent < progressMs) return;
      lastSent = now;
      const snapshot = { ...progress, records: [...records] };
      pending = pending.then(() => job.updateProgress(snapshot)).catch(() => { /* the next update carries it */ });
    };
    let runError: (Error & { code?: string }) | undefined;
    log(`took ${data.runId} (${data.experiment})`);
    try {
      const result = await runExperiment(data.config, {
        out: data.out, only: [data.runId], device: opts.device, executor: opts.executor, signal: controller.signal, maxRuns: data.maxRuns,
        onEvent: (e) => {
          if (e.type === 'run-start') {
            const run = planExperiment(data.config, { out: data.out, device: opts.device, maxRuns: data.maxRuns }).runs.find((r) => r.run.id === data.runId)!.run;
            progress = { ...progress, device: run.device, resume: e.resume, phase: 'load', fraction: 0, epochs: run.train.epochs };
            send(true);
          } else if (e.type === 'progress') {
            progress = { ...progress, phase: e.phase, fraction: e.fraction, epoch: e.epoch ?? progress.epoch, epochs: e.epochs ?? progress.epochs, step: e.step };
            send(false);
          } else if (e.type === 'epoch') {
            records.push(e.record);
            progress = { ...progress, epoch: e.record.epoch };
            send(true);
            // a graceful stop takes effect here, right after the epoch's checkpoint was written
            if (a.stopAtEpoch) controller.abort();
          } else if (e.type === 'run-error') {
            runError = e.error;
          }
        },
      });
      await pending;
      const outcome = result.runs.find((r) => r.id === data.runId)!;
      if (outcome.status === 'finished' || outcome.status === 'skipped') {
        report.finished.push(data.runId);
        log(`${outcome.status === 'skipped' ? 'found finished' : 'finished'} ${data.runId}`);
        return { worker: name, device: progress.device, status: outcome.status === 'skipped' ? 'skipped' : 'finished', summary: outcome.summary! };
      }
      if (outcome.status === 'aborted') {
        if (a.cancelled) {
          report.failed.push(data.runId);
          throw refuse('ERR_ABORTED', `cancelled (fisherlens cancel ${data.experiment}); its checkpoint is kept and the run resumes when enqueued again`);
        }
        // stopped by this worker's SIGTERM/SIGINT: back to the queue, another worker resumes it
        await job.moveToWait(token);
        report.requeued.push(data.runId);
        log(`stopped ${data.runId} with its checkpoint; back in the queue`);
        throw new (bull().WaitingError)();
      }
      report.failed.push(data.runId);
      throw classify(runError ?? new FisherLensError('ERR_INTERNAL', outcome.error ?? 'failed'));
    } catch (e) {
      if (e instanceof bull().WaitingError || e instanceof bull().UnrecoverableError) throw e;
      throw classify(e as Error & { code?: string });
    } finally {
      active.delete(job.id!);
      lastBusy = Date.now();
    }
  };

  const w = new (bull().Worker)<JobData, JobResult>(q.name, (job, token) => process_(job, token), {
    connection: connection(q.url, true),
    concurrency: opts.concurrency ?? 1,
    lockDuration: opts.lockDurationMs ?? 30000,
    stalledInterval: opts.stalledIntervalMs ?? opts.lockDurationMs ?? 30000,
    maxStalledCount: opts.maxStalledCount ?? 10,
    name,
    autorun: false,
  });
  w.on('error', (e) => log(`queue error: ${e.message}`));
  w.on('failed', (job, e) => { if (job) log(`${job.data.runId} failed: ${e.message}`); });
  w.on('stalled', (jobId) => log(`${jobId} stalled (its worker stopped renewing its lock): back in the queue`));
  await ready(w.waitUntilReady(), q.url);
  log(`ready on ${maskUrl(q.url)} queue '${q.name}' (roots ${roots.join(', ')})`);

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= w.close();
    return closing;
  };
  const onStop = () => {
    log('stopping: active runs stop at the end of their current epoch and go back to the queue');
    for (const a of active.values()) a.stopAtEpoch = true;
    void close();
  };
  const onStopNow = () => {
    log('stopping now: active runs keep their last checkpoint and go back to the queue');
    for (const a of active.values()) a.controller.abort();
    void close();
  };
  if (opts.signal?.aborted) onStop();
  opts.signal?.addEventListener('abort', onStop, { once: true });
  opts.stopNow?.addEventListener('abort', onStopNow, { once: true });
  const idle = opts.idleExitSec !== undefined ? setInterval(() => {
    if (active.size === 0 && Date.now() - lastBusy > opts.idleExitSec! * 1000) {
      log(`idle for ${opts.idleExitSec} s: exiting`);
      void close();
    }
  }, Math.min(1000, opts.idleExitSec * 500)) : undefined;
  try {
    await w.run();
    await close();
  } finally {
    if (idle) clearInterval(idle);
    opts.signal?.removeEventListener('abort', onStop);
    opts.stopNow?.removeEventListener('abort', onStopNow);
    await Promise.allSettled([sub.quit(), client.quit()]);
  }
  return report;
}

/** Deterministic failures fail once (UnrecoverableError); others are retried with backoff. */
function classify(e: Error & { code?: string }): Error {
  const msg = `${e.code ? `${e.code}: ` : ''}${e.message.split('\n')[0]}`;
  return e.code !== undefined && DETERMINISTIC.has(e.code) ? new (bull().UnrecoverableError)(msg) : new Error(msg);
}

// ---------------------------------------------------------------------------------------------
// Status and cancel

async function openQueue(qo: string | QueueOptions): Promise<{ queue: Queue<JobData, JobResult>; client: IORedis; q: ReturnType<typeof queueOptions> }> {
  const q = queueOptions(qo);
  const queue = new (bull().Queue)<JobData, JobResult>(q.name, { connection: connection(q.url, false) });
  queue.on('error', () => { /* reported by the call that fails */ });
  const client = redisClient(q.url);
  try {
    await ready(Promise.all([client.connect(), queue.waitUntilReady()]), q.url, client);
  } catch (e) {
    await Promise.allSettled([queue.close(), client.quit()]);
    throw e;
  }
  return { queue, client, q };
}

const STATES = ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'] as const;

/** Every run on the queue (of one experiment, or all) with its state, worker, device, epoch and failure reason. */
export async function queueStatus(qo: string | QueueOptions, experiment?: string): Promise<QueueRunStatus[]> {
  const { queue, client } = await openQueue(qo);
  try {
    const out: QueueRunStatus[] = [];
    for (const st of STATES) {
      for (const job of await queue.getJobs([st], 0, -1)) {
        if (!job?.data || (experiment !== undefined && job.data.experiment !== experiment)) continue;
        const p = (job.progress && typeof job.progress === 'object' ? job.progress : undefined) as JobProgress | undefined;
        const r = st === 'completed' ? job.returnvalue : undefined;
        const state: QueueRunStatus['state'] = st === 'completed' ? 'finished' : st === 'prioritized' ? 'waiting' : st;
        out.push({
          experiment: job.data.experiment, runId: job.data.runId, jobId: job.id!, state,
          ...(st === 'active' || st === 'completed' ? { worker: r?.worker ?? p?.worker ?? job.processedBy, device: r?.device ?? p?.device } : {}),
          ...(p?.epochs !== undefined && st !== 'waiting' ? { epoch: p.records?.length ? p.records[p.records.length - 1].epoch : 0, epochs: p.epochs } : {}),
          ...(st === 'active' && p?.fraction !== undefined ? { fraction: p.fraction } : {}),
          ...(st === 'failed' ? { reason: job.failedReason } : {}),
          attempts: job.attemptsMade, out: job.data.out,
        });
      }
    }
    return out.sort((a, b) => a.experiment.localeCompare(b.experiment) || a.runId.localeCompare(b.runId));
  } finally {
    await Promise.allSettled([queue.close(), client.quit()]);
  }
}

/**
 * Cancels an experiment's sweep: removes its waiting runs and asks its active ones to stop, on
 * whatever machine they run (Redis pub/sub). Stopped runs keep their checkpoint and fail with
 * ERR_ABORTED; enqueuing the config again resumes them.
 */
export async function cancelExperiment(qo: string | QueueOptions, experiment: string): Promise<{ removed: string[]; stopping: string[] }> {
  const { queue, client, q } = await openQueue(qo);
  try {
    await client.hset(cancelKey(q.name), experiment, String(await redisTime(client)));
    const removed: string[] = [];
    for (const job of await queue.getJobs(['waiting', 'prioritized', 'delayed'], 0, -1)) {
      if (job?.data?.experiment !== experiment) continue;
      try {
        await job.remove();
        removed.push(job.data.runId);
      } catch { /* taken by a worker meanwhile: the cancel message or the cancelled mark stops it */ }
    }
    const stopping = (await queue.getJobs(['active'], 0, -1)).filter((j) => j?.data?.experiment === experiment).map((j) => j.data.runId);
    await client.publish(cancelChannel(q.name), JSON.stringify({ experiment }));
    return { removed: removed.sort(), stopping: stopping.sort() };
  } finally {
    await Promise.allSettled([queue.close(), client.quit()]);
  }
}
