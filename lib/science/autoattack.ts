/**
 * AutoAttack-grade robust evaluation (Croce & Hein, ICML 2020): a cascade of parameter-free
 * attacks where each attack runs only on the samples every earlier attack failed on (native
 * autoattack.cc, one op per batch; the attacks are attacks.cc's kinds). docs/attacks.md.
 */
import { addon, NativeChecks } from '../binding/native';
import { runOp, OpOptions } from '../binding/op';
import { Model, modelHandle } from './model';
import { Tensor } from '../binding/tensor';
import { Dataset, firstBatches } from './data/dataset';
import { NpyWriter } from './data';
import { invalidArgument } from '../util/errors';
import { attackKinds, nativeOptions, AttackKind, AttackNorm, AttackParams, AttackSpec } from './attacks';
import { AUTOATTACK_OPTIONS, AUTOATTACK_VERSIONS, EVALUATE_OPTIONS } from './options';
import { parseOptions } from '../util/schema';
import { withGradientChoices } from './tuning-store';

/**
 * standard: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries);
 * plus: APGD-CE and APGD-DLR (5 restarts), FAB (5 restarts), Square (5 restarts), APGD-T, FAB-T;
 * rand: APGD-CE and APGD-DLR with expectation over transformation (20 forwards per gradient),
 * for randomised models; custom: the `attacks` list.
 */
export { AUTOATTACK_VERSIONS };
export type AutoAttackVersion = typeof AUTOATTACK_VERSIONS[number];

/** One stage of the cascade: an untargeted attack kind and its parameters (norm, ε, seed come from the cascade). */
export type AutoAttackStage = AttackKind | (Omit<AttackParams, 'norm' | 'epsilon' | 'targeted' | 'target' | 'init'> & { kind: AttackKind; name?: string });

/** The published stage lists (autoattack.py of Croce & Hein's reference implementation). */
export const autoAttackVersions: Record<Exclude<AutoAttackVersion, 'custom'>, readonly AutoAttackStage[]> = {
  standard: [
    { kind: 'apgd-ce', steps: 100, restarts: 1 },
    { kind: 'apgd-t', steps: 100, restarts: 1, targets: 9 },
    { kind: 'fab-t', steps: 100, restarts: 1, targets: 9 },
    { kind: 'square', steps: 5000, restarts: 1 },
  ],
  plus: [
    { kind: 'apgd-ce', steps: 100, restarts: 5 },
    { kind: 'apgd-dlr', steps: 100, restarts: 5 },
    { kind: 'fab', steps: 100, restarts: 5 },
    { kind: 'square', steps: 5000, restarts: 5 },
    { kind: 'apgd-t', steps: 100, restarts: 1, targets: 9 },
    { kind: 'fab-t', steps: 100, restarts: 1, targets: 9 },
  ],
  rand: [
    { kind: 'apgd-ce', steps: 100, restarts: 1, eotIter: 20 },
    { kind: 'apgd-dlr', steps: 100, restarts: 1, eotIter: 20 },
  ],
};

export interface AutoAttackParams {
  /** Threat model ['linf']. */
  norm?: AttackNorm;
  /** Radius of the ball in pixel units [0.031]. */
  epsilon?: number;
  /** Which cascade ['standard']; 'custom' runs `attacks`. */
  version?: AutoAttackVersion;
  /** The stages of a 'custom' cascade, in order (kinds or parameter objects). */
  attacks?: readonly AutoAttackStage[];
  /** Seed of every stage's generator (batch i adds 7919·i: lib/science/data/dataset.ts BATCH_SEED_STRIDE) [0]. */
  seed?: number;
  /** Run the sanity checks (probability outputs, vanishing gradients, randomness) [true]. */
  checks?: boolean;
}

