/**
 * Dataset readers: IDX (MNIST, Fashion-MNIST; .gz or raw), CIFAR-10/100 binary, NumPy .npy and
 * synthetic sets, plus CIFAR augmentation. Each reader parses natively (off the main thread) and
 * returns a {@link Dataset} of images float32 [N, C, H, W] in [0, 1] and labels int64 [N].
 * A bad file rejects with ERR_FORMAT naming the file and what was wrong; a missing one ERR_IO.
 * No download code: point the readers at files you have.
 */
import * as fs from 'fs';
import * as path from 'path';
import { addon, NativeLoaded } from '../../binding/native';
import { FisherLensError, invalidArgument } from '../../util/errors';
import { runOp, OpOptions } from '../../binding/op';
import { Tensor } from '../../binding/tensor';
import { Dataset } from './dataset';
import { AtomicFile, ensureDir, removeStaleTemps } from '../../util/files';
import { AUGMENT_OPTIONS, SYNTHETIC_OPTIONS } from '../options';
import { parseOptions } from '../../util/schema';

export { Dataset, Batch, BatchOptions, AugmentedBatchOptions, permutation } from './dataset';


/**
 * Writes one float32 .npy file of a known total shape: the header first, then rows in order, into
 * a temporary name that {@link close} checks (element count) and renames into place. Tensors are
 * appended natively ({@link append}: converted to float32 and written on the compute thread, the
 * data never passes through JavaScript); values already in JavaScript with {@link appendValues}.
 * The reader is {@link loadNpy} / native/data.cc.
 */
