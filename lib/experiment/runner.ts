/**
 * The experiment runner: expands a config into runs, gives each its directory (rundir.ts), skips
 * finished runs, resumes unfinished ones from their last checkpoint, and writes summary.json
 * atomically when a run is done. An interrupted sweep loses no finished work. The same function
 * backs `fisherlens run` and scripted sweeps (scripts/sweep.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError, invalidArgument } from '../util/errors';
import { ExperimentConfig, ExperimentInput } from './config';
import { modelLabel } from './grid';
import { estimateCost } from './executor';
import { defaultExecutor } from './science';
import { checkDevice } from '../binding/backend';
import { ExperimentEvent, ExperimentResult, RunExperimentOptions, checkRunFolders, defaultOut, expand, resolveConfig } from './plan';
import { ensureDir } from '../util/files';
import { FILES, RunDir, RunSummary, SUMMARY_VERSION, writeJsonAtomic } from './rundir';
import { runProvenance } from './provenance';

/** Errors of the environment (a missing module, no CUDA) rather than of a run: they stop the sweep. */
const ENVIRONMENT_ERRORS = new Set(['ERR_LOAD', 'ERR_DEVICE']);

/**
 * Runs every run of an experiment that is not finished yet. Finished runs (summary.json present)
 * are skipped; runs with a checkpoint resume from it. A run whose folder holds a config.json from
 * a different config is refused (ERR_CONFIG) before anything starts.
 */
