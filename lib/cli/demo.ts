import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { action, deviceOption, emit, jsonOption, log, tensorboardOption } from './common';
import { runWithProgress, finish } from './run';
import { writeReport, accuracyTable } from '../report';
import { FisherLensError } from '../util/errors';
import { packageRoot } from '../util/version';

/** A file of the installed package, rel to its root (util/version.ts finds the root). */
export function packageFile(rel: string): string {
  const f = path.join(packageRoot(), rel);
  if (!fs.existsSync(f)) throw new FisherLensError('ERR_IO', `${rel} not found in the fisherlens package`);
  return f;
}

/**
 * `fisherlens demo`: configs/demo.yaml (Fashion-MNIST; small CNN natural / PGD-AT / TRADES and
 * three VGG variants with TRADES), then the report. Re-running resumes where it stopped.
 */
export function register(program: Command): void {
  const cmd = program
    .command('demo')
    .description('the main job: train 6 models on Fashion-MNIST (natural / PGD-AT / TRADES; VGG variants), evaluate clean / PGD / CW accuracy, Fisher and CCKL, and write the report (≤ 10 min on 2 cores)')
    .option('-o, --out <dir>', 'output folder', 'runs/demo')
    .option('-c, --config <file>', 'another config instead of configs/demo.yaml');
  deviceOption(cmd, "the config's device")
    .option('--no-progress', 'plain progress lines even on a terminal');
  tensorboardOption(cmd);
  jsonOption(cmd)
    .addHelpText('after', '\nExit codes: 0 done, 1 error, 2 usage, 3 some runs failed, 130 interrupted (run again to resume).')
    .action(action(async (o: { out: string; config?: string; device?: string; progress?: boolean; json?: boolean; tensorboard: boolean }) => {
      const config = o.config ?? packageFile(path.join('configs', 'demo.yaml'));
      const t0 = Date.now();
      const result = await runWithProgress(config, { out: o.out, device: o.device, progress: o.progress, tensorboard: o.tensorboard });
      let report: string | undefined;
      if (!result.aborted && result.finished + result.skipped > 0) {
        const w = await writeReport(result.out);
        report = w.html;
        const table = accuracyTable(w.report.runs);
        if (!o.json) {
          process.stdout.write(`\n| ${table.head.join(' | ')} |\n${table.rows.map((r) => `| ${r.join(' | ')} |`).join('\n')}\n\n`);
        }
        log(`fisherlens: demo finished in ${((Date.now() - t0) / 1000).toFixed(0)} s; report: ${path.relative(process.cwd(), w.html)} and ${path.relative(process.cwd(), w.markdown)}`);
      }
      if (o.json) emit(true, { ...result, report }, () => '');
      finish(result);
    }));
}
