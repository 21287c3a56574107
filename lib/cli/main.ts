#!/usr/bin/env node
/** The `fisherlens` command. Each subcommand lives in its own file and registers itself here. */
import { Command } from 'commander';
import { register as info } from './info';
import { register as evalCmd } from './eval';
import { register as fisherCmd } from './fisher';
import { register as ccklCmd } from './cckl';
import { register as profileCmd } from './profile';
import { register as run } from './run';
import { register as report } from './report';
import { register as demo } from './demo';
import { register as attackCmd } from './attack';
import { register as trainCmd } from './train';
import { register as queueCmds } from './queue';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const pkg = require('../../../package.json') as { version: string };

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('fisherlens')
    .description('Adversarial robustness of classifiers through the input-space Fisher information')
    .version(pkg.version)
    .showHelpAfterError('(add --help for usage)')
    .exitOverride((err) => {
      // commander's own errors (unknown option, missing argument): one line, exit 2
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
      process.exit(2);
    });
  for (const reg of [info, evalCmd, fisherCmd, ccklCmd, profileCmd, attackCmd, trainCmd, run, report, demo, queueCmds]) reg(program);
  return program;
}

if (require.main === module) {
  buildProgram().parseAsync(process.argv).catch((e: unknown) => {
    process.stderr.write(`fisherlens: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  });
}
