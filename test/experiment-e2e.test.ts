/**
 * End to end through the real executor (data → model → train → attacks → Fisher → CCKL → report):
 * the paper's CIFAR-10 config for a few batches on a tiny synthetic stand-in (so the config stays
 * valid against the real code), and a shrunken demo. Registered only when the training, attack and
 * metrics modules are in the build (branches attacks-train and fisher-metrics); skipped otherwise.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadConfig } from '../lib/experiment/grid';
import { ExperimentInput, DataSchema, ModelSchema } from '../lib/experiment/config';
import { defaultScience } from '../lib/experiment/science';
import { runExperiment } from '../lib/experiment/runner';
import { RunDir } from '../lib/experiment/rundir';
import { writeReport, pctSe } from '../lib/report';

const root = path.join(__dirname, '..', '..');
const ready = ['train', 'attacks', 'metrics'].every((m) => fs.existsSync(path.join(__dirname, '..', 'lib', 'science', `${m}.js`)));
const maybe = ready ? test.serial : test.skip;

maybe('createModel takes channels, size and classes from the data, seeded', async (t) => {
  const sci = defaultScience();
  const syn = DataSchema.parse({ dataset: 'synthetic', synthetic: { channels: 3, size: 16, classes: 4, trainSize: 10, testSize: 5 } });
  const te = await sci.loadData(syn, 'test', { seed: 0, device: 'cpu' });
  const spec = ModelSchema.parse({ arch: 'lenet', activation: 'identity', pool: 'avg' });
  const a = await sci.createModel(spec, sci.info(te), { seed: 5, device: 'cpu' });
  const b = await sci.createModel(spec, sci.info(te), { seed: 5, device: 'cpu' });
  t.like(a.spec, { arch: 'lenet', inChannels: 3, inputSize: 16, numClasses: 4, activation: 'identity', pool: 'avg' });
  t.deepEqual((await a.forward(te.images)).toNumbers(), (await b.forward(te.images)).toNumbers(), 'same seed, same weights');
  for (const x of [a, b, te]) x.dispose();
});

maybe('configs/paper-cifar10.yaml runs a few batches of every model on a synthetic CIFAR stand-in', async (t) => {
  const cfg = loadConfig(path.join(root, 'configs', 'paper-cifar10.yaml'));
  // Same models, TRADES ε / step / β and attacks; tiny data, 2 batches, fewer attack steps, CPU.
  const small: ExperimentInput = {
    ...cfg,
    device: 'cpu',
    defaults: {
      ...cfg.defaults,
      data: { dataset: 'synthetic', synthetic: { channels: 3, size: 16, classes: 10, trainSize: 8, testSize: 4 }, probeSize: 4 },
      train: { ...cfg.defaults.train, epochs: 1, batchSize: 4, maxBatches: 2, steps: 2 },
      eval: { ...cfg.defaults.eval, batchSize: 4, attacks: (cfg.defaults.eval as { attacks: { steps: number }[] }).attacks.map((a) => ({ ...a, steps: 2 })),
        fisher: { samples: 4 }, cckl: { samples: 4, pairs: 8 } },
    },
  };
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-paper-'));
  const r = await runExperiment(small, { out });
  t.deepEqual(r.runs.map((x) => [x.id, x.status, x.error]), [
    ['vgg13-pure-linear_trades_seed0', 'finished', undefined], ['vgg13-half-linear_trades_seed0', 'finished', undefined],
    ['vgg13-normal_trades_seed0', 'finished', undefined], ['resnet20-w1_trades_seed0', 'finished', undefined],
    ['resnet32-w10_trades_seed0', 'finished', undefined],
  ]);
  for (const x of r.runs) {
    const s = x.summary!;
    t.is(s.evalCount, 4);
    t.deepEqual(Object.keys(s.attacks), ['pgd', 'cw']);
    t.true(s.attacks.pgd <= s.accuracy + 1e-9 && s.attacks.cw <= s.accuracy + 1e-9);
    t.is(s.fisher!.lambdaMax.length, 4);
    t.is(RunDir.of(out, x.id).readEpochs().length, 1);
  }
});

maybe('a shrunken demo runs for real, resumes nothing twice, and reports the paper\'s table', async (t) => {
  const cfg = loadConfig(path.join(root, 'configs', 'demo.yaml'));
  const small: ExperimentInput = {
    ...cfg,
    defaults: {
      ...cfg.defaults,
      data: { dataset: 'fashion-mnist', trainSize: 200, testSize: 50, probeSize: 20 },
      train: { ...cfg.defaults.train, epochs: 2, batchSize: 50 },
      eval: { ...cfg.defaults.eval, fisher: { samples: 20 }, cckl: { samples: 50, pairs: 50 } },
    },
    runs: cfg.runs.map((r) => ({ ...r, train: { ...r.train, epochs: 2 } })) as unknown as ExperimentInput['runs'],
  };
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-demo-'));
  const r = await runExperiment(small, { out });
  t.is(r.finished, 6, JSON.stringify(r.runs.map((x) => x.error)));
  for (const x of r.runs) t.deepEqual(RunDir.of(out, x.id).readEpochs().map((e) => e.epoch), [1, 2]);
  const again = await runExperiment(small, { out });
  t.is(again.skipped, 6);
  const w = await writeReport(out);
  const md = fs.readFileSync(w.markdown, 'utf8');
  for (const x of r.runs) {
    const s = x.summary!;
    t.true(md.includes(`| ${(s.accuracy * 100).toFixed(2)} | ${pctSe(s.attacks.pgd, s.evalCount)} | ${pctSe(s.attacks.cw, s.evalCount)} | ${pctSe(s.attacks.autoattack, s.evalCount)} |`));
  }
  // the four summary plots and one class-heatmap chart per run (from each run's pictures/)
  t.is(w.plots.length, 4 + 6);
  for (const x of r.runs) t.true(fs.existsSync(path.join(out, x.id, 'pictures', 'grid.json')), `pictures of ${x.id}`);
});

maybe('a real run interrupted after its first epoch resumes from checkpoint.pt and logs each epoch once', async (t) => {
  const cfg: ExperimentInput = {
    name: 'resume',
    defaults: { data: { dataset: 'fashion-mnist', trainSize: 300, testSize: 50, probeSize: 20 }, train: { epochs: 3, batchSize: 50, optimizer: { type: 'adam', lr: 0.001 } },
      eval: { attacks: [{ name: 'pgd', type: 'pgd', epsilon: 0.1, stepSize: 0.02, steps: 3 }], fisher: { samples: 10 }, cckl: { samples: 50, pairs: 20 } } },
    runs: [{ model: { arch: 'lenet' }, train: { method: 'natural' } }],
  };
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-resume-'));
  const controller = new AbortController();
  const r1 = await runExperiment(cfg, { out, signal: controller.signal, onEvent: (e) => { if (e.type === 'epoch' && e.record.epoch === 1) controller.abort(); } });
  t.true(r1.aborted);
  const rd = RunDir.of(out, 'lenet_natural_seed0');
  t.is(rd.state(), 'resumable');
  t.true(fs.existsSync(path.join(rd.dir, 'checkpoint.pt')));
  const starts: boolean[] = [];
  const epochs: number[] = [];
  const r2 = await runExperiment(cfg, { out, onEvent: (e) => {
    if (e.type === 'run-start') starts.push(e.resume);
    if (e.type === 'epoch') epochs.push(e.record.epoch);
  } });
  t.is(r2.finished, 1);
  t.deepEqual(starts, [true]);
  t.false(epochs.includes(1), `epoch 1 is not trained again (got ${epochs})`);
  t.deepEqual(rd.readEpochs().map((e) => e.epoch), [1, 2, 3]);
  t.is(rd.readSummary().epochs, 3);
});
