/**
 * What the weights readers give: named tensors as views over the file's bytes (nothing is copied
 * or converted while reading), and the dtype table the three formats share.
 *
 * The only import of the error module in this folder, so a move of that module is one line here.
 */
import { FisherLensError } from '../../util/errors';

export { FisherLensError };

/** A coded ERR_FORMAT error: the file is not what it claims to be. */
export function formatError(message: string): FisherLensError {
  return new FisherLensError('ERR_FORMAT', message);
}

/** Element types a weights file may hold (torch's names). */
export type WeightDtype =
  | 'float32' | 'float64' | 'float16' | 'bfloat16'
  | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export interface DtypeInfo {
  /** bytes per element */
  size: number;
  /** floating point (cast freely between these, with a warning) */
  float: boolean;
  /** torch's legacy typed storage class (`torch.FloatStorage`, …) */
  storage: string;
  /** the safetensors header's name */
  safetensors: string;
}

/** One row per dtype; every other table is derived from this one. */
export const DTYPES: Readonly<Record<WeightDtype, DtypeInfo>> = {
  float32: { size: 4, float: true, storage: 'FloatStorage', safetensors: 'F32' },
  float64: { size: 8, float: true, storage: 'DoubleStorage', safetensors: 'F64' },
  float16: { size: 2, float: true, storage: 'HalfStorage', safetensors: 'F16' },
  bfloat16: { size: 2, float: true, storage: 'BFloat16Storage', safetensors: 'BF16' },
  int64: { size: 8, float: false, storage: 'LongStorage', safetensors: 'I64' },
  int32: { size: 4, float: false, storage: 'IntStorage', safetensors: 'I32' },
  int16: { size: 2, float: false, storage: 'ShortStorage', safetensors: 'I16' },
  int8: { size: 1, float: false, storage: 'CharStorage', safetensors: 'I8' },
  uint8: { size: 1, float: false, storage: 'ByteStorage', safetensors: 'U8' },
  bool: { size: 1, float: false, storage: 'BoolStorage', safetensors: 'BOOL' },
};

export const DTYPE_NAMES = Object.keys(DTYPES) as WeightDtype[];

/**
 * One named tensor of a weights file: a strided view over `storage`, the raw little-endian bytes
 * of the storage it was saved with (views of one storage share the same Buffer, itself a view of
 * the file's bytes). Element (i0, i1, …) is at element index `offset + Σ ik·strides[k]`.
 */
export interface WeightTensor {
  name: string;
  dtype: WeightDtype;
  /** sizes per dimension; [] for a 0-d tensor */
  shape: number[];
  /** in elements, one per dimension */
  strides: number[];
  /** storage offset in elements */
  offset: number;
  /** the storage's bytes (length = storage elements × element size) */
  storage: Buffer;
  /** the device the storage was saved from ('cpu', 'cuda:0', …); informational only */
  location?: string;
}

/** The formats the readers know, told apart by content (sniff.ts). */
export type WeightsFormat = 'torch-zip' | 'torch-legacy' | 'safetensors';

/** A file read as weights: its format, the named tensors, and where in the file they sat. */
export interface WeightsFile {
  format: WeightsFormat;
  tensors: WeightTensor[];
  /** the keys leading from the file's top-level object to the state dict ([] = the top level) */
  container: string[];
  /** the top level's other entries, as short strings (epoch, best_acc, …) */
  extras: Record<string, string>;
  /** safetensors' `__metadata__` */
  metadata?: Record<string, string>;
}

/** Number of elements of `shape` (1 for a 0-d tensor). */
export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Whether the view covers its storage elements in row-major order without gaps. */
export function isContiguous(t: Pick<WeightTensor, 'shape' | 'strides'>): boolean {
  let expected = 1;
  for (let d = t.shape.length - 1; d >= 0; d--) {
    if (t.shape[d] === 1) continue;
    if (t.strides[d] !== expected) return false;
    expected *= t.shape[d];
  }
  return true;
}

/**
 * Checks a strided view against its storage: non-negative integer sizes, strides and offset, every
 * element inside the storage, and no more elements than the storage holds (a view with stride 0
 * could declare 2^80 elements over 4 bytes; state dicts never hold one, and refusing it keeps what
 * a reader may materialise bounded by the file's size). Throws ERR_FORMAT naming the tensor.
 */
export function checkView(t: WeightTensor): void {
  const what = `tensor '${t.name}'`;
  const okInt = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
  if (!Array.isArray(t.shape) || !t.shape.every(okInt)) throw formatError(`${what}: bad shape ${fmt(t.shape)}`);
  if (!Array.isArray(t.strides) || t.strides.length !== t.shape.length || !t.strides.every(okInt)) {
    throw formatError(`${what}: bad strides ${fmt(t.strides)} for shape ${fmt(t.shape)}`);
  }
  if (!okInt(t.offset)) throw formatError(`${what}: bad storage offset ${fmt(t.offset)}`);
  const size = DTYPES[t.dtype].size;
  const storageNumel = Math.floor(t.storage.length / size);
  // BigInt: sizes can each be near 2^53, so their product cannot be trusted to a double
  const numel = t.shape.reduce((a, b) => a * BigInt(b), 1n);
  if (numel === 0n) return;
  let last = BigInt(t.offset);
  for (let d = 0; d < t.shape.length; d++) last += BigInt(t.shape[d] - 1) * BigInt(t.strides[d]);
  if (last >= BigInt(storageNumel)) {
    throw formatError(`${what}: shape ${fmt(t.shape)}, strides ${fmt(t.strides)} and offset ${t.offset} reach element ${last}, past the end of its storage (${storageNumel} elements)`);
  }
  if (numel > BigInt(storageNumel)) {
    throw formatError(`${what}: declares ${numel} elements over a storage of ${storageNumel} (an overlapping view; state dicts hold none)`);
  }
}

/**
 * The tensor's elements as contiguous little-endian bytes, row-major: a view of the storage when
 * the tensor is contiguous, else one copy of its elements (bounded by the storage, checkView).
 */
export function contiguousBytes(t: WeightTensor): Buffer {
  checkView(t);
  const size = DTYPES[t.dtype].size;
  const n = numelOf(t.shape);
  if (isContiguous(t)) return t.storage.subarray(t.offset * size, (t.offset + n) * size);
  const out = Buffer.allocUnsafe(n * size);
  const idx = new Array<number>(t.shape.length).fill(0);
  for (let i = 0; i < n; i++) {
    let e = t.offset;
    for (let d = 0; d < idx.length; d++) e += idx[d] * t.strides[d];
    t.storage.copy(out, i * size, e * size, (e + 1) * size);
    for (let d = idx.length - 1; d >= 0; d--) {
      if (++idx[d] < t.shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** A short printable form of a value in an error message. */
export function fmt(v: unknown): string {
  try {
    const s = JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}` : x));
    if (s === undefined) return String(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return String(v);
  }
}
