/**
 * From a config file to resolved runs: reading and validating it (YAML or JSON), merging each
 * entry over the defaults, expanding the grid into runs with stable ids, and the identity of a
 * resolved run (stable key order, device aside) that run folders and queue jobs compare.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as YAML from 'yaml';
import { FisherLensError, show } from '../util/errors';
import { ExperimentConfig, ExperimentSchema, MAX_RUNS, ModelConfig, ResolvedRun, ResolvedRunSchema } from './config';
import { configError, fmtPath, formatIssues, valueAt } from './config-errors';

/** Parses YAML or JSON text (by extension; YAML is a superset of JSON, so text without one works). */
export function parseConfigText(text: string, file = 'config'): unknown {
  try {
    if (file.endsWith('.json')) return JSON.parse(text) as unknown;
    const doc = YAML.parseDocument(text, { prettyErrors: true });
    if (doc.errors.length > 0) {
      const e = doc.errors[0];
      const where = e.linePos ? ` (line ${e.linePos[0].line}, column ${e.linePos[0].col})` : '';
      throw configError(`not valid YAML${where}: ${e.message.split('\n')[0]}`, file);
    }
    return doc.toJS() as unknown;
  } catch (e) {
    if (e instanceof FisherLensError) throw e;
    throw configError(`not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message}`, file);
  }
}

/** The path of the first number that is NaN or ±Infinity (YAML's .nan / .inf), or null. */
function nonFinite(v: unknown, at: (string | number)[] = []): (string | number)[] | null {
  if (typeof v === 'number') return Number.isFinite(v) ? null : at;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) { const p = nonFinite(v[i], [...at, i]); if (p) return p; }
  } else if (isPlainObject(v)) {
    for (const [k, x] of Object.entries(v)) { const p = nonFinite(x, [...at, k]); if (p) return p; }
  }
  return null;
}

/** Validates the top level of a config (before the grid is expanded). Every number must be finite. */
export function validateExperiment(input: unknown, file?: string): ExperimentConfig {
  const bad = nonFinite(input);
  if (bad) throw configError(`${fmtPath(bad)}: expected a finite number, got ${String(valueAt(input, bad))}`, file);
  const r = ExperimentSchema.safeParse(input);
  if (!r.success) throw configError(formatIssues(r.error, input, [], ExperimentSchema), file);
  return r.data;
}