export class NpyWriter {
  private readonly out: AtomicFile;
  private written = 0;
  constructor(readonly file: string, readonly shape: number[]) {
    const dims = shape.join(', ') + (shape.length === 1 ? ',' : '');
    let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
    const pad = 64 - ((10 + header.length + 1) % 64);
    header += ' '.repeat(pad === 64 ? 0 : pad) + '\n';
    const pre = Buffer.alloc(10);
    pre.write('\x93NUMPY', 0, 'latin1');
    pre[6] = 1; pre[7] = 0;
    pre.writeUInt16LE(header.length, 8);
    const dir = path.dirname(path.resolve(file));
    ensureDir(dir);
    removeStaleTemps(dir, path.basename(file));
    // append mode: native appends (by path) and appendValues both go to the end
    this.out = new AtomicFile(file, { append: true });
    this.out.write(Buffer.concat([pre, Buffer.from(header, 'latin1')]));
  }
  /** Appends a float tensor's rows as float32 (one native op). */
  async append(t: Tensor, opts: OpOptions = {}): Promise<void> {
    this.written += await runOp(opts, (ctl) => addon().appendNpy(this.out.tmp, t.native, ctl));
  }
  /** Appends float32 values that are already in JavaScript. */
  appendValues(a: Float32Array): void {
    this.out.write(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    this.written += a.length;
  }
  /** Checks the element count and renames the file into place. */
  close(): void {
    const want = this.shape.reduce((a, b) => a * b, 1);
    if (this.written !== want) {
      this.abort();
      throw new FisherLensError('ERR_IO', `${this.file}: wrote ${this.written} of ${want} values`);
    }
    this.out.commit();
  }
  /** Removes the partial file (nothing appears at `file`). */
  abort(): void {
    this.out.abort();
  }
}

/** The halves of a dataset with a train/test split. */
export const SPLITS = ['train', 'test'] as const;
/** Which half of a dataset with a train/test split. */
export type Split = typeof SPLITS[number];

/** What a `--data` spec (and {@link loadData}'s `spec`) may be, in words: the CLI's help and the loader's error say it. */
export const DATA_SPECS = 'fashion-mnist[:<dir>], mnist:<dir>, cifar10:<dir>, cifar100:<dir>, synthetic[:gaussian|linear], a dataset directory or an .npy images file';

/** Debian's python3-fashion-mnist / dataset package location. */
export const DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist';

function checkSplit(split: string | undefined): Split {
  const s = split ?? 'train';
  if (s !== 'train' && s !== 'test') throw invalidArgument('split', `one of ${SPLITS.join(', ')}`, s);
  return s;
}

/** The first existing file among `names` in `dir`, or ERR_IO listing what was looked for. */
function findFile(dir: string, names: string[], what: string): string {
  for (const n of names) {
    const p = path.join(dir, n);
    if (fs.existsSync(p)) return p;
  }
  throw new FisherLensError('ERR_IO', `${what}: none of ${names.join(', ')} found in '${dir}'`);
}

function toDataset(r: NativeLoaded, name: string, numClasses?: number): Dataset {
  if (!r.labels) throw new FisherLensError('ERR_FORMAT', `${name}: no labels were read`);
  return new Dataset(new Tensor(r.images), new Tensor(r.labels), { numClasses: numClasses ?? r.numClasses, name });
}

async function idx(dir: string, split: Split, name: string, opts: OpOptions): Promise<Dataset> {
  const prefix = split === 'train' ? 'train' : 't10k';
  const img = findFile(dir, [`${prefix}-images-idx3-ubyte.gz`, `${prefix}-images-idx3-ubyte`, `${prefix}-images.idx3-ubyte`], name);
  const lbl = findFile(dir, [`${prefix}-labels-idx1-ubyte.gz`, `${prefix}-labels-idx1-ubyte`, `${prefix}-labels.idx1-ubyte`], name);
  const r = await runOp(opts, (ctl) => addon().loadIdx(img, lbl, 10, ctl));
  return toDataset(r, `${name}/${split}`);
}

/** The directory Fashion-MNIST is read from: `dir`, else $FISHERLENS_FASHION_MNIST, else Debian's. */
export function fashionMnistDir(dir?: string): string {
  return dir ?? process.env.FISHERLENS_FASHION_MNIST ?? DEBIAN_FASHION_MNIST;
}

/**
 * Fashion-MNIST (IDX files, .gz or raw): 60 000 train / 10 000 test images [N, 1, 28, 28] in
 * [0, 1], 10 classes. Looks in `dir`, else $FISHERLENS_FASHION_MNIST, else
 * /usr/share/datasets/fashion-mnist (Debian).
 */
export async function fashionMnist(opts: { split?: Split; dir?: string } & OpOptions = {}): Promise<Dataset> {
  const dir = fashionMnistDir(opts.dir);
  if (!fs.existsSync(dir)) {
    throw new FisherLensError('ERR_IO', `Fashion-MNIST not found: '${dir}' does not exist. Pass { dir }, set FISHERLENS_FASHION_MNIST, ` +
      `or install Debian's fashion-mnist dataset (${DEBIAN_FASHION_MNIST})`);
  }
  return idx(dir, checkSplit(opts.split), 'fashion-mnist', opts);
}

/** MNIST from a directory of the four IDX files (.gz or raw): [N, 1, 28, 28] in [0, 1], 10 classes. */
export async function mnist(dir: string, opts: { split?: Split } & OpOptions = {}): Promise<Dataset> {
  return idx(dir, checkSplit(opts.split), 'mnist', opts);
}

function cifarDir(dir: string, sub: string): string {
  const inner = path.join(dir, sub);
  return fs.existsSync(inner) ? inner : dir;
}

/**
 * CIFAR-10, binary version (a user's cifar-10-batches-bin, or its parent): images
 * [N, 3, 32, 32] in [0, 1], 10 classes; train = data_batch_1..5.bin (50 000), test = test_batch.bin.
 */
export async function cifar10(dir: string, split: Split = 'train', opts: OpOptions = {}): Promise<Dataset> {
  const d = cifarDir(dir, 'cifar-10-batches-bin');
  const files = checkSplit(split) === 'train'
    ? [1, 2, 3, 4, 5].map((i) => findFile(d, [`data_batch_${i}.bin`], 'cifar10'))
    : [findFile(d, ['test_batch.bin'], 'cifar10')];
  return toDataset(await runOp(opts, (ctl) => addon().loadCifar(files, 10, false, ctl)), `cifar10/${split}`);
}

/**
 * CIFAR-100, binary version (cifar-100-binary, or its parent): images [N, 3, 32, 32] in [0, 1];
 * 100 fine labels (default) or 20 coarse ones.
 */
export async function cifar100(dir: string, split: Split = 'train', opts: { labels?: 'fine' | 'coarse' } & OpOptions = {}): Promise<Dataset> {
  const d = cifarDir(dir, 'cifar-100-binary');
  const file = findFile(d, [checkSplit(split) === 'train' ? 'train.bin' : 'test.bin'], 'cifar100');
  const coarse = opts.labels === 'coarse';
  return toDataset(await runOp(opts, (ctl) => addon().loadCifar([file], 100, coarse, ctl)), `cifar100/${split}`);
}

/** Sibling label files tried when loadNpy gets no labels path: x.npy → y.npy, images.npy → labels.npy. */
function guessLabels(xPath: string): string | undefined {
  const dir = path.dirname(xPath);
  const base = path.basename(xPath);
  const cands = [
    base.replace(/^x(?=[._])/i, 'y'), base.replace(/x(?=\.npy$)/i, 'y'), base.replace(/images/, 'labels'),
    base.replace(/^X/, 'y'), 'labels.npy', 'y.npy',
  ].filter((c) => c !== base);
  for (const c of cands) if (fs.existsSync(path.join(dir, c))) return path.join(dir, c);
  return undefined;
}

/**
 * Images and labels from NumPy .npy files (C order; little-endian float32, float64, uint8 or
 * int64 — int32/int16/int8 labels too). Images: [N, H, W] (one channel), [N, C, H, W] with C = 1
 * or 3, or [N, H, W, C] with C = 1, 3 or 4 (channels-last, transposed); uint8 is divided by 255,
 * floats must lie in [0, 1]. Labels: [N] integers ≥ 0. Without `yPath` a sibling y.npy /
 * labels.npy is used. numClasses defaults to max label + 1 (at least 2).
 */
export async function loadNpy(xPath: string, yPath?: string, opts: { numClasses?: number } & OpOptions = {}): Promise<Dataset> {
  const yp = yPath ?? guessLabels(xPath);
  if (!yp) {
    throw invalidArgument(`loadNpy('${xPath}'): the labels`, 'a labels .npy (none given, and no sibling labels file y.npy or labels.npy found)', yPath);
  }
  const x = new Tensor(await runOp(opts, (ctl) => addon().loadNpy(xPath, 'images', ctl)));
  let y: Tensor;
  try {
    y = new Tensor(await runOp(opts, (ctl) => addon().loadNpy(yp, 'labels', ctl)));
  } catch (e) {
    x.dispose();
    throw e;
  }
  const n = x.shape[0];
  const ny = y.shape[0];
  if (ny !== n) {
    x.dispose();
    y.dispose();
    throw new FisherLensError('ERR_FORMAT', `'${yp}' has ${ny} labels but '${xPath}' has ${n} images`);
  }
  const maxLabel = n > 0 ? Math.max(...Array.from(y.toArray() as BigInt64Array, (v) => Number(v))) : 0;
  const k = opts.numClasses ?? Math.max(2, maxLabel + 1);
  if (maxLabel >= k) {
    x.dispose();
    y.dispose();
    throw new FisherLensError('ERR_FORMAT', `'${yp}': label ${maxLabel} is out of range for numClasses = ${k}`);
  }
  return new Dataset(x, y, { numClasses: k, name: path.basename(xPath, '.npy') });
}

import type { SyntheticOptions } from '../../binding/types';
export type { SyntheticOptions };

/** A synthetic dataset with known structure (for tests and demos); seeded. */
export async function synthetic(opts: SyntheticOptions & OpOptions = {}): Promise<Dataset> {
  const o = parseOptions('synthetic', SYNTHETIC_OPTIONS, opts) as Required<SyntheticOptions>;
  const r = await runOp(opts, (ctl) => addon().synthetic(o, ctl));
  return toDataset(r, `synthetic-${o.kind}`);
}

/** Options of {@link augment}. */
export interface AugmentOptions {
  /** Seed of the crops and flips (default 0). */
  seed?: number;
  /** Zero padding before the random crop, in pixels (default 4). */
  pad?: number;
  /** Mirror left-right with probability ½ (default true). */
  flip?: boolean;
}

/**
 * CIFAR augmentation of a batch x [B, C, H, W]: each image zero-padded by `pad` pixels, cropped
 * back to H×W at a random offset, and mirrored with probability ½. Returns a new tensor; seeded.
 */
export async function augment(x: Tensor, opts: AugmentOptions & OpOptions = {}): Promise<Tensor> {
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0) throw invalidArgument("augment option 'seed'", 'a non-negative integer', seed);
  const { pad, flip } = parseOptions('augment', AUGMENT_OPTIONS, opts) as { pad: number; flip: boolean };
  return new Tensor(await runOp(opts, (ctl) => addon().augment(x.native, seed, pad, flip, ctl)));
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isNpy(p: string): boolean {
  if (p.endsWith('.npy')) return true;
  try {
    const fd = fs.openSync(p, 'r');
    const b = Buffer.alloc(6);
    fs.readSync(fd, b, 0, 6, 0);
    fs.closeSync(fd);
    return b.equals(Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]));
  } catch {
    return false;
  }
}

