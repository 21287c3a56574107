/**
 * Adversarial attacks and robust evaluation (native attacks.cc; docs/attacks.md). Every attack
 * runs one batch natively, in eval mode without weight gradients, keeps x_adv inside the ε-ball
 * around x and the [0, 1] box, and leaves the model exactly as it found it (mode, requires-grad
 * flags, no .grad). ε and step sizes are in pixel units (inputs in [0, 1]).
 */
import { addon } from '../binding/native';
import { runOp, OpOptions } from '../binding/op';
import { Model } from './model';
import { Tensor } from '../binding/tensor';
import { Dataset } from './data/dataset';
import { NpyWriter } from './data';

export { NpyWriter } from './data';
import { FisherLensError } from '../util/errors';
import { ATTACK_TABLE, AttackKind, AttackNorm, AttackSpec, parseAttackOptions } from './options';
// evaluate() runs 'autoattack' entries through the cascade (a call-time use: no load-order cycle)
import { autoAttackBatch, resolveCascade, sanityWarnings, AutoAttackParams, ResolvedCascade } from './autoattack';
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
    if (!p.target) throw new FisherLensError('ERR_ARG', 'a targeted attack needs `target`: int64 labels [B]');
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
  const r = await withGradientChoices(model, () => runOp({ signal, onProgress }, (ctl) => addon().attack(model.native, x.native, y.native, o, ctl)));
  const out: AttackResult = { xAdv: new Tensor(r.xAdv), loss: r.loss, success: r.success, norm: r.norm, cleanCorrect: r.cleanCorrect };
  if (r.queries) out.queries = r.queries;
  return out;
}

/** An attack in an evaluation: its parameters and a name for reports; `kind: 'autoattack'` is the cascade (lib/science/autoattack.ts). */
export type NamedAttack = (AttackParams & { name?: string }) | (AutoAttackParams & { kind: 'autoattack'; name?: string });

export interface EvaluateOptions extends OpOptions {
  /** Samples per native op [128]. */
  batchSize?: number;
  /** Evaluate only the first n samples [all]. */
  limit?: number;
  /**
   * Save adversarial examples as float32 .npy [N, C, H, W]: with one attack to this path; with
   * several to `<stem>-<attack name>.npy`, plus `<stem>-worst.npy` (per sample, the first
   * attack that succeeded, else the last attack's example).
   */
  save?: string;
  /** Called after each batch with the running counts. */
  onBatch?: (e: { done: number; total: number; cleanCorrect: number; worstCorrect: number }) => void;
}

export interface AttackSummary {
  name: string;
  params: AttackParams | AutoAttackParams;
  /** Fraction of samples classified correctly both clean and under this attack. */
  robustAccuracy: number;
  /** Fraction of samples where the attack succeeded (misclassified at x_adv). */
  successRate: number;
  /** Mean ‖x_adv − x‖ over the samples the attack turned from correct to wrong (NaN when none). */
  meanNorm: number;
  /** Mean objective at x_adv (kl: the mean KL reached). */
  meanLoss: number;
  /** Path of the saved .npy, when saving. */
  saved?: string;
  /** autoattack: the sanity checks' findings (lib/science/autoattack.ts sanityWarnings). */
  warnings?: string[];
}

export interface EvaluateResult {
  samples: number;
  /** Clean (standard) accuracy. */
  accuracy: number;
  attacks: AttackSummary[];
  /** Accuracy under the per-sample worst case over all attacks (correct only if every attack failed). */
  worstCaseAccuracy: number;
  /** Per sample: 1 correct clean, and 1 correct under every attack [N]. */
  perSample: { clean: Uint8Array; worst: Uint8Array };
}

/**
 * Streams over `data` and returns clean accuracy, robust accuracy under each attack and the
 * per-sample worst case over all attacks. Each batch/attack pair gets its own seed derived from
 * the attack's seed, so results are reproducible and independent of the batch size only through it.
 */
