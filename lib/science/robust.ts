/**
 * Robust evaluation: streams a dataset through a list of attacks (single attacks of
 * lib/science/attacks.ts and AutoAttack cascades of lib/science/autoattack.ts) and reports clean
 * accuracy, robust accuracy per attack and the per-sample worst case. It depends on the attacks,
 * never the reverse.
 */
import { addon } from '../binding/native';
import { runOp, OpOptions } from '../binding/op';
import { Tensor } from '../binding/tensor';
import { Model } from './model';
import { Dataset, firstBatches } from './data/dataset';
import { NpyWriter } from './data';
import { attack, AttackParams, AttackResult } from './attacks';
import { autoAttackBatch, resolveCascade, sanityWarnings, AutoAttackParams, ResolvedCascade } from './autoattack';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { ensureDir, writeFileAtomic } from '../util/files';
import { FisherLensError, invalidArgument } from '../util/errors';
import { EVALUATE_OPTIONS } from './options';

/** An attack in an evaluation: its parameters and a name for reports; `kind: 'autoattack'` is the cascade (lib/science/autoattack.ts). */
export type NamedAttack = (AttackParams & { name?: string }) | (AutoAttackParams & { kind: 'autoattack'; name?: string });

/** Options of {@link evaluateRobustness}. */
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
  /**
   * A folder (a run's) where each batch's results are kept as it ends, atomically, one JSON file
   * per batch under a key of the attacks, the sample count, the batch size and `resumeKey`: a
   * repeated call skips the batches it finds there, and its result equals an uninterrupted call's
   * (a long AutoAttack evaluation resumes by batch). The key's files are removed once the call
   * completes. Not with `save` (the batches' examples are not kept).
   */
  resumeDir?: string;
  /** Part of the resume key: what identifies the model (e.g. its checkpoint's size and mtime). */
  resumeKey?: string;
  /** Graceful stop: rejects with ERR_ABORTED at the next batch boundary (the batches done stay in resumeDir). */
  stopAtBatch?: AbortSignal;
  /**
   * Keep these samples' adversarial examples and outcomes (indices into the first `limit`
   * samples), as the evaluation's batches made them: the picture grid shows them instead of
   * attacking again, so its marks are the evaluation's (lib/science/pictures.ts pictureGrid).
   * Batches restored from `resumeDir` have no examples: then nothing is kept (the grid attacks again).
   */
  keep?: readonly number[];
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

/** What an evaluation kept of some samples ({@link EvaluateOptions.keep}), in `indices` order. */
export interface KeptExamples {
  indices: number[];
  /** 1 where the clean input is classified correctly [S]. */
  clean: Uint8Array;
  attacks: {
    name: string;
    /** The adversarial examples, float32 [S·C·H·W] (autoattack: the breaking stage's, else the last stage's attempt). */
    xAdv: Float32Array;
    /** 1 where the attack succeeded (misclassified at x_adv) [S]. */
    success: Uint8Array;
    /** autoattack: the stage that broke each sample (undefined: none), and its last stage's name. */
    brokenBy?: (string | undefined)[];
    lastStage?: string;
  }[];
}

/** Result of {@link evaluateRobustness}. */
export interface RobustnessResult {
  samples: number;
  /** Clean (standard) accuracy. */
  accuracy: number;
  attacks: AttackSummary[];
  /** Accuracy under the per-sample worst case over all attacks (correct only if every attack failed). */
  worstCaseAccuracy: number;
  /** Per sample: 1 correct clean, and 1 correct under every attack [N]. */
  perSample: { clean: Uint8Array; worst: Uint8Array };
  /** The samples of {@link EvaluateOptions.keep}. */
  kept?: KeptExamples;
}

/**
 * Streams over `data` and returns clean accuracy, robust accuracy under each attack and the
 * per-sample worst case over all attacks. Each batch/attack pair gets its own seed derived from
 * the attack's seed, so results are reproducible and independent of the batch size only through it.
 */
