/**
 * Reading a weights file: which format it is (by content, never by extension), then its state
 * dict as named tensor views. `readWeights` holds the whole file in memory once (a Buffer of the
 * file's size) and every tensor is a view into it; nothing else of a size the file declares is
 * allocated, so a file that lies about its sizes costs no more memory than its own length.
 */
import * as fs from 'fs';
import * as yauzl from 'yauzl';
import { PyDict, PyTuple, PyValue, TensorRef, describe } from './pickle';
import { looksLikeSafetensors, readSafetensors } from './safetensors';
import { TorchObject, looksLikeLegacy, readTorchLegacy, readTorchZipEntries } from './torch-file';
import { FisherLensError, WeightTensor, WeightsFile, WeightsFormat, checkView, formatError, fmt } from './types';
import { looksLikeZip, readZip } from './zip';

/** What a file is, from its first bytes (and, for a zip, its entry names). */
export type FileKind = WeightsFormat | 'torchscript' | 'pt2' | 'fisherlens-checkpoint' | 'unknown';

/** The FisherLens checkpoint's magic (docs/models.md, "Checkpoints"). */
const FL_MAGIC = Buffer.from('FLCKPT', 'latin1');

/**
 * Tells a file's kind from its bytes: a FisherLens checkpoint, a torch zip file (TorchScript if it
 * has constants.pkl or code/), a legacy torch file, safetensors, or unknown.
 */
export async function sniff(buf: Buffer): Promise<FileKind> {
  if (buf.length >= FL_MAGIC.length && buf.subarray(0, FL_MAGIC.length).equals(FL_MAGIC)) return 'fisherlens-checkpoint';
  if (looksLikeLegacy(buf)) return 'torch-legacy';
  if (looksLikeSafetensors(buf)) return 'safetensors';
  if (looksLikeZip(buf)) {
    try {
      return zipKind([...(await readZip(buf)).keys()]);
    } catch {
      return 'unknown';
    }
  }
  return 'unknown';
}

