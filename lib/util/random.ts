/**
 * The one random number source of the TypeScript side: xorshift128+ seeded from an integer, so
 * that the same seed gives the same stream on every machine (LibTorch's generators serve the
 * native side, seeded per op). Nothing in the library draws from Math.random.
 */

const MASK = 0xffffffffffffffffn;

/** A seeded stream of uniform numbers in [0, 1) with 53 random bits each. */
export function uniformStream(seed: number): () => number {
  let s0 = (BigInt(seed) * 0x9e3779b97f4a7c15n + 1n) & MASK;
  let s1 = (s0 ^ 0xbf58476d1ce4e5b9n) & MASK;
  return (): number => {
    let x = s0;
    const y = s1;
    s0 = y;
    x ^= (x << 23n) & MASK;
    s1 = x ^ y ^ (x >> 17n) ^ (y >> 26n);
    return Number(((s1 + y) & MASK) >> 11n) / 2 ** 53;
  };
}

/** A seeded permutation of 0..n-1 (Fisher–Yates over {@link uniformStream}). */
export function permutation(n: number, seed: number): number[] {
  const next = uniformStream(seed);
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}
