/**
 * The report's pictures, from each run's pictures/ folder (lib/science/pictures.ts; no model needed):
 * the image grid (clean, each attack's example and perturbation, the Fisher eigenvector, with
 * captions) as an HTML table of embedded PNGs and a markdown table linking the PNG files, and the
 * class heatmaps (the paper's Figures 1–2 views) as vega-lite charts like the other plots.
 */
import * as fs from 'fs';
import * as path from 'path';
import type { TopLevelSpec } from 'vega-lite';
import { FILES } from '../experiment/rundir';
import { FisherLensError } from '../util/errors';
import { CLASS_NAMES, GRID_FILE, ClassMatrices, ClassPictures, PictureGrid, caption, readClassPictures, readPictureGrid } from '../science/picture-files';
import { Chart, CONFIG } from './charts';
import type { ReportRun } from './load';

/** What a run's pictures folder holds (either part may be missing). */
export interface RunPictures {
  run: ReportRun;
  /** The run's pictures folder. */
  dir: string;
  grid: PictureGrid | null;
  classes: ClassPictures | null;
  /** Class names of the run's dataset (undefined: class indices). */
  names?: string[];
}

/** The pictures of each finished run that has any. */
export function loadPictures(runs: ReportRun[]): RunPictures[] {
  const out: RunPictures[] = [];
  for (const run of runs) {
    if (!run.summary) continue;
    const dir = path.join(run.dir, FILES.pictures);
    if (!fs.existsSync(dir)) continue;
    const grid = readPictureGrid(dir);
    const classes = readClassPictures(dir);
    if (grid || classes) out.push({ run, dir, grid, classes, names: CLASS_NAMES[run.config.data.dataset] });
  }
  return out;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** The grid as an HTML table: one row per sample, PNGs embedded as data URIs, a caption under each. */
export function gridHtml(p: RunPictures): string {
  const g = p.grid!;
  const zoom = Math.max(1, Math.round(84 / Math.max(...g.imageShape.slice(1))));
  const [, H, W] = g.imageShape;
  const head = `<tr>${g.columns.map((c) => `<th>${esc(c.title)}</th>`).join('')}</tr>`;
  const rows = g.indices.map((idx, s) => `<tr>${g.columns.map((col) => {
    const cell = col.cells[s];
    const file = path.join(p.dir, cell.png);
    if (!fs.existsSync(file)) throw new FisherLensError('ERR_IO', `${file}: no such file (listed in ${path.join(p.dir, GRID_FILE)})`);
    const png = fs.readFileSync(file).toString('base64');
    const cap = caption(g, col, cell, s, p.names);
    const mark = col.kind === 'adversarial' ? (cell.robust ? ' robust' : cell.by ? ' broken' : '') : '';
    return `<td class="pic${mark}"><img src="data:image/png;base64,${png}" width="${W * zoom}" height="${H * zoom}" alt="${esc(`#${idx} ${col.title}: ${cap}`)}"><div>${esc(cap)}</div></td>`;
  }).join('')}</tr>`);
  return `<table class="pictures"><thead>${head}</thead><tbody>\n${rows.join('\n')}\n</tbody></table>`;
}

/** The grid as a markdown table whose cells link the PNG files (paths relative to `out`). */
export function gridMarkdown(p: RunPictures, out: string): string {
  const g = p.grid!;
  const rel = path.relative(out, p.dir).split(path.sep).join('/');
  const cell = (s: number, k: number) => {
    const col = g.columns[k];
    const c = col.cells[s];
    const cap = caption(g, col, c, s, p.names).replace(/\|/g, '\\|');
    return `![${cap}](${rel}/${c.png})<br>${cap}`;
  };
  return [
    `| ${g.columns.map((c) => c.title).join(' | ')} |`,
    `|${g.columns.map(() => ':---:').join('|')}|`,
    ...g.indices.map((_, s) => `| ${g.columns.map((_c, k) => cell(s, k)).join(' | ')} |`),
  ].join('\n');
}

function matrixRows(m: ClassMatrices, panel: string, names: string[], field: 'meanProbs' | 'kl') {
  return m[field].flatMap((row, a) => row.map((v, b) => ({ panel, true: names[a], other: names[b], value: Number.isFinite(v) ? v : null })));
}

function heatmap(title: string, rows: object[], names: string[], yTitle: string, xTitle: string, legend: string, scheme: string, format: string, max: number): object {
  const axisOpts = { sort: names, labelAngle: -40 };
  return {
    title, width: 22 * names.length, height: 22 * names.length,
    data: { values: rows },
    encoding: {
      x: { field: 'other', type: 'nominal', title: xTitle, sort: names, axis: { ...axisOpts, grid: false } },
      y: { field: 'true', type: 'nominal', title: yTitle, sort: names, axis: { grid: false } },
    },
    layer: [
      { mark: 'rect', encoding: { color: { field: 'value', type: 'quantitative', title: legend, scale: { scheme, domain: [0, max] } }, tooltip: [{ field: 'true' }, { field: 'other' }, { field: 'value', format }] } },
      { mark: { type: 'text', fontSize: 7 }, encoding: { text: { field: 'value', type: 'quantitative', format }, color: { condition: { test: `datum.value > ${0.6 * max}`, value: 'white' }, value: 'black' } } },
    ],
  };
}

/**
 * The class heatmaps of one run as one chart: the mean predicted distribution per true class of
 * the initial model (when recorded) and the final one (the paper's Figure 1), and the final
 * model's mean KL between classes (the view of its Figure 2; CCKL averages its off-diagonal).
 */
export function classHeatmaps(p: RunPictures): Chart | null {
  const cp = p.classes;
  if (!cp) return null;
  const C = cp.final.counts.length;
  const names = p.names && p.names.length === C ? p.names : Array.from({ length: C }, (_, k) => String(k));
  const panels: object[] = [];
  if (cp.initial) panels.push(heatmap('Initial model: mean p(·|x) per class', matrixRows(cp.initial, 'initial', names, 'meanProbs'), names, 'true class', 'predicted class', 'mean p', 'blues', '.2f', 1));
  panels.push(heatmap('Final model: mean p(·|x) per class', matrixRows(cp.final, 'final', names, 'meanProbs'), names, 'true class', 'predicted class', 'mean p', 'blues', '.2f', 1));
  const klMax = Math.max(0, ...cp.final.kl.flat().filter((v) => Number.isFinite(v)));
  panels.push(heatmap(`Final model: mean KL(p_i ‖ p_j) between classes (CCKL ${cp.final.cckl.toPrecision(4)} nats)`,
    matrixRows(cp.final, 'kl', names, 'kl'), names, 'class of x_i', 'class of x_j', 'nats', 'oranges', '.2r', klMax || 1));
  return {
    name: `classes-${p.run.id}`,
    title: `Class heatmaps: ${p.run.id}`,
    caption: `${p.run.id}: mean predicted distribution over the test images of each true class (rows sum to 1; the paper's Figure 1${cp.initial ? ', initial weights beside the trained model' : ''}) ` +
      `and mean KL divergence between the outputs of two classes (nats; CCKL is its off-diagonal mean weighted by class sizes, the paper's Figure 2 view), over ${cp.final.samples} test images.`,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      config: CONFIG,
      vconcat: [{ hconcat: panels.slice(0, -1), resolve: { scale: { color: 'independent' } } }, panels[panels.length - 1]],
      resolve: { scale: { color: 'independent' } },
    } as TopLevelSpec,
  };
}
