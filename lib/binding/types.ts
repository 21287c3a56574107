/**
 * Types the native surface (lib/binding/addon-types.ts) shares with the science wrappers. A leaf:
 * it imports nothing, so the binding never depends on the science; the science modules re-export
 * these where users look for them (FisherEngine from fisher, SyntheticOptions from data).
 */

/**
 * How J v and Jᵀ u were computed: 'linear' through the model's linearisation recorded in one
 * forward pass (a JVP is one bias-free forward of v, a VJP one input-only backward): built-in
 * architectures, and TorchScript models whose forward graph lowers into it (every op on the
 * input's path one the engine knows; docs/fisher.md lists them). 'autograd' through LibTorch's
 * autograd otherwise, or with `autograd: true` (a JVP is a double backward); the result's
 * `engineReason` says why. The numbers agree to rounding.
 */
export type FisherEngine = 'linear' | 'autograd';

/** Options of synthetic() (lib/science/data/index.ts; native data.cc synthetic). */
export interface SyntheticOptions {
  /**
   * 'gaussian': K class means uniform in [0.25, 0.75]^D, x = clip(mean_y + noise·N(0, I), 0, 1).
   * 'linear': x uniform in [0, 1]^D, y = argmax_k (W (x − 0.5))_k for a random W, keeping only
   * points whose top-two logit margin is ≥ `margin` (linearly separable with that margin).
   */
  kind?: 'gaussian' | 'linear';
  /** Samples (default 1000). */
  n?: number;
  /** Classes K (default 10). */
  numClasses?: number;
  /** Image channels (default 1). */
  channels?: number;
  /** Image height = width (default 8). */
  size?: number;
  /** Gaussian noise std in pixel units (default 0.1). */
  noise?: number;
  /** Linear margin (default 0.05). */
  margin?: number;
  /** Seed: the same seed gives the same set (default 0). */
  seed?: number;
}
