/**
 * The training-method comparison of a report (configs/training-methods.yaml, issue 25): finished
 * runs grouped by model, training method and grid point, one row per group with the mean ± sample
 * standard deviation over its seeds of standard / attacked accuracy, mean ‖G_x‖_F and λ_max, CCKL
 * with its N / R split and seconds per epoch; a chart of the same; and the gradient-masking
 * checks read from the same files. Every number is one of summary.json / metrics.jsonl's, averaged.
 */
import type { TopLevelSpec } from 'vega-lite';
import type { ReportRun } from './load';
import { CONFIG, Chart, methodName } from './charts';

/** Runs of one model and training configuration that differ only in their seed. */
export interface MethodGroup {
  model: string;
  method: string;
  /** The grid point's other coordinates ("train.lambda=0.1"), '' when none. */
  grid: string;
  /** Finished runs, in report order. */
  runs: ReportRun[];
}

/** Mean and sample standard deviation (n − 1; NaN for fewer than two values) of values. */
export interface MeanSd { mean: number; sd: number; n: number }

export function meanSd(values: number[]): MeanSd {
  const v = values.filter((x) => Number.isFinite(x));
  const n = v.length;
  const mean = n > 0 ? v.reduce((s, x) => s + x, 0) / n : NaN;
  let sd = n > 1 ? Math.sqrt(v.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1)) : NaN;
  // equal values: the mean's rounding leaves a spread of ~1e-17 relative; it is none
  if (sd <= 1e-12 * Math.abs(mean)) sd = 0;
  return { mean, sd, n };
}

/** A grid point without the method, the seed and the model (those are the group's other keys). */
export function gridText(r: ReportRun): string {
  const g = Object.entries(r.config.gridPoint ?? {}).filter(([k]) => k !== 'train.method' && k !== 'seed' && !k.startsWith('model.'));
  return g.map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', ');
}

/** Finished runs grouped by (model, method, grid point), groups in the order of their first run. */
export function methodGroups(runs: ReportRun[]): MethodGroup[] {
  const groups = new Map<string, MethodGroup>();
  for (const r of runs) {
    if (!r.summary) continue;
    const grid = gridText(r);
    const key = JSON.stringify([r.model, r.method, grid]);
    const g = groups.get(key) ?? { model: r.model, method: r.method, grid, runs: [] };
    g.runs.push(r);
    groups.set(key, g);
  }
  return [...groups.values()];
}

/**
 * Whether a report gets the comparison: some model trained by at least two methods, and some
 * group with at least two seeds (a one-seed sweep has no spread to show; its per-run tables say it all).
 */
export function hasMethodComparison(groups: MethodGroup[]): boolean {
  const methods = new Map<string, Set<string>>();
  for (const g of groups) methods.set(g.model, new Set([...(methods.get(g.model) ?? []), g.method]));
  return [...methods.values()].some((m) => m.size >= 2) && groups.some((g) => g.runs.length >= 2);
}

/**
 * The evaluation's binomial standard error of a group's mean accuracy: √(Σ_i p_i(1 − p_i)/n_i) / k
 * over its k runs (p_i the run's accuracy on n_i test images). It is the test-set sampling error
 * alone; the seeds' spread is the s.d. beside it.
 */
export function binomialSeOfMean(ps: number[], ns: number[]): number {
  const k = ps.length;
  if (k === 0) return NaN;
  let v = 0;
  for (let i = 0; i < k; i++) v += ps[i] * (1 - ps[i]) / ns[i];
  return Math.sqrt(v) / k;
}

/** Mean seconds per epoch of a run (metrics.jsonl `seconds`; NaN when none were logged). */
export function secondsPerEpoch(r: ReportRun): number {
  const s = r.epochs.map((e) => e.seconds).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  return s.length > 0 ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
}

/** The per-group quantities of the table and chart (accuracies as fractions). */
export interface GroupStats {
  group: MethodGroup;
  accuracy: MeanSd;
  /** By attack name: accuracy mean ± s.d. over seeds and the binomial s.e. of the mean. */
  attacks: Record<string, MeanSd & { se: number }>;
  frobenius: MeanSd;
  lambdaMax: MeanSd;
  cckl: MeanSd;
  nonRobust: MeanSd;
  robust: MeanSd;
  nonRobustFraction: MeanSd;
  secondsPerEpoch: MeanSd;
}

