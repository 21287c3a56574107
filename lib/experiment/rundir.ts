/**
 * The run directory: the one contract between the runner, training and reports.
 *
 * ```
 * <out>/experiment.json        the validated experiment config and its run ids (rewritten each `run`)
 * <out>/<runId>/config.json    the resolved run (ResolvedRun), written before training starts
 * <out>/<runId>/run.json       { version, checkpointVersion }: the run folder's format (RUN_FOLDER_VERSION)
 * <out>/<runId>/metrics.jsonl  one EpochRecord per line, appended after each epoch (by training)
 * <out>/<runId>/checkpoint.pt  the latest checkpoint (by training; resume continues from it)
 * <out>/<runId>/summary.json   RunSummary, written last and atomically: its presence means finished
 * <out>/<runId>/error.json     { message, code, at } when the run's last attempt failed (removed on success)
 * <out>/<runId>/pictures/      grid.json + PNGs + .npy of the image grid, classes.json (lib/science/pictures.ts)
 * <out>/<runId>/tb/            TensorBoard event files, one per process (lib/experiment/tensorboard.ts)
 * ```
 * Every file is written under a temporary name and renamed, so a crash never leaves half a file.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError } from '../util/errors';
import { writeFileAtomic } from '../util/files';
import type { ResolvedRun } from './config';
import type { RunProvenance } from './provenance';
import type { Quantiles } from '../util/stats';
import type { EpochMetrics } from '../science/train';

export const FILES = {
  experiment: 'experiment.json',
  config: 'config.json',
  /** The run folder's format version (written when a run starts afresh; absent: format 1). */
  run: 'run.json',
  metrics: 'metrics.jsonl',
  /** Written by lib/science/train.ts (its name for the file); 'checkpoint.ckpt' is recognised as well. */
  checkpoint: 'checkpoint.pt',
  summary: 'summary.json',
  error: 'error.json',
  /** Folder of the evaluation's pictures (lib/science/pictures.ts). */
  pictures: 'pictures',
  /** Folder of the TensorBoard event files (lib/experiment/tensorboard.ts, lib/util/tfevents.ts). */
  tensorboard: 'tb',
  /** Folder of the final evaluation's finished batches while it runs (lib/science/robust.ts resumeDir): a stopped evaluation resumes by batch. */
  evalBatches: 'eval-batches',
} as const;

/** Format version of summary.json (bump when fields change meaning). */
export const SUMMARY_VERSION = 1;

/**
 * Format version of a run folder, in its run.json: bump whenever resuming a folder written before
 * would not repeat an uninterrupted run (its checkpoint, metrics or randomness mean something else).
 * 2: training's crops, flips and dropout draw from the step's generator (checkpoint format 2) and
 * pairs are sampled natively; folders without run.json are format 1. A resume or re-evaluation of
 * a folder of another format is refused with ERR_FORMAT before anything runs.
 */
export const RUN_FOLDER_VERSION = 2;
/** The training-state (checkpoint) format version a run folder of RUN_FOLDER_VERSION holds (native/models/checkpoint.h). */
export const CHECKPOINT_VERSION = 2;

/**
 * One line of metrics.jsonl: the {@link EpochMetrics} of training (lib/science/train.ts, where
 * each field is documented), every field but `epoch` optional (an executor records what it
 * tracks; docs/math.md §5: the paper's Figures 3–4 plot them), plus whatever fields a custom
 * executor adds.
 */
export type EpochRecord = Pick<EpochMetrics, 'epoch'> & Partial<Omit<EpochMetrics, 'epoch'>> & {
  [key: string]: number | string | boolean | null | undefined;
};

/** Quantiles of a per-sample quantity (lib/util/stats.ts). */
export type { Quantiles } from '../util/stats';

/** Fisher summary of the final model over `samples` test images (exact per-sample spectra). */
export interface FisherSummary {
  method: string;
  samples: number;
  frobeniusMean: number;
  frobeniusMedian: number;
  traceMean: number;
  lambdaMaxMean: number;
  lambdaMaxQuantiles: Quantiles;
  /** Per-sample λ_max (for the distribution plot), in test-set order. */
  lambdaMax: number[];
}

