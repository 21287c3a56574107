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
