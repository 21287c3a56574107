/**
 * What travels on the queue and how to reach it (lib/experiment/queue.ts describes the design):
 * the queue options, a job's data, progress and result, the build a job carries, job ids, and the
 * Redis and BullMQ connections (loaded on first use) that the submitter (queue.ts), the worker
 * (worker.ts) and status and cancel (queue-status.ts) share.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
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
  /** With a rediss:// URL: the CA file that signed the server's certificate, and a client certificate and key (default: the system's CAs, no client certificate). */
  tls?: QueueTls;
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
  /** How long Redis keeps finished jobs (default RETENTION.completed); their run folders stay. */
  keepCompleted?: KeepJobs;
  /** How long Redis keeps failed jobs and their reasons (default RETENTION.failed). */
  keepFailed?: KeepJobs;
}

/**
 * TLS of a rediss:// queue, as PEM files: `ca` the certificate authority that signed the server's
 * certificate (default: the system's), `cert` and `key` this client's certificate and key, for a
 * server that asks for one (Redis's tls-auth-clients). The server's name is checked against its
 * certificate (the URL's host).
 */
export interface QueueTls { ca?: string; cert?: string; key?: string }

/** A Redis server to connect to: its URL and, for rediss://, the TLS files. */
export interface RedisTarget { url: string; tls?: QueueTls }

/** The TLS options, each declared once: the API's field, the CLI's flag and its help. */
export const QUEUE_TLS_OPTIONS = {
  ca: { flag: '--tls-ca <file>', doc: "with rediss://: PEM file of the CA that signed the Redis server's certificate (default: the system's CAs)" },
  cert: { flag: '--tls-cert <file>', doc: 'with rediss://: PEM file of this client\'s certificate, for a server that asks for one (needs --tls-key)' },
  key: { flag: '--tls-key <file>', doc: 'with rediss://: PEM file of the private key of --tls-cert' },
} as const;

