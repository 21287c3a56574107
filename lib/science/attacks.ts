/**
 * Adversarial attacks (native attacks.cc; docs/attacks.md); robust evaluation over a dataset is
 * lib/science/robust.ts. Every attack
 * runs one batch natively, in eval mode without weight gradients, keeps x_adv inside the ε-ball
 * around x and the [0, 1] box, and leaves the model exactly as it found it (mode, requires-grad
 * flags, no .grad). ε and step sizes are in pixel units (inputs in [0, 1]).
 */
import { addon } from '../binding/native';
import { runOp, OpOptions } from '../binding/op';
import { Model, modelHandle } from './model';
import { Tensor } from '../binding/tensor';

export { NpyWriter } from './data';
import { invalidArgument } from '../util/errors';
import { ATTACK_TABLE, AttackKind, AttackNorm, AttackSpec, parseAttackOptions } from './options';
import { withGradientChoices } from './tuning-store';

/**
 * The attack kinds and what each supports are declared once, in lib/science/options.ts (ATTACK_TABLE,
 * ATTACK_OPTIONS): fgsm | pgd (cross-entropy) | cw (PGD on the CW margin loss, "CW∞") | cw-l2 | kl |
 * fisher (OSSA) | apgd-ce | apgd-dlr | apgd-t (APGD, Croce & Hein 2020) | fab-t | fab (FAB,
 * minimal-norm; fab-t tries the top `targets` classes in turn, an untargeted attack) | square
 * (score-based random search, no gradients; `steps` = queries per sample).
 */
export { ATTACK_KINDS } from './options';
export type { AttackKind, AttackNorm, AttackSpec } from './options';

/** The attack capability table (lib/science/options.ts; loads nothing native). */
export function attackKinds(): AttackSpec[] {
  return ATTACK_TABLE.map((a) => ({ ...a, norms: [...a.norms] }));
}

/** Parameters of one attack; defaults in brackets (lib/science/options.ts ATTACK_OPTIONS and ATTACK_TABLE declare them; that declaration is what runs). */
export interface AttackParams {
  /** Which attack ['pgd']. */
  kind?: AttackKind;
  /** Threat model ['linf'; 'l2' for cw-l2]. */
  norm?: AttackNorm;
  /** Radius of the ball in pixel units [0.031; cw-l2: unbounded]. */
  epsilon?: number;
  /** Step size α [0.003]: α·sign(g) (L∞) or α·g/‖g‖ (L2). fgsm steps by ε; APGD adapts its own from 2ε (ERR_ARG). */
  stepSize?: number;
  /**
   * Iterations [20; apgd-*, fab, fab-t: 100; square: 5000 queries per sample; cw-l2: 100 Adam steps per
   * binary-search step; fisher: 1 = one-step OSSA with α = ε].
   */
  steps?: number;
  /** Uniform random start in the ball (pgd, cw) [true]. */
  randomStart?: boolean;
  /**
   * Restarts (with random start), keeping the worst case per sample [1]. fab, fab-t: runs per target,
   * all but the first from a random point at distance ε/2; a sample stops at its first success within ε.
   * square: fresh searches (new start, `queries` each) on the samples the earlier runs left robust.
   */
  restarts?: number;
  /** Targeted attack towards `target` (fgsm, pgd, cw, cw-l2, fisher) [false]; ERR_ARG for the others. */
  targeted?: boolean;
  /** Target labels int64 [B] for targeted attacks. */
  target?: Tensor;
  /** κ of the CW margin loss −relu(z_y − max_{j≠y} z_j + κ) [50]. */
  kappa?: number;
  /** cw-l2: binary search steps on c [9]. */
  binarySteps?: number;
  /** cw-l2: Adam learning rate [0.01]. */
  learningRate?: number;
  /** cw-l2: initial c [1e-3]. */
  initialConst?: number;
  /** cw-l2: confidence κ [0]. */
  confidence?: number;
  /** apgd-t / fab-t: how many target classes to try, the highest-scoring after the label first [9; at most K − 1]. */
  targets?: number;
  /** apgd: input gradients averaged per step over this many forwards (EOT, for randomised models) [1]. */
  eotIter?: number;
  /** apgd: the start point [B, ...] (projected onto the ball and the box) instead of a random one. */
  init?: Tensor;
  /** fab, fab-t: largest weight α of the original point's projection in a step, in [0, 1] [0.1]. */
  alphaMax?: number;
  /** fab, fab-t: extrapolation η ≥ 1 of the projection steps (overshoot past the linearised boundary) [1.05]. */
  eta?: number;
  /** fab, fab-t: backward step β ∈ (0, 1) towards x after a misclassified point [0.9]. */
  beta?: number;
  /** square: initial fraction p ∈ (0, 1] of the image a square covers, halved on the published schedule [0.8]. */
  pInit?: number;
  /** Seed of the attack's generator (random start, KL start noise, square's search) [0]. */
  seed?: number;
  /**
   * Run convolutions in channels-last memory format (4-D weights converted for the op and
   * restored after) [false]: faster convolutions on CPU; results may differ in the last bits.
   */
  channelsLast?: boolean;
}

