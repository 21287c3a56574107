/**
 * A weights-only unpickler: the data-only part of Python's pickle (protocols 0–5) plus a fixed
 * allowlist of globals, as `torch.load(weights_only=True)` does. Nothing named by a file is ever
 * looked up or run: a GLOBAL outside the allowlist (os.system, builtins.eval, any class) is
 * ERR_FORMAT naming it, at the moment it is read, before any argument is built; the allowlisted
 * callables are small TypeScript functions that build plain values (dicts, tensor views).
 *
 * Written here rather than taken from npm: the maintained JS parser (pickleparser 0.2) turns every
 * unknown global into a placeholder object and carries on, pops an empty stack as `undefined`
 * (a malformed pickle parses to garbage instead of failing), and builds dicts as plain objects
 * (a `__proto__` key reaches the prototype). Confining it would mean wrapping each of those; the
 * subset torch's checkpoints need is ~60 opcodes with every underflow and type checked here.
 */
import { DTYPES, WeightDtype, formatError, fmt } from './types';

// ---------------------------------------------------------------- values

/** A Python tuple (lists are plain arrays). */
export class PyTuple {
  constructor(readonly items: PyValue[]) {}
}

/** dict / OrderedDict: keys are str, int, float, bool or None, in insertion order. */
export class PyDict {
  readonly map = new Map<PyKey, PyValue>();
  /** attributes set by BUILD (OrderedDict's `_metadata` in a state dict) */
  attrs?: PyValue;
  constructor(readonly ordered = false) {}
}

/** An allowlisted global, referenced but not (yet) called. */
export class PyGlobal {
  constructor(readonly module: string, readonly name: string) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A storage named by a persistent id: where its bytes are is the container format's business. */
export class StorageRef {
  constructor(
    readonly key: string,
    readonly dtype: WeightDtype,
    readonly location: string,
    /** elements of `dtype` */
    readonly numel: number,
    /** for the legacy format's storage views: element offset into the root storage */
    readonly elementOffset = 0,
  ) {}
}

/** A tensor rebuilt by torch._utils._rebuild_tensor_v2 and friends (not yet bound to bytes). */
export class TensorRef {
  parameter = false;
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly strides: number[],
    readonly dtype: WeightDtype,
  ) {}
}

/** A torch dtype object (torch.float32, …) met as a value. */
export class DtypeRef {
  constructor(readonly name: string) {}
}

export type PyKey = string | number | bigint | boolean | null;
export type PyValue =
  | PyKey | Buffer | PyValue[] | PyTuple | PyDict | PyGlobal | StorageRef | TensorRef | DtypeRef;

// ---------------------------------------------------------------- the allowlist

type Callable = (args: PyValue[]) => PyValue;
interface Allowed {
  /** what a GLOBAL of it pushes */
  value: PyValue;
  /** what REDUCE on it computes; absent: a class or constant that a file may name but not call */
  call?: Callable;
}

const STORAGE_DTYPE = new Map<string, WeightDtype>(
  (Object.entries(DTYPES) as [WeightDtype, { storage: string }][]).map(([d, i]) => [i.storage, d]),
);

const TORCH_DTYPES: Record<string, WeightDtype | undefined> = {
  float32: 'float32', float: 'float32', float64: 'float64', double: 'float64', float16: 'float16', half: 'float16',
  bfloat16: 'bfloat16', int64: 'int64', long: 'int64', int32: 'int32', int: 'int32', int16: 'int16', short: 'int16',
  int8: 'int8', uint8: 'uint8', bool: 'bool',
};

function arg<T>(args: PyValue[], i: number, fn: string, what: string, ok: (v: PyValue) => v is PyValue & T): T {
  const v = args[i];
  if (!ok(v)) throw formatError(`pickle: ${fn} argument ${i + 1} should be ${what}, got ${describe(v)}`);
  return v as T;
}
const isTensor = (v: PyValue): v is TensorRef => v instanceof TensorRef;
const isStorage = (v: PyValue): v is StorageRef => v instanceof StorageRef;
const isCount = (v: PyValue): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isIntSeq = (v: PyValue): v is PyTuple | PyValue[] => {
  const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : null;
  return items !== null && items.every(isCount);
};
const seq = (v: PyTuple | PyValue[]) => (v instanceof PyTuple ? v.items : v) as number[];

