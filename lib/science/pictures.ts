/**
 * Pictures of what attacks and the Fisher information do to images (docs/experiments.md,
 * "Pictures"): for a seeded handful of samples, the clean image, each attack's adversarial example
 * and its perturbation, and the leading eigenvector of G_x, each with its caption (label,
 * prediction, confidence), written as 8-bit PNGs (pngjs; grey for one channel, RGB for three)
 * beside the float32 .npy of the values they show; and the class matrices behind the report's
 * heatmaps (mean predicted distribution per true class, the paper's Figure 1; mean KL between
 * classes, the view of its Figure 2).
 *
 * Pixel mapping (one scale per column, printed in its title): images in [0, 1] map to
 * round(255 v); signed columns (perturbations, eigenvectors) map [−s, s] to [0, 255] with 0 at
 * mid-grey, s = the column's largest |value|: a pixel is within one 8-bit step (2s/255) of the
 * value it shows.
 */
import * as fs from 'fs';
import * as path from 'path';
import { PNG } from 'pngjs';
import { Model } from './model';
import { Tensor } from '../binding/tensor';
import { Dataset, permutation } from './data/dataset';
import { attack, AttackParams, NpyWriter } from './attacks';
import { autoAttackBatch, AutoAttackParams, resolveCascade } from './autoattack';
import { fisherExact } from './fisher';
import { CcklAccumulator, logProbs } from './metrics';
import { FisherLensError } from '../util/errors';
import type { OpOptions } from '../binding/op';
import { writeFileAtomic } from '../experiment/rundir';

/** Samples in a picture grid unless told otherwise (config `eval.pictures.samples`, CLI `--image-samples`). */
export const PICTURE_SAMPLES = 8;
/** Format version of grid.json and classes.json. */
export const PICTURES_VERSION = 1;
/** Step of the central difference that fixes an eigenvector's sign (pixel units along a unit vector). */
export const SIGN_STEP = 1e-2;

/** Class names of the built-in datasets (report axes and captions); others show the class index. */
export const CLASS_NAMES: Record<string, string[]> = {
  'fashion-mnist': ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'],
  mnist: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
  cifar10: ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'],
};

/** How a column's values become pixels: 'unit' v ∈ [0, 1] → 255 v; 'signed' v ∈ [−scale, scale] → 255 (v / scale + 1) / 2. */
export type PixelMapping = 'unit' | 'signed';

/** What a column shows. An 'adversarial' column of a cascade (AutoAttack) carries per cell the stage that broke the sample. */
export type ColumnKind = 'clean' | 'adversarial' | 'perturbation' | 'eigvec';

/** One image of the grid and its caption facts. */
export interface PictureCell {
  /** PNG file name (in the grid folder). */
  png: string;
  /** argmax p at this image (clean and adversarial columns). */
  prediction?: number;
  /** p of that prediction, in [0, 1]. */
  confidence?: number;
  /** Adversarial: the attack (for a cascade: the stage) that broke the sample (correct clean, wrong here). */
  by?: string;
  /** Adversarial: the model still predicts the true label (no stage broke the sample). */
  robust?: boolean;
  /** Adversarial, cascade only: the stage whose attempt is shown for a sample no stage broke (the last one). */
  tried?: string;
  /** Perturbation: ‖δ‖∞ and ‖δ‖₂ in pixel units. */
  linf?: number;
  l2?: number;
  /** Eigenvector: λ_max(G_x) in nats/pixel². */
  lambdaMax?: number;
  /** Eigenvector: the central-difference derivative of log p_ŷ along it (≥ 0 after the sign fix; nats per pixel unit). */
  slope?: number;
}

/** One column of the grid: a kind, a title with its scale, the .npy of its values. */
export interface PictureColumn {
  kind: ColumnKind;
  /** Header, e.g. 'clean', 'PGD', 'PGD δ (±0.1)', 'eigvec G_x (±0.21)'. */
  title: string;
  /** Adversarial / perturbation: the evaluated attack's name (as in summary.json). */
  attack?: string;
  mapping: PixelMapping;
  /** 1 for 'unit'; the largest |value| of the column for 'signed'. */
  scale: number;
  /** float32 [S, C, H, W] of the values shown, in the grid folder. */
  npy: string;
  /** One per sample, in row order. */
  cells: PictureCell[];
}

