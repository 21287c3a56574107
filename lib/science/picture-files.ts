/**
 * The picture file format (docs/experiments.md, "Pictures"): a pictures folder holds per grid
 * column a float32 .npy of the values and per cell an 8-bit PNG (pngjs; grey for one channel, RGB
 * for three), then grid.json (written last: its presence means complete) and classes.json (the
 * class matrices behind the report's heatmaps). lib/science/pictures.ts computes what goes in;
 * the experiment runner writes it and the report reads it.
 *
 * Pixel mapping (one scale per column, printed in its title): images in [0, 1] map to
 * round(255 v); signed columns (perturbations, eigenvectors) map [−s, s] to [0, 255] with 0 at
 * mid-grey, s = the column's largest |value|: a pixel is within one 8-bit step (2s/255) of the
 * value it shows.
 */
import * as fs from 'fs';
import * as path from 'path';
import { PNG } from 'pngjs';
import { NpyWriter } from './data';
import { FisherLensError } from '../util/errors';
import { writeFileAtomic } from '../util/files';

/** Format version of grid.json and classes.json. */
export const PICTURES_VERSION = 1;
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
