import { Command } from 'commander';
import { buildFromSource } from '../binding/build';
import { action, emit, jsonOption, log, posInt, Progress } from './common';

/** `fisherlens build`: compiles the addon against the LibTorch found (for LibTorch versions with no prebuilt variant). */
export function register(program: Command): void {
  const cmd = program
    .command('build')
    .description('compile the native addon against the LibTorch found ($FISHERLENS_TORCH, Python torch, system) into the cache folder the loader searches; needs a C++17 compiler, make, python3 and LibTorch headers')
    .option('--jobs <n>', 'parallel compile jobs (default: the available cores)');
  jsonOption(cmd)
    .action(action(async (opts: { jobs?: string; json?: boolean }) => {
      const jobs = posInt('jobs', opts.jobs);
      const progress = new Progress('fisherlens build: compiling', 0);
      const r = await buildFromSource({
        jobs,
        onProgress: (done, total, file) => progress.update(done - 1, total, file),
      });
      log(`fisherlens build: done in ${r.seconds.toFixed(0)} s (log: ${r.log})`);
      emit(Boolean(opts.json), r, () => `built ${r.file} against LibTorch ${r.libtorch.version} at ${r.libtorch.path}; the loader uses it from now on`);
    }));
}