/** grid.json: the rows (samples) and the columns of one picture grid. */
export interface PictureGrid {
  version: number;
  /** Indices of the samples in the evaluated dataset, one per row. */
  indices: number[];
  /** True label of each row. */
  labels: number[];
  /** [C, H, W] of one image. */
  imageShape: number[];
  columns: PictureColumn[];
}

/** A picture grid with its values, before it is written. */
export interface PictureData {
  grid: Omit<PictureGrid, 'columns'> & { columns: Omit<PictureColumn, 'npy' | 'cells'>[] };
  /** Per column: the values [S·C·H·W] (float32) and the cells' caption facts (without file names). */
  values: Float32Array[];
  cells: Omit<PictureCell, 'png'>[][];
}

/**
 * An attack of a grid: a name and lib/science/attacks.ts parameters, or an AutoAttack cascade
 * (`kind: 'autoattack'`), whose column shows per sample the example of the stage that broke it and,
 * for samples no stage broke, the last stage's attempt.
 */
export type PictureAttack = (AttackParams | (AutoAttackParams & { kind: 'autoattack' })) & { name: string };

/**
 * The adversarial examples of one grid column for x [S, ...] with labels y [S]; for a cascade also
 * per sample the stage that broke it (undefined: not broken) and the stage whose attempt is shown.
 */
async function columnExamples(model: Model, x: Tensor, y: Tensor, params: PictureAttack, numClasses: number, op: OpOptions): Promise<{
  xAdv: Tensor; by?: (string | undefined)[]; tried?: string;
}> {
  const { name: _name, ...p } = params;
  if (p.kind !== 'autoattack') return { xAdv: (await attack(model, x, y, { ...(p as AttackParams), signal: op.signal })).xAdv };
  const c = resolveCascade(p as AutoAttackParams, numClasses);
  const r = await autoAttackBatch(model, x, y, c, { seed: p.seed ?? 0, signal: op.signal });
  const by = Array.from(r.brokenBy, (b) => (b >= 0 ? c.stages[b].name : undefined));
  if (!r.brokenBy.some((b) => b === -1)) return { xAdv: r.xAdv, by };
  // samples no stage broke keep x in the cascade's result: show the last stage's attempt instead. The
  // cascade ran that stage on the samples no earlier stage broke (those it broke and those left
  // robust), in this order, with this seed: the same call gives the same attempt (deterministic)
  const lastIndex = c.stages.length - 1;
  const rows = [...r.brokenBy.keys()].filter((s) => r.brokenBy[s] === -1 || r.brokenBy[s] === lastIndex);
  const { name: lastName, ...lastParams } = c.stages[lastIndex];
  const idx = Tensor.fromNested(rows, { dtype: 'int64' });
  const xr = x.index(idx), yr = y.index(idx);
  idx.dispose();
  const tried = await attack(model, xr, yr, { ...lastParams, signal: op.signal }).finally(() => { xr.dispose(); yr.dispose(); });
  const shown = Float32Array.from(r.xAdv.toArray() as Float32Array | Float64Array);
  const attempt = tried.xAdv.toArray() as Float32Array | Float64Array;
  tried.xAdv.dispose();
  r.xAdv.dispose();
  const D = shown.length / r.brokenBy.length;
  rows.forEach((s, i) => { if (r.brokenBy[s] === -1) shown.set(attempt.subarray(i * D, (i + 1) * D), s * D); });
  const xAdv = Tensor.from(shown, x.shape);
  return { xAdv, by, tried: lastName };
}

/**
 * `count` sample indices spread over classes, reproducible from `seed`: in a seeded order, each
 * round takes at most one image per class; rows are sorted by (label, index).
 */
export function pictureSamples(labels: ArrayLike<number>, count: number, seed: number): number[] {
  const n = labels.length;
  if (!Number.isInteger(count) || count < 1) throw new FisherLensError('ERR_ARG', `picture samples: expected an integer ≥ 1, got ${count}`);
  const want = Math.min(count, n);
  const order = permutation(n, seed);
  const taken = new Uint8Array(n);
  const picked: number[] = [];
  while (picked.length < want) {
    const round = new Set<number>();
    for (const i of order) {
      if (taken[i] || round.has(labels[i])) continue;
      taken[i] = 1;
      round.add(labels[i]);
      picked.push(i);
      if (picked.length === want) break;
    }
  }
  return picked.sort((a, b) => labels[a] - labels[b] || a - b);
}

