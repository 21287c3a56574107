#!/usr/bin/env node
/** The `fisherlens` command. Each subcommand lives in its own file and registers itself here. */
import { Command, CommanderError } from 'commander';
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
import { register as buildCmd } from './build';
import { register as queueCmds } from './queue';
import { register as tensorboardCmd } from './tensorboard';
import { packageVersion } from '../util/version';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('fisherlens')
    .description('Adversarial robustness of classifiers through the input-space Fisher information')
    .version(packageVersion())
    // root options only before the subcommand: `attack --version standard` is the cascade's version
    .enablePositionalOptions()
    // commander's own errors (unknown option, missing argument): the one-line convention of every
    // other error, `fisherlens: ERR_ARG: <reason> (add --help for usage)`, and exit 2 (see main())
    .configureOutput({
      outputError: (str, write) => write(`fisherlens: ERR_ARG: ${str.replace(/^error: /, '').split('\n').filter(Boolean).join(' ')} (add --help for usage)\n`),
    })
    .exitOverride((err) => { throw err; });
  for (const reg of [info, evalCmd, fisherCmd, ccklCmd, profileCmd, attackCmd, trainCmd, run, report, demo, buildCmd, queueCmds, tensorboardCmd]) reg(program);
  return program;
}

/**
 * Runs the CLI on `argv` (without node and script) in this process; sets process.exitCode (0 ok,
 * 1 error, 2 usage, or the subcommand's own code). Tests call it in-process (one LibTorch load).
 */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version exit 0; usage errors (printed by outputError) exit 2
      const help = ['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(e.code);
      process.exitCode = help || e.exitCode === 0 ? 0 : 2;
      return;
    }
    process.stderr.write(`fisherlens: ${e instanceof Error ? e.message.split('\n').join(' ') : String(e)}\n`);
    process.exitCode = 1;
  }
}

if (require.main === module) void main(process.argv.slice(2));
