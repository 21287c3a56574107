import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { expandRuns, validateExperiment } from '../lib/experiment/grid';
import { RunDir, RunSummary, SUMMARY_VERSION, writeJsonAtomic, appendJsonl, quantiles, FILES } from '../lib/experiment/rundir';
import { writeReport, meanSd, binomialSeOfMean } from '../lib/report';
import { runExperiment } from '../lib/experiment/runner';
import { scienceExecutor } from '../lib/experiment/executor';
import { ExperimentInput } from '../lib/experiment/config';
import { fakeScience } from './helpers/fake-science';

/**
 * A runs folder of the training-method comparison's shape (two methods × three seeds), with known
 * numbers chosen so that means and standard deviations come out round by hand.
 */
function writeFixture(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-report-methods-'));
  const cfg = validateExperiment({
    name: 'methods-fixture',
    seeds: [0, 1, 2],
    defaults: {
      data: { dataset: 'fashion-mnist', trainSize: 1000, testSize: 200 }, train: { epochs: 2 },
      eval: {
        attacks: [
          { name: 'pgd', type: 'pgd', epsilon: 0.1, steps: 10, stepSize: 0.02 },
          { name: 'square', type: 'square', epsilon: 0.1, steps: 100 },
          { name: 'pgd-big', type: 'pgd', epsilon: 0.5, steps: 10, stepSize: 0.1 },
          { name: 'autoattack', type: 'autoattack', epsilon: 0.1 },
        ],
      },
    },
    runs: [{ model: { name: 'small-cnn', arch: 'small-cnn' }, grid: { 'train.method': ['trades', 'fisher-trace'] } }],
  });
  const runs = expandRuns(cfg);
  writeJsonAtomic(path.join(dir, FILES.experiment), { config: cfg, runs: runs.map((r) => r.id) });
  // per method, per seed: [clean, pgd, square, pgd-big, autoattack, ‖G‖_F mean, λ_max mean, CCKL, N, epoch seconds]
  const known: Record<string, number[][]> = {
    trades: [
      [0.80, 0.40, 0.50, 0.00, 0.38, 1, 0.5, 3, 1, 10],
      [0.82, 0.45, 0.55, 0.01, 0.43, 2, 1.0, 4, 1, 12],
      [0.84, 0.50, 0.60, 0.02, 0.48, 3, 1.5, 5, 1, 14],
    ],
    // fisher-trace: Square leaves far fewer standing than PGD, and PGD at ε = 0.5 leaves 30 %: masking
    'fisher-trace': [
      [0.70, 0.60, 0.20, 0.30, 0.20, 0.1, 0.05, 2, 0.5, 20],
      [0.70, 0.60, 0.20, 0.30, 0.20, 0.1, 0.05, 2, 0.5, 20],
      [0.70, 0.60, 0.20, 0.30, 0.20, 0.1, 0.05, 2, 0.5, 20],
    ],
  };
  for (const run of runs) {
    const rd = RunDir.of(dir, run.id);
    writeJsonAtomic(rd.config, run);
    const [acc, pgd, square, big, aa, fro, lam, cckl, nr, sec] = known[run.train.method][run.seed];
    // two epochs of sec − 1 and sec + 1 seconds: sec per epoch on average
    appendJsonl(rd.metrics, { epoch: 1, seconds: sec - 1, trainLoss: 1 });
    appendJsonl(rd.metrics, { epoch: 2, seconds: sec + 1, trainLoss: 0.5 });
    const lambdaMax = [lam, lam];
    const s: RunSummary = {
      version: SUMMARY_VERSION, runId: run.id, model: 'small-cnn', arch: 'small-cnn', method: run.train.method, seed: run.seed,
      dataset: 'fashion-mnist', gridPoint: run.gridPoint, startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:01:00Z', seconds: 60,
      evalCount: 200, accuracy: acc, crossEntropy: 0.4, attacks: { pgd, square, 'pgd-big': big, autoattack: aa }, epochs: 2,
      ...(run.train.method === 'fisher-trace' && run.seed === 1 ? { attackWarnings: { autoattack: ['the input gradient of the cross-entropy is zero on 150 of 200 samples'] } } : {}),
      fisher: { method: 'exact', samples: 2, frobeniusMean: fro, frobeniusMedian: fro, traceMean: fro, lambdaMaxMean: lam, lambdaMaxQuantiles: quantiles(lambdaMax), lambdaMax },
      cckl: { samples: 200, cckl, jsMean: cckl / 4, lowerBound: 0.1, nonRobust: nr, nonRobustStderr: 0.01, pairs: 100, robust: cckl - nr, nonRobustFraction: nr / cckl },
    };
    writeJsonAtomic(rd.summary, s);
  }
  return dir;
}

