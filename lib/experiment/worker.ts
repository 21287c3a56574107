/**
 * The queue worker: takes run jobs from BullMQ and runs each with the local runner into its run
 * folder (lib/experiment/queue.ts describes the design; the shared job types and connections are
 * lib/experiment/queue-jobs.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Job } from 'bullmq';
import { FisherLensError, ErrorCode, invalidArgument } from '../util/errors';
import { detectModelFile } from '../science/model';
import { backend, checkDevice } from '../binding/backend';
import type { ResolvedRun } from './config';
import type { RunExecutor } from './executor';
import type { EpochRecord } from './rundir';
import { planExperiment } from './plan';
import { GRACE_DEFAULT_SEC } from '../science/options';
import { runExperiment } from './runner';
import { Build, DETERMINISTIC, JobData, JobProgress, JobResult, QueueOptions, bull, cancelChannel, cancelKey, connection, currentBuild, maskUrl, queueOptions, ready, redisClient, sleep } from './queue-jobs';

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
  /**
   * Graceful stop: take no more jobs; active runs checkpoint at their next batch boundary (or end
   * of epoch, whichever comes first) and go back to the queue; after `graceSec` they stop at once.
   */
  signal?: AbortSignal;
  /** Seconds a graceful stop waits for active runs to checkpoint before stopping them at once (default 30). */
  graceSec?: number;
  /** Mid-epoch checkpoints of every run ('500b', '300s', 'off'; default: the run's train.checkpointEvery, else every 300 s). */
  checkpointEvery?: string;
  /** false: no TensorBoard event files in the run folders, whatever the configs say (`fisherlens worker --no-tensorboard`). */
  tensorboard?: boolean;
  /** Immediate stop: active runs stop at their next step (keeping their last checkpoint) and go back to the queue. */
  stopNow?: AbortSignal;
  /** The build this worker accepts jobs from (default: this package's version and native-source hash). */
  build?: Build;
  /** Minimum interval between progress updates of a job in ms (default 1000; epochs are always sent). */
  progressMs?: number;
  /** One line per event (job taken, finished, refused, …); default: none. */
  log?: (line: string) => void;
  /**
   * How long a stop waits for Redis to acknowledge the worker's close, in ms (default 5000);
   * then its connections are dropped by force, so a stop never hangs on a server that has gone
   * or hangs (the whole stop of an idle worker takes under 10 s).
   */
  closeDeadlineMs?: number;
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

/** {@link refuse} with a FisherLens error's code and message. */
function refuseError(e: FisherLensError): Error {
  return refuse(e.code, e.message);
}