export function groupStats(g: MethodGroup, attackCols: string[]): GroupStats {
  const s = g.runs.map((r) => r.summary!);
  const attacks: GroupStats['attacks'] = {};
  for (const a of attackCols) {
    const have = s.filter((x) => x.attacks[a] !== undefined);
    if (have.length === 0) continue;
    const ps = have.map((x) => x.attacks[a]);
    attacks[a] = { ...meanSd(ps), se: binomialSeOfMean(ps, have.map((x) => x.evalCount)) };
  }
  const of = (f: (x: typeof s[number]) => number | undefined) => meanSd(s.map(f).filter((x): x is number => x !== undefined));
  return {
    group: g,
    accuracy: of((x) => x.accuracy),
    attacks,
    frobenius: of((x) => x.fisher?.frobeniusMean),
    lambdaMax: of((x) => x.fisher?.lambdaMaxMean),
    cckl: of((x) => x.cckl?.cckl),
    nonRobust: of((x) => x.cckl?.nonRobust),
    robust: of((x) => x.cckl?.robust),
    nonRobustFraction: of((x) => x.cckl?.nonRobustFraction),
    secondsPerEpoch: meanSd(g.runs.map(secondsPerEpoch)),
  };
}

/** "m ± s" of fractions in % with two decimals ("81.23 ± 0.41"; "81.23" for one seed). */
export function pctSd(m: MeanSd): string {
  if (!Number.isFinite(m.mean)) return '–';
  return Number.isFinite(m.sd) ? `${(100 * m.mean).toFixed(2)} ± ${(100 * m.sd).toFixed(2)}` : (100 * m.mean).toFixed(2);
}

/** "m ± s" with 3 significant digits each ("0.0123 ± 0.00201"). */
export function numSd(m: MeanSd): string {
  const f = (x: number) => {
    const a = Math.abs(x);
    if (a === 0) return '0';
    return a >= 1e4 || a < 1e-3 ? x.toExponential(2) : Number(x.toPrecision(3)).toString();
  };
  if (!Number.isFinite(m.mean)) return '–';
  return Number.isFinite(m.sd) ? `${f(m.mean)} ± ${f(m.sd)}` : f(m.mean);
}

/** Column title of an attack: AutoAttack by its name, the others in capitals. */
function attackTitle(c: string): string {
  return c === 'autoattack' ? 'AutoAttack' : c.toUpperCase();
}

/** The comparison table: one row per group, mean ± s.d. over seeds; attack columns add [s.e.], the evaluation's binomial s.e. of the mean. */
export function methodTable(stats: GroupStats[], attackCols: string[]): { head: string[]; rows: string[][]; align: ('l' | 'r')[] } {
  const models = new Set(stats.map((s) => s.group.model));
  const hasGrid = stats.some((s) => s.group.grid !== '');
  const cols = attackCols.filter((a) => stats.some((s) => s.attacks[a]));
  const lead = [...(models.size > 1 ? ['model'] : []), 'training', ...(hasGrid ? ['grid'] : []), 'seeds'];
  const head = [...lead, 'standard', ...cols.map((c) => `${attackTitle(c)} [s.e.]`),
    'mean ‖G_x‖_F', 'mean λ_max', 'CCKL', 'N', 'R', 'N / CCKL %', 's / epoch'];
  const rows = stats.map((s) => [
    ...(models.size > 1 ? [s.group.model] : []), methodName(s.group.method), ...(hasGrid ? [s.group.grid] : []), String(s.group.runs.length),
    pctSd(s.accuracy),
    ...cols.map((c) => (s.attacks[c] ? `${pctSd(s.attacks[c])} [${(100 * s.attacks[c].se).toFixed(2)}]` : '–')),
    numSd(s.frobenius), numSd(s.lambdaMax), numSd(s.cckl), numSd(s.nonRobust), numSd(s.robust),
    pctSd(s.nonRobustFraction), numSd(s.secondsPerEpoch),
  ]);
  return { head, rows, align: head.map((_, i) => (i < lead.length - 1 ? 'l' : 'r')) };
}

/** A group's label in charts and findings: method (and grid point, model when several). */
function label(g: MethodGroup, models: number): string {
  return [models > 1 ? g.model : '', methodName(g.method), g.grid].filter(Boolean).join(' ');
}

/**
 * The comparison chart: per group, bars of mean accuracy (standard and each attack) with ±1 s.d.
 * over seeds as error rules; beside it mean ‖G_x‖_F (log scale) ± s.d.; beside that the stacked
 * mean N and R of CCKL.
 */