/** Which reader a directory's files call for, or undefined. */
export function detectDir(dir: string): 'idx' | 'cifar10' | 'cifar100' | undefined {
  const has = (f: string) => fs.existsSync(path.join(dir, f));
  if (['train-images-idx3-ubyte', 't10k-images-idx3-ubyte'].some((f) => has(f) || has(`${f}.gz`))) return 'idx';
  if (has('cifar-10-batches-bin') || has('data_batch_1.bin') || has('test_batch.bin')) return 'cifar10';
  if (has('cifar-100-binary') || (has('train.bin') && has('test.bin')) || has('test.bin')) return 'cifar100';
  return undefined;
}

/** Options of {@link loadData}. */
export interface LoadDataOptions extends OpOptions {
  /** Labels .npy (for an .npy images spec). */
  labels?: string;
  /** 'train' or 'test' for datasets with a split (default 'test'). */
  split?: Split;
  /** Overrides the class count (npy data). */
  numClasses?: number;
  /** Device the dataset should live on (default 'cpu'). */
  device?: string;
}

/**
 * The one data loader of every CLI (`--data <spec> [--labels y.npy] [--split test]`). `spec` is:
 * 'fashion-mnist' (Debian's files or $FISHERLENS_FASHION_MNIST) or 'fashion-mnist:<dir>';
 * 'mnist:<dir>'; 'cifar10:<dir>'; 'cifar100:<dir>'; 'synthetic' / 'synthetic:gaussian' /
 * 'synthetic:linear' (1000 samples, seed 0); a directory recognised by its files (IDX,
 * cifar-10-batches-bin, cifar-100-binary); or an .npy images file (labels from `opts.labels` or
 * a sibling y.npy / labels.npy). The split defaults to 'test'.
 */
