/**
 * Status and cancel of queue sweeps (`fisherlens status`, `fisherlens cancel`): every run on the
 * queue with its state, and cancelling an experiment's runs on every machine (Redis pub/sub).
 */
import type { Queue } from 'bullmq';
import type IORedis from 'ioredis';
import { JobData, JobProgress, JobResult, QueueOptions, QueueRunStatus, bull, cancelChannel, cancelKey, connection, queueOptions, ready, redisClient, redisTime } from './queue-jobs';

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
