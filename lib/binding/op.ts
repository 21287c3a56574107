/**
 * The one async mechanism: every native op that can take over a millisecond returns a Promise,
 * takes an AbortSignal (checked between iterations; rejects with ERR_ABORTED) and reports
 * progress events through one callback.
 */
import { addon, NativeCtl } from './native';
import { FisherLensError, fromNative, invalidArgument } from '../util/errors';

/** Iteration `step` of `steps` of a native op (attacks; the Fisher power / Lanczos / Hutchinson loops name their `method`). */
export interface StepProgress { type: 'step'; step: number; steps: number; method?: string }
/** AutoAttack: stage `stage` (0-based) of `stages`, attack `kind`, starts on the `remaining` samples still robust. */
export interface StageProgress { type: 'stage'; stage: number; stages: number; kind: string; remaining: number }
/** Samples `done` of `total` in a loop over a dataset; `stage` names its phase where it has several (cckl, nonRobust). */
export interface BatchProgress { type: 'batch'; done: number; total: number; stage?: string }
/** Milliseconds an op has worked (the development build's `spin` test hook). */
export interface ElapsedProgress { type: 'elapsed'; elapsedMs: number }
/** A progress event: one discriminated union over every op's events (switch on `type`). */
export type ProgressEvent = StepProgress | StageProgress | BatchProgress | ElapsedProgress;

/** Types a native op's progress JSON by its fields (native ops report `{step, steps}`, `{stage, …}` or `{elapsedMs}`). */
export function progressEvent(e: Record<string, unknown>): ProgressEvent {
  if (typeof e.stage === 'number') return { type: 'stage', stage: e.stage, stages: Number(e.stages), kind: String(e.kind), remaining: Number(e.remaining) };
  if (typeof e.step === 'number') return { type: 'step', step: e.step, steps: Number(e.steps), ...(typeof e.method === 'string' ? { method: e.method } : {}) };
  if (typeof e.elapsedMs === 'number') return { type: 'elapsed', elapsedMs: e.elapsedMs };
  return { type: 'batch', done: Number(e.done), total: Number(e.total), ...(typeof e.stage === 'string' ? { stage: e.stage } : {}) };
}

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
        onProgress(progressEvent(JSON.parse(json) as Record<string, unknown>));
      } catch {
        /* a throwing listener must not break the op */
      }
    };
  }
  try {
    return await call(ctl);
  } catch (e) {
    // a TypeError here is a wrong argument reaching the binding (undefined where a handle belongs)
    if (e instanceof TypeError) throw invalidArgument('an argument of a native op', `the type the op declares (the binding says: ${e.message})`);
    throw fromNative(e);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
