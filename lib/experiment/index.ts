/** Experiments: configs, grids, run directories, the runner and its executor. */
export { loadConfig, validateExperiment, parseConfigText, expandRuns, gridPoints, modelLabel } from './grid';
export { ExperimentConfig, ExperimentInput, ResolvedRun, DataConfig, ModelConfig, TrainConfig, AttackConfig, EvalConfig, ExperimentSchema, ResolvedRunSchema } from './config';
export { runExperiment, planExperiment, RunExperimentOptions, ExperimentEvent, ExperimentResult, RunOutcome } from './runner';
export {
  RunExecutor, RunContext, RunProgress, Science, ScienceTrainOptions, scienceExecutor, DataInfo, FisherArrays, TrainBatchEvent,
} from './executor';
export { defaultExecutor, defaultScience } from './science';
export { RunDir, RunState, RunSummary, RunResult, EpochRecord, FisherSummary, CcklSummary, FILES as RUN_FILES, listRunDirs } from './rundir';
export { SweepProgress } from './progress';
export {
  worker, queueStatus, cancelExperiment, QueueOptions, WorkerOptions, WorkerReport, QueueRunStatus, JobData, JobProgress, JobResult,
} from './queue';
export { slurmScript, writeSlurmScript, SlurmOptions } from './slurm';