/** A kind from a zip archive's entry names. */
function zipKind(names: string[]): FileKind {
  if (names.some((n) => /^([^/]+\/)?archive_format$/.test(n))) return 'pt2';
  if (names.some((n) => /(^|\/)constants\.pkl$/.test(n) || /^[^/]+\/code\//.test(n))) return 'torchscript';
  if (names.some((n) => /^([^/]+\/)?data\.pkl$/.test(n))) return 'torch-zip';
  return 'unknown';
}

/**
 * Tells a file's kind without reading it all: its first 16 bytes, and for a zip archive only its
 * central directory (yauzl over the open file). ERR_IO when the file cannot be read.
 */
export async function sniffFile(file: string): Promise<FileKind> {
  let head: Buffer;
  try {
    const fh = await fs.promises.open(file, 'r');
    try {
      head = Buffer.alloc(16);
      const { bytesRead } = await fh.read(head, 0, 16, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new FisherLensError('ERR_IO', `cannot read ${file}: ${err.code ?? err.message}`);
  }
  if (!looksLikeZip(head)) return sniff(head);
  const names = await new Promise<string[] | null>((resolve) => {
    yauzl.open(file, { lazyEntries: false, autoClose: true }, (err, zip) => {
      if (err || !zip) return resolve(null);
      const out: string[] = [];
      zip.on('entry', (e: yauzl.Entry) => out.push(e.fileName));
      zip.on('end', () => resolve(out));
      zip.on('error', () => resolve(null));
    });
  });
  return names ? zipKind(names) : 'unknown';
}

export interface ReadOptions {
  /**
   * Where the state dict sits in the file's top-level object, as dot-separated keys
   * ('state_dict', 'model', 'ema.module'). Default: found by looking (see findStateDict).
   */
  entry?: string;
  /** a name for the file in messages (default 'weights file') */
  what?: string;
}

/** Reads `path` as weights. A missing or unreadable file is ERR_IO; anything wrong inside, ERR_FORMAT. */
export async function readWeightsFile(path: string, opts: ReadOptions = {}): Promise<WeightsFile> {
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new FisherLensError('ERR_IO', `cannot read weights file ${path}: ${err.code ?? err.message}`);
  }
  return readWeights(buf, { what: opts.what ?? path, ...opts });
}

/** Reads weights held in `buf`; the tensors are views of it. */
export async function readWeights(buf: Buffer, opts: ReadOptions = {}): Promise<WeightsFile> {
  const what = opts.what ?? 'weights file';
  const kind = await sniff(buf);
  switch (kind) {
    case 'safetensors': {
      const s = readSafetensors(buf, what);
      if (opts.entry) throw formatError(`${what}: a safetensors file is flat; it has no entry '${opts.entry}'`);
      return { format: 'safetensors', tensors: s.tensors, container: [], extras: {}, metadata: s.metadata };
    }
    case 'torch-zip':
      return fromTorch('torch-zip', readTorchZipEntries(await readZip(buf, what), what), opts, what);
    case 'torch-legacy':
      return fromTorch('torch-legacy', readTorchLegacy(buf, what), opts, what);
    case 'torchscript':
      throw formatError(`${what} is a TorchScript archive, not a state dict: load it as a model (--model FILE)`);
    case 'pt2':
      throw formatError(`${what} is a torch.export archive (.pt2), not a state dict: load it as a model (--model FILE)`);
    case 'fisherlens-checkpoint':
      throw formatError(`${what} is a FisherLens checkpoint, not a state dict: load it as a model (--model FILE)`);
    default:
      throw formatError(`${what} is not a weights file: expected a torch.save state dict (zip or legacy format) or safetensors`);
  }
}

/** Keys under which checkpoints keep their state dict, in the order they are tried. */
export const CONTAINER_KEYS = ['state_dict', 'model_state_dict', 'model', 'net', 'network', 'module'] as const;

function fromTorch(format: WeightsFormat, obj: TorchObject, opts: ReadOptions, what: string): WeightsFile {
  const { dict, container } = findStateDict(obj.value, opts.entry, what);
  const tensors: WeightTensor[] = [];
  for (const [k, v] of dict.map) {
    if (!(v instanceof TensorRef)) continue;
    if (typeof k !== 'string') throw formatError(`${what}: a tensor under the non-string key ${fmt(k)}`);
    const storage = obj.storages.get(v.storage.key);
    if (!storage) throw formatError(`${what}: tensor '${k}' uses storage '${v.storage.key}', which the file lacks`);
    const t: WeightTensor = { name: k, dtype: v.dtype, shape: v.shape, strides: v.strides, offset: v.offset, storage, location: v.storage.location };
    checkView(t);
    tensors.push(t);
  }
  const extras: Record<string, string> = {};
  if (obj.value instanceof PyDict) {
    for (const [k, v] of obj.value.map) {
      if (typeof k === 'string' && (v === null || ['string', 'number', 'bigint', 'boolean'].includes(typeof v))) extras[k] = String(v);
    }
  }
  return { format, tensors, container, extras };
}

/** Whether a dict is a state dict: string keys, at least one tensor, and no nested containers. */
function isStateDict(v: PyValue): v is PyDict {
  if (!(v instanceof PyDict)) return false;
  let tensors = 0;
  for (const [k, x] of v.map) {
    if (x instanceof TensorRef) {
      if (typeof k !== 'string') return false;
      tensors++;
    } else if (x instanceof PyDict || Array.isArray(x) || x instanceof PyTuple) return false;
  }
  return tensors > 0;
}

/**
 * Finds the state dict in a checkpoint's top-level object: the object itself when it is one;
 * else `entry` when given; else the first of CONTAINER_KEYS holding one, two levels deep at most
 * (`{epoch, state_dict}`, `{model}`, `{model: {state_dict}}`). ERR_FORMAT says which keys there are.
 */
export function findStateDict(top: PyValue, entry: string | undefined, what: string): { dict: PyDict; container: string[] } {
  if (entry !== undefined) {
    let v: PyValue = top;
    const path = entry.split('.').filter((s) => s !== '');
    for (const [i, k] of path.entries()) {
      if (!(v instanceof PyDict) || !v.map.has(k)) {
        throw formatError(`${what}: no entry '${path.slice(0, i + 1).join('.')}'${v instanceof PyDict ? ` (keys: ${keyList(v)})` : ''}`);
      }
      v = v.map.get(k) as PyValue;
    }
    if (!isStateDict(v)) throw formatError(`${what}: entry '${entry}' is ${describe(v)}, not a state dict of tensors`);
    return { dict: v, container: path };
  }
  const search = (v: PyValue, path: string[]): { dict: PyDict; container: string[] } | null => {
    if (isStateDict(v)) return { dict: v, container: path };
    if (!(v instanceof PyDict) || path.length >= 2) return null;
    for (const k of CONTAINER_KEYS) {
      const found = v.map.has(k) ? search(v.map.get(k) as PyValue, [...path, k]) : null;
      if (found) return found;
    }
    return null;
  };
  const found = search(top, []);
  if (found) return found;
  throw formatError(`${what}: no state dict of tensors found (the file holds ${describe(top)}${top instanceof PyDict ? ` with keys ${keyList(top)}` : ''}); name it with the entry option (e.g. 'ema')`);
}

function keyList(d: PyDict): string {
  const ks = [...d.map.keys()].map((k) => String(k));
  return ks.length > 12 ? `${ks.slice(0, 12).join(', ')}, … (${ks.length})` : ks.join(', ');
}
