/**
 * Pictures of what attacks and the Fisher information do to images (docs/experiments.md,
 * "Pictures"): for a seeded handful of samples, the clean image, each attack's adversarial example
 * and its perturbation, and the leading eigenvector of G_x, each with its caption (label,
 * prediction, confidence), written as 8-bit PNGs (pngjs; grey for one channel, RGB for three)
 * beside the float32 .npy of the values they show; and the class matrices behind the report's
 * heatmaps (mean predicted distribution per true class, the paper's Figure 1; mean KL between
 * classes, the view of its Figure 2). The file format they are written in (PNG, .npy, grid.json,
 * classes.json) is lib/science/picture-files.ts.
 */
import { Model } from './model';
import { Tensor } from '../binding/tensor';
import { Dataset, permutation } from './data/dataset';
import { attack, AttackParams } from './attacks';
import { autoAttackBatch, AutoAttackParams, resolveCascade } from './autoattack';
import { fisherExact } from './fisher';
import { CcklAccumulator, logProbs } from './metrics';
import { FisherLensError, invalidArgument } from '../util/errors';
import type { OpOptions } from '../binding/op';
import { PICTURES_VERSION, ClassMatrices, PictureCell, PictureData } from './picture-files';
import type { KeptExamples } from './robust';

/** Samples in a picture grid unless told otherwise (config `eval.pictures.samples`, CLI `--image-samples`). */
export const PICTURE_SAMPLES = 8;
/** Step of the central difference that fixes an eigenvector's sign (pixel units along a unit vector). */
export const SIGN_STEP = 1e-2;

/**
 * An attack of a grid: a name and lib/science/attacks.ts parameters, or an AutoAttack cascade
 * (`kind: 'autoattack'`), whose column shows per sample the example of the stage that broke it and,
 * for samples no stage broke, the last stage's attempt.
 */
export type PictureAttack = (AttackParams | (AutoAttackParams & { kind: 'autoattack' })) & { name: string };

/**
 * The adversarial examples of one grid column for x [S, ...] with labels y [S]; for a cascade also
 * per sample the stage that broke it (undefined: not broken) and the stage whose attempt is shown.
 */
async function columnExamples(model: Model, x: Tensor, y: Tensor, params: PictureAttack, numClasses: number, op: OpOptions): Promise<{
  xAdv: Tensor; by?: (string | undefined)[]; tried?: string;
}> {
  const { name: _name, ...p } = params;
  if (p.kind !== 'autoattack') return { xAdv: (await attack(model, x, y, { ...(p as AttackParams), signal: op.signal })).xAdv };
  const c = resolveCascade(p as AutoAttackParams, numClasses);
  const r = await autoAttackBatch(model, x, y, c, { seed: p.seed ?? 0, signal: op.signal });
  const by = Array.from(r.brokenBy, (b) => (b >= 0 ? c.stages[b].name : undefined));
  // samples no stage broke show the last stage's attempt (native autoattack.cc keeps it)
  return { xAdv: r.xAdv, by, tried: r.brokenBy.some((b) => b === -1) ? c.stages[c.stages.length - 1].name : undefined };
}

/**
 * `count` sample indices spread over classes, reproducible from `seed`: in a seeded order, each
 * round takes at most one image per class; rows are sorted by (label, index).
 */
export function pictureSamples(labels: ArrayLike<number>, count: number, seed: number): number[] {
  const n = labels.length;
  if (!Number.isInteger(count) || count < 1) throw invalidArgument('picture samples', 'an integer >= 1', count);
  const want = Math.min(count, n);
  const order = permutation(n, seed);
  const taken = new Uint8Array(n);
  const picked: number[] = [];
  while (picked.length < want) {
    const round = new Set<number>();
    for (const i of order) {
      if (taken[i] || round.has(labels[i])) continue;
      taken[i] = 1;
      round.add(labels[i]);
      picked.push(i);
      if (picked.length === want) break;
    }
  }
  return picked.sort((a, b) => labels[a] - labels[b] || a - b);
}

function argmaxRows(p: ArrayLike<number>, C: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < p.length / C; r++) {
    let a = 0;
    for (let c = 1; c < C; c++) if (p[r * C + c] > p[r * C + a]) a = c;
    out.push(a);
  }
  return out;
}

