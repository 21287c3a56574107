/** Weights files in (torch.save state dicts, zip and legacy; safetensors), read weights-only. */
export * from './types';
export { readWeights, readWeightsFile, sniff, findStateDict, CONTAINER_KEYS } from './read';
export type { FileKind, ReadOptions } from './read';
export { ALLOWED_GLOBALS, unpickle } from './pickle';
export { readSafetensors } from './safetensors';
export { readTorchZip, readTorchLegacy } from './torch-file';
export { readZip } from './zip';