export interface AutoAttackOptions extends AutoAttackParams, OpOptions {
  /** Samples per native op [128]. */
  batchSize?: number;
  /** Attack only the first n samples [all]. */
  limit?: number;
  /**
   * Save the cascade's final adversarial examples as float32 .npy [N, C, H, W], pixels in [0, 1]:
   * per sample the example of the stage that broke it, else the last stage's attempt (the input
   * itself where it is misclassified clean). Written to a temporary name and renamed at the end:
   * an error or abort leaves no file.
   */
  save?: string;
  /** Called when a stage starts on a batch: stage index, its name, samples still robust in the batch. */
  onStage?: (e: { batch: number; stage: number; stages: number; name: string; remaining: number }) => void;
  /** Called after each batch with the running counts. */
  onBatch?: (e: { done: number; total: number; cleanCorrect: number; robust: number }) => void;
}

export interface AutoAttackStageResult {
  name: string;
  params: AttackParams;
  /** Accuracy after this stage (samples correct clean and not broken by this or an earlier stage). */
  robustAccuracy: number;
  /** Samples this stage broke (first). */
  broken: number;
  /** Wall time of this stage over all batches, seconds. */
  seconds: number;
}

export interface AutoAttackResult {
  version: AutoAttackVersion;
  norm: AttackNorm;
  epsilon: number;
  samples: number;
  /** Clean accuracy. */
  accuracy: number;
  /** Accuracy under the cascade: correct clean and not broken by any stage. */
  robustAccuracy: number;
  /** Binomial standard error of robustAccuracy, √(p(1 − p)/n). */
  robustAccuracyStderr: number;
  stages: AutoAttackStageResult[];
  /** Sanity-check findings, as sentences (also written to the log by the CLI). */
  warnings: string[];
  /** Path of the saved .npy of adversarial examples (with `save`). */
  saved?: string;
  perSample: {
    /** 1 where the clean input is classified correctly [N]. */
    clean: Uint8Array;
    /** Index of the stage that broke the sample, −1 robust, −2 misclassified clean [N]. */
    brokenBy: Int16Array;
    /** ‖x_adv − x‖ in the threat model's norm (0 where nothing was found) [N]. */
    norm: Float64Array;
  };
}

/** A cascade resolved against the attack capability table (lib/science/options.ts) and the number of classes. */
export interface ResolvedCascade {
  version: AutoAttackVersion;
  norm: AttackNorm;
  epsilon: number;
  stages: (AttackParams & { name: string })[];
  warnings: string[];
}

/**
 * Resolves a cascade: the version's stages (or `attacks`), each with the cascade's norm, ε and
 * seed; stages whose loss needs more classes than `numClasses` are dropped with a warning, the
 * number of targets is capped at K − 1. ERR_ARG for unknown or targeted stages, and for FAB / Square
 * in a build without them.
 */
