/**
 * Tests only: a model's mode and its parameters' requires-grad / .grad bookkeeping (what attacks,
 * Fisher and training must leave as they found it), read on the compute thread after the ops
 * started before it. Not part of the public API.
 */
import { modelHandle, type Model } from '../../lib/science/model';
import type { NativeModelTestHooks } from '../../lib/binding/addon-types';

export interface ModelGradState {
  training: boolean;
  parameters: number;
  /** Parameters with requires_grad set. */
  requiresGrad: number;
  /** Parameters holding a defined .grad. */
  withGrad: number;
}

export function modelGradState(model: Model): Promise<ModelGradState> {
  return (modelHandle(model) as unknown as NativeModelTestHooks).gradState();
}
