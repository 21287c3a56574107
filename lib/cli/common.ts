/**
 * CLI conventions shared by every subcommand: `--json` prints exactly one JSON document on
 * stdout; logs, warnings and progress go to stderr; exit 0 on success, non-zero with a one-line
 * reason on failure. Progress: a bar on a terminal, plain lines elsewhere.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError, fromNative } from '../util/errors';
import { Model, ModelSpec } from '../science/model';
import { manualSeed } from '../science/train';
import { removeTracked } from '../util/files';
import type { RunExecutor } from '../experiment/executor';
import { Option } from 'commander';

/** Prints the result: JSON on stdout with --json, else the human text. */
export function emit(json: boolean, value: unknown, human: () => string): void {
  if (json) process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  else process.stdout.write(human() + '\n');
}

/** A log line on stderr (never on stdout, so --json output stays parseable). */
export function log(message: string): void {
  process.stderr.write(message + '\n');
}

/** Runs a command action; failures print one line `fisherlens: <code>: <reason>` and exit 1. */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (caught) {
      const e = fromNative(caught);
      removeTracked();
      const code = e instanceof FisherLensError ? `${e.code}: ` : '';
      const msg = e instanceof Error ? e.message : String(e);
      process.stderr.write(`fisherlens: ${code}${msg.split('\n').join(' ')}\n`);
      if (process.env.FISHERLENS_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
      process.exitCode = e instanceof FisherLensError && e.code === 'ERR_ABORTED' ? 130 : 1;
    }
  };
}

/** Progress on stderr: a redrawn bar on a terminal, a plain line at most every `everyMs` elsewhere. */
export class Progress {
  private last = 0;
  private readonly tty = Boolean(process.stderr.isTTY);
  constructor(private readonly label: string, private readonly everyMs = 2000) {}
  update(done: number, total: number, extra = ''): void {
    const now = Date.now();
    const final = done >= total;
    if (!this.tty && !final && now - this.last < this.everyMs) return;
    if (this.tty && !final && now - this.last < 100) return;
    this.last = now;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    if (this.tty) {
      const w = 30;
      const bar = '█'.repeat(Math.round(frac * w)).padEnd(w, '░');
      process.stderr.write(`\r${this.label} ${bar} ${(frac * 100).toFixed(0).padStart(3)}% ${done}/${total} ${extra}\x1b[K`);
      if (final) process.stderr.write('\n');
    } else {
      process.stderr.write(`${this.label} ${done}/${total} (${(frac * 100).toFixed(0)}%) ${extra}\n`);
    }
  }
}

/** A decimal number as a user types it: `3`, `-0.5`, `.25`, `1e-3` (not '', `0x10`, `Infinity`). */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Parses a comma-separated list of positive integers ("32,128,512"). */
export function intList(s: string): number[] {
  const v = s.split(',').map((x) => (DECIMAL.test(x.trim()) ? Number(x.trim()) : NaN));
  if (v.some((x) => !Number.isInteger(x) || x <= 0)) throw new FisherLensError('ERR_ARG', `expected positive integers separated by commas, got '${s}'`);
  return v;
}

/** Parses a number option with a clear error. */
export function num(name: string, s: string): number {
  const v = DECIMAL.test(s.trim()) ? Number(s) : NaN;
  if (!Number.isFinite(v)) throw new FisherLensError('ERR_ARG', `--${name}: expected a decimal number, got '${s}'`);
  return v;
}

/** Parses an integer option >= min (decimal digits only: '' and `0x10` are refused). */
export function int(name: string, s: string, min: number): number {
  const v = num(name, s);
  if (!Number.isInteger(v) || v < min) throw new FisherLensError('ERR_ARG', `--${name}: expected an integer >= ${min}, got '${s}'`);
  return v;
}

/** The `--weights` options of every command that takes `--model` (declared once, here). */
export interface WeightsCliOptions {
  weights?: string;
  weightsEntry?: string;
  weightsPartial?: boolean;
}

/** `--weights FILE`, `--weights-entry KEY`, `--weights-partial`: add them after `--model`. */
export function weightsOptions(): Option[] {
  return [
    new Option('--weights <file>', 'load a PyTorch state dict into --model (a spec or architecture): torch.save .pt/.pth (zip or legacy, nested, module.-prefixed, from any device) or .safetensors; read weights-only, nothing in it runs'),
    new Option('--weights-entry <key>', "where the state dict sits in the --weights file (e.g. 'ema' or 'model.state_dict'; default: found by looking)"),
    new Option('--weights-partial', 'load the --weights tensors that fit and warn about the rest (default: any missing, unexpected or mis-shaped key is an error)'),
  ];
}

