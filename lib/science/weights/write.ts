/**
 * Weights out: named contiguous tensors as safetensors, or as the zip format of torch.save that
 * `torch.load(f, weights_only=True)` accepts (an OrderedDict of `torch._utils._rebuild_tensor_v2`
 * over one storage per tensor, the storage classes torch's allowlist names, protocol 2). Files are
 * written to a temporary name and renamed, so a failure never leaves half a file.
 */
import * as fs from 'fs';
import * as zlib from 'zlib';
import { DTYPES, WeightDtype, FisherLensError, numelOf } from './types';

/** A tensor to write: its name, dtype, shape and contiguous little-endian bytes. */
export interface OutTensor {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  data: Buffer | Uint8Array;
}

function checkOut(tensors: OutTensor[]): void {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (seen.has(t.name)) throw new FisherLensError('ERR_ARG', `weights export: tensor '${t.name}' given twice`);
    seen.add(t.name);
    const want = numelOf(t.shape) * DTYPES[t.dtype].size;
    if (t.data.byteLength !== want) throw new FisherLensError('ERR_ARG', `weights export: tensor '${t.name}' of shape [${t.shape}] ${t.dtype} needs ${want} bytes, got ${t.data.byteLength}`);
  }
}

/** safetensors bytes: header length, JSON header (padded with spaces to 8 bytes), data. */
export function encodeSafetensors(tensors: OutTensor[], metadata: Record<string, string> = { format: 'pt' }): Buffer {
  checkOut(tensors);
  const header: Record<string, unknown> = { __metadata__: metadata };
  let at = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: DTYPES[t.dtype].safetensors, shape: t.shape, data_offsets: [at, at + t.data.byteLength] };
    at += t.data.byteLength;
  }
  let h = Buffer.from(JSON.stringify(header), 'utf8');
  h = Buffer.concat([h, Buffer.alloc(-h.length & 7, 0x20)]);
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([n, h, ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]);
}

// ---------------------------------------------------------------- the pickle of a state dict

