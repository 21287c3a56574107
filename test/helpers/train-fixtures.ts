/**
 * Fixtures of the attack and training tests: Fashion-MNIST subsets read straight from the IDX
 * files (independent of lib/science/data), and a small model trained natively in a few seconds.
 */
import * as fs from 'fs';
import * as zlib from 'zlib';
import { Tensor, Model, ModelSpec } from '../../lib';
import { Dataset } from '../../lib/science/data/dataset';
import { train, manualSeed } from '../../lib/science/train';

export const FMNIST = process.env.FISHERLENS_FASHION_MNIST ?? '/usr/share/datasets/fashion-mnist';

/** The first n images/labels of a Fashion-MNIST split as a Dataset ([n, 1, 28, 28] in [0, 1]). */
export function fashionSubset(split: 'train' | 'test', n: number, offset = 0): Dataset {
  const pre = split === 'train' ? 'train' : 't10k';
  const img = zlib.gunzipSync(fs.readFileSync(`${FMNIST}/${pre}-images-idx3-ubyte.gz`));
  const lab = zlib.gunzipSync(fs.readFileSync(`${FMNIST}/${pre}-labels-idx1-ubyte.gz`));
  const x = new Float32Array(n * 784);
  const y = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < 784; j++) x[i * 784 + j] = img[16 + (offset + i) * 784 + j] / 255;
    y[i] = BigInt(lab[8 + offset + i]);
  }
  return new Dataset(Tensor.from(x, [n, 1, 28, 28]), Tensor.from(y, [n]), { numClasses: 10, name: `fashion-mnist/${split}` });
}

/** A small CNN trained naturally for `epochs` on `data` (seeded; ~1 s per 1000 images). */
export async function trainedModel(data: Dataset, spec: ModelSpec = { arch: 'small-cnn' }, epochs = 2, seed = 0): Promise<Model> {
  manualSeed(seed);
  const m = Model.create(spec);
  await train(m, data, { method: 'natural', epochs, batchSize: 64, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, seed });
  await m.setTraining(false);
  return m;
}

/** Reads a little-endian float32 / int64 .npy file (C order) into a typed array and its shape. */
/**
 * The attack tests' model: an MLP (one hidden layer of 128) trained naturally for 3 epochs of SGD
 * on the first 3000 Fashion-MNIST training images (seed 1), in eval mode. Three test files attack it.
 */
export async function trainedMlp(): Promise<Model> {
  const tr = fashionSubset('train', 3000);
  manualSeed(1);
  const model = Model.create({ arch: 'mlp', hidden: [128] });
  await train(model, tr, { method: 'natural', epochs: 3, batchSize: 64, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, seed: 1 });
  await model.setTraining(false);
  tr.dispose();
  return model;
}

export function readNpy(file: string): { data: Float32Array | BigInt64Array | Float64Array; shape: number[] } {
  const b = fs.readFileSync(file);
  const hlen = b.readUInt16LE(8);
  const header = b.subarray(10, 10 + hlen).toString('latin1');
  const descr = /'descr':\s*'([^']+)'/.exec(header)![1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)![1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const body = b.subarray(10 + hlen);
  const copy = new Uint8Array(body.length);
  copy.set(body);
  if (descr === '<f4') return { data: new Float32Array(copy.buffer), shape };
  if (descr === '<f8') return { data: new Float64Array(copy.buffer), shape };
  if (descr === '<i8') return { data: new BigInt64Array(copy.buffer), shape };
  throw new Error(`unsupported npy dtype ${descr}`);
}

/** Asserts every element of xAdv lies in the ε-ball around x (float32 arithmetic, as LibTorch) and in [0, 1]. */
export function ballViolations(x: Float32Array, xAdv: Float32Array, perSample: number, norm: 'linf' | 'l2', eps: number): string[] {
  const bad: string[] = [];
  const e32 = Math.fround(eps);
  for (let i = 0; i < x.length; i++) {
    const a = xAdv[i];
    if (!(a >= 0 && a <= 1)) bad.push(`x_adv[${i}] = ${a} outside [0, 1]`);
    if (norm === 'linf') {
      const lo = Math.fround(x[i] - e32), hi = Math.fround(x[i] + e32);
      if (a < lo || a > hi) bad.push(`x_adv[${i}] = ${a} outside [${lo}, ${hi}]`);
    }
    if (bad.length > 5) return bad;
  }
  if (norm === 'l2') {
    for (let s = 0; s < x.length / perSample; s++) {
      let n = 0;
      for (let j = s * perSample; j < (s + 1) * perSample; j++) n += (xAdv[j] - x[j]) ** 2;
      if (Math.sqrt(n) > eps * (1 + 1e-6)) bad.push(`sample ${s}: ‖δ‖₂ = ${Math.sqrt(n)} > ${eps}`);
    }
  }
  return bad;
}