export async function evaluateRobustness(model: Model, data: Dataset, attacks: NamedAttack[], opts: EvaluateOptions = {}): Promise<RobustnessResult> {
  const n = Math.min(data.size, opts.limit ?? data.size);
  const batchSize = opts.batchSize ?? EVALUATE_OPTIONS.batchSize.default;
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
  if (opts.resumeDir !== undefined && opts.save !== undefined) throw invalidArgument('resumeDir', 'no save with it (the batches\' examples are not kept)');
  const resumeFolder = opts.resumeDir !== undefined
    ? path.join(opts.resumeDir, createHash('sha256').update(JSON.stringify({ attacks, names, n, batchSize, model: opts.resumeKey ?? '' })).digest('hex').slice(0, 16))
    : undefined;
  if (resumeFolder) ensureDir(resumeFolder, 'evaluation resume folder');
  const keep = opts.keep ? [...opts.keep] : undefined;
  for (const i of keep ?? []) if (!Number.isInteger(i) || i < 0 || i >= n) throw invalidArgument('evaluateRobustness option \'keep\'', `sample indices in [0, ${n})`, i);
  const D = data.imageShape.reduce((a, b) => a * b, 1);
  let kept: KeptExamples | undefined = keep && {
    indices: keep, clean: new Uint8Array(keep.length),
    attacks: attacks.map((a, i) => ({
      name: names[i], xAdv: new Float32Array(keep.length * D), success: new Uint8Array(keep.length),
      ...(cascades[i] ? { brokenBy: keep.map(() => undefined), lastStage: cascades[i]!.stages[cascades[i]!.stages.length - 1].name } : {}),
    })),
  };
  let done = 0;
  let bi = -1;
  try {
    for await (const batch of firstBatches(data, { limit: n, batchSize, signal: opts.signal })) {
      bi++;
      if (opts.stopAtBatch?.aborted) {
        batch.x.dispose(); batch.y.dispose();
        throw new FisherLensError('ERR_ABORTED', `evaluation stopped at a batch boundary after ${done} of ${n} samples${resumeFolder ? '; a repeated call continues from there' : ''}`);
      }
      // the kept samples in this batch: [position in keep, row in the batch]
      const B = batch.y.shape[0];
      const here = keep ? keep.flatMap((g, k) => (g >= done && g < done + B ? [[k, g - done]] : [])) : [];
      const file = resumeFolder ? path.join(resumeFolder, `batch-${bi}.json`) : undefined;
      const stored = file && fs.existsSync(file) ? readBatch(file) : undefined;
      const b: BatchRecord = stored ?? {
        clean: [], worst: [], robust: attacks.map(() => 0), succ: attacks.map(() => 0), normSum: attacks.map(() => 0),
        normCount: attacks.map(() => 0), lossSum: attacks.map(() => 0), checks: attacks.map(() => ({ probabilityRows: 0, zeroGradient: 0, nonFiniteGradient: 0, forwardDifference: 0 })),
      };
      try {
        if (!stored) await attackBatch(batch, b, here);
      } finally {
        batch.x.dispose(); batch.y.dispose();
      }
      // a restored batch brings its kept samples' examples back (a record without them: keep
      // nothing, and the grid attacks again)
      if (stored && here.length && kept) {
        const byK = new Map((stored.kept ?? []).map((e) => [e.k, e]));
        if (here.every(([k]) => byK.get(k)?.attacks.length === attacks.length)) {
          for (const [k] of here) {
            byK.get(k)!.attacks.forEach((e, a) => {
              const ka = kept!.attacks[a];
              const buf = Buffer.from(e.xAdv, 'base64');
              ka.xAdv.set(new Float32Array(buf.buffer, buf.byteOffset, D), k * D);
              ka.success[k] = e.success;
              if (ka.brokenBy) ka.brokenBy[k] = e.brokenBy;
            });
          }
        } else kept = undefined;
      }
      for (const [k, row] of here) if (kept) kept.clean[k] = b.clean[row];
      if (file && !stored) writeFileAtomic(file, JSON.stringify(b, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v)));
      for (let a = 0; a < attacks.length; a++) {
        robust[a] += b.robust[a]; succ[a] += b.succ[a]; normSum[a] += b.normSum[a]; normCount[a] += b.normCount[a]; lossSum[a] += b.lossSum[a];
        const k = checks[a], d = b.checks[a];
        k.probabilityRows += d.probabilityRows; k.zeroGradient += d.zeroGradient; k.nonFiniteGradient += d.nonFiniteGradient;
        k.forwardDifference = Math.max(k.forwardDifference, d.forwardDifference);
      }
      clean.set(b.clean, done);
      worst.set(b.worst, done);
      done += b.clean.length;
      opts.onBatch?.({ done, total: n, cleanCorrect: sum(clean.subarray(0, done)), worstCorrect: sum(worst.subarray(0, done)) });
    }
    writers.forEach((wr) => wr?.close());
    worstWriter?.close();
  } catch (e) {
    writers.forEach((wr) => wr?.abort());
    worstWriter?.abort();
    throw e;
  }
  if (resumeFolder) {
    fs.rmSync(resumeFolder, { recursive: true, force: true });
    try { fs.rmdirSync(opts.resumeDir!); } catch { /* other keys' batches are there */ }
  }
  return finish();

  /** One batch through every attack, into b (its counts; clean and worst per sample). */
  async function attackBatch(batch: { x: Tensor; y: Tensor; seed: number }, b: BatchRecord, here: number[][]): Promise<void> {
    let c: Uint8Array | undefined;
    let w = new Uint8Array(0);
    const advs: Tensor[] = [];
    const successes: Uint8Array[] = [];
    // no attack: a zero-step PGD gives the clean predictions
    const list: NamedAttack[] = attacks.length ? attacks : [{ kind: 'pgd', steps: 0, randomStart: false }];
    for (let a = 0; a < list.length; a++) {
      const { name: _name, ...params } = list[a];
      // each attack's own seed, moved on per batch as for every seeded pass (data/dataset.ts firstBatches)
      const seed = (params.seed ?? 0) + batch.seed;
      const r = params.kind === 'autoattack'
        ? await cascadeBatch(model, batch.x, batch.y, cascades[a]!, seed, b.checks[a], opts)
        : await attack(model, batch.x, batch.y, { ...params, seed, signal: opts.signal, onProgress: opts.onProgress });
      if (!c) {
        c = Uint8Array.from(r.cleanCorrect);
        w = Uint8Array.from(c);
      }
      if (a >= attacks.length) { r.xAdv.dispose(); break; }
      if (here.length && kept) {
        const ka = kept.attacks[a];
        const idx = Tensor.fromNested(here.map(([, row]) => row), { dtype: 'int64' });
        const rows = r.xAdv.index(idx);
        idx.dispose();
        const v = rows.toArray() as Float32Array | Float64Array;
        rows.dispose();
        here.forEach(([k, row], j) => {
          ka.xAdv.set(v.subarray(j * D, (j + 1) * D), k * D);
          ka.success[k] = r.success[row];
          const by = 'brokenBy' in r ? (r.brokenBy as Float64Array) : undefined;
          if (ka.brokenBy && by) ka.brokenBy[k] = by[row] >= 0 ? cascades[a]!.stages[by[row]].name : undefined;
          // and into the batch's record, for a resumed evaluation
          b.kept ??= here.map(([kk]) => ({ k: kk, attacks: [] }));
          const x32 = ka.xAdv.subarray(k * D, (k + 1) * D);
          b.kept[j].attacks[a] = { success: ka.success[k], ...(ka.brokenBy?.[k] !== undefined ? { brokenBy: ka.brokenBy[k] } : {}),
            xAdv: Buffer.from(x32.buffer, x32.byteOffset, x32.byteLength).toString('base64') };
        });
      }
      for (let i = 0; i < c.length; i++) {
        const ok = c[i] === 1 && r.success[i] === 0;
        if (ok) b.robust[a]++;
        else w[i] = 0;
        if (r.success[i] === 1) b.succ[a]++;
        if (r.success[i] === 1 && c[i] === 1) { b.normCount[a]++; b.normSum[a] += r.norm[i]; }
        b.lossSum[a] += r.loss[i];
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
    b.clean = Array.from(c!);
    b.worst = Array.from(w);
  }

  function finish(): RobustnessResult {
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
      ...(kept ? { kept } : {}),
    };
  }
}

