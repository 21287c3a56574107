/**
 * Dataset: images float32 [N, C, H, W] in [0, 1] and labels int64 [N], as native tensors on
 * their device. Batches are gathered natively by index; no image passes through JavaScript.
 */
import { FisherLensError, invalidArgument } from '../../util/errors';
import { Tensor } from '../../binding/tensor';
import { addon } from '../../binding/native';
import { runOp, OpOptions } from '../../binding/op';
import { permutation } from '../../util/random';
import { AUGMENT_OPTIONS } from '../options';
import { parseOptions } from '../../util/schema';

/** One batch: x [B, C, H, W] float32 in [0, 1], y [B] int64. */
export interface Batch {
  x: Tensor;
  y: Tensor;
  /** Positions of the batch's samples in the dataset [B]. */
  indices: number[];
}

export interface BatchOptions {
  /** Samples per batch (the last batch may be smaller). */
  batchSize: number;
  /** Shuffle with a seeded permutation (default false). */
  shuffle?: boolean;
  /** Seed of the permutation (default 0). */
  seed?: number;
  /** Drop a last incomplete batch (default false). */
  dropLast?: boolean;
}

/** Batching with native CIFAR augmentation (see {@link Dataset.augmentedBatches}). */
export interface AugmentedBatchOptions extends BatchOptions, OpOptions {
  /** Zero padding before the random crop, in pixels (default 4; 0 = no crop). */
  pad?: number;
  /** Random horizontal flips (default true). */
  flip?: boolean;
}

/** A seeded permutation of 0..n-1 (xorshift128+ Fisher–Yates: same seed, same order everywhere). */
export { permutation } from '../../util/random';

export class Dataset {
  /** images [N, C, H, W] float32 in [0, 1] */
  readonly images: Tensor;
  /** labels [N] int64 in [0, numClasses) */
  readonly labels: Tensor;
  readonly numClasses: number;
  /** A name for reports (e.g. 'fashion-mnist/test'). */
  readonly name: string;

  constructor(images: Tensor, labels: Tensor, opts: { numClasses?: number; name?: string } = {}) {
    const s = images.shape;
    if (s.length !== 4) throw new FisherLensError('ERR_SHAPE', `Dataset: images must be [N, C, H, W], got [${s.join(', ')}]`);
    const l = labels.shape;
    if (l.length !== 1 || l[0] !== s[0]) {
      throw new FisherLensError('ERR_SHAPE', `Dataset: labels must be [${s[0]}], got [${l.join(', ')}]`);
    }
    if (labels.dtype !== 'int64') throw new FisherLensError('ERR_DTYPE', `Dataset: labels must be int64, got ${labels.dtype}`);
    this.images = images;
    this.labels = labels;
    this.numClasses = opts.numClasses ?? 10;
    this.name = opts.name ?? 'dataset';
  }

  /** Number of samples N. */
  get size(): number { return this.images.shape[0]; }
  /** [C, H, W] of one image. */
  get imageShape(): number[] { return this.images.shape.slice(1); }

  /** Device of the images ('cpu' | 'cuda' | 'cuda:N'). */
  get device(): string { return this.images.device; }

  /**
   * A copy of this dataset on another device (readers load to 'cpu'); the same object when
   * already there. The copy runs on the compute thread (a dataset is large).
   */
  async to(device: string, opts: OpOptions = {}): Promise<Dataset> {
    if (device === this.device) return this;
    const images = new Tensor(await runOp(opts, (ctl) => addon().tensorTo(this.images.native, device, ctl)));
    try {
      const labels = new Tensor(await runOp(opts, (ctl) => addon().tensorTo(this.labels.native, device, ctl)));
      return new Dataset(images, labels, { numClasses: this.numClasses, name: this.name });
    } catch (e) {
      images.dispose();
      throw e;
    }
  }

  /** The samples at `indices` as a new Dataset (a native gather on the compute thread). */
  async subset(indices: number[], name?: string, opts: OpOptions = {}): Promise<Dataset> {
    const idx = Tensor.from(BigInt64Array.from(indices.map((i) => BigInt(i))), [indices.length]);
    let images: Tensor | undefined;
    try {
      images = new Tensor(await runOp(opts, (ctl) => addon().tensorIndex(this.images.native, idx.native, ctl)));
      const labels = new Tensor(await runOp(opts, (ctl) => addon().tensorIndex(this.labels.native, idx.native, ctl)));
      return new Dataset(images, labels, { numClasses: this.numClasses, name: name ?? this.name });
    } catch (e) {
      images?.dispose();
      throw e;
    } finally {
      idx.dispose();
    }
  }

  /** The first n samples (a copy), or this dataset itself when n ≥ size. */
  async take(n: number, opts: OpOptions = {}): Promise<Dataset> {
    return n >= this.size ? this : this.subset(Array.from({ length: n }, (_, i) => i), this.name, opts);
  }

  /** The batch of the samples at `indices`. */
  batch(indices: number[]): Batch {
    const idx = Tensor.from(BigInt64Array.from(indices.map((i) => BigInt(i))), [indices.length]);
    try {
      return { x: this.images.index(idx), y: this.labels.index(idx), indices };
    } finally {
      idx.dispose();
    }
  }