/** _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]) */
function rebuildTensor(fn: string, args: PyValue[], dtype?: WeightDtype): TensorRef {
  const storage = arg(args, 0, fn, 'a storage', isStorage);
  const offset = arg(args, 1, fn, 'a storage offset', isCount);
  const size = seq(arg(args, 2, fn, 'a tuple of sizes', isIntSeq));
  const stride = seq(arg(args, 3, fn, 'a tuple of strides', isIntSeq));
  if (size.length !== stride.length) throw formatError(`pickle: ${fn}: ${size.length} sizes but ${stride.length} strides`);
  return new TensorRef(storage, offset + storage.elementOffset, size, stride, dtype ?? storage.dtype);
}

function makeDict(args: PyValue[], ordered: boolean): PyDict {
  const d = new PyDict(ordered);
  if (args.length === 0) return d;
  const items = args[0];
  const list = items instanceof PyTuple ? items.items : Array.isArray(items) ? items : null;
  if (args.length > 1 || list === null) throw formatError(`pickle: OrderedDict() takes a list of pairs, got ${describe(items)}`);
  for (const p of list) {
    if (!(p instanceof PyTuple) || p.items.length !== 2) throw formatError(`pickle: OrderedDict() item is not a pair: ${describe(p)}`);
    setItem(d, p.items[0], p.items[1]);
  }
  return d;
}

const ALLOWED = new Map<string, Allowed>();
function allow(q: string, call?: Callable, value?: PyValue) {
  const dot = q.lastIndexOf('.');
  ALLOWED.set(q, { value: value ?? new PyGlobal(q.slice(0, dot), q.slice(dot + 1)), call });
}
allow('collections.OrderedDict', (a) => makeDict(a, true));
allow('builtins.dict', (a) => makeDict(a, false));
allow('torch._utils._rebuild_tensor', (a) => rebuildTensor('_rebuild_tensor', a));
allow('torch._utils._rebuild_tensor_v2', (a) => rebuildTensor('_rebuild_tensor_v2', a));
allow('torch._utils._rebuild_tensor_v3', (a) => {
  // (storage, offset, size, stride, requires_grad, backward_hooks, dtype, metadata): an untyped storage
  const d = a[6];
  const dtype = d instanceof DtypeRef ? TORCH_DTYPES[d.name] : undefined;
  if (!dtype) throw formatError(`pickle: _rebuild_tensor_v3 needs a supported dtype, got ${describe(d)}`);
  return rebuildTensor('_rebuild_tensor_v3', a, dtype);
});
const rebuildParameter: Callable = (a) => {
  const t = arg(a, 0, '_rebuild_parameter', 'a tensor', isTensor);
  t.parameter = true;
  return t;
};
allow('torch._utils._rebuild_parameter', rebuildParameter);
allow('torch._utils._rebuild_parameter_with_state', rebuildParameter);
allow('torch._tensor._rebuild_from_type_v2', (a) => {
  // (func, type, args, state): a Tensor or Parameter whose __dict__ was not empty
  const [func, type, args] = a;
  if (!(func instanceof PyGlobal) || !(type instanceof PyGlobal) || !(args instanceof PyTuple)) {
    throw formatError(`pickle: _rebuild_from_type_v2 takes (function, type, args, state), got ${describe(new PyTuple(a))}`);
  }
  if (type.qualified !== 'torch.Tensor' && type.qualified !== 'torch.nn.parameter.Parameter') {
    throw formatError(`pickle: _rebuild_from_type_v2 of ${type.qualified}: only torch.Tensor and Parameter are allowed`);
  }
  const f = ALLOWED.get(func.qualified)?.call;
  if (!f) throw formatError(`pickle: _rebuild_from_type_v2 cannot call ${func.qualified}`);
  return f(args.items);
});
allow('torch.Size', (a) => {
  const v = a.length === 1 ? a[0] : undefined;
  if (v === undefined || !isIntSeq(v)) throw formatError(`pickle: torch.Size takes a tuple of sizes, got ${describe(new PyTuple(a))}`);
  return new PyTuple(seq(v));
});
allow('_codecs.encode', (a) => {
  // how protocol 2 writes Python 3 bytes: _codecs.encode(text, 'latin1')
  if (typeof a[0] !== 'string' || (a[1] !== 'latin1' && a[1] !== 'latin-1')) {
    throw formatError(`pickle: _codecs.encode allowed only as (str, 'latin1'), got ${describe(new PyTuple(a))}`);
  }
  return Buffer.from(a[0], 'latin1');
});
allow('torch.Tensor');
allow('torch.nn.parameter.Parameter');
for (const s of STORAGE_DTYPE.keys()) allow(`torch.${s}`);
allow('torch.UntypedStorage');
allow('torch.storage.UntypedStorage');
for (const d of Object.keys(TORCH_DTYPES)) allow(`torch.${d}`, undefined, new DtypeRef(d));

