import { Command } from 'commander';
import { loadData } from '../science/data';
import { FisherLensError, invalidArgument } from '../util/errors';
import { attackPresets, ATTACK_KINDS, AttackKind, AttackParams, AttackPresetName } from '../science/attacks';
import { evaluateRobustness } from '../science/robust';
import { autoAttack } from '../science/autoattack';
import { ATTACK_OPTIONS as A, AUTOATTACK_OPTIONS, EVALUATE_OPTIONS as E, attackSpec, defaultStepsText, parseAttackOptions } from '../science/options';
import { resolveCascade } from '../science/autoattack';
import { optionHelp } from '../util/schema';
import {
  action, choice, dataOptions, declared, deviceOption, emit, interruptController, jsonOption, limitOption, log, modelArg, modelOption,
  posInt, Progress, splitArg, WeightsCliOptions,
} from './common';
import { ImagesCliOptions, classNamesOf, imageIndices, imagesOptions, imagesText, parseImages, writeImages } from './images';

interface AttackCliOptions extends ImagesCliOptions, WeightsCliOptions {
  model: string;
  data: string;
  labels?: string;
  split: string;
  attack: string;
  preset?: string;
  norm?: string;
  epsilon?: string;
  stepSize?: string;
  steps?: string;
  randomStart: boolean;
  restarts?: string;
  kappa?: string;
  binarySteps?: string;
  targets?: string;
  version?: string;
  attacks?: string;
  seed: string;
  batchSize: string;
  limit?: string;
  out?: string;
  device: string;
  json?: boolean;
}

const KINDS = [...ATTACK_KINDS, 'autoattack'] as const;

