/**
 * `--images FILE.png` of `fisherlens attack` and `fisherlens fisher`: the picture grid
 * (lib/science/pictures.ts) of a seeded handful of the evaluated samples as one PNG (rows = samples;
 * columns = clean, each attack's example and perturbation, the Fisher eigenvector), with its
 * captions printed (and in the JSON output).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Command } from 'commander';
import { Dataset } from '../science/data';
import { FisherLensError, invalidArgument } from '../util/errors';
import { natInt, posInt } from './common';
import { Model } from '../science/model';
import { CLASS_NAMES, caption, gridPng } from '../science/picture-files';
import { PICTURE_SAMPLES, PictureAttack, pictureGrid, pictureSamples } from '../science/pictures';
import type { KeptExamples } from '../science/robust';
import { writeFileAtomic } from '../util/files';

export interface ImagesCliOptions { images?: string; imageSamples: string; imageSeed?: string }

/** Adds --images, --image-samples and --image-seed to a command. */
export function imagesOptions(cmd: Command): Command {
  return cmd
    .option('--images <file.png>', 'also write the picture grid of a few samples as one PNG (clean, adversarial, perturbation, Fisher eigenvector; captions printed)')
    .option('--image-samples <n>', 'samples in the picture grid (spread over classes)', String(PICTURE_SAMPLES))
    .option('--image-seed <n>', 'seed of the picture samples (default: --seed)');
}

/** The JSON of a written grid: the file, column titles and per row the captions. */
export interface ImagesOutput {
  file: string;
  columns: { title: string; kind: string; scale: number }[];
  rows: { index: number; label: number; captions: string[] }[];
}

/** The parsed --images options. */
export interface ImagesRequest { file: string; count: number; seed: number }

/** Checks the --images options before any work (undefined without --images); `seed` is the command's seed. */
export function parseImages(o: ImagesCliOptions, seed: number): ImagesRequest | undefined {
  if (o.images === undefined) return undefined;
  if (!o.images.toLowerCase().endsWith('.png')) throw invalidArgument('--images', 'a .png file name', o.images);
  const dir = path.dirname(path.resolve(o.images));
  if (!fs.existsSync(dir)) throw new FisherLensError('ERR_IO', `--images: folder ${dir} does not exist`);
  const count = posInt('image-samples', o.imageSamples);
  const s = natInt('image-seed', o.imageSeed) ?? seed;
  return { file: o.images, count, seed: s };
}

/** The seeded handful of the first `n` samples of `data` that the grid of `req` shows. */
export function imageIndices(data: Dataset, n: number, req: ImagesRequest): number[] {
  return pictureSamples(data.labels.toNumbers().slice(0, n), req.count, req.seed);
}

/**
 * Writes the grid of a seeded handful of the first `n` samples of `data` to req.file (atomically)
 * and returns what was drawn. `examples`: the evaluation's examples and outcomes of those samples
 * (evaluateRobustness keep: {@link imageIndices}), shown instead of attacking again.
 */
export async function writeImages(model: Model, data: Dataset, n: number, attacks: PictureAttack[], req: ImagesRequest, names?: string[], examples?: KeptExamples): Promise<ImagesOutput> {
  const indices = examples?.indices ?? imageIndices(data, n, req);
  const pd = await pictureGrid(model, data, attacks, { indices, examples });
  writeFileAtomic(req.file, gridPng(pd));
  const g = pd.grid;
  return {
    file: path.resolve(req.file),
    columns: g.columns.map((c) => ({ title: c.title, kind: c.kind, scale: c.scale })),
    rows: g.indices.map((index, r) => ({ index, label: g.labels[r], captions: g.columns.map((c, k) => caption(g, c, pd.cells[k][r], r, names)) })),
  };
}

/** Human lines of a written grid. */
export function imagesText(out: ImagesOutput): string[] {
  return [
    `images          ${out.file} (${out.rows.length} rows: ${out.columns.map((c) => c.title).join(' | ')})`,
    ...out.rows.map((r) => `  #${r.index}: ${r.captions.join(' | ')}`),
  ];
}

/** Class names for a --data spec (fashion-mnist, mnist, cifar10 by prefix; else undefined). */
export function classNamesOf(spec: string): string[] | undefined {
  const k = Object.keys(CLASS_NAMES).find((d) => spec === d || spec.startsWith(`${d}:`));
  return k ? CLASS_NAMES[k] : undefined;
}