function argmaxRows(p: ArrayLike<number>, C: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < p.length / C; r++) {
    let a = 0;
    for (let c = 1; c < C; c++) if (p[r * C + c] > p[r * C + a]) a = c;
    out.push(a);
  }
  return out;
}

/** Eval-mode probabilities p(x) [S·C] and log p(x) in float64 (lib/science/metrics.ts logProbs: the model's dtype and device). */
async function evalProbs(model: Model, x: Tensor, opts: OpOptions): Promise<{ p: Float64Array; logp: Float64Array }> {
  const t = await logProbs(model, x, opts);
  try {
    const logp = t.toArray() as Float64Array;
    return { p: logp.map(Math.exp), logp };
  } finally {
    t.dispose();
  }
}

const maxAbs = (a: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
};
/** A scale for a signed column: its largest |value| to 3 significant digits, rounded up (within 0.1 % of it; 1 when all are 0). */
function signedScale(a: ArrayLike<number>): number {
  const m = maxAbs(a);
  if (!(m > 0)) return 1;
  const e = Math.pow(10, Math.floor(Math.log10(m)) - 2);
  // float32 rounding puts an L∞ perturbation at ε + 1e-9: that must not print as 0.101
  return Number((Math.ceil(m / e - 1e-3) * e).toPrecision(3));
}
const fmtScale = (s: number): string => Number(s.toPrecision(3)).toString();

/**
 * Computes the picture grid of `model` on the samples `indices` of `data` (eval mode; the model
 * is left as found): the clean images with p(x); per attack the adversarial examples (one batch,
 * the attack's seed), their predictions and perturbations; the unit leading eigenvector of G_x
 * (fisherExact) with its sign fixed so that the derivative of log p_ŷ along it is ≥ 0 (central
 * difference of step {@link SIGN_STEP} on float64 log-probabilities; an exact 0 keeps the sign
 * that makes the largest-|value| pixel positive).
 */
