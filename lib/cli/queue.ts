/**
 * Sweeps on other processes and machines: `fisherlens worker`, `fisherlens status` and
 * `fisherlens cancel` on a BullMQ/Redis queue (lib/experiment/queue.ts), and the Slurm script of
 * `fisherlens run CONFIG --slurm FILE` (lib/experiment/slurm.ts). `run --queue` itself lives in run.ts.
 */
import { Command } from 'commander';
import * as path from 'path';
import { action, choice, deviceOption, emit, graceArg, jsonOption, log, num, posInt, EXIT, QUEUE_URL, executorFromEnv, tensorboardOption, tlsOptions, queueTarget, TlsCliOptions } from './common';
import { CHECKPOINT_EVERY_DEFAULT, GRACE_DEFAULT_SEC, parseCheckpointEvery } from '../science/options';
import { worker } from '../experiment/worker';
import { queueStatus, cancelExperiment, cleanQueue } from '../experiment/queue-status';
import { QueueRunStatus, parseAge } from '../experiment/queue-jobs';
import { writeSlurmScript, parseSbatchArgs } from '../experiment/slurm';

/** `run CONFIG --slurm FILE`: writes the sbatch script of the unfinished runs. */
export async function slurmCommand(config: string, file: string, o: { out?: string; device?: string; slurmArgs?: string; json?: boolean; tensorboard?: boolean }): Promise<void> {
  const w = writeSlurmScript(config, file, { out: o.out, device: o.device, sbatchArgs: parseSbatchArgs(o.slurmArgs), tensorboard: o.tensorboard });
  if (w.runs.length === 0) log(`fisherlens: every run in ${w.out} is finished; ${file} has nothing to run`);
  else log(`fisherlens: ${file}: ${w.runs.length} array task(s); submit with \`sbatch ${file}\`, then \`fisherlens report ${w.out}\``);
  emit(Boolean(o.json), { file: path.resolve(file), out: w.out, runs: w.runs }, () => w.runs.map((r, i) => `${String(i).padStart(4)}  ${r}`).join('\n'));
}

function statusLine(s: QueueRunStatus): string {
  const where = s.worker ? ` on ${s.worker}${s.device ? ` (${s.device})` : ''}` : '';
  const epoch = s.epochs !== undefined && s.state !== 'finished' ? ` epoch ${s.epoch ?? 0}/${s.epochs}` : '';
  const pct = s.fraction !== undefined ? ` ${(s.fraction * 100).toFixed(0)}%` : '';
  const reason = s.reason ? `: ${s.reason.split('\n')[0]}` : '';
  const folder = s.source === 'folder' ? ' (job removed; from its run folder)' : '';
  return `${s.experiment.padEnd(16)} ${s.runId.padEnd(40)} ${s.state}${where}${epoch}${pct}${reason}${folder}`;
}

