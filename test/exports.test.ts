/**
 * Pins the public surface of `import … from 'fisherlens'`: the runtime export names of the
 * compiled entry (dist/lib/index.js, and the ESM entry dist/esm/index.mjs that re-exports it)
 * and the names the compiled declarations (dist/lib/index.d.ts) export as types only. Moving files
 * behind the entry must change neither list; an issue that changes the API on purpose updates
 * the lists here in the same commit.
 */
import test from 'ava';
import * as path from 'path';
import { pathToFileURL } from 'url';
import * as ts from 'typescript';

/** Names exported as values (functions, classes, constants), sorted. */
const VALUES = [
  'ATTACK_KINDS', 'ATTACK_OPTIONS', 'ATTACK_TABLE', 'AUGMENT_OPTIONS', 'AUTOATTACK_OPTIONS',
  'AUTOATTACK_VERSIONS', 'CHECKPOINT_MAGIC', 'CcklAccumulator', 'Dataset', 'EXACT_TUNE',
  'FISHER_DATASET_OPTIONS', 'FISHER_LAYOUTS', 'FISHER_METHODS', 'FISHER_OPTIONS', 'FISHER_SPEED_OPTIONS',
  'FisherLensError', 'Model', 'NpyWriter', 'OPTIMIZER_OPTIONS', 'PAIR_MEANS_OPTIONS', 'PICTURE_SAMPLES',
  'RHO_OPTIONS', 'RunDir', 'SweepProgress', 'TRAIN_OPTIONS', 'TRAIN_STEP_OPTIONS', 'Tensor',
  'adversarialMeasure', 'attack', 'attackKinds', 'attackPresets', 'augment', 'autoAttack',
  'autoAttackVersions', 'autotuneFile', 'backend', 'buildReport', 'cancelExperiment', 'ccklFromLogits',
  'ccklMetrics', 'cifar10', 'cifar100', 'classMatrices', 'decodePng', 'defaultExecutor', 'describeWeights', 'detectDir',
  'detectModelFile', 'encodePng', 'evaluate', 'evaluateRobustness', 'exactTuneCount', 'exactTuning',
  'expandRuns', 'fashionMnist', 'fashionMnistDir', 'fisherBatch', 'fisherDataset', 'fisherExact',
  'fisherHutchinson', 'fisherLanczos', 'fisherPower', 'fisherQuadratic', 'fisherVectorProduct', 'gridPng',
  'klPairSegments', 'klSegment', 'loadConfig', 'loadData', 'loadNpy', 'loadRuns', 'logProbs', 'manualSeed',
  'memory', 'mnist', 'nonRobustComponent', 'optionHelp', 'parseAttackOptions', 'parseOptions', 'peakMemory',
  'permutation', 'pictureGrid', 'pictureSamples', 'planExperiment', 'probeMetrics', 'profileExactVjp',
  'profileFisher', 'queueStatus', 'readClassPictures', 'readPictureGrid', 'readWeightsFile', 'runExperiment', 'samplePairs',
  'scheduleFactor', 'scienceExecutor', 'setGradientEngine', 'setTf32', 'setThreads', 'slurmScript',
  'summarize', 'synthetic', 'train', 'trainPresets', 'validateExperiment', 'worker', 'writePictureGrid',
  'writeReport', 'writeSlurmScript',
];