function checkTls(url: string, tls: QueueTls | undefined): QueueTls {
  const t = tls ?? {};
  const given = (Object.keys(QUEUE_TLS_OPTIONS) as (keyof QueueTls)[]).filter((k) => t[k] !== undefined);
  if (given.length === 0) return {};
  const flag = (k: keyof QueueTls) => QUEUE_TLS_OPTIONS[k].flag.split(' ')[0];
  if (!/^rediss:\/\//.test(url)) throw invalidArgument(given.map(flag).join(', '), `a rediss:// URL with ${given.length > 1 ? 'them' : 'it'} (TLS)`, maskUrl(url));
  if ((t.cert === undefined) !== (t.key === undefined)) throw invalidArgument(t.cert === undefined ? '--tls-key' : '--tls-cert', `${t.cert === undefined ? '--tls-cert' : '--tls-key'} with it (a client certificate and its key)`);
  for (const k of given) {
    try {
      fs.accessSync(t[k]!, fs.constants.R_OK);
    } catch (e) {
      throw new FisherLensError('ERR_IO', `${flag(k)} '${t[k]}': cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  }
  return t;
}

/** ioredis's tls option for a target: the files read; undefined for redis://. */
function tlsOptions(t: RedisTarget): { ca?: Buffer; cert?: Buffer; key?: Buffer } | undefined {
  if (!/^rediss:\/\//.test(t.url)) return undefined;
  const read = (f?: string) => (f === undefined ? undefined : fs.readFileSync(f));
  return { ...(t.tls?.ca ? { ca: read(t.tls.ca) } : {}), ...(t.tls?.cert ? { cert: read(t.tls.cert), key: read(t.tls.key) } : {}) };
}

/**
 * What a failed TLS handshake of a rediss:// connection means, for the user (Node's and OpenSSL's
 * error texts; `withCert`: a client certificate was given), or undefined when `why` is no TLS failure.
 */
export function tlsCause(why: string, withCert: boolean): string | undefined {
  if (/altnames|Hostname\/IP does not match|ERR_TLS_CERT_ALTNAME_INVALID/i.test(why)) return "the server's certificate is not for this host name (wrong hostname: connect by a name the certificate lists)";
  if (/self[- ]signed certificate|unable to verify the first certificate|unable to get (local )?issuer certificate|UNABLE_TO_VERIFY_LEAF_SIGNATURE|certificate signature failure/i.test(why)) return "the server's certificate is not signed by a CA this client trusts (unknown CA: give the CA's file with --tls-ca)";
  if (/certificate has expired|CERT_HAS_EXPIRED/i.test(why)) return "the server's certificate has expired";
  if (/certificate required|peer did not return a certificate|alert handshake failure/i.test(why)) return 'the server requires a client certificate (missing client certificate: give --tls-cert and --tls-key)';
  if (/unknown ca|bad certificate|certificate unknown|decrypt error/i.test(why)) return 'the server refused this client\'s certificate (not signed by a CA it trusts)';
  if (/wrong version number|packet length too long|EPROTO/i.test(why)) return 'TLS handshake failed (a rediss:// URL to a port that does not speak TLS, or the reverse)';
  // TLS 1.3: the client's certificate goes after the handshake, and a server that refuses it (or
  // its absence) may just close the connection
  if (/ECONNRESET|socket hang up/i.test(why)) {
    return withCert ? "the server closed the connection at the TLS handshake: it refused this client's certificate (not signed by a CA it trusts)"
      : 'the server closed the connection at the TLS handshake: it requires a client certificate (missing client certificate: give --tls-cert and --tls-key)';
  }
  return undefined;
}

/**
 * Retention of ended jobs in Redis (BullMQ's removeOnComplete/removeOnFail, applied when a later
 * job of the queue ends): none older than `age` seconds, at most the newest `count`.
 */
export interface KeepJobs { age?: number; count?: number }

/**
 * The retention defaults, declared once (the CLI's --keep-completed/--keep-failed and their help
 * read them): finished runs for 7 days or the newest 1000, failed ones (whose reasons `status`
 * shows) for 30 days or the newest 5000. `status` reports runs whose jobs were removed from their
 * run folders, so retention loses no result.
 */
export const RETENTION: { completed: Required<KeepJobs>; failed: Required<KeepJobs> } = {
  completed: { age: 7 * 86400, count: 1000 },
  failed: { age: 30 * 86400, count: 5000 },
};

const AGE_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** An age with a unit: '90s', '30m', '12h', '7d' → seconds; ERR_ARG naming the flag otherwise. */
export function parseAge(flag: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)([smhd])$/.exec(v.trim());
  if (!m) throw invalidArgument(flag, 'an age such as 90s, 30m, 12h or 7d', v);
  return Number(m[1]) * AGE_UNITS[m[2]];
}

/** A retention: 'AGE' (90s, 12h, 7d), 'COUNT' (a whole number) or both, 'AGE,COUNT'. */
export function parseKeep(flag: string, v: string): KeepJobs {
  const k: KeepJobs = {};
  for (const part of v.split(',').map((x) => x.trim())) {
    if (/^\d+$/.test(part)) {
      if (k.count !== undefined) throw new FisherLensError('ERR_ARG', `${flag}: two counts in '${v}'`);
      k.count = Number(part);
    } else {
      if (k.age !== undefined) throw new FisherLensError('ERR_ARG', `${flag}: two ages in '${v}'`);
      try {
        k.age = parseAge(flag, part);
      } catch {
        throw invalidArgument(flag, 'AGE (90s, 30m, 12h, 7d), COUNT (a whole number) or AGE,COUNT', v);
      }
    }
  }
  return k;
}

function checkKeep(name: string, k: KeepJobs | undefined, dflt: Required<KeepJobs>): KeepJobs {
  if (k === undefined) return { ...dflt };
  for (const [f, x] of Object.entries(k)) {
    if (!['age', 'count'].includes(f) || typeof x !== 'number' || !Number.isFinite(x) || x < 0) {
      throw invalidArgument(`${name}.${f}`, 'a number ≥ 0 (age in s, count of jobs)', x);
    }
  }
  return { ...k };
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
  /** 'folder': its job was removed from Redis (retention, `queue clean`); the state is its run folder's. */
  source?: 'folder';
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
  const o: QueueOptions = typeof q === 'string' ? { url: q } : q;
  checkUrl(o.url);
  return {
    url: o.url, tls: checkTls(o.url, o.tls), name: o.name ?? DEFAULT_QUEUE, detach: o.detach ?? false, pollMs: o.pollMs ?? 1000,
    attempts: o.attempts ?? 3, backoffMs: o.backoffMs ?? 10000,
    keepCompleted: checkKeep('keepCompleted', o.keepCompleted, RETENTION.completed), keepFailed: checkKeep('keepFailed', o.keepFailed, RETENTION.failed),
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

/** A command that Redis does not answer (a hung server) fails after this long, in ms. */
export const COMMAND_TIMEOUT_MS = 15000;

/**
 * ioredis options for BullMQ: blocking workers need maxRetriesPerRequest null (their stop has a
 * deadline instead, worker.ts); submitters fail a command after 3 reconnections or
 * COMMAND_TIMEOUT_MS without an answer.
 */
export function connection(t: RedisTarget, worker: boolean): { url: string; maxRetriesPerRequest: number | null; connectTimeout: number; commandTimeout?: number; tls?: object } {
  const tls = tlsOptions(t);
  return { url: t.url, maxRetriesPerRequest: worker ? null : 3, connectTimeout: 10000, ...(worker ? {} : { commandTimeout: COMMAND_TIMEOUT_MS }), ...(tls ? { tls } : {}) };
}

/** ioredis's and BullMQ's connection failures ('Connection is closed', retries exhausted, timeouts, socket errors). */
export function isConnectionError(e: unknown): boolean {
  const m = e instanceof Error ? e.message : String(e);
  return /max retries per request|Connection is closed|Command timed out|Stream isn't writeable|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|socket/i.test(m);
}

/** A connection failure after connecting as ERR_IO naming the masked URL; other errors unchanged. */
export function lostRedis(e: unknown, url: string): unknown {
  if (e instanceof FisherLensError || !isConnectionError(e)) return e;
  return new FisherLensError('ERR_IO', `lost Redis at ${maskUrl(url)}: ${(e as Error).message.split('\n')[0]}`);
}

/** Resolves when `what` settles or after `ms`, whichever is first (closing connections to a server that is gone). */
export async function settleWithin(what: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([what.catch(() => undefined), new Promise<void>((resolve) => { timer = setTimeout(resolve, ms); })]);
  clearTimeout(timer);
}

/** Waits until a BullMQ object (or ioredis client) is connected; ERR_IO naming the masked URL otherwise. */
export async function ready<T>(what: Promise<T>, target: RedisTarget, client?: IORedis, timeoutMs = 15000): Promise<T> {
  const url = target.url;
  let timer: NodeJS.Timeout | undefined;
  // a certificate the other side refuses does not heal by retrying: fail at the first (a reset
  // connection may be transient, and is retried)
  let onError: ((e: Error) => void) | undefined;
  const certificate = new Promise<never>((_, reject) => {
    onError = (e: Error) => { if (/^rediss:\/\//.test(url) && !/ECONNRESET|socket hang up/i.test(e.message) && tlsCause(e.message, false)) reject(e); };
  });
  client?.on('error', onError!);
  try {
    return await Promise.race([
      what, certificate,
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs / 1000} s`)), timeoutMs); }),
    ]);
  } catch (e) {
    const why = (client && lastRedisError.get(client)) ?? (e as Error).message;
    const tls = /^rediss:\/\//.test(url) ? tlsCause(why, target.tls?.cert !== undefined) : undefined;
    throw new FisherLensError('ERR_IO', `cannot reach Redis at ${maskUrl(url)}: ${tls ? `TLS: ${tls} (${why})` : why}`);
  } finally {
    clearTimeout(timer);
    client?.off('error', onError!);
  }
}

export function redisClient(t: RedisTarget): IORedis {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const Redis = (require('ioredis') as { default: typeof IORedis }).default;
  // a bounded number of reconnection attempts, so a wrong URL fails instead of hanging
  const tls = tlsOptions(t);
  const client = new Redis(t.url, { ...(tls ? { tls } : {}), maxRetriesPerRequest: 3, connectTimeout: 10000, commandTimeout: COMMAND_TIMEOUT_MS, lazyConnect: true, retryStrategy: (n) => (n > 3 ? null : Math.min(n * 200, 1000)) });
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
/** A Redis set of the sweeps enqueued on a queue, JSON {experiment, out}: `status` reads their run folders once their jobs are removed. */
export const sweepsKey = (queue: string) => `fisherlens:${queue}:sweeps`;
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

