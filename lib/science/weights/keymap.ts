/**
 * Key mapping: which tensor of a published checkpoint goes into which parameter or buffer of a
 * built-in architecture, so a file loads without the user renaming anything.
 *
 * A file key is tried as it is, then with its wrappers removed (`module.` from DataParallel /
 * DistributedDataParallel, `_orig_mod.` from torch.compile, any number of times), then through
 * the published layouts' renames (LAYOUTS). Keys a layout declares unused (TRADES' WideResNet's
 * `sub_block1.*`) are dropped and reported. The normalisation buffers (`norm_mean`, `norm_std`),
 * which published files do not have, keep the spec's values; `num_batches_tracked`, which files
 * from torch < 0.4.1 lack, keeps its value. Everything else must match: missing, unexpected and
 * mis-shaped keys are one ERR_FORMAT listing them all, unless `strict: false`, which lists them
 * in a warning and loads what matches. Floating tensors of another float dtype are cast (and
 * named in a warning); a float/integer mismatch is mis-typed.
 */
import { DTYPES, WeightDtype, WeightTensor, formatError } from './types';

/** A parameter or buffer of the model being loaded: its state_dict name, shape and dtype. */
export interface TargetEntry {
  name: string;
  shape: number[];
  dtype: WeightDtype;
}

/** One published layout: how its keys map onto the built-ins' names. */
export interface Layout {
  /** what users know it as, for the report */
  label: string;
  /** architectures (spec.arch) it applies to */
  arch: RegExp;
  /** a file key → the built-in name (null: not this layout's key) */
  rename?: (key: string) => string | null;
  /** file keys the layout's forward never uses */
  unused?: RegExp;
}

/** The published layouts FisherLens maps (docs/models.md, "Weights from PyTorch"). */
export const LAYOUTS: readonly Layout[] = [
  {
    // TRADES' MNIST SmallCNN: nn.Sequential(OrderedDict) blocks feature_extractor (conv1..conv4,
    // relu, maxpool) and classifier (fc1, relu, drop, fc2, relu, fc3)
    label: "TRADES' SmallCNN (feature_extractor.* / classifier.*)",
    arch: /^small-cnn$/,
    rename: (k) => {
      const m = /^feature_extractor\.(conv[1-4]\..+)$/.exec(k) ?? /^classifier\.(fc[1-3]\..+)$/.exec(k);
      return m ? m[1] : null;
    },
  },
  {
    // TRADES' WideResNet builds a second first-stage block, sub_block1, that forward never calls
    label: "TRADES' WideResNet (unused sub_block1.*)",
    arch: /^wrn-\d+-\d+$/,
    unused: /^sub_block1\./,
  },
];

/** Wrapper prefixes that do not change the module tree. */
const WRAPPERS = /^(module\.|_orig_mod\.)+/;
/** Buffers whose absence from a file is expected, and what happens then. */
const FROM_SPEC = /^norm_(mean|std)$/;
const OPTIONAL = /(^|\.)num_batches_tracked$/;

export interface Assignment {
  /** the model's name */
  target: string;
  /** the file's tensor */
  source: WeightTensor;
  /** the file's dtype, when it differs from the model's (a cast) */
  castFrom?: WeightDtype;
}

/** What loading a file into a model will do, and everything that did not fit. */
export interface WeightsPlan {
  assign: Assignment[];
  /** how keys were mapped (e.g. "module. prefix removed from 62 keys") */
  mapped: string[];
  /** file keys dropped on purpose, with the layout that says so */
  ignored: string[];
  /** model names no file key maps to */
  missing: string[];
  /** file keys that map to no model name */
  unexpected: string[];
  /** keys whose shape or kind differs: "name: file [3, 3] float32, model [3] float32" */
  mismatched: string[];
  /** model buffers kept as they are (norm_* from the spec, num_batches_tracked of old files) */
  kept: string[];
  /** casts, and under strict: false the problems */
  warnings: string[];
}

const list = (xs: string[], n = 12) => (xs.length > n ? `${xs.slice(0, n).join(', ')}, … (${xs.length} in all)` : xs.join(', '));
const shapeStr = (s: number[]) => `[${s.join(', ')}]`;

/**
 * Plans loading `tensors` into a model of architecture `arch` whose state is `target`. Throws one
 * ERR_FORMAT naming every missing, unexpected and mis-shaped key unless `strict` is false.
 */
