/**
 * Performance metrics of docs/math.md (1)–(22) (all KL/JS values in nats):
 * accuracy, mean cross-entropy, CCKL over all different-class pairs (exact, O(N·C), streaming),
 * the mean JS divergence over those pairs and the lower bound 2 ln2 · mean (1 − √err_i − √err_j)₊²,
 * the disentanglement CCKL = N + R with the non-robust component N = mean ½ δᵀ G δ, and the
 * adversarial measure ρ(x, ε) beside ½ ε² λ_max.
 *
 * Streaming: each batch's eval-mode forward gives class sums (n_k, A_k = Σ a_i, P_k = Σ p_i,
 * S_k = Σ log p_i; a_i = p_i · log p_i) that JavaScript adds up in float64 — O(C²) numbers
 * whatever N is — and CCKL follows exactly from them. The JS mean and the bound need pairs: the
 * batches' log-probabilities stay in native memory (N·C float64: 4 MB for 50 000 × 10) and are
 * paired exactly by blocks when N ≤ exactMax (10 000), else over seeded sampled pairs.
 */
import { addon, NativeBatchSums } from '../binding/native';
import { runOp, OpOptions } from '../binding/op';
import { Model, modelHandle } from './model';
import { Tensor } from '../binding/tensor';
import { Dataset } from './data/dataset';
import { FisherLensError, invalidArgument } from '../util/errors';
import { summarize, Summary, segmentRows } from './fisher';
import { attack } from './attacks';
import { meanSe } from '../util/stats';
import { PAIR_MEANS_OPTIONS, RHO_OPTIONS } from './options';
import { parseOptions } from '../util/schema';
import { withGradientChoices } from './tuning-store';


/** CCKL and the quantities that stream with it. */
export interface CcklResult {
  /** Mean KL(p_i ‖ p_j) over all ordered pairs with y_i ≠ y_j (nats), exact. */
  cckl: number;
  /** Fraction of argmax p = y. */
  accuracy: number;
  /** Mean −log p_{y} (nats). */
  crossEntropy: number;
  /** Samples N. */
  n: number;
  /** Different-class ordered pairs N² − Σ n_k². */
  pairs: number;
}

/** The JS mean over different-class pairs and the lower bound (docs/math.md (4)–(8)). */
export interface PairResult {
  /** Mean JS(p_i, p_j) over different-class pairs (nats). */
  jsMean: number;
  /** Its standard error (0 when exact). */
  jsSe: number;
  /** 2 ln2 · mean max(0, 1 − √err_i − √err_j)², a lower bound of 2·jsMean ≤ CCKL. */
  lowerBound: number;
  lowerBoundSe: number;
  /** Whether all pairs were used (else `pairsUsed` sampled ones). */
  exact: boolean;
  pairsUsed: number;
}

/** Options of the pair means. */
export interface PairOptions {
  /** Exact by blocks up to this many samples (default 10 000). */
  exactMax?: number;
  /** Sampled pairs beyond exactMax (default 1 000 000). */
  jsSamples?: number;
  /** Seed of the pair sampling (default 0). */
  seed?: number;
}

/**
 * Streaming accumulator of CCKL, accuracy and cross-entropy (and, unless `keepLogp: false`, the
 * log-probabilities for the JS mean and the bound). Add batches, then read {@link result}.
 */
export class CcklAccumulator {
  private C = -1;
  private n: Float64Array = new Float64Array(0);
  private A: Float64Array = new Float64Array(0);
  private P: Float64Array = new Float64Array(0);
  private S: Float64Array = new Float64Array(0);
  private correct = 0;
  private ceSum = 0;
  private count = 0;
  private readonly logps: Tensor[] = [];
  private readonly ys: Tensor[] = [];

  constructor(private readonly opts: { keepLogp?: boolean } = {}) {}

