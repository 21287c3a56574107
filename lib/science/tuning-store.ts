/**
 * Measured speed choices kept across processes: autotune.json in the cache folder
 * ($FISHERLENS_CACHE, else $XDG_CACHE_HOME/fisherlens, else ~/.cache/fisherlens). Two kinds of
 * entries share it: the exact Fisher method's layout and classes per pass (lib/science/fisher.ts
 * exactTuning) and the attacks' input-gradient engine under 'auto' (lib/binding/backend.ts
 * setGradientEngine). An entry is keyed by what the choice depends on: the architecture (a
 * built-in's spec; a TorchScript archive's path, size and modification time), the op's own key
 * (input shape, device, engine, pins), and the machine (CPU model and count, intra-op threads,
 * LibTorch and addon versions). Deleting the file measures again; FISHERLENS_AUTOTUNE_STORE=0
 * neither reads nor writes it. Every write is best effort (a cache): read, merge, prune (entries
 * of TorchScript archives that are gone or rewritten; beyond the newest MAX_TUNING_ENTRIES), write
 * a temporary file, rename, so readers never see half a file.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model, modelHandle } from './model';
import { backend } from '../binding/backend';
import { cacheDir } from '../binding/loader';
import { FisherLensError, fromNative } from '../util/errors';
import { writeFileAtomic } from '../util/files';

const STORE_VERSION = 1;

/**
 * Whether `e` is a failure of the file system (a Node system error: ENOENT, EACCES, EISDIR,
 * ENOTDIR, EROFS, ENOSPC, ...; it has an errno and a syscall), the failures a cache shrugs off.
 * A TypeError (ERR_INVALID_ARG_TYPE has a code but no errno) is a bug and is rethrown.
 */
function isFsError(e: unknown): boolean {
  const x = e as NodeJS.ErrnoException;
  return e instanceof Error && typeof x.code === 'string' && typeof x.errno === 'number' && typeof x.syscall === 'string';
}

/** A failure the store shrugs off: the file system's, or FisherLens's own coded errors (ERR_IO of the writer; ERR_DISPOSED of a model disposed while its op ran). */
function expected(e: unknown): boolean {
  return isFsError(e) || fromNative(e) instanceof FisherLensError;
}

/** The file (see the module comment). */
export function autotuneFile(): string { return path.join(cacheDir(), 'autotune.json'); }

/** Whether choices are read from and written to the file (FISHERLENS_AUTOTUNE_STORE=0: in-process only). */
export function persistTuning(): boolean { return process.env.FISHERLENS_AUTOTUNE_STORE !== '0'; }

/** The entry key of this model and op key on this machine; undefined where the model has no stable identity or storing is off. */
export function tuningKey(model: Model, key: string): string | undefined {
  if (!persistTuning()) return undefined;
  let id: string;
  if (model.kind === 'builtin') id = JSON.stringify(model.spec);
  else {
    const file = model.spec.path;
    if (!file) return undefined;
    try {
      const st = fs.statSync(file);
      id = JSON.stringify([file, st.size, st.mtimeMs]);
    } catch (e) {
      if (!isFsError(e)) throw e;
      return undefined;  // the archive moved: nothing stable to key on
    }
  }
  const b = backend();
  const cpus = os.cpus();
  const machine = [cpus[0]?.model ?? '', cpus.length, b.threads, b.torchVersion, b.addonVersion];
  return JSON.stringify([id, key, machine]);
}

/** Every entry ({} when the file is absent, unreadable or not ours). */
export function readTuning(): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(autotuneFile(), 'utf8');
  } catch (e) {
    if (isFsError(e)) return {};  // absent (ENOENT) or unreadable: nothing stored
    throw e;
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    if (e instanceof SyntaxError) return {};  // half a file of another writer, or not ours
    throw e;
  }
  if (!isObject(j) || j.version !== STORE_VERSION || !isObject(j.entries)) return {};
  return j.entries;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Entries kept at most: the newest by measuredAt. */
export const MAX_TUNING_ENTRIES = 256;

/**
 * The entries still worth keeping: not those of a TorchScript archive that is gone or was
 * rewritten (its path, size and mtime no longer match: temporary exports, retrained models),
 * and at most MAX_TUNING_ENTRIES, the newest.
 */
function prune(entries: Record<string, unknown>): Record<string, unknown> {
  const live = Object.entries(entries).filter(([k]) => {
    const id = splitKey(k)?.[0];
    if (id === undefined) return false;
    if (!id.startsWith('[')) return true;  // a built-in's spec
    let parts: unknown;
    try {
      parts = JSON.parse(id);
    } catch (e) {
      if (e instanceof SyntaxError) return false;
      throw e;
    }
    if (!Array.isArray(parts) || typeof parts[0] !== 'string') return false;
    const [file, size, mtimeMs] = parts as [string, unknown, unknown];
    try {
      const st = fs.statSync(file);
      return st.size === size && st.mtimeMs === mtimeMs;
    } catch (e) {
      if (isFsError(e)) return false;  // the archive is gone
      throw e;
    }
  });
  const at = (v: unknown): string => String((v as { measuredAt?: unknown })?.measuredAt ?? '');
  live.sort((a, b) => at(b[1]).localeCompare(at(a[1])));
  return Object.fromEntries(live.slice(0, MAX_TUNING_ENTRIES));
}

