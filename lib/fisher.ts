/**
 * Per-sample Fisher information of the output distribution w.r.t. the input (shared/PAPER.md §3):
 * G_x = Jᵀ M J, J = ∂z/∂x, M = diag(p) − p pᵀ. Units: logits per pixel squared (nats per pixel²
 * for KL: KL(p(x) ‖ p(x+δ)) ≈ ½ δᵀ G_x δ with δ in pixel units).
 */
import { addon, NativeModel, NativeTensor, NativeCtl } from './native';
import { runOp, OpOptions } from './op';
import { Model } from './model';
import { Tensor } from './tensor';

interface FisherAddon {
  fisherExact(m: NativeModel, x: NativeTensor, o: { eigvec?: boolean }, ctl?: NativeCtl): Promise<{
    lambdaMax: Float64Array; trace: Float64Array; frobenius: Float64Array;
    spectrum: NativeTensor; probs: NativeTensor; eigvec?: NativeTensor;
  }>;
}

/** Exact per-sample Fisher quantities of one batch. */
export interface ExactFisherResult {
  /** λ_max(G_x) per sample [B]. */
  lambdaMax: Float64Array;
  /** tr G_x per sample [B]. */
  trace: Float64Array;
  /** ‖G_x‖_F per sample [B]. */
  frobenius: Float64Array;
  /** Non-zero spectrum of G_x, descending: [B, C] float64. */
  spectrum: Tensor;
  /** p(x): [B, C] float64. */
  probs: Tensor;
  /** Unit leading eigenvector of G_x, shaped like x (when `eigvec: true`). */
  eigvec?: Tensor;
}

/**
 * Exact Fisher of each sample of the batch x [B, C, H, W] from K = J Jᵀ (one forward and C
 * input-gradient passes), in eval mode without weight gradients; the model is left as found.
 */
export async function fisherExact(model: Model, x: Tensor, opts: { eigvec?: boolean } & OpOptions = {}): Promise<ExactFisherResult> {
  const r = await runOp(opts, (ctl) => addon<FisherAddon>().fisherExact(model.native, x.native, { eigvec: opts.eigvec ?? false }, ctl));
  return {
    lambdaMax: r.lambdaMax, trace: r.trace, frobenius: r.frobenius,
    spectrum: new Tensor(r.spectrum), probs: new Tensor(r.probs),
    eigvec: r.eigvec ? new Tensor(r.eigvec) : undefined,
  };
}
