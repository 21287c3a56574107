/** FisherLens: adversarial robustness through the input-space Fisher information. */
export { FisherLensError, ErrorCode } from './util/errors';
export { backend, setThreads, setTf32, setGradientEngine, GradientEngine, peakMemory, BackendInfo } from './binding/backend';
export { Tensor, memory, Dtype, Device, TypedArray } from './binding/tensor';
export { Model, ModelSpec, Activation } from './science/model';
export { OpOptions, ProgressEvent, StepProgress, StageProgress, BatchProgress, ElapsedProgress } from './binding/op';
export { parseOptions, optionHelp, OptionDecl, OptionSchema } from './util/schema';
export { parseAttackOptions, ATTACK_TABLE, ATTACK_OPTIONS, AUTOATTACK_OPTIONS, FISHER_OPTIONS, FISHER_SPEED_OPTIONS, FISHER_DATASET_OPTIONS, PAIR_MEANS_OPTIONS, RHO_OPTIONS, OPTIMIZER_OPTIONS, TRAIN_STEP_OPTIONS, TRAIN_OPTIONS, AUGMENT_OPTIONS } from './science/options';
export { evaluate, EvaluationResult, JsonValue, detectModelFile, CHECKPOINT_MAGIC } from './science/model';
export { describeWeights, readWeightsFile } from './science/weights';
export type { LoadWeightsOptions, LoadWeightsResult, WeightsDescription, WeightsFile, WeightTensor, WeightDtype, WeightsFormat } from './science/weights';
export {
  Dataset, Batch, BatchOptions, AugmentedBatchOptions, permutation, Split, fashionMnist, mnist, cifar10, cifar100,
  loadNpy, synthetic, SyntheticOptions, augment, AugmentOptions, loadData, LoadDataOptions, detectDir, fashionMnistDir,
} from './science/data';
export { attack, attackPresets, NpyWriter, AttackParams, AttackKind, AttackNorm, AttackResult, AttackPresetName, attackKinds, AttackSpec, ATTACK_KINDS } from './science/attacks';
export { evaluateRobustness, NamedAttack, EvaluateOptions, RobustnessResult, AttackSummary } from './science/robust';
export {
  autoAttack, AutoAttackOptions, AutoAttackParams, AutoAttackResult, AutoAttackStage, AutoAttackStageResult, AutoAttackVersion,
  AUTOATTACK_VERSIONS, autoAttackVersions,
} from './science/autoattack';
export {
  train, presets as trainPresets, manualSeed, scheduleFactor, probeMetrics,
  TrainOptions, TrainResult, TrainEvent, BatchEvent, EpochEvent, EpochMetrics, TrainMethod, OptimizerOptions,
  ScheduleOptions, TrainAttackOptions, TrackOptions, PresetName as TrainPresetName,
} from './science/train';
export {
  fisherExact, ExactFisherResult, FisherEngine, fisherPower, PowerResult, fisherLanczos, LanczosResult, fisherHutchinson, HutchinsonResult,
  fisherQuadratic, fisherVectorProduct, klSegment, fisherBatch, fisherDataset, FisherDatasetResult, FisherValues, FisherMethod,
  FisherMethodOptions, FisherSpeedOptions, FISHER_METHODS, summarize, Summary, profileFisher, ProfileRow,
  FisherLayout, FISHER_LAYOUTS, ExactTuning, exactTuning, exactTuneCount, EXACT_TUNE, autotuneFile, profileExactVjp,
} from './science/fisher';
export {
  CcklAccumulator, CcklResult, PairResult, PairOptions, ccklFromLogits, ccklMetrics, CcklMetrics, nonRobustComponent,
  NonRobustResult, samplePairs, adversarialMeasure, RhoResult, klPairSegments, logProbs,
} from './science/metrics';
export { pictureGrid, pictureSamples, classMatrices, PictureAttack, PICTURE_SAMPLES } from './science/pictures';
export { writePictureGrid, readPictureGrid, gridPng, encodePng, decodePng, readClassPictures, PictureGrid, PictureColumn, PictureCell, PictureData, ClassMatrices, ClassPictures } from './science/picture-files';
export {
  runExperiment, planExperiment, loadConfig, validateExperiment, expandRuns, RunExperimentOptions, ExperimentEvent,
  ExperimentResult, ExperimentConfig, ExperimentInput, ResolvedRun, RunExecutor, RunContext, Science, scienceExecutor,
  defaultExecutor, RunDir, RunSummary, EpochRecord, SweepProgress,
  worker, queueStatus, cancelExperiment, QueueOptions, WorkerOptions, WorkerReport, QueueRunStatus, slurmScript, writeSlurmScript, SlurmOptions,
} from './experiment';
export { buildReport, writeReport, loadRuns, Report, ReportOptions } from './report';