  private add(s: NativeBatchSums, y: Tensor): void {
    const C = s.n.length;
    if (this.C < 0) {
      this.C = C;
      this.n = new Float64Array(C);
      this.A = new Float64Array(C);
      this.P = new Float64Array(C * C);
      this.S = new Float64Array(C * C);
    } else if (C !== this.C) {
      throw new FisherLensError('ERR_SHAPE', `CcklAccumulator: batches disagree on the number of classes (${this.C} vs ${C})`);
    }
    for (let k = 0; k < C; k++) {
      this.n[k] += s.n[k];
      this.A[k] += s.A[k];
    }
    for (let k = 0; k < C * C; k++) {
      this.P[k] += s.P[k];
      this.S[k] += s.S[k];
    }
    this.correct += s.correct;
    this.ceSum += s.ceSum;
    this.count += s.count;
    if (this.opts.keepLogp ?? true) {
      this.logps.push(new Tensor(s.logp));
      this.ys.push(y.clone());
    } else {
      s.logp.dispose();
    }
  }

  /** Adds a batch of logits [B, C] with labels [B] (int64). */
  async addLogits(logits: Tensor, y: Tensor, opts?: OpOptions): Promise<void> {
    this.add(await runOp(opts, (ctl) => addon().ccklBatch(null, logits.native, y.native, { probs: false }, ctl)), y);
  }

  /**
   * Adds a batch of predicted probabilities p [B, C] (e.g. fisherExact's `probs`) with labels [B]
   * (int64); log p is taken as log max(p, 1e-300).
   */
  async addProbs(probs: Tensor, y: Tensor, opts?: OpOptions): Promise<void> {
    this.add(await runOp(opts, (ctl) => addon().ccklBatch(null, probs.native, y.native, { probs: true }, ctl)), y);
  }

  /** Adds a batch of images through the model (one eval-mode forward, no gradients). */
  async addBatch(model: Model, x: Tensor, y: Tensor, opts?: OpOptions): Promise<void> {
    this.add(await runOp(opts, (ctl) => addon().ccklBatch(modelHandle(model), x.native, y.native, { probs: false }, ctl)), y);
  }

  /** CCKL (exact over all different-class pairs), accuracy and cross-entropy so far. */
  result(): CcklResult {
    const C = this.C, N = this.count;
    if (C < 0 || N === 0) throw new FisherLensError('ERR_VALUE', 'CcklAccumulator: no samples added');
    // Σ_{y_i≠y_j} KL = N ΣA − Σ_k n_k A_k − (ΣP)·(ΣS) + Σ_k P_k·S_k
    let sumA = 0, nA = 0, sumN2 = 0, PS = 0;
    const Pt = new Float64Array(C), St = new Float64Array(C);
    for (let k = 0; k < C; k++) {
      sumA += this.A[k];
      nA += this.n[k] * this.A[k];
      sumN2 += this.n[k] * this.n[k];
      for (let c = 0; c < C; c++) {
        Pt[c] += this.P[k * C + c];
        St[c] += this.S[k * C + c];
        PS += this.P[k * C + c] * this.S[k * C + c];
      }
    }
    let PtSt = 0;
    for (let c = 0; c < C; c++) PtSt += Pt[c] * St[c];
    const pairs = N * N - sumN2;
    const total = N * sumA - nA - PtSt + PS;
    return { cckl: pairs > 0 ? total / pairs : NaN, accuracy: this.correct / N, crossEntropy: this.ceSum / N, n: N, pairs };
  }

  /** The JS mean over different-class pairs and the lower bound (needs keepLogp). */
  async pairs(opts: PairOptions & OpOptions = {}): Promise<PairResult> {
    if (this.logps.length === 0) throw new FisherLensError('ERR_VALUE', 'CcklAccumulator.pairs: no log-probabilities kept (keepLogp: false or no batches)');
    const r = await runOp(opts, (ctl) => addon().pairMeans(this.logps.map((t) => t.native), this.ys.map((t) => t.native),
      parseOptions('pairs', PAIR_MEANS_OPTIONS, { exactMax: opts.exactMax, samples: opts.jsSamples, seed: opts.seed }) as { exactMax: number; samples: number; seed: number }, ctl));
    return { jsMean: r.jsMean, jsSe: r.jsSe, lowerBound: r.boundMean, lowerBoundSe: r.boundSe, exact: r.exact, pairsUsed: r.pairs };
  }