/** Eval-mode probabilities p(x) [S·C] and log p(x) in float64 (lib/science/metrics.ts logProbs: the model's dtype and device). */
async function evalProbs(model: Model, x: Tensor, opts: OpOptions): Promise<{ p: Float64Array; logp: Float64Array }> {
  const t = await logProbs(model, x, opts);
  try {
    const logp = t.toArray() as Float64Array;
    return { p: logp.map(Math.exp), logp };
  } finally {
    t.dispose();
  }
}

const maxAbs = (a: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
};
/** A scale for a signed column: its largest |value| to 3 significant digits, rounded up (within 0.1 % of it; 1 when all are 0). */
function signedScale(a: ArrayLike<number>): number {
  const m = maxAbs(a);
  if (!(m > 0)) return 1;
  const e = Math.pow(10, Math.floor(Math.log10(m)) - 2);
  // float32 rounding puts an L∞ perturbation at ε + 1e-9: that must not print as 0.101
  return Number((Math.ceil(m / e - 1e-3) * e).toPrecision(3));
}
const fmtScale = (s: number): string => Number(s.toPrecision(3)).toString();

/**
 * Computes the picture grid of `model` on the samples `indices` of `data` (eval mode; the model
 * is left as found): the clean images with p(x); per attack the adversarial examples (one batch,
 * the attack's seed), their predictions and perturbations; the unit leading eigenvector of G_x
 * (fisherExact) with its sign fixed so that the derivative of log p_ŷ along it is ≥ 0 (central
 * difference of step {@link SIGN_STEP} on float64 log-probabilities; an exact 0 keeps the sign
 * that makes the largest-|value| pixel positive).
 */