export function methodChart(stats: GroupStats[], attackCols: string[]): Chart | null {
  if (stats.length === 0) return null;
  const models = new Set(stats.map((s) => s.group.model)).size;
  const order = stats.map((s) => label(s.group, models));
  const acc = stats.flatMap((s) => {
    const l = label(s.group, models);
    const one = (evaluation: string, m: MeanSd) => ({ group: l, evaluation, mean: m.mean, lo: m.mean - (Number.isFinite(m.sd) ? m.sd : 0), hi: m.mean + (Number.isFinite(m.sd) ? m.sd : 0) });
    return [one('standard', s.accuracy), ...attackCols.filter((a) => s.attacks[a]).map((a) => one(attackTitle(a), s.attacks[a]))];
  });
  const fro = stats.filter((s) => s.frobenius.mean > 0).map((s) => {
    const sd = Number.isFinite(s.frobenius.sd) ? s.frobenius.sd : 0;
    // log scale: the lower end of mean − s.d. is kept positive (a tenth of the mean at least)
    return { group: label(s.group, models), mean: s.frobenius.mean, lo: Math.max(s.frobenius.mean - sd, s.frobenius.mean / 10), hi: s.frobenius.mean + sd };
  });
  const parts = stats.filter((s) => Number.isFinite(s.nonRobust.mean)).flatMap((s) => [
    { group: label(s.group, models), component: 'non-robust N', value: s.nonRobust.mean, order: 0 },
    { group: label(s.group, models), component: 'robust R', value: s.robust.mean, order: 1 },
  ]);
  const x = { field: 'group', type: 'nominal' as const, title: null, sort: order, axis: { labelAngle: -35 } };
  const panels: unknown[] = [{
    title: 'Accuracy (mean ± s.d. over seeds)',
    width: { step: 12 }, height: 240,
    data: { values: acc },
    layer: [
      {
        mark: 'bar',
        encoding: {
          x, xOffset: { field: 'evaluation', sort: null },
          y: { field: 'mean', type: 'quantitative', title: 'accuracy', axis: { format: '.0%' }, scale: { domain: [0, 1] } },
          color: { field: 'evaluation', type: 'nominal', title: 'evaluation', sort: null },
          tooltip: [{ field: 'group' }, { field: 'evaluation' }, { field: 'mean', format: '.2%' }, { field: 'lo', format: '.2%' }, { field: 'hi', format: '.2%' }],
        },
      },
      {
        mark: { type: 'rule', color: 'black' },
        encoding: { x, xOffset: { field: 'evaluation', sort: null }, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } },
      },
    ],
  }];
  if (fro.length > 0) {
    panels.push({
      title: 'Mean ‖G_x‖_F (± s.d.)',
      width: { step: 22 }, height: 240,
      data: { values: fro },
      layer: [
        { mark: { type: 'point', filled: true, size: 60 }, encoding: { x, y: { field: 'mean', type: 'quantitative', title: 'mean Fisher Frobenius norm', scale: { type: 'log' } }, tooltip: [{ field: 'group' }, { field: 'mean', format: '.4g' }] } },
        { mark: 'rule', encoding: { x, y: { field: 'lo', type: 'quantitative' }, y2: { field: 'hi' } } },
      ],
    });
  }
  if (parts.length > 0) {
    panels.push({
      title: 'CCKL = N + R (means)',
      width: { step: 22 }, height: 240,
      data: { values: parts },
      mark: 'bar',
      encoding: {
        x, y: { field: 'value', type: 'quantitative', title: 'nats', stack: 'zero' },
        color: { field: 'component', type: 'nominal', title: 'component', scale: { range: ['#e45756', '#4c78a8'] } },
        order: { field: 'order' },
        tooltip: [{ field: 'group' }, { field: 'component' }, { field: 'value', format: '.4f' }],
      },
    });
  }
  return {
    name: 'methods',
    title: 'Training methods compared',
    caption: 'Per training method (mean over seeds): accuracy clean (standard) and under each evaluation attack with ±1 s.d. over seeds; the mean Frobenius norm of the input-space Fisher information G_x (log scale, ±1 s.d.); CCKL split into its non-robust component N and robust component R = CCKL − N (math.md (19)–(22)).',
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      config: CONFIG,
      hconcat: panels,
      resolve: { scale: { color: 'independent' } },
    } as TopLevelSpec,
  };
}

