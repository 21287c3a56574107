/** Experiments: configs, grids, run directories, the runner and its executor. */
export { loadConfig, validateExperiment, parseConfigText, expandRuns, gridPoints, modelLabel } from './grid';
export { ExperimentConfig, ExperimentInput, ResolvedRun, DataConfig, ModelConfig, TrainConfig, AttackConfig, EvalConfig, ExperimentSchema, ResolvedRunSchema } from './config';
export { runExperiment } from './runner';
export { planExperiment, RunExperimentOptions, ExperimentEvent, ExperimentResult, RunOutcome } from './plan';
export {
  RunExecutor, RunContext, RunProgress, Science, ScienceTrainOptions, scienceExecutor, DataInfo, FisherArrays, TrainBatchEvent,
} from './executor';
export { defaultExecutor, defaultScience } from './science';
export { RunDir, RunState, RunSummary, RunResult, EpochRecord, FisherSummary, CcklSummary, FILES as RUN_FILES, listRunDirs } from './rundir';
export { SweepProgress } from './progress';
export { worker, WorkerOptions, WorkerReport } from './worker';
export { queueStatus, cancelExperiment } from './queue-status';
export { QueueOptions, QueueRunStatus, JobData, JobProgress, JobResult } from './queue-jobs';
export { slurmScript, writeSlurmScript, SlurmOptions } from './slurm';