export async function loadData(spec: string, opts: LoadDataOptions = {}): Promise<Dataset> {
  const ds = await loadDataCpu(spec, opts);
  if (!opts.device || opts.device === 'cpu') return ds;
  try {
    return await ds.to(opts.device, opts);
  } finally {
    ds.dispose();
  }
}

/**
 * The images [N, C, H, W] float32 in [0, 1] of a `--data` spec (as {@link loadData} reads it),
 * for what needs no labels (the Fisher information): an .npy images file is read alone, without
 * looking for a labels file; other specs are read whole and their labels dropped.
 */
export async function loadImages(spec: string, opts: Omit<LoadDataOptions, 'labels' | 'numClasses'> = {}): Promise<Tensor> {
  if (!isDir(spec) && fs.existsSync(spec) && isNpy(spec)) {
    const x = new Tensor(await runOp(opts, (ctl) => addon().loadNpy(spec, 'images', ctl)));
    if (!opts.device || opts.device === 'cpu') return x;
    try {
      return new Tensor(await runOp(opts, (ctl) => addon().tensorTo(x.native, opts.device!, ctl)));
    } finally {
      x.dispose();
    }
  }
  const ds = await loadData(spec, opts);
  ds.labels.dispose();
  return ds.images;
}

async function loadDataCpu(spec: string, opts: LoadDataOptions): Promise<Dataset> {
  const split = checkSplit(opts.split ?? 'test');
  const colon = spec.indexOf(':');
  const scheme = colon > 0 ? spec.slice(0, colon) : spec;
  const rest = colon > 0 ? spec.slice(colon + 1) : '';
  switch (scheme) {
    case 'fashion-mnist':
      return fashionMnist({ ...opts, split, dir: rest || undefined });
    case 'mnist':
      if (!rest) throw invalidArgument('--data', 'mnist:<dir> (the folder of its IDX files)', spec);
      return mnist(rest, { ...opts, split });
    case 'cifar10':
      if (!rest) throw invalidArgument('--data', 'cifar10:<dir> (the folder of its binary batches)', spec);
      return cifar10(rest, split, { signal: opts.signal, onProgress: opts.onProgress });
    case 'cifar100':
      if (!rest) throw invalidArgument('--data', 'cifar100:<dir> (the folder of its binary files)', spec);
      return cifar100(rest, split, { signal: opts.signal, onProgress: opts.onProgress });
    case 'synthetic': {
      const kind = rest || 'gaussian';
      if (kind !== 'gaussian' && kind !== 'linear') throw invalidArgument('--data synthetic:<kind>', 'gaussian or linear', kind);
      return synthetic({ ...opts, kind, seed: split === 'train' ? 0 : 1 });
    }
    default:
      break;
  }
  if (isDir(spec)) {
    const kind = detectDir(spec);
    const name = /fashion/i.test(spec) ? 'fashion-mnist' : 'mnist';
    if (kind === 'idx') return idx(spec, split, name, opts);
    if (kind === 'cifar10') return cifar10(spec, split, { signal: opts.signal, onProgress: opts.onProgress });
    if (kind === 'cifar100') return cifar100(spec, split, { signal: opts.signal, onProgress: opts.onProgress });
    throw invalidArgument('--data', 'a dataset directory holding IDX (train-images-idx3-ubyte[.gz]), cifar-10-batches-bin or cifar-100-binary files', spec);
  }
  if (fs.existsSync(spec)) {
    if (isNpy(spec)) return loadNpy(spec, opts.labels, opts);
    throw new FisherLensError('ERR_FORMAT', `--data '${spec}': not an .npy file (no \\x93NUMPY magic)`);
  }
  throw invalidArgument('--data', `${DATA_SPECS} (an existing one)`, spec);
}
