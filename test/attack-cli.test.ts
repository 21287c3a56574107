/**
 * `fisherlens attack` validates its flags from the option declarations (lib/science/options.ts:
 * ATTACK_OPTIONS, the kinds' table, EVALUATE_OPTIONS; autoattack.ts resolveCascade) before it
 * loads anything (issue 26): every refusal is one coded line naming the flag, in a process where
 * LibTorch cannot load (FISHERLENS_ADDON points at a file that is not an addon), so no model or
 * data was touched. Before: --kappa or --binary-steps on another kind were silently ignored, and
 * the rest surfaced after loading the model and data, naming the API's option ("attack option
 * 'stepSize'") instead of the flag.
 */
import test from 'ava';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FisherLensError } from '../lib';
import { ATTACK_KINDS, parseAttackOptions } from '../lib/science/options';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-attack-cli-'));
const BOGUS = path.join(tmp, 'not-an-addon.node');
fs.writeFileSync(BOGUS, 'not an ELF file\n');
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** `fisherlens attack --model mlp --data synthetic <args>` with no loadable LibTorch. */
function attackCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'attack', '--model', 'mlp', '--data', 'synthetic', ...args],
    { encoding: 'utf8', timeout: 60_000, cwd: tmp, env: { ...process.env, FISHERLENS_ADDON: BOGUS } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const CASES: [string[], string][] = [
  [['--attack', 'pgd', '--kappa', '5'], '--kappa: expected none for pgd (cw takes it; cw-l2 has confidence), got 5'],
  [['--attack', 'pgd', '--binary-steps', '3'], '--binary-steps: expected none for pgd (cw-l2 takes it), got 3'],
  [['--attack', 'apgd-ce', '--step-size', '0.1'], '--step-size: expected none for apgd-ce (APGD starts at 2ε and adapts it), got 0.1'],
  [['--attack', 'cw-l2', '--norm', 'linf'], "--norm: expected l2 for cw-l2 (it supports no other norm), got 'linf'"],
  [['--attack', 'fgsm', '--restarts', '2'], '--restarts: expected 1 for fgsm (it has no restarts), got 2'],
  [['--attack', 'pgd', '--targets', '3'], '--targets: expected none for pgd (apgd-t and fab-t take it), got 3'],
  [['--attack', 'square', '--steps', '0'], '--steps: expected an integer >= 1 for square (queries per sample), got 0'],
  [['--attack', 'pgd', '--epsilon', 'inf'], "--epsilon: expected a number >= 0, got 'inf'"],
  [['--attack', 'pgd3'], `--attack: expected one of ${[...ATTACK_KINDS, 'autoattack'].join(', ')}, got 'pgd3'`],
  [['--attack', 'pgd', '--batch-size', '0'], '--batch-size: expected an integer >= 1, got 0'],
  [['--attack', 'pgd', '--limit', '2.5'], '--limit: expected an integer >= 1, got 2.5'],
  [['--attack', 'autoattack', '--attacks', 'apgd-ce,bogus'], `--attacks: expected one of ${ATTACK_KINDS.join(', ')}, got 'bogus'`],
  [['--attack', 'autoattack', '--attacks', ','], "--attacks: expected a non-empty list of attack kinds (version 'custom' runs them), got []"],
  [['--attack', 'autoattack', '--attacks', 'cw-l2'], "--norm: expected l2 (stage cw-l2 supports no other), got 'linf'"],
  [['--attack', 'autoattack', '--version', 'standard', '--attacks', 'apgd-ce'], "--attacks: expected none with version 'standard' (it is for version 'custom'), got [\"apgd-ce\"]"],
  [['--attack', 'autoattack', '--batch-size', '-1'], '--batch-size: expected an integer >= 1, got -1'],
  [['--attack', 'autoattack', '--images', 'g.png'], "--images: expected nothing with --attack autoattack (a run draws the cascade's picture grid: eval.pictures in a config, docs/experiments.md), got 'g.png'"],
];

for (const [args, message] of CASES) {
  test(`attack ${args.join(' ')}: ERR_ARG naming the flag before anything loads`, (t) => {
    const r = attackCli(args);
    t.is(r.status, 1, r.stderr);
    t.is(r.stdout, '');
    t.is(r.stderr, `fisherlens: ERR_ARG: ${message}\n`);
  });
}

// valid combinations pass the checks and only then reach LibTorch (which cannot load here)
test('valid flag combinations pass the declaration checks and go on to load the model', (t) => {
  for (const args of [['--attack', 'cw', '--kappa', '5'], ['--attack', 'cw-l2', '--binary-steps', '3'], ['--attack', 'apgd-t', '--targets', '3'],
    ['--attack', 'autoattack', '--attacks', 'apgd-ce,square', '--batch-size', '64']]) {
    const r = attackCli(args);
    t.is(r.status, 1);
    t.regex(r.stderr, /^fisherlens: ERR_LOAD: /m, args.join(' '));
  }
});

test('the API refuses what the CLI refuses: options of other kinds are ERR_ARG, never ignored', (t) => {
  const refuse = (p: object, m: RegExp) => t.throws(() => parseAttackOptions(p), { instanceOf: FisherLensError, code: 'ERR_ARG', message: m });
  refuse({ kind: 'pgd', kappa: 5 }, /^attack option 'kappa': expected none for pgd/);
  refuse({ kind: 'cw', confidence: 1 }, /^attack option 'confidence': expected none for cw \(cw-l2 takes it; cw has kappa\)/);
  for (const k of ['binarySteps', 'learningRate', 'initialConst'] as const) refuse({ kind: 'fgsm', [k]: 1 }, new RegExp(`^attack option '${k}': expected none for fgsm`));
  t.is(parseAttackOptions({ kind: 'cw', kappa: 5 }).kappa, 5);
  t.is(parseAttackOptions({ kind: 'cw-l2', binarySteps: 3, confidence: 1 }).binarySteps, 3);
});
