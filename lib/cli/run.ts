import { CHECKPOINT_EVERY_DEFAULT, GRACE_DEFAULT_SEC, parseCheckpointEvery } from '../science/options';
import { RETENTION, KeepJobs, parseKeep } from '../experiment/queue-jobs';
import { Command } from 'commander';
import * as path from 'path';
import { action, deviceOption, emit, jsonOption, log, posInt, EXIT, QUEUE_URL, executorFromEnv, interruptController, preemptController, graceArg, tensorboardOption, tlsOptions, queueTarget, TlsCliOptions } from './common';
import { MAX_RUNS } from '../experiment/config';
import { runExperiment } from '../experiment/runner';
import { planExperiment, ExperimentResult } from '../experiment/plan';
import { SweepProgress } from '../experiment/progress';
import { writeReport } from '../report';
import { invalidArgument } from '../util/errors';
import { slurmCommand } from './queue';

/** Sets process.exitCode from a sweep result and prints its one-line outcome. */
export function finish(result: ExperimentResult): void {
  const pending = result.runs.filter((r) => r.status === 'pending' || r.status === 'aborted').length;
  log(`fisherlens: ${result.finished} run(s) finished now, ${result.skipped} earlier, ${result.failed} failed${pending ? `, ${pending} left (interrupted)` : ''}; runs in ${result.out}`);
  if (result.aborted) process.exitCode = stopCode ?? EXIT.interrupted;
  else if (result.failed > 0) process.exitCode = EXIT.runsFailed;
}

/** The exit code the last signal asked for (143 after SIGTERM, 130 after SIGINT). */
let stopCode: number | undefined;

export interface SweepCliOptions extends TlsCliOptions {
  out?: string; device?: string; only?: string; stopOnError?: boolean; report?: boolean; json?: boolean; progress?: boolean; maxRuns?: string;
  /** Queue sweeps (lib/cli/queue.ts): the Redis URL, and whether to return after enqueuing. */
  queue?: string; detach?: boolean;
  /** With --queue: how long Redis keeps finished and failed jobs ('AGE', 'COUNT' or 'AGE,COUNT'; queue-jobs.ts RETENTION). */
  keepCompleted?: string; keepFailed?: string;
  /** Local runs: mid-epoch checkpoints ('500b', '300s', 'off') and the SIGTERM grace in s. */
  checkpointEvery?: string; grace?: string;
  /** --no-tensorboard: false. */
  tensorboard?: boolean;
  /** Re-evaluate finished runs with the config's current eval section (runner.ts `reevaluate`). */
  reevaluate?: boolean;
}

/** Runs a config with progress and signal handling; used by `run` and `demo`. */
export async function runWithProgress(config: string, o: SweepCliOptions): Promise<ExperimentResult> {
  if (o.queue && o.tensorboard === false) {
    throw invalidArgument('--no-tensorboard', "no --queue with it (the workers write the run folders: `fisherlens worker --no-tensorboard`, or the config's `tensorboard: false`)");
  }
  const executor = o.queue ? undefined : executorFromEnv();
  const progress = new SweepProgress({ tty: o.progress === false ? false : undefined });
  if (o.checkpointEvery !== undefined) parseCheckpointEvery('--checkpoint-every', o.checkpointEvery);
  // a queue sweep: a signal stops following; a local one: the current run checkpoints at its next
  // batch boundary and the process exits within the grace (143 after SIGTERM)
  // (SIGINT, Ctrl-C: stop after the current step as before)
  const local = new AbortController();
  const pre = o.queue ? undefined : preemptController(o.grace !== undefined ? graceArg(o.grace) : GRACE_DEFAULT_SEC,
    'the current run checkpoints at its next batch boundary; finished runs are kept and the same command resumes',
    { what: 'stopping after the current step; finished runs are kept and the current run resumes from its checkpoint when you run the same command again', controller: local });
  const { controller, dispose } = o.queue ? interruptController('stopped following the sweep; its runs go on in the queue (fisherlens status --queue URL)')
    : { controller: local, dispose: () => pre!.dispose() };
  try {
    const result = await runExperiment(config, {
      out: o.out, device: o.device, signal: controller.signal, onEvent: progress.onEvent,
      stopAtBatch: pre?.stop.signal, stopGraceSec: pre?.graceSec, checkpointEvery: o.checkpointEvery, tensorboard: o.tensorboard === false ? false : undefined,
      only: o.only ? o.only.split(',').map((s) => s.trim()).filter(Boolean) : undefined,
      continueOnError: !o.stopOnError, executor, maxRuns: posInt('max-runs', o.maxRuns),
      reevaluate: o.reevaluate,
      ...(o.queue ? { queue: {
        ...queueTarget(o.queue, o), detach: Boolean(o.detach),
        ...(o.keepCompleted !== undefined ? { keepCompleted: parseKeep('--keep-completed', o.keepCompleted) } : {}),
        ...(o.keepFailed !== undefined ? { keepFailed: parseKeep('--keep-failed', o.keepFailed) } : {}),
      } } : {}),
    });
    stopCode = pre?.exitCode();
    return result;
  } finally {
    progress.stop();
    dispose();
  }
}

