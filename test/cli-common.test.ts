/**
 * The CLI's one parser set and its shared options (lib/cli/common.ts): flag values are checked
 * in one place with one message format, and --model, --data, --labels, --split, --device,
 * --limit and --json read the same in every command. Loads no LibTorch.
 */
import test from 'ava';
import type { Command } from 'commander';
import { choice, declared, int, intList, natInt, num, posInt } from '../lib/cli/common';
import { buildProgram } from '../lib/cli/main';
import { FisherLensError } from '../lib';
import { ATTACK_OPTIONS, TRAIN_STEP_OPTIONS } from '../lib/science/options';

const argError = (message: string) => ({ instanceOf: FisherLensError, code: 'ERR_ARG', message } as never);

test('posInt refuses 0 and negatives (a count, a size, a limit); natInt takes 0', (t) => {
  t.is(posInt('limit', '1'), 1);
  t.is(posInt('limit', '250'), 250);
  t.is(posInt('limit', undefined), undefined);
  t.throws(() => posInt('limit', '0'), argError("--limit: expected an integer >= 1, got '0'"));
  t.throws(() => posInt('limit', '-3'), argError("--limit: expected an integer >= 1, got '-3'"));
  t.is(natInt('seed', '0'), 0);
  t.throws(() => natInt('seed', '-1'), argError("--seed: expected an integer >= 0, got '-1'"));
});

test('integers and numbers are decimal as a user types them: no fractions, hex, blanks or Infinity', (t) => {
  for (const bad of ['2.5', '0x10', '', ' ', 'Infinity', '1e400', 'ten']) {
    t.throws(() => int('batch-size', bad, 1), argError(`--batch-size: expected an integer >= 1, got '${bad}'`), bad);
  }
  t.is(int('steps', '1e2', 0), 100);
  t.is(num('epsilon', '.25'), 0.25);
  t.is(num('epsilon', '-1e-3'), -0.001);
  t.is(num('epsilon', undefined), undefined);
  t.throws(() => num('epsilon', 'Infinity'), argError("--epsilon: expected a decimal number, got 'Infinity'"));
  t.deepEqual(intList('batch', '32, 128,512'), [32, 128, 512]);
  t.throws(() => intList('batch', '32,0'), argError("--batch: expected positive integers separated by commas, got '32,0'"));
});

test('choice and declared name the flag and what the one declaration accepts', (t) => {
  t.is(choice('split', ['train', 'test'] as const, 'test'), 'test');
  t.throws(() => choice('split', ['train', 'test'] as const, 'val'), argError("--split: expected one of train, test, got 'val'"));
  t.is(declared('method', 'trades', TRAIN_STEP_OPTIONS.method), 'trades');
  t.throws(() => declared('method', 'tradez', TRAIN_STEP_OPTIONS.method), argError("--method: expected one of natural, pgd-at, trades, mart, fire, jacobian, fisher-trace, fisher-lambda, got 'tradez'"));
  t.is(declared('steps', '7', ATTACK_OPTIONS.steps), 7);
  t.throws(() => declared('restarts', '0', ATTACK_OPTIONS.restarts), argError('--restarts: expected an integer >= 1, got 0'));
  t.throws(() => declared('beta', 'big', ATTACK_OPTIONS.beta), argError("--beta: expected a finite number in (0, 1), got 'big'"));
  t.is(declared('seed', undefined, ATTACK_OPTIONS.seed), undefined);
});

test('--model, --data, --split, --device, --limit and --json have one help text in every command that takes them (--labels differs where fisher reads labels for captions only; info --model describes a file)', (t) => {
  const commands: [string, Command][] = [];
  const walk = (c: Command, prefix: string): void => {
    for (const s of c.commands) { commands.push([prefix + s.name(), s]); walk(s, `${prefix}${s.name()} `); }
  };
  walk(buildProgram(), '');
  const help = new Map<string, Map<string, string[]>>();
  for (const [name, c] of commands) {
    for (const o of c.options) {
      const flag = o.long ?? '';
      if (!['--model', '--data', '--split', '--device', '--limit', '--json'].includes(flag)) continue;
      // info's --model only describes a file (format, tensors, the architecture it fits) and never loads it: its own option
      if (flag === '--model' && name === 'info') continue;
      // --device of commands that run configs says what decides without it; the rest default to cpu
      const key = flag === '--device' ? `${flag} ${o.defaultValue === undefined ? '(config)' : '(cpu)'}` : flag;
      const texts = help.get(key) ?? new Map<string, string[]>();
      texts.set(o.description, [...(texts.get(o.description) ?? []), name]);
      help.set(key, texts);
    }
  }
  for (const flag of ['--model', '--data', '--split', '--device (cpu)', '--limit', '--json']) t.true(help.has(flag), flag);
  t.is(help.get('--model')!.size, 1);
  t.deepEqual([...help.get('--model')!.values()][0].sort(), ['attack', 'cckl', 'eval', 'fisher', 'profile fisher', 'train']);
  t.deepEqual([...help.get('--device (config)')!.values()].flat().sort(), ['demo', 'run', 'worker']);
  for (const [flag, texts] of help) t.is(texts.size, 1, `${flag}: ${JSON.stringify([...texts])}`);
});