export async function evaluate(model: Model, data: Dataset, attacks: NamedAttack[], opts: EvaluateOptions = {}): Promise<EvaluateResult> {
  const n = Math.min(data.size, opts.limit ?? data.size);
  const batchSize = opts.batchSize ?? 128;
  const names = attacks.map((a, i) => a.name ?? (attacks.findIndex((b) => (b.kind ?? 'pgd') === (a.kind ?? 'pgd')) === i ? a.kind ?? 'pgd' : `${a.kind ?? 'pgd'}${i}`));
  const writers: (NpyWriter | undefined)[] = [];
  let worstWriter: NpyWriter | undefined;
  if (opts.save) {
    const shape = [n, ...data.imageShape];
    if (attacks.length === 1) writers.push(new NpyWriter(opts.save, shape));
    else {
      const stem = opts.save.replace(/\.npy$/, '');
      names.forEach((nm) => writers.push(new NpyWriter(`${stem}-${nm}.npy`, shape)));
      worstWriter = new NpyWriter(`${stem}-worst.npy`, shape);
    }
  }
  const clean = new Uint8Array(n);
  const worst = new Uint8Array(n);
  const robust = attacks.map(() => 0);
  const succ = attacks.map(() => 0);
  const normSum = attacks.map(() => 0);
  const normCount = attacks.map(() => 0);
  const lossSum = attacks.map(() => 0);
  const cascades: (ResolvedCascade | undefined)[] = attacks.map((a) => (a.kind === 'autoattack' ? resolveCascade(a, data.numClasses) : undefined));
  const checks = attacks.map(() => ({ probabilityRows: 0, zeroGradient: 0, nonFiniteGradient: 0, forwardDifference: 0 }));
  let done = 0;
  const src = n < data.size ? await data.take(n, { signal: opts.signal }) : data;
  try {
    let bi = 0;
    for (const batch of src.batches({ batchSize })) {
      let c: Uint8Array | undefined;
      let w = new Uint8Array(0);
      const advs: Tensor[] = [];
      const successes: Uint8Array[] = [];
      // no attack: a zero-step PGD gives the clean predictions
      const list: NamedAttack[] = attacks.length ? attacks : [{ kind: 'pgd', steps: 0, randomStart: false }];
      for (let a = 0; a < list.length; a++) {
        const { name: _name, ...params } = list[a];
        const r = params.kind === 'autoattack'
          ? await cascadeBatch(model, batch.x, batch.y, cascades[a]!, (params.seed ?? 0) + 7919 * bi, checks[a], opts)
          : await attack(model, batch.x, batch.y, {
            ...params, seed: (params.seed ?? 0) + 7919 * bi, signal: opts.signal, onProgress: opts.onProgress,
          });
        if (!c) {
          c = Uint8Array.from(r.cleanCorrect);
          w = Uint8Array.from(c);
        }
        if (a >= attacks.length) { r.xAdv.dispose(); break; }
        for (let i = 0; i < c.length; i++) {
          const ok = c[i] === 1 && r.success[i] === 0;
          if (ok) robust[a]++;
          else w[i] = 0;
          if (r.success[i] === 1) succ[a]++;
          if (r.success[i] === 1 && c[i] === 1) { normCount[a]++; normSum[a] += r.norm[i]; }
          lossSum[a] += r.loss[i];
        }
        await writers[a]?.append(r.xAdv, { signal: opts.signal });
        if (worstWriter) { advs.push(r.xAdv); successes.push(r.success); } else r.xAdv.dispose();
      }
      if (worstWriter) {
        try {
          const w = await worstExamples(advs, successes, { signal: opts.signal });
          try { await worstWriter.append(w, { signal: opts.signal }); } finally { w.dispose(); }
        } finally {
          advs.forEach((t) => t.dispose());
        }
      }
      clean.set(c!, done);
      worst.set(w, done);
      done += c!.length;
      bi++;
      opts.onBatch?.({ done, total: n, cleanCorrect: sum(clean.subarray(0, done)), worstCorrect: sum(worst.subarray(0, done)) });
    }
    writers.forEach((wr) => wr?.close());
    worstWriter?.close();
  } catch (e) {
    writers.forEach((wr) => wr?.abort());
    worstWriter?.abort();
    throw e;
  } finally {
    if (src !== data) src.dispose();
  }
  return {
    samples: n,
    accuracy: sum(clean) / n,
    attacks: attacks.map((a, i) => {
      const { name: _n, ...params } = a;
      if ('target' in params) delete params.target;
      return {
        name: names[i], params,
        robustAccuracy: robust[i] / n,
        successRate: succ[i] / n,
        meanNorm: normCount[i] > 0 ? normSum[i] / normCount[i] : NaN,
        meanLoss: lossSum[i] / n,
        saved: writers[i]?.file,
        ...(cascades[i] ? { warnings: [...cascades[i]!.warnings, ...sanityWarnings(checks[i], n, cascades[i]!.version)] } : {}),
      };
    }),
    worstCaseAccuracy: sum(worst) / n,
    perSample: { clean, worst },
  };
}

/**
 * Per sample, the adversarial example of the first attack that broke it (success 1), else the last
 * attack's: advs A × [B, ...] and successes A × [B] -> [B, ...] (one native op; the batches stay native).
 */
export async function worstExamples(advs: Tensor[], successes: Uint8Array[], opts: OpOptions = {}): Promise<Tensor> {
  return new Tensor(await runOp(opts, (ctl) => addon().firstSuccessful(advs.map((t) => t.native), successes, ctl)));
}

/** One batch through an AutoAttack cascade, as an attack result (success: broken or wrong clean; loss: NaN). */
async function cascadeBatch(model: Model, x: Tensor, y: Tensor, c: ResolvedCascade, seed: number,
  acc: { probabilityRows: number; zeroGradient: number; nonFiniteGradient: number; forwardDifference: number }, opts: OpOptions): Promise<AttackResult> {
  const b = await autoAttackBatch(model, x, y, c, { seed, signal: opts.signal, onProgress: opts.onProgress });
  acc.probabilityRows += b.checks.probabilityRows;
  acc.zeroGradient += b.checks.zeroGradient;
  acc.nonFiniteGradient += b.checks.nonFiniteGradient;
  acc.forwardDifference = Math.max(acc.forwardDifference, b.checks.forwardDifference);
  return {
    xAdv: b.xAdv, norm: b.norm, loss: new Float64Array(b.brokenBy.length).fill(NaN),
    success: Uint8Array.from(b.brokenBy, (v) => (v === -1 ? 0 : 1)),
    cleanCorrect: Uint8Array.from(b.brokenBy, (v) => (v === -2 ? 0 : 1)),
  };
}

function sum(a: Uint8Array): number {
  let s = 0;
  for (const v of a) s += v;
  return s;
}
