import { Command } from 'commander';
import * as path from 'path';
import { action, emit, jsonOption } from './common';
import { writeReport } from '../report';

/** `fisherlens report DIR`: report.md, report.html and plots/*.svg from a runs folder's files. */
export function register(program: Command): void {
  const cmd = program
    .command('report')
    .description('write report.md and report.html (tables, findings, SVG plots; math.md beside them for the equation numbers) from the run files of a runs folder')
    .argument('<dir>', 'runs folder written by `fisherlens run` (sub-folders with config.json, metrics.jsonl, summary.json)')
    .option('-o, --out <dir>', 'where report.md, report.html and plots/ go (default: <dir>)')
    .option('--title <title>', 'report title (default: the experiment name)');
  jsonOption(cmd)  // the written paths and the run count
    .addHelpText('after', '\nReads only the run files; unfinished runs are listed with their state. Exit codes: 0 written, 1 error, 2 usage.')
    .action(action(async (dir: string, o: { out?: string; title?: string; json?: boolean }) => {
      const w = await writeReport(dir, { out: o.out, title: o.title });
      const rel = (p: string) => path.relative(process.cwd(), p) || p;
      const finished = w.report.runs.filter((r) => r.summary).length;
      emit(Boolean(o.json), { markdown: w.markdown, html: w.html, plots: w.plots, math: w.math, runs: w.report.runs.length, finished },
        () => `report of ${finished}/${w.report.runs.length} finished runs:\n  ${rel(w.markdown)}\n  ${rel(w.html)}\n${w.plots.map((p) => `  ${rel(p)}`).join('\n')}\n  ${rel(w.math)}`);
    }));
}
