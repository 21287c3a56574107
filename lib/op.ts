/**
 * The one async mechanism: every native op that can take over a millisecond returns a Promise,
 * takes an AbortSignal (checked between iterations; rejects with ERR_ABORTED) and reports
 * progress events through one callback.
 */
import { addon, NativeCtl } from './native';
import { FisherLensError, fromNative } from './errors';

/** A progress event from a native op (fields depend on the op, e.g. `{ step, steps, loss }`). */
export type ProgressEvent = Record<string, number | string | boolean>;

/** Options accepted by every async operation. */
export interface OpOptions {
  /** Aborts the operation; the Promise rejects with code ERR_ABORTED within ~100 ms. */
  signal?: AbortSignal;
  /** Called on the main thread with progress events while the op runs. */
  onProgress?: (event: ProgressEvent) => void;
}

/** Runs a native async op with abort and progress wired to `opts`, mapping errors to FisherLensError. */
export async function runOp<T>(opts: OpOptions | undefined, call: (ctl: NativeCtl) => Promise<T>): Promise<T> {
  const signal = opts?.signal;
  if (signal?.aborted) throw new FisherLensError('ERR_ABORTED', 'operation aborted before it started');
  const token = new (addon().CancelToken)();
  const onAbort = () => token.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  const onProgress = opts?.onProgress;
  const ctl: NativeCtl = { token };
  if (onProgress) {
    ctl.onProgress = (json: string) => {
      try {
        onProgress(JSON.parse(json) as ProgressEvent);
      } catch {
        /* a throwing listener must not break the op */
      }
    };
  }
  try {
    return await call(ctl);
  } catch (e) {
    // a TypeError here is a wrong argument reaching the binding (undefined where a handle belongs)
    if (e instanceof TypeError) throw new FisherLensError('ERR_ARG', `invalid argument: ${e.message}`);
    throw fromNative(e);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