const keepText = (k: Required<KeepJobs>) => `${k.age / 86400}d,${k.count}`;

/** `fisherlens run CONFIG`: trains and evaluates every run of a config (skips finished, resumes unfinished). */
export function register(program: Command): void {
  const cmd = program
    .command('run')
    .description('run an experiment config (YAML/JSON): each grid point in its own folder; finished runs are skipped, unfinished ones resume from their checkpoint')
    .argument('<config>', 'experiment config file (.yaml, .yml or .json; see docs/experiments.md)')
    .option('-o, --out <dir>', 'output folder (default: the config\'s `out`, else runs/<name>)');
  deviceOption(cmd, "the config's device")
    .option('--only <ids>', 'run only these run ids (comma-separated)')
    .option('--stop-on-error', 'stop at the first failed run (default: record it and go on)')
    .option('--dry-run', 'print the runs and their state without running anything')
    .option('--reevaluate', "evaluate the finished runs' checkpoints with the config's current `eval` section and rewrite their summaries (no training)")
    .option('--max-runs <n>', `refuse a config that expands to more runs than this (default ${MAX_RUNS})`)
    .option('--report', 'write report.md / report.html into the output folder afterwards')
    .option('--no-progress', 'plain progress lines even on a terminal');
  tensorboardOption(cmd);
  jsonOption(tlsOptions(cmd))
    .option('--queue <url>', `enqueue the unfinished runs on BullMQ/Redis (${QUEUE_URL}) for \`fisherlens worker\`s, and follow them`)
    .option('--detach', 'with --queue: enqueue and return')
    .option('--keep-completed <keep>', `with --queue: how long Redis keeps finished jobs: AGE (90s, 12h, 7d), COUNT or AGE,COUNT (default ${keepText(RETENTION.completed)}; run folders stay)`)
    .option('--keep-failed <keep>', `with --queue: how long Redis keeps failed jobs and their reasons (default ${keepText(RETENTION.failed)})`)
    .option('--checkpoint-every <every>', `checkpoint inside epochs every N batches (500b) or S seconds (300s), or off (default: the config's train.checkpointEvery, else ${CHECKPOINT_EVERY_DEFAULT})`)
    .option('--grace <seconds>', `on SIGTERM/SIGINT: the current run checkpoints at its next batch boundary and the process exits (143 after SIGTERM) within this many seconds (default ${GRACE_DEFAULT_SEC}); a batch that cannot end in time is abandoned and the boundary before it checkpointed`)
    .option('--slurm <file>', 'write an sbatch script with one array task per unfinished run instead of running')
    .option('--slurm-args <args>', 'with --slurm: extra sbatch options, e.g. "--gres=gpu:1 --time=04:00:00"')
    .addHelpText('after', '\nExit codes: 0 all runs finished, 1 error, 2 usage, 3 some runs failed, 130 interrupted (re-run to resume).')
    .action(action(async (config: string, o: SweepCliOptions & { dryRun?: boolean; slurm?: string; slurmArgs?: string }) => {
      if (o.slurm) {
        if (o.queue) throw invalidArgument('--queue', 'nothing with --slurm (two ways to run a sweep elsewhere: choose one)');
        await slurmCommand(config, o.slurm, o);
        return;
      }
      if (o.detach && !o.queue) throw invalidArgument('--detach', '--queue with it');
      if ((o.keepCompleted !== undefined || o.keepFailed !== undefined) && !o.queue) throw invalidArgument('--keep-completed/--keep-failed', '--queue with them');
      if ((o.tlsCa ?? o.tlsCert ?? o.tlsKey) !== undefined && !o.queue) throw invalidArgument('--tls-ca/--tls-cert/--tls-key', '--queue with them');
      if (o.dryRun) {
        const plan = planExperiment(config, { out: o.out, device: o.device, maxRuns: posInt('max-runs', o.maxRuns) });
        emit(Boolean(o.json), { out: plan.out, runs: plan.runs.map((r) => ({ id: r.run.id, state: r.state, run: r.run })) },
          () => [`${plan.runs.length} runs in ${plan.out}:`, ...plan.runs.map((r) => `  ${r.run.id.padEnd(44)} ${r.state}`)].join('\n'));
        return;
      }
      const result = await runWithProgress(config, o);
      let report: string | undefined;
      if (o.report && !result.aborted && result.finished + result.skipped > 0) {
        const w = await writeReport(result.out);
        report = w.markdown;
        log(`fisherlens: report: ${path.relative(process.cwd(), w.html) || w.html}`);
      }
      emit(Boolean(o.json), { ...result, report }, () => result.runs.map((r) => `${r.id.padEnd(44)} ${r.status}${r.error ? `: ${r.error}` : ''}`).join('\n'));
      if (o.queue && o.detach) {
        log('fisherlens: enqueued; follow with `fisherlens status --queue URL`');
        return;
      }
      finish(result);
    }));
}