/** The globals a weights file may name (sorted), for messages and docs. */
export const ALLOWED_GLOBALS: readonly string[] = [...ALLOWED.keys()].sort();

/** The dtype a storage class global stands for; uint8 for an untyped storage (bytes). */
export function storageDtype(g: PyValue): WeightDtype {
  if (g instanceof PyGlobal) {
    const d = STORAGE_DTYPE.get(g.name);
    if (g.module === 'torch' && d) return d;
    if (g.name === 'UntypedStorage') return 'uint8';
  }
  throw formatError(`pickle: a storage of type ${describe(g)}; supported: ${[...STORAGE_DTYPE.keys()].join(', ')}`);
}

// ---------------------------------------------------------------- the machine

export interface UnpickleOptions {
  /** resolves a persistent id (torch: ('storage', type, key, location, numel[, view])) */
  persistentLoad?: (pid: PyValue) => PyValue;
}

export interface Unpickled {
  value: PyValue;
  /** the byte just after STOP: where the next pickle of a stream starts */
  end: number;
}

const MARK = Symbol('mark');
type Slot = PyValue | typeof MARK;

function setItem(d: PyDict, k: PyValue, v: PyValue) {
  if (!(k === null || ['string', 'number', 'bigint', 'boolean'].includes(typeof k))) {
    throw formatError(`pickle: a dict key of type ${describe(k)}; weights files use str and int keys`);
  }
  d.map.set(k as PyKey, v);
}

/** A short name of a value's type for messages. */
export function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'None';
  if (v instanceof PyGlobal) return v.qualified;
  if (v instanceof PyTuple) return `tuple of ${v.items.length}`;
  if (v instanceof PyDict) return 'dict';
  if (v instanceof TensorRef) return 'tensor';
  if (v instanceof StorageRef) return 'storage';
  if (v instanceof DtypeRef) return `torch.${v.name}`;
  if (Buffer.isBuffer(v)) return 'bytes';
  if (Array.isArray(v)) return 'list';
  if (typeof v === 'string') return `str ${fmt(v)}`;
  return `${typeof v} ${fmt(v)}`;
}

/**
 * Unpickles the pickle starting at `start` of `buf`. Throws ERR_FORMAT for a truncated or
 * malformed pickle, an opcode outside the data-only subset, or any global outside the allowlist.
 */
