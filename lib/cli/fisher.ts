import { Command } from 'commander';
import { loadData, loadImages } from '../science/data';
import { fisherDataset, Summary } from '../science/fisher';
import { adversarialMeasure } from '../science/metrics';
import { FISHER_DATASET_OPTIONS as D, FISHER_OPTIONS as F, FISHER_SPEED_OPTIONS as S, RHO_OPTIONS } from '../science/options';
import { optionHelp } from '../util/schema';
import {
  action, dataOptions, declared, deviceOption, emit, jsonOption, limitOption, log, modelArg, modelOption, posInt, Progress, splitArg, WeightsCliOptions,
} from './common';
import { ImagesCliOptions, classNamesOf, imagesOptions, imagesText, parseImages, writeImages } from './images';

/** --layout, --classes-per-pass and --streams (lib/science/options.ts FISHER_SPEED_OPTIONS declares the values and defaults). */
export function speedArgs(o: { layout?: string; classesPerPass?: string; streams?: string }): { layout?: typeof S.layout.values[number]; classesPerPass?: number | 'auto'; streams?: number } {
  return {
    layout: declared('layout', o.layout, S.layout),
    classesPerPass: o.classesPerPass === 'auto' ? 'auto' : declared('classes-per-pass', o.classesPerPass, S.classesPerPass),
    streams: declared('streams', o.streams, S.streams),
  };
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
  const cmd = imagesOptions(program.command('fisher'))
    .description('per-sample Fisher information w.r.t. the input (λ_max, Frobenius norm, trace in nats/pixel²) and their means');
  modelOption(cmd);
  dataOptions(cmd, { split: true, labels: 'labels .npy: only the --images captions use them (the Fisher information needs no labels)' });
  cmd
    .option('--method <method>', optionHelp({ ...D.method, default: undefined }), D.method.default)
    .option('--batch-size <n>', D.batchSize.doc, String(D.batchSize.default));
  limitOption(cmd)
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
    .option('--per-sample', 'print every sample (human output; JSON always has the arrays)');
  deviceOption(cmd);
  jsonOption(cmd)
    .action(action(async (o: FisherCliOptions) => {
      const method = declared('method', o.method, D.method);
      const split = splitArg(o.split);
      const seed = declared('seed', o.seed, F.hutchinson.seed);
      const limit = posInt('limit', o.limit);
      const batchSize = declared('batch-size', o.batchSize, D.batchSize);
      const params = {
        method, batchSize, limit, tol: declared('tol', o.tol, F.power.tol), maxIter: declared('max-iter', o.maxIter, F.power.maxIter),
        steps: declared('steps', o.steps, F.lanczos.steps), probes: declared('probes', o.probes, F.hutchinson.probes), seed,
        channelsLast: o.channelsLast ? true : undefined, ...speedArgs(o),
      };
      const rho = o.rhoEps === undefined ? undefined : { eps: declared('rho-eps', o.rhoEps, RHO_OPTIONS.eps), steps: declared('rho-steps', o.rhoSteps, RHO_OPTIONS.steps) };
      const imagesReq = parseImages(o, seed);
      const model = await modelArg(o.model, o.device, { weights: o });
      // the Fisher information needs no labels: only the picture captions (--images) use them, and a
      // --labels file that is given must still be valid
      const labelled = o.labels !== undefined || imagesReq
        ? await loadData(o.data, { labels: o.labels, split })
        : undefined;
      const images = labelled ? labelled.images : await loadImages(o.data, { split });
      const [size, ...imageShape] = images.shape;
      const n = Math.min(size, limit ?? size);
      log(`fisher: ${method} on ${n} of ${size} images [${imageShape.join(', ')}] of ${o.data}, ${model.kind} model (${model.parameterCount} parameters)`);
      const progress = new Progress('fisher');
      const r = await fisherDataset(model, images, {
        ...params, onProgress: (e) => { if (e.type === 'batch') progress.update(e.done, e.total); },
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
      if (rho) {
        const eps = rho.eps;
        const rhos: number[] = [], bound: number[] = [];
        for (let i = 0; i < n; i += batchSize) {
          const x = images.slice(i, Math.min(n, i + batchSize));
          try {
            const q = await adversarialMeasure(model, x, eps, { steps: rho.steps });
            rhos.push(...q.rho);
            bound.push(...q.fisherBound);
          } finally {
            x.dispose();
          }
        }
        out.rho = { eps, rho: rhos, fisherBound: bound, meanRho: rhos.reduce((a, b) => a + b, 0) / rhos.length, meanFisherBound: bound.reduce((a, b) => a + b, 0) / bound.length };
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
        const m = out.rho as { eps: number; meanRho: number; meanFisherBound: number } | undefined;
        if (m) s += `rho(x, ${m.eps}) mean ${fmt(m.meanRho)} nats beside ½ε²λ_max mean ${fmt(m.meanFisherBound)}\n`;
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
