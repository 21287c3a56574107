/**
 * `fisherlens tensorboard DIR`: prints the command that shows a run folder's or a sweep's
 * TensorBoard event files (each run folder's tb/, lib/experiment/tensorboard.ts) in TensorBoard.
 * It starts nothing: TensorBoard is a Python package the user runs where they like.
 */
import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { action, emit, jsonOption, log } from './common';
import { FisherLensError } from '../util/errors';
import { TB_DIR } from '../experiment/tensorboard';
import { shellQuote } from '../experiment/slurm';

/** The folders under `dir` (itself included, at most `depth` levels down) that hold event files. */
export function eventFolders(dir: string, depth = 4): string[] {
  const found: string[] = [];
  const walk = (d: string, left: number) => {
    let entries: fs.Dirent[];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch { return; }
    if (entries.some((e) => e.isFile() && e.name.includes('tfevents'))) found.push(d);
    if (left > 0) for (const e of entries) if (e.isDirectory()) walk(path.join(d, e.name), left - 1);
  };
  walk(dir, depth);
  return found.sort();
}

export function register(program: Command): void {
  const cmd = program
    .command('tensorboard')
    .description('print the command that shows a run folder\'s or a sweep\'s TensorBoard event files (their tb/ folders)')
    .argument('<dir>', 'a run folder (train --out, a run of a sweep) or a sweep\'s output folder')
    .option('--port <port>', 'the port TensorBoard should serve on', '6006');
  jsonOption(cmd)
    .action(action(async (dir: string, o: { port: string; json?: boolean }) => {
      const abs = path.resolve(dir);
      if (!fs.statSync(abs, { throwIfNoEntry: false })?.isDirectory()) throw new FisherLensError('ERR_IO', `${dir}: no such folder`);
      const folders = eventFolders(abs);
      if (folders.length === 0) {
        throw new FisherLensError('ERR_IO', `${dir}: no TensorBoard event files under it (runs write them into <run>/${TB_DIR}/ unless --no-tensorboard)`);
      }
      const runs = [...new Set(folders.map((f) => path.relative(abs, f) || '.'))];
      const command = `tensorboard --logdir ${shellQuote(abs)} --port ${Number(o.port) || 6006}`;
      log(`fisherlens: ${runs.length} TensorBoard run(s) under ${dir}; TensorBoard is the Python package \`tensorboard\` (pip install tensorboard)`);
      emit(Boolean(o.json), { logdir: abs, runs, command }, () => command);
    }));
}