/** A conservative TorchScript test: archives (a zip that is not a .pt2), JSON specs naming one, and checkpoints that mention one. */
function runsTorchScript(file: string): boolean {
  const kind = detectModelFile(file);
  const fd = fs.openSync(file, 'r');
  try {
    if (kind === 'torchscript') {
      // a zip: a torch.export archive (.pt2: data only) names archive_format in its central
      // directory at the end, and a TorchScript archive constants.pkl and code/ there
      const size = fs.fstatSync(fd).size;
      const tail = Buffer.alloc(Math.min(size, 1 << 16));
      const m = fs.readSync(fd, tail, 0, tail.length, size - tail.length);
      const names = tail.subarray(0, m);
      return !(names.includes('/archive_format') && !names.includes('constants.pkl') && !names.includes('/code/'));
    }
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
  const paths: [string, string | undefined][] = [['out', data.out], ['data.root', run.data.root], ['model.path', run.model.path], ['model.weights', run.model.weights]];
  for (const [key, p] of paths) {
    if (p === undefined) continue;
    if (!path.isAbsolute(p)) throw refuseError(invalidArgument(key, 'an absolute path (a worker accepts absolute paths only)', p));
    if (outside(p)) throw refuseError(invalidArgument(key, `a path under this worker's roots (${o.roots.join(', ')}; start the worker with --root for it)`, p));
  }
  if (run.model.path !== undefined && fs.existsSync(run.model.path) && !o.trustTorchScript && runsTorchScript(run.model.path)) {
    throw refuseError(invalidArgument('model.path', 'a model that is not TorchScript (a TorchScript model runs arbitrary code: this worker refuses it unless started with --trust-torchscript)', run.model.path));
  }
  try {
    fs.mkdirSync(data.out, { recursive: true });
    fs.accessSync(data.out, fs.constants.W_OK);
  } catch (e) {
    throw refuse('ERR_IO', `cannot write the experiment folder ${data.out} on this worker: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return run;
}

interface Active { job: Job<JobData, JobResult>; controller: AbortController; graceful: AbortController; stopAtEpoch: boolean; cancelled: boolean }

/**
 * Takes runs from the queue and executes each with the local runner into its experiment's run
 * folder, until `idleExitSec` without work or a stop signal. Resolves with what it did.
 */
export async function worker(opts: WorkerOptions): Promise<WorkerReport> {
  const q = queueOptions(opts.queue);
  const build = opts.build ?? currentBuild();
  const roots = (opts.roots && opts.roots.length > 0 ? opts.roots : [process.cwd()]).map((r) => path.resolve(r));
  for (const r of roots) {
    if (!fs.existsSync(r) || !fs.statSync(r).isDirectory()) throw invalidArgument('--root', 'an existing directory', r);
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
  const sub = redisClient(q);
  const client = redisClient(q);
  await ready(Promise.all([sub.connect(), client.connect()]), q, client);
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

  // what Redis gets, after the runs have ended, to acknowledge a stop (then: disconnect by force)
  const deadlineMs = opts.closeDeadlineMs ?? 5000;
  // unref'd: a deadline never keeps a process alive that has nothing else to do
  const timeout = (ms: number) => new Promise<false>((resolve) => { setTimeout(() => resolve(false), ms).unref(); });
  // a stop's deadline for Redis runs from the end of the run it stopped (its checkpoint written):
  // moving the job back and closing share it, so the worker exits within it plus the forced
  // disconnect (docs/reliability.md: 10 s)
  let redisBy = 0;
  const redisLeft = () => (redisBy ? Math.max(0, redisBy - Date.now()) : deadlineMs);
  const process_ = async (job: Job<JobData, JobResult>, token?: string): Promise<JobResult> => {
    const data = job.data;
    if (data.format !== 1) throw refuse('ERR_FORMAT', `job format ${String(data.format)} is not understood by this worker (fisherlens ${build.version})`);
    const cancelledAt = Number(await client.hget(cancelKey(q.name), data.experiment) ?? 0);
    if (cancelledAt > data.submittedAt) throw refuse('ERR_ABORTED', `cancelled (fisherlens cancel ${data.experiment})`);
    checkJob(data, { build, roots, trustTorchScript: opts.trustTorchScript ?? false });
    const controller = new AbortController();
    const graceful = new AbortController();
    if (opts.signal?.aborted) graceful.abort();
    const a: Active = { job, controller, graceful, stopAtEpoch: Boolean(opts.signal?.aborted), cancelled: false };
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
        stopAtBatch: graceful.signal, stopGraceSec: opts.graceSec ?? GRACE_DEFAULT_SEC, checkpointEvery: opts.checkpointEvery, tensorboard: opts.tensorboard,
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
      // the run has ended (a stopped one with its checkpoint written): from here Redis gets the
      // close deadline, so a worker whose Redis has gone still exits within it after the checkpoint
      active.delete(job.id!);
      if (closing) redisBy ||= Date.now() + deadlineMs;
      await Promise.race([pending, timeout(redisLeft())]);
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
        report.requeued.push(data.runId);
        if (await Promise.race([job.moveToWait(token).then(() => true), timeout(redisLeft())])) {
          log(`stopped ${data.runId} with its checkpoint; back in the queue`);
        } else {
          // its lock expires and a worker's stalled check hands it on once Redis is back
          log(`stopped ${data.runId} with its checkpoint; Redis at ${maskUrl(q.url)} did not answer within ${deadlineMs / 1000} s: the run goes back to the queue when Redis does`);
        }
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
    connection: connection(q, true),
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
  await ready(w.waitUntilReady(), q);
  log(`ready on ${maskUrl(q.url)} queue '${q.name}' (roots ${roots.join(', ')})`);

  // Stopping: BullMQ's close starts at once; the active runs end by themselves (at an epoch end, or
  // at once after stopNow); then the close gets closeDeadlineMs to reach Redis, after which every
  // connection is dropped by force. Without the deadline a worker whose Redis has gone never stops (BullMQ retries forever).
  const graceSec = opts.graceSec ?? GRACE_DEFAULT_SEC;
  let onStopped: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => { onStopped = resolve; });
  let closing: Promise<void> | undefined;
  let unanswered = false;
  const close = () => {
    closing ??= (async () => {
      // closing at once stops the worker taking jobs (a run handed back would be taken again)
      const closed = w.close().then(() => true, () => true);
      while (active.size > 0) await sleep(100);
      if (!(await Promise.race([closed, timeout(redisLeft())]))) {
        log(`Redis at ${maskUrl(q.url)} did not acknowledge the close within ${deadlineMs / 1000} s: disconnecting`);
        unanswered = true;
        await Promise.race([w.disconnect().catch(() => undefined), timeout(1000)]);
      }
    })().finally(onStopped);
    return closing;
  };
  const onStop = () => {
    log(`stopping: active runs checkpoint at their next batch boundary and go back to the queue (within ${graceSec} s)`);
    for (const a of active.values()) { a.stopAtEpoch = true; a.graceful.abort(); }
    // past the grace, whatever a run is doing: it stops at once with its last checkpoint
    if (active.size > 0) setTimeout(() => { for (const a of active.values()) a.controller.abort(); }, graceSec * 1000).unref();
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
    if (!closing && active.size === 0 && Date.now() - lastBusy > opts.idleExitSec! * 1000) {
      log(`idle for ${opts.idleExitSec} s: exiting`);
      void close();
    }
  }, Math.min(1000, opts.idleExitSec * 500)) : undefined;
  try {
    // run() resolves once the worker is closed, but not when its connection was dropped by force
    await Promise.race([w.run(), stopped]);
    await close();
  } finally {
    if (idle) clearInterval(idle);
    opts.signal?.removeEventListener('abort', onStop);
    opts.stopNow?.removeEventListener('abort', onStopNow);
    // a Redis that did not answer the close will not answer QUIT either
    if (!unanswered) await Promise.race([Promise.allSettled([sub.quit(), client.quit()]), timeout(1000)]);
    sub.disconnect();
    client.disconnect();
  }
  return report;
}

/** Deterministic failures fail once (UnrecoverableError); others are retried with backoff. */
function classify(e: Error & { code?: string }): Error {
  const msg = `${e.code ? `${e.code}: ` : ''}${e.message.split('\n')[0]}`;
  return e.code !== undefined && DETERMINISTIC.has(e.code) ? new (bull().UnrecoverableError)(msg) : new Error(msg);
}