export function resolveCascade(p: AutoAttackParams, numClasses: number): ResolvedCascade {
  // version, norm, ε: validated against lib/science/options.ts AUTOATTACK_OPTIONS, defaults filled in
  const { version: v, norm: nm, epsilon: e } = parseOptions('autoAttack', AUTOATTACK_OPTIONS, p);
  const version = v as AutoAttackVersion, norm = nm as AttackNorm, epsilon = e as number;
  if (version === 'custom' && !(p.attacks && p.attacks.length)) throw invalidArgument("autoAttack option 'attacks'", "a non-empty list of attack kinds (version 'custom' runs them)", p.attacks);
  if (version !== 'custom' && p.attacks) throw invalidArgument("autoAttack option 'attacks'", `none with version '${version}' (it is for version 'custom')`, p.attacks);
  const list = version === 'custom' ? p.attacks! : autoAttackVersions[version];
  const table = new Map<string, AttackSpec>(attackKinds().map((a) => [a.kind, a]));
  const warnings: string[] = [];
  const stages: (AttackParams & { name: string })[] = [];
  const seen = new Map<string, number>();
  for (const st of list) {
    const s = typeof st === 'string' ? { kind: st } : st;
    const spec = table.get(String(s.kind));
    if (!spec) throw invalidArgument("autoAttack stage 'kind'", `one of ${[...table.keys()].join(', ')}`, s.kind);
    if ((s as AttackParams).targeted) throw invalidArgument(`autoAttack stage ${s.kind} option 'targeted'`, 'false: the cascade measures untargeted robustness (apgd-t and fab-t try targets internally)', true);
    if (!spec.available) {
      throw invalidArgument("autoAttack stage 'kind'", `an attack of this build (${spec.kind} not available in this build: native/${spec.kind.startsWith('fab') ? 'fab' : 'square'}.cc); use version 'custom' with the attacks of this build, e.g. attacks: ['apgd-ce', 'apgd-t'] (available: ${[...table.values()].filter((a) => a.available).map((a) => a.kind).join(', ')})`, spec.kind);
    }
    if (!spec.norms.includes(norm)) throw invalidArgument("autoAttack option 'norm'", `${spec.norms.join(' or ')} (stage ${spec.kind} supports no other)`, norm);
    if (numClasses < spec.minClasses) {
      warnings.push(`${spec.kind} skipped: its loss needs at least ${spec.minClasses} classes, the data has ${numClasses}`);
      continue;
    }
    const { name, ...params } = s as AttackParams & { name?: string };
    const q: AttackParams = { ...params, norm, epsilon, seed: p.seed ?? 0 };
    if (spec.internalTargets) q.targets = Math.min(q.targets ?? 9, numClasses - 1);
    const n = (seen.get(spec.kind) ?? 0) + 1;
    seen.set(spec.kind, n);
    stages.push({ ...q, name: name ?? (n === 1 ? spec.kind : `${spec.kind}-${n}`) });
  }
  if (!stages.length) throw invalidArgument('autoAttack: the number of classes', `enough for at least one stage (${[...table.values()].map((a) => `${a.kind} ${a.minClasses}`).join(', ')})`, numClasses);
  return { version, norm, epsilon, stages, warnings };
}

/**
 * One batch through the cascade (native op): per sample the breaking stage (−1 robust, −2 wrong
 * clean) and xAdv [B, ...]: the breaking stage's example, else the last stage's attempt (x where
 * misclassified clean); `norm`: ‖xAdv − x‖ of broken samples, 0 elsewhere.
 */
export async function autoAttackBatch(model: Model, x: Tensor, y: Tensor, c: ResolvedCascade, opts: OpOptions & { seed?: number; checks?: boolean } = {}): Promise<{
  xAdv: Tensor; brokenBy: Float64Array; norm: Float64Array; stageSeconds: Float64Array; checks: NativeChecks;
}> {
  const stages = c.stages.map(({ name: _n, ...s }) => nativeOptions({ ...s, seed: opts.seed ?? s.seed }));
  const checks = parseOptions('autoAttack', { checks: AUTOATTACK_OPTIONS.checks }, opts).checks;
  const r = await withGradientChoices(model, () => runOp(opts, (ctl) => addon().autoAttack(modelHandle(model), x.native, y.native, { stages, checks }, ctl)));
  return { ...r, xAdv: new Tensor(r.xAdv) };
}

/** Sentences for the sanity checks' findings over `n` samples (empty when nothing looks wrong). */
export function sanityWarnings(ck: { probabilityRows: number; zeroGradient: number; nonFiniteGradient: number; forwardDifference: number }, n: number, version: AutoAttackVersion): string[] {
  const w: string[] = [];
  if (ck.probabilityRows > 0.9 * n) {
    w.push(`the model's outputs look like probabilities on ${ck.probabilityRows} of ${n} samples (rows in [0, 1] summing to 1): attacks expect logits; drop the final softmax`);
  }
  // a tenth of the samples: gradients of a sound model vanish exactly only by accident
  if (ck.zeroGradient + ck.nonFiniteGradient > 0.1 * n) {
    w.push(`the input gradient of the cross-entropy is zero on ${ck.zeroGradient} and non-finite on ${ck.nonFiniteGradient} of ${n} samples: gradient masking (saturated softmax, quantised or non-differentiable inputs); gradient attacks may overstate robustness — trust the scale-invariant (DLR) and score-based (Square) stages`);
  }
  if (ck.forwardDifference > 1e-5 && version !== 'rand') {
    w.push(`two forwards of the same input differ (by ${ck.forwardDifference.toExponential(2)} relative): the model is randomised; use version 'rand' (expectation over transformation)`);
  }
  return w;
}

