/**
 * Which built-in architecture a state dict fits, from its keys and shapes alone (nothing is run):
 * for `fisherlens info` and for error messages that suggest a spec. The result is a guess to be
 * confirmed by planWeights against the model the spec builds; options the weights cannot tell
 * (activation, pooling, the input size behind a global average pool) are reported as assumed.
 */
import { LAYOUTS } from './keymap';
import { WeightTensor } from './types';

/** A built-in spec as inferred (the fields of lib's ModelSpec that weights determine). */
export interface InferredSpec {
  arch: string;
  inChannels: number;
  inputSize: number;
  numClasses: number;
  width?: number;
  hidden?: number[];
  mean?: number[];
  std?: number[];
}

export interface Inference {
  spec?: InferredSpec;
  /** the published layout recognised, if any */
  layout?: string;
  /** what the weights cannot tell and was assumed */
  assumed: string[];
  /** why no architecture fits (when spec is undefined) */
  why?: string;
}

/** Keys with wrappers removed and every published layout's renames applied; unused keys dropped. */
export function canonicalShapes(tensors: WeightTensor[]): { shapes: Map<string, number[]>; layouts: Set<string>; values: Map<string, WeightTensor> } {
  const shapes = new Map<string, number[]>();
  const values = new Map<string, WeightTensor>();
  const layouts = new Set<string>();
  for (const t of tensors) {
    let k = t.name.replace(/^(module\.|_orig_mod\.)+/, '');
    let drop = false;
    for (const l of LAYOUTS) {
      if (l.unused?.test(k)) {
        drop = true;
        layouts.add(l.label);
        break;
      }
      const r = l.rename?.(k);
      if (r) {
        k = r;
        layouts.add(l.label);
        break;
      }
    }
    if (drop) continue;
    shapes.set(k, t.shape);
    values.set(k, t);
  }
  return { shapes, layouts, values };
}