/** One batch's share of an evaluation (per attack: counts and sums; per sample: clean and worst-case correct). */
interface BatchRecord {
  clean: number[]; worst: number[];
  robust: number[]; succ: number[]; normSum: number[]; normCount: number[]; lossSum: number[];
  checks: { probabilityRows: number; zeroGradient: number; nonFiniteGradient: number; forwardDifference: number }[];
  /**
   * The batch's samples of {@link EvaluateOptions.keep}: position k in keep, and per attack its
   * outcome and example (float32, base64), so a resumed evaluation still has the grid's examples.
   */
  kept?: { k: number; attacks: { success: number; brokenBy?: string; xAdv: string }[] }[];
}

/** A kept batch (NaN and ±Infinity were written as strings). */
function readBatch(file: string): BatchRecord | undefined {
  // written atomically; anything unreadable is attacked again
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'), (_k, v: unknown) => (v === 'NaN' || v === 'Infinity' || v === '-Infinity' ? Number(v) : v)) as BatchRecord;
  } catch {
    return undefined;
  }
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
  acc: { probabilityRows: number; zeroGradient: number; nonFiniteGradient: number; forwardDifference: number }, opts: OpOptions): Promise<AttackResult & { brokenBy: Float64Array }> {
  const b = await autoAttackBatch(model, x, y, c, { seed, signal: opts.signal, onProgress: opts.onProgress });
  acc.probabilityRows += b.checks.probabilityRows;
  acc.zeroGradient += b.checks.zeroGradient;
  acc.nonFiniteGradient += b.checks.nonFiniteGradient;
  acc.forwardDifference = Math.max(acc.forwardDifference, b.checks.forwardDifference);
  return {
    xAdv: b.xAdv, norm: b.norm, loss: new Float64Array(b.brokenBy.length).fill(NaN), brokenBy: b.brokenBy,
    success: Uint8Array.from(b.brokenBy, (v) => (v === -1 ? 0 : 1)),
    cleanCorrect: Uint8Array.from(b.brokenBy, (v) => (v === -2 ? 0 : 1)),
  };
}

function sum(a: Uint8Array): number {
  let s = 0;
  for (const v of a) s += v;
  return s;
}
