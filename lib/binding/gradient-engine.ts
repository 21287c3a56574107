/**
 * The process-wide gradient-engine setting of the binding: its values and its one declaration
 * (read by lib/binding/native.ts at load from FISHERLENS_GRADIENT_ENGINE and by
 * lib/binding/backend.ts setGradientEngine).
 */
import type { OptionDecl } from '../util/schema';

/**
 * How attacks and training's inner maximisation compute input gradients (lib/binding/backend.ts
 * setGradientEngine; FISHERLENS_GRADIENT_ENGINE at load): 'linear' through the model's
 * linearisation where it has one (built-ins, lowerable TorchScript), 'autograd', or 'auto'
 * (default): both measured once per architecture and input shape; the linearisation is kept
 * where it measured ≥ 5 % faster.
 */
export const GRADIENT_ENGINES = ['auto', 'linear', 'autograd'] as const;
export const GRADIENT_ENGINE_OPTION = {
  type: 'enum', values: GRADIENT_ENGINES, default: 'auto',
  doc: "attacks' and training's input gradients: through the linearisation, autograd, or auto (measured once per architecture and input shape)",
} as const satisfies OptionDecl;