  /** Index lists of the batches of one pass (seeded shuffle when asked). */
  batchIndices(opts: BatchOptions): number[][] {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) {
      throw invalidArgument('batchSize', 'a positive integer', opts.batchSize);
    }
    const order = opts.shuffle ? permutation(this.size, opts.seed ?? 0) : Array.from({ length: this.size }, (_, i) => i);
    const out: number[][] = [];
    for (let i = 0; i < order.length; i += opts.batchSize) {
      const b = order.slice(i, i + opts.batchSize);
      if (opts.dropLast && b.length < opts.batchSize) break;
      out.push(b);
    }
    return out;
  }

  /** Iterates over batches; each batch's tensors are disposed when the loop moves on. */
  *batches(opts: BatchOptions): Generator<Batch> {
    for (const idx of this.batchIndices(opts)) {
      const b = this.batch(idx);
      try {
        yield b;
      } finally {
        b.x.dispose();
        b.y.dispose();
      }
    }
  }

  /**
   * Batches like {@link batches}, each augmented natively (random crop after `pad`-pixel zero
   * padding, horizontal flip): batch i uses seed (seed · 1 000 003 + i), so the same seed gives
   * the same epoch. Each batch's tensors are disposed when the loop moves on.
   */
  async *augmentedBatches(opts: AugmentedBatchOptions): AsyncGenerator<Batch> {
    const base = opts.seed ?? 0;
    const { pad, flip } = parseOptions('augment', AUGMENT_OPTIONS, opts) as { pad: number; flip: boolean };
    let i = 0;
    for (const idx of this.batchIndices(opts)) {
      const b = this.batch(idx);
      let x: Tensor;
      try {
        const seed = (base * 1000003 + i++) % 2 ** 52;
        x = new Tensor(await runOp(opts, (ctl) =>
          addon().augment(b.x.native, seed, pad, flip, ctl)));
      } finally {
        b.x.dispose();
      }
      try {
        yield { x, y: b.y, indices: b.indices };
      } finally {
        x.dispose();
        b.y.dispose();
      }
    }
  }

  /**
   * Splits into two datasets: a seeded random `fraction` of the samples (rounded down) and the
   * rest, e.g. `const [train, val] = ds.split(0.9, { seed: 1 })`.
   */
  async split(fraction: number, opts: { seed?: number; shuffle?: boolean } = {}): Promise<[Dataset, Dataset]> {
    if (!(fraction > 0 && fraction < 1)) throw invalidArgument('split(fraction)', 'a number in (0, 1)', fraction);
    const order = opts.shuffle === false ? Array.from({ length: this.size }, (_, i) => i) : permutation(this.size, opts.seed ?? 0);
    const k = Math.floor(this.size * fraction);
    if (k === 0 || k === this.size) throw invalidArgument('split(fraction)', `a fraction that leaves both sides of ${this.size} samples non-empty`, fraction);
    const a = await this.subset(order.slice(0, k), `${this.name}[split:a]`);
    try {
      return [a, await this.subset(order.slice(k), `${this.name}[split:b]`)];
    } catch (e) {
      a.dispose();
      throw e;
    }
  }

  /** Number of samples of each class [numClasses] (reads the labels into JavaScript). */
  classCounts(): number[] {
    const counts = new Array<number>(this.numClasses).fill(0);
    for (const v of this.labels.toArray() as BigInt64Array) {
      const c = Number(v);
      if (c >= 0 && c < counts.length) counts[c]++;
    }
    return counts;
  }

  dispose(): void {
    this.images.dispose();
    this.labels.dispose();
  }
}

/**
 * Seed stride between batches of a seeded pass: batch i gets `seed + BATCH_SEED_STRIDE · i`, so
 * a result depends on the seed and the batch size only (a prime: two batches of nearby seeds
 * rarely share one).
 */
export const BATCH_SEED_STRIDE = 7919;

/** One batch of {@link firstBatches}: the batch, its 0-based position in the pass and its seed. */
export interface SeededBatch extends Batch {
  /** 0-based batch number in the pass. */
  index: number;
  /** `seed + BATCH_SEED_STRIDE · index`. */
  seed: number;
}

/**
 * The one loop over "the first `limit` samples, in order, batch by batch, each batch with its own
 * seed" of the evaluations (lib/science/model.ts evaluate, robust.ts, autoattack.ts): the first
 * min(limit, size) samples (all without `limit`) in batches of `batchSize`; batch i carries seed
 * `seed + BATCH_SEED_STRIDE · i` (seed default 0). The copy that a limit takes is disposed when
 * the loop ends, also by break or a throw; each batch's tensors when the loop moves on.
 */
export async function* firstBatches(data: Dataset, opts: { limit?: number; batchSize: number; seed?: number } & OpOptions): AsyncGenerator<SeededBatch> {
  const src = opts.limit !== undefined && opts.limit < data.size ? await data.take(opts.limit, { signal: opts.signal }) : data;
  try {
    let index = 0;
    for (const b of src.batches({ batchSize: opts.batchSize })) {
      yield { ...b, index, seed: (opts.seed ?? 0) + BATCH_SEED_STRIDE * index };
      index++;
    }
  } finally {
    if (src !== data) src.dispose();
  }
}
