/**
 * Models: built-in architectures from a typed spec, torch.export programs (.pt2) and TorchScript models exported from
 * PyTorch. Every algorithm in FisherLens takes a {@link Model}. Inputs are pixels in [0, 1],
 * [B, C, H, W]; normalisation (mean/std per channel) is the model's first layer.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { addon, NativeGradientChoice, NativeModel } from '../binding/native';
import { FisherLensError, invalidArgument, sync } from '../util/errors';
import { runOp, OpOptions } from '../binding/op';
import { Tensor, Device, tensorArg } from '../binding/tensor';
import { checkDevice } from '../binding/backend';
import { packageRoot } from '../util/version';
import { AtomicFile } from '../util/files';
import { firstBatches, type Dataset } from './data/dataset';
import { sniffFile } from './weights/read';
import { readExported } from './exported';
import { looksLikeLegacy } from './weights/torch-file';
import { LoadWeightsOptions, LoadWeightsResult, exportWeightsFrom, loadWeightsInto } from './weights/apply';
import { TargetEntry } from './weights/keymap';
import { OutFormat } from './weights/write';


/** JSON-compatible value stored as a checkpoint's free-form metadata (epoch, history, ...). */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };

/** First bytes of a FisherLens checkpoint file (see docs/models.md for the format). */
export const CHECKPOINT_MAGIC = 'FLCKPT';

/**
 * What a file holds, judged by its first bytes: 'checkpoint' | 'torchscript' (any zip: a zip-format
 * state dict looks the same until its entries are read, which Model.from does) | 'state-dict' (a
 * legacy-format torch.save file or safetensors: weights without an architecture) | 'spec'.
 */
export function detectModelFile(file: string): 'checkpoint' | 'torchscript' | 'state-dict' | 'spec' {
  let head: Buffer;
  let size: number;
  try {
    const fd = fs.openSync(file, 'r');
    head = Buffer.alloc(16);
    const n = fs.readSync(fd, head, 0, 16, 0);
    size = fs.fstatSync(fd).size;
    head = head.subarray(0, n);
    fs.closeSync(fd);
  } catch (e) {
    throw new FisherLensError('ERR_IO', `cannot read model file '${file}': ${(e as Error).message}`);
  }
  if (head.subarray(0, 6).toString('latin1') === CHECKPOINT_MAGIC) return 'checkpoint';
  if (head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) return 'torchscript';
  if (looksLikeLegacy(head)) return 'state-dict';
  // safetensors: a little-endian header length that fits the file, then '{' (JSON text's first
  // 8 bytes read as such a length are > 2^56: no spec file passes)
  if (head.length >= 9 && head[8] === 0x7b && head.readBigUInt64LE(0) <= BigInt(size - 8)) return 'state-dict';
  const first = head.toString('latin1').trimStart()[0];
  if (first === '{') return 'spec';
  throw new FisherLensError('ERR_FORMAT', `'${file}' is neither a FisherLens checkpoint, a TorchScript archive (zip), a state dict (torch.save, safetensors) nor a JSON model spec`);
}

/** The error for a state dict given where a model is expected. */
function stateDictGiven(file: string): FisherLensError {
  return new FisherLensError('ERR_FORMAT', `'${file}' is a state dict (weights without an architecture): ` +
    `use --model SPEC --weights ${file} (API: Model.create(spec).loadWeights(file)); \`fisherlens info --model ${file}\` says which architecture it fits`);
}

/** Result of {@link evaluate}. */
export interface EvaluationResult {
  /** Fraction of samples whose arg-max logit is the label. */
  accuracy: number;
  /** Mean cross-entropy −log p_y(x) in nats. */
  crossEntropy: number;
  /** Samples evaluated. */
  count: number;
}

/**
 * Accuracy and mean cross-entropy (nats) of `model` on `dataset`, streaming batches natively in
 * eval mode without gradients (the model's mode is restored afterwards).
 */
export async function evaluate(model: Model, dataset: Dataset, opts: { batchSize?: number; limit?: number } & OpOptions = {}): Promise<EvaluationResult> {
  const handle = modelHandle(model);
  let correct = 0, ce = 0, count = 0;
  const total = Math.min(dataset.size, opts.limit ?? dataset.size);
  for await (const b of firstBatches(dataset, { limit: opts.limit, batchSize: opts.batchSize ?? 256, signal: opts.signal })) {
    const r = await runOp({ signal: opts.signal }, (ctl) => addon().evaluateBatch(handle, b.x.native, b.y.native, ctl));
    correct += r.correct;
    ce += r.ceSum;
    count += r.count;
    opts.onProgress?.({ type: 'batch', done: count, total });
  }
  if (count === 0) throw invalidArgument('evaluate(model, dataset)', 'at least one sample', total);
  return { accuracy: correct / count, crossEntropy: ce / count, count };
}