export async function pictureGrid(model: Model, data: Dataset, attacks: PictureAttack[], opts: { indices: number[] } & OpOptions): Promise<PictureData> {
  const { indices, ...op } = opts;
  if (indices.length === 0) throw new FisherLensError('ERR_ARG', 'pictureGrid: no samples');
  for (const i of indices) {
    if (!Number.isInteger(i) || i < 0 || i >= data.size) throw new FisherLensError('ERR_ARG', `pictureGrid: sample index ${i} is outside [0, ${data.size})`);
  }
  const names = new Set<string>();
  for (const a of attacks) {
    if (names.has(a.name)) throw new FisherLensError('ERR_ARG', `pictureGrid: two attacks are named '${a.name}'`);
    names.add(a.name);
  }
  const b = data.batch(indices);
  const tensors: Tensor[] = [b.x, b.y];
  try {
    const S = indices.length;
    const shape = data.imageShape;
    const D = shape.reduce((u, v) => u * v, 1);
    const C = data.numClasses;
    const labels = b.y.toNumbers();
    const x = Float32Array.from(b.x.toArray() as Float32Array | Float64Array);
    const f = await fisherExact(model, b.x, { eigvec: true, signal: op.signal });
    tensors.push(f.probs, f.spectrum, f.eigvec!);
    const p = f.probs.toArray() as Float64Array;
    const K = p.length / S;
    if (K !== C) throw new FisherLensError('ERR_SHAPE', `pictureGrid: the model has ${K} outputs but the data ${C} classes`);
    const pred = argmaxRows(p, C);
    const columns: PictureData['grid']['columns'] = [{ kind: 'clean', title: 'clean', mapping: 'unit', scale: 1 }];
    const values: Float32Array[] = [x];
    const cells: Omit<PictureCell, 'png'>[][] = [pred.map((k, s) => ({ prediction: k, confidence: p[s * C + k] }))];

    for (const a of attacks) {
      const name = a.name;
      const r = await columnExamples(model, b.x, b.y, a, C, op);
      tensors.push(r.xAdv);
      const adv = Float32Array.from(r.xAdv.toArray() as Float32Array | Float64Array);
      const pa = (await evalProbs(model, r.xAdv, op)).p;
      const predA = argmaxRows(pa, C);
      const delta = Float32Array.from(adv, (v, i) => v - x[i]);
      const scale = signedScale(delta);
      columns.push({ kind: 'adversarial', title: name.toUpperCase(), attack: name, mapping: 'unit', scale: 1 });
      values.push(adv);
      cells.push(predA.map((k, s) => {
        // broken: correct clean, wrong here; a sample wrong already when clean is neither robust nor broken
        const robust = k === labels[s];
        const broken = !robust && pred[s] === labels[s];
        return {
          prediction: k, confidence: pa[s * C + k], robust,
          ...(broken ? { by: r.by?.[s] ?? name } : {}),
          ...(robust && r.tried ? { tried: r.tried } : {}),
        };
      }));
      columns.push({ kind: 'perturbation', title: `${name.toUpperCase()} δ (±${fmtScale(scale)})`, attack: name, mapping: 'signed', scale });
      values.push(delta);
      cells.push(labels.map((_, s) => {
        const d = delta.subarray(s * D, (s + 1) * D);
        let l2 = 0;
        for (const v of d) l2 += v * v;
        return { linf: maxAbs(d), l2: Math.sqrt(l2) };
      }));
    }

    // the eigenvector, sign fixed by the slope of log p_ŷ along it
    const v = Float32Array.from(f.eigvec!.toArray() as Float32Array | Float64Array);
    const h = SIGN_STEP;
    // x ± h v in float64 (the forward casts to the model's dtype)
    const xs = b.x.toArray() as Float32Array | Float64Array;
    const shifted = (sign: number) => Tensor.from(Float64Array.from(xs, (xi, i) => xi + sign * h * v[i]), [S, ...shape]);
    const plus = shifted(1);
    tensors.push(plus);
    const minus = shifted(-1);
    tensors.push(minus);
    const lp = (await evalProbs(model, plus, op)).logp;
    const lm = (await evalProbs(model, minus, op)).logp;
    const slopes: number[] = [];
    for (let s = 0; s < S; s++) {
      let slope = (lp[s * C + pred[s]] - lm[s * C + pred[s]]) / (2 * h);
      const row = v.subarray(s * D, (s + 1) * D);
      let flip = slope < 0;
      if (slope === 0) {
        let big = 0;
        for (let i = 1; i < D; i++) if (Math.abs(row[i]) > Math.abs(row[big])) big = i;
        flip = row[big] < 0;
      }
      if (flip) {
        for (let i = 0; i < D; i++) row[i] = -row[i];
        slope = -slope;
      }
      slopes.push(slope);
    }
    const vs = signedScale(v);
    columns.push({ kind: 'eigvec', title: `eigvec G_x (±${fmtScale(vs)})`, mapping: 'signed', scale: vs });
    values.push(v);
    cells.push(slopes.map((slope, s) => ({ lambdaMax: f.lambdaMax[s], slope })));
    return { grid: { version: PICTURES_VERSION, indices, labels, imageShape: shape, columns }, values, cells };
  } finally {
    for (const t of tensors) if (!t.disposed) t.dispose();
  }
}

/** 8-bit pixel of a value under a mapping (clamped to [0, 255]). */
export function toByte(v: number, mapping: PixelMapping, scale: number): number {
  const u = mapping === 'unit' ? v : (v / scale + 1) / 2;
  return Math.min(255, Math.max(0, Math.round(255 * u)));
}

/** The value a pixel shows under a mapping (the inverse of {@link toByte} up to one 8-bit step). */
export function fromByte(b: number, mapping: PixelMapping, scale: number): number {
  return mapping === 'unit' ? b / 255 : (2 * b / 255 - 1) * scale;
}

/** Encodes one image [C, H, W] (C = 1 grey, C = 3 RGB) of values as an 8-bit PNG, upscaled `zoom`× by pixel repetition. */
export function encodePng(values: ArrayLike<number>, shape: number[], mapping: PixelMapping, scale: number, zoom = 1): Buffer {
  const [C, H, W] = shape;
  if (C !== 1 && C !== 3) throw new FisherLensError('ERR_SHAPE', `PNG images need 1 (grey) or 3 (RGB) channels, got ${C}`);
  if (values.length !== C * H * W) throw new FisherLensError('ERR_SHAPE', `encodePng: ${values.length} values for shape [${shape.join(', ')}]`);
  const w = W * zoom, h = H * zoom;
  const png = new PNG({ width: w, height: h, colorType: C === 1 ? 0 : 2, inputColorType: C === 1 ? 0 : 2, inputHasAlpha: false, bitDepth: 8 });
  png.data = Buffer.alloc(w * h * C);
  for (let yy = 0; yy < h; yy++) {
    for (let xx = 0; xx < w; xx++) {
      const src = Math.floor(yy / zoom) * W + Math.floor(xx / zoom);
      for (let c = 0; c < C; c++) png.data[(yy * w + xx) * C + c] = toByte(values[c * H * W + src], mapping, scale);
    }
  }
  return PNG.sync.write(png, { colorType: C === 1 ? 0 : 2, inputColorType: C === 1 ? 0 : 2, inputHasAlpha: false, bitDepth: 8 });
}