  /**
   * Per class pair, from the same sums as {@link result}: row a of `meanProbs` is the mean
   * predicted distribution P_a / n_a over the samples of true class a; `kl[a][b]` the mean
   * KL(p_i ‖ p_j) over i of class a and j of class b, A_a / n_a − (P_a / n_a)·(S_b / n_b) (nats).
   * CCKL = Σ_{a≠b} n_a n_b kl[a][b] / Σ_{a≠b} n_a n_b. Classes without samples give NaN rows
   * (and columns of kl).
   */
  classMatrices(): { counts: number[]; meanProbs: number[][]; kl: number[][] } {
    const C = this.C;
    if (C < 0 || this.count === 0) throw new FisherLensError('ERR_VALUE', 'CcklAccumulator: no samples added');
    const counts = Array.from(this.n);
    const meanProbs = counts.map((n, a) => Array.from({ length: C }, (_, c) => this.P[a * C + c] / n));
    const kl = counts.map((na, a) => counts.map((nb, b) => {
      let dot = 0;
      for (let c = 0; c < C; c++) dot += this.P[a * C + c] * this.S[b * C + c];
      return this.A[a] / na - dot / (na * nb);
    }));
    return { counts, meanProbs, kl };
  }

  /** Frees the kept log-probabilities. */
  dispose(): void {
    for (const t of [...this.logps, ...this.ys]) t.dispose();
    this.logps.length = 0;
    this.ys.length = 0;
  }
}

/** CCKL, accuracy, cross-entropy, JS mean and bound of given logits [N, C] and labels [N]. */
export async function ccklFromLogits(logits: Tensor, labels: Tensor, opts: PairOptions & OpOptions = {}): Promise<CcklResult & PairResult> {
  const acc = new CcklAccumulator();
  try {
    await acc.addLogits(logits, labels, opts);
    return { ...acc.result(), ...(await acc.pairs(opts)) };
  } finally {
    acc.dispose();
  }
}

/**
 * Eval-mode log-probabilities log p(x) [B, C] (float64) of a batch x [B, C, H, W]: one forward in
 * the model's dtype and device, log-softmax in float64 (no gradients; the model is left as found).
 */
export async function logProbs(model: Model, x: Tensor, opts: OpOptions = {}): Promise<Tensor> {
  const B = x.shape[0];
  const y = Tensor.from(new BigInt64Array(B), [B]);
  try {
    return new Tensor((await runOp(opts, (ctl) => addon().ccklBatch(modelHandle(model), x.native, y.native, { probs: false }, ctl))).logp);
  } finally {
    y.dispose();
  }
}

// ---------------- pair sampling ----------------

/**
 * `count` ordered pairs (i, j) drawn uniformly among those with labels[i] ≠ labels[j], seeded
 * (LibTorch's CPU generator; the pair sampler of the sampled JS mean too: native/metrics.cc
 * samplePairs). ERR_VALUE when the labels have a single class.
 */
export async function samplePairs(labels: Tensor | ArrayLike<number>, count: number, seed = 0, opts: OpOptions = {}): Promise<{ i: number[]; j: number[] }> {
  const y = labels instanceof Tensor ? labels : Tensor.from(BigInt64Array.from(Array.from(labels), (v) => BigInt(v)), [labels.length]);
  try {
    const r = await runOp(opts, (ctl) => addon().samplePairs(y.native, count, seed, ctl));
    return { i: Array.from(r.i), j: Array.from(r.j) };
  } finally {
    if (y !== labels) y.dispose();
  }
}

/** The non-robust component estimated over sampled pairs. */
export interface NonRobustResult {
  /** N = mean over different-class pairs of ½ δᵀ G_{x_i} δ, δ = x_j − x_i (nats). */
  nonRobust: number;
  nonRobustSe: number;
  /** Mean exact KL(p_i ‖ p_j) over the same pairs (a sampled CCKL), and the mean remainder KL − ½δᵀGδ. */
  klSampled: number;
  klSampledSe: number;
  remainder: number;
  remainderSe: number;
  pairs: number;
  /** Per-pair values (i, j, ½ δᵀGδ, KL). */
  i: number[];
  j: number[];
  halfQuadratic: Float64Array;
  kl: Float64Array;
}

/**
 * The non-robust component N = mean ½ δᵀ G_{x_i} δ over `pairs` seeded different-class pairs
 * (default 1000; one JVP per pair, batches of `batchSize`, default 128), with its standard error.
 */
