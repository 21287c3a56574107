/**
 * What travels on the queue and how to reach it (lib/experiment/queue.ts describes the design):
 * the queue options, a job's data, progress and result, the build a job carries, job ids, and the
 * Redis and BullMQ connections (loaded on first use) that the submitter (queue.ts), the worker
 * (worker.ts) and status and cancel (queue-status.ts) share.
 */
import * as crypto from 'crypto';
import type IORedis from 'ioredis';
import { FisherLensError, invalidArgument } from '../util/errors';
import { packageVersion, nativeSourceHash } from '../util/version';
import type { ExperimentConfig, ResolvedRun } from './config';
import type { RunProgress } from './executor';
import type { EpochRecord, RunSummary } from './rundir';
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
export function bull(): typeof import('bullmq') {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return require('bullmq') as typeof import('bullmq');
}

export const DEFAULT_QUEUE = 'fisherlens';
/** Error codes of deterministic failures: retrying them on another worker would fail the same way. */
export const DETERMINISTIC = new Set<string>(['ERR_CONFIG', 'ERR_ARG', 'ERR_IO', 'ERR_FORMAT', 'ERR_SHAPE', 'ERR_DTYPE', 'ERR_VALUE', 'ERR_ABORTED']);

export function queueOptions(q: string | QueueOptions): Required<Omit<QueueOptions, 'detach'>> & { detach: boolean } {
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

/** What a queue URL is (`--queue` of the CLI). */
export const QUEUE_URL = 'redis://[:PASSWORD@]HOST:PORT[/DB] or rediss://… (TLS)';

export function checkUrl(url: string): void {
  if (!/^rediss?:\/\/[^\s]+$/.test(url)) throw invalidArgument('--queue', QUEUE_URL, maskUrl(url));
}

/** ioredis options for BullMQ: blocking workers need maxRetriesPerRequest null. */
export function connection(url: string, worker: boolean): { url: string; maxRetriesPerRequest: number | null; connectTimeout: number } {
  return { url, maxRetriesPerRequest: worker ? null : 3, connectTimeout: 10000 };
}

/** Waits until a BullMQ object (or ioredis client) is connected; ERR_IO naming the masked URL otherwise. */
export async function ready<T>(what: Promise<T>, url: string, client?: IORedis, timeoutMs = 15000): Promise<T> {
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

export function redisClient(url: string): IORedis {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const Redis = (require('ioredis') as { default: typeof IORedis }).default;
  // a bounded number of reconnection attempts, so a wrong URL fails instead of hanging
  const client = new Redis(url, { maxRetriesPerRequest: 3, connectTimeout: 10000, lazyConnect: true, retryStrategy: (n) => (n > 3 ? null : Math.min(n * 200, 1000)) });
  client.on('error', (e: Error) => { lastRedisError.set(client, e.message); });
  return client;
}

/** The last connection error of each client (ioredis reports 'Connection is closed' once it gives up). */
export const lastRedisError = new WeakMap<object, string>();

/** Redis server time in ms (one clock for every machine, for cancel-vs-enqueue order). */
export async function redisTime(client: IORedis): Promise<number> {
  const [s, us] = await client.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

export const cancelChannel = (queue: string) => `fisherlens:${queue}:cancel`;
export const cancelKey = (queue: string) => `fisherlens:${queue}:cancelled`;

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

/** Waits `ms`, or less when `signal` aborts. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); }
    signal?.addEventListener('abort', done, { once: true });
  });
}

