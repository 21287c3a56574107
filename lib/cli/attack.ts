import { Command } from 'commander';
import { loadData } from '../science/data';
import { FisherLensError } from '../util/errors';
import { attackPresets, ATTACK_KINDS, AttackKind, AttackNorm, AttackParams, AttackPresetName } from '../science/attacks';
import { evaluate } from '../science/robust';
import { autoAttack, AUTOATTACK_VERSIONS, AutoAttackVersion } from '../science/autoattack';
import { ATTACK_OPTIONS as A, AUTOATTACK_OPTIONS, NORMS, attackSpec, defaultStepsText } from '../science/options';
import { optionHelp } from '../util/schema';
import { action, emit, log, num, int as intArg, Progress, modelArg, interruptController, weightsOptions, WeightsCliOptions } from './common';
import { ImagesCliOptions, classNamesOf, imagesOptions, imagesText, parseImages, writeImages } from './images';

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

const KINDS: string[] = [...ATTACK_KINDS, 'autoattack'];

/** `fisherlens attack`: clean and robust accuracy of a model under one attack. */
export function register(program: Command): void {
  imagesOptions(program
    .command('attack'))
    .description('accuracy and robust accuracy of a model under an adversarial attack (CW-L2: also the mean perturbation norm)')
    .requiredOption('--model <path>', 'model: checkpoint, TorchScript .pt (trusted sources only), spec .json or inline JSON spec')
    .addOption(weightsOptions()[0]).addOption(weightsOptions()[1]).addOption(weightsOptions()[2])
    .requiredOption('--data <spec>', 'data: fashion-mnist[:dir], mnist:<dir>, cifar10:<dir>, a dataset directory or images .npy')
    .option('--labels <path>', 'labels .npy (with an .npy --data)')
    .option('--split <split>', 'train or test', 'test')
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
    .option('--batch-size <n>', 'samples per batch', '128')
    .option('--limit <n>', 'attack only the first n samples')
    .option('--out <file>', 'save the adversarial examples as float32 .npy [N, C, H, W]')
    .option('--device <device>', "'cpu', 'cuda' or 'cuda:N'", 'cpu')
    .option('--json', 'print one JSON document on stdout')
    .action(action(async (o: AttackCliOptions) => {
      if (!KINDS.includes(o.attack as AttackKind)) throw new FisherLensError('ERR_ARG', `--attack: expected one of ${KINDS.join(', ')}, got '${o.attack}'`);
      if (o.norm !== undefined && !(NORMS as readonly string[]).includes(o.norm)) throw new FisherLensError('ERR_ARG', `--norm: expected one of ${NORMS.join(', ')}, got '${o.norm}'`);
      if (o.split !== 'train' && o.split !== 'test') throw new FisherLensError('ERR_ARG', `--split: expected train or test, got '${o.split}'`);
      const int = (name: string, v: string | undefined, min: number): number | undefined => (v === undefined ? undefined : intArg(name, v, min));
      if (o.attack === 'autoattack') return autoAttackCli(o, int);
      if (o.version !== undefined || o.attacks !== undefined) throw new FisherLensError('ERR_ARG', '--version and --attacks are for --attack autoattack');
      let base: AttackParams = {};
      if (o.preset !== undefined) {
        if (!(o.preset in attackPresets)) throw new FisherLensError('ERR_ARG', `--preset: expected one of ${Object.keys(attackPresets).join(', ')}, got '${o.preset}'`);
        base = { ...attackPresets[o.preset as AttackPresetName] };
      }
      const params: AttackParams = { ...base, kind: o.preset !== undefined && o.attack === 'pgd' ? base.kind : (o.attack as AttackKind) };
      if (o.norm) params.norm = o.norm as AttackNorm;
      if (o.epsilon !== undefined) params.epsilon = num('epsilon', o.epsilon);
      if (o.stepSize !== undefined) params.stepSize = num('step-size', o.stepSize);
      if (o.steps !== undefined) params.steps = int('steps', o.steps, 0);
      if (o.kappa !== undefined) params.kappa = num('kappa', o.kappa);
      if (o.binarySteps !== undefined) params.binarySteps = int('binary-steps', o.binarySteps, 1);
      if (o.targets !== undefined) params.targets = int('targets', o.targets, 1);
      if (!o.randomStart) params.randomStart = false;
      params.restarts = int('restarts', o.restarts, 1);
      params.seed = int('seed', o.seed, 0);
      const imagesReq = parseImages(o, params.seed ?? 0);
      const batchSize = int('batch-size', o.batchSize, 1)!;
      const limit = int('limit', o.limit, 1);
      const model = await modelArg(o.model, o.device, { seed: params.seed, weights: o });
      const data = await loadData(o.data, { labels: o.labels, split: o.split });
      const n = Math.min(data.size, limit ?? data.size);
      log(`attack: ${params.kind} (${params.norm ?? attackSpec(params.kind).norms[0]}) on ${model.kind} model, ${data.name}: ${n} images`);
      const progress = new Progress('attack');
      // Ctrl-C stops after the current batch and removes the partial --out file (a second one exits now)
      const interrupt = interruptController('stopping after the current batch (no partial --out file is kept)');
      let r;
      try {
        r = await evaluate(model, data, [{ name: params.kind, ...params }], {
          batchSize, limit, save: o.out, signal: interrupt.controller.signal,
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
      const images = imagesReq && await writeImages(model, data, n, [{ name: params.kind!, ...params }], imagesReq, classNamesOf(o.data));
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
async function autoAttackCli(o: AttackCliOptions, int: (name: string, v: string | undefined, min: number) => number | undefined): Promise<void> {
  for (const [flag, v] of [['preset', o.preset], ['step-size', o.stepSize], ['steps', o.steps], ['kappa', o.kappa], ['binary-steps', o.binarySteps], ['targets', o.targets], ['out', o.out], ['images', o.images]] as const) {
    if (v !== undefined) throw new FisherLensError('ERR_ARG', `--${flag} does not apply to --attack autoattack (its stages are parameter-free; use --version custom --attacks for a cheaper list)`);
  }
  if (!o.randomStart || o.restarts !== String(A.restarts.default)) throw new FisherLensError('ERR_ARG', '--no-random-start and --restarts do not apply to --attack autoattack');
  const version = (o.version ?? (o.attacks !== undefined ? 'custom' : AUTOATTACK_OPTIONS.version.default)) as AutoAttackVersion;
  if (!(AUTOATTACK_VERSIONS as readonly string[]).includes(version)) throw new FisherLensError('ERR_ARG', `--version: expected one of ${AUTOATTACK_VERSIONS.join(', ')}, got '${version}'`);
  const attacks = o.attacks?.split(',').map((a) => a.trim()).filter((a) => a.length > 0) as AttackKind[] | undefined;
  const batchSize = int('batch-size', o.batchSize, 1)!;
  const limit = int('limit', o.limit, 1);
  const seed = int('seed', o.seed, 0);
  const epsilon = o.epsilon !== undefined ? num('epsilon', o.epsilon) : undefined;
  const model = await modelArg(o.model, o.device, { weights: o });
  const data = await loadData(o.data, { labels: o.labels, split: o.split as 'train' | 'test' });
  try {
    const n = Math.min(data.size, limit ?? data.size);
    log(`attack: autoattack (${version}, ${o.norm ?? AUTOATTACK_OPTIONS.norm.default}) on ${model.kind} model, ${data.name}: ${n} images`);
    const progress = new Progress('autoattack');
    let stage = '';
    // Ctrl-C stops between iterations (a second one exits now)
    const interrupt = interruptController('stopping the attack');
    let r;
    try {
      r = await autoAttack(model, data, {
        norm: o.norm as AttackNorm | undefined, epsilon, version, attacks, seed, batchSize, limit, signal: interrupt.controller.signal,
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
    };
    emit(Boolean(o.json), out, () => [
      `accuracy        ${(100 * r.accuracy).toFixed(2)} %`,
      ...r.stages.map((s) => `  after ${s.name.padEnd(10)} ${(100 * s.robustAccuracy).toFixed(2)} %   (broke ${s.broken}, ${s.seconds.toFixed(1)} s)`),
      `robustAccuracy  ${(100 * r.robustAccuracy).toFixed(2)} ± ${(100 * r.robustAccuracyStderr).toFixed(2)} %   (autoattack ${r.version}, ε ${r.epsilon} ${r.norm}, ${r.samples} samples)`,
    ].join('\n'));
  } finally {
    data.dispose();
    model.dispose();
  }
}