export async function nonRobustComponent(model: Model, data: Dataset, opts: { pairs?: number; seed?: number; batchSize?: number } & OpOptions = {}): Promise<NonRobustResult> {
  const count = opts.pairs ?? 1000;
  const { i, j } = await samplePairs(data.labels, count, opts.seed ?? 0, { signal: opts.signal });
  const bs = opts.batchSize ?? 128;
  const hq = new Float64Array(count), kl = new Float64Array(count);
  for (let s = 0; s < count; s += bs) {
    const bi = data.batch(i.slice(s, s + bs)), bj = data.batch(j.slice(s, s + bs));
    try {
      const r = await runOp(opts, (ctl) => addon().klPairSegment(modelHandle(model), bi.x.native, bj.x.native, [1], ctl));
      const seg = segmentRows(r.kl, r.quadratic, [1]);
      for (let k = 0; k < r.quadratic.length; k++) {
        hq[s + k] = seg.quadratic[k][0];
        kl[s + k] = seg.kl[k][0];
      }
    } finally {
      for (const t of [bi.x, bi.y, bj.x, bj.y]) t.dispose();
    }
    opts.onProgress?.({ type: 'batch', done: Math.min(count, s + bs), total: count });
  }
  const nr = meanSe(hq), ks = meanSe(kl), rem = meanSe(kl.map((v, k) => v - hq[k]));
  return {
    nonRobust: nr.mean, nonRobustSe: nr.se, klSampled: ks.mean, klSampledSe: ks.se,
    remainder: rem.mean, remainderSe: rem.se, pairs: count, i, j, halfQuadratic: hq, kl,
  };
}

/** Everything `fisherlens cckl` prints. */
export interface CcklMetrics extends CcklResult, PairResult {
  /** Non-robust component N (mean ½ δᵀGδ over sampled pairs) and its standard error. */
  nonRobust: number;
  nonRobustSe: number;
  /** Robust component R = CCKL − N. */
  robust: number;
  /** N / CCKL. */
  nonRobustFraction: number;
  /** Pairs used for N. */
  nonRobustPairs: number;
}

/**
 * CCKL, accuracy, cross-entropy, JS mean, lower bound and the disentanglement over a dataset:
 * the per-epoch tracker of training (`(await ccklMetrics(model, test)).nonRobustFraction`).
 * `pairs` (default 1000) pairs estimate N; 0 skips the disentanglement (its fields are NaN).
 */
export async function ccklMetrics(model: Model, data: Dataset, opts: PairOptions & { pairs?: number; batchSize?: number } & OpOptions = {}): Promise<CcklMetrics> {
  const acc = new CcklAccumulator();
  const bs = opts.batchSize ?? 256;
  const { onProgress, ...rest } = opts;
  try {
    let done = 0;
    for (const b of data.batches({ batchSize: bs })) {
      await acc.addBatch(model, b.x, b.y, rest);
      done += b.indices.length;
      onProgress?.({ type: 'batch', stage: 'cckl', done, total: data.size });
    }
    const c = acc.result();
    const p = await acc.pairs(rest);
    const pairs = opts.pairs ?? 1000;
    let nr = { nonRobust: NaN, nonRobustSe: NaN };
    if (pairs > 0) {
      const r = await nonRobustComponent(model, data, { pairs, seed: opts.seed, batchSize: opts.batchSize ?? 128, signal: opts.signal,
        onProgress: onProgress ? (e) => onProgress(e.type === 'batch' ? { ...e, stage: 'nonRobust' } : e) : undefined });
      nr = { nonRobust: r.nonRobust, nonRobustSe: r.nonRobustSe };
    }
    return { ...c, ...p, ...nr, robust: c.cckl - nr.nonRobust, nonRobustFraction: nr.nonRobust / c.cckl, nonRobustPairs: pairs };
  } finally {
    acc.dispose();
  }
}

// ---------------- adversarial measure ----------------