export function planWeights(arch: string, target: TargetEntry[], tensors: WeightTensor[], opts: { strict?: boolean; what?: string } = {}): WeightsPlan {
  const strict = opts.strict ?? true;
  const what = opts.what ?? 'weights file';
  const byName = new Map(target.map((e) => [e.name, e]));
  const layouts = LAYOUTS.filter((l) => l.arch.test(arch));
  const plan: WeightsPlan = { assign: [], mapped: [], ignored: [], missing: [], unexpected: [], mismatched: [], kept: [], warnings: [] };
  const taken = new Map<string, string>(); // model name → file key
  let unwrapped = 0;
  const renamed = new Map<string, number>();
  const ignoredBy = new Map<string, string[]>();
  const casts = new Map<string, string[]>();

  for (const t of tensors) {
    let key = t.name;
    if (!byName.has(key)) {
      const bare = key.replace(WRAPPERS, '');
      if (bare !== key) {
        key = bare;
        unwrapped++;
      }
    }
    if (!byName.has(key)) {
      let done = false;
      for (const l of layouts) {
        if (l.unused?.test(key)) {
          ignoredBy.set(l.label, [...(ignoredBy.get(l.label) ?? []), t.name]);
          done = true;
          break;
        }
        const r = l.rename?.(key);
        if (r && byName.has(r)) {
          renamed.set(l.label, (renamed.get(l.label) ?? 0) + 1);
          key = r;
          break;
        }
      }
      if (done) continue;
    }
    const e = byName.get(key);
    if (!e) {
      plan.unexpected.push(t.name);
      continue;
    }
    const prev = taken.get(key);
    if (prev !== undefined) {
      plan.mismatched.push(`${key}: given twice (${prev} and ${t.name})`);
      continue;
    }
    taken.set(key, t.name);
    const fileKind = DTYPES[t.dtype].float, modelKind = DTYPES[e.dtype].float;
    const sameShape = t.shape.length === e.shape.length && t.shape.every((v, i) => v === e.shape[i]);
    // a normalisation buffer saved flat ([C] for [1, C, 1, 1]) is the same values
    const reshapable = FROM_SPEC.test(key) && t.shape.reduce((a, b) => a * b, 1) === e.shape.reduce((a, b) => a * b, 1);
    if ((!sameShape && !reshapable) || fileKind !== modelKind) {
      plan.mismatched.push(`${key}: file ${shapeStr(t.shape)} ${t.dtype}, model ${shapeStr(e.shape)} ${e.dtype}`);
      continue;
    }
    const a: Assignment = { target: key, source: t };
    if (t.dtype !== e.dtype) {
      a.castFrom = t.dtype;
      const c = `${t.dtype}→${e.dtype}`;
      casts.set(c, [...(casts.get(c) ?? []), key]);
    }
    plan.assign.push(a);
  }
  for (const e of target) {
    if (taken.has(e.name)) continue;
    if (FROM_SPEC.test(e.name) || OPTIONAL.test(e.name)) plan.kept.push(e.name);
    else plan.missing.push(e.name);
  }
  if (unwrapped) plan.mapped.push(`wrapper prefix (module. / _orig_mod.) removed from ${unwrapped} keys`);
  for (const [l, n] of renamed) plan.mapped.push(`${l}: ${n} keys renamed`);
  for (const [l, keys] of ignoredBy) plan.ignored.push(`${l}: ${keys.length} keys ignored (${list(keys, 3)})`);
  for (const [c, keys] of casts) plan.warnings.push(`cast ${c}: ${list(keys, 6)}`);

  const problems: string[] = [];
  if (plan.missing.length) problems.push(`missing from the file (${plan.missing.length}): ${list(plan.missing)}`);
  if (plan.unexpected.length) problems.push(`not in the model (${plan.unexpected.length}): ${list(plan.unexpected)}`);
  if (plan.mismatched.length) problems.push(`mis-shaped or mis-typed (${plan.mismatched.length}): ${list(plan.mismatched, 6)}`);
  if (problems.length) {
    const msg = `${what} does not fit ${arch}: ${problems.join('; ')}`;
    if (strict) throw formatError(`${msg}. Load what matches with strict: false, or check the spec (arch, numClasses, width, inChannels)`);
    plan.warnings.push(`${msg} (strict: false: loaded the ${plan.assign.length} tensors that match)`);
  }
  return plan;
}
