/**
 * `fisherlens report RUNS_DIR`: report.md and report.html (with plots/*.svg) from the run files
 * of a runs folder: the paper-style accuracy table (standard / PGD / CW), per-run Fisher and CCKL
 * summaries with the non-robust / robust split, training curves (Figures 3–4), the CCKL
 * decomposition and λ_max distributions, and each run's pictures (lib/report/pictures.ts). Every
 * number comes from summary.json / metrics.jsonl / pictures/. Equation numbers "(n)" in the text
 * and captions are those of docs/math.md, which writeReport copies beside the report as math.md
 * (the link works wherever the report folder goes; the npm package ships docs/math.md).
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError } from '../util/errors';
import { FILES, readJson } from '../experiment/rundir';
import { writeFileAtomic } from '../util/files';
import { packageRoot } from '../util/version';
import { loadRuns, orderRuns, ReportRun } from './load';
import { classHeatmaps, gridHtml, gridMarkdown, loadPictures } from './pictures';
import { provenanceText } from '../experiment/provenance';
import { Chart, accuracyBars, ccklDecomposition, lambdaMaxDistribution, methodName, renderSvg, trainingCurves } from './charts';
import { gridText, groupStats, hasMethodComparison, maskingChecksText, maskingFindings, methodChart, methodGroups, methodTable } from './methods';

export { loadRuns, ReportRun } from './load';
export { renderSvg, Chart } from './charts';
export { meanSd, binomialSeOfMean, methodGroups, groupStats, methodTable, maskingFindings, pctSd, numSd } from './methods';

/** Accuracy as a percentage with two decimals (0.81234 → "81.23"). */
export function pct(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '–' : (x * 100).toFixed(2);
}

/** A robust accuracy in % with its binomial standard error √(p(1 − p)/n) over n images: "58.20 ± 2.21". */
export function pctSe(x: number | undefined, n: number | undefined): string {
  if (x === undefined || !Number.isFinite(x) || !n) return pct(x);
  return `${pct(x)} ± ${(100 * Math.sqrt(x * (1 - x) / n)).toFixed(2)}`;
}

/** Column title of an attack: AutoAttack by its name, the others in capitals (PGD, CW). */
function attackTitle(c: string): string {
  return c === 'autoattack' ? 'AutoAttack' : c.toUpperCase();
}

/** A quantity with 4 significant digits, exponent notation outside [0.001, 10000). */
export function fmt(x: number | undefined): string {
  if (x === undefined || x === null || !Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a === 0) return '0';
  if (a >= 1e4 || a < 1e-3) return x.toExponential(3);
  return Number(x.toPrecision(4)).toString();
}

export interface ReportOptions {
  /** Where report.md, report.html and plots/ go (default: the runs folder). */
  out?: string;
  /** Title (default: the experiment name from experiment.json, else the folder name). */
  title?: string;
}

export interface Report {
  markdown: string;
  html: string;
  charts: (Chart & { svg: string })[];
  runs: ReportRun[];
}

interface Table { head: string[]; rows: string[][]; align?: ('l' | 'r')[] }

/** The name of the copy of docs/math.md beside a report, which its equation numbers "(n)" refer to. */
export const MATH_FILE = 'math.md';

/** The mathematics FisherLens implements, with the equation numbers the report cites: docs/math.md of the package. */
export function mathSource(): string {
  const f = path.join(packageRoot(), 'docs', 'math.md');
  if (!fs.existsSync(f)) throw new FisherLensError('ERR_IO', `${f} is missing from the fisherlens package (package.json "files" ships it)`);
  return f;
}

/** The sentence under a report's introduction that links math.md: [markdown, html]. */
const MATH_NOTE: [string, string] = [
  `Equation numbers (n) are those of [${MATH_FILE}](${MATH_FILE}) beside this report: the mathematics FisherLens implements (the package's docs/math.md).`,
  `Equation numbers (n) are those of <a href="${MATH_FILE}">${MATH_FILE}</a> beside this report: the mathematics FisherLens implements (the package's docs/math.md).`,
];