/**
 * Robust accuracy under the AutoAttack cascade over `data` (pixels in [0, 1]): clean accuracy,
 * accuracy after each stage, the final robust accuracy with its binomial standard error, per
 * sample the stage that broke it and ‖δ‖ (checked ≤ ε and inside the box), and sanity warnings.
 */
export async function autoAttack(model: Model, data: Dataset, opts: AutoAttackOptions = {}): Promise<AutoAttackResult> {
  const c = resolveCascade(opts, data.numClasses);
  const n = Math.min(data.size, opts.limit ?? data.size);
  if (n < 1) throw invalidArgument('autoAttack(model, data)', 'at least one sample', n);
  const batchSize = opts.batchSize ?? EVALUATE_OPTIONS.batchSize.default;
  const clean = new Uint8Array(n);
  const brokenBy = new Int16Array(n);
  const norms = new Float64Array(n);
  const seconds = c.stages.map(() => 0);
  const checks = { probabilityRows: 0, zeroGradient: 0, nonFiniteGradient: 0, forwardDifference: 0 };
  let done = 0;
  const writer = opts.save !== undefined ? new NpyWriter(opts.save, [n, ...data.imageShape]) : undefined;
  try {
    for await (const batch of firstBatches(data, { limit: n, batchSize, seed: opts.seed, signal: opts.signal })) {
      const r = await autoAttackBatch(model, batch.x, batch.y, c, {
        seed: batch.seed, checks: opts.checks, signal: opts.signal,
        onProgress: (e) => {
          if (e.type === 'stage') {
            opts.onStage?.({ batch: batch.index, stage: e.stage, stages: c.stages.length, name: c.stages[e.stage].name, remaining: e.remaining });
          }
          opts.onProgress?.(e);
        },
      });
      try {
        await writer?.append(r.xAdv, { signal: opts.signal });
      } finally {
        r.xAdv.dispose();
      }
      for (let i = 0; i < r.brokenBy.length; i++) {
        brokenBy[done + i] = r.brokenBy[i];
        clean[done + i] = r.brokenBy[i] === -2 ? 0 : 1;
        norms[done + i] = r.norm[i];
      }
      r.stageSeconds.forEach((s, i) => { seconds[i] += s; });
      checks.probabilityRows += r.checks.probabilityRows;
      checks.zeroGradient += r.checks.zeroGradient;
      checks.nonFiniteGradient += r.checks.nonFiniteGradient;
      checks.forwardDifference = Math.max(checks.forwardDifference, r.checks.forwardDifference);
      done += r.brokenBy.length;
      let rob = 0, cc = 0;
      for (let i = 0; i < done; i++) { if (brokenBy[i] === -1) rob++; if (clean[i]) cc++; }
      opts.onBatch?.({ done, total: n, cleanCorrect: cc, robust: rob });
    }
    writer?.close();
  } catch (e) {
    writer?.abort();
    throw e;
  }
  let correct = 0;
  for (const v of clean) correct += v;
  let remaining = correct;
  const stages = c.stages.map(({ name, ...params }, s) => {
    let broken = 0;
    for (const v of brokenBy) if (v === s) broken++;
    remaining -= broken;
    return { name, params, robustAccuracy: remaining / n, broken, seconds: seconds[s] };
  });
  const robust = remaining / n;
  return {
    version: c.version, norm: c.norm, epsilon: c.epsilon, samples: n,
    accuracy: correct / n,
    robustAccuracy: robust,
    robustAccuracyStderr: Math.sqrt(robust * (1 - robust) / n),
    stages,
    warnings: (opts.checks ?? true) ? [...c.warnings, ...sanityWarnings(checks, n, c.version)] : c.warnings,
    ...(writer ? { saved: writer.file } : {}),
    perSample: { clean, brokenBy, norm: norms },
  };
}
