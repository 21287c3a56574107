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
