/**
 * CLI conventions shared by every subcommand: `--json` prints exactly one JSON document on
 * stdout; logs, warnings and progress go to stderr; exit 0 on success, non-zero with a one-line
 * reason on failure. Progress: a bar on a terminal, plain lines elsewhere.
 */
import { QUEUE_TLS_OPTIONS, QueueTls } from '../experiment/queue-jobs';
import * as fs from 'fs';
import * as path from 'path';
import { Command } from 'commander';
import { FisherLensError, fromNative, invalidArgument } from '../util/errors';
import { OptionDecl, OptionValue, checkValue } from '../util/schema';
import { DATA_SPECS, SPLITS, Split } from '../science/data';
import { Model, ModelSpec } from '../science/model';
import { manualSeed } from '../science/train';
import { removeTracked } from '../util/files';
import { TRAIN_OPTIONS } from '../science/options';
import type { RunExecutor } from '../experiment/executor';

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

// ---------------- flag values: the one parser set of every command ----------------

/** A decimal number as a user types it: `3`, `-0.5`, `.25`, `1e-3` (not '', `0x10`, `Infinity`). */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** `--<flag>` as messages name it. */
const flagName = (flag: string): string => (flag.startsWith('-') ? flag : `--${flag}`);

/** Parses a comma-separated list of positive integers ("32,128,512") given to `--<flag>`. */
export function intList(flag: string, s: string): number[] {
  const v = s.split(',').map((x) => (DECIMAL.test(x.trim()) ? Number(x.trim()) : NaN));
  if (v.some((x) => !Number.isInteger(x) || x <= 0)) throw invalidArgument(flagName(flag), 'positive integers separated by commas', s);
  return v;
}

/** The decimal number given to `--<flag>`. */
export function num(flag: string, s: string): number;
export function num(flag: string, s: string | undefined): number | undefined;
export function num(flag: string, s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  const v = DECIMAL.test(s.trim()) ? Number(s) : NaN;
  if (!Number.isFinite(v)) throw invalidArgument(flagName(flag), 'a decimal number', s);
  return v;
}

/** The integer >= min given to `--<flag>` (decimal digits only: '' and `0x10` are refused); undefined when not given. */
export function int(flag: string, s: string, min: number): number;
export function int(flag: string, s: string | undefined, min: number): number | undefined;
export function int(flag: string, s: string | undefined, min: number): number | undefined {
  if (s === undefined) return undefined;
  const v = DECIMAL.test(s.trim()) ? Number(s) : NaN;
  if (!Number.isInteger(v) || v < min) throw invalidArgument(flagName(flag), `an integer >= ${min}`, s);
  return v;
}

/** A positive integer (>= 1: a count, a size, a limit) given to `--<flag>`; 0 is refused. Undefined when not given. */
export function posInt(flag: string, s: string): number;
export function posInt(flag: string, s: string | undefined): number | undefined;
export function posInt(flag: string, s: string | undefined): number | undefined {
  return int(flag, s, 1);
}

/** A non-negative integer (>= 0: a seed, a count where 0 means none) given to `--<flag>`. Undefined when not given. */
export function natInt(flag: string, s: string): number;
export function natInt(flag: string, s: string | undefined): number | undefined;
export function natInt(flag: string, s: string | undefined): number | undefined {
  return int(flag, s, 0);
}

/** One of `values` given to `--<flag>`. */
export function choice<V extends string>(flag: string, values: readonly V[], s: string): V;
export function choice<V extends string>(flag: string, values: readonly V[], s: string | undefined): V | undefined;
export function choice<V extends string>(flag: string, values: readonly V[], s: string | undefined): V | undefined {
  if (s === undefined) return undefined;
  if (!(values as readonly string[]).includes(s)) throw invalidArgument(flagName(flag), `one of ${values.join(', ')}`, s);
  return s as V;
}

/** What a declaration's value is: one of an enum's values, a boolean, or a number. */
export type DeclaredValue<D extends OptionDecl> = D['type'] extends 'enum'
  ? (D['values'] extends readonly (infer V)[] ? V : string)
  : D['type'] extends 'boolean' ? boolean : number;

/**
 * The value given to `--<flag>` for an option declared in a table (lib/science/options.ts): a
 * number, integer or enum checked against that one declaration (its type, range and values),
 * ERR_ARG naming the flag. Undefined when not given.
 */
export function declared<D extends OptionDecl>(flag: string, s: string, d: D): DeclaredValue<D>;
export function declared<D extends OptionDecl>(flag: string, s: string | undefined, d: D): DeclaredValue<D> | undefined;
export function declared(flag: string, s: string | undefined, d: OptionDecl): OptionValue | undefined {
  if (s === undefined) return undefined;
  if (d.type === 'enum' || d.type === 'boolean') return checkValue(flagName(flag), d, s);
  const v = DECIMAL.test(s.trim()) ? Number(s) : NaN;
  return checkValue(flagName(flag), d, Number.isNaN(v) ? s : v);  // not a number: the error shows what was typed
}