/** Reads and validates a YAML/JSON config file. */
export function loadConfig(file: string): ExperimentConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new FisherLensError('ERR_IO', `cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return validateExperiment(parseConfigText(text, file), path.basename(file));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Deep merge: objects merge key by key, everything else (arrays included) is replaced by `b`. */
export function deepMerge(a: unknown, b: unknown): unknown {
  if (b === undefined) return structuredClone(a);
  if (isPlainObject(a) && isPlainObject(b)) {
    const out: Record<string, unknown> = structuredClone(a);
    for (const [k, v] of Object.entries(b)) out[k] = deepMerge(a[k], v);
    return out;
  }
  return structuredClone(b);
}

/** Sets a dotted path ('train.beta', 'eval.attacks.0.epsilon') in a plain object, creating objects on the way. */
export function setPath(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  const keys = dotted.split('.');
  let cur: Record<string, unknown> = obj;
  for (let i = 0; i < keys.length - 1; i++) {
    const k = keys[i];
    if (!isPlainObject(cur[k]) && !Array.isArray(cur[k])) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[keys[keys.length - 1]] = structuredClone(value);
}

/** The cartesian product of a grid { path: [values] } as a list of points, in key order. */
export function gridPoints(grid: Record<string, unknown[]>): Record<string, unknown>[] {
  let points: Record<string, unknown>[] = [{}];
  for (const [k, values] of Object.entries(grid)) {
    const next: Record<string, unknown>[] = [];
    for (const p of points) for (const v of values) next.push({ ...p, [k]: v });
    points = next;
  }
  return points;
}

/** A readable label of a model spec: `small-cnn`, `vgg13-identity-avg`, `resnet32-w10`. */
export function modelLabel(m: ModelConfig): string {
  if (m.name) return m.name;
  if (!m.arch) return path.basename(m.path ?? 'model').replace(/\.[^.]+$/, '').replace(/[^A-Za-z0-9._-]/g, '-');
  let s: string = m.arch;
  if (m.activation && m.activation !== 'relu') s += `-${m.activation}`;
  if (m.pool && m.pool !== 'max') s += `-${m.pool}pool`;
  if (m.width && m.width !== 1) s += `-w${m.width}`;
  if (m.hidden) s += `-h${m.hidden.join('x')}`;
  return s;
}

function slug(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.replace(/[^A-Za-z0-9.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'x';
}

/**
 * Expands a config into its runs: defaults ← entry ← grid point, for each seed. Run ids are
 * stable and readable, derived from the grid point: `<entry name or model label>_<method>
 * [_<key><value> for grid keys other than model/method/seed]_seed<k>`, so a re-run finds them.
 */
export function expandRuns(config: ExperimentConfig, opts: { device?: string; maxRuns?: number } = {}): ResolvedRun[] {
  // count before expanding: a grid of a million points must be refused, not built
  const maxRuns = opts.maxRuns ?? MAX_RUNS;
  const count = config.runs.reduce((sum, entry) => {
    const grid = { ...(config.grid ?? {}), ...(entry.grid ?? {}) };
    const points = Object.values(grid).reduce((n, v) => n * v.length, 1);
    return sum + points * ('seed' in grid ? 1 : (entry.seeds ?? config.seeds).length);
  }, 0);
  if (count > maxRuns) {
    throw configError(`the config expands to ${count} runs, more than the cap of ${maxRuns}; narrow the grid, or raise the cap (fisherlens run --max-runs ${count})`);
  }
  const runs: ResolvedRun[] = [];
  const seen = new Map<string, string>();
  config.runs.forEach((entry, i) => {
    const grid = { ...(config.grid ?? {}), ...(entry.grid ?? {}) };
    for (const point of gridPoints(grid)) {
      const base: Record<string, unknown> = {
        data: deepMerge(config.defaults.data ?? {}, entry.data),
        model: deepMerge(config.defaults.model ?? {}, entry.model),
        train: deepMerge(config.defaults.train ?? {}, entry.train),
        eval: deepMerge(config.defaults.eval ?? {}, entry.eval),
      };
      for (const [k, v] of Object.entries(point)) {
        if (k === 'seed') continue;
        if (!/^(data|model|train|eval)\./.test(k)) {
          throw configError(`${fmtPath(['runs', i, 'grid', k])}: grid keys are dotted paths under data | model | train | eval (or 'seed'), got '${k}'`);
        }
        setPath(base, k, v);
      }
      const seeds = 'seed' in point ? [point.seed] : (entry.seeds ?? config.seeds);
      for (const seed of seeds) {
        const candidate = {
          ...base,
          id: 'pending',
          seed,
          device: opts.device ?? entry.device ?? config.device,
          tensorboard: typeof config.tensorboard === 'boolean' ? { enabled: config.tensorboard } : (config.tensorboard ?? {}),
          gridPoint: point,
        };
        const where = Object.keys(point).length > 0
          ? ` (grid point ${Object.entries(point).map(([k, v]) => `${k}=${show(v)}`).join(', ')})` : '';
        const r = ResolvedRunSchema.safeParse(candidate);
        if (!r.success) throw configError(formatIssues(r.error, candidate, ['runs', i], ResolvedRunSchema, where));
        const run = r.data;
        const extra = Object.entries(point)
          .filter(([k]) => !(k === 'train.method' || k === 'seed' || (entry.name === undefined && k.startsWith('model.'))))
          .map(([k, v]) => `${k.split('.').pop()}${slug(v)}`);
        const modelPart = entry.name ?? modelLabel(run.model);
        run.id = [modelPart, run.train.method, ...extra, `seed${run.seed}`].join('_');
        const prev = seen.get(run.id);
        if (prev !== undefined) {
          throw configError(`runs[${i}]: run id '${run.id}' is also produced by ${prev}; give the entries different \`name\`s`);
        }
        seen.set(run.id, `runs[${i}]${where}`);
        runs.push(run);
      }
    }
  });
  return runs;
}

/** A copy of a JSON value with object keys sorted (for stable hashes and comparisons). */
export function stable(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stable);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, stable((v as Record<string, unknown>)[k])]));
  }
  return v;
}

/** The first path where two resolved runs differ ('' when equal), ignoring the device. */
export function firstDifference(a: unknown, b: unknown, at = ''): string {
  if (JSON.stringify(stable(a)) === JSON.stringify(stable(b))) return '';
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
    for (const k of [...keys].sort()) {
      const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], at ? `${at}.${k}` : k);
      if (d) return d;
    }
  }
  return `${at || '(top level)'}: ${JSON.stringify(a)} → ${JSON.stringify(b)}`;
}

/** A resolved run without its device and TensorBoard setting (neither changes a run's identity). */
export function withoutDevice(r: ResolvedRun): Omit<ResolvedRun, 'device' | 'tensorboard'> {
  const { device: _device, tensorboard: _tensorboard, ...rest } = r;
  return rest;
}