/** Python with torch 1.13+ for the TorchScript export ($FISHERLENS_PYTHON, python3, /usr/bin/python3). */
function pythonCandidates(): string[] {
  const c = [process.env.FISHERLENS_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => Boolean(p));
  return [...new Set(c)];
}

/** scripts/ of the package (util/version.ts finds its root). */
function scriptsDir(): string {
  const dir = path.join(packageRoot(), 'scripts');
  if (fs.existsSync(path.join(dir, 'reference', 'export_torchscript.py'))) return dir;
  throw new FisherLensError('ERR_IO', 'scripts/reference/export_torchscript.py not found next to the package');
}

/** Activation of the built-in architectures ('identity' gives the paper's "linear" VGG variants). */
export type Activation = 'relu' | 'identity' | 'tanh' | 'softplus' | 'gelu';

/** Typed spec of a built-in architecture. */
export interface ModelSpec {
  /** Architecture name: mlp | small-cnn | mnist-net | lenet | vgg11 | vgg13 | vgg16 |
   * resnet20 | resnet32 | resnet44 | resnet56 | wrn-34-10 (any wrn-<6n+4>-<k>) | preact-resnet18
   * (docs/models.md lists each with its parameter count). */
  arch: string;
  /** Input channels (default 1). */
  inChannels?: number;
  /** Input height = width in pixels (default 28). */
  inputSize?: number;
  /** Number of classes K (default 10). */
  numClasses?: number;
  /** Channel width multiplier (resnet20-56, preact-resnet18; default 1): the paper's resnet32×10 is width 10. */
  width?: number;
  /** Activation (default relu). */
  activation?: Activation;
  /** Pooling of vgg* and lenet (default max); identity + avg = the paper's "pure linear" VGG13. */
  pool?: 'max' | 'avg';
  /** Hidden layer sizes of mlp (default [256, 256]). */
  hidden?: number[];
  /** Per-channel normalisation applied first: (x − mean) / std (default none). */
  mean?: number[];
  std?: number[];
}

/** Reads a Model's native handle (set by the class's static block; see {@link modelHandle}). */
let handleOf: (m: Model) => NativeModel;

/**
 * The native handle of `model`, for the other lib/ modules that pass it to the addon (attacks,
 * training, Fisher, the tuning store). Not exported from the package: the handle is no member of
 * {@link Model} (a private field), so the public type does not show it. ERR_ARG when `model` is
 * not a Model (`what` names the argument).
 */
export function modelHandle(model: Model, what = 'model'): NativeModel {
  if (!(model instanceof Model)) throw invalidArgument(what, 'a Model (Model.create, Model.from, Model.load)', model);
  return handleOf(model);
}

export class Model {
  readonly #native: NativeModel;

  static {
    handleOf = (m) => m.#native;
  }

  /** @internal */
  constructor(native: NativeModel) {
    this.#native = native;
  }

  /** Builds a built-in architecture with fresh (seeded by the global generator) weights. */
  static create(spec: ModelSpec, opts: { device?: Device } = {}): Model {
    if (!spec || typeof spec.arch !== 'string') throw invalidArgument('Model.create(spec): spec.arch', 'an architecture name (a string; docs/models.md)', spec?.arch);
    const device = checkDevice(opts.device ?? 'cpu');
    return new Model(sync(() => addon().createModel(JSON.stringify(spec), device)));
  }

  /**
   * Loads a TorchScript model saved by `torch.jit.save` in PyTorch. Its forward must map
   * [B, C, H, W] pixels in [0, 1] to logits [B, K]. TorchScript archives run code: load only
   * archives from trusted sources. An archive may record its input shape, as
   * {@link exportTorchScript} does: `torch.jit.save(m, f, _extra_files={'fisherlens.json':
   * '{"inputShape": [C, H, W]}'})`; a forward on another shape is then ERR_SHAPE naming both (else
   * the shape of the first successful forward is the one named).
   */
  static async load(file: string, opts: { device?: Device } & OpOptions = {}): Promise<Model> {
    const device = checkDevice(opts.device ?? 'cpu');
    if (await sniffFile(file) === 'pt2') return Model.loadExported(file, opts);
    // absolute: a checkpoint of this model records where to reload the archive from
    return new Model(await runOp(opts, (ctl) => addon().loadTorchScript(path.resolve(file), device, ctl)));
  }