test('meanSd and binomialSeOfMean against values worked by hand', (t) => {
  const m = meanSd([0.4, 0.45, 0.5]);
  // mean 0.45; deviations ±0.05, 0: variance (0.0025 + 0.0025) / 2 = 0.0025, s.d. 0.05
  // 1e-12: the float sums of three decimals round in their last bits
  t.true(Math.abs(m.mean - 0.45) < 1e-12 && Math.abs(m.sd - 0.05) < 1e-12 && m.n === 3, JSON.stringify(m));
  t.is(meanSd([0.1, 0.1, 0.1]).sd, 0, 'equal values have no spread');
  t.true(Number.isNaN(meanSd([0.3]).sd), 'one seed has no s.d.');
  // √((0.24 + 0.2475 + 0.25) / 200) / 3 = √0.0036875 / 3 = 0.02024159...
  t.true(Math.abs(binomialSeOfMean([0.4, 0.45, 0.5], [200, 200, 200]) - 0.0202415963358) < 1e-12);
});

test('the method comparison: one row per method with mean ± s.d. over seeds, its chart, and the masking checks', async (t) => {
  const dir = writeFixture();
  const { markdown, plots } = await writeReport(dir);
  const md = fs.readFileSync(markdown, 'utf8');
  t.regex(md, /## Training methods compared \(mean ± s\.d\. over seeds\)/);
  t.true(md.includes('| training | seeds | standard | PGD [s.e.] | SQUARE [s.e.] | PGD-BIG [s.e.] | AutoAttack [s.e.] | mean ‖G_x‖_F | mean λ_max | CCKL | N | R | N / CCKL % | s / epoch |'), md);
  // TRADES: clean 80/82/84 → 82 ± 2; PGD 40/45/50 → 45 ± 5 [2.02 worked above]; Square 50/55/60 → 55 ± 5,
  // s.e. √((0.25 + 0.2475 + 0.24) / 200) / 3 = 2.02; PGD-big 0/1/2 % → 1 ± 1, s.e. √((0 + 0.0099 + 0.0196) / 200) / 3 = 0.40;
  // AutoAttack 38/43/48 → 43 ± 5, s.e. √((0.2356 + 0.2451 + 0.2496) / 200) / 3 = 2.01;
  // ‖G‖_F 1/2/3 → 2 ± 1; λ_max 0.5/1/1.5 → 1 ± 0.5; CCKL 3/4/5 → 4 ± 1; N 1 → 1 ± 0; R 2/3/4 → 3 ± 1;
  // N / CCKL 1/3, 1/4, 1/5 → 26.11 ± 6.74 %; seconds per epoch 10/12/14 → 12 ± 2
  t.true(md.includes('| TRADES | 3 | 82.00 ± 2.00 | 45.00 ± 5.00 [2.02] | 55.00 ± 5.00 [2.02] | 1.00 ± 1.00 [0.40] | 43.00 ± 5.00 [2.01] | 2 ± 1 | 1 ± 0.5 | 4 ± 1 | 1 ± 0 | 3 ± 1 | 26.11 ± 6.74 | 12 ± 2 |'), md);
  // fisher-trace: identical seeds, s.d. 0; PGD 60 %, s.e. √(3 · 0.24 / 200) / 3 = 2.00
  t.true(md.includes('| fisher-trace | 3 | 70.00 ± 0.00 | 60.00 ± 0.00 [2.00] | 20.00 ± 0.00 [1.63] | 30.00 ± 0.00 [1.87] | 20.00 ± 0.00 [1.63] | 0.1 ± 0 | 0.05 ± 0 | 2 ± 0 | 0.5 ± 0 | 1.5 ± 0 | 25.00 ± 0.00 | 20 ± 0 |'), md);
  // masking: fisher-trace's Square (20 %) is below its PGD (60 %) by (0.6 − 0.2) / √(0.02² + 0.01633²) = 15.5 s.e.;
  // PGD-big leaves 30 % > 10 %; AutoAttack's warning from seed 1 is repeated. TRADES: Square above PGD, PGD-big ≤ 2 %: no finding.
  t.regex(md, /\*\*Gradient masking suspected \(fisher-trace\)\.\*\* the gradient-free square leaves 20\.00% standing, below pgd's 60\.00% \(by 15\.5 s\.e\.\); pgd-big at ε = 0\.5 leaves 30\.00% accuracy \(expected near 0\); autoattack: the input gradient of the cross-entropy is zero on 150 of 200 samples\./);
  t.notRegex(md, /Gradient masking suspected \(TRADES\)/);
  const chart = plots.find((p) => p.endsWith('methods.svg'));
  t.truthy(chart, 'the comparison chart is written');
  const svg = fs.readFileSync(chart!, 'utf8');
  t.true(svg.startsWith('<svg'));
  // accuracy bars: 2 groups × 5 evaluations; error rules on each bar and on each ‖G‖_F point
  t.is((svg.match(/aria-roledescription="bar"/g) ?? []).length, 2 * 5 + 2 * 2, 'accuracy bars + stacked N / R bars');
  t.true(svg.includes('evaluation: PGD; mean: 45.00%; lo: 40.00%; hi: 50.00%"'), 'the bar carries the mean and ±1 s.d.');
  // error rules: one per accuracy bar and one per ‖G‖_F point
  t.is((svg.match(/aria-roledescription="rule mark"/g) ?? []).length, 2 * 5 + 2);
  t.true(svg.includes('>non-robust N<') && svg.includes('>robust R<'));
});

test('with the masking checks configured and nothing flagged, the report says so', async (t) => {
  const dir = writeFixture();
  // fisher-trace without the masking signs: Square above PGD, PGD at ε 0.5 at 0, no AutoAttack warning
  for (const id of fs.readdirSync(dir).filter((d) => d.includes('fisher-trace'))) {
    const f = path.join(dir, id, FILES.summary);
    const s = JSON.parse(fs.readFileSync(f, 'utf8')) as RunSummary;
    s.attacks = { ...s.attacks, square: 0.65, 'pgd-big': 0 };
    delete s.attackWarnings;
    fs.writeFileSync(f, JSON.stringify(s));
  }
  const { markdown } = await writeReport(dir);
  const md = fs.readFileSync(markdown, 'utf8');
  t.notRegex(md, /Gradient masking suspected/);
  t.regex(md, /\*\*Gradient-masking checks\.\*\* Nothing flagged on any of the 2 method groups \(the gradient-free square against/);
});

test('a one-seed sweep gets no comparison section', async (t) => {
  const dir = writeFixture();
  for (const id of fs.readdirSync(dir)) if (/_seed[12]$/.test(id)) fs.rmSync(path.join(dir, id), { recursive: true });
  const exp = JSON.parse(fs.readFileSync(path.join(dir, FILES.experiment), 'utf8'));
  exp.runs = exp.runs.filter((id: string) => id.endsWith('_seed0'));
  fs.writeFileSync(path.join(dir, FILES.experiment), JSON.stringify(exp));
  const { markdown, plots } = await writeReport(dir);
  t.notRegex(fs.readFileSync(markdown, 'utf8'), /Training methods compared/);
  t.false(plots.some((p) => p.endsWith('methods.svg')));
});

test('the executor keeps the evaluation\'s AutoAttack sanity findings in summary.json (attackWarnings), and writes none when there are none', async (t) => {
  const cfg: ExperimentInput = {
    name: 'warnings',
    defaults: {
      data: { dataset: 'fashion-mnist', trainSize: 100, testSize: 20, probeSize: 0 }, train: { epochs: 1, batchSize: 50 },
      eval: { attacks: [{ name: 'autoattack', type: 'autoattack', epsilon: 0.1 }], fisher: { samples: 5 }, cckl: { samples: 10, pairs: 10 }, pictures: { samples: 0, classes: false } },
    },
    runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' } }],
  };
  const cases: Record<string, string[]>[] = [{ autoattack: ['the input gradient of the cross-entropy is zero on 15 of 20 samples'] }, {}];
  for (const warnings of cases) {
    const base = fakeScience();
    const science = { ...base, evaluate: async (...a: Parameters<typeof base.evaluate>) => ({ ...(await base.evaluate(...a)), warnings }) };
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-warnings-'));
    await runExperiment(cfg, { out, executor: scienceExecutor(science) });
    const id = fs.readdirSync(out).find((d) => fs.existsSync(path.join(out, d, FILES.summary)))!;
    const s = JSON.parse(fs.readFileSync(path.join(out, id, FILES.summary), 'utf8')) as RunSummary;
    if (Object.keys(warnings).length) t.deepEqual(s.attackWarnings, warnings);
    else t.false('attackWarnings' in s);
  }
});