function mdTable(t: Table): string {
  const al = t.align ?? t.head.map((_, i) => (i === 0 ? 'l' : 'r'));
  return [
    `| ${t.head.join(' | ')} |`,
    `|${al.map((a) => (a === 'r' ? '---:' : ':---')).join('|')}|`,
    ...t.rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function htmlTable(t: Table): string {
  const al = t.align ?? t.head.map((_, i) => (i === 0 ? 'l' : 'r'));
  const cell = (tag: string, v: string, i: number) => `<${tag}${al[i] === 'r' ? ' class="r"' : ''}>${esc(v)}</${tag}>`;
  return `<table><thead><tr>${t.head.map((h, i) => cell('th', h, i)).join('')}</tr></thead><tbody>\n` +
    t.rows.map((r) => `<tr>${r.map((v, i) => cell('td', v, i)).join('')}</tr>`).join('\n') + '\n</tbody></table>';
}

/** Attack columns: pgd and cw first (the paper's table), then the others in first-seen order. */
export function attackColumns(runs: ReportRun[]): string[] {
  const seen: string[] = [];
  for (const r of runs) for (const k of Object.keys(r.summary?.attacks ?? {})) if (!seen.includes(k)) seen.push(k);
  const first = ['pgd', 'cw'].filter((k) => seen.includes(k));
  return [...first, ...seen.filter((k) => !first.includes(k))];
}

export function accuracyTable(runs: ReportRun[]): Table {
  const cols = attackColumns(runs);
  const hasGrid = runs.some((r) => gridText(r) !== '');
  const hasWorst = cols.length > 1 && runs.some((r) => r.summary?.worstCaseAccuracy !== undefined);
  return {
    head: ['model', 'training', ...(hasGrid ? ['grid'] : []), 'seed', 'standard', ...cols.map(attackTitle), ...(hasWorst ? ['worst case'] : []), 'test images'],
    align: ['l', 'l', ...(hasGrid ? ['l' as const] : []), 'r', 'r', ...cols.map(() => 'r' as const), ...(hasWorst ? ['r' as const] : []), 'r'],
    rows: runs.filter((r) => r.summary).map((r) => [
      r.model, methodName(r.method), ...(hasGrid ? [gridText(r)] : []), String(r.seed), pct(r.summary!.accuracy),
      ...cols.map((c) => pctSe(r.summary!.attacks[c], r.summary!.evalCount)),
      ...(hasWorst ? [pctSe(r.summary!.worstCaseAccuracy, r.summary!.evalCount)] : []), String(r.summary!.evalCount),
    ]),
  };
}

export function fisherTable(runs: ReportRun[]): Table {
  return {
    head: ['run', 'samples', 'mean ‖G‖_F', 'median ‖G‖_F', 'mean tr G', 'mean λ_max', 'median λ_max', 'q95 λ_max'],
    rows: runs.filter((r) => r.summary?.fisher).map((r) => {
      const f = r.summary!.fisher!;
      return [r.id, String(f.samples), fmt(f.frobeniusMean), fmt(f.frobeniusMedian), fmt(f.traceMean), fmt(f.lambdaMaxMean), fmt(f.lambdaMaxQuantiles.q50), fmt(f.lambdaMaxQuantiles.q95)];
    }),
  };
}

export function ccklTable(runs: ReportRun[]): Table {
  return {
    head: ['run', 'CCKL', '2·JS mean', 'lower bound', 'non-robust N', '± s.e.', 'robust R', 'N / CCKL', 'pairs'],
    rows: runs.filter((r) => r.summary?.cckl).map((r) => {
      const c = r.summary!.cckl!;
      return [r.id, fmt(c.cckl), fmt(2 * c.jsMean), fmt(c.lowerBound), fmt(c.nonRobust), fmt(c.nonRobustStderr), fmt(c.robust), pct(c.nonRobustFraction) + '%', String(c.pairs)];
    }),
  };
}

export function epochTable(r: ReportRun): Table {
  return {
    head: ['epoch', 'train loss', 'train acc', 'probe acc', 'mean ‖G‖_F', 'median ‖G‖_F', 'mean λ_max', 'CCKL', 'N / CCKL'],
    rows: r.epochs.map((e) => [String(e.epoch), fmt(e.trainLoss), pct(e.trainAccuracy), pct(e.probeAccuracy), fmt(e.fisherFrobeniusMean),
      fmt(e.fisherFrobeniusMedian), fmt(e.fisherLambdaMaxMean), fmt(e.cckl), e.ccklNonRobustFraction === undefined ? '–' : pct(e.ccklNonRobustFraction) + '%']),
  };
}

/**
 * Findings: what the run files say about the paper's claims, stated with their numbers.
 * Each finding compares quantities read from summary.json; none is asserted without data.
 */
export function findings(runs: ReportRun[]): string[] {
  const out: string[] = [];
  const done = runs.filter((r) => r.summary);
  // Figures 3–4: for a model trained with several methods, natural training has the largest Fisher norm.
  const byModel = new Map<string, ReportRun[]>();
  for (const r of done) if (r.summary!.fisher) byModel.set(r.model, [...(byModel.get(r.model) ?? []), r]);
  for (const [model, rs] of byModel) {
    const methods = new Set(rs.map((r) => r.method));
    if (!methods.has('natural') || methods.size < 2) continue;
    const parts = rs.map((r) => `${methodName(r.method)} ${fmt(r.summary!.fisher!.frobeniusMean)} (accuracy ${pct(r.summary!.accuracy)}%)`);
    const nat = rs.filter((r) => r.method === 'natural');
    const rob = rs.filter((r) => r.method !== 'natural');
    const natMin = Math.min(...nat.map((r) => r.summary!.fisher!.frobeniusMean));
    const robMax = Math.max(...rob.map((r) => r.summary!.fisher!.frobeniusMean));
    const holds = natMin > robMax;
    out.push(`**Fisher norm by training method (${model}).** Mean ‖G_x‖_F: ${parts.join(', ')}. ` +
      (holds ? `Natural training ends with the largest Fisher norm (×${fmt(natMin / robMax)} the largest adversarially trained one), as in the paper's Figures 3–4.`
        : 'Here natural training does NOT end with the largest Fisher norm, unlike the paper\'s Figures 3–4.'));
    const natAcc = Math.max(...nat.map((r) => r.summary!.accuracy));
    const robAcc = Math.max(...rob.map((r) => r.summary!.accuracy));
    out.push(natAcc > robAcc
      ? `Adversarial training costs standard accuracy for ${model} (natural ${pct(natAcc)}% vs at most ${pct(robAcc)}%), as in the paper.`
      : `For ${model}, adversarial training did not cost standard accuracy here (natural ${pct(natAcc)}% vs ${pct(robAcc)}%).`);
  }
  // The table: among architectures trained with one (adversarial) method, standard and adversarial
  // accuracy rise together. Models also trained with other methods belong to the method comparison
  // above (Figures 3–4), not to this architecture comparison.
  const cols = attackColumns(done);
  const methodsOf = new Map<string, Set<string>>();
  for (const r of done) methodsOf.set(r.model, new Set([...(methodsOf.get(r.model) ?? []), r.method]));
  const byMethod = new Map<string, ReportRun[]>();
  for (const r of done) if (methodsOf.get(r.model)!.size === 1) byMethod.set(r.method, [...(byMethod.get(r.method) ?? []), r]);
  for (const [method, rs] of byMethod) {
    const models = new Set(rs.map((r) => r.model));
    if (method === 'natural' || models.size < 3 || cols.length === 0) continue;
    const sorted = [...rs].sort((a, b) => a.summary!.accuracy - b.summary!.accuracy);
    const lines = rs.map((r) => `${r.model} ${pct(r.summary!.accuracy)} / ${cols.map((c) => pct(r.summary!.attacks[c])).join(' / ')}`);
    const rhos = cols.map((c) => spearman(sorted.map((r) => r.summary!.accuracy), sorted.map((r) => r.summary!.attacks[c] ?? NaN)));
    const together = rhos.every((r) => r > 0);
    const rhoText = `rank correlation with standard accuracy: ${cols.map((c, i) => `${c.toUpperCase()} ${fmt(rhos[i])}`).join(', ')}`;
    out.push(`**Architectures (${methodName(method)}-trained, standard / ${cols.map((c) => c.toUpperCase()).join(' / ')} %, in config order).** ${lines.join('; ')}. ` +
      (together ? `Standard and adversarial accuracy rise together across architectures (${rhoText}), as in the paper's table.`
        : `Standard and adversarial accuracy do NOT rise together across these architectures (${rhoText}), unlike the paper's table.`));
    const withC = sorted.filter((r) => r.summary!.cckl);
    if (withC.length >= 3) {
      const rho = spearman(withC.map((r) => r.summary!.accuracy), withC.map((r) => r.summary!.cckl!.robust));
      const inOrder = rs.filter((r) => r.summary!.cckl);
      out.push(`Robust CCKL component R (and N / CCKL) across these architectures: ${inOrder.map((r) => `${r.model} R = ${fmt(r.summary!.cckl!.robust)} (${pct(r.summary!.cckl!.nonRobustFraction)}%)`).join(', ')}; ` +
        `rank correlation of R with standard accuracy ${fmt(rho)}: ${rho > 0 ? 'the more accurate models carry more of their CCKL in the robust, higher-order component, as the paper argues' : 'not the paper\'s pattern here'}.`);
    }
  }
  // The bound chain of docs/math.md (4)–(8) on every run.
  const withC = done.filter((r) => r.summary!.cckl);
  if (withC.length > 0) {
    const ok = withC.filter((r) => { const c = r.summary!.cckl!; return c.lowerBound <= 2 * c.jsMean + 1e-9 && 2 * c.jsMean <= c.cckl + 1e-9; });
    out.push(`**Bound chain.** lower bound ≤ 2·JS mean ≤ CCKL holds on ${ok.length} of ${withC.length} runs${ok.length < withC.length ? ` (fails on ${withC.filter((r) => !ok.includes(r)).map((r) => r.id).join(', ')})` : ''}.`);
  }
  return out;
}

/** Spearman rank correlation (ties get average ranks). */
export function spearman(a: number[], b: number[]): number {
  const rank = (v: number[]) => {
    const idx = v.map((x, i) => [x, i] as const).sort((p, q) => p[0] - q[0]);
    const r = new Array<number>(v.length);
    for (let i = 0; i < idx.length;) {
      let j = i;
      while (j + 1 < idx.length && idx[j + 1][0] === idx[i][0]) j++;
      for (let k = i; k <= j; k++) r[idx[k][1]] = (i + j) / 2;
      i = j + 1;
    }
    return r;
  };
  const ra = rank(a);
  const rb = rank(b);
  const m = (v: number[]) => v.reduce((s, x) => s + x, 0) / v.length;
  const ma = m(ra);
  const mb = m(rb);
  let num = 0, da = 0, db = 0;
  for (let i = 0; i < ra.length; i++) { num += (ra[i] - ma) * (rb[i] - mb); da += (ra[i] - ma) ** 2; db += (rb[i] - mb) ** 2; }
  return da > 0 && db > 0 ? num / Math.sqrt(da * db) : 0;
}

/** Builds the report (markdown, html, SVG plots) from the run files under `dir`; writes nothing. */
export async function buildReport(dir: string, opts: ReportOptions = {}): Promise<Report> {
  if (!fs.existsSync(dir)) throw new FisherLensError('ERR_IO', `${dir}: no such directory`);
  let order: string[] | undefined;
  let title = opts.title;
  const expFile = path.join(dir, FILES.experiment);
  if (fs.existsSync(expFile)) {
    const exp = readJson<{ config?: { name?: string; description?: string }; runs?: string[] }>(expFile);
    order = exp.runs;
    title ??= exp.config?.name ? `FisherLens report: ${exp.config.name}` : undefined;
  }
  title ??= `FisherLens report: ${path.basename(path.resolve(dir))}`;
  const runs = orderRuns(loadRuns(dir), order);
  if (runs.length === 0) throw new FisherLensError('ERR_IO', `${dir}: no run directories (sub-folders with ${FILES.config})`);
  const finished = runs.filter((r) => r.summary);
  const unfinished = runs.filter((r) => !r.summary);

  // the training-method comparison (mean ± s.d. over seeds), when the sweep has one
  const groups = methodGroups(finished);
  const cols = attackColumns(finished);
  const stats = hasMethodComparison(groups) ? groups.map((g) => groupStats(g, cols)) : [];
  const charts: (Chart & { svg: string })[] = [];
  for (const c of [accuracyBars(finished, attackColumns(finished)), stats.length ? methodChart(stats, cols) : null, trainingCurves(runs), ccklDecomposition(finished), lambdaMaxDistribution(runs)]) {
    if (c) charts.push({ ...c, svg: await renderSvg(c.spec) });
  }

  const dataset = [...new Set(runs.map((r) => r.config.data.dataset))].join(', ');
  const intro = `${finished.length} of ${runs.length} runs finished on ${dataset}. ` +
    'Accuracies in %, on the test images of each run; Fisher quantities are of the input-space Fisher information G_x (9)–(18) of the final model (nats per pixel²); ' +
    'CCKL (1)–(3), its lower bounds (4)–(8) and its non-robust / robust split (19)–(22) in nats.';
  const sections: { title: string; text?: string; table?: Table; chart?: string; list?: string[] }[] = [];
  const fnd = [...findings(runs), ...maskingFindings(stats)];
  const mixed = mixedProvenance(finished);
  if (mixed) sections.push({ title: 'Warning: runs from different binaries or devices', text: mixed });
  if (fnd.length > 0) sections.push({ title: 'Findings', list: fnd });
  sections.push({ title: 'Accuracy (standard and under attack)', table: accuracyTable(runs), chart: 'accuracy' });
  const attacksUsed = finished[0]?.config.eval.attacks ?? [];
  if (attacksUsed.length > 0) {
    sections[sections.length - 1].text = 'Attacks: ' + attacksUsed.map((a) => `${(a.name ?? a.type).toUpperCase()} = ${a.type}, ${a.norm === 'l2' ? 'L2' : 'L∞'} ε = ${a.epsilon}` +
      `${a.steps ? `, ${a.steps} steps` : ''}${a.stepSize ? ` of ${a.stepSize}` : ''}`).join('; ') + '.';
  }
  if (stats.length > 0) {
    sections.push({
      title: 'Training methods compared (mean ± s.d. over seeds)',
      text: 'One row per training method (and grid point): the mean ± sample standard deviation over its seeds of accuracy in % (standard, then each attack with [the evaluation\'s binomial standard error of the mean, √(Σ p(1 − p)/n) / seeds]), ' +
        'the mean Frobenius norm and mean λ_max of G_x (9)–(18), CCKL (1)–(3) with its non-robust component N and robust component R (19)–(22), N / CCKL in %, and seconds per training epoch (metrics.jsonl). ' +
        maskingChecksText(stats),
      table: methodTable(stats, cols), chart: 'methods',
    });
  }
  sections.push({ title: 'Training curves (Figures 3–4 of the paper; math.md §5)', chart: 'training-curves' });
  sections.push({ title: 'Fisher information of the final models', table: fisherTable(runs), chart: 'lambda-max' });
  sections.push({ title: 'CCKL and its non-robust / robust split', table: ccklTable(runs), chart: 'cckl-decomposition' });
  const perEpoch = runs.filter((r) => r.epochs.length > 0);

  const chartByName = new Map(charts.map((c) => [c.name, c]));
  const md: string[] = [`# ${title}`, '', intro, '', MATH_NOTE[0], ''];
  const html: string[] = [];
  for (const s of sections) {
    const chart = s.chart ? chartByName.get(s.chart) : undefined;
    if (!s.table && !chart && !s.list && !s.text) continue;
    md.push(`## ${s.title}`, '');
    html.push(`<h2>${esc(s.title)}</h2>`);
    if (s.text) { md.push(s.text, ''); html.push(`<p>${esc(s.text)}</p>`); }
    if (s.list) {
      md.push(...s.list.map((l) => `- ${l}`), '');
      html.push('<ul>' + s.list.map((l) => `<li>${esc(l).replace(/\*\*(.+?)\*\*/g, '<b>$1</b>')}</li>`).join('\n') + '</ul>');
    }
    if (s.table && s.table.rows.length > 0) { md.push(mdTable(s.table), ''); html.push(htmlTable(s.table)); }
    if (chart) {
      md.push(`![${chart.title}](plots/${chart.name}.svg)`, '', `*${chart.caption}*`, '');
      html.push(`<figure>${chart.svg}<figcaption>${esc(chart.caption)}</figcaption></figure>`);
    }
  }
  const pictures = loadPictures(finished);
  if (pictures.length > 0) {
    const text = 'Per run, a seeded handful of test images: clean, the adversarial example of each evaluated attack (robust where the model still predicts the label, broken by the attack where it predicted it clean and no longer does, wrong clean otherwise), ' +
      'its perturbation δ = x_adv − x and the leading eigenvector of the Fisher information G_x (its sign fixed so that log p of the predicted class grows along it); ' +
      'signed columns map ±scale (in the title) to white / black around mid-grey. Then the class heatmaps (the paper\'s Figures 1–2). From pictures/ in each run folder.';
    md.push('## Pictures', '', text, '');
    html.push('<h2>Pictures</h2>', `<p>${esc(text)}</p>`);
    const out = opts.out ?? dir;
    for (const p of pictures) {
      md.push(`### ${p.run.id}`, '');
      html.push(`<h3>${esc(p.run.id)}</h3>`);
      if (p.grid) { md.push(gridMarkdown(p, out), ''); html.push(gridHtml(p)); }
      const c = classHeatmaps(p);
      if (c) {
        const chart = { ...c, svg: await renderSvg(c.spec) };
        charts.push(chart);
        md.push(`![${chart.title}](plots/${chart.name}.svg)`, '', `*${chart.caption}*`, '');
        html.push(`<figure>${chart.svg}<figcaption>${esc(chart.caption)}</figcaption></figure>`);
      }
    }
  }
  if (perEpoch.length > 0) {
    md.push('## Per-epoch metrics (metrics.jsonl)', '');
    html.push('<h2>Per-epoch metrics (metrics.jsonl)</h2>');
    for (const r of perEpoch) {
      md.push(`### ${r.id}`, '', mdTable(epochTable(r)), '');
      html.push(`<h3>${esc(r.id)}</h3>`, htmlTable(epochTable(r)));
    }
  }
  if (unfinished.length > 0) {
    const t: Table = {
      head: ['run', 'state', 'epochs logged', 'last error'], align: ['l', 'l', 'r', 'l'],
      rows: unfinished.map((r) => [r.id, r.state, String(r.epochs.length), r.error ?? '']),
    };
    md.push('## Unfinished runs', '', 'Re-run the same `fisherlens run` command to resume them.', '', mdTable(t), '');
    html.push('<h2>Unfinished runs</h2><p>Re-run the same <code>fisherlens run</code> command to resume them.</p>', htmlTable(t));
  }
  md.push('## Runs', '', mdTable({
    head: ['run', 'model spec', 'training', 'data', 'seconds', 'produced by'], align: ['l', 'l', 'l', 'l', 'r', 'l'],
    rows: runs.map((r) => [r.id, specText(r), trainText(r), dataText(r), r.summary ? fmt(r.summary.seconds) : '–', r.summary?.provenance ? provenanceText(r.summary.provenance) : '–']),
  }), '');
  html.push('<h2>Runs</h2>', htmlTable({
    head: ['run', 'model spec', 'training', 'data', 'seconds', 'produced by'], align: ['l', 'l', 'l', 'l', 'r', 'l'],
    rows: runs.map((r) => [r.id, specText(r), trainText(r), dataText(r), r.summary ? fmt(r.summary.seconds) : '–', r.summary?.provenance ? provenanceText(r.summary.provenance) : '–']),
  }));

  const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font-family:Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
th{background:#f6f6f6}.r{text-align:right;font-variant-numeric:tabular-nums}figure{margin:1em 0}figcaption{color:#555;font-size:13px;max-width:800px}
table.pictures td{text-align:center;vertical-align:top;font-size:11px;padding:3px 4px;max-width:120px}table.pictures th{font-size:12px;text-align:center}
table.pictures img{image-rendering:pixelated;display:block;margin:0 auto 2px}td.robust div{color:#1a7f37}td.broken div{color:#c62828}
h1{font-size:24px}h2{font-size:19px;margin-top:1.6em;border-bottom:1px solid #eee}h3{font-size:15px}
</style></head><body>
<h1>${esc(title)}</h1>
<p>${esc(intro)}</p>
<p>${MATH_NOTE[1]}</p>
${html.join('\n')}
</body></html>
`;
  return { markdown: md.join('\n'), html: page, charts, runs };
}

/**
 * A warning when finished runs were produced by different packages, variants, LibTorch builds,
 * native sources or devices (their numbers may not be comparable); '' when they agree.
 */
export function mixedProvenance(runs: ReportRun[]): string {
  const byText = new Map<string, string[]>();
  for (const r of runs) {
    const p = r.summary?.provenance;
    const key = p ? provenanceText(p) : 'not recorded (older run folder)';
    byText.set(key, [...(byText.get(key) ?? []), r.id]);
  }
  if (byText.size <= 1) return '';
  return `The numbers in these tables come from ${byText.size} different setups; compare across them with care: ` +
    [...byText].map(([k, ids]) => `${k} (${ids.length} run${ids.length > 1 ? 's' : ''}: ${ids.slice(0, 3).join(', ')}${ids.length > 3 ? ', …' : ''})`).join('; ') + '.';
}

function specText(r: ReportRun): string {
  const m = r.config.model;
  return [m.arch ?? m.path, m.activation && `activation ${m.activation}`, m.pool && `${m.pool} pool`, m.width && `width ${m.width}`].filter(Boolean).join(', ');
}
function trainText(r: ReportRun): string {
  const t = r.config.train;
  const inner = ['pgd-at', 'trades', 'mart', 'fire'].includes(t.method);
  const adv = (inner ? `, ε ${t.epsilon ?? 'default'}, ${t.steps ?? 'default'} steps` : '') +
    (t.method === 'trades' || t.method === 'mart' ? `, β ${t.beta ?? 'default'}` : '') +
    (['fire', 'jacobian', 'fisher-trace', 'fisher-lambda'].includes(t.method) ? `, λ ${t.lambda ?? 'default'}` : '');
  return `${methodName(t.method)}, ${t.epochs} epochs × batch ${t.batchSize}${t.maxBatches ? ` (≤ ${t.maxBatches} batches)` : ''}${adv}`;
}
function dataText(r: ReportRun): string {
  const d = r.config.data;
  return `${d.dataset}${d.trainSize ? `, ${d.trainSize} train` : ''}${d.testSize ? `, ${d.testSize} test` : ''}`;
}

/**
 * Writes report.md, report.html, plots/*.svg and math.md (the package's docs/math.md, which the
 * report's equation numbers refer to) atomically and returns their paths.
 */
export async function writeReport(dir: string, opts: ReportOptions = {}): Promise<{ markdown: string; html: string; plots: string[]; math: string; report: Report }> {
  const report = await buildReport(dir, opts);
  const out = opts.out ?? dir;
  const plots: string[] = [];
  for (const c of report.charts) {
    const f = path.join(out, 'plots', `${c.name}.svg`);
    writeFileAtomic(f, c.svg);
    plots.push(f);
  }
  const mdFile = path.join(out, 'report.md');
  const htmlFile = path.join(out, 'report.html');
  const mathFile = path.join(out, MATH_FILE);
  writeFileAtomic(mathFile, fs.readFileSync(mathSource()));
  writeFileAtomic(mdFile, report.markdown + '\n');
  writeFileAtomic(htmlFile, report.html);
  return { markdown: mdFile, html: htmlFile, plots, math: mathFile, report };
}
