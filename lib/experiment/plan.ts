/**
 * Planning a sweep: what runExperiment takes and reports (options, events, results), which runs a
 * config expands to, where their folders go and what state each is in, and the check that a
 * folder's runs belong to the same config. Used by the local runner (runner.ts) and the queue
 * submitter (queue.ts) alike; runs nothing.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError } from '../util/errors';
import { ExperimentConfig, ExperimentInput, ResolvedRun, ResolvedRunSchema } from './config';
import { expandRuns, firstDifference, loadConfig, validateExperiment, withoutDevice } from './grid';
import { RunExecutor, RunProgress } from './executor';
import type { QueueOptions } from './queue-jobs';
import { EpochRecord, RunDir, RunState, RunSummary, SUMMARY_VERSION, readJson } from './rundir';

/** Events of a sweep, in order: plan, then per run start/skip → progress/epoch… → end/error, then done. */
export type ExperimentEvent =
  | { type: 'plan'; out: string; runs: { id: string; state: RunState; cost: number }[] }
  | { type: 'run-skip'; runId: string; index: number; total: number; reason: 'finished' | 'filtered' | 'unfinished' }
  | { type: 'run-start'; runId: string; index: number; total: number; resume: boolean }
  | ({ type: 'progress'; runId: string; index: number; total: number;
    /** Share of the whole sweep's estimated work done, in [0, 1] (finished/skipped runs count as done). */
    overall: number } & RunProgress)
  | { type: 'epoch'; runId: string; record: EpochRecord }
  | { type: 'run-end'; runId: string; summary: RunSummary }
  | { type: 'run-error'; runId: string; error: Error & { code?: string } }
  | { type: 'done'; result: ExperimentResult };

export interface RunExperimentOptions {
  /** Output folder (default: config.out, else `runs/<config.name>`). */
  out?: string;
  /** Device for every run ('cpu' | 'cuda' | 'cuda:N'; default: the config's). */
  device?: string;
  /** Aborts the sweep; the current run keeps its last checkpoint and resumes on the next call. */
  signal?: AbortSignal;
  /** Graceful stop (SIGTERM): the current run checkpoints at its next batch boundary and the sweep stops. */
  stopAtBatch?: AbortSignal;
  /** With stopAtBatch: the grace in s; a batch that cannot end in time is abandoned and the last boundary checkpointed (TrainOptions.stopGraceSec). */
  stopGraceSec?: number;
  /** Mid-epoch checkpoints of every run ('500b', '300s', 'off'), overriding the config's train.checkpointEvery. */
  checkpointEvery?: string;
  /** false: no TensorBoard event files in any run folder, whatever the config's `tensorboard` says (`--no-tensorboard`). */
  tensorboard?: boolean;
  onEvent?: (e: ExperimentEvent) => void;
  /** Who trains and evaluates a run (default: the real one, science.ts defaultExecutor()). */
  executor?: RunExecutor;
  /** Run only these run ids (others are listed as skipped: 'filtered'). */
  only?: string[];
  /** Keep going with the next run when one fails (default true); failures land in <run>/error.json. */
  continueOnError?: boolean;
  /**
   * Re-evaluate instead of train: every finished run's checkpoint is evaluated with the config's
   * current `eval` section (the rest of its config must be unchanged), and its config.json and
   * summary.json are rewritten (`reevaluatedAt` added). Unfinished runs are left alone ('pending').
   */
  reevaluate?: boolean;
  /** Refuse a config that expands to more runs than this (default config.ts MAX_RUNS, 10 000). */
  maxRuns?: number;
  /**
   * Put the runs on a BullMQ queue (`redis://HOST:PORT[/DB]` or queue options) instead of running
   * them here: workers (`fisherlens worker`, {@link worker}) execute them; this call follows the
   * sweep (same events) until every run is finished or failed, or returns after enqueuing
   * (`detach`). See queue.ts.
   */
  queue?: string | QueueOptions;
}

export interface RunOutcome {
  id: string;
  status: 'finished' | 'skipped' | 'failed' | 'aborted' | 'filtered' | 'pending';
  summary?: RunSummary;
  error?: string;
}

