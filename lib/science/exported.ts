/**
 * torch.export archives (.pt2, `torch.export.save(torch.export.export(model, (x,)), path)`), read
 * as data: the zip (weights/zip.ts), its format and version records, the program's graph JSON
 * (models/<name>.json, export schema 8.x) and its weights (raw tensor bytes under data/weights/,
 * described by model_weights_config.json). No pickle is read and no code runs: the native side
 * (native/models/exported.cc) interprets the graph through LibTorch's dispatcher and refuses any
 * op outside its allowlist of pure ATen ops.
 */
import * as fs from 'fs';
import { FisherLensError } from '../util/errors';
import { readZip, ZipEntries } from './weights/zip';
import type { WeightDtype } from './weights/types';
import type { WeightSource } from './weights/apply';

/** archive_version values this reader knows (torch 2.13 and 2.14 write 0). */
export const PT2_ARCHIVE_VERSIONS: readonly string[] = ['0'];
/** Export schema major versions this reader knows (torch 2.13 and 2.14: 8). */
export const PT2_SCHEMA_MAJORS: readonly number[] = [8];

/** export schema ScalarType codes (torch/_export/serde/schema.py) → weights dtypes. */
const SCALAR_TYPES: Readonly<Record<number, WeightDtype>> = {
  1: 'uint8', 2: 'int8', 3: 'int16', 4: 'int32', 5: 'int64', 6: 'float16', 7: 'float32', 8: 'float64', 12: 'bool', 13: 'bfloat16',
};

/** One parameter or buffer of the program (native/models/exported.h's spec "state"). */
export interface ExportedState {
  /** module name, e.g. 'conv1.weight' */
  name: string;
  shape: number[];
  /** export ScalarType code */
  dtype: number;
  /** a parameter (trainable) or a buffer */
  param: boolean;
}

/** The spec native createExported takes (native/models/exported.h). */
export interface ExportedSpec {
  arch: 'exported';
  /** the archive's absolute path */
  path: string;
  /** the exporting torch's version (the archive's model JSON) */
  torchVersion: string;
  /** the text of the archive's models/<name>.json (export schema: graph_module with graph and signature), kept as text so its int64 values stay exact */
  program: string;
  state: ExportedState[];
}

/** What readExported returns: the spec and where each tensor's bytes are in the file. */
export interface ExportedArchive {
  spec: ExportedSpec;
  sources: WeightSource[];
  /** whether the export declared a dynamic batch (false: a fixed batch of `batch`) */
  dynamicBatch: boolean;
  batch?: number;
}

function formatError(file: string, message: string): FisherLensError {
  return new FisherLensError('ERR_FORMAT', `${file}: ${message}`);
}

type Json = Record<string, unknown>;
const intOf = (v: unknown): number | undefined => (v && typeof v === 'object' && typeof (v as Json).as_int === 'number' ? (v as Json).as_int as number : undefined);

/**
 * Reads a .pt2 archive. ERR_IO when the file cannot be read; ERR_FORMAT naming the defect for
 * another archive_format or archive_version, a schema this reader does not know, several programs,
 * pickled weights or constants, or weights whose bytes do not fit their records.
 */
