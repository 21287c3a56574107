/**
 * Summary statistics of per-sample values, the one home for them: Fisher summaries
 * ({@link summarize}), training's probe metrics and run summaries (quantiles, mean, median).
 * Quantiles interpolate linearly between order statistics, as numpy's default does.
 */

/** Arithmetic mean in the order given (NaN when empty). */
export function mean(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  return values.length > 0 ? s / values.length : NaN;
}

/**
 * Mean and its standard error s/√n (s the sample standard deviation, n − 1 in the denominator) of
 * sampled values (se: Infinity for fewer than two values; mean: NaN when empty).
 */
export function meanSe(values: ArrayLike<number>): { mean: number; se: number } {
  const n = values.length;
  const m = mean(values);
  let ss = 0;
  for (let k = 0; k < n; k++) ss += (values[k] - m) ** 2;
  return { mean: m, se: n > 1 ? Math.sqrt(ss / (n - 1) / n) : Infinity };
}

/** The q-quantile (0 ≤ q ≤ 1) of values sorted ascending (NaN when empty). */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** An ascending sorted copy (numeric order). */
export function sorted(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values).sort();
}

/** The median (the 0.5-quantile; NaN when empty). */
export function median(values: ArrayLike<number>): number {
  return quantile(sorted(values), 0.5);
}

/** Summary of per-sample values: mean, median and quantiles (linear interpolation, as numpy). */
export interface Summary { mean: number; median: number; q05: number; q25: number; q75: number; q95: number; n: number }

/** Mean, median and the 5/25/75/95% quantiles of `values` (NaN fields when empty). */
export function summarize(values: ArrayLike<number>): Summary {
  const a = sorted(values);
  const q = (f: number): number => quantile(a, f);
  return { mean: mean(a), median: q(0.5), q05: q(0.05), q25: q(0.25), q75: q(0.75), q95: q(0.95), n: a.length };
}

/** Quantiles of a per-sample quantity (run summaries). */
export interface Quantiles { min: number; q05: number; q25: number; q50: number; q75: number; q95: number; max: number }

/** Minimum, 5/25/50/75/95% quantiles and maximum of `values` (NaN when empty). */
export function quantiles(values: ArrayLike<number>): Quantiles {
  const s = sorted(values);
  return {
    min: s.length ? s[0] : NaN, q05: quantile(s, 0.05), q25: quantile(s, 0.25), q50: quantile(s, 0.5),
    q75: quantile(s, 0.75), q95: quantile(s, 0.95), max: s.length ? s[s.length - 1] : NaN,
  };
}