// ---------------- options every command shares, declared once ----------------

/** What `--model` takes (parsed by {@link modelArg}). */
const MODEL_HELP = 'a built-in architecture name (small-cnn, lenet, resnet20, …; fresh weights), an inline JSON spec, a spec .json, ' +
  'a FisherLens checkpoint, a torch.export .pt2 (data: runs no code) or a TorchScript .pt (trusted sources only: TorchScript runs code)';
/** What `--device` takes. */
const DEVICE_VALUES = 'cpu | cuda | cuda:N';
/** What `--queue` takes (experiment/queue-jobs.ts, which checks it). */
export { QUEUE_URL } from '../experiment/queue-jobs';

/** The TLS flags of every command that takes `--queue` (declared in experiment/queue-jobs.ts QUEUE_TLS_OPTIONS). */
export interface TlsCliOptions { tlsCa?: string; tlsCert?: string; tlsKey?: string }

/** Adds `--tls-ca`, `--tls-cert`, `--tls-key` (read by {@link queueTarget}). */
export function tlsOptions(cmd: Command): Command {
  for (const o of Object.values(QUEUE_TLS_OPTIONS)) cmd.option(o.flag, o.doc);
  return cmd;
}

/** `--queue URL` and its TLS flags as the queue functions take them. */
export function queueTarget(url: string, o: TlsCliOptions): { url: string; tls?: QueueTls } {
  const tls: QueueTls = { ...(o.tlsCa !== undefined ? { ca: o.tlsCa } : {}), ...(o.tlsCert !== undefined ? { cert: o.tlsCert } : {}), ...(o.tlsKey !== undefined ? { key: o.tlsKey } : {}) };
  return { url, ...(Object.keys(tls).length ? { tls } : {}) };
}

/** Adds `--model <model>` (required). */
export function modelOption(cmd: Command): Command {
  return weightsOptions(cmd.requiredOption('--model <model>', `model: ${MODEL_HELP}`));
}

/** Adds `--weights FILE`, `--weights-entry KEY`, `--weights-partial` (read by {@link modelArg}). */
function weightsOptions(cmd: Command): Command {
  return cmd
    .option('--weights <file>', 'load a PyTorch state dict into --model (a spec or architecture): torch.save .pt/.pth (zip or legacy, nested, module.-prefixed, from any device) or .safetensors; read weights-only, nothing in it runs')
    .option('--weights-entry <key>', "where the state dict sits in the --weights file (e.g. 'ema' or 'model.state_dict'; default: found by looking)")
    .option('--weights-partial', 'load the --weights tensors that fit and warn about the rest (default: any missing, unexpected or mis-shaped key is an error)');
}

/**
 * Adds `--data <spec>` (required) and `--labels <path>`, and with `split` `--split <split>`
 * (default test). `labels` replaces the help of --labels where a command reads them differently.
 */
export function dataOptions(cmd: Command, opts: { split?: boolean; labels?: string } = {}): Command {
  cmd.requiredOption('--data <spec>', `data: ${DATA_SPECS} (docs/data.md)`)
    .option('--labels <path>', opts.labels ?? 'labels .npy (with an .npy --data; default: a sibling y.npy or labels.npy)');
  if (opts.split) cmd.option('--split <split>', SPLITS.join(' | '), 'test');
  return cmd;
}

/** The --split given (one of SPLITS). */
export function splitArg(s: string): Split {
  return choice('split', SPLITS, s);
}

/**
 * Adds `-d, --device <device>`: default cpu, or, for commands that run configs, no default and
 * `fallback` saying what decides instead (the config's device).
 */
export function deviceOption(cmd: Command, fallback?: string): Command {
  return fallback === undefined
    ? cmd.option('-d, --device <device>', DEVICE_VALUES, 'cpu')
    : cmd.option('-d, --device <device>', `${DEVICE_VALUES} (default: ${fallback})`);
}

/**
 * `--no-tensorboard` (lib/science/options.ts TRAIN_OPTIONS.tensorboard, declared once here for
 * train, run, demo and worker): commander then gives `tensorboard: false`, else true.
 */
export function tensorboardOption(cmd: Command): Command {
  return cmd.option('--no-tensorboard', `no TensorBoard event files (by default runs write them: ${TRAIN_OPTIONS.tensorboard.doc}; view them with \`fisherlens tensorboard DIR\`)`);
}

/** Adds `--limit <n>`: only the first n samples. */
export function limitOption(cmd: Command): Command {
  return cmd.option('--limit <n>', 'only the first n samples (default: all)');
}

