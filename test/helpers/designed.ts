/**
 * Models built to have a property, and inputs placed by margin against them, for tests that need
 * an outcome (broken / robust at ε) on any CPU (issue 22): a trained model's outcome on a few
 * samples moves with the rounding of the CPU that trained and attacks it; these do not.
 *
 * The block-linear model (scripts/reference/designed_models.py): [B, 1, 28, 28] in [0, 1] →
 * logits [B, 10], z_c = scale · (mean of x over block c), block c = flattened pixels
 * 78c … 78c + 77 (780…783 unread), no bias. Written by python3-torch as TorchScript (float32).
 */
import { execFileSync } from 'child_process';
import * as path from 'path';
import { Tensor } from '../../lib';
import { Dataset } from '../../lib/science/data/dataset';
import { PY } from './python';

/** Pixels per class block of the block-linear model. */
export const BLOCK = 78;

/**
 * Writes the block-linear model to `file`. Starts a Python process: call it while no native op of
 * this process runs (a fork while OpenBLAS works on another thread can hang that thread).
 */
export function writeBlockLinear(file: string, scale = 40): void {
  execFileSync(PY, [path.join(__dirname, '..', '..', '..', 'scripts', 'reference', 'designed_models.py'), 'block-linear', file, String(scale)], {
    stdio: 'inherit', env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' },
  });
}

/** One 28×28 image [784] for the block-linear model: block c at `blocks[c]`, every other pixel at `rest`. */
export function blockImage(blocks: Record<number, number>, rest: number): Float32Array {
  const x = new Float32Array(784).fill(rest);
  for (const [c, v] of Object.entries(blocks)) x.fill(v, BLOCK * Number(c), BLOCK * (Number(c) + 1));
  return x;
}

/**
 * Rows of a data set for the block-linear model (scale 40) at ε ≤ 0.1 whose outcome follows from
 * their margins (every pixel in [0.2, 0.8]: the box never binds; z_c − z_j moves by at most
 * 2·40·ε ≤ 8 in the ball):
 *  - 'robust' (label y): block y at 0.8, the rest at 0.2: z_y − z_j = 24 > 8, so no point of the
 *    ball is misclassified, whatever an attack does;
 *  - 'broken' (label y, runner-up k = y + 1): block y at 0.51, block k at 0.5, the rest at 0.2:
 *    clean margin 0.4 (float32 logits round at ~1e-5). The input gradient of any loss of the logits
 *    is constant on each block, and for the cross-entropy, the CW margin and DLR its sign there
 *    is exact: negative on block y, positive on block k (p_k ≥ e^−8.4 in the ball). So one sign
 *    step of ε (or steps adding up to ε, from any start in the ball) takes block y down and block k
 *    up by ε: z_k − z_y = 80ε − 0.4 > 0 for ε > 0.005, and z_k − z_j ≥ 40·0.3 > 0:
 *    misclassified;
 *  - 'wrong' (label y): block y + 1 at 0.51 above block y at 0.5: misclassified clean.
 * Labels cycle through 0..9 with the row index.
 */
export type BlockRow = 'robust' | 'broken' | 'wrong';
export function blockData(rows: BlockRow[]): Dataset {
  const D = 784;
  const x = new Float32Array(rows.length * D);
  const y = new BigInt64Array(rows.length);
  rows.forEach((kind, s) => {
    const label = s % 10, k = (label + 1) % 10;
    const blocks = kind === 'robust' ? { [label]: 0.8 } : kind === 'broken' ? { [label]: 0.51, [k]: 0.5 } : { [label]: 0.5, [k]: 0.51 };
    x.set(blockImage(blocks, 0.2), s * D);
    y[s] = BigInt(label);
  });
  return new Dataset(Tensor.from(x, [rows.length, 1, 28, 28]), Tensor.from(y, [rows.length]), { numClasses: 10, name: 'block-linear rows' });
}
