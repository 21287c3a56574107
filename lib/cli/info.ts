import { Command } from 'commander';
import { backend } from '../binding/backend';
import { loadInfo } from '../binding/native';
import { action, emit } from './common';

/** `fisherlens info`: the backend (versions, CUDA, threads, BLAS) as JSON. */
export function register(program: Command): void {
  program
    .command('info')
    .description('print the backend: LibTorch version, CUDA, threads, BLAS, addon version, variant and LibTorch loaded (JSON)')
    .option('--json', 'print JSON (the default for info)')
    .action(action(() => {
      const b = backend();
      // binaries passed over before the one loaded, with the reason (empty when the first fitted)
      emit(true, { ...b, skipped: loadInfo().skipped }, () => '');
    }));
}
