import { Command } from 'commander';
import { loadData, loadImages } from '../science/data';
import { FisherLensError } from '../util/errors';
import { fisherDataset, FisherLayout, FisherMethod, FISHER_LAYOUTS, FISHER_METHODS, Summary } from '../science/fisher';
import { adversarialMeasure } from '../science/metrics';
import { FISHER_DATASET_OPTIONS as D, FISHER_OPTIONS as F, FISHER_SPEED_OPTIONS as S, RHO_OPTIONS } from '../science/options';
import { optionHelp } from '../util/schema';
import { action, emit, int, log, modelArg, num, Progress, weightsOptions, WeightsCliOptions } from './common';
import { ImagesCliOptions, classNamesOf, imagesOptions, imagesText, parseImages, writeImages } from './images';

export function posInt(name: string, s: string | undefined): number | undefined {
  if (s === undefined) return undefined;
  return int(name, s, 0);
}

/** --layout and --classes-per-pass (lib/science/options.ts FISHER_SPEED_OPTIONS declares the values and defaults). */
export function layoutArgs(o: { layout?: string; classesPerPass?: string }): { layout?: FisherLayout; classesPerPass?: number | 'auto' } {
  if (o.layout !== undefined && !(FISHER_LAYOUTS as readonly string[]).includes(o.layout)) {
    throw new FisherLensError('ERR_ARG', `--layout: expected ${FISHER_LAYOUTS.join(', ')}, got '${o.layout}'`);
  }
  const k = o.classesPerPass === undefined || o.classesPerPass === 'auto' ? o.classesPerPass : int('classes-per-pass', o.classesPerPass, 1);
  return { layout: o.layout as FisherLayout | undefined, classesPerPass: k as number | 'auto' | undefined };
}
export const LAYOUT_HELP = optionHelp(S.layout);
export const CLASSES_PER_PASS_HELP = optionHelp(S.classesPerPass, 'auto');

const fmt = (v: number): string => (Number.isFinite(v) ? v.toExponential(4) : String(v));
export function summaryLine(name: string, s: Summary | undefined): string {
  if (!s) return '';
  return `${name.padEnd(11)} ${fmt(s.mean).padStart(12)} ${fmt(s.median).padStart(12)} ${fmt(s.q05).padStart(12)} ${fmt(s.q95).padStart(12)}\n`;
}

interface FisherCliOptions extends ImagesCliOptions, WeightsCliOptions {
  model: string; data: string; labels?: string; split: string; method: string; batchSize: string; limit?: string;
  tol: string; maxIter: string; steps?: string; probes: string; seed: string; device: string; channelsLast?: boolean;
  layout?: string; classesPerPass?: string; streams: string; rhoEps?: string; rhoSteps: string; perSample?: boolean; json?: boolean;
}

