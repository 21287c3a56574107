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
import * as fs from 'fs';
import * as path from 'path';
import type { Queue } from 'bullmq';
import { FisherLensError, ErrorCode, invalidArgument } from '../util/errors';
import type { ExperimentConfig, ExperimentInput, ResolvedRun } from './config';
import { estimateCost } from './executor';
import { RunDir } from './rundir';
import { ExperimentEvent, ExperimentResult, RunExperimentOptions, RunOutcome, checkRunFolders, planExperiment, resolveConfig } from './plan';
import { JobData, JobProgress, JobResult, bull, connection, currentBuild, jobIdOf, lostRedis, queueOptions, ready, redisClient, redisTime, settleWithin, sleep, sweepsKey } from './queue-jobs';

/** Queue sweeps run on other machines: data and model paths must not depend on a working folder. */
function checkAbsolutePaths(runs: ResolvedRun[]): void {
  for (const r of runs) {
    for (const [key, p] of [['data.root', r.data.root], ['model.path', r.model.path], ['model.weights', r.model.weights]] as const) {
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
  if (opts.executor) throw invalidArgument("runExperiment option 'executor'", "none with a queue (queue sweeps run on the workers' executor: pass `executor` to worker())", opts.executor);
  // the submitter sees the run folders when it shares the filesystem: refuse mixed configs early
  if (fs.existsSync(out)) checkRunFolders(out, runs);
  const emit = (e: ExperimentEvent) => {
    try { opts.onEvent?.(e); } catch { /* a throwing listener must not break following */ }
  };

  const queue = new (bull().Queue)<JobData, JobResult>(q.name, { connection: connection(q, false) });
  queue.on('error', () => { /* reported by the call that fails */ });
  const client = redisClient(q);
  try {
    await ready(Promise.all([client.connect(), queue.waitUntilReady()]), q, client);
    const now = await redisTime(client);
    // status finds this sweep's run folders when retention has removed its jobs
    await client.sadd(sweepsKey(q.name), JSON.stringify({ experiment: cfg.name, out }));
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
        // BullMQ's KeepJobs is a union of {age?, count} and {count}: ours is structurally the first
        removeOnComplete: q.keepCompleted as { age?: number; count: number }, removeOnFail: q.keepFailed as { age?: number; count: number },
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
  } catch (e) {
    throw lostRedis(e, q.url);
  } finally {
    // a server that has gone or hangs never acknowledges a close: 2 s, then drop the connections
    await settleWithin(Promise.allSettled([queue.close(), client.quit()]), 2000);
    client.disconnect();
    await settleWithin(queue.disconnect(), 1000);
  }
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
        if (fs.existsSync(dir.summary) && !finishedBefore.has(t.run.id)) {
          // finished while followed, and its job already removed by retention
          finished++;
          const summary = dir.readSummary();
          if (!s.started) emit({ type: 'run-start', ...base, resume: false });
          outcome.set(t.run.id, { id: t.run.id, status: 'finished', summary });
          emit({ type: 'run-end', runId: t.run.id, summary });
        } else if (fs.existsSync(dir.summary)) {
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