export async function readExported(file: string): Promise<ExportedArchive> {
  let bytes: Buffer;
  try {
    bytes = await fs.promises.readFile(file);
  } catch (e) {
    throw new FisherLensError('ERR_IO', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const entries = await readZip(bytes, file);
  const formatName = [...entries.keys()].find((n) => /^([^/]+\/)?archive_format$/.test(n));
  if (!formatName) throw formatError(file, 'not a torch.export archive (no archive_format record)');
  const prefix = formatName.slice(0, formatName.length - 'archive_format'.length);
  const text = (name: string): string | undefined => entries.get(prefix + name)?.toString('utf8');
  const format = text('archive_format')?.trim();
  if (format !== 'pt2') throw formatError(file, `archive_format '${format}' is not 'pt2'`);
  const version = text('archive_version')?.trim() ?? '';
  if (!PT2_ARCHIVE_VERSIONS.includes(version)) {
    throw formatError(file, `archive_version '${version}' is not one FisherLens reads (${PT2_ARCHIVE_VERSIONS.join(', ')}: torch 2.13 and 2.14)`);
  }
  const byteorder = text('byteorder')?.trim();
  if (byteorder && byteorder !== 'little') throw formatError(file, `byteorder '${byteorder}': only little-endian archives are read`);
  const models = [...entries.keys()].filter((n) => n.startsWith(prefix + 'models/') && n.endsWith('.json'));
  if (models.length !== 1) {
    throw formatError(file, models.length === 0 ? 'the archive holds no program (models/*.json)'
      : `the archive holds ${models.length} programs (${models.map((m) => m.slice(prefix.length)).join(', ')}); FisherLens loads archives of one`);
  }
  const modelName = models[0].slice(prefix.length + 'models/'.length, -'.json'.length);
  let model: Json;
  const programText = entries.get(models[0])!.toString('utf8');
  try {
    model = JSON.parse(programText) as Json;
  } catch (e) {
    throw formatError(file, `models/${modelName}.json is not JSON (${(e as Error).message})`);
  }
  const sv = model.schema_version as Json | undefined;
  const major = typeof sv?.major === 'number' ? sv.major : NaN;
  if (!PT2_SCHEMA_MAJORS.includes(major)) {
    throw formatError(file, `export schema version ${major}.${String(sv?.minor)} is not one FisherLens reads (${PT2_SCHEMA_MAJORS.join(', ')}.x)`);
  }
  const gm = model.graph_module as Json | undefined;
  if (!gm || typeof gm !== 'object' || !gm.graph || !gm.signature) throw formatError(file, `models/${modelName}.json has no graph_module`);
  const state: ExportedState[] = [];
  const sources: WeightSource[] = [];
  readTensors(file, entries, bytes.byteOffset, prefix, `data/weights/${modelName}_weights_config.json`, 'data/weights/', state, sources);
  const constants = readConfig(file, entries, prefix, `data/constants/${modelName}_constants_config.json`);
  if (constants && Object.keys(constants).length > 0) {
    throw formatError(file, `the program has lifted tensor constants (${Object.keys(constants).slice(0, 3).join(', ')}); FisherLens reads parameters and buffers only — make them buffers (register_buffer) before exporting`);
  }
  const graph = gm.graph as Json;
  const inputName = findUserInput(gm);
  const meta = (graph.tensor_values as Record<string, Json> | undefined)?.[inputName ?? ''];
  const b0 = intOf((meta?.sizes as unknown[] | undefined)?.[0]);
  return {
    spec: { arch: 'exported', path: file, torchVersion: String(model.torch_version ?? '?'), program: programText, state },
    sources,
    dynamicBatch: b0 === undefined,
    ...(b0 !== undefined ? { batch: b0 } : {}),
  };
}

function readConfig(file: string, entries: ZipEntries, prefix: string, name: string): Record<string, Json> | undefined {
  const buf = entries.get(prefix + name);
  if (!buf) return undefined;
  try {
    const j = JSON.parse(buf.toString('utf8')) as Json;
    return (j.config ?? {}) as Record<string, Json>;
  } catch (e) {
    throw formatError(file, `${name} is not JSON (${(e as Error).message})`);
  }
}

function findUserInput(gm: Json): string | undefined {
  const specs = ((gm.signature as Json).input_specs ?? []) as Json[];
  for (const s of specs) {
    const u = s.user_input as Json | undefined;
    const t = (u?.arg as Json | undefined)?.as_tensor as Json | undefined;
    if (t && typeof t.name === 'string') return t.name;
  }
  return undefined;
}

/** The weights' records; `base`: the archive buffer's byteOffset (entries are views of it). */
function readTensors(file: string, entries: ZipEntries, base: number, prefix: string, configName: string, dir: string,
  state: ExportedState[], sources: WeightSource[]): void {
  const config = readConfig(file, entries, prefix, configName);
  if (!config) throw formatError(file, `the archive has no ${configName}`);
  for (const [name, e] of Object.entries(config)) {
    if (e.use_pickle) throw formatError(file, `weight '${name}' is pickled (use_pickle); FisherLens reads raw tensor files only and never unpickles an archive`);
    const meta = e.tensor_meta as Json | undefined;
    const code = meta?.dtype as number;
    const dtype = SCALAR_TYPES[code];
    if (!meta || !dtype) throw formatError(file, `weight '${name}' has scalar type ${String(code)}, which FisherLens does not read`);
    if (meta.layout !== undefined && meta.layout !== 7) throw formatError(file, `weight '${name}' is not a strided (dense) tensor`);
    const dims = (meta.sizes as unknown[]).map(intOf);
    const strides = (meta.strides as unknown[]).map(intOf);
    const offset = intOf(meta.storage_offset) ?? 0;
    if (dims.some((d) => d === undefined) || strides.some((d) => d === undefined)) throw formatError(file, `weight '${name}' has a symbolic shape`);
    const data = entries.get(prefix + dir + String(e.path_name));
    if (!data) throw formatError(file, `weight '${name}': ${dir}${String(e.path_name)} is missing`);
    state.push({ name, shape: dims as number[], dtype: code, param: Boolean(e.is_param) });
    sources.push({
      target: name, dtype, shape: dims as number[], strides: strides as number[], offset,
      byteStart: data.byteOffset - base, byteLength: data.length,
    });
  }
}
