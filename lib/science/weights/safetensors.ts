/**
 * safetensors: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {str: str}}`, then the data;
 * offsets are relative to the data's start. As the reference implementation requires, the tensors
 * tile the data exactly: sorted by offset, each begins where the previous ended, the last ends at
 * the file's end, and each spans numel × element size bytes. Anything else is one ERR_FORMAT.
 */
import { DTYPES, DTYPE_NAMES, WeightDtype, WeightTensor, formatError, fmt } from './types';

/** The reference implementation's limit on the header (100 MB). */
export const MAX_HEADER = 100_000_000;

const BY_CODE = new Map<string, WeightDtype>(DTYPE_NAMES.map((d) => [DTYPES[d].safetensors, d]));

/**
 * Whether `buf` starts like a safetensors file: 8 bytes of header length, then '{' (the length is
 * not judged here, so a file that lies about it gets the reader's precise error).
 */
export function looksLikeSafetensors(buf: Buffer): boolean {
  return buf.length >= 9 && buf[8] === 0x7b;
}

export interface SafetensorsFile {
  tensors: WeightTensor[];
  metadata?: Record<string, string>;
}

/** Reads a safetensors file held in `buf`; the tensors are views of `buf`. */
export function readSafetensors(buf: Buffer, what = 'safetensors file'): SafetensorsFile {
  if (buf.length < 8) throw formatError(`${what}: ${buf.length} bytes, shorter than the 8-byte header length`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER)) throw formatError(`${what}: header length ${n} exceeds the format's limit of ${MAX_HEADER} bytes`);
  if (n > BigInt(buf.length - 8)) throw formatError(`${what}: header length ${n} runs past the end of the file (${buf.length} bytes): truncated or lying header`);
  const start = 8 + Number(n);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, start)));
  } catch (e) {
    throw formatError(`${what}: the header is not UTF-8 JSON (${(e as Error).message})`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) throw formatError(`${what}: the header is not a JSON object`);
  const dataLen = buf.length - start;
  let metadata: Record<string, string> | undefined;
  const entries: { t: WeightTensor; begin: number; end: number }[] = [];
  for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (!v || typeof v !== 'object' || Array.isArray(v) || !Object.values(v).every((x) => typeof x === 'string')) {
        throw formatError(`${what}: __metadata__ must map strings to strings`);
      }
      metadata = { ...(v as Record<string, string>) };
      continue;
    }
    const info = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!info || typeof info !== 'object') throw formatError(`${what}: tensor '${name}' is described by ${fmt(v)}`);
    const dtype = typeof info.dtype === 'string' ? BY_CODE.get(info.dtype) : undefined;
    if (!dtype) throw formatError(`${what}: tensor '${name}' has dtype ${fmt(info.dtype)}; supported: ${[...BY_CODE.keys()].join(', ')}`);
    const okInt = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
    if (!Array.isArray(info.shape) || !info.shape.every(okInt)) throw formatError(`${what}: tensor '${name}' has shape ${fmt(info.shape)}`);
    const off = info.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every(okInt) || off[0] > off[1]) {
      throw formatError(`${what}: tensor '${name}' has data_offsets ${fmt(off)}`);
    }
    const [begin, end] = off as [number, number];
    if (end > dataLen) throw formatError(`${what}: tensor '${name}' spans bytes ${begin}..${end} of a ${dataLen}-byte data section: out of range (truncated or lying header)`);
    const shape = info.shape as number[];
    // BigInt: a declared shape like [2^40, 2^40] must not round to a plausible byte count
    const bytes = shape.reduce((a, b) => a * BigInt(b), 1n) * BigInt(DTYPES[dtype].size);
    if (bytes !== BigInt(end - begin)) {
      throw formatError(`${what}: tensor '${name}' of shape ${fmt(shape)} (${dtype}) needs ${bytes} bytes but its offsets span ${end - begin}`);
    }
    const strides = new Array<number>(shape.length);
    for (let d = shape.length - 1, s = 1; d >= 0; d--) {
      strides[d] = s;
      s *= shape[d];
    }
    entries.push({ t: { name, dtype, shape, strides, offset: 0, storage: buf.subarray(start + begin, start + end) }, begin, end });
  }
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const e of sorted) {
    if (e.begin < at) throw formatError(`${what}: tensor '${e.t.name}' (bytes ${e.begin}..${e.end}) overlaps the tensor before it (ending at ${at})`);
    if (e.begin > at) throw formatError(`${what}: ${e.begin - at} unclaimed bytes before tensor '${e.t.name}' (offsets must tile the data)`);
    at = e.end;
  }
  if (at !== dataLen) throw formatError(`${what}: the tensors cover ${at} bytes of a ${dataLen}-byte data section`);
  return { tensors: entries.map((e) => e.t), metadata };
}
