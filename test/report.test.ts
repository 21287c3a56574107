import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { expandRuns, validateExperiment } from '../lib/experiment/grid';
import { RunDir, RunSummary, SUMMARY_VERSION, writeJsonAtomic, appendJsonl, quantiles, FILES } from '../lib/experiment/rundir';
import { writeReport, buildReport, pct, pctSe, fmt, spearman, MATH_FILE } from '../lib/report';

/** A runs folder with known numbers, written the way the runner writes it. */
function writeFixture(): { dir: string; summaries: Map<string, RunSummary> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-report-'));
  const cfg = validateExperiment({
    name: 'fixture',
    defaults: { data: { dataset: 'fashion-mnist', trainSize: 1000, testSize: 200 }, train: { epochs: 3 },
      eval: { attacks: [{ name: 'pgd', type: 'pgd', epsilon: 0.1, steps: 10, stepSize: 0.02 }, { name: 'cw', type: 'cw', epsilon: 0.1, steps: 10, stepSize: 0.02 }] } },
    runs: [
      { model: { name: 'small-cnn', arch: 'small-cnn' }, grid: { 'train.method': ['natural', 'pgd-at', 'trades'] } },
      { model: { name: 'vgg-pure-linear', arch: 'vgg11', activation: 'identity', pool: 'avg' }, train: { method: 'trades' } },
      { model: { name: 'vgg-half-linear', arch: 'vgg11', activation: 'identity', pool: 'max' }, train: { method: 'trades' } },
      { model: { name: 'vgg-normal', arch: 'vgg11' }, train: { method: 'trades' } },
    ],
  });
  const runs = expandRuns(cfg);
  writeJsonAtomic(path.join(dir, FILES.experiment), { config: cfg, runs: runs.map((r) => r.id) });
  // known numbers: clean / pgd / cw accuracy and Fisher / CCKL per run
  const known: Record<string, [number, number, number, number, number]> = {
    'small-cnn_natural_seed0': [0.8713, 0.0412, 0.0287, 41.73, 0.6123],
    'small-cnn_pgd-at_seed0': [0.7731, 0.6512, 0.6344, 0.8123, 0.2811],
    'small-cnn_trades_seed0': [0.7519, 0.6621, 0.6458, 0.5517, 0.2397],
    'vgg-pure-linear_trades_seed0': [0.5114, 0.3706, 0.3394, 0.1234, 0.4521],
    'vgg-half-linear_trades_seed0': [0.6048, 0.4852, 0.4412, 0.2345, 0.3377],
    'vgg-normal_trades_seed0': [0.7236, 0.5529, 0.5196, 0.3456, 0.2468],
  };
  const summaries = new Map<string, RunSummary>();
  runs.forEach((run, k) => {
    const rd = RunDir.of(dir, run.id);
    writeJsonAtomic(rd.config, run);
    const [acc, pgd, cw, fro, frac] = known[run.id];
    for (let e = 1; e <= 3; e++) {
      appendJsonl(rd.metrics, { epoch: e, trainLoss: 2 / e, trainAccuracy: acc * e / 3.2, probeAccuracy: acc * e / 3, fisherFrobeniusMean: fro * e / 3, fisherFrobeniusMedian: fro * e / 4, fisherLambdaMaxMean: fro * e / 3.5 });
    }
    const lambdaMax = Array.from({ length: 50 }, (_, i) => fro * (0.2 + (i * 37 % 50) / 25));
    const cckl = 3 + k * 0.5;
    const s: RunSummary = {
      version: SUMMARY_VERSION, runId: run.id, model: run.model.name!, arch: run.model.arch, method: run.train.method, seed: 0,
      dataset: 'fashion-mnist', gridPoint: run.gridPoint, startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:01:00Z', seconds: 60 + k,
      evalCount: 200, accuracy: acc, crossEntropy: 0.4, attacks: { pgd, cw }, epochs: 3,
      fisher: { method: 'exact', samples: 50, frobeniusMean: fro, frobeniusMedian: fro * 0.75, traceMean: fro * 1.1, lambdaMaxMean: fro * 0.9, lambdaMaxQuantiles: quantiles(lambdaMax), lambdaMax },
      cckl: { samples: 200, cckl, jsMean: 0.9 * cckl / 2, lowerBound: 0.5, nonRobust: frac * cckl, nonRobustStderr: 0.01, pairs: 1000, robust: (1 - frac) * cckl, nonRobustFraction: frac },
    };
    writeJsonAtomic(rd.summary, s);
    summaries.set(run.id, s);
  });
  return { dir, summaries };
}