/** CCKL and its decomposition (docs/math.md (1)–(8), (19)–(22)). */
export interface CcklSummary {
  samples: number;
  /** Exact mean KL over all different-class pairs of the samples. */
  cckl: number;
  /** Mean Jensen–Shannon divergence over the same pairs. */
  jsMean: number;
  /** 2 ln2 · mean (1 − √err_i − √err_j)₊², a lower bound of CCKL. */
  lowerBound: number;
  /** Non-robust component N = mean ½ δᵀ G δ over sampled pairs, its standard error, pairs used. */
  nonRobust: number;
  nonRobustStderr: number;
  pairs: number;
  /** Robust component R = CCKL − N. */
  robust: number;
  /** N / CCKL. */
  nonRobustFraction: number;
}

/** The final evaluation of a finished run. */
export interface RunResult {
  /** Test images evaluated. */
  evalCount: number;
  /** Clean accuracy (fraction). */
  accuracy: number;
  crossEntropy: number;
  /** Accuracy under each configured attack, by attack name (e.g. { pgd: 0.41, cw: 0.38 }). */
  attacks: Record<string, number>;
  /** Accuracy under the per-sample worst case over all attacks (correct only if every attack failed). */
  worstCaseAccuracy?: number;
  /**
   * AutoAttack's gradient-masking and randomness sanity findings (lib/science/autoattack.ts
   * sanityWarnings), as sentences, by attack name; only attacks with findings appear (absent: none).
   */
  attackWarnings?: Record<string, string[]>;
  fisher?: FisherSummary;
  cckl?: CcklSummary;
  /** Epochs trained in total. */
  epochs: number;
}

/** summary.json: identification + result + bookkeeping. */
export interface RunSummary extends RunResult {
  version: number;
  runId: string;
  model: string;
  arch?: string;
  method: string;
  seed: number;
  dataset: string;
  gridPoint: Record<string, unknown>;
  startedAt: string;
  finishedAt: string;
  /** Wall seconds of the last attempt (training resumed from a checkpoint counts only its part). */
  seconds: number;
  /** When `fisherlens run --reevaluate` last rewrote the evaluation (ISO time; absent if never). */
  reevaluatedAt?: string;
  /** Package, variant, LibTorch, native sources and device that produced it (absent in older run folders). */
  provenance?: RunProvenance;
}


export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

/**
 * Appends one record to metrics.jsonl. The file is rewritten atomically (copy + record + rename):
 * records are few (one per epoch), and a crash never leaves a torn line.
 */
export function appendJsonl(file: string, record: unknown): void {
  // a symlink is not ours: it is replaced, and what it points to is neither read nor written
  const prev = isRegularFile(file) ? fs.readFileSync(file, 'utf8') : '';
  const sep = prev.length > 0 && !prev.endsWith('\n') ? '\n' : '';
  writeFileAtomic(file, prev + sep + JSON.stringify(record) + '\n');
}

function isRegularFile(file: string): boolean {
  try {
    return fs.lstatSync(file).isFile();
  } catch {
    return false;
  }
}

/** Reads a JSON-lines file; a torn last line (from a foreign writer) is ignored, others must parse. */
export function readJsonl<T>(file: string): T[] {
  if (!fs.existsSync(file)) return [];
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim().length > 0);
  const out: T[] = [];
  lines.forEach((l, i) => {
    try {
      out.push(JSON.parse(l) as T);
    } catch (e) {
      if (i === lines.length - 1) return;
      throw new FisherLensError('ERR_FORMAT', `${file}: line ${i + 1} is not JSON: ${(e as Error).message}`);
    }
  });
  return out;
}

export function readJson<T>(file: string): T {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FisherLensError('ERR_IO', `${file}: no such file`);
    throw new FisherLensError('ERR_FORMAT', `${file}: not valid JSON: ${(e as Error).message}`);
  }
}

/** The state of one run directory. */
export type RunState = 'new' | 'started' | 'resumable' | 'finished';