/** Decodes a PNG (pngjs) into its size and channel-first bytes [C, H, W] (C = 1 for grey PNGs, else 3). */
export function decodePng(buf: Buffer): { width: number; height: number; channels: number; bytes: Uint8Array; grey: boolean } {
  let png: PNG;
  try {
    png = PNG.sync.read(buf);
  } catch (e) {
    throw new FisherLensError('ERR_FORMAT', `not a valid PNG: ${(e as Error).message}`);
  }
  const { width, height } = png;
  const grey = (png as PNG & { colorType?: number }).colorType === 0;
  const C = grey ? 1 : 3;
  const bytes = new Uint8Array(C * width * height);
  for (let i = 0; i < width * height; i++) for (let c = 0; c < C; c++) bytes[c * width * height + i] = png.data[i * 4 + c];
  return { width, height, channels: C, bytes, grey };
}

/** Files of a pictures folder (a run's is FILES.pictures in lib/experiment/rundir.ts). */
export const GRID_FILE = 'grid.json';
export const CLASSES_FILE = 'classes.json';

/**
 * Writes a grid into `dir`: per column `<kind>[-<attack>].npy` (float32 [S, C, H, W]) and per
 * cell `<row>-<kind>[-<attack>].png`, then grid.json last (its presence means complete).
 */
export function writePictureGrid(dir: string, pd: PictureData): PictureGrid {
  fs.mkdirSync(dir, { recursive: true });
  const { imageShape, indices } = pd.grid;
  const D = imageShape.reduce((a, b) => a * b, 1);
  const columns: PictureColumn[] = pd.grid.columns.map((col, k) => {
    const stem = col.attack ? `${col.kind}-${col.attack}` : col.kind;
    const npy = `${stem}.npy`;
    const w = new NpyWriter(path.join(dir, npy), [indices.length, ...imageShape]);
    w.appendValues(pd.values[k]);
    w.close();
    const cells = pd.cells[k].map((c, s) => {
      const png = `${s}-${stem}.png`;
      writeFileAtomic(path.join(dir, png), encodePng(pd.values[k].subarray(s * D, (s + 1) * D), imageShape, col.mapping, col.scale));
      return { png, ...c };
    });
    return { ...col, npy, cells };
  });
  const grid: PictureGrid = { ...pd.grid, columns };
  writeFileAtomic(path.join(dir, GRID_FILE), JSON.stringify(grid, null, 1) + '\n');
  return grid;
}

/** Reads grid.json of a pictures folder (null when absent; a malformed file is ERR_FORMAT). */
export function readPictureGrid(dir: string): PictureGrid | null {
  const file = path.join(dir, GRID_FILE);
  if (!fs.existsSync(file)) return null;
  let g: PictureGrid;
  try {
    g = JSON.parse(fs.readFileSync(file, 'utf8')) as PictureGrid;
  } catch (e) {
    throw new FisherLensError('ERR_FORMAT', `${file}: not valid JSON: ${(e as Error).message}`);
  }
  if (g.version !== PICTURES_VERSION || !Array.isArray(g.columns) || !Array.isArray(g.indices)) {
    throw new FisherLensError('ERR_FORMAT', `${file}: expected a picture grid of version ${PICTURES_VERSION}`);
  }
  return g;
}

/**
 * The whole grid as one PNG (rows = samples, columns as in the grid, `zoom`× pixels, a 2-pixel
 * white gutter); grey when the images have one channel, else RGB. Captions are not drawn: they
 * are in the grid (and the CLI prints them).
 */
