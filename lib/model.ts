/**
 * Models: built-in architectures from a typed spec, and TorchScript models exported from
 * PyTorch. Every algorithm in FisherLens takes a {@link Model}. Inputs are pixels in [0, 1],
 * [B, C, H, W]; normalisation (mean/std per channel) is the model's first layer.
 */
import { addon, NativeModel } from './native';
import { FisherLensError, sync } from './errors';
import { runOp, OpOptions } from './op';
import { Tensor, Device } from './tensor';
import { checkDevice } from './backend';

/** Activation of the built-in architectures ('identity' gives the paper's "linear" VGG variants). */
export type Activation = 'relu' | 'identity' | 'tanh' | 'softplus' | 'gelu';

/** Typed spec of a built-in architecture. */
export interface ModelSpec {
  /** Architecture name: mlp | small-cnn | mnist-net | lenet | vgg11 | vgg13 | vgg16 |
   * resnet20 | resnet32 | resnet44 | resnet56 | wrn-34-10 | preact-resnet18. */
  arch: string;
  /** Input channels (default 1). */
  inChannels?: number;
  /** Input height = width in pixels (default 28). */
  inputSize?: number;
  /** Number of classes K (default 10). */
  numClasses?: number;
  /** Width multiplier (resnets; default 1). */
  width?: number;
  /** Activation (default relu). */
  activation?: Activation;
  /** Pooling of VGG variants (default max). */
  pool?: 'max' | 'avg';
  /** Hidden layer sizes of mlp (default [256, 256]). */
  hidden?: number[];
  /** Per-channel normalisation applied first: (x − mean) / std (default none). */
  mean?: number[];
  std?: number[];
}

export class Model {
  /** @internal */
  readonly native: NativeModel;

  /** @internal */
  constructor(native: NativeModel) {
    this.native = native;
  }

  /** Builds a built-in architecture with fresh (seeded by the global generator) weights. */
  static create(spec: ModelSpec, opts: { device?: Device } = {}): Model {
    if (!spec || typeof spec.arch !== 'string') throw new FisherLensError('ERR_ARG', 'Model.create(spec): spec.arch (a string) is required');
    const device = checkDevice(opts.device ?? 'cpu');
    return new Model(sync(() => addon().createModel(JSON.stringify(spec), device)));
  }

  /**
   * Loads a TorchScript model saved by `torch.jit.save` in PyTorch. Its forward must map
   * [B, C, H, W] pixels in [0, 1] to logits [B, K]. TorchScript archives run code: load only
   * archives from trusted sources.
   */
  static async load(path: string, opts: { device?: Device } & OpOptions = {}): Promise<Model> {
    const device = checkDevice(opts.device ?? 'cpu');
    return new Model(await runOp(opts, (ctl) => addon().loadTorchScript(path, device, ctl)));
  }

  /** Logits [B, K] of x [B, C, H, W] (eval mode is the caller's choice; no gradients). */
  async forward(x: Tensor, opts?: OpOptions): Promise<Tensor> {
    return new Tensor(await runOp(opts, (ctl) => this.native.forward(x.native, ctl)));
  }

  /** Switches BatchNorm/dropout to training (true) or evaluation (false) behaviour. */
  setTraining(on: boolean): void { sync(() => this.native.setTraining(on)); }
  get training(): boolean { return sync(() => this.native.training); }
  /** 'builtin' or 'torchscript'. */
  get kind(): 'builtin' | 'torchscript' { return sync(() => this.native.kind); }
  /** The spec (built-ins) or { arch: 'torchscript', path }. */
  get spec(): ModelSpec & { path?: string } { return JSON.parse(sync(() => this.native.spec)) as ModelSpec; }
  get device(): Device { return sync(() => this.native.device); }
  /** Number of scalar parameters. */
  get parameterCount(): number { return sync(() => this.native.parameterCount); }
  /** Moves parameters and buffers to a device. */
  async to(device: Device, opts?: OpOptions): Promise<void> {
    checkDevice(device);
    await runOp(opts, (ctl) => this.native.to(device, ctl));
  }
  dispose(): void { this.native.dispose(); }
  [Symbol.dispose](): void { this.dispose(); }
}