/** `fisherlens fisher`: per-sample Fisher information of a model on a dataset. */
export function register(program: Command): void {
  imagesOptions(program
    .command('fisher'))
    .description('per-sample Fisher information w.r.t. the input (λ_max, Frobenius norm, trace in nats/pixel²) and their means')
    .requiredOption('--model <model>', 'spec .json, FisherLens checkpoint, TorchScript .pt (trusted sources only) or a built-in architecture name')
    .addOption(weightsOptions()[0]).addOption(weightsOptions()[1]).addOption(weightsOptions()[2])
    .requiredOption('--data <spec>', 'fashion-mnist[:dir], mnist:<dir>, cifar10:<dir>, synthetic[:kind], a dataset directory or images .npy')
    .option('--labels <path>', 'labels .npy: only the --images captions use them (the Fisher information needs no labels)')
    .option('--split <split>', 'train or test', 'test')
    .option('--method <method>', `${FISHER_METHODS.join(' | ')}`, D.method.default)
    .option('--batch-size <n>', D.batchSize.doc, String(D.batchSize.default))
    .option('--limit <n>', 'only the first n samples')
    .option('--tol <x>', F.power.tol.doc, String(F.power.tol.default))
    .option('--max-iter <n>', F.power.maxIter.doc, String(F.power.maxIter.default))
    .option('--steps <n>', optionHelp(F.lanczos.steps))
    .option('--probes <n>', F.hutchinson.probes.doc, String(F.hutchinson.probes.default))
    .option('--seed <n>', F.hutchinson.seed.doc, String(F.hutchinson.seed.default))
    .option('--channels-last', S.channelsLast.doc)
    .option('--layout <layout>', LAYOUT_HELP)
    .option('--classes-per-pass <n>', CLASSES_PER_PASS_HELP)
    .option('--streams <n>', S.streams.doc, String(S.streams.default))
    .option('--rho-eps <eps>', 'also ρ(x, ε) (L2, pixel units) beside ½ε²λ_max for the same samples')
    .option('--rho-steps <n>', 'KL-PGD / KL attack steps for ρ', String(RHO_OPTIONS.steps.default))
    .option('--per-sample', 'print every sample (human output; JSON always has the arrays)')
    .option('--device <device>', "'cpu', 'cuda' or 'cuda:N'", 'cpu')
    .option('--json', 'print one JSON document')
    .action(action(async (o: FisherCliOptions) => {
      if (!FISHER_METHODS.includes(o.method as FisherMethod)) throw new FisherLensError('ERR_ARG', `--method: expected ${FISHER_METHODS.join(', ')}, got '${o.method}'`);
      const imagesReq = parseImages(o, posInt('seed', o.seed) ?? 0);
      const model = await modelArg(o.model, o.device, { weights: o });
      // the Fisher information needs no labels: only the picture captions (--images) use them, and a
      // --labels file that is given must still be valid
      const labelled = o.labels !== undefined || imagesReq
        ? await loadData(o.data, { labels: o.labels, split: o.split as 'train' | 'test' })
        : undefined;
      const images = labelled ? labelled.images : await loadImages(o.data, { split: o.split as 'train' | 'test' });
      const limit = posInt('limit', o.limit);
      const [size, ...imageShape] = images.shape;
      const n = Math.min(size, limit ?? size);
      log(`fisher: ${o.method} on ${n} of ${size} images [${imageShape.join(', ')}] of ${o.data}, ${model.kind} model (${model.parameterCount} parameters)`);
      const progress = new Progress('fisher');
      const r = await fisherDataset(model, images, {
        method: o.method as FisherMethod, batchSize: posInt('batch-size', o.batchSize), limit,
        tol: num('tol', o.tol), maxIter: posInt('max-iter', o.maxIter), steps: posInt('steps', o.steps),
        probes: posInt('probes', o.probes), seed: posInt('seed', o.seed), channelsLast: o.channelsLast ? true : undefined,
        ...layoutArgs(o), streams: posInt('streams', o.streams), onProgress: (e) => { if (e.type === 'batch') progress.update(e.done, e.total); },
      });
      const arr = (a?: Float64Array) => (a ? Array.from(a) : undefined);
      const out: Record<string, unknown> = {
        method: r.method, n: r.n, seconds: r.seconds,
        mean: { lambdaMax: r.summary.lambdaMax?.mean, frobenius: r.summary.frobenius?.mean, trace: r.summary.trace?.mean },
        summary: r.summary,
        lambdaMax: arr(r.lambdaMax), frobenius: arr(r.frobenius), trace: arr(r.trace),
        traceSe: arr(r.traceSe), frobeniusSe: arr(r.frobeniusSe),
        unconverged: r.unconverged,
      };
      if (o.rhoEps !== undefined) {
        const eps = num('rho-eps', o.rhoEps);
        const rho: number[] = [], bound: number[] = [];
        const bs = posInt('batch-size', o.batchSize) ?? 128;
        for (let i = 0; i < n; i += bs) {
          const x = images.slice(i, Math.min(n, i + bs));
          try {
            const q = await adversarialMeasure(model, x, eps, { steps: posInt('rho-steps', o.rhoSteps) });
            rho.push(...q.rho);
            bound.push(...q.fisherBound);
          } finally {
            x.dispose();
          }
        }
        out.rho = { eps, rho, fisherBound: bound, meanRho: rho.reduce((a, b) => a + b, 0) / rho.length, meanFisherBound: bound.reduce((a, b) => a + b, 0) / bound.length };
      }
      let pictures: Awaited<ReturnType<typeof writeImages>> | undefined;
      if (imagesReq && labelled) {
        pictures = await writeImages(model, labelled, n, [], imagesReq, classNamesOf(o.data));
        out.images = pictures;
      }
      emit(Boolean(o.json), out, () => {
        let s = `method ${r.method}, ${r.n} samples, ${r.seconds.toFixed(1)} s (units: nats/pixel²)\n`;
        s += `${'quantity'.padEnd(11)} ${'mean'.padStart(12)} ${'median'.padStart(12)} ${'q05'.padStart(12)} ${'q95'.padStart(12)}\n`;
        s += summaryLine('lambdaMax', r.summary.lambdaMax) + summaryLine('frobenius', r.summary.frobenius) + summaryLine('trace', r.summary.trace);
        if (r.unconverged !== undefined) s += `power iteration: ${r.unconverged} of ${r.n} samples did not converge\n`;
        const rho = out.rho as { eps: number; meanRho: number; meanFisherBound: number } | undefined;
        if (rho) s += `rho(x, ${rho.eps}) mean ${fmt(rho.meanRho)} nats beside ½ε²λ_max mean ${fmt(rho.meanFisherBound)}\n`;
        if (o.perSample) {
          s += 'sample lambdaMax frobenius trace\n';
          for (let i = 0; i < r.n; i++) s += `${i} ${r.lambdaMax?.[i] ?? ''} ${r.frobenius?.[i] ?? ''} ${r.trace?.[i] ?? ''}\n`;
        }
        if (pictures) s += imagesText(pictures).join('\n') + '\n';
        return s.trimEnd();
      });
      if (labelled) labelled.dispose(); else images.dispose();
      model.dispose();
    }));
}
