import { Command } from 'commander';
import * as path from 'path';
import { action, deviceOption, emit, jsonOption, log, posInt, EXIT, QUEUE_URL, executorFromEnv, interruptController } from './common';
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
  if (result.aborted) process.exitCode = EXIT.interrupted;
  else if (result.failed > 0) process.exitCode = EXIT.runsFailed;
}

export interface SweepCliOptions {
  out?: string; device?: string; only?: string; stopOnError?: boolean; report?: boolean; json?: boolean; progress?: boolean; maxRuns?: string;
  /** Queue sweeps (lib/cli/queue.ts): the Redis URL, and whether to return after enqueuing. */
  queue?: string; detach?: boolean;
  /** Re-evaluate finished runs with the config's current eval section (runner.ts `reevaluate`). */
  reevaluate?: boolean;
}

/** Runs a config with progress and signal handling; used by `run` and `demo`. */
export async function runWithProgress(config: string, o: SweepCliOptions): Promise<ExperimentResult> {
  const executor = o.queue ? undefined : executorFromEnv();
  const progress = new SweepProgress({ tty: o.progress === false ? false : undefined });
  const { controller, dispose } = interruptController(o.queue ? 'stopped following the sweep; its runs go on in the queue (fisherlens status --queue URL)' : undefined);
  try {
    const result = await runExperiment(config, {
      out: o.out, device: o.device, signal: controller.signal, onEvent: progress.onEvent,
      only: o.only ? o.only.split(',').map((s) => s.trim()).filter(Boolean) : undefined,
      continueOnError: !o.stopOnError, executor, maxRuns: posInt('max-runs', o.maxRuns),
      reevaluate: o.reevaluate,
      ...(o.queue ? { queue: { url: o.queue, detach: Boolean(o.detach) } } : {}),
    });
    return result;
  } finally {
    progress.stop();
    dispose();
  }
}

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
  jsonOption(cmd)
    .option('--queue <url>', `enqueue the unfinished runs on BullMQ/Redis (${QUEUE_URL}) for \`fisherlens worker\`s, and follow them`)
    .option('--detach', 'with --queue: enqueue and return')
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