/** ρ(x, ε) per sample beside its Fisher approximation. */
export interface RhoResult {
  /** ρ(x, ε) = max_{‖δ‖₂≤ε} KL(p(x) ‖ p(x+δ)): the larger of the two searches below (a lower bound of the true max; nats). */
  rho: Float64Array;
  /** KL reached by the Fisher-started KL-PGD (metrics.cc). */
  rhoFisherStart: Float64Array;
  /** KL reached by the attacks module's KL attack (TRADES' L2 inner maximisation; inside [0, 1]); absent with `klAttack: false`. */
  rhoKlAttack?: Float64Array;
  /** ½ ε² λ_max(G_x) (nats). */
  fisherBound: Float64Array;
  lambdaMax: Float64Array;
  /** KL at the start ±ε v_top (the Fisher attack). */
  initial: Float64Array;
  summary: { rho: Summary; fisherBound: Summary; ratio: Summary };
}

/**
 * The adversarial measure ρ(x, ε) (docs/math.md (9), (12); L2 radius ε in pixel units), per sample: the best
 * of (1) the attacks module's KL attack (L2, `steps` steps of 2.5 ε / steps from a tiny random
 * start, kept in [0, 1]) and (2) a KL-PGD started from the better of ±ε v_top (KL's gradient
 * vanishes at δ = 0, the Fisher eigenvector is where the quadratic term is largest), projected on
 * the ε-ball only (and on [0, 1] with `clip`; default false, the paper's definition). Beside it,
 * ½ ε² λ_max, which it approaches as ε → 0.
 */
export async function adversarialMeasure(model: Model, x: Tensor, eps: number, opts: { steps?: number; clip?: boolean; klAttack?: boolean } & OpOptions = {}): Promise<RhoResult> {
  const o = parseOptions('adversarialMeasure', RHO_OPTIONS, { ...opts, eps }) as { eps: number; steps: number; clip: boolean };
  const steps = o.steps;
  const r = await withGradientChoices(model, () => runOp(opts, (ctl) => addon().rho(modelHandle(model), x.native, o, ctl)));
  let rho = r.rho;
  let rhoKlAttack: Float64Array | undefined;
  if (opts.klAttack ?? true) {
    const B = x.shape[0];
    const y = Tensor.from(new BigInt64Array(B), [B]);
    try {
      const a = await attack(model, x, y, { kind: 'kl', norm: 'l2', epsilon: eps, stepSize: (2.5 * eps) / Math.max(1, steps), steps: Math.max(1, steps), signal: opts.signal });
      a.xAdv.dispose();
      rhoKlAttack = a.loss;
      rho = r.rho.map((v, k) => Math.max(v, a.loss[k]));
    } finally {
      y.dispose();
    }
  }
  const ratio = rho.map((v, k) => v / r.fisherBound[k]);
  return {
    rho, rhoFisherStart: r.rho, rhoKlAttack, fisherBound: r.fisherBound, lambdaMax: r.lambdaMax, initial: r.initial,
    summary: { rho: summarize(rho), fisherBound: summarize(r.fisherBound), ratio: summarize(ratio) },
  };
}

/**
 * KL(p(x_i) ‖ p(x_i + t δ_ij)), δ_ij = x_j − x_i, for chosen pairs (i, j) of a dataset and each t of
 * `ts` (default 0, 0.05, …, 1; nats), beside the quadratic term ½ t² δᵀ G_{x_i} δ (docs/math.md
 * (19) and §4, the paper's appendix B: where the two part, the robust higher-order terms take over). At t = 1 the KL is
 * the pair's term of CCKL.
 */
export async function klPairSegments(model: Model, data: Dataset, pairs: { i: number[]; j: number[] }, opts: { ts?: number[] } & OpOptions = {}):
  Promise<{ ts: number[]; i: number[]; j: number[]; kl: Float64Array[]; quadratic: Float64Array[] }> {
  const ts = opts.ts ?? Array.from({ length: 21 }, (_, k) => k / 20);
  if (pairs.i.length !== pairs.j.length) throw invalidArgument('klPairSegments: pairs.j', `as many indices as pairs.i (${pairs.i.length})`, pairs.j.length);
  const bi = data.batch(pairs.i), bj = data.batch(pairs.j);
  try {
    const r = await runOp(opts, (ctl) => addon().klPairSegment(modelHandle(model), bi.x.native, bj.x.native, ts, ctl));
    return { ts, i: pairs.i, j: pairs.j, ...segmentRows(r.kl, r.quadratic, ts) };
  } finally {
    for (const t of [bi.x, bi.y, bj.x, bj.y]) t.dispose();
  }
}
