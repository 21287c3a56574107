import { Command } from 'commander';
import { backend } from '../backend';
import { action, emit } from './common';

/** `fisherlens info`: the backend (versions, CUDA, threads, BLAS) as JSON. */
export function register(program: Command): void {
  program
    .command('info')
    .description('print the backend: LibTorch version, CUDA, threads, BLAS, addon version (JSON)')
    .option('--json', 'print JSON (the default for info)')
    .action(action(() => {
      const b = backend();
      emit(true, b, () => '');
    }));
}
