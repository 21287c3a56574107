/** Weights files in (torch.save state dicts, zip and legacy; safetensors), read weights-only. */
export * from './types';
export { readWeights, readWeightsFile, sniff, sniffFile, findStateDict, CONTAINER_KEYS } from './read';
export type { FileKind, ReadOptions } from './read';
export { ALLOWED_GLOBALS, unpickle } from './pickle';
export { readSafetensors } from './safetensors';
export { readTorchZip, readTorchLegacy } from './torch-file';
export { readZip } from './zip';
export { planWeights, LAYOUTS } from './keymap';
export type { TargetEntry, WeightsPlan, Assignment, Layout } from './keymap';
export { inferSpec, canonicalShapes } from './infer';
export type { InferredSpec, Inference } from './infer';
export { encodeSafetensors, encodeTorchZip, writeWeightsFile, formatForPath } from './write';
export type { OutTensor, OutFormat } from './write';
export { loadWeightsInto, exportWeightsFrom, describeWeights } from './apply';
export type { WeightSource, WeightsTarget, LoadWeightsOptions, LoadWeightsResult, StateTensor, WeightsDescription } from './apply';