/**
 * Gradient-masking checks per group, as sentences (empty when nothing looks wrong or nothing was
 * measured), from the configured attacks' names and types:
 * - a gradient-free (Square) attack that leaves fewer images standing than a gradient attack of
 *   the same norm and ε (by more than 2 binomial s.e. of the difference): the gradients mislead;
 * - an L∞ attack with ε ≥ 0.5 (half the pixel range: it can turn every image into uniform grey)
 *   that leaves more than 10 % accuracy: the attack is not finding what exists;
 * - AutoAttack's own sanity findings (summary.json attackWarnings) on any seed.
 */
export function maskingFindings(stats: GroupStats[]): string[] {
  const out: string[] = [];
  const models = new Set(stats.map((s) => s.group.model)).size;
  for (const s of stats) {
    const r0 = s.group.runs[0];
    const atts = r0.config.eval.attacks.map((a) => ({ name: a.name ?? a.type, type: a.type, norm: a.norm ?? 'linf', epsilon: a.epsilon }));
    const l = label(s.group, models);
    const flags: string[] = [];
    for (const sq of atts.filter((a) => a.type === 'square' && s.attacks[a.name])) {
      for (const g of atts.filter((a) => a.type !== 'square' && a.type !== 'autoattack' && a.norm === sq.norm && a.epsilon === sq.epsilon && s.attacks[a.name])) {
        const d = s.attacks[g.name].mean - s.attacks[sq.name].mean;
        const se = Math.hypot(s.attacks[g.name].se, s.attacks[sq.name].se);
        if (d > 2 * se) flags.push(`the gradient-free ${sq.name} leaves ${(100 * s.attacks[sq.name].mean).toFixed(2)}% standing, below ${g.name}'s ${(100 * s.attacks[g.name].mean).toFixed(2)}% (by ${(d / se).toFixed(1)} s.e.)`);
      }
    }
    for (const big of atts.filter((a) => a.norm === 'linf' && a.epsilon !== undefined && a.epsilon >= 0.5 && s.attacks[a.name])) {
      if (s.attacks[big.name].mean > 0.1) flags.push(`${big.name} at ε = ${big.epsilon} leaves ${(100 * s.attacks[big.name].mean).toFixed(2)}% accuracy (expected near 0)`);
    }
    const warned = new Set<string>();
    for (const r of s.group.runs) for (const [a, ws] of Object.entries(r.summary!.attackWarnings ?? {})) for (const w of ws) warned.add(`${a}: ${w}`);
    for (const w of warned) flags.push(w);
    if (flags.length > 0) out.push(`**Gradient masking suspected (${l}).** ${flags.join('; ')}.`);
  }
  // said when the checks ran and found nothing, so that silence is not mistaken for no checks
  if (out.length === 0 && stats.length > 0 && maskingChecksText(stats) !== '') {
    out.push(`**Gradient-masking checks.** Nothing flagged on any of the ${stats.length} method groups (${maskingChecksText(stats).replace(/^Gradient-masking checks: /, '').replace(/\.$/, '')}).`);
  }
  return out;
}

/** What the masking checks looked at, for the report text ('' when none were configured). */
export function maskingChecksText(stats: GroupStats[]): string {
  const r0 = stats[0]?.group.runs[0];
  if (!r0) return '';
  const atts = r0.config.eval.attacks;
  const sq = atts.filter((a) => a.type === 'square').map((a) => a.name ?? a.type);
  const big = atts.filter((a) => (a.norm ?? 'linf') === 'linf' && a.epsilon !== undefined && a.epsilon >= 0.5).map((a) => a.name ?? a.type);
  const aa = atts.filter((a) => a.type === 'autoattack').map((a) => a.name ?? a.type);
  const parts = [
    sq.length ? `the gradient-free ${sq.join(', ')} against the gradient attacks of the same ε (masking if it leaves fewer images standing by > 2 s.e.)` : '',
    big.length ? `${big.join(', ')} at ε ≥ 0.5 (masking if it leaves > 10 % accuracy)` : '',
    aa.length ? `AutoAttack's sanity checks (vanishing or non-finite input gradients, probability outputs, randomness) in ${aa.join(', ')}` : '',
  ].filter(Boolean);
  return parts.length ? `Gradient-masking checks: ${parts.join('; ')}.` : '';
}