export function unpickle(buf: Buffer, start = 0, opts: UnpickleOptions = {}): Unpickled {
  let pos = start;
  let stack: Slot[] = [];
  const marks: Slot[][] = [];
  const memo = new Map<number, PyValue>();
  const where = () => `at byte ${pos}`;
  const need = (n: number) => {
    if (n < 0 || pos + n > buf.length) throw formatError(`pickle: truncated ${where()} (needs ${n} more bytes, ${buf.length - pos} left)`);
  };
  const u8 = () => (need(1), buf[pos++]);
  const bytes = (n: number) => {
    need(n);
    const b = buf.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const u16 = () => (need(2), (pos += 2), buf.readUInt16LE(pos - 2));
  const u32 = () => (need(4), (pos += 4), buf.readUInt32LE(pos - 4));
  const i32 = () => (need(4), (pos += 4), buf.readInt32LE(pos - 4));
  const u64 = () => {
    need(8);
    const v = buf.readBigUInt64LE(pos);
    pos += 8;
    if (v > BigInt(buf.length)) throw formatError(`pickle: length ${v} ${where()} is longer than the file`);
    return Number(v);
  };
  const line = () => {
    const nl = buf.indexOf(10, pos);
    if (nl < 0) throw formatError(`pickle: unterminated text argument ${where()}`);
    const s = buf.toString('latin1', pos, nl);
    pos = nl + 1;
    return s;
  };
  // a function, not `stack.push(f())`: f may replace `stack` (popMark), and push must see the new one
  const push = (v: Slot) => {
    stack.push(v);
  };
  const pop = (): PyValue => {
    const v = stack.pop();
    if (v === undefined) throw formatError(`pickle: stack underflow ${where()}`);
    if (v === MARK) throw formatError(`pickle: unexpected MARK on the stack ${where()}`);
    return v;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) throw formatError(`pickle: stack underflow ${where()}`);
    return v;
  };
  const popMark = (): PyValue[] => {
    const items = stack;
    const prev = marks.pop();
    if (prev === undefined) throw formatError(`pickle: no MARK to pop to ${where()}`);
    stack = prev;
    if (items.includes(MARK)) throw formatError(`pickle: nested MARK ${where()}`);
    return items as PyValue[];
  };
  const global = (module: string, name: string): PyValue => {
    const q = `${module}.${name}`;
    const a = ALLOWED.get(q);
    if (!a) throw formatError(`pickle global '${q}' is not allowed in a weights file (nothing was run; a weights file may name only ${ALLOWED_GLOBALS.length} torch/collections globals)`);
    return a.value;
  };
  const int = (v: bigint): number | bigint => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
  const long = (b: Buffer): number | bigint => {
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return int(v);
  };
  const utf8 = (b: Buffer) => b.toString('utf8');
  const memoGet = (i: number) => {
    if (!memo.has(i)) throw formatError(`pickle: memo slot ${i} read before it was written ${where()}`);
    return memo.get(i) as PyValue;
  };
  const append = (list: PyValue, items: PyValue[]) => {
    if (!Array.isArray(list)) throw formatError(`pickle: APPEND to ${describe(list)} ${where()}`);
    for (const x of items) list.push(x);
  };
  const setItems = (d: PyValue, items: PyValue[]) => {
    if (!(d instanceof PyDict)) throw formatError(`pickle: SETITEM on ${describe(d)} ${where()}`);
    if (items.length % 2) throw formatError(`pickle: odd number of items for SETITEMS ${where()}`);
    for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
  };
  const textInt = (s: string): PyValue => {
    if (s === '00') return false;
    if (s === '01') return true;
    const t = s.endsWith('L') ? s.slice(0, -1) : s;
    if (!/^[-+]?\d+$/.test(t)) throw formatError(`pickle: bad integer '${fmt(s)}' ${where()}`);
    return int(BigInt(t));
  };

  if (start >= buf.length) throw formatError(`pickle: empty (no data at byte ${start})`);
  for (;;) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const v = u8();
        if (v > 5) throw formatError(`pickle: protocol ${v} is newer than 5`);
        break;
      }
      case 0x95: bytes(8); break; // FRAME: the length is a hint only
      case 0x2e: { // STOP
        const value = pop();
        if (stack.length || marks.length) throw formatError(`pickle: ${stack.length} values left on the stack at STOP`);
        return { value, end: pos };
      }
      case 0x28: marks.push(stack); stack = []; break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP
      case 0x4e: push(null); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x49: push(textInt(line())); break; // INT
      case 0x4c: push(textInt(line())); break; // LONG
      case 0x4a: push(i32()); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(u16()); break; // BININT2
      case 0x8a: push(long(bytes(u8()))); break; // LONG1
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0) throw formatError(`pickle: negative LONG4 length ${where()}`);
        push(long(bytes(n)));
        break;
      }
      case 0x46: { // FLOAT (text)
        const s = line();
        const v = Number(s);
        if (Number.isNaN(v) && !/^[-+]?nan$/i.test(s)) throw formatError(`pickle: bad float '${fmt(s)}' ${where()}`);
        push(v);
        break;
      }
      case 0x47: need(8); push(buf.readDoubleBE(pos)); pos += 8; break; // BINFLOAT
      case 0x58: push(utf8(bytes(u32()))); break; // BINUNICODE
      case 0x8c: push(utf8(bytes(u8()))); break; // SHORT_BINUNICODE
      case 0x8d: push(utf8(bytes(u64()))); break; // BINUNICODE8
      case 0x56: // UNICODE (raw-unicode-escape text)
        push(line().replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (_m, a, b) => String.fromCodePoint(parseInt(a ?? b, 16))));
        break;
      case 0x54: { // BINSTRING (Python 2 str): read as UTF-8 text, as torch.load does
        const n = i32();
        if (n < 0) throw formatError(`pickle: negative BINSTRING length ${where()}`);
        push(utf8(bytes(n)));
        break;
      }
      case 0x55: push(utf8(bytes(u8()))); break; // SHORT_BINSTRING
      case 0x42: push(Buffer.from(bytes(u32()))); break; // BINBYTES
      case 0x43: push(Buffer.from(bytes(u8()))); break; // SHORT_BINBYTES
      case 0x8e: push(Buffer.from(bytes(u64()))); break; // BINBYTES8
      case 0x96: push(Buffer.from(bytes(u64()))); break; // BYTEARRAY8
      case 0x29: push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x74: push(new PyTuple(popMark())); break; // TUPLE
      case 0x85: push(new PyTuple([pop()])); break; // TUPLE1
      case 0x86: { const b = pop(); const a = pop(); push(new PyTuple([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); push(new PyTuple([a, b, c])); break; } // TUPLE3
      case 0x5d: push([]); break; // EMPTY_LIST
      case 0x6c: push(popMark()); break; // LIST
      case 0x61: { const v = pop(); append(top(), [v]); break; } // APPEND
      case 0x65: { const items = popMark(); append(top(), items); break; } // APPENDS
      case 0x7d: push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { const d = new PyDict(); setItems(d, popMark()); push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x8f: push([]); break; // EMPTY_SET (as a list)
      case 0x90: { const items = popMark(); append(top(), items); break; } // ADDITEMS
      case 0x91: push(popMark()); break; // FROZENSET
      case 0x70: memo.set(textIndex(line(), at), top()); break; // PUT
      case 0x71: memo.set(u8(), top()); break; // BINPUT
      case 0x72: memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x67: push(memoGet(textIndex(line(), at))); break; // GET
      case 0x68: push(memoGet(u8())); break; // BINGET
      case 0x6a: push(memoGet(u32())); break; // LONG_BINGET
      case 0x63: { // GLOBAL 'module\nname\n'
        const module = line();
        push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw formatError(`pickle: STACK_GLOBAL needs two strings ${where()}`);
        push(global(module, name));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop();
        if (!(args instanceof PyTuple)) throw formatError(`pickle: REDUCE arguments are ${describe(args)}, not a tuple ${where()}`);
        const call = fn instanceof PyGlobal ? ALLOWED.get(fn.qualified)?.call : undefined;
        if (!call) throw formatError(`pickle: ${describe(fn)} is not callable in a weights file ${where()}`);
        push(call(args.items));
        break;
      }
      case 0x62: { // BUILD: only the attribute dict of an OrderedDict (state_dict._metadata) or a tensor
        const state = pop();
        const obj = top();
        if (obj instanceof PyDict) obj.attrs = state;
        else if (!(obj instanceof TensorRef)) throw formatError(`pickle: BUILD on ${describe(obj)} ${where()}`);
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) throw formatError(`pickle: a persistent id where none is expected ${where()}`);
        push(opts.persistentLoad(pid));
        break;
      }
      case 0x50: { // PERSID (text)
        const pid = line();
        if (!opts.persistentLoad) throw formatError(`pickle: a persistent id where none is expected ${where()}`);
        push(opts.persistentLoad(pid));
        break;
      }
      case 0x69: { // INST 'module\nname\n': instantiates a class
        const module = line();
        global(module, line());
        throw formatError(`pickle: INST (instantiating ${module}) is not allowed in a weights file ${where()}`);
      }
      case 0x6f: case 0x81: case 0x92: { // OBJ, NEWOBJ, NEWOBJ_EX: instantiate an allowlisted class
        const name = op === 0x6f ? 'OBJ' : op === 0x81 ? 'NEWOBJ' : 'NEWOBJ_EX';
        throw formatError(`pickle: ${name} (instantiating a class) is not allowed in a weights file ${where()}`);
      }
      default:
        throw formatError(`pickle: opcode 0x${op.toString(16).padStart(2, '0')} at byte ${at} is not supported in a weights file`);
    }
  }

  function textIndex(s: string, at: number): number {
    if (!/^\d+$/.test(s)) throw formatError(`pickle: bad memo index '${fmt(s)}' at byte ${at}`);
    return Number(s);
  }
}