export function register(program: Command): void {
  const worker_ = program
    .command('worker')
    .description('take runs from a queue (`fisherlens run CONFIG --queue URL`) and execute them with the local runner; one worker per GPU')
    .requiredOption('--queue <url>', QUEUE_URL);
  tensorboardOption(worker_);
  deviceOption(tlsOptions(worker_), "the config's device")
    .option('--concurrency <n>', 'runs at once in this process', '1')
    .option('--idle-exit <seconds>', 'exit after this many seconds without a job')
    .option('--root <dir>', 'a folder configs may read and write under (out, data.root, model.path); repeatable; default: the working folder',
      (v: string, prev: string[] = []) => [...prev, v])
    .option('--trust-torchscript', 'accept TorchScript models (they run arbitrary code)')
    .option('--lock-duration <ms>', 'lock of an active job: a dead worker\'s run is handed on after about this long', '30000')
    .option('--stalled-interval <ms>', 'period of the check for dead workers\' runs', '30000')
    .option('--max-stalls <n>', 'stalls (dead workers, preemptions) a run may suffer before it fails', '10')
    .option('--checkpoint-every <every>', `checkpoint inside epochs every N batches (500b) or S seconds (300s), or off (default: each run's train.checkpointEvery, else ${CHECKPOINT_EVERY_DEFAULT})`)
    .option('--grace <seconds>', 'on SIGTERM/SIGINT: active runs checkpoint at their next batch boundary and go back to the queue, and the worker exits (143 after SIGTERM), within this many seconds; a batch that cannot end in time is abandoned and the boundary before it checkpointed', String(GRACE_DEFAULT_SEC))
    .addHelpText('after', '\n--device: every run this worker takes runs there (recorded in status).' +
      '\nSIGTERM/SIGINT: active runs checkpoint at their next batch boundary and go back to the queue within --grace, exit 143 after SIGTERM; an idle worker exits within 10 s even when Redis has gone; a second signal exits at once (active runs resume from their last checkpoint on another worker).')
    .action(action(async (o: TlsCliOptions & { queue: string; device?: string; concurrency: string; idleExit?: string; root?: string[]; trustTorchscript?: boolean; checkpointEvery?: string; grace: string; lockDuration: string; stalledInterval: string; maxStalls: string; tensorboard: boolean }) => {
      const opts = {
        concurrency: posInt('concurrency', o.concurrency), idleExitSec: num('idle-exit', o.idleExit),
        lockDurationMs: posInt('lock-duration', o.lockDuration), stalledIntervalMs: posInt('stalled-interval', o.stalledInterval),
        maxStalledCount: posInt('max-stalls', o.maxStalls),
      };
      if (o.checkpointEvery !== undefined) parseCheckpointEvery('--checkpoint-every', o.checkpointEvery);
      const graceSec = graceArg(o.grace);
      let code: number = EXIT.interrupted;
      const stop = new AbortController();
      const onSignal = (sig: NodeJS.Signals) => {
        if (!stop.signal.aborted) {
          code = sig === 'SIGTERM' ? EXIT.terminated : EXIT.interrupted;
          log(`fisherlens: ${sig}: active runs checkpoint at their next batch boundary and go back to the queue (within ${graceSec} s; again: exit at once)`);
          stop.abort();
          // the grace is a promise: past it (and the Redis deadline), exit whatever is left
          setTimeout(() => process.exit(code), (graceSec + 10) * 1000).unref();
        } else {
          // at once, whatever Redis does: the active runs' locks expire and another worker resumes
          // each from its last checkpoint (written atomically, so none is left half-written)
          log(`fisherlens: ${sig} again: exiting now (active runs resume from their last checkpoint on another worker)`);
          process.exit(code);
        }
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const r = await worker({
          queue: queueTarget(o.queue, o), device: o.device, ...opts, graceSec, checkpointEvery: o.checkpointEvery, tensorboard: o.tensorboard === false ? false : undefined,
          roots: o.root, trustTorchScript: Boolean(o.trustTorchscript), executor: executorFromEnv(),
          signal: stop.signal, log,
        });
        log(`fisherlens: worker ${r.name}: ${r.finished.length} run(s) finished, ${r.failed.length} failed, ${r.requeued.length} handed back`);
        if (stop.signal.aborted) process.exitCode = code;
        // the worker dropped its connections; whatever a library left scheduled must not keep the
        // process alive (an unref'd timer fires only if something else still holds the loop)
        setTimeout(() => process.exit(), 1000).unref();
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    }));

  const status = program
    .command('status')
    .description('the runs on a queue: waiting, active (worker, device, epoch k/n), finished, failed (reason)')
    .requiredOption('--queue <url>', QUEUE_URL)
    .argument('[experiment]', 'only this experiment (its config\'s `name`)');
  jsonOption(tlsOptions(status))
    .action(action(async (experiment: string | undefined, o: TlsCliOptions & { queue: string; json?: boolean }) => {
      const runs = await queueStatus(queueTarget(o.queue, o), experiment);
      emit(Boolean(o.json), { runs }, () => (runs.length ? runs.map(statusLine).join('\n') : `no runs${experiment ? ` of '${experiment}'` : ''} on the queue`));
    }));

  const clean = program.command('queue').description('maintenance of a queue')
    .command('clean')
    .description('remove ended jobs from Redis now (retention does it over time: run --keep-completed/--keep-failed); run folders stay, so status and reports still show those runs')
    .requiredOption('--queue <url>', QUEUE_URL)
    .option('--older-than <age>', 'only jobs that ended longer ago than this (90s, 30m, 12h, 7d; default: all)')
    .option('--state <state>', 'only finished (completed) or failed jobs: completed | failed (default: both)');
  jsonOption(tlsOptions(clean))
    .action(action(async (o: TlsCliOptions & { queue: string; olderThan?: string; state?: string; json?: boolean }) => {
      const state = choice('state', ['completed', 'failed'] as const, o.state);
      const r = await cleanQueue(queueTarget(o.queue, o), { olderThanSec: o.olderThan !== undefined ? parseAge('--older-than', o.olderThan) : 0, states: state ? [state] : undefined });
      emit(Boolean(o.json), r, () => `removed ${r.completed.length} finished and ${r.failed.length} failed job(s); their run folders are kept`);
    }));

  const cancel = program
    .command('cancel')
    .description('cancel an experiment on a queue: remove its waiting runs and stop its active ones on every worker (they keep their checkpoint)')
    .requiredOption('--queue <url>', QUEUE_URL)
    .argument('<experiment>', 'the experiment (its config\'s `name`)');
  jsonOption(tlsOptions(cancel))
    .action(action(async (experiment: string, o: TlsCliOptions & { queue: string; json?: boolean }) => {
      const r = await cancelExperiment(queueTarget(o.queue, o), experiment);
      emit(Boolean(o.json), r, () => `removed ${r.removed.length} waiting run(s)${r.removed.length ? ` (${r.removed.join(', ')})` : ''}; asked ${r.stopping.length} active run(s) to stop${r.stopping.length ? ` (${r.stopping.join(', ')})` : ''}`);
    }));
}
