import { Command } from 'commander';
import { buildFromSource } from '../binding/build';
import { FisherLensError } from '../util/errors';
import { action, emit, log, num, Progress } from './common';

/** `fisherlens build`: compiles the addon against the LibTorch found (for LibTorch versions with no prebuilt variant). */
export function register(program: Command): void {
  program
    .command('build')
    .description('compile the native addon against the LibTorch found ($FISHERLENS_TORCH, Python torch, system) into the cache folder the loader searches; needs a C++17 compiler, make, python3 and LibTorch headers')
    .option('--jobs <n>', 'parallel compile jobs (default: the available cores)')
    .option('--json', 'print the result as JSON')
    .action(action(async (opts: { jobs?: string; json?: boolean }) => {
      const jobs = opts.jobs !== undefined ? num('jobs', opts.jobs) : undefined;
      if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1)) throw new FisherLensError('ERR_ARG', `--jobs: expected a positive integer, got '${opts.jobs}'`);
      const progress = new Progress('fisherlens build: compiling', 0);
      const r = await buildFromSource({
        jobs,
        onProgress: (done, total, file) => progress.update(done - 1, total, file),
      });
      log(`fisherlens build: done in ${r.seconds.toFixed(0)} s (log: ${r.log})`);
      emit(Boolean(opts.json), r, () => `built ${r.file} against LibTorch ${r.libtorch.version} at ${r.libtorch.path}; the loader uses it from now on`);
    }));
}
