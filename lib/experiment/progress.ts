/**
 * Sweep progress on stderr: one bar over the whole sweep on a terminal (cli-progress), plain
 * lines elsewhere (run start/end, each epoch, and the overall share at most every `everyMs`).
 */
import * as cliProgress from 'cli-progress';
import type { ExperimentEvent } from './plan';

function pct(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(1)}%`;
}

/**
 * A remaining time in seconds as m:ss, or h:mm:ss from an hour on. Rounded to whole seconds
 * before it is split, so that 239.6 s reads 4:00 (splitting first gave "3:60").
 */
export function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export interface SweepProgressOptions {
  /** Force the terminal bar (true) or plain lines (false); default: stderr is a TTY. */
  tty?: boolean;
  /** Plain mode: at most one progress line per this many ms (default 10000). */
  everyMs?: number;
  stream?: NodeJS.WriteStream;
}

/** Turns ExperimentEvents into a progress display; pass `progress.onEvent` to runExperiment. */
export class SweepProgress {
  private multi: cliProgress.MultiBar | null = null;
  private bar: cliProgress.SingleBar | null = null;
  private last = 0;
  private readonly tty: boolean;
  private readonly stream: NodeJS.WriteStream;
  private readonly everyMs: number;
  private lastOverall = 0;
  private startOverall = 0;
  private startTime = Date.now();
  private payload = { run: '', detail: '', remaining: '' };

  constructor(opts: SweepProgressOptions = {}) {
    this.stream = opts.stream ?? process.stderr;
    this.tty = opts.tty ?? Boolean(this.stream.isTTY);
    this.everyMs = opts.everyMs ?? 10000;
  }

  /** A line above the bar (or a plain line). */
  private line(s: string): void {
    if (this.multi) this.multi.log(s + '\n');
    else this.stream.write(s + '\n');
  }

  /** Remaining time from the sweep's own pace (work done in this call, not skipped runs). */
  private eta(): string {
    const done = this.lastOverall - this.startOverall;
    if (done < 0.01) return '–';
    return formatEta(((Date.now() - this.startTime) / 1000) * (1 - this.lastOverall) / done);
  }

  private redraw(): void {
    this.payload.remaining = this.eta();
    this.bar?.update(Math.round(this.lastOverall * 1000), this.payload);
  }

  readonly onEvent = (e: ExperimentEvent): void => {
    switch (e.type) {
      case 'plan': {
        const done = e.runs.filter((r) => r.state === 'finished').length;
        const resumable = e.runs.filter((r) => r.state === 'resumable').length;
        this.stream.write(`fisherlens: ${e.runs.length} runs in ${e.out} (${done} finished, ${resumable} to resume, ${e.runs.length - done - resumable} to start)\n`);
        const total = e.runs.reduce((s, r) => s + r.cost, 0) || 1;
        this.lastOverall = this.startOverall = e.runs.filter((r) => r.state === 'finished').reduce((s, r) => s + r.cost, 0) / total;
        this.startTime = Date.now();
        if (this.tty) {
          this.multi = new cliProgress.MultiBar({
            format: 'sweep {bar} {percentage}% | ETA {remaining} | {run} {detail}',
            barCompleteChar: '█', barIncompleteChar: '░', hideCursor: true, clearOnComplete: false,
            stream: this.stream, fps: 5, forceRedraw: true,
          });
          this.bar = this.multi.create(1000, Math.round(this.lastOverall * 1000), this.payload);
        }
        break;
      }
      case 'run-skip':
        if (e.reason === 'finished') this.line(`[${e.index + 1}/${e.total}] ${e.runId}: finished earlier, skipped`);
        break;
      case 'run-start':
        this.payload = { ...this.payload, run: `[${e.index + 1}/${e.total}] ${e.runId}`, detail: '' };
        this.line(`[${e.index + 1}/${e.total}] ${e.runId}: ${e.resume ? 'resuming from its checkpoint' : 'starting'}`);
        this.redraw();
        break;
      case 'progress': {
        this.lastOverall = e.overall;
        const detail = e.phase === 'train'
          ? `epoch ${e.epoch}/${e.epochs} batch ${e.batch}/${e.batches}${e.loss !== undefined ? ` loss ${e.loss.toFixed(3)}` : ''}${e.accuracy !== undefined ? ` acc ${pct(e.accuracy)}` : ''}`
          : e.phase === 'eval' ? `evaluating${e.step ? ` (${e.step})` : ''}` : 'loading data';
        this.payload = { ...this.payload, detail };
        if (this.bar) this.redraw();
        else {
          const now = Date.now();
          if (now - this.last >= this.everyMs) {
            this.last = now;
            this.stream.write(`  ${(e.overall * 100).toFixed(0)}% of the sweep (ETA ${this.eta()}); ${e.runId}: ${detail}\n`);
          }
        }
        break;
      }
      case 'epoch': {
        const r = e.record;
        this.line(`  ${e.runId} epoch ${r.epoch}: probe acc ${pct(r.probeAccuracy)}, mean ‖G‖_F ${r.fisherFrobeniusMean?.toPrecision(4) ?? '–'}${r.seconds !== undefined ? `, ${r.seconds.toFixed(1)} s` : ''}`);
        break;
      }
      case 'run-end': {
        const s = e.summary;
        const att = Object.entries(s.attacks).map(([k, v]) => `${k} ${pct(v)}`).join(', ');
        this.line(`  ${e.runId}: done in ${s.seconds.toFixed(0)} s: clean ${pct(s.accuracy)}${att ? `, ${att}` : ''}` +
          `${s.fisher ? `, mean ‖G‖_F ${s.fisher.frobeniusMean.toPrecision(4)}` : ''}${s.cckl ? `, CCKL ${s.cckl.cckl.toPrecision(4)} (N/CCKL ${pct(s.cckl.nonRobustFraction)})` : ''}`);
        break;
      }
      case 'run-error':
        this.line(`  ${e.runId}: FAILED: ${e.error.code ? e.error.code + ': ' : ''}${e.error.message.split('\n')[0]}`);
        break;
      case 'done':
        if (this.bar && !e.result.aborted) {
          this.lastOverall = 1;
          this.payload = { ...this.payload, run: '', detail: `done in ${Math.round((Date.now() - this.startTime) / 1000)} s` };
          this.redraw();
        }
        this.stop();
        break;
    }
  };

  /** Stops the bar (e.g. before printing an error). */
  stop(): void {
    this.multi?.stop();
    this.multi = null;
    this.bar = null;
  }
}