/** The flag of each declared option, where its name differs from the kebab-case of the key. */
const FLAG_OF: Record<string, string> = { kind: '--attack', randomStart: '--no-random-start', attacks: '--attacks' };
const flagOf = (key: string): string => FLAG_OF[key] ?? `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/**
 * Runs a check of the option declarations (lib/science/options.ts parseAttackOptions,
 * autoattack.ts resolveCascade) on the flags' values before any model or data is loaded, with
 * its ERR_ARG naming the flag instead of the option: "attack option 'stepSize'" → "--step-size".
 */
function asFlags<T>(check: () => T): T {
  try {
    return check();
  } catch (e) {
    if (!(e instanceof FisherLensError) || e.code !== 'ERR_ARG') throw e;
    const m = /^(?:attack|autoAttack)(?: stage \S+)? option '(\w+)'|^autoAttack stage '(kind)'/.exec(e.message);
    if (!m) throw e;
    const flag = m[2] ? '--attacks' : flagOf(m[1]);
    throw new FisherLensError('ERR_ARG', flag + e.message.slice(m[0].length));
  }
}

/** `fisherlens attack`: clean and robust accuracy of a model under one attack. */
export function register(program: Command): void {
  const cmd = imagesOptions(program.command('attack'))
    .description('accuracy and robust accuracy of a model under an adversarial attack (CW-L2: also the mean perturbation norm)');
  modelOption(cmd);
  dataOptions(cmd, { split: true });
  cmd
    .option('--attack <kind>', `attack: ${KINDS.join(' | ')}`, A.kind.default)
    .option('--preset <name>', `published settings: ${Object.keys(attackPresets).join(', ')} (explicit options override)`)
    .option('--norm <norm>', optionHelp(A.norm))
    .option('--epsilon <e>', optionHelp(A.epsilon))
    .option('--step-size <a>', optionHelp(A.stepSize))
    .option('--steps <k>', optionHelp({ ...A.steps, default: undefined }, defaultStepsText()))
    .option('--no-random-start', 'start PGD / CW∞ at x instead of a uniform point of the ball')
    .option('--restarts <r>', optionHelp({ ...A.restarts, default: undefined }), String(A.restarts.default))
    .option('--kappa <k>', optionHelp(A.kappa))
    .option('--binary-steps <n>', optionHelp(A.binarySteps))
    .option('--targets <n>', optionHelp(A.targets))
    .option('--version <v>', `autoattack: ${optionHelp(AUTOATTACK_OPTIONS.version)}`)
    .option('--attacks <list>', "autoattack --version custom: comma-separated stages, e.g. 'apgd-ce,apgd-t'")
    .option('--seed <n>', optionHelp({ ...A.seed, default: undefined }), String(A.seed.default))
    .option('--batch-size <n>', optionHelp({ ...E.batchSize, default: undefined }), String(E.batchSize.default));
  limitOption(cmd)
    .option('--out <file>', 'save the adversarial examples as float32 .npy [N, C, H, W] (autoattack: per sample the breaking stage\'s, else the last stage\'s attempt)');
  deviceOption(cmd);
  jsonOption(cmd)
    .action(action(async (o: AttackCliOptions) => {
      const kind = choice('attack', KINDS, o.attack);
      if (kind === 'autoattack') return autoAttackCli(o);
      if (o.version !== undefined || o.attacks !== undefined) throw invalidArgument(o.version !== undefined ? '--version' : '--attacks', '--attack autoattack with it', `--attack ${kind}`);
      let base: AttackParams = {};
      if (o.preset !== undefined) base = { ...attackPresets[choice('preset', Object.keys(attackPresets) as AttackPresetName[], o.preset)] };
      const params: AttackParams = { ...base, kind: o.preset !== undefined && kind === 'pgd' ? base.kind : kind };
      const norm = declared('norm', o.norm, A.norm);
      if (norm) params.norm = norm;
      if (o.epsilon !== undefined) params.epsilon = declared('epsilon', o.epsilon, A.epsilon);
      if (o.stepSize !== undefined) params.stepSize = declared('step-size', o.stepSize, A.stepSize);
      if (o.steps !== undefined) params.steps = declared('steps', o.steps, A.steps);
      if (o.kappa !== undefined) params.kappa = declared('kappa', o.kappa, A.kappa);
      if (o.binarySteps !== undefined) params.binarySteps = declared('binary-steps', o.binarySteps, A.binarySteps);
      if (o.targets !== undefined) params.targets = declared('targets', o.targets, A.targets);
      if (!o.randomStart) params.randomStart = false;
      params.restarts = declared('restarts', o.restarts, A.restarts);
      params.seed = declared('seed', o.seed, A.seed);
      // the whole combination against the declaration (which kinds take which options), before loading anything
      asFlags(() => parseAttackOptions(params));
      const split = splitArg(o.split);
      const batchSize = declared('batch-size', o.batchSize, E.batchSize);
      const limit = declared('limit', o.limit, E.limit);
      const imagesReq = parseImages(o, params.seed ?? 0);
      const model = await modelArg(o.model, o.device, { seed: params.seed, weights: o });
      const data = await loadData(o.data, { labels: o.labels, split });
      const n = Math.min(data.size, limit ?? data.size);
      log(`attack: ${params.kind} (${params.norm ?? attackSpec(params.kind).norms[0]}) on ${model.kind} model, ${data.name}: ${n} images`);
      const progress = new Progress('attack');
      // Ctrl-C stops after the current batch and removes the partial --out file (a second one exits now)
      const interrupt = interruptController('stopping after the current batch (no partial --out file is kept)');
      let r;
      try {
        r = await evaluateRobustness(model, data, [{ name: params.kind, ...params }], {
          batchSize, limit, save: o.out, signal: interrupt.controller.signal,
          // the grid's samples: their examples and outcomes from these batches (the grid's marks are these counts')
          keep: imagesReq ? imageIndices(data, n, imagesReq) : undefined,
          onBatch: (e) => progress.update(e.done, e.total, `robust ${(100 * e.worstCorrect / e.done).toFixed(1)} %`),
        });
      } finally {
        interrupt.dispose();
      }
      const a = r.attacks[0];
      const out: Record<string, unknown> = {
        attack: a.name, params: a.params, samples: r.samples,
        accuracy: r.accuracy, robustAccuracy: a.robustAccuracy, successRate: a.successRate,
        meanLoss: a.meanLoss,
      };
      if (params.kind === 'cw-l2') out.meanPerturbationNorm = Number.isFinite(a.meanNorm) ? a.meanNorm : null;
      if (a.saved) out.saved = a.saved;
      const images = imagesReq && await writeImages(model, data, n, [{ name: a.name, ...params }], imagesReq, classNamesOf(o.data), r.kept);
      if (images) out.images = images;
      emit(Boolean(o.json), out, () => [
        `accuracy        ${(100 * r.accuracy).toFixed(2)} %`,
        `robustAccuracy  ${(100 * a.robustAccuracy).toFixed(2)} %   (${a.name}, ${r.samples} samples)`,
        ...(params.kind === 'cw-l2' ? [`meanL2Norm      ${Number.isFinite(a.meanNorm) ? a.meanNorm.toFixed(4) : 'n/a'} (successful samples)`] : []),
        ...(a.saved ? [`saved           ${a.saved}`] : []),
        ...(images ? imagesText(images) : []),
      ].join('\n'));
      data.dispose();
      model.dispose();
    }));
}

/** `fisherlens attack --attack autoattack`: the cascade's clean and robust accuracy, per stage. */
async function autoAttackCli(o: AttackCliOptions): Promise<void> {
  for (const [flag, v] of [['preset', o.preset], ['step-size', o.stepSize], ['steps', o.steps], ['kappa', o.kappa], ['binary-steps', o.binarySteps], ['targets', o.targets]] as const) {
    if (v !== undefined) throw invalidArgument(`--${flag}`, 'nothing with --attack autoattack (its stages are parameter-free; use --version custom --attacks for a cheaper list)', v);
  }
  if (o.images !== undefined) throw invalidArgument('--images', 'nothing with --attack autoattack (a run draws the cascade\'s picture grid: eval.pictures in a config, docs/experiments.md)', o.images);
  if (!o.randomStart) throw invalidArgument('--no-random-start', 'nothing with --attack autoattack (its stages choose their own starts)');
  if (o.restarts !== String(A.restarts.default)) throw invalidArgument('--restarts', 'nothing with --attack autoattack (its stages choose their own restarts)', o.restarts);
  const version = declared('version', o.version ?? (o.attacks !== undefined ? 'custom' : undefined), AUTOATTACK_OPTIONS.version);
  const attacks = o.attacks?.split(',').map((a) => a.trim()).filter((a) => a.length > 0) as AttackKind[] | undefined;
  const norm = declared('norm', o.norm, AUTOATTACK_OPTIONS.norm);
  const split = splitArg(o.split);
  const batchSize = declared('batch-size', o.batchSize, E.batchSize);
  const limit = declared('limit', o.limit, E.limit);
  const seed = declared('seed', o.seed, AUTOATTACK_OPTIONS.seed);
  const epsilon = declared('epsilon', o.epsilon, AUTOATTACK_OPTIONS.epsilon);
  // the cascade against the declarations (known kinds, untargeted, norms) before loading anything;
  // stages that need more classes than the data has are dropped later with a warning
  asFlags(() => resolveCascade({ norm, epsilon, version, attacks, seed }, Number.MAX_SAFE_INTEGER));
  const model = await modelArg(o.model, o.device, { weights: o });
  const data = await loadData(o.data, { labels: o.labels, split });
  try {
    const n = Math.min(data.size, limit ?? data.size);
    log(`attack: autoattack (${version ?? AUTOATTACK_OPTIONS.version.default}, ${norm ?? AUTOATTACK_OPTIONS.norm.default}) on ${model.kind} model, ${data.name}: ${n} images`);
    const progress = new Progress('autoattack');
    let stage = '';
    // Ctrl-C stops between iterations and removes the partial --out file (a second one exits now)
    const interrupt = interruptController('stopping the attack (no partial --out file is kept)');
    let r;
    try {
      r = await autoAttack(model, data, {
        norm, epsilon, version, attacks, seed, batchSize, limit, save: o.out, signal: interrupt.controller.signal,
        onStage: (e) => { stage = `${e.name} (${e.stage + 1}/${e.stages}, ${e.remaining} left)`; },
        onProgress: (e) => { if (e.type === 'step' && e.steps > 0) progress.update(e.step, e.steps, stage); },
        onBatch: (e) => log(`autoattack: ${e.done}/${e.total} images, robust ${(100 * e.robust / e.done).toFixed(1)} %`),
      });
    } finally {
      interrupt.dispose();
    }
    for (const w of r.warnings) log(`warning: ${w}`);
    const out = {
      attack: 'autoattack', version: r.version, norm: r.norm, epsilon: r.epsilon, samples: r.samples,
      accuracy: r.accuracy, robustAccuracy: r.robustAccuracy, robustAccuracyStderr: r.robustAccuracyStderr,
      stages: r.stages.map((s) => ({ name: s.name, params: s.params, robustAccuracy: s.robustAccuracy, broken: s.broken, seconds: s.seconds })),
      warnings: r.warnings,
      ...(r.saved ? { saved: r.saved } : {}),
    };
    emit(Boolean(o.json), out, () => [
      `accuracy        ${(100 * r.accuracy).toFixed(2)} %`,
      ...r.stages.map((s) => `  after ${s.name.padEnd(10)} ${(100 * s.robustAccuracy).toFixed(2)} %   (broke ${s.broken}, ${s.seconds.toFixed(1)} s)`),
      `robustAccuracy  ${(100 * r.robustAccuracy).toFixed(2)} ± ${(100 * r.robustAccuracyStderr).toFixed(2)} %   (autoattack ${r.version}, ε ${r.epsilon} ${r.norm}, ${r.samples} samples)`,
      ...(r.saved ? [`saved           ${r.saved}`] : []),
    ].join('\n'));
  } finally {
    data.dispose();
    model.dispose();
  }
}