export async function runExperiment(config: ExperimentConfig | ExperimentInput | string, opts: RunExperimentOptions = {}): Promise<ExperimentResult> {
  if (opts.queue !== undefined) {
    if (opts.reevaluate) throw invalidArgument('--reevaluate', 'no --queue with it (it runs locally on the finished run folders)');
    // loaded on demand: local sweeps never load the queue client
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const q = require('./queue') as typeof import('./queue');
    return q.runOnQueue(config, opts);
  }
  const cfg = resolveConfig(config);
  const out = path.resolve(opts.out ?? defaultOut(cfg));
  const runs = expand(cfg, config, opts.device, opts.maxRuns);
  const emit = (e: ExperimentEvent) => {
    try { opts.onEvent?.(e); } catch { /* a throwing listener must not break the sweep */ }
  };
  if (opts.only) {
    const ids = new Set(runs.map((r) => r.id));
    const unknown = opts.only.filter((id) => !ids.has(id));
    if (unknown.length > 0) {
      throw new FisherLensError('ERR_CONFIG', `--only: unknown run id(s) ${unknown.map((u) => `'${u}'`).join(', ')}; this config has: ${[...ids].join(', ')}`);
    }
  }
  const executor = opts.executor ?? defaultExecutor();
  if (!opts.executor) {
    // the built-in executor runs on LibTorch devices: refuse a missing one before anything starts
    for (const device of new Set(runs.map((r) => r.device))) checkDevice(device);
  }

  checkRunFolders(out, runs, { reevaluate: opts.reevaluate });
  ensureDir(out);
  for (const run of runs) {
    // a run folder that is a symlink would send every write of that run out of `out`
    const dir = RunDir.of(out, run.id).dir;
    if (fs.lstatSync(dir, { throwIfNoEntry: false })?.isSymbolicLink()) {
      throw new FisherLensError('ERR_IO', `${dir} is a symbolic link; run folders must be real folders inside ${out}`);
    }
  }
  writeJsonAtomic(path.join(out, FILES.experiment), { config: cfg, runs: runs.map((r) => r.id), writtenAt: new Date().toISOString() });

  const states = runs.map((r) => RunDir.of(out, r.id).state());
  const costs = runs.map((r) => estimateCost(r));
  const totalCost = costs.reduce((a, b) => a + b, 0) || 1;
  emit({ type: 'plan', out, runs: runs.map((r, i) => ({ id: r.id, state: states[i], cost: costs[i] })) });

  const result: ExperimentResult = { out, runs: [], finished: 0, skipped: 0, failed: 0, aborted: false };
  let doneCost = 0;
  const continueOnError = opts.continueOnError ?? true;
  for (let i = 0; i < runs.length; i++) {
    const run = runs[i];
    const dir = RunDir.of(out, run.id);
    const base = { runId: run.id, index: i, total: runs.length };
    if (result.aborted || opts.signal?.aborted || opts.stopAtBatch?.aborted) {
      result.aborted = true;
      result.runs.push({ id: run.id, status: 'pending' });
      continue;
    }
    if (opts.only && !opts.only.includes(run.id)) {
      result.runs.push({ id: run.id, status: 'filtered' });
      emit({ type: 'run-skip', ...base, reason: 'filtered' });
      doneCost += costs[i];
      continue;
    }
    if (opts.reevaluate && states[i] !== 'finished') {
      result.runs.push({ id: run.id, status: 'pending' });
      emit({ type: 'run-skip', ...base, reason: 'unfinished' });
      doneCost += costs[i];
      continue;
    }
    if (states[i] === 'finished' && !opts.reevaluate) {
      result.skipped++;
      result.runs.push({ id: run.id, status: 'skipped', summary: dir.readSummary() });
      emit({ type: 'run-skip', ...base, reason: 'finished' });
      doneCost += costs[i];
      continue;
    }
    // re-evaluation resumes from the final checkpoint: training has no epoch left, evaluation runs
    const resume = states[i] === 'resumable' || Boolean(opts.reevaluate);
    if (opts.reevaluate && !fs.existsSync(dir.checkpoint)) {
      throw new FisherLensError('ERR_IO', `${dir.dir}: finished but holds no checkpoint to re-evaluate`);
    }
    const previous = opts.reevaluate ? dir.readSummary() : undefined;
    if (!fs.existsSync(dir.config) || opts.reevaluate) writeJsonAtomic(dir.config, run);
    if (!resume) dir.writeFolderVersion();
    emit({ type: 'run-start', ...base, resume });
    const startedAt = new Date();
    try {
      const res = await executor.execute({
        run, dir, resume, signal: opts.signal, stopAtBatch: opts.stopAtBatch, stopGraceSec: opts.stopGraceSec, checkpointEvery: opts.checkpointEvery, tensorboard: opts.tensorboard,
        progress: (p) => emit({ type: 'progress', ...base, ...p, overall: Math.min(1, (doneCost + Math.max(0, Math.min(1, p.fraction)) * costs[i]) / totalCost) }),
        epoch: (record) => emit({ type: 'epoch', runId: run.id, record }),
      });
      const summary: RunSummary = {
        version: SUMMARY_VERSION,
        runId: run.id,
        model: modelLabel(run.model),
        arch: run.model.arch,
        method: run.train.method,
        seed: run.seed,
        dataset: run.data.dataset,
        gridPoint: run.gridPoint,
        startedAt: startedAt.toISOString(),
        finishedAt: new Date().toISOString(),
        seconds: (Date.now() - startedAt.getTime()) / 1000,
        provenance: runProvenance(run.device),
        ...res,
        // a re-evaluation keeps when the run was trained and how long that took
        ...(previous ? { startedAt: previous.startedAt, finishedAt: previous.finishedAt, seconds: previous.seconds, epochs: previous.epochs, reevaluatedAt: new Date().toISOString() } : {}),
      };
      writeJsonAtomic(dir.summary, summary);
      fs.rmSync(dir.error, { force: true });
      result.finished++;
      result.runs.push({ id: run.id, status: 'finished', summary });
      emit({ type: 'run-end', runId: run.id, summary });
    } catch (e) {
      const err: Error & { code?: string } = e instanceof Error ? e : new Error(String(e));
      if (err.code !== undefined && ENVIRONMENT_ERRORS.has(err.code)) {
        // the same failure would hit every run: stop the sweep, record nothing against this run
        throw err;
      }
      if (err.code === 'ERR_ABORTED' || opts.signal?.aborted) {
        result.aborted = true;
        result.runs.push({ id: run.id, status: 'aborted' });
        continue;
      }
      writeJsonAtomic(dir.error, { message: err.message, code: err.code, at: new Date().toISOString() });
      result.failed++;
      result.runs.push({ id: run.id, status: 'failed', error: `${err.code ? err.code + ': ' : ''}${err.message}` });
      emit({ type: 'run-error', runId: run.id, error: err });
      if (!continueOnError) {
        for (const rest of runs.slice(i + 1)) result.runs.push({ id: rest.id, status: 'pending' });
        break;
      }
    }
    doneCost += costs[i];
  }
  emit({ type: 'done', result });
  return result;
}
