/**
 * torch.save's two formats, read weights-only:
 *
 * - zip (torch >= 1.6): `<prefix>/data.pkl` is the pickled object; each storage it names by
 *   persistent id `('storage', StorageClass, key, location, numel)` is the entry
 *   `<prefix>/data/<key>`, its raw little-endian bytes. `<prefix>/byteorder` (torch >= 2) says
 *   "little" or "big".
 * - legacy (`_use_new_zipfile_serialization=False`, and every file before torch 1.6): a stream of
 *   pickles: the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001, a sys_info dict
 *   (little_endian, type sizes), the object itself (persistent ids
 *   `('storage', StorageClass, root_key, location, numel, view_metadata)`), the list of storage
 *   keys, then for each key in that order an int64 element count and the storage's raw bytes.
 *
 * Locations ('cuda:0', …) are recorded and otherwise ignored: every storage is read as bytes on
 * the CPU, as `map_location='cpu'` does.
 */
import { PyDict, PyTuple, PyValue, StorageRef, storageDtype, unpickle, describe } from './pickle';
import { DTYPES, formatError } from './types';
import { readZip, ZipEntries } from './zip';

/** What a torch file unpickles to, with the bytes of each storage it names. */
export interface TorchObject {
  value: PyValue;
  /** storage key → its bytes */
  storages: Map<string, Buffer>;
}

/** The legacy format's magic number, as its pickle (protocol 2, LONG1) starts: 0x80 0x02 0x8a 0x0a. */
const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;

/** Whether `buf` starts with the legacy format's pickled magic number. */
export function looksLikeLegacy(buf: Buffer): boolean {
  const head = Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
  return buf.length >= head.length && buf.subarray(0, head.length).equals(head);
}

/** Parses a persistent id tuple into a storage reference; `legacy` allows the sixth (view) field. */
function storagePid(pid: PyValue, legacy: boolean): StorageRef {
  const items = pid instanceof PyTuple ? pid.items : null;
  if (!items || items[0] !== 'storage' || items.length < 5 || items.length > 6) {
    throw formatError(`torch file: persistent id ${describe(pid)} is not a storage reference ('storage', type, key, location, size)`);
  }
  const [, type, key, location, numel, view] = items;
  const dtype = storageDtype(type);
  if (typeof key !== 'string' || !/^[\w.-]{1,64}$/.test(key)) throw formatError(`torch file: bad storage key ${describe(key)}`);
  if (typeof location !== 'string') throw formatError(`torch file: storage ${key} has location ${describe(location)}`);
  if (typeof numel !== 'number' || !Number.isSafeInteger(numel) || numel < 0) throw formatError(`torch file: storage ${key} has size ${describe(numel)}`);
  if (view === undefined || view === null) return new StorageRef(key, dtype, location, numel);
  // the legacy format's storage views (torch < 0.4): (view_key, offset, view_size) into root `key`
  const v = legacy && view instanceof PyTuple ? view.items : null;
  if (!v || v.length !== 3 || typeof v[1] !== 'number' || typeof v[2] !== 'number' || !Number.isSafeInteger(v[1]) || !Number.isSafeInteger(v[2]) || v[1] < 0 || v[2] < 0 || v[1] + v[2] > numel) {
    throw formatError(`torch file: storage ${key} has a bad view ${describe(view)}`);
  }
  return new StorageRef(key, dtype, location, v[2], v[1]);
}

/** Reads a zip-format torch file from its entries (readZip). */
export function readTorchZipEntries(entries: ZipEntries, what = 'torch zip file'): TorchObject {
  const pkls = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n) || n === 'data.pkl');
  if (pkls.length === 0) {
    if ([...entries.keys()].some((n) => /(^|\/)constants\.pkl$/.test(n) || /(^|\/)code\//.test(n))) {
      throw formatError(`${what}: a TorchScript archive, not a state dict: load it as a model (--model FILE)`);
    }
    throw formatError(`${what}: a zip archive without data.pkl: not written by torch.save`);
  }
  if (pkls.length > 1) throw formatError(`${what}: ${pkls.length} data.pkl records (${pkls.join(', ')})`);
  const prefix = pkls[0].slice(0, -'data.pkl'.length);
  if (entries.has(`${prefix}constants.pkl`)) {
    throw formatError(`${what}: a TorchScript archive, not a state dict: load it as a model (--model FILE)`);
  }
  const order = entries.get(`${prefix}byteorder`);
  if (order && order.toString('latin1').trim() !== 'little') {
    throw formatError(`${what}: saved on a big-endian machine (byteorder '${order.toString('latin1').trim()}'); load and save it again on a little-endian one`);
  }
  const storages = new Map<string, Buffer>();
  const persistentLoad = (pid: PyValue): PyValue => {
    const ref = storagePid(pid, false);
    const data = entries.get(`${prefix}data/${ref.key}`);
    if (!data) throw formatError(`${what}: storage '${ref.key}' is named by data.pkl but the archive has no ${prefix}data/${ref.key}`);
    const bytes = ref.numel * DTYPES[ref.dtype].size;
    if (data.length !== bytes) {
      throw formatError(`${what}: storage '${ref.key}' declares ${ref.numel} ${ref.dtype} elements (${bytes} bytes) but its entry holds ${data.length} bytes`);
    }
    const seen = storages.get(ref.key);
    if (seen && seen !== data) throw formatError(`${what}: storage '${ref.key}' named twice with different data`);
    storages.set(ref.key, data);
    return ref;
  };
  const { value, end } = unpickle(entries.get(pkls[0]) as Buffer, 0, { persistentLoad });
  const pkl = entries.get(pkls[0]) as Buffer;
  if (end !== pkl.length) throw formatError(`${what}: ${pkl.length - end} bytes after the end of data.pkl`);
  return { value, storages };
}