/** Adds `--json`: exactly one JSON document on stdout (see {@link emit}). */
export function jsonOption(cmd: Command): Command {
  return cmd.option('--json', 'print one JSON document on stdout (logs and progress stay on stderr)');
}

/** The `--weights` options of every command that takes `--model` (declared once, here). */
export interface WeightsCliOptions {
  weights?: string;
  weightsEntry?: string;
  weightsPartial?: boolean;
}

/**
 * `--model` of every subcommand: a file (spec .json, FisherLens checkpoint, torch.export .pt2, TorchScript .pt),
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
      throw invalidArgument('--model', `an inline spec in valid JSON (${(e as Error).message})`, s);
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
  throw new FisherLensError('ERR_IO', `--model '${s}': no such file (expected a spec .json, a checkpoint, a torch.export .pt2, a TorchScript .pt or an architecture name)`);
}

/**
 * Exit codes of `fisherlens run` and `fisherlens demo` (scripts can rely on them):
 * 0 every run finished; 1 an error before or outside runs (config, I/O, addon); 2 usage error;
 * 3 some runs failed (the others finished; see <run>/error.json); 130 interrupted (SIGINT/SIGTERM:
 * finished runs are kept, the current one resumes from its checkpoint on the next call).
 */
export const EXIT = { ok: 0, error: 1, usage: 2, runsFailed: 3, interrupted: 130, terminated: 143 } as const;

/**
 * SIGTERM/SIGINT for preemptible work (train, run): the first signal aborts `stop`, asking for a
 * checkpoint at the next batch boundary; if the work has not ended `graceSec` seconds later the
 * process exits with what its last checkpoint holds; a second signal exits at once. The exit code
 * is 143 after SIGTERM (Slurm, Kubernetes, spot instances), 130 after SIGINT. With `sigint`, a
 * first SIGINT (Ctrl-C) instead aborts that controller (stop after the current step, the way
 * interactive commands stop; works with executors that know no batch boundaries).
 */
export function preemptController(graceSec: number, what: string, sigint?: { what: string; controller: AbortController }): { stop: AbortController; graceSec: number; exitCode(): number | undefined; dispose(): void } {
  const stop = new AbortController();
  let code: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    if (code !== undefined) {
      log(`fisherlens: ${sig} again, exiting now`);
      process.exit(code);
    }
    code = sig === 'SIGTERM' ? EXIT.terminated : EXIT.interrupted;
    if (sig === 'SIGINT' && sigint) {
      log(`\nfisherlens: ${sig}: ${sigint.what}`);
      sigint.controller.abort();
    } else {
      log(`\nfisherlens: ${sig}: ${what} (within ${graceSec} s; again: exit at once)`);
      stop.abort();
    }
    timer = setTimeout(() => {
      log(`fisherlens: the ${graceSec} s grace is over: exiting with the last checkpoint`);
      process.exit(code);
    }, graceSec * 1000);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    stop, graceSec, exitCode: () => code,
    dispose: () => { clearTimeout(timer); process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); },
  };
}

/** --grace SECONDS: a number ≥ 0. */
export function graceArg(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw invalidArgument('--grace', 'seconds ≥ 0', v);
  return n;
}

/**
 * The one SIGINT/SIGTERM handling of the CLI: the k-th signal aborts `stages[k]`'s signal and logs
 * its message (what happens now); one signal more than there are stages exits at once with
 * EXIT.interrupted. dispose() removes the handlers.
 */
export function interruptStages(stages: string[]): { signals: AbortSignal[]; dispose(): void } {
  const controllers = stages.map(() => new AbortController());
  let received = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    const k = received++;
    if (k >= stages.length) {
      log(`fisherlens: ${sig} again, exiting now`);
      process.exit(EXIT.interrupted);
    }
    log(k === 0 ? `\nfisherlens: ${sig}: ${stages[k]}` : `fisherlens: ${sig} again: ${stages[k]}`);
    controllers[k].abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signals: controllers.map((c) => c.signal),
    dispose: () => { process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); },
  };
}

/** An AbortController tied to SIGINT/SIGTERM ({@link interruptStages} with one stage): the first signal aborts gracefully, a second exits now. */
export function interruptController(what = 'stopping after the current step; finished runs are kept and the current run resumes from its checkpoint when you run the same command again'): { controller: AbortController; dispose(): void } {
  const controller = new AbortController();
  const s = interruptStages([what]);
  s.signals[0].addEventListener('abort', () => controller.abort(), { once: true });
  return { controller, dispose: s.dispose };
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
    throw invalidArgument('FISHERLENS_EXECUTOR', 'a module that exports `executor` with an execute(ctx) method', file);
  }
  return mod.executor;
}