  /**
   * Loads a program exported by torch.export (`torch.export.save(torch.export.export(model, (x,),
   * dynamic_shapes=...), 'model.pt2')`): its graph runs op by op through LibTorch with autograd,
   * so gradients and training work, and its parameters and buffers are the model's (checkpoints,
   * exportWeights). The archive is data: only pure ATen ops run (ERR_FORMAT names any other op,
   * pickled weights, another archive_version, or an op this LibTorch lacks). A program exported
   * with a fixed batch runs any batch in eval mode (chunks of its size, the last one padded).
   */
  static async loadExported(file: string, opts: { device?: Device } & OpOptions = {}): Promise<Model> {
    const device = checkDevice(opts.device ?? 'cpu');
    const a = await readExported(path.resolve(file));
    const m = new Model(sync(() => addon().createExported(JSON.stringify(a.spec), 'cpu')));
    try {
      await runOp(opts, (ctl) => addon().loadWeights(m.#native, a.spec.path, JSON.stringify(a.sources), ctl));
      if (device !== 'cpu') await m.to(device, opts);
    } catch (e) {
      m.dispose();
      throw e;
    }
    return m;
  }

  /**
   * A model from a spec object, a spec .json file, a FisherLens checkpoint or a TorchScript .pt
   * (told apart by content, not extension). TorchScript archives run code: trusted sources only.
   */
  static async from(specOrPath: ModelSpec | string, opts: { device?: Device } & OpOptions = {}): Promise<Model> {
    if (typeof specOrPath !== 'string') return Model.create(specOrPath, opts);
    if (!fs.existsSync(specOrPath)) throw new FisherLensError('ERR_IO', `model file '${specOrPath}' does not exist`);
    const kind = detectModelFile(specOrPath);
    if (kind === 'checkpoint') return Model.loadCheckpoint(specOrPath, opts);
    if (kind === 'state-dict') throw stateDictGiven(specOrPath);
    if (kind === 'torchscript') {
      const zipKind = await sniffFile(specOrPath);
      if (zipKind === 'torch-zip') throw stateDictGiven(specOrPath);
      if (zipKind === 'pt2') return Model.loadExported(specOrPath, opts);
      return Model.load(specOrPath, opts);
    }
    let spec: ModelSpec & { path?: string };
    try {
      spec = JSON.parse(fs.readFileSync(specOrPath, 'utf8')) as ModelSpec & { path?: string };
    } catch (e) {
      throw new FisherLensError('ERR_FORMAT', `'${specOrPath}' is not valid JSON: ${(e as Error).message}`);
    }
    if ((spec.arch === 'torchscript' || spec.arch === 'exported') && typeof spec.path === 'string') {
      return Model.load(path.resolve(path.dirname(specOrPath), spec.path), opts);
    }
    return Model.create(spec, opts);
  }

  /**
   * Loads a checkpoint written by {@link save}: builds the model from its spec (TorchScript
   * checkpoints reload their archive from the recorded path), then loads the weights. A
   * truncated, corrupted or mismatched file rejects with ERR_FORMAT. `restoreRng` also restores
   * the CPU random generator saved with it (to resume training exactly). The checkpoint's meta
   * is on {@link checkpointMeta}.
   */
  static async loadCheckpoint(file: string, opts: { device?: Device; restoreRng?: boolean } & OpOptions = {}): Promise<Model> {
    const device = checkDevice(opts.device ?? 'cpu');
    const r = await runOp(opts, (ctl) => addon().loadCheckpoint(path.resolve(file), device, opts.restoreRng ?? false, ctl));
    const m = new Model(r.model);
    m.checkpoint = { meta: JSON.parse(r.meta) as JsonValue, hasOptimizer: r.hasOptimizer, version: r.version, path: file };
    return m;
  }

  /** Set when this model came from {@link loadCheckpoint}: its meta, whether it holds optimizer state, format version. */
  checkpoint?: { meta: JsonValue; hasOptimizer: boolean; version: number; path: string };
  /** The meta JSON of the checkpoint this model was loaded from (undefined otherwise). */
  get checkpointMeta(): JsonValue | undefined { return this.checkpoint?.meta; }

  /**
   * Saves weights (parameters and buffers), the spec, `meta` and the CPU generator state to one
   * versioned file, atomically (a temporary file renamed into place). Optimizer state is written
   * by the training code (native saveCheckpoint with an optimizer writer).
   */
  async save(file: string, opts: { meta?: JsonValue } & OpOptions = {}): Promise<void> {
    const meta = JSON.stringify(opts.meta ?? {});
    await runOp(opts, (ctl) => addon().saveCheckpoint(this.#native, path.resolve(file), meta, ctl));
  }

  /**
   * Replaces this model's weights by a checkpoint's; every name and shape is checked first, so a
   * mismatched checkpoint (ERR_FORMAT) leaves the model unchanged.
   */
  async loadState(file: string, opts: OpOptions = {}): Promise<void> {
    await runOp(opts, (ctl) => addon().loadCheckpointState(this.#native, path.resolve(file), ctl));
  }

  /**
   * Exports a built-in model to a TorchScript file PyTorch loads with torch.jit.load: writes the
   * weights (exportState), then scripts/reference/export_torchscript.py (Python with torch:
   * $FISHERLENS_PYTHON, python3 or /usr/bin/python3) rebuilds the architecture from the spec,
   * loads them, scripts it, checks its logits against the exported ones and saves it.
   */
  async exportTorchScript(file: string, opts: OpOptions = {}): Promise<void> {
    if (this.kind === 'torchscript') {
      await runOp(opts, (ctl) => this.#native.exportState(path.resolve(file), ctl));
      return;
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fisherlens-export-'));
    try {
      const state = path.join(dir, 'state.pt');
      await runOp(opts, (ctl) => this.#native.exportState(state, ctl));
      // reference logits for the check in Python: a fixed probe batch in [0, 1]
      const spec = this.spec;
      const c = spec.inChannels ?? 1, s = spec.inputSize ?? 28;
      const probe = Float32Array.from({ length: 2 * c * s * s }, (_, i) => ((i * 7919) % 1000) / 1000);
      const x = Tensor.from(probe, [2, c, s, s]);
      let logits: Float32Array;
      const wasTraining = this.training;
      try {
        await this.setTraining(false);
        const z = await this.forward(x);
        try { logits = z.toArray() as Float32Array; } finally { z.dispose(); }
      } finally {
        x.dispose();
        await this.setTraining(wasTraining);
      }
      fs.writeFileSync(path.join(dir, 'probe.json'), JSON.stringify({ shape: [2, c, s, s], x: Array.from(probe), logits: Array.from(logits) }));
      fs.writeFileSync(path.join(dir, 'spec.json'), JSON.stringify(spec));
      const script = path.join(scriptsDir(), 'reference', 'export_torchscript.py');
      // Python writes the archive through the path of the atomic file's temporary sibling
      const out = new AtomicFile(path.resolve(file));
      out.close();
      const tried: string[] = [];
      try {
        for (const py of pythonCandidates()) {
          const r = spawnSync(py, [script, '--spec', path.join(dir, 'spec.json'), '--state', state, '--probe', path.join(dir, 'probe.json'), '--out', out.tmp], { encoding: 'utf8' });
          if (r.status === 0) {
            out.commit();
            return;
          }
          tried.push(`${py}: ${r.error ? r.error.message : (r.stderr || '').trim().split('\n').slice(-1)[0]}`);
          if (r.status !== 3 && !r.error) break;  // 3: torch missing in that interpreter, try the next
        }
      } finally {
        out.abort();  // nothing once committed
      }
      throw new FisherLensError('ERR_IO', `exportTorchScript: the Python export failed. Tried:\n  ${tried.join('\n  ')}\n` +
        'Set FISHERLENS_PYTHON to a Python with torch >= 1.13.');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  /**
   * Loads a PyTorch state dict into this model: a torch.save file (zip or legacy format, plain,
   * nested as {state_dict} / {model}, DataParallel's module.* names, saved from any device) or
   * safetensors, told apart by content and read weights-only (nothing in the file runs: a pickle
   * naming any global outside the tensor-rebuilding allowlist is ERR_FORMAT). Keys map by name,
   * through the published layouts (TRADES' SmallCNN and WideResNet; docs/models.md); other float
   * dtypes are cast to the model's, each cast named through `onWarning`. Missing, unexpected or
   * mis-shaped keys are one ERR_FORMAT listing them (the model unchanged) unless `strict: false`.
   */
  async loadWeights(file: string, opts: LoadWeightsOptions & OpOptions = {}): Promise<LoadWeightsResult> {
    const spec = this.spec;
    return loadWeightsInto({
      arch: this.kind === 'builtin' ? spec.arch : 'torchscript',
      stateInfo: async () => (await runOp(opts, (ctl) => addon().stateInfo(this.#native, ctl))) as TargetEntry[],
      load: (p, sources) => runOp(opts, (ctl) => addon().loadWeights(this.#native, path.resolve(p), JSON.stringify(sources), ctl)),
    }, file, opts);
  }

  /**
   * Writes this model's parameters and buffers, with the built-ins' PyTorch names, as safetensors
   * ('.safetensors', or format 'safetensors') or as a zip-format .pt that
   * `torch.load(f, weights_only=True)` reads and `load_state_dict` takes (scripts/reference/models.py
   * builds the same architectures). Atomic: a temporary file renamed into place.
   */
  async exportWeights(file: string, opts: { format?: OutFormat } & OpOptions = {}): Promise<void> {
    const state = await this.state(opts);
    try {
      await exportWeightsFrom(state, file, opts.format);
    } finally {
      for (const t of state.values()) t.dispose();
    }
  }

  /** Copies of the named parameters and buffers (PyTorch state_dict names), on the model's device. */
  async state(opts?: OpOptions): Promise<Map<string, Tensor>> {
    const r = await runOp(opts, (ctl) => this.#native.state(ctl));
    return new Map(Object.entries(r).map(([k, v]) => [k, new Tensor(v)]));
  }

  /** Logits [B, K] [B, C, H, W] (eval mode is the caller's choice; no gradients). */
  async forward(x: Tensor, opts?: OpOptions): Promise<Tensor> {
    const xt = tensorArg(x, 'forward(x)');
    return new Tensor(await runOp(opts, (ctl) => this.#native.forward(xt.native, ctl)));
  }

  /**
   * Switches BatchNorm/dropout to training (true) or evaluation (false) behaviour. An op on the
   * compute thread like any other: it waits for the ops started before it, every op started
   * after it sees the new mode, and {@link training} says the new mode at once.
   */
  async setTraining(on: boolean, opts?: OpOptions): Promise<void> {
    if (typeof on !== 'boolean') throw invalidArgument('setTraining(on)', 'a boolean', on);
    await runOp(opts, (ctl) => this.#native.setTraining(on, ctl));
  }
  /** The mode set last by {@link setTraining} (read without waiting for running ops). */
  get training(): boolean { return sync(() => this.#native.training); }
  /** 'builtin', 'torchscript' or 'exported' (a torch.export .pt2 program). */
  get kind(): 'builtin' | 'torchscript' | 'exported' { return sync(() => this.#native.kind); }
  /** The spec (built-ins), { arch: 'torchscript', path } or { arch: 'exported', path, torchVersion }. */
  get spec(): ModelSpec & { path?: string } {
    const s = JSON.parse(sync(() => this.#native.spec)) as ModelSpec & { path?: string; torchVersion?: string };
    // an exported program's spec carries its whole graph (for checkpoints); users see where it came from
    return s.arch === 'exported' ? { arch: 'exported', path: s.path, torchVersion: s.torchVersion } as ModelSpec & { path?: string } : s;
  }
  get device(): Device { return sync(() => this.#native.device); }
  /** Number of scalar parameters. */
  get parameterCount(): number { return sync(() => this.#native.parameterCount); }
  /**
   * What the 'auto' gradient engine (lib/binding/backend.ts setGradientEngine) chose for attacks and
   * inner maximisation on this model's architecture (every model with this spec shares it), per
   * input batch shape: 'linear' (the linearisation) or 'autograd', with the best measured ms of
   * one gradient on each (linearMs NaN: no linearisation at that input), and `key` (the shape,
   * then dtype and device codes). Empty until an ascent on this architecture has measured, or
   * an op read a choice stored on this machine (lib/science/tuning-store.ts).
   */
  get gradientChoices(): (NativeGradientChoice & { shape: number[] })[] {
    return sync(() => this.#native.gradientChoices).map((c) => ({ shape: c.key.slice(0, -2), ...c }));
  }
  /** Moves parameters and buffers to a device. */
  async to(device: Device, opts?: OpOptions): Promise<void> {
    checkDevice(device);
    await runOp(opts, (ctl) => this.#native.to(device, ctl));
  }
  dispose(): void { this.#native.dispose(); }
  [Symbol.dispose](): void { this.dispose(); }
}
