/**
 * Weights into and out of a model, over a small interface the Model class provides (so this file
 * needs no addon): read the file, plan the key mapping against the model's state, hand the native
 * side where each tensor's bytes are in the file; and write a model's state as safetensors or a
 * torch zip.
 */
import * as fs from 'fs';
import { planWeights, TargetEntry, WeightsPlan } from './keymap';
import { inferSpec, Inference } from './infer';
import { readWeights, ReadOptions } from './read';
import { DTYPES, FisherLensError, WeightDtype, WeightsFile, WeightsFormat, numelOf } from './types';
import { OutFormat, OutTensor, formatForPath, writeWeightsFile } from './write';

/** Where one file tensor's bytes are and where they go (native/models/weights.h WeightSource). */
export interface WeightSource {
  target: string;
  dtype: WeightDtype;
  shape: number[];
  strides: number[];
  /** storage offset, elements */
  offset: number;
  /** the storage's first byte in the file */
  byteStart: number;
  /** the storage's length in bytes */
  byteLength: number;
}

/** What loadWeightsInto needs of a model. */
export interface WeightsTarget {
  /** spec.arch of a built-in, 'torchscript' otherwise (selects the published layouts) */
  arch: string;
  /** the model's parameters and buffers (names, shapes, dtypes) */
  stateInfo(): Promise<TargetEntry[]>;
  /** copies the sources from the file at `path` into the model (all checked first) */
  load(path: string, sources: WeightSource[]): Promise<void>;
}

/** Options of model.loadWeights. */
export interface LoadWeightsOptions {
  /**
   * false: load the tensors that match and report missing, unexpected and mis-shaped keys as a
   * warning instead of rejecting with ERR_FORMAT (default true).
   */
  strict?: boolean;
  /** where the state dict sits in the file ('state_dict', 'model', 'ema'; default: found by looking) */
  entry?: string;
  /** called with each warning (casts; under strict: false the keys that did not fit) */
  onWarning?: (message: string) => void;
}

/** What loadWeights did. */
export interface LoadWeightsResult {
  format: WeightsFormat;
  /** the keys leading to the state dict in the file ([] = top level) */
  container: string[];
  /** tensors copied into the model */
  loaded: number;
  /** how keys were mapped, what was ignored and kept (WeightsPlan) */
  mapped: string[];
  ignored: string[];
  kept: string[];
  warnings: string[];
}

/** Reads `file` (ERR_IO / ERR_FORMAT), keeping the bytes for the byte offsets of the sources. */
async function readWithBytes(file: string, opts: ReadOptions): Promise<{ w: WeightsFile; bytes: Buffer }> {
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new FisherLensError('ERR_IO', `cannot read weights file ${file}: ${err.code ?? err.message}`);
  }
  return { w: await readWeights(bytes, { what: file, ...opts }), bytes };
}

/** Loads a weights file into a model: read, map, then one native copy. */
export async function loadWeightsInto(target: WeightsTarget, file: string, opts: LoadWeightsOptions = {}): Promise<LoadWeightsResult> {
  const { w, bytes } = await readWithBytes(file, { entry: opts.entry });
  let plan: WeightsPlan;
  try {
    plan = planWeights(target.arch, await target.stateInfo(), w.tensors, { strict: opts.strict, what: file });
  } catch (e) {
    // say which architecture the file does fit, when the keys tell
    const inf = inferSpec(w.tensors);
    if (e instanceof FisherLensError && inf.spec) {
      throw new FisherLensError(e.code, `${e.message}. The file looks like ${JSON.stringify(inf.spec)}`);
    }
    throw e;
  }
  const sources: WeightSource[] = plan.assign.map((a) => ({
    target: a.target,
    dtype: a.source.dtype,
    shape: a.source.shape,
    strides: a.source.strides,
    offset: a.source.offset,
    byteStart: a.source.storage.byteOffset - bytes.byteOffset,
    byteLength: a.source.storage.length,
  }));
  for (const s of sources) {
    if (s.byteStart < 0 || s.byteStart + s.byteLength > bytes.length) {
      throw new FisherLensError('ERR_INTERNAL', `loadWeights: tensor '${s.target}' is not a view of the file's bytes`);
    }
  }
  await target.load(file, sources);
  for (const m of plan.warnings) opts.onWarning?.(m);
  return {
    format: w.format, container: w.container, loaded: sources.length,
    mapped: plan.mapped, ignored: plan.ignored, kept: plan.kept, warnings: plan.warnings,
  };
}

/** A tensor of a model's state as the Model class gives it. */
export interface StateTensor {
  shape: number[];
  dtype: string;
  toArray(): ArrayBufferView;
}

/**
 * Writes a model's state (name → tensor, PyTorch names) to `file`: safetensors for a
 * '.safetensors' path or format, else the zip format of torch.save (weights_only-loadable).
 */
export async function exportWeightsFrom(state: Map<string, StateTensor>, file: string, format: OutFormat = formatForPath(file)): Promise<void> {
  const out: OutTensor[] = [];
  for (const [name, t] of state) {
    if (!(t.dtype in DTYPES)) throw new FisherLensError('ERR_DTYPE', `exportWeights: tensor '${name}' has dtype ${t.dtype}, which no weights format here holds`);
    const a = t.toArray();
    out.push({ name, dtype: t.dtype as WeightDtype, shape: t.shape, data: Buffer.from(a.buffer, a.byteOffset, a.byteLength) });
  }
  await writeWeightsFile(file, out, format);
}

/** What `fisherlens info` says of a weights file, without running anything. */
export interface WeightsDescription {
  format: WeightsFormat;
  container: string[];
  extras: Record<string, string>;
  metadata?: Record<string, string>;
  tensors: number;
  /** elements over all tensors */
  elements: number;
  /** dtype → tensor count */
  dtypes: Record<string, number>;
  /** storage locations (devices the file was saved from) → tensor count */
  locations: Record<string, number>;
  inference: Inference;
  /** the first tensors: name, dtype, shape */
  sample: { name: string; dtype: string; shape: number[] }[];
}

/** Describes a weights file: format, tensors, the built-in architecture it fits or why none does. */
export async function describeWeights(file: string, opts: ReadOptions = {}): Promise<WeightsDescription> {
  const { w } = await readWithBytes(file, opts);
  const count = (keys: string[]) => keys.reduce<Record<string, number>>((o, k) => ((o[k] = (o[k] ?? 0) + 1), o), {});
  return {
    format: w.format,
    container: w.container,
    extras: w.extras,
    metadata: w.metadata,
    tensors: w.tensors.length,
    elements: w.tensors.reduce((n, t) => n + numelOf(t.shape), 0),
    dtypes: count(w.tensors.map((t) => t.dtype)),
    locations: count(w.tensors.map((t) => t.location ?? 'unrecorded')),
    inference: inferSpec(w.tensors),
    sample: w.tensors.slice(0, 8).map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })),
  };
}