/** Result of one attack on one batch. */
export interface AttackResult {
  /** Adversarial examples, shaped like x, on the model's device. */
  xAdv: Tensor;
  /**
   * The attack's objective per sample at x_adv [B] (kl: KL(p(x) ‖ p(x_adv)) in nats; pgd/fgsm/fisher/fab/fab-t:
   * CE; cw: −relu(margin + κ); square: the margin z_y − max_{j≠y} z_j in logits, negative where it succeeded).
   */
  loss: Float64Array;
  /** 1 where the attack succeeded (misclassified; targeted: classified as the target), else 0 [B] (per-sample flags are Uint8Array 0/1 in every result). */
  success: Uint8Array;
  /** ‖x_adv − x‖ per sample in the attack's norm [B]. */
  norm: Float64Array;
  /** 1 where the clean input is classified correctly (eval mode), else 0 [B]. */
  cleanCorrect: Uint8Array;
  /** square: model queries spent per sample over all restarts [B] (0 where the clean input is already misclassified). */
  queries?: Float64Array;
}

/** Published evaluation settings (TRADES' and Madry et al.'s scripts). */
export const attackPresets = {
  /** TRADES CIFAR-10 evaluation: PGD-20, ε 0.031, step 0.003, uniform random start. */
  'pgd20-cifar10': { kind: 'pgd', norm: 'linf', epsilon: 0.031, stepSize: 0.003, steps: 20, randomStart: true },
  /** TRADES CIFAR-10 CW∞: PGD-20 on the CW margin loss (κ 50). */
  'cw20-cifar10': { kind: 'cw', norm: 'linf', epsilon: 0.031, stepSize: 0.003, steps: 20, randomStart: true, kappa: 50 },
  /** TRADES MNIST evaluation: PGD-40, ε 0.3, step 0.01, random start. */
  'pgd40-mnist': { kind: 'pgd', norm: 'linf', epsilon: 0.3, stepSize: 0.01, steps: 40, randomStart: true },
  /** FGSM at CIFAR-10's ε. */
  'fgsm-cifar10': { kind: 'fgsm', norm: 'linf', epsilon: 0.031 },
  /** CPU-scale Fashion-MNIST evaluation: PGD-20, ε 0.1, step 0.01. */
  'pgd20-fashion-mnist': { kind: 'pgd', norm: 'linf', epsilon: 0.1, stepSize: 0.01, steps: 20, randomStart: true },
} as const satisfies Record<string, AttackParams>;
export type AttackPresetName = keyof typeof attackPresets;

/**
 * The complete options object the addon reads (lib/science/options.ts parseAttackOptions: validated,
 * every default filled in; tensors as native handles).
 */
export function nativeOptions(p: AttackParams): Record<string, unknown> {
  const o: Record<string, unknown> = parseAttackOptions(p);
  if (p.init) o.init = p.init.native;
  if (p.targeted) {
    if (!p.target) throw invalidArgument("attack option 'target'", 'int64 labels [B] (a targeted attack moves towards them)', p.target);
    o.target = p.target.native;
  }
  return o;
}

/**
 * Runs one attack on the batch x [B, C, H, W] (pixels in [0, 1]) with labels y [B] (int64);
 * all steps run in one native op (abortable between steps; progress events `{step, steps}`).
 */
export async function attack(model: Model, x: Tensor, y: Tensor, opts: AttackParams & OpOptions = {}): Promise<AttackResult> {
  const { signal, onProgress, ...params } = opts;
  const o = nativeOptions(params);
  const r = await withGradientChoices(model, () => runOp({ signal, onProgress }, (ctl) => addon().attack(modelHandle(model), x.native, y.native, o, ctl)));
  const out: AttackResult = { xAdv: new Tensor(r.xAdv), loss: r.loss, success: r.success, norm: r.norm, cleanCorrect: r.cleanCorrect };
  if (r.queries) out.queries = r.queries;
  return out;
}