/** Names exported as types only (interfaces, type aliases), sorted. */
const TYPES = [
  'Activation', 'AttackKind', 'AttackNorm', 'AttackParams', 'AttackPresetName', 'AttackResult', 'AttackSpec',
  'AttackSummary', 'AugmentOptions', 'AugmentedBatchOptions', 'AutoAttackOptions', 'AutoAttackParams',
  'AutoAttackResult', 'AutoAttackStage', 'AutoAttackStageResult', 'AutoAttackVersion', 'BackendInfo',
  'Batch', 'BatchEvent', 'BatchOptions', 'BatchProgress', 'CcklMetrics', 'CcklResult', 'ClassMatrices',
  'ClassPictures', 'Device', 'Dtype', 'ElapsedProgress', 'EpochEvent', 'EpochMetrics', 'EpochRecord',
  'ErrorCode', 'EvaluateOptions', 'EvaluationResult', 'ExactFisherResult', 'ExactTuning', 'ExperimentConfig',
  'ExperimentEvent', 'ExperimentInput', 'ExperimentResult', 'FisherDatasetResult', 'FisherEngine',
  'FisherLayout', 'FisherMethod', 'FisherMethodOptions', 'FisherSpeedOptions', 'FisherValues',
  'GradientEngine', 'HutchinsonResult', 'JsonValue', 'LanczosResult', 'LoadDataOptions', 'LoadWeightsOptions', 'LoadWeightsResult', 'ModelSpec',
  'NamedAttack', 'NonRobustResult', 'OpOptions', 'OptimizerOptions', 'OptionDecl', 'OptionSchema',
  'PairOptions', 'PairResult', 'PictureAttack', 'PictureCell', 'PictureColumn', 'PictureData', 'PictureGrid',
  'PowerResult', 'ProfileRow', 'ProgressEvent', 'QueueOptions', 'QueueRunStatus', 'Report', 'ReportOptions',
  'ResolvedRun', 'RhoResult', 'RobustnessResult', 'RunContext', 'RunExecutor', 'RunExperimentOptions',
  'RunSummary', 'ScheduleOptions', 'Science', 'SlurmOptions', 'Split', 'StageProgress', 'StepProgress',
  'Summary', 'SyntheticOptions', 'TrackOptions', 'TrainAttackOptions', 'TrainEvent', 'TrainMethod',
  'TrainOptions', 'TrainPresetName', 'TrainResult', 'TypedArray', 'WeightDtype', 'WeightTensor', 'WeightsDescription', 'WeightsFile',
  'WeightsFormat', 'WorkerOptions', 'WorkerReport',
];

const DIST_LIB = path.join(__dirname, '..', 'lib');

test('the runtime exports of the CommonJS entry are the pinned values', (t) => {
  const names = Object.keys(require(DIST_LIB) as object).sort();
  t.deepEqual(names, VALUES);
});

test('the ESM entry exports the same names (plus default and __esModule, from the CommonJS interop)', async (t) => {
  const esm = pathToFileURL(path.join(__dirname, '..', 'esm', 'index.mjs')).href;
  // keep import() as import() after compilation to CommonJS
  const load = new Function('u', 'return import(u)') as (u: string) => Promise<Record<string, unknown>>;
  const names = Object.keys(await load(esm)).filter((n) => n !== 'default' && n !== '__esModule').sort();
  t.deepEqual(names, VALUES);
});

test('the compiled declarations export the pinned values and types', (t) => {
  const file = path.join(DIST_LIB, 'index.d.ts');
  const program = ts.createProgram([file], { skipLibCheck: true, noEmit: true, types: [] });
  const checker = program.getTypeChecker();
  const mod = checker.getSymbolAtLocation(program.getSourceFile(file)!)!;
  const values: string[] = [];
  const types: string[] = [];
  for (const s of checker.getExportsOfModule(mod)) {
    const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
    (target.flags & ts.SymbolFlags.Value ? values : types).push(s.name);
  }
  t.deepEqual(values.sort(), VALUES);
  t.deepEqual(types.sort(), TYPES);
});

test("Model's declared members do not show its native handle (a private field, reached inside lib/ through modelHandle)", (t) => {
  const file = path.join(DIST_LIB, 'index.d.ts');
  const program = ts.createProgram([file], { skipLibCheck: true, noEmit: true, types: [] });
  const checker = program.getTypeChecker();
  const mod = checker.getSymbolAtLocation(program.getSourceFile(file)!)!;
  const exported = checker.getExportsOfModule(mod).find((s) => s.name === 'Model')!;
  const model = checker.getAliasedSymbol(exported);
  const instance = checker.getDeclaredTypeOfSymbol(model);
  const members = checker.getPropertiesOfType(instance).map((p) => p.name);
  t.true(members.includes('forward') && members.includes('dispose'), `the members were read: ${members.join(', ')}`);
  t.false(members.includes('native'), 'native is no member of Model');
  t.false('modelHandle' in (require(DIST_LIB) as object), 'modelHandle is not exported by the package');
});
