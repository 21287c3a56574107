/** Error codes carried by every FisherLens error as `err.code`. */
export type ErrorCode =
  | 'ERR_SHAPE' | 'ERR_DTYPE' | 'ERR_DEVICE' | 'ERR_IO' | 'ERR_FORMAT' | 'ERR_ABORTED'
  | 'ERR_ARG' | 'ERR_DISPOSED' | 'ERR_VALUE' | 'ERR_TORCH' | 'ERR_INTERNAL' | 'ERR_MEMORY' | 'ERR_LOAD' | 'ERR_CONFIG' | 'ERR_BUILD';

/** The one error type of FisherLens: a message saying what was expected and what came, and a code. */
export class FisherLensError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FisherLensError';
    this.code = code;
  }
}

/**
 * A value as an error message shows it: strings quoted ('x'), undefined as "nothing", a Tensor or
 * other class instance by its class ("a Tensor"), arrays and plain objects as JSON cut at 60
 * characters, everything else as String() gives it (NaN, Infinity, 3).
 */
export function show(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (v === undefined) return 'nothing';
  if (v === null || typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'symbol') return v.toString();
  const proto = Object.getPrototypeOf(v) as object | null;
  if (!Array.isArray(v) && proto !== null && proto !== Object.prototype) {
    const name = (v as object).constructor?.name;
    return name ? `a${/^[AEIOU]/.test(name) ? 'n' : ''} ${name}` : 'an object';
  }
  let s: string | undefined;
  try { s = JSON.stringify(v); } catch { s = undefined; }  // a cycle: say what it is instead
  if (s === undefined) return Array.isArray(v) ? 'an array' : 'an object';
  return s.length > 60 ? s.slice(0, 57) + '...' : s;
}

/**
 * The one argument error (ERR_ARG) of FisherLens, in one format: `<name>: expected <expected>,
 * got <actual>` (as sharp's invalidParameterError). `name` is what the user wrote: a parameter
 * (`setThreads(n)`), an option (`attack option 'kind'`), a CLI flag (`--limit`). `expected` says
 * what would be accepted, with any hint in parentheses. `actual` is the value received, shown by
 * {@link show}; leave it out (not undefined) where no single value is to blame (a missing
 * companion option, an empty dataset), and the message ends after `expected`.
 */
export function invalidArgument(name: string, expected: string, ...actual: [] | [unknown]): FisherLensError {
  const got = actual.length ? `, got ${show(actual[0])}` : '';
  return new FisherLensError('ERR_ARG', `${name}: expected ${expected}${got}`);
}

/** Maps an error thrown by the addon (an Error with `code`) to a FisherLensError; others pass through. */
export function fromNative(e: unknown): unknown {
  if (e instanceof FisherLensError) return e;
  const code = e instanceof Error ? (e as Error & { code?: unknown }).code : undefined;
  if (e instanceof Error && typeof code === 'string' && code.startsWith('ERR_')) {
    return new FisherLensError(code as ErrorCode, e.message);
  }
  return e;
}

/** Runs a synchronous native call, mapping its errors to FisherLensError. */
export function sync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw fromNative(e);
  }
}
