/**
 * Report plots as vega-lite specs rendered to SVG headless (vega View, renderer 'none' →
 * toSVG(); no canvas needed). Each function takes the run files' numbers and returns a spec;
 * {@link renderSvg} turns a spec into SVG text.
 */
import * as vega from 'vega';
import * as vl from 'vega-lite';
import type { TopLevelSpec } from 'vega-lite';
import type { ReportRun } from './load';

export interface Chart {
  /** File name under plots/ (without .svg). */
  name: string;
  title: string;
  /** What the plot shows, for the report text. */
  caption: string;
  spec: TopLevelSpec;
}

const FONT = { font: 'Helvetica, Arial, sans-serif' };
/** The look shared by every report chart. */
export const CONFIG = {
  ...FONT,
  view: { stroke: '#ddd' },
  axis: { labelFont: FONT.font, titleFont: FONT.font, grid: true, gridColor: '#eee', labelLimit: 320 },
  legend: { labelFont: FONT.font, titleFont: FONT.font, labelLimit: 260 },
  title: { font: FONT.font, fontSize: 14 },
};

/** Renders a vega-lite spec to SVG text. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const compiled = vl.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const METHOD_NAMES: Record<string, string> = { natural: 'natural', 'pgd-at': 'PGD-AT', trades: 'TRADES', mart: 'MART', fire: 'FIRE' };
export const methodName = (m: string): string => METHOD_NAMES[m] ?? m;

/** Figures 3–4: test accuracy and mean ‖G_x‖_F per epoch, one line per run (colour), dashed by method. */
export function trainingCurves(runs: ReportRun[]): Chart | null {
  const rows = runs.flatMap((r) => r.epochs.map((e) => ({
    run: r.id, method: methodName(r.method), epoch: e.epoch,
    accuracy: e.probeAccuracy, fisher: e.fisherFrobeniusMean,
  })));
  if (rows.length === 0) return null;
  const maxEpoch = Math.max(2, ...rows.map((r) => r.epoch));
  const ids = runs.map((r) => r.id);
  const enc = {
    x: { field: 'epoch', type: 'quantitative' as const, title: 'epoch', scale: { domain: [1, maxEpoch], nice: false }, axis: { tickMinStep: 1, format: 'd' } },
    color: { field: 'run', type: 'nominal' as const, title: 'run', sort: ids, scale: { domain: ids }, legend: { symbolType: 'stroke', symbolStrokeWidth: 3 } },
    strokeDash: { field: 'method', type: 'nominal' as const, title: 'method', legend: { symbolType: 'stroke', symbolStrokeWidth: 2, symbolSize: 400, encode: { symbols: { update: { stroke: { value: '#333' } } } } } },
  };
  return {
    name: 'training-curves',
    title: 'Accuracy and Fisher norm per epoch',
    caption: 'Test (probe) accuracy and mean Frobenius norm of the input-space Fisher information G_x per epoch, one line per run (the paper\'s Figures 3–4). Fisher norm on a log scale.',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      data: { values: rows },
      config: CONFIG,
      hconcat: [
        {
          title: 'Test accuracy',
          width: 320, height: 240,
          transform: [{ filter: 'isValid(datum.accuracy)' }],
          mark: { type: 'line', point: true },
          encoding: { ...enc, y: { field: 'accuracy', type: 'quantitative', title: 'test accuracy', axis: { format: '.0%' } } },
        },
        {
          title: 'Mean ‖G_x‖_F',
          width: 320, height: 240,
          transform: [{ filter: 'isValid(datum.fisher) && datum.fisher > 0' }],
          mark: { type: 'line', point: true },
          encoding: { ...enc, y: { field: 'fisher', type: 'quantitative', title: 'mean Fisher Frobenius norm', scale: { type: 'log' } } },
        },
      ],
      resolve: { scale: { color: 'shared', strokeDash: 'shared' } },
    } as TopLevelSpec,
  };
}

