import { Command } from 'commander';
import * as fs from 'fs';
import { backend } from '../binding/backend';
import { loadInfo } from '../binding/native';
import { FisherLensError } from '../util/errors';
import { Model, ModelSpec } from '../science/model';
import { readExported } from '../science/exported';
import { describeWeights, planWeights, sniffFile, TargetEntry, WeightDtype, readWeightsFile } from '../science/weights';
import { action, emit, jsonOption } from './common';

/**
 * `fisherlens info`: the backend (versions, CUDA, threads, BLAS) as JSON; with `--model FILE`,
 * what that file is — format, tensors, the built-in architecture it fits or why none does —
 * without running it (a TorchScript archive is not loaded: loading runs its code).
 */
export function register(program: Command): void {
  const cmd = program
    .command('info')
    .description('print the backend: LibTorch version, CUDA, threads, BLAS, addon version, variant and LibTorch loaded (always JSON); with --model FILE, what the file is and which architecture it fits, without running it')
    // info's --model is optional and only describes a file (never loads it): not modelOption's
    .option('--model <file>', 'describe this file: FisherLens checkpoint, TorchScript archive, state dict (torch.save zip/legacy, safetensors) or spec .json')
    .option('--weights-entry <key>', 'with --model: where the state dict sits in the file (default: found by looking)');
  jsonOption(cmd)  // accepted for symmetry: info prints JSON either way
    .action(action(async (o: { model?: string; weightsEntry?: string }) => {
      if (o.model === undefined) {
        const b = backend();
        // binaries passed over before the one loaded, with the reason (empty when the first fitted)
        emit(true, { ...b, skipped: loadInfo().skipped }, () => '');
        return;
      }
      emit(true, await describeFile(o.model, o.weightsEntry), () => '');
    }));
}

/** What `file` is, as JSON; state dicts are checked against the model their keys suggest. */
async function describeFile(file: string, entry?: string): Promise<Record<string, unknown>> {
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) throw new FisherLensError('ERR_IO', `--model '${file}': no such file`);
  const kind = await sniffFile(file);
  const size = fs.statSync(file).size;
  if (kind === 'fisherlens-checkpoint') return { file, bytes: size, kind: 'fisherlens-checkpoint', use: `--model ${file}` };
  if (kind === 'pt2') {
    const a = await readExported(file);
    return { file, bytes: size, kind: 'pt2', torchVersion: a.spec.torchVersion, parameters: a.spec.state.filter((t) => t.param).length,
      buffers: a.spec.state.filter((t) => !t.param).length, batch: a.dynamicBatch ? 'dynamic' : a.batch,
      use: `--model ${file} (a torch.export program: data, runs no code)` };
  }
  if (kind === 'torchscript') return { file, bytes: size, kind: 'torchscript', use: `--model ${file} (loading runs the archive's code: trusted sources only)` };
  if (kind === 'unknown') {
    const text = fs.readFileSync(file, 'utf8').trimStart();
    if (text.startsWith('{')) {
      try {
        return { file, bytes: size, kind: 'spec', spec: JSON.parse(text), use: `--model ${file}` };
      } catch {
        /* not JSON: unknown below */
      }
    }
    throw new FisherLensError('ERR_FORMAT', `'${file}' is neither a FisherLens checkpoint, a TorchScript archive, a state dict (torch.save zip/legacy, safetensors) nor a JSON spec`);
  }
  const d = await describeWeights(file, { entry });
  const out: Record<string, unknown> = { file, bytes: size, kind: 'state-dict', ...d };
  const spec = d.inference.spec;
  if (!spec) {
    out.fits = null;
    out.why = d.inference.why;
    return out;
  }
  // confirm by mapping the keys onto the model the spec builds (nothing runs: no forward)
  const m = Model.create(spec as ModelSpec);
  try {
    const state = await m.state();
    const target: TargetEntry[] = [...state].map(([name, t]) => ({ name, shape: t.shape, dtype: t.dtype as WeightDtype }));
    for (const t of state.values()) t.dispose();
    const w = await readWeightsFile(file, { entry });
    try {
      const plan = planWeights(spec.arch, target, w.tensors, { what: file });
      out.fits = spec;
      out.mapping = { tensors: plan.assign.length, mapped: plan.mapped, ignored: plan.ignored, kept: plan.kept, warnings: plan.warnings };
      out.use = `--model '${JSON.stringify(spec)}' --weights ${file}`;
    } catch (e) {
      out.fits = null;
      out.why = (e as Error).message;
    }
  } finally {
    m.dispose();
  }
  return out;
}