/** Minimal XML well-formedness check: every tag closes in order, attributes quoted. */
function wellFormed(xml: string): boolean {
  const stack: string[] = [];
  const re = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>|<!--[\s\S]*?-->|<\?[\s\S]*?\?>|<!\[CDATA\[[\s\S]*?\]\]>|(<)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(xml))) {
    if (m[5]) return false; // a '<' that starts no valid tag
    if (!m[2]) continue;
    if (m[1]) { if (stack.pop() !== m[2]) return false; } else if (!m[4]) stack.push(m[2]);
  }
  return stack.length === 0;
}

test('report.md and report.html show the run files\' numbers; every SVG parses and has its series', async (t) => {
  const { dir, summaries } = writeFixture();
  const { markdown, html, plots } = await writeReport(dir);
  const md = fs.readFileSync(markdown, 'utf8');
  const page = fs.readFileSync(html, 'utf8');
  for (const [id, s] of summaries) {
    // the paper-style table row: standard / PGD / CW in %
    const row = `| ${s.model} | ${{ natural: 'natural', 'pgd-at': 'PGD-AT', trades: 'TRADES' }[s.method]} | 0 | ${pct(s.accuracy)} | ${pctSe(s.attacks.pgd, 200)} | ${pctSe(s.attacks.cw, 200)} | 200 |`;
    t.true(md.includes(row), `row of ${id}: ${row}`);
    t.true(md.includes(`| ${id} | ${fmt(s.cckl!.cckl)} | ${fmt(2 * s.cckl!.jsMean)} | ${fmt(s.cckl!.lowerBound)} | ${fmt(s.cckl!.nonRobust)} |`), `cckl row of ${id}`);
    t.true(md.includes(`| ${id} | 50 | ${fmt(s.fisher!.frobeniusMean)} | ${fmt(s.fisher!.frobeniusMedian)} |`), `fisher row of ${id}`);
    t.true(page.includes(`<td class="r">${pctSe(s.attacks.cw, 200)}</td>`), `html cw of ${id}`);
    t.true(page.includes(`<td>${id}</td>`));
  }
  t.true(md.includes('| PGD | CW |') || md.includes('| standard | PGD | CW |'));
  // known values spelled out
  // robust accuracies carry their binomial standard error over the 200 images: √(p(1 − p)/200)
  t.true(md.includes('| 87.13 | 4.12 ± 1.41 | 2.87 ± 1.18 |'));
  t.is(pctSe(0.5, 100), '50.00 ± 5.00');
  t.true(md.includes('41.73'));
  // findings state the paper's orderings from these numbers
  t.regex(md, /Natural training ends with the largest Fisher norm/);
  t.regex(md, /Standard and adversarial accuracy rise together/);
  t.regex(md, /lower bound ≤ 2·JS mean ≤ CCKL holds on 6 of 6 runs/);

  t.deepEqual(plots.map((p) => path.basename(p)).sort(), ['accuracy.svg', 'cckl-decomposition.svg', 'lambda-max.svg', 'training-curves.svg']);
  for (const p of plots) {
    const svg = fs.readFileSync(p, 'utf8');
    t.true(svg.startsWith('<svg'), p);
    t.true(wellFormed(svg), `${p} is well-formed XML`);
    t.true(md.includes(`plots/${path.basename(p)}`));
    t.true(page.includes(svg), 'html embeds the svg');
  }
  const curves = fs.readFileSync(plots.find((p) => p.endsWith('training-curves.svg'))!, 'utf8');
  for (const id of summaries.keys()) t.true(curves.includes(`>${id}<`), `legend of training curves has ${id}`);
  // one line per run in each of the two panels, 3 points each
  t.is((curves.match(/aria-roledescription="line mark"/g) ?? []).length, 2 * 6);
  t.is((curves.match(/aria-roledescription="point"/g) ?? []).length, 2 * 6 * 3);
  t.true(curves.includes('aria-label="epoch: 3; test accuracy: 87%; run: small-cnn_natural_seed0; method: natural'));
  const cckl = fs.readFileSync(plots.find((p) => p.endsWith('cckl-decomposition.svg'))!, 'utf8');
  t.true(cckl.includes('>non-robust N<') && cckl.includes('>robust R<'));
  const lam = fs.readFileSync(plots.find((p) => p.endsWith('lambda-max.svg'))!, 'utf8');
  for (const id of summaries.keys()) t.true(lam.includes(`>${id}<`));
});

