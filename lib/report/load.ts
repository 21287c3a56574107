/**
 * Reads a runs folder for reports. Reports use ONLY these files (config.json, metrics.jsonl,
 * summary.json, error.json): every number shown is one of theirs, never recomputed differently.
 */
import { ResolvedRun } from '../experiment/config';
import { modelLabel } from '../experiment/grid';
import { EpochRecord, RunDir, RunState, RunSummary, listRunDirs } from '../experiment/rundir';

export interface ReportRun {
  id: string;
  dir: string;
  state: RunState;
  config: ResolvedRun;
  /** Model label (config model name or derived from the spec). */
  model: string;
  method: string;
  seed: number;
  summary?: RunSummary;
  epochs: EpochRecord[];
  error?: string;
}

/** The runs under `dir`, finished or not, in run-id order (the order of the config when ids sort alike). */
export function loadRuns(dir: string): ReportRun[] {
  return listRunDirs(dir).map((rd: RunDir) => {
    const config = rd.readConfig();
    const state = rd.state();
    const err = rd.readError();
    return {
      id: rd.id,
      dir: rd.dir,
      state,
      config,
      model: modelLabel(config.model),
      method: config.train.method,
      seed: config.seed,
      summary: state === 'finished' ? rd.readSummary() : undefined,
      epochs: rd.readEpochs(),
      error: err ? `${err.code ? err.code + ': ' : ''}${err.message}` : undefined,
    };
  });
}

/** Orders runs for tables: by the experiment's run order when experiment.json lists it, else by id. */
export function orderRuns(runs: ReportRun[], order?: string[]): ReportRun[] {
  if (!order) return runs;
  const pos = new Map(order.map((id, i) => [id, i]));
  return [...runs].sort((a, b) => (pos.get(a.id) ?? 1e9) - (pos.get(b.id) ?? 1e9) || a.id.localeCompare(b.id));
}