/**
 * `--model` of every subcommand: a file (spec .json, FisherLens checkpoint, TorchScript .pt),
 * an inline JSON spec, or a built-in architecture name (fresh weights). `defaults` fill what a
 * spec leaves out (train: the data's input shape and class count). `weights`: the --weights
 * options, loaded into the model once it is built (a state dict given as --model is ERR_FORMAT
 * saying so).
 */
export async function modelArg(s: string, device: string, opts: { defaults?: Partial<ModelSpec>; announceFresh?: boolean; seed?: number; weights?: WeightsCliOptions } = {}): Promise<Model> {
  const model = await modelOnly(s, device, { ...opts, announceFresh: opts.weights?.weights ? false : opts.announceFresh });
  const w = opts.weights;
  if (w?.weights === undefined) {
    if (w?.weightsEntry !== undefined || w?.weightsPartial) throw new FisherLensError('ERR_ARG', '--weights-entry and --weights-partial need --weights FILE');
    return model;
  }
  try {
    const r = await model.loadWeights(w.weights, { strict: !w.weightsPartial, entry: w.weightsEntry, onWarning: (m) => log(`warning: --weights: ${m}`) });
    const where = r.container.length ? ` (under '${r.container.join('.')}')` : '';
    const how = [...r.mapped, ...r.ignored, ...(r.kept.length ? [`kept from the spec: ${r.kept.join(', ')}`] : [])];
    log(`weights: ${r.loaded} tensors from ${w.weights}${where}, ${r.format}${how.length ? `; ${how.join('; ')}` : ''}`);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

async function modelOnly(s: string, device: string, opts: { defaults?: Partial<ModelSpec>; announceFresh?: boolean; seed?: number }): Promise<Model> {
  const defaults = opts.defaults ?? {};
  if (fs.existsSync(s)) return Model.from(s, { device });
  if (s.trim().startsWith('{')) {
    let spec: ModelSpec;
    try {
      spec = JSON.parse(s) as ModelSpec;
    } catch (e) {
      throw new FisherLensError('ERR_ARG', `--model: inline spec is not valid JSON: ${(e as Error).message}`);
    }
    // fresh weights come from the global generator: seed it, so the same --seed gives the same numbers
    manualSeed(opts.seed ?? 0);
    return Model.create({ ...defaults, ...spec }, { device });
  }
  if (/^[a-z][a-z0-9-]*$/.test(s)) {
    if (opts.announceFresh ?? true) log(`model '${s}' is not a file: using a freshly initialised built-in '${s}' (untrained weights)`);
    manualSeed(opts.seed ?? 0);
    return Model.create({ ...defaults, arch: s }, { device });
  }
  throw new FisherLensError('ERR_IO', `--model '${s}': no such file (expected a spec .json, a checkpoint, a TorchScript .pt or an architecture name)`);
}

/**
 * Exit codes of `fisherlens run` and `fisherlens demo` (scripts can rely on them):
 * 0 every run finished; 1 an error before or outside runs (config, I/O, addon); 2 usage error;
 * 3 some runs failed (the others finished; see <run>/error.json); 130 interrupted (SIGINT/SIGTERM:
 * finished runs are kept, the current one resumes from its checkpoint on the next call).
 */
export const EXIT = { ok: 0, error: 1, usage: 2, runsFailed: 3, interrupted: 130 } as const;

/** An AbortController tied to SIGINT/SIGTERM: the first signal aborts gracefully, a second exits now. */
export function interruptController(what = 'stopping after the current step; finished runs are kept and the current run resumes from its checkpoint when you run the same command again'): { controller: AbortController; dispose(): void } {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      log(`fisherlens: ${sig} again, exiting now`);
      process.exit(EXIT.interrupted);
    }
    log(`\nfisherlens: ${sig}: ${what}`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return { controller, dispose: () => { process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); } };
}

/**
 * FISHERLENS_EXECUTOR=<module>: use the RunExecutor exported as `executor` by that module instead
 * of the built-in one (your own training pipeline behind the same runner, run folders and reports).
 */
export function executorFromEnv(): RunExecutor | undefined {
  const file = process.env.FISHERLENS_EXECUTOR;
  if (!file) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(path.resolve(file)) as { executor?: RunExecutor };
  if (!mod.executor || typeof mod.executor.execute !== 'function') {
    throw new FisherLensError('ERR_ARG', `FISHERLENS_EXECUTOR=${file}: the module must export \`executor\` with an execute(ctx) method`);
  }
  return mod.executor;
}