/** Paths of one run's files. */
export class RunDir {
  constructor(readonly dir: string) {}
  static of(out: string, runId: string): RunDir { return new RunDir(path.join(out, runId)); }
  get id(): string { return path.basename(this.dir); }
  get config(): string { return path.join(this.dir, FILES.config); }
  get metrics(): string { return path.join(this.dir, FILES.metrics); }
  /** The checkpoint training writes (checkpoint.pt; an existing checkpoint.ckpt is used when present instead). */
  get checkpoint(): string {
    const alt = path.join(this.dir, 'checkpoint.ckpt');
    return fs.existsSync(alt) && !fs.existsSync(path.join(this.dir, FILES.checkpoint)) ? alt : path.join(this.dir, FILES.checkpoint);
  }
  get summary(): string { return path.join(this.dir, FILES.summary); }
  get error(): string { return path.join(this.dir, FILES.error); }
  get run(): string { return path.join(this.dir, FILES.run); }

  /** The folder's format version: run.json's `version`, 1 without run.json; ERR_FORMAT when run.json is malformed. */
  folderVersion(): number {
    if (!fs.existsSync(this.run)) return 1;
    const v = readJson<{ version?: unknown }>(this.run).version;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new FisherLensError('ERR_FORMAT', `${this.run}: expected { "version": <integer ≥ 1> }, got version ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** Marks the folder as of this FisherLens's format (a run starting afresh). */
  writeFolderVersion(): void {
    writeJsonAtomic(this.run, { version: RUN_FOLDER_VERSION, checkpointVersion: CHECKPOINT_VERSION });
  }

  /**
   * ERR_FORMAT, naming both versions, unless this FisherLens can continue the folder exactly
   * (`what`: what would continue it, e.g. 'resumed').
   */
  checkFolderVersion(what: string): void {
    const v = this.folderVersion();
    if (v === RUN_FOLDER_VERSION) return;
    throw new FisherLensError('ERR_FORMAT', v > RUN_FOLDER_VERSION
      ? `${this.dir}: run folder format ${v} is newer than this FisherLens reads (${RUN_FOLDER_VERSION}); upgrade FisherLens to continue it`
      : `${this.dir}: run folder format ${v} cannot be ${what} exactly by this FisherLens (run folder format ${RUN_FOLDER_VERSION}, `
        + `checkpoint format ${CHECKPOINT_VERSION}: training's crops, flips and dropout and the pair sampling draw differently); `
        + 'start the run over in another --out or delete the folder');
  }

  /** finished: summary.json exists; resumable: a checkpoint exists; started: only config.json; new: nothing. */
  state(): RunState {
    if (fs.existsSync(this.summary)) return 'finished';
    if (fs.existsSync(this.checkpoint)) return 'resumable';
    if (fs.existsSync(this.config)) return 'started';
    return 'new';
  }

  readConfig(): ResolvedRun { return readJson<ResolvedRun>(this.config); }
  readSummary(): RunSummary { return readJson<RunSummary>(this.summary); }
  /** Epoch records, one per epoch; when a resumed run re-logged an epoch, the last record of it wins. */
  readEpochs(): EpochRecord[] {
    const byEpoch = new Map<number, EpochRecord>();
    for (const r of readJsonl<EpochRecord>(this.metrics)) {
      if (typeof r.epoch === 'number') byEpoch.set(r.epoch, r);
    }
    return [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  }
  readError(): { message: string; code?: string; at: string } | null {
    return fs.existsSync(this.error) ? readJson(this.error) : null;
  }
}

/** The run directories under `out` (sub-folders holding a config.json), sorted by id. */
export function listRunDirs(out: string): RunDir[] {
  if (!fs.existsSync(out)) throw new FisherLensError('ERR_IO', `${out}: no such directory`);
  if (!fs.statSync(out).isDirectory()) throw new FisherLensError('ERR_IO', `${out}: not a folder (expected a runs folder written by fisherlens run)`);
  return fs.readdirSync(out, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(out, d.name, FILES.config)))
    .map((d) => new RunDir(path.join(out, d.name)))
    .sort((a, b) => a.id.localeCompare(b.id));
}

/** Summary statistics used when a run's final evaluation is written (lib/util/stats.ts). */
export { quantile, quantiles, mean } from '../util/stats';
