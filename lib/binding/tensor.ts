/**
 * Tensor: a handle to a native torch::Tensor on its device. Data crosses into JavaScript only
 * through {@link Tensor.toArray}; batch loops pass handles.
 */
import { addon, NativeDtype, NativeTensor, NativeTypedArray } from './native';
import { FisherLensError, sync, invalidArgument } from '../util/errors';

export type Dtype = NativeDtype;
/** 'cpu' | 'cuda' | 'cuda:N' */
export type Device = string;
export type TypedArray = NativeTypedArray;

/** A nested array of numbers (e.g. [[1, 2], [3, 4]]). */
export type Nested = number | Nested[];

function flattenNested(data: Nested, shape: number[], out: number[], depth = 0): void {
  if (typeof data === 'number') {
    if (depth !== shape.length && shape.length !== 0) throw new FisherLensError('ERR_SHAPE', 'ragged nested array');
    out.push(data);
    return;
  }
  if (!Array.isArray(data)) throw invalidArgument('Tensor.fromNested(data): an element', 'a number or an array', data);
  if (depth === shape.length) shape.push(data.length);
  else if (shape[depth] !== data.length) {
    throw new FisherLensError('ERR_SHAPE', `ragged nested array: dimension ${depth} has lengths ${shape[depth]} and ${data.length}`);
  }
  for (const d of data) flattenNested(d, shape, out, depth + 1);
}

/** `x` itself when it is a Tensor; ERR_ARG naming the argument otherwise (undefined, a plain array, …). */
export function tensorArg(x: unknown, what: string): Tensor {
  if (!(x instanceof Tensor)) {
    throw invalidArgument(what, 'a Tensor (Tensor.from / Tensor.fromNested)', x);
  }
  return x;
}

export class Tensor {
  /** @internal */
  readonly native: NativeTensor;

  /** @internal Wraps a native handle (use the static factories). */
  constructor(native: NativeTensor) {
    this.native = native;
  }

  /**
   * Makes a tensor from a typed array and a shape (the data is copied). The dtype follows the
   * array: Float32Array → float32, Float64Array → float64, BigInt64Array → int64,
   * Int32Array → int32, Uint8Array → uint8.
   */
  static from(data: TypedArray, shape: number[], opts: { device?: Device } = {}): Tensor {
    return new Tensor(sync(() => addon().tensorFromTypedArray(data, shape, opts.device ?? 'cpu')));
  }

  /** Makes a tensor from a nested array of numbers, as float32 (default), float64 or int64. */
  static fromNested(data: Nested, opts: { dtype?: 'float32' | 'float64' | 'int64'; device?: Device } = {}): Tensor {
    const shape: number[] = [];
    const flat: number[] = [];
    flattenNested(data, shape, flat);
    const dtype = opts.dtype ?? 'float32';
    const arr = dtype === 'float64' ? Float64Array.from(flat)
      : dtype === 'int64' ? BigInt64Array.from(flat.map((v) => BigInt(Math.trunc(v))))
        : Float32Array.from(flat);
    return Tensor.from(arr, shape, opts);
  }

  /** Sizes of each dimension, e.g. [B, C, H, W]. */
  get shape(): number[] { return sync(() => this.native.shape); }
  get dtype(): Dtype { return sync(() => this.native.dtype); }
  get device(): Device { return sync(() => this.native.device); }
  get disposed(): boolean { return this.native.disposed; }
  /** Number of elements. */
  get size(): number { return this.shape.reduce((a, b) => a * b, 1); }

  /** Copies the data into a new typed array (row-major), from any device. */
  toArray(): TypedArray { return sync(() => this.native.toArray()); }
  /** The data as plain numbers (int64 converted with Number()). */
  toNumbers(): number[] {
    const a = this.toArray();
    return a instanceof BigInt64Array ? Array.from(a, (v) => Number(v)) : Array.from(a as Float64Array);
  }
  /** The value of a one-element tensor. */
  item(): number { return sync(() => this.native.item()); }
  /** A copy on another device ('cpu' | 'cuda' | 'cuda:N') or with another dtype. */
  to(deviceOrDtype: Device | Dtype): Tensor { return new Tensor(sync(() => this.native.to(deviceOrDtype))); }
  /** Rows `indices` (int64 tensor [K]) along dimension 0 (a copy). */
  index(indices: Tensor): Tensor { return new Tensor(sync(() => this.native.index(indices.native))); }
  /** Rows [start, end) along dimension 0 (a copy). */
  slice(start: number, end: number): Tensor { return new Tensor(sync(() => this.native.slice(start, end))); }
  reshape(shape: number[]): Tensor { return new Tensor(sync(() => this.native.reshape(shape))); }
  clone(): Tensor { return new Tensor(sync(() => this.native.clone())); }
  /** Frees the native memory now (the GC would later); further use throws ERR_DISPOSED. */
  dispose(): void { this.native.dispose(); }
  [Symbol.dispose](): void { this.dispose(); }
  toString(): string {
    return this.disposed ? 'Tensor(disposed)' : `Tensor(${this.dtype} [${this.shape.join(', ')}] on ${this.device})`;
  }
}

/**
 * Live native tensors and the bytes they hold (for finding leaks). Every tensor and model handle
 * also reports its bytes to V8, which weighs them when it decides to collect garbage.
 */
export function memory(): { tensors: number; bytes: number } {
  const m = addon().memory();
  return { tensors: m.tensors, bytes: m.bytes };
}
