/**
 * What a run folder's TensorBoard events hold beyond training's per-epoch curves
 * (lib/science/train.ts): the resolved run config as text, the HParams session (the sweep's grid
 * values, so TensorBoard's HParams dashboard compares the runs of a sweep against their final
 * metrics), the final evaluation's scalars and per-sample Fisher histograms, the picture grid's
 * PNG cells and the class matrices as images. The event format is lib/util/tfevents.ts; the files
 * go into `<run>/tb/` (curves, config, HParams session), `<run>/tb/eval/` (the evaluation) and
 * `<run>/tb/batches/` (the batch curve), one file per process in each (a resumed or re-evaluated
 * run adds one). Each run folder is one HParams session, so `tensorboard --logdir <sweep out>`
 * compares them; the evaluation is a run of its own because a re-evaluation writes it again at the
 * same step: its SessionLog START drops the earlier evaluation and nothing else.
 */
import * as fs from 'fs';
import * as path from 'path';
import { EventWriter, HParamValue } from '../util/tfevents';
import type { ResolvedRun } from './config';
import { FILES, RunResult } from './rundir';
import { encodePng, readClassPictures, readPictureGrid } from '../science/picture-files';
import type { ClassMatrices } from '../science/picture-files';

/** The folder of a run's event files, inside the run folder. */
export const TB_DIR = FILES.tensorboard;
/** Pixels per class-matrix cell in the class images. */
const CLASS_ZOOM = 16;

/** Opens this process's event file in `<runDir>/tb` (a failure is one warning; see EventWriter). */
export function openRunBoard(runDir: string): EventWriter {
  return new EventWriter(path.join(runDir, TB_DIR));
}

/** A grid value as an HParams value (numbers, strings and booleans as they are, anything else as JSON). */
function hparamValue(v: unknown): HParamValue {
  return typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean' ? v : JSON.stringify(v);
}

/**
 * The start of the run's session: its config (text at step `step`) and its hyperparameters: the
 * grid point's keys (e.g. `train.beta`), the method, model and seed.
 */
export function logRunStart(w: EventWriter, run: ResolvedRun, step: number): void {
  const json = JSON.stringify(run, null, 2).split('\n').map((l) => `    ${l}`).join('\n');
  w.text('config', step, json);
  const hp: Record<string, HParamValue> = {
    'train.method': run.train.method, seed: run.seed,
    ...(run.model.arch !== undefined ? { 'model.arch': run.model.arch } : {}),
  };
  for (const [k, v] of Object.entries(run.gridPoint)) hp[k] = hparamValue(v);
  w.hparams(hp, { group: '' });
  w.flush();
}

/** Tags of the final evaluation's scalars (the HParams dashboard's metric columns). */
export function evaluationScalars(r: RunResult): Record<string, number> {
  const s: Record<string, number> = { 'eval/accuracy': r.accuracy, 'eval/crossEntropy': r.crossEntropy };
  for (const [name, acc] of Object.entries(r.attacks)) s[`eval/robustAccuracy/${name}`] = acc;
  if (r.worstCaseAccuracy !== undefined) s['eval/worstCaseAccuracy'] = r.worstCaseAccuracy;
  if (r.fisher) {
    s['eval/fisher/frobeniusMean'] = r.fisher.frobeniusMean;
    s['eval/fisher/frobeniusMedian'] = r.fisher.frobeniusMedian;
    s['eval/fisher/lambdaMaxMean'] = r.fisher.lambdaMaxMean;
  }
  if (r.cckl) {
    s['eval/cckl'] = r.cckl.cckl;
    s['eval/ccklNonRobustFraction'] = r.cckl.nonRobustFraction;
  }
  return Object.fromEntries(Object.entries(s).filter(([, v]) => Number.isFinite(v)));
}

/** The sub-run of a run's evaluation, inside tb/ (TensorBoard run `<runId>/tb/eval`, HParams metric group `eval`). */
export const EVAL_RUN = 'eval';

/**
 * The final evaluation at step `step` (the epochs trained) into a new event file of `<run>/tb/eval`:
 * SessionLog START at `step` (an earlier evaluation of the same run is dropped), scalars, histograms
 * of the per-sample Fisher arrays (executor.ts FisherArrays), pictures. Closed when done.
 */
export function logEvaluation(runDir: string, step: number, r: RunResult, f: { lambdaMax: ArrayLike<number>; frobenius: ArrayLike<number> }, picDir: string): void {
  const w = new EventWriter(path.join(runDir, TB_DIR, EVAL_RUN));
  w.sessionStart(step);
  w.scalars(step, evaluationScalars(r));
  w.histogram('eval/fisherLambdaMax', step, f.lambdaMax);
  w.histogram('eval/fisherFrobenius', step, f.frobenius);
  logPictures(w, step, picDir);
  w.close();
}

/** A class matrix as a grey PNG: cell values / scale in [0, 1], CLASS_ZOOM pixels per cell. */
function matrixPng(m: number[][], scale: number): { png: Buffer; size: number } {
  const K = m.length;
  const v = new Float32Array(K * K);
  for (let a = 0; a < K; a++) for (let b = 0; b < K; b++) v[a * K + b] = scale > 0 ? m[a][b] / scale : 0;
  return { png: encodePng(v, [1, K, K], 'unit', 1, CLASS_ZOOM), size: K * CLASS_ZOOM };
}

/** The picture grid's cells (the PNG files as they are) and the class matrices, from a run's pictures folder. */
export function logPictures(w: EventWriter, step: number, picDir: string): void {
  const grid = readPictureGrid(picDir);
  if (grid) {
    const [C, H, W] = grid.imageShape;
    grid.columns.forEach((col, k) => {
      const name = `${String(k).padStart(2, '0')}-${col.kind}${col.attack ? `-${col.attack}` : ''}`;
      col.cells.forEach((cell, row) => {
        const file = path.join(picDir, cell.png);
        if (fs.existsSync(file)) w.image(`pictures/${name}/${row}`, step, fs.readFileSync(file), H, W, C === 1 ? 1 : 3);
      });
    });
  }
  const classes = readClassPictures(picDir);
  const add = (which: string, m: ClassMatrices) => {
    const probs = matrixPng(m.meanProbs, 1);
    w.image(`classes/${which}/meanProbs`, step, probs.png, probs.size, probs.size, 1);
    const klMax = Math.max(0, ...m.kl.flat().filter(Number.isFinite));
    const kl = matrixPng(m.kl, klMax);
    w.image(`classes/${which}/kl`, step, kl.png, kl.size, kl.size, 1);
  };
  if (classes?.initial) add('initial', classes.initial);
  if (classes) add('final', classes.final);
}

/** The end of the run's session (HParams: finished). */
export function logRunEnd(w: EventWriter): void {
  w.hparamsEnd();
}