/** Reads a zip-format torch file held in `buf`. */
export async function readTorchZip(buf: Buffer, what = 'torch zip file'): Promise<TorchObject> {
  return readTorchZipEntries(await readZip(buf, what), what);
}

/** Reads a legacy-format (pre-1.6 or `_use_new_zipfile_serialization=False`) torch file. */
export function readTorchLegacy(buf: Buffer, what = 'legacy torch file'): TorchObject {
  if (buf.length > 262 && buf.toString('latin1', 257, 262) === 'ustar') {
    throw formatError(`${what}: the tar format of torch < 0.1.10 is not supported; load and save it again with a newer torch`);
  }
  let p = unpickle(buf, 0);
  if (typeof p.value !== 'bigint' || p.value !== LEGACY_MAGIC) throw formatError(`${what}: wrong magic number (not a torch.save file)`);
  p = unpickle(buf, p.end);
  if (p.value !== LEGACY_PROTOCOL) throw formatError(`${what}: protocol version ${describe(p.value)}, expected ${LEGACY_PROTOCOL}`);
  p = unpickle(buf, p.end);
  const info = p.value;
  const little = info instanceof PyDict ? info.map.get('little_endian') : undefined;
  if (little !== true) throw formatError(`${what}: saved on a big-endian machine or without sys_info (little_endian = ${describe(little)})`);

  const refs = new Map<string, StorageRef>();
  const persistentLoad = (pid: PyValue): PyValue => {
    const ref = storagePid(pid, true);
    const root = (pid as PyTuple).items[4] as number; // the root storage's elements, for a view too
    const prev = refs.get(ref.key);
    if (prev && (prev.dtype !== ref.dtype || prev.numel !== root)) {
      throw formatError(`${what}: storage '${ref.key}' named as ${prev.numel} ${prev.dtype} and as ${root} ${ref.dtype}`);
    }
    refs.set(ref.key, new StorageRef(ref.key, ref.dtype, ref.location, root));
    return ref;
  };
  p = unpickle(buf, p.end, { persistentLoad });
  const value = p.value;
  p = unpickle(buf, p.end);
  const keys = p.value;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) throw formatError(`${what}: the storage key list is ${describe(keys)}`);
  let pos = p.end;
  const storages = new Map<string, Buffer>();
  for (const key of keys as string[]) {
    const ref = refs.get(key);
    if (!ref) throw formatError(`${what}: storage '${key}' is listed but the object names no such storage`);
    if (storages.has(key)) throw formatError(`${what}: storage '${key}' listed twice`);
    if (pos + 8 > buf.length) throw formatError(`${what}: truncated before storage '${key}' (byte ${pos} of ${buf.length})`);
    const n = buf.readBigInt64LE(pos);
    pos += 8;
    const size = DTYPES[ref.dtype].size;
    const left = buf.length - pos;
    if (n < 0n || n * BigInt(size) > BigInt(left)) {
      throw formatError(`${what}: storage '${key}' declares ${n} ${ref.dtype} elements (${n * BigInt(size)} bytes) but only ${left} bytes remain: truncated or lying header`);
    }
    if (Number(n) !== ref.numel) throw formatError(`${what}: storage '${key}' holds ${n} elements but the object says ${ref.numel}`);
    storages.set(key, buf.subarray(pos, pos + Number(n) * size));
    pos += Number(n) * size;
  }
  for (const key of refs.keys()) if (!storages.has(key)) throw formatError(`${what}: storage '${key}' is named by the object but missing from the file`);
  if (pos !== buf.length) throw formatError(`${what}: ${buf.length - pos} bytes after the last storage`);
  return { value, storages };
}
