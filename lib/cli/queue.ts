/**
 * Sweeps on other processes and machines: `fisherlens worker`, `fisherlens status` and
 * `fisherlens cancel` on a BullMQ/Redis queue (lib/experiment/queue.ts), and the Slurm script of
 * `fisherlens run CONFIG --slurm FILE` (lib/experiment/slurm.ts). `run --queue` itself lives in run.ts.
 */
import { Command } from 'commander';
import * as path from 'path';
import { action, deviceOption, emit, interruptStages, jsonOption, log, num, posInt, EXIT, QUEUE_URL, executorFromEnv } from './common';
import { worker } from '../experiment/worker';
import { queueStatus, cancelExperiment } from '../experiment/queue-status';
import { QueueRunStatus } from '../experiment/queue-jobs';
import { writeSlurmScript, parseSbatchArgs } from '../experiment/slurm';

/** `run CONFIG --slurm FILE`: writes the sbatch script of the unfinished runs. */
export async function slurmCommand(config: string, file: string, o: { out?: string; device?: string; slurmArgs?: string; json?: boolean }): Promise<void> {
  const w = writeSlurmScript(config, file, { out: o.out, device: o.device, sbatchArgs: parseSbatchArgs(o.slurmArgs) });
  if (w.runs.length === 0) log(`fisherlens: every run in ${w.out} is finished; ${file} has nothing to run`);
  else log(`fisherlens: ${file}: ${w.runs.length} array task(s); submit with \`sbatch ${file}\`, then \`fisherlens report ${w.out}\``);
  emit(Boolean(o.json), { file: path.resolve(file), out: w.out, runs: w.runs }, () => w.runs.map((r, i) => `${String(i).padStart(4)}  ${r}`).join('\n'));
}

function statusLine(s: QueueRunStatus): string {
  const where = s.worker ? ` on ${s.worker}${s.device ? ` (${s.device})` : ''}` : '';
  const epoch = s.epochs !== undefined && s.state !== 'finished' ? ` epoch ${s.epoch ?? 0}/${s.epochs}` : '';
  const pct = s.fraction !== undefined ? ` ${(s.fraction * 100).toFixed(0)}%` : '';
  const reason = s.reason ? `: ${s.reason.split('\n')[0]}` : '';
  return `${s.experiment.padEnd(16)} ${s.runId.padEnd(40)} ${s.state}${where}${epoch}${pct}${reason}`;
}

export function register(program: Command): void {
  const worker_ = program
    .command('worker')
    .description('take runs from a queue (`fisherlens run CONFIG --queue URL`) and execute them with the local runner; one worker per GPU')
    .requiredOption('--queue <url>', QUEUE_URL);
  deviceOption(worker_, "the config's device")
    .option('--concurrency <n>', 'runs at once in this process', '1')
    .option('--idle-exit <seconds>', 'exit after this many seconds without a job')
    .option('--root <dir>', 'a folder configs may read and write under (out, data.root, model.path); repeatable; default: the working folder',
      (v: string, prev: string[] = []) => [...prev, v])
    .option('--trust-torchscript', 'accept TorchScript models (they run arbitrary code)')
    .option('--lock-duration <ms>', 'lock of an active job: a dead worker\'s run is handed on after about this long', '30000')
    .option('--stalled-interval <ms>', 'period of the check for dead workers\' runs', '30000')
    .option('--max-stalls <n>', 'stalls (dead workers, preemptions) a run may suffer before it fails', '10')
    .addHelpText('after', '\n--device: every run this worker takes runs there (recorded in status).' +
      '\nSIGTERM/SIGINT: active runs stop at the end of their current epoch with a checkpoint and go back to the queue; a second signal stops them at once.')
    .action(action(async (o: { queue: string; device?: string; concurrency: string; idleExit?: string; root?: string[]; trustTorchscript?: boolean; lockDuration: string; stalledInterval: string; maxStalls: string }) => {
      const opts = {
        concurrency: posInt('concurrency', o.concurrency), idleExitSec: num('idle-exit', o.idleExit),
        lockDurationMs: posInt('lock-duration', o.lockDuration), stalledIntervalMs: posInt('stalled-interval', o.stalledInterval),
        maxStalledCount: posInt('max-stalls', o.maxStalls),
      };
      const interrupt = interruptStages([
        'active runs stop at the end of their current epoch and go back to the queue (again: at once)',
        'stopping active runs at once (they resume from their last checkpoint)',
      ]);
      const [stop, now] = interrupt.signals;
      try {
        const r = await worker({
          queue: o.queue, device: o.device, ...opts,
          roots: o.root, trustTorchScript: Boolean(o.trustTorchscript), executor: executorFromEnv(),
          signal: stop, stopNow: now, log,
        });
        log(`fisherlens: worker ${r.name}: ${r.finished.length} run(s) finished, ${r.failed.length} failed, ${r.requeued.length} handed back`);
        if (stop.aborted) process.exitCode = EXIT.interrupted;
      } finally {
        interrupt.dispose();
      }
    }));

  const status = program
    .command('status')
    .description('the runs on a queue: waiting, active (worker, device, epoch k/n), finished, failed (reason)')
    .requiredOption('--queue <url>', QUEUE_URL)
    .argument('[experiment]', 'only this experiment (its config\'s `name`)');
  jsonOption(status)
    .action(action(async (experiment: string | undefined, o: { queue: string; json?: boolean }) => {
      const runs = await queueStatus(o.queue, experiment);
      emit(Boolean(o.json), { runs }, () => (runs.length ? runs.map(statusLine).join('\n') : `no runs${experiment ? ` of '${experiment}'` : ''} on the queue`));
    }));

  const cancel = program
    .command('cancel')
    .description('cancel an experiment on a queue: remove its waiting runs and stop its active ones on every worker (they keep their checkpoint)')
    .requiredOption('--queue <url>', QUEUE_URL)
    .argument('<experiment>', 'the experiment (its config\'s `name`)');
  jsonOption(cancel)
    .action(action(async (experiment: string, o: { queue: string; json?: boolean }) => {
      const r = await cancelExperiment(o.queue, experiment);
      emit(Boolean(o.json), r, () => `removed ${r.removed.length} waiting run(s)${r.removed.length ? ` (${r.removed.join(', ')})` : ''}; asked ${r.stopping.length} active run(s) to stop${r.stopping.length ? ` (${r.stopping.join(', ')})` : ''}`);
    }));
}