/** The paper's table as grouped bars: standard / PGD / CW (and other attacks) accuracy per run. */
export function accuracyBars(runs: ReportRun[], attackCols: string[]): Chart | null {
  const rows = runs.filter((r) => r.summary).flatMap((r) => [
    { run: r.id, evaluation: 'standard', accuracy: r.summary!.accuracy },
    ...attackCols.filter((a) => r.summary!.attacks[a] !== undefined).map((a) => ({ run: r.id, evaluation: a.toUpperCase(), accuracy: r.summary!.attacks[a] })),
  ]);
  if (rows.length === 0) return null;
  return {
    name: 'accuracy',
    title: 'Accuracy: standard and under attack',
    caption: 'Final test accuracy of each run, clean (standard) and under each evaluation attack (the paper\'s table).',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      data: { values: rows },
      config: CONFIG,
      width: { step: 14 },
      height: 240,
      mark: 'bar',
      encoding: {
        x: { field: 'run', type: 'nominal', title: null, sort: null, axis: { labelAngle: -30 } },
        xOffset: { field: 'evaluation', sort: null },
        y: { field: 'accuracy', type: 'quantitative', title: 'accuracy', axis: { format: '.0%' }, scale: { domain: [0, 1] } },
        color: { field: 'evaluation', type: 'nominal', title: 'evaluation', sort: null },
        tooltip: [{ field: 'run' }, { field: 'evaluation' }, { field: 'accuracy', format: '.2%' }],
      },
    } as TopLevelSpec,
  };
}

/** CCKL decomposition: stacked non-robust N and robust R = CCKL − N per run, with the lower bound as a tick. */
export function ccklDecomposition(runs: ReportRun[]): Chart | null {
  const done = runs.filter((r) => r.summary?.cckl);
  if (done.length === 0) return null;
  const parts = done.flatMap((r) => [
    { run: r.id, component: 'non-robust N', value: r.summary!.cckl!.nonRobust, order: 0 },
    { run: r.id, component: 'robust R', value: r.summary!.cckl!.robust, order: 1 },
  ]);
  const bounds = done.map((r) => ({ run: r.id, bound: r.summary!.cckl!.lowerBound, cckl: r.summary!.cckl!.cckl, what: 'lower bound' }));
  return {
    name: 'cckl-decomposition',
    title: 'CCKL and its decomposition',
    caption: 'CCKL of each run split into the non-robust component N (quadratic Fisher term over different-class pairs) and the robust component R = CCKL − N; the black tick is the cross-entropy-based lower bound (math.md (4)–(8), (19)–(22)).',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      config: CONFIG,
      width: { step: 48 },
      height: 240,
      layer: [
        {
          data: { values: parts },
          mark: 'bar',
          encoding: {
            x: { field: 'run', type: 'nominal', title: null, sort: null, axis: { labelAngle: -30 } },
            y: { field: 'value', type: 'quantitative', title: 'nats', stack: 'zero' },
            color: { field: 'component', type: 'nominal', title: 'component', scale: { range: ['#e45756', '#4c78a8'] } },
            order: { field: 'order' },
            tooltip: [{ field: 'run' }, { field: 'component' }, { field: 'value', format: '.4f' }],
          },
        },
        {
          data: { values: bounds },
          mark: { type: 'tick', color: 'black', thickness: 2, size: 36 },
          encoding: {
            x: { field: 'run', type: 'nominal', sort: null },
            y: { field: 'bound', type: 'quantitative' },
            tooltip: [{ field: 'run' }, { field: 'bound', title: 'lower bound', format: '.4f' }, { field: 'cckl', title: 'CCKL', format: '.4f' }],
          },
        },
      ],
    } as TopLevelSpec,
  };
}

/** Distribution of per-sample λ_max(G_x) per run (box plots of log10 λ_max). */
export function lambdaMaxDistribution(runs: ReportRun[]): Chart | null {
  const rows = runs.filter((r) => r.summary?.fisher).flatMap((r) =>
    r.summary!.fisher!.lambdaMax.filter((v) => v > 0 && Number.isFinite(v)).map((v) => ({ run: r.id, log10LambdaMax: Math.log10(v) })));
  if (rows.length === 0) return null;
  const ids = runs.map((r) => r.id);
  return {
    name: 'lambda-max',
    title: 'Distribution of λ_max(G_x)',
    caption: 'Per-sample largest eigenvalue of the Fisher information G_x on the evaluated test images (log10; box = quartiles, whiskers = 1.5 IQR). Adversarial vulnerability grows with λ_max: ρ(x, ε) ≈ ½ ε² λ_max.',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      data: { values: rows },
      config: CONFIG,
      width: 420,
      height: { step: 26 },
      mark: { type: 'boxplot', extent: 1.5, size: 16 },
      encoding: {
        y: { field: 'run', type: 'nominal', title: null, sort: ids },
        x: { field: 'log10LambdaMax', type: 'quantitative', title: 'log10 λ_max(G_x)' },
        color: { field: 'run', type: 'nominal', legend: null, scale: { domain: ids } },
      },
    } as TopLevelSpec,
  };
}