export async function pictureGrid(model: Model, data: Dataset, attacks: PictureAttack[], opts: { indices: number[]; examples?: KeptExamples } & OpOptions): Promise<PictureData> {
  const { indices, examples, ...op } = opts;
  if (examples && (examples.indices.length !== indices.length || examples.indices.some((v, k) => v !== indices[k]))) {
    throw invalidArgument('pictureGrid: examples', `the evaluation's examples of the same samples (${JSON.stringify(indices)})`, examples.indices);
  }
  if (indices.length === 0) throw invalidArgument('pictureGrid: indices', 'at least one sample index', indices);
  for (const i of indices) {
    if (!Number.isInteger(i) || i < 0 || i >= data.size) throw invalidArgument('pictureGrid: a sample index', `an integer in [0, ${data.size})`, i);
  }
  const names = new Set<string>();
  for (const a of attacks) {
    if (names.has(a.name)) throw invalidArgument('pictureGrid: an attack name', 'a name no other attack has (two attacks are named the same)', a.name);
    names.add(a.name);
  }
  const b = data.batch(indices);
  const tensors: Tensor[] = [b.x, b.y];
  try {
    const S = indices.length;
    const shape = data.imageShape;
    const D = shape.reduce((u, v) => u * v, 1);
    const C = data.numClasses;
    const labels = b.y.toNumbers();
    const x = Float32Array.from(b.x.toArray() as Float32Array | Float64Array);
    const f = await fisherExact(model, b.x, { eigvec: true, signal: op.signal });
    tensors.push(f.probs, f.spectrum, f.eigvec!);
    const p = f.probs.toArray() as Float64Array;
    const K = p.length / S;
    if (K !== C) throw new FisherLensError('ERR_SHAPE', `pictureGrid: the model has ${K} outputs but the data ${C} classes`);
    const pred = argmaxRows(p, C);
    const columns: PictureData['grid']['columns'] = [{ kind: 'clean', title: 'clean', mapping: 'unit', scale: 1 }];
    const values: Float32Array[] = [x];
    const cells: Omit<PictureCell, 'png'>[][] = [pred.map((k, s) => ({ prediction: k, confidence: p[s * C + k] }))];

    for (const a of attacks) {
      const name = a.name;
      // the evaluation's examples and outcomes where it kept them, else this batch attacked now
      const ka = examples?.attacks.find((e) => e.name === name);
      if (examples && !ka) throw invalidArgument('pictureGrid: examples', `an entry for attack '${name}'`, examples.attacks.map((e) => e.name));
      const r = ka
        ? { xAdv: Tensor.from(ka.xAdv, [S, ...shape]), by: ka.brokenBy, tried: ka.lastStage }
        : await columnExamples(model, b.x, b.y, a, C, op);
      tensors.push(r.xAdv);
      const adv = Float32Array.from(r.xAdv.toArray() as Float32Array | Float64Array);
      const pa = (await evalProbs(model, r.xAdv, op)).p;
      const predA = argmaxRows(pa, C);
      const delta = Float32Array.from(adv, (v, i) => v - x[i]);
      const scale = signedScale(delta);
      columns.push({ kind: 'adversarial', title: name.toUpperCase(), attack: name, mapping: 'unit', scale: 1 });
      values.push(adv);
      cells.push(predA.map((k, s) => {
        // broken: correct clean, wrong here; a sample wrong already when clean is neither robust nor
        // broken. With the evaluation's outcomes: exactly its flags (the table counts them)
        const robust = ka ? examples!.clean[s] === 1 && ka.success[s] === 0 : k === labels[s];
        const broken = ka ? examples!.clean[s] === 1 && ka.success[s] === 1 : !robust && pred[s] === labels[s];
        return {
          prediction: k, confidence: pa[s * C + k], robust,
          ...(broken ? { by: r.by?.[s] ?? name } : {}),
          ...(robust && r.tried ? { tried: r.tried } : {}),
        };
      }));
      columns.push({ kind: 'perturbation', title: `${name.toUpperCase()} δ (±${fmtScale(scale)})`, attack: name, mapping: 'signed', scale });
      values.push(delta);
      cells.push(labels.map((_, s) => {
        const d = delta.subarray(s * D, (s + 1) * D);
        let l2 = 0;
        for (const v of d) l2 += v * v;
        return { linf: maxAbs(d), l2: Math.sqrt(l2) };
      }));
    }

    // the eigenvector, sign fixed by the slope of log p_ŷ along it
    const v = Float32Array.from(f.eigvec!.toArray() as Float32Array | Float64Array);
    const h = SIGN_STEP;
    // x ± h v in float64 (the forward casts to the model's dtype)
    const xs = b.x.toArray() as Float32Array | Float64Array;
    const shifted = (sign: number) => Tensor.from(Float64Array.from(xs, (xi, i) => xi + sign * h * v[i]), [S, ...shape]);
    const plus = shifted(1);
    tensors.push(plus);
    const minus = shifted(-1);
    tensors.push(minus);
    const lp = (await evalProbs(model, plus, op)).logp;
    const lm = (await evalProbs(model, minus, op)).logp;
    const slopes: number[] = [];
    for (let s = 0; s < S; s++) {
      let slope = (lp[s * C + pred[s]] - lm[s * C + pred[s]]) / (2 * h);
      const row = v.subarray(s * D, (s + 1) * D);
      let flip = slope < 0;
      if (slope === 0) {
        let big = 0;
        for (let i = 1; i < D; i++) if (Math.abs(row[i]) > Math.abs(row[big])) big = i;
        flip = row[big] < 0;
      }
      if (flip) {
        for (let i = 0; i < D; i++) row[i] = -row[i];
        slope = -slope;
      }
      slopes.push(slope);
    }
    const vs = signedScale(v);
    columns.push({ kind: 'eigvec', title: `eigvec G_x (±${fmtScale(vs)})`, mapping: 'signed', scale: vs });
    values.push(v);
    cells.push(slopes.map((slope, s) => ({ lambdaMax: f.lambdaMax[s], slope })));
    return { grid: { version: PICTURES_VERSION, indices, labels, imageShape: shape, columns }, values, cells };
  } finally {
    for (const t of tensors) if (!t.disposed) t.dispose();
  }
}

/** {@link ClassMatrices} of `model` on `data` (eval-mode forward passes, one streaming pass; lib/science/metrics.ts CcklAccumulator). */
export async function classMatrices(model: Model, data: Dataset, opts: { batchSize?: number } & OpOptions = {}): Promise<ClassMatrices> {
  const acc = new CcklAccumulator({ keepLogp: false });
  try {
    for (const b of data.batches({ batchSize: opts.batchSize ?? 256 })) await acc.addBatch(model, b.x, b.y, opts);
    const m = acc.classMatrices();
    const r = acc.result();
    return { ...m, cckl: r.cckl, samples: r.n };
  } finally {
    acc.dispose();
  }
}