/** The spec a state dict fits, or why none does. */
export function inferSpec(tensors: WeightTensor[]): Inference {
  const { shapes: s, layouts, values } = canonicalShapes(tensors);
  const assumed: string[] = [];
  const has = (k: string) => s.has(k);
  const dim = (k: string, i: number) => (s.get(k) as number[])[i];
  const count = (re: RegExp) => new Set([...s.keys()].map((k) => re.exec(k)?.[1]).filter((x): x is string => x !== undefined)).size;
  const layout = layouts.size ? [...layouts].join('; ') : undefined;
  const square = (n: number) => {
    const r = Math.round(Math.sqrt(n));
    return r * r === n ? r : 0;
  };
  let spec: InferredSpec | undefined;
  let why: string | undefined;

  const globalPool = (c: number) => {
    assumed.push(`inputSize ${c === 3 ? 32 : 28} (a global average pool: the weights fit any input size)`);
    return c === 3 ? 32 : 28;
  };
  if (has('fcs.0.weight')) {
    const n = count(/^fcs\.(\d+)\.weight$/);
    const sizes = Array.from({ length: n }, (_, i) => dim(`fcs.${i}.weight`, 0));
    const inF = dim('fcs.0.weight', 1);
    const c = inF % 3 === 0 && square(inF / 3) ? 3 : 1;
    const side = square(inF / c);
    if (!side) why = `mlp input of ${inF} features is not C × S × S for C = 1 or 3`;
    else {
      if (c === 3 && square(inF)) assumed.push(`inChannels 3 (${inF} features could also be 1 × ${square(inF)}²)`);
      spec = { arch: 'mlp', inChannels: c, inputSize: side, numClasses: sizes[n - 1], hidden: sizes.slice(0, -1) };
    }
  } else if (has('conv4.weight') && has('fc3.weight') && dim('conv1.weight', 0) === 32) {
    const sz = square(dim('fc1.weight', 1) / 64);
    spec = { arch: 'small-cnn', inChannels: dim('conv1.weight', 1), inputSize: (sz * 2 + 4) * 2 + 4, numClasses: dim('fc3.weight', 0) };
  } else if (has('conv2.weight') && has('fc2.weight') && !has('fc3.weight') && dim('conv1.weight', 0) === 10) {
    const sz = square(dim('fc1.weight', 1) / 20);
    spec = { arch: 'mnist-net', inChannels: dim('conv1.weight', 1), inputSize: (sz * 2 + 4) * 2 + 4, numClasses: dim('fc2.weight', 0) };
  } else if (has('fc3.weight') && has('conv2.weight') && dim('conv1.weight', 0) === 6) {
    const sz = square(dim('fc1.weight', 1) / 16);
    spec = { arch: 'lenet', inChannels: dim('conv1.weight', 1), inputSize: (sz * 2 + 4) * 2 + 4, numClasses: dim('fc3.weight', 0) };
  } else if (has('classifier.weight') && has('features.0.weight')) {
    const convs = [...s.entries()].filter(([k, v]) => /^features\.\d+\.weight$/.test(k) && v.length === 4).length;
    const arch = ({ 8: 'vgg11', 10: 'vgg13', 13: 'vgg16' } as Record<number, string>)[convs];
    if (!arch) why = `a VGG with ${convs} conv layers (vgg11/13/16 have 8/10/13)`;
    else {
      const c = dim('features.0.weight', 1);
      spec = { arch, inChannels: c, inputSize: globalPool(c), numClasses: dim('classifier.weight', 0) };
      assumed.push('activation relu, pool max');
    }
  } else if (has('block1.layer.0.conv1.weight') && has('fc.weight')) {
    const n = count(/^block1\.layer\.(\d+)\./);
    const k = dim('block1.layer.0.conv1.weight', 0) / 16;
    const c = dim('conv1.weight', 1);
    spec = { arch: `wrn-${6 * n + 4}-${k}`, inChannels: c, inputSize: globalPool(c), numClasses: dim('fc.weight', 0) };
  } else if (has('layer4.0.conv1.weight') && has('linear.weight') && has('bn.weight')) {
    const c = dim('conv1.weight', 1);
    spec = { arch: 'preact-resnet18', inChannels: c, inputSize: globalPool(c), numClasses: dim('linear.weight', 0), width: dim('conv1.weight', 0) / 64 };
  } else if (has('layer3.0.conv1.weight') && has('linear.weight') && has('bn1.weight')) {
    const n = count(/^layer1\.(\d+)\./);
    const depth = 6 * n + 2;
    const c = dim('conv1.weight', 1);
    if (![20, 32, 44, 56].includes(depth)) why = `a CIFAR ResNet of depth ${depth} (built-in: 20, 32, 44, 56)`;
    else spec = { arch: `resnet${depth}`, inChannels: c, inputSize: globalPool(c), numClasses: dim('linear.weight', 0), width: dim('conv1.weight', 0) / 16 };
  } else {
    const keys = [...s.keys()];
    why = `no built-in architecture has these keys (${keys.slice(0, 6).join(', ')}${keys.length > 6 ? `, … ${keys.length} in all` : ''})`;
  }
  if (spec && spec.width === 1) delete spec.width;
  // normalisation saved with the weights (FisherLens exports carry it)
  for (const which of ['mean', 'std'] as const) {
    const t = values.get(`norm_${which}`);
    if (spec && t && t.dtype === 'float32' && t.shape.reduce((a, b) => a * b, 1) === spec.inChannels) {
      const b = Buffer.from(t.storage.subarray(t.offset * 4, (t.offset + spec.inChannels) * 4));
      const v = [...new Float32Array(b.buffer, b.byteOffset, spec.inChannels)];
      if (v.some((x) => x !== (which === 'mean' ? 0 : 1))) spec[which] = v;
    }
  }
  return { spec, layout, assumed, why };
}