export interface ExperimentResult {
  out: string;
  runs: RunOutcome[];
  /** Runs finished in this call. */
  finished: number;
  /** Runs already finished before this call. */
  skipped: number;
  failed: number;
  /** True when the signal stopped the sweep (the remaining runs are 'pending'). */
  aborted: boolean;
}

/** Resolves a config argument: a path (YAML/JSON), a parsed object (validated) or a validated config. */
export function resolveConfig(config: ExperimentConfig | ExperimentInput | string): ExperimentConfig {
  return typeof config === 'string' ? loadConfig(config) : validateExperiment(config);
}

/** expandRuns, with the config file's name in front of an error when the config came from a file. */
export function expand(cfg: ExperimentConfig, source: unknown, device?: string, maxRuns?: number): ResolvedRun[] {
  try {
    return expandRuns(cfg, { device, maxRuns });
  } catch (e) {
    if (typeof source === 'string' && e instanceof FisherLensError && e.code === 'ERR_CONFIG') {
      throw new FisherLensError('ERR_CONFIG', `${path.basename(source)}: ${e.message}`);
    }
    throw e;
  }
}

/** Refuses to mix configs in one folder: ERR_CONFIG when a run folder holds a different resolved run. */
export function checkRunFolders(out: string, runs: ResolvedRun[], opts: { reevaluate?: boolean } = {}): void {
  for (const run of runs) {
    const dir = RunDir.of(out, run.id);
    if (fs.existsSync(dir.config)) {
      // re-validated with today's schema: an option added since (with its default) is no difference
      const stored = readJson<ResolvedRun>(dir.config);
      const parsed = ResolvedRunSchema.safeParse(stored);
      const prev = parsed.success ? parsed.data : stored;
      // re-evaluation: only the eval section may differ
      const diff = opts.reevaluate
        ? firstDifference({ ...withoutDevice(prev), eval: undefined }, { ...withoutDevice(run), eval: undefined })
        : firstDifference(withoutDevice(prev), withoutDevice(run));
      if (diff) {
        const onlyEval = diff.startsWith('eval') && !opts.reevaluate;
        throw new FisherLensError('ERR_CONFIG',
          `${dir.dir} holds run '${run.id}' of a different config (${diff}); ` + (onlyEval
            ? 'only the evaluation changed: `fisherlens run CONFIG --reevaluate` evaluates the finished checkpoints with it'
            : 'use another --out or delete that folder to start it over'));
      }
      if (opts.reevaluate && fs.existsSync(dir.summary)) checkSummaryVersion(dir);
      // a checkpoint is continued (resume, re-evaluation): only a folder of this format continues exactly
      const state = dir.state();
      if (state === 'resumable') dir.checkFolderVersion('resumed');
      else if (state === 'finished' && opts.reevaluate) dir.checkFolderVersion('re-evaluated');
    }
  }
}

/** Default output folder of a config. */
export function defaultOut(config: ExperimentConfig): string {
  return config.out ?? path.join('runs', config.name);
}

/** Refuses a summary.json written by a newer FisherLens (its fields may mean something else); older ones are read. */
export function checkSummaryVersion(dir: RunDir): void {
  const v = (readJson<{ version?: unknown }>(dir.summary)).version;
  if (typeof v === 'number' && v > SUMMARY_VERSION) {
    throw new FisherLensError('ERR_FORMAT', `${dir.summary}: summary format version ${v} is newer than this FisherLens reads (${SUMMARY_VERSION}); upgrade FisherLens to re-evaluate it`);
  }
}

/** The runs of a config and the state of each under `out`, without running anything. */
export function planExperiment(config: ExperimentConfig | ExperimentInput | string, opts: { out?: string; device?: string; maxRuns?: number } = {}): { out: string; runs: { run: ResolvedRun; state: RunState }[] } {
  const cfg = resolveConfig(config);
  const out = path.resolve(opts.out ?? defaultOut(cfg));
  return { out, runs: expand(cfg, config, opts.device, opts.maxRuns).map((run) => ({ run, state: fs.existsSync(out) ? RunDir.of(out, run.id).state() : 'new' })) };
}