export function gridPng(pd: PictureData, zoom = 2): Buffer {
  const [C, H, W] = pd.grid.imageShape;
  const S = pd.grid.indices.length, K = pd.grid.columns.length, gut = 2;
  const ch = H * zoom, cw = W * zoom;
  const width = K * cw + (K + 1) * gut, height = S * ch + (S + 1) * gut;
  const all = new Float32Array(C * width * height).fill(1);
  const D = C * H * W;
  pd.grid.columns.forEach((col, k) => {
    const vals = pd.values[k];
    for (let s = 0; s < S; s++) {
      for (let c = 0; c < C; c++) {
        for (let yy = 0; yy < ch; yy++) {
          for (let xx = 0; xx < cw; xx++) {
            const v = vals[s * D + c * H * W + Math.floor(yy / zoom) * W + Math.floor(xx / zoom)];
            // map to [0, 1] so the composite encodes with one 'unit' mapping
            all[c * width * height + (gut + s * (ch + gut) + yy) * width + gut + k * (cw + gut) + xx] = toByte(v, col.mapping, col.scale) / 255;
          }
        }
      }
    }
  });
  return encodePng(all, [C, height, width], 'unit', 1);
}

/** A one-line caption of a cell (label, prediction, confidence, mark). */
export function caption(grid: Pick<PictureGrid, 'labels'>, col: Pick<PictureColumn, 'kind'>, cell: Omit<PictureCell, 'png'>, row: number, names?: string[]): string {
  const name = (k: number) => names?.[k] ?? String(k);
  const pc = (c?: number) => (c === undefined ? '' : ` ${(100 * c).toFixed(c > 0.999 && c < 1 ? 2 : 0)}%`);
  switch (col.kind) {
    case 'clean': return `label ${name(grid.labels[row])}, pred ${name(cell.prediction!)}${pc(cell.confidence)}`;
    case 'adversarial': return `pred ${name(cell.prediction!)}${pc(cell.confidence)}${cell.robust ? `, robust${cell.tried ? ` (${cell.tried}'s attempt)` : ''}` : cell.by ? `, broken by ${cell.by}` : ', wrong clean'}`;
    case 'perturbation': return `‖δ‖∞ ${fmt3(cell.linf)}, ‖δ‖₂ ${fmt3(cell.l2)}`;
    case 'eigvec': return `λ_max ${fmt3(cell.lambdaMax)}`;
  }
}
const fmt3 = (x?: number): string => (x === undefined || !Number.isFinite(x) ? '–' : Math.abs(x) >= 1e4 || (x !== 0 && Math.abs(x) < 1e-3) ? x.toExponential(2) : Number(x.toPrecision(3)).toString());

// ---------------- class matrices (heatmaps) ----------------

/** The class matrices of a model on a dataset. */
export interface ClassMatrices {
  /** Samples per true class [C]. */
  counts: number[];
  /** Row a: the mean predicted distribution over the samples of true class a (C × C, rows sum to 1). */
  meanProbs: number[][];
  /** [a][b]: mean KL(p_i ‖ p_j) over i of class a, j of class b (C × C, nats; CCKL is the off-diagonal mean weighted by n_a n_b). */
  kl: number[][];
  /** CCKL of the same pass (nats). */
  cckl: number;
  samples: number;
}

/** classes.json: the class matrices of the final model and, when the run trained, of its initial weights. */
export interface ClassPictures {
  version: number;
  final: ClassMatrices;
  initial?: ClassMatrices;
}

/** {@link ClassMatrices} of `model` on `data` (eval-mode forward passes, one streaming pass; lib/science/metrics.ts CcklAccumulator). */
export async function classMatrices(model: Model, data: Dataset, opts: { batchSize?: number } & OpOptions = {}): Promise<ClassMatrices> {
  const acc = new CcklAccumulator({ keepLogp: false });
  try {
    for (const b of data.batches({ batchSize: opts.batchSize ?? 256 })) await acc.addBatch(model, b.x, b.y, opts);
    const m = acc.classMatrices();
    const r = acc.result();
    return { ...m, cckl: r.cckl, samples: r.n };
  } finally {
    acc.dispose();
  }
}

/** Reads classes.json of a pictures folder (null when absent). */
export function readClassPictures(dir: string): ClassPictures | null {
  const file = path.join(dir, CLASSES_FILE);
  if (!fs.existsSync(file)) return null;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as ClassPictures;
  } catch (e) {
    throw new FisherLensError('ERR_FORMAT', `${file}: not valid JSON: ${(e as Error).message}`);
  }
}