test('the report links math.md beside it (the package\'s docs/math.md, shipped in the npm package), and every equation number it cites is one math.md defines', async (t) => {
  const { dir } = writeFixture();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const root = path.join(__dirname, '..', '..');
  const source = fs.readFileSync(path.join(root, 'docs', 'math.md'), 'utf8');
  const w = await writeReport(dir);
  t.is(w.math, path.join(dir, MATH_FILE));
  t.is(fs.readFileSync(w.math, 'utf8'), source, 'a copy of docs/math.md beside the report');
  const md = fs.readFileSync(w.markdown, 'utf8');
  const page = fs.readFileSync(w.html, 'utf8');
  t.true(md.includes(`[${MATH_FILE}](${MATH_FILE})`), 'report.md links it');
  t.true(page.includes(`<a href="${MATH_FILE}">`), 'report.html links it');
  for (const text of [md, page]) t.notRegex(text, /PAPER\.md/, 'no citation of a file users do not have');
  // every "(n)" and "(n)–(m)" the report cites is an equation label of math.md ("    (n) ..." at the start of a line)
  const labels = new Set([...source.matchAll(/^\s+\((\d+)\)\s/gm)].map((m) => Number(m[1])));
  t.true(labels.has(1) && labels.has(22), `math.md's labels: ${[...labels].join(', ')}`);
  const cited = [...md.matchAll(/\((\d+)\)(?:–\((\d+)\))?/g)].flatMap((m) => (m[2] ? [Number(m[1]), Number(m[2])] : [Number(m[1])]));
  t.true(cited.length >= 6, `the report cites equations: ${cited.join(', ')}`);
  for (const n of cited) t.true(labels.has(n), `(${n}) is an equation of math.md`);
  // the npm package ships it, so the copy can be made from an installed package
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { files: string[] };
  t.true(pkg.files.includes('docs/math.md'));
});

test('report lists unfinished runs and their errors; a folder without runs is an ERR_IO', async (t) => {
  const { dir } = writeFixture();
  const rd = RunDir.of(dir, 'vgg-normal_trades_seed0');
  fs.rmSync(rd.summary);
  writeJsonAtomic(rd.error, { message: 'out of memory', code: 'ERR_MEMORY', at: 'now' });
  const r = await buildReport(dir);
  t.regex(r.markdown, /## Unfinished runs/);
  t.regex(r.markdown, /\| vgg-normal_trades_seed0 \| started \| 3 \| ERR_MEMORY: out of memory \|/);
  t.false(r.markdown.includes('| vgg-normal | TRADES |'));
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-empty-'));
  await t.throwsAsync(buildReport(empty), { code: 'ERR_IO' } as never);
  await t.throwsAsync(buildReport(path.join(empty, 'nope')), { code: 'ERR_IO' } as never);
});

test('spearman rank correlation', (t) => {
  t.is(spearman([1, 2, 3], [10, 20, 30]), 1);
  t.is(spearman([1, 2, 3], [3, 2, 1]), -1);
  t.true(Math.abs(spearman([1, 2, 3, 4], [1, 3, 2, 4]) - 0.8) < 1e-12);
});

test('the report names what produced each run and warns when runs of one report differ', async (t) => {
  const { dir, summaries } = writeFixture();
  const prov = { packageVersion: '0.1.0', variant: 'torch1.13-cpu', libtorch: { version: '1.13.1', cuda: null, path: '/usr/lib/x86_64-linux-gnu' },
    nativeSourceHash: '0123456789abcdef', device: 'cpu', cpu: 'Test CPU', host: 'a' };
  for (const [id, s] of summaries) writeJsonAtomic(RunDir.of(dir, id).summary, { ...s, provenance: { ...prov, host: id } });
  const same = await buildReport(dir);
  t.false(same.markdown.includes('Warning: runs from different binaries'), 'host names differ but are not compared');
  t.is(same.markdown.split('fisherlens 0.1.0 · torch1.13-cpu · LibTorch 1.13.1 · native 01234567 · cpu (Test CPU)').length - 1, summaries.size);
  const odd = 'vgg-normal_trades_seed0';
  writeJsonAtomic(RunDir.of(dir, odd).summary, { ...summaries.get(odd), provenance: { ...prov, variant: 'source', libtorch: { ...prov.libtorch, version: '2.5.1', cuda: '12.4' } } });
  const mixed = await buildReport(dir);
  t.regex(mixed.markdown, /## Warning: runs from different binaries or devices\n\nThe numbers in these tables come from 2 different setups/);
  t.regex(mixed.markdown, /fisherlens 0\.1\.0 · source · LibTorch 2\.5\.1 CUDA 12\.4 · native 01234567 · cpu \(Test CPU\) \(1 run: vgg-normal_trades_seed0\)/);
  t.regex(mixed.markdown, /torch1\.13-cpu · LibTorch 1\.13\.1 · native 01234567 · cpu \(Test CPU\) \(5 runs: /);
  fs.rmSync(dir, { recursive: true, force: true });
});