class PickleOut {
  private parts: Buffer[] = [];
  op(...bytes: number[]) {
    this.parts.push(Buffer.from(bytes));
  }
  global(module: string, name: string) {
    this.parts.push(Buffer.from(`c${module}\n${name}\n`, 'latin1'));
  }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    const n = Buffer.alloc(5);
    n[0] = 0x58; // BINUNICODE
    n.writeUInt32LE(b.length, 1);
    this.parts.push(n, b);
  }
  int(v: number) {
    if (v >= 0 && v < 256) this.op(0x4b, v); // BININT1
    else if (v >= 0 && v < 65536) this.op(0x4d, v & 0xff, v >> 8); // BININT2
    else if (v >= -(2 ** 31) && v < 2 ** 31) {
      const b = Buffer.alloc(5);
      b[0] = 0x4a; // BININT
      b.writeInt32LE(v, 1);
      this.parts.push(b);
    } else {
      const b = Buffer.alloc(10);
      b[0] = 0x8a; // LONG1, 8 bytes
      b[1] = 8;
      b.writeBigInt64LE(BigInt(v), 2);
      this.parts.push(b);
    }
  }
  tuple(vs: number[]) {
    if (vs.length === 0) return this.op(0x29); // EMPTY_TUPLE
    this.op(0x28); // MARK
    for (const v of vs) this.int(v);
    this.op(0x74); // TUPLE
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** data.pkl of an OrderedDict name → tensor, tensor i in storage key `${i}`. */
function statePickle(tensors: OutTensor[]): Buffer {
  const p = new PickleOut();
  p.op(0x80, 2); // PROTO 2
  p.global('collections', 'OrderedDict');
  p.op(0x29, 0x52); // EMPTY_TUPLE REDUCE
  p.op(0x28); // MARK
  tensors.forEach((t, i) => {
    p.str(t.name);
    p.global('torch._utils', '_rebuild_tensor_v2');
    p.op(0x28); // MARK (the arguments)
    p.op(0x28); // MARK (the persistent id)
    p.str('storage');
    p.global('torch', DTYPES[t.dtype].storage);
    p.str(String(i));
    p.str('cpu');
    p.int(numelOf(t.shape));
    p.op(0x74, 0x51); // TUPLE BINPERSID
    p.int(0); // storage offset
    p.tuple(t.shape);
    const strides = new Array<number>(t.shape.length);
    for (let d = t.shape.length - 1, s = 1; d >= 0; d--) {
      strides[d] = s;
      s *= t.shape[d];
    }
    p.tuple(strides);
    p.op(0x89); // NEWFALSE: requires_grad
    p.global('collections', 'OrderedDict');
    p.op(0x29, 0x52); // backward hooks: OrderedDict()
    p.op(0x74, 0x52); // TUPLE REDUCE
  });
  p.op(0x75, 0x2e); // SETITEMS STOP
  return p.bytes();
}

// ---------------------------------------------------------------- a zip of stored entries

const ALIGN = 64; // torch aligns each entry's data to 64 bytes (mmap); readers do not need it

/** A zip archive of stored entries, each entry's data aligned to 64 bytes (as torch writes). */
export function encodeStoredZip(entries: [string, Buffer | Uint8Array][]): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let at = 0;
  for (const [name, data] of entries) {
    const nameB = Buffer.from(name, 'utf8');
    const crc = zlib.crc32(data);
    // pad with an extra field (id 'FB', as torch's writer) so the data starts on a 64-byte boundary
    let extra = Buffer.alloc(0);
    const bare = at + 30 + nameB.length;
    if (bare % ALIGN) {
      let pad = ALIGN - (bare % ALIGN);
      if (pad < 4) pad += ALIGN;
      extra = Buffer.alloc(pad, 0x5a);
      extra.writeUInt16LE(0x4246, 0);
      extra.writeUInt16LE(pad - 4, 2);
    }
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt32LE(0, 10); // time/date
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.byteLength, 18);
    local.writeUInt32LE(data.byteLength, 22);
    local.writeUInt16LE(nameB.length, 26);
    local.writeUInt16LE(extra.length, 28);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt16LE(0x0800, 8);
    c.writeUInt16LE(0, 10);
    c.writeUInt32LE(0, 12);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(data.byteLength, 20);
    c.writeUInt32LE(data.byteLength, 24);
    c.writeUInt16LE(nameB.length, 28);
    c.writeUInt32LE(at, 42); // local header offset
    central.push(c, nameB);
    const d = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    parts.push(local, nameB, extra, d);
    at += local.length + nameB.length + extra.length + d.length;
  }
  const cd = Buffer.concat(central);
  if (at + cd.length >= 2 ** 32 || entries.length >= 65535) {
    throw new FisherLensError('ERR_ARG', `weights export: ${at} bytes in ${entries.length} entries needs Zip64; export as .safetensors instead`);
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(at, 16);
  return Buffer.concat([...parts, cd, end]);
}

/** torch.save's zip format of an OrderedDict of the tensors, under the record name `archive`. */
export function encodeTorchZip(tensors: OutTensor[], record = 'archive'): Buffer {
  checkOut(tensors);
  return encodeStoredZip([
    [`${record}/data.pkl`, statePickle(tensors)],
    [`${record}/byteorder`, Buffer.from('little')],
    ...tensors.map((t, i): [string, Buffer | Uint8Array] => [`${record}/data/${i}`, t.data]),
    [`${record}/version`, Buffer.from('3\n')],
  ]);
}

/** Output formats of {@link writeWeightsFile}. */
export type OutFormat = 'safetensors' | 'torch-zip';

/** The format a path asks for: '.safetensors' → safetensors, anything else → torch zip. */
export function formatForPath(file: string): OutFormat {
  return /\.safetensors$/i.test(file) ? 'safetensors' : 'torch-zip';
}

let counter = 0;
/** Writes `tensors` to `file` atomically (a temporary name in the same folder, then rename). */
export async function writeWeightsFile(file: string, tensors: OutTensor[], format: OutFormat = formatForPath(file)): Promise<void> {
  const bytes = format === 'safetensors' ? encodeSafetensors(tensors) : encodeTorchZip(tensors);
  const tmp = `${file}.tmp-${process.pid}-${counter++}`;
  try {
    const fh = await fs.promises.open(tmp, 'w');
    try {
      await fh.writeFile(bytes);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true });
    const err = e as NodeJS.ErrnoException;
    throw new FisherLensError('ERR_IO', `cannot write weights to ${file}: ${err.code ?? err.message}`);
  }
}
