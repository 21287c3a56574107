/**
 * Sweeps on Slurm clusters without Redis: an sbatch script with one array task per unfinished
 * run; task k runs the k-th of them with the local runner (`fisherlens run CONFIG --only RUN_ID`)
 * into the experiment's folder on the shared filesystem, so skipping, resuming and `fisherlens
 * report` work as for a local sweep. Nothing from the config reaches the shell: run ids are
 * checked against the id alphabet and every word is single-quoted.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError, invalidArgument } from '../util/errors';
import { planExperiment, resolveConfig } from './plan';
import { writeFileAtomic } from '../util/files';

/** Options of {@link slurmScript}. */
export interface SlurmOptions {
  /** Output folder (default: the config's `out`, else runs/<name>), made absolute. */
  out?: string;
  /** Device of every run ('cuda' under `--gres=gpu:1`; default: the config's). */
  device?: string;
  /** Extra sbatch options, each becomes one `#SBATCH` line (e.g. ['--gres=gpu:1', '--time=04:00:00']). */
  sbatchArgs?: string[];
  /** Node executable on the compute nodes (default: this one, process.execPath). */
  node?: string;
  /** The fisherlens CLI script (default: this package's dist/lib/cli/main.js). */
  cli?: string;
  /** false: the tasks run with --no-tensorboard. */
  tensorboard?: boolean;
}

/** One shell word, single-quoted. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Splits `--slurm-args "--gres=gpu:1 --time=04:00:00"` into options; each must start with '-'. */
export function parseSbatchArgs(s: string | undefined): string[] {
  if (!s) return [];
  const args = s.trim().split(/\s+/).filter(Boolean);
  for (const a of args) {
    if (!a.startsWith('-') || /[\r\n]/.test(a)) {
      throw invalidArgument('--slurm-args', 'sbatch options like --gres=gpu:1 --time=04:00:00', a);
    }
  }
  return args;
}

/**
 * The sbatch script of a config: `#SBATCH --array=0-(n-1)` over its n unfinished runs, each task
 * `fisherlens run CONFIG --out OUT --only <run k>`. Returns the text and the runs in array order;
 * an empty list means every run is finished (no script is needed).
 */
export function slurmScript(configFile: string, opts: SlurmOptions = {}): { script: string; runs: string[]; out: string } {
  const config = path.resolve(configFile);
  const plan = planExperiment(config, { out: opts.out, device: opts.device });
  const runs = plan.runs.filter((r) => r.state !== 'finished').map((r) => r.run.id);
  for (const id of runs) {
    if (!/^[A-Za-z0-9._-]+$/.test(id)) throw new FisherLensError('ERR_CONFIG', `run id '${id}' has characters outside [A-Za-z0-9._-]`);
  }
  // #SBATCH lines are not shell: their values go unquoted, so keep them to a plain alphabet
  if (!/^[A-Za-z0-9._/+-]+$/.test(plan.out)) throw invalidArgument('--out', 'a Slurm output folder of letters, digits and . _ / + - only', plan.out);
  const name = resolveConfig(config).name;
  const node = opts.node ?? process.execPath;
  const cli = opts.cli ?? path.resolve(__dirname, '..', 'cli', 'main.js');
  const device = opts.device ? ` --device ${shellQuote(opts.device)}` : '';
  const lines = [
    '#!/bin/bash',
    `#SBATCH --job-name=fisherlens-${name}`,
    `#SBATCH --array=0-${Math.max(0, runs.length - 1)}`,
    `#SBATCH --output=${path.join(plan.out, 'slurm-%A_%a.log')}`,
    // preemption: SIGTERM 120 s before the time limit (the run checkpoints at its next batch
    // boundary within its 30 s grace and exits 143), and a preempted task goes back to the queue
    ...((opts.sbatchArgs ?? []).some((a) => a.startsWith('--signal')) ? [] : ['#SBATCH --signal=B:TERM@120']),
    ...((opts.sbatchArgs ?? []).some((a) => a.startsWith('--requeue') || a.startsWith('--no-requeue')) ? [] : ['#SBATCH --requeue']),
    ...(opts.sbatchArgs ?? []).map((a) => `#SBATCH ${a}`),
    '# Written by `fisherlens run CONFIG --slurm FILE`: one array task per run that was unfinished then.',
    '# Submit with `sbatch FILE`; afterwards `fisherlens report OUT`. Re-running `fisherlens run --slurm`',
    '# writes a new script with the runs still unfinished (finished ones are skipped, others resume).',
    'set -euo pipefail',
    `cd ${shellQuote(process.cwd())}`,
    `RUNS=(${runs.map(shellQuote).join(' ')})`,
    ': "${SLURM_ARRAY_TASK_ID:?this script runs as a Slurm array task (sbatch), or set SLURM_ARRAY_TASK_ID=k}"',
    'if (( SLURM_ARRAY_TASK_ID < 0 || SLURM_ARRAY_TASK_ID >= ${#RUNS[@]} )); then',
    '  echo "fisherlens: SLURM_ARRAY_TASK_ID=$SLURM_ARRAY_TASK_ID is outside 0..$(( ${#RUNS[@]} - 1 ))" >&2; exit 2',
    'fi',
    `exec ${shellQuote(node)} ${shellQuote(cli)} run ${shellQuote(config)} --out ${shellQuote(plan.out)}${device} --only "\${RUNS[$SLURM_ARRAY_TASK_ID]}" --no-progress${opts.tensorboard === false ? ' --no-tensorboard' : ''}`,
    '',
  ];
  return { script: lines.join('\n'), runs, out: plan.out };
}

/** Writes the sbatch script of a config to `file` (executable). */
export function writeSlurmScript(configFile: string, file: string, opts: SlurmOptions = {}): { runs: string[]; out: string } {
  const { script, runs, out } = slurmScript(configFile, opts);
  fs.mkdirSync(out, { recursive: true }); // sbatch writes the task logs there
  writeFileAtomic(file, script);
  fs.chmodSync(file, 0o755);
  return { runs, out };
}
