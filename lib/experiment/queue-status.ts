/**
 * Status and cancel of queue sweeps (`fisherlens status`, `fisherlens cancel`): every run on the
 * queue with its state, and cancelling an experiment's runs on every machine (Redis pub/sub).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { Queue } from 'bullmq';
import type IORedis from 'ioredis';
import { RunDir } from './rundir';
import { JobData, JobProgress, JobResult, QueueOptions, QueueRunStatus, bull, cancelChannel, cancelKey, connection, queueOptions, ready, redisClient, redisTime, sweepsKey } from './queue-jobs';

async function openQueue(qo: string | QueueOptions): Promise<{ queue: Queue<JobData, JobResult>; client: IORedis; q: ReturnType<typeof queueOptions> }> {
  const q = queueOptions(qo);
  const queue = new (bull().Queue)<JobData, JobResult>(q.name, { connection: connection(q, false) });
  queue.on('error', () => { /* reported by the call that fails */ });
  const client = redisClient(q);
  try {
    await ready(Promise.all([client.connect(), queue.waitUntilReady()]), q, client);
  } catch (e) {
    await Promise.allSettled([queue.close(), client.quit()]);
    throw e;
  }
  return { queue, client, q };
}

const STATES = ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'] as const;

/** Every run on the queue (of one experiment, or all) with its state, worker, device, epoch and failure reason. */
export async function queueStatus(qo: string | QueueOptions, experiment?: string): Promise<QueueRunStatus[]> {
  const { queue, client, q } = await openQueue(qo);
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
    // runs whose jobs retention or `queue clean` removed: their run folders say how they ended
    const listed = new Set(out.map((r) => `${r.out}\n${r.runId}`));
    for (const m of await client.smembers(sweepsKey(q.name))) {
      let sweep: { experiment?: string; out?: string };
      try { sweep = JSON.parse(m) as typeof sweep; } catch { continue; }
      if (typeof sweep.experiment !== 'string' || typeof sweep.out !== 'string') continue;
      if (experiment !== undefined && sweep.experiment !== experiment) continue;
      out.push(...fromFolders(sweep.experiment, sweep.out, listed));
    }
    return out.sort((a, b) => a.experiment.localeCompare(b.experiment) || a.runId.localeCompare(b.runId));
  } finally {
    await Promise.allSettled([queue.close(), client.quit()]);
  }
}

/** The finished and failed runs of a sweep's folder that have no job (on a filesystem this process sees; none otherwise). */
function fromFolders(experiment: string, out: string, listed: Set<string>): QueueRunStatus[] {
  let names: string[];
  try { names = fs.readdirSync(out).filter((n) => fs.existsSync(path.join(out, n, 'config.json'))); } catch { return []; }
  const found: QueueRunStatus[] = [];
  for (const runId of names) {
    if (listed.has(`${out}\n${runId}`)) continue;
    const rd = RunDir.of(out, runId);
    const base = { experiment, runId, jobId: '', attempts: 0, out, source: 'folder' as const };
    try {
      if (fs.existsSync(rd.summary)) {
        const s = rd.readSummary();
        found.push({ ...base, state: 'finished', epoch: s.epochs, epochs: s.epochs });
      } else if (fs.existsSync(rd.error)) {
        const e = JSON.parse(fs.readFileSync(rd.error, 'utf8')) as { code?: string; message?: string };
        found.push({ ...base, state: 'failed', reason: `${e.code ? `${e.code}: ` : ''}${e.message ?? 'failed'}` });
      }
    } catch { /* a folder being written: the next status shows it */ }
  }
  return found;
}

/** What `fisherlens queue clean` removed: job ids by state. */
export interface CleanResult { completed: string[]; failed: string[] }

/**
 * Removes ended jobs from Redis now (what retention does over time): finished and/or failed jobs
 * older than `olderThanSec` (default 0: all). Run folders are untouched, so `status` and reports
 * still show those runs, and enqueuing again adds no duplicate of a finished run.
 */
export async function cleanQueue(qo: string | QueueOptions, o: { olderThanSec?: number; states?: ('completed' | 'failed')[] } = {}): Promise<CleanResult> {
  const { queue, client } = await openQueue(qo);
  try {
    const r: CleanResult = { completed: [], failed: [] };
    for (const st of o.states ?? ['completed', 'failed'] as const) {
      // limit 0: every matching job
      r[st] = (await queue.clean((o.olderThanSec ?? 0) * 1000, 0, st)).sort();
    }
    return r;
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