/** Adds entries (one read-merge-prune-write). */
export function writeTuning(add: Record<string, unknown>): void {
  const entries = prune({ ...readTuning(), ...add });
  try {
    writeFileAtomic(autotuneFile(), JSON.stringify({ version: STORE_VERSION, entries }));
  } catch (e) {
    // a read-only or full cache folder (ERR_IO; the writer removed its temporary file): the choices stay in-process
    if (!(e instanceof FisherLensError && e.code === 'ERR_IO')) throw e;
  }
}

// ---- the attacks' gradient engine (native/gradient.cc InputGradient) ----

interface StoredGradient { engine: 'linear' | 'autograd'; linearMs: number | null; autogradMs: number | null; measuredAt: string }
/** Op-key prefix of the gradient-engine entries; the native key (shape, dtype and device codes) follows as JSON. */
const GRADIENT = 'gradient ';
// per model object: the choice keys (JSON of the native key) the file already holds, so an op
// reads the file only when the native side made a new choice
const inFile = new WeakMap<Model, Set<string>>();

/**
 * Runs an op that ascends on `model` (attacks, AutoAttack, ρ, a training step) between the two
 * halves of the gradient-engine store:
 * - before it, the native side gets the engine choices stored for the model's architecture on
 *   this machine (once per model object; nothing when its first ascent runs under a pinned
 *   engine), so every process here
 *   takes the engine the first one measured and a resumed run continues on the same engine;
 * - after it, the choices the native side made that the file lacks are stored (the file is read
 *   only when there is a new one), so a run killed after its first batch keeps them.
 * Both are best effort, like the file itself: a model the op refuses (disposed, not a Model) gets
 * the op's own error, and the op's result stands whatever happens in the store.
 */
export async function withGradientChoices<T>(model: Model, op: () => Promise<T>): Promise<T> {
  if (!(model instanceof Model)) return op();  // the op's own ERR_ARG names the argument
  try {
    loadChoices(model);
  } catch (e) {
    if (!expected(e)) throw e;  // the op measures instead
  }
  const r = await op();
  try {
    saveChoices(model);
  } catch (e) {
    if (!expected(e)) throw e;  // a later op stores them (e.g. the model was disposed while this one ran)
  }
  return r;
}

/** [architecture id, op key, machine] of an entry key, or undefined for a key that is not ours. */
function splitKey(k: string): [string, string, string] | undefined {
  let parts: unknown;
  try {
    parts = JSON.parse(k);
  } catch (e) {
    if (e instanceof SyntaxError) return undefined;
    throw e;
  }
  if (!Array.isArray(parts)) return undefined;
  const [id, op, machine] = parts as unknown[];
  return typeof id === 'string' && typeof op === 'string' ? [id, op, JSON.stringify(machine)] : undefined;
}

// once per model object (a training loop calls it per step: backend() alone costs ~0.5 ms), under
// the engine set at that model's first ascent
function loadChoices(model: Model): void {
  if (inFile.has(model)) return;
  const have = new Set<string>();
  inFile.set(model, have);
  if (backend().gradientEngine !== 'auto') return;
  const mine = tuningKey(model, GRADIENT);
  if (!mine) return;
  const [id, , machine] = splitKey(mine)!;
  for (const [k, v] of Object.entries(readTuning())) {
    const parts = splitKey(k);
    if (!parts || parts[0] !== id || parts[2] !== machine || !parts[1].startsWith(GRADIENT)) continue;
    if (!isObject(v)) continue;
    const e = v as Partial<StoredGradient>;
    const ms = (x: unknown): number => (typeof x === 'number' ? x : NaN);  // null: not measured
    let shape: unknown;
    try {
      shape = JSON.parse(parts[1].slice(GRADIENT.length));
    } catch (e) {
      if (e instanceof SyntaxError) continue;
      throw e;
    }
    if (!Array.isArray(shape) || !shape.every(Number.isInteger) || (e.engine !== 'linear' && e.engine !== 'autograd')) continue;
    modelHandle(model).setGradientChoice({ key: shape as number[], engine: e.engine, linearMs: ms(e.linearMs), autogradMs: ms(e.autogradMs) });
    have.add(JSON.stringify(shape));
  }
}

function saveChoices(model: Model): void {
  if (modelHandle(model).disposed) return;
  let have = inFile.get(model);
  if (!have) inFile.set(model, (have = new Set()));
  const fresh = modelHandle(model).gradientChoices.filter((c) => !have!.has(JSON.stringify(c.key)));
  if (fresh.length === 0) return;
  const stored = readTuning();
  const add: Record<string, unknown> = {};
  for (const c of fresh) {
    have.add(JSON.stringify(c.key));
    const k = tuningKey(model, GRADIENT + JSON.stringify(c.key));
    if (!k || stored[k]) continue;
    add[k] = { engine: c.engine, linearMs: Number.isFinite(c.linearMs) ? c.linearMs : null,
      autogradMs: Number.isFinite(c.autogradMs) ? c.autogradMs : null, measuredAt: new Date().toISOString() } satisfies StoredGradient;
  }
  if (Object.keys(add).length > 0) writeTuning(add);
}
