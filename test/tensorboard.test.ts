/**
 * TensorBoard event files, read back by the real TensorBoard (tensorboard 2.21 in the torch 2.13
 * venv, scripts/torch-env.sh): a 2-run, 1-epoch sweep through the real executor, read with
 * TensorBoard's EventAccumulator (scalars equal metrics.jsonl and summary.json in float32, images are
 * the grid's PNG cells byte for byte, histograms count the probe, HParams sessions carry the grid
 * values), then served by `tensorboard --logdir` on 127.0.0.1 (its HTTP data API is the pass/fail
 * check; headless Chromium loads the dashboard with no console errors). A resume after a
 * constructed orphan and after a real kill -9 leaves every curve without duplicate or backward
 * steps; an unwritable tb/ and a full disk cost one warning and nothing else.
 * Serial: child processes (python, tensorboard, chromium, the CLI) start while no native op runs.
 */
import test from 'ava';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import * as http from 'http';
import { spawn, spawnSync, execFileSync, ChildProcess } from 'child_process';
import { ExperimentInput } from '../lib/experiment/config';
import { runExperiment } from '../lib/experiment/runner';
import { FILES, RunDir } from '../lib/experiment/rundir';
import { readPictureGrid } from '../lib/science/picture-files';
import { train, EpochMetrics } from '../lib/science/train';
import { synthetic } from '../lib/science/data';
import { Model } from '../lib';
import { EventWriter, tfRecord } from '../lib/util/tfevents';
import { slurmScript } from '../lib/experiment/slurm';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

/** The torch 2.13 venv's python (it has tensorboard), made or found by scripts/torch-env.sh as CI does before both legs. */
let venvPy: string | undefined;
function tbPython(): string {
  if (venvPy === undefined) {
    venvPy = execFileSync('bash', [path.join(ROOT, 'scripts', 'torch-env.sh'), '2.13-cpu'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 600_000 }).trim();
  }
  return venvPy;
}

/** Reads every event folder under `logdir` with TensorBoard's EventAccumulator; returns what it sees, per folder. */
interface Seen {
  scalars: Record<string, [number, number][]>;
  images: Record<string, { step: number; png: string; width: number; height: number }[]>;
  histograms: Record<string, { step: number; num: number; buckets: number }[]>;
  text: Record<string, string[]>;
  hparams: Record<string, unknown> | null;
}
const READER = `
import base64, json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from google.protobuf import json_format
out = {}
for d in sys.argv[1:]:
    ea = EventAccumulator(d, size_guidance={'scalars': 0, 'images': 0, 'histograms': 0, 'tensors': 0})
    ea.Reload()
    t = ea.Tags()
    r = {'scalars': {k: [[e.step, e.value] for e in ea.Scalars(k)] for k in t['scalars']},
         'images': {k: [{'step': e.step, 'png': base64.b64encode(e.encoded_image_string).decode(), 'width': e.width, 'height': e.height} for e in ea.Images(k)] for k in t['images']},
         'histograms': {k: [{'step': e.step, 'num': e.histogram_value.num, 'buckets': sum(e.histogram_value.bucket)} for e in ea.Histograms(k)] for k in t['histograms']},
         'text': {k: [e.tensor_proto.string_val[0].decode() for e in ea.Tensors(k)] for k in t['tensors'] if k == 'config'},
         'hparams': None}
    try:
        md = ea.SummaryMetadata('_hparams_/session_start_info')
        p = plugin_data_pb2.HParamsPluginData.FromString(md.plugin_data.content)
        r['hparams'] = json_format.MessageToDict(p.session_start_info)['hparams']
    except KeyError:
        pass
    out[d] = r
print(json.dumps(out))
`;
function readEvents(...dirs: string[]): Record<string, Seen> {
  const r = spawnSync(tbPython(), ['-c', READER, ...dirs], { encoding: 'utf8', timeout: 120_000, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`EventAccumulator failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, Seen>;
}

const f32 = (x: number) => Math.fround(x);

const sweep = (out: string): ExperimentInput => ({
  name: 'tb-test',
  out,
  seeds: [0],
  tensorboard: { enabled: true, batchEvery: 2 },
  defaults: {
    data: { dataset: 'synthetic', synthetic: { channels: 1, size: 8, classes: 3, trainSize: 48, testSize: 24 }, probeSize: 12 },
    model: { arch: 'mlp', hidden: [16] },
    train: { method: 'trades', epochs: 1, batchSize: 8, steps: 2, epsilon: 0.05, stepSize: 0.02, optimizer: { type: 'sgd', lr: 0.05 }, track: { nonRobustPairs: 6 } },
    eval: {
      batchSize: 24,
      attacks: [{ type: 'pgd', epsilon: 0.05, steps: 2 }, { type: 'autoattack', epsilon: 0.05, version: 'custom', attacks: [{ type: 'apgd-ce', steps: 2 }] }],
      fisher: { samples: 10 }, cckl: { samples: 12, pairs: 10 }, pictures: { samples: 2 },
    },
  },
  runs: [{ name: 'mlp', grid: { 'train.beta': [1, 6] } }],
});

let sweepOut: Promise<string> | undefined;
/** The 2-run, 1-epoch sweep, run once for the tests that read it. */
function theSweep(): Promise<string> {
  sweepOut ??= (async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tb-'));
    const r = await runExperiment(sweep(out), { out });
    if (r.finished !== 2) throw new Error(`sweep: ${JSON.stringify(r.runs.map((x) => x.error))}`);
    return out;
  })();
  return sweepOut;
}

test.serial('EventAccumulator reads every run: scalars = metrics.jsonl and summary.json (float32), images = the PNG cells, histograms count the probe, HParams = the grid', async (t) => {
  const out = await theSweep();
  const runs = fs.readdirSync(out).filter((d) => fs.existsSync(path.join(out, d, FILES.summary))).sort();
  t.deepEqual(runs, ['mlp_trades_beta1_seed0', 'mlp_trades_beta6_seed0']);
  const seen = readEvents(...runs.flatMap((r) => [path.join(out, r, 'tb'), path.join(out, r, 'tb', 'eval')]));
  for (const id of runs) {
    const rd = RunDir.of(out, id);
    const s = seen[path.join(rd.dir, 'tb')];
    // every numeric field of every metrics.jsonl line, at step = epoch, in float32 (simple_value is a float)
    const epochs = rd.readEpochs();
    t.is(epochs.length, 1);
    let fields = 0;
    for (const e of epochs) {
      for (const [k, v] of Object.entries(e)) {
        if (k === 'epoch' || typeof v !== 'number') continue;
        fields++;
        t.deepEqual(s.scalars[`epoch/${k}`], [[e.epoch, f32(v)]], `${id} epoch/${k}`);
      }
    }
    t.true(fields >= 12, `trainLoss … ccklNonRobustFraction: ${fields} fields`);
    t.is(Object.keys(s.scalars).filter((k) => k.startsWith('epoch/')).length, fields, 'no epoch scalar that metrics.jsonl lacks');
    t.truthy(s.scalars['epoch/ccklNonRobustFraction']);
    // the evaluation: clean, each attack, AutoAttack, at the last epoch's step
    const sum = rd.readSummary();
    const ev = seen[path.join(rd.dir, 'tb', 'eval')];
    t.deepEqual(ev.scalars['eval/accuracy'], [[1, f32(sum.accuracy)]]);
    t.deepEqual(ev.scalars['eval/robustAccuracy/pgd'], [[1, f32(sum.attacks.pgd)]]);
    t.deepEqual(ev.scalars['eval/robustAccuracy/autoattack'], [[1, f32(sum.attacks.autoattack)]]);
    t.deepEqual(ev.scalars['eval/cckl'], [[1, f32(sum.cckl!.cckl)]]);
    // histograms: one per probe (12 samples) and of the final Fisher samples (10)
    t.deepEqual(s.histograms['probe/fisherLambdaMax'], [{ step: 1, num: 12, buckets: 12 }]);
    t.deepEqual(s.histograms['probe/fisherFrobenius'], [{ step: 1, num: 12, buckets: 12 }]);
    t.deepEqual(ev.histograms['eval/fisherLambdaMax'], [{ step: 1, num: 10, buckets: 10 }]);
    // images: each grid cell is its PNG file, byte for byte; class matrices are K·16 pixels square
    const picDir = path.join(rd.dir, FILES.pictures);
    const grid = readPictureGrid(picDir)!;
    let cells = 0;
    grid.columns.forEach((col, k) => col.cells.forEach((cell, row) => {
      const tag = Object.keys(ev.images).find((x) => x.startsWith(`pictures/${String(k).padStart(2, '0')}-${col.kind}`) && x.endsWith(`/${row}`));
      t.truthy(tag, `cell ${k}/${row}`);
      t.is(ev.images[tag!][0].png, fs.readFileSync(path.join(picDir, cell.png)).toString('base64'));
      t.deepEqual([ev.images[tag!][0].width, ev.images[tag!][0].height], [8, 8]);
      cells++;
    }));
    t.is(cells, 2 * grid.columns.length);
    for (const m of ['initial/meanProbs', 'initial/kl', 'final/meanProbs', 'final/kl']) t.deepEqual([ev.images[`classes/${m}`][0].width, ev.images[`classes/${m}`][0].height], [3 * 16, 3 * 16], m);
    // the text: the resolved run
    t.deepEqual(JSON.parse(s.text.config[0]), JSON.parse(fs.readFileSync(rd.config, 'utf8')));
    // HParams: the grid value, method, seed
    t.deepEqual(s.hparams, { 'train.beta': sum.gridPoint!['train.beta'], 'train.method': 'trades', seed: 0, 'model.arch': 'mlp' });
    // the batch curve: every 2nd of 6 batches, in its own run
    const b = readEvents(path.join(rd.dir, 'tb', 'batches'))[path.join(rd.dir, 'tb', 'batches')];
    t.deepEqual(b.scalars['batch/loss'].map(([step]) => step), [2, 4, 6]);
  }
});

/** A free TCP port on 127.0.0.1. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}
function get(url: string, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: body ? 'POST' : 'GET', headers: body ? { 'content-type': 'application/json', 'x-tensorboard-xsrf': '1' } : {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test.serial('tensorboard --logdir serves the sweep: the scalars plugin lists both runs\' tags and series (HTTP), HParams lists both sessions; Chromium loads the dashboard with no console error', async (t) => {
  const out = await theSweep();
  const port = await freePort();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tbserve-'));
  const py = tbPython();
  const tb: ChildProcess = spawn(py, ['-m', 'tensorboard.main', '--logdir', out, '--host', '127.0.0.1', '--port', String(port), '--load_fast', 'false', '--reload_interval', '1'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: tmp, TMPDIR: tmp } });
  let log = '';
  tb.stdout!.on('data', (c) => { log += c; });
  tb.stderr!.on('data', (c) => { log += c; });
  try {
    const base = `http://127.0.0.1:${port}`;
    // wait until it serves and has loaded both runs' scalars
    let tags: Record<string, Record<string, unknown>> = {};
    for (let i = 0; i < 120; i++) {
      try {
        const r = await get(`${base}/data/plugin/scalars/tags`);
        if (r.status === 200) {
          tags = JSON.parse(r.text);
          if (Object.keys(tags).filter((k) => k.endsWith('/tb')).length === 2) break;
        }
      } catch { /* not up yet */ }
      await new Promise((r) => setTimeout(r, 500));
    }
    const runs = Object.keys(tags).sort();
    t.deepEqual(runs.filter((r) => r.endsWith('/tb')), ['mlp_trades_beta1_seed0/tb', 'mlp_trades_beta6_seed0/tb'], log);
    for (const run of ['mlp_trades_beta1_seed0', 'mlp_trades_beta6_seed0']) {
      const rd = RunDir.of(out, run);
      const e = rd.readEpochs()[0];
      t.truthy(tags[`${run}/tb`]['epoch/trainLoss']);
      const r = await get(`${base}/data/plugin/scalars/scalars?run=${encodeURIComponent(`${run}/tb`)}&tag=${encodeURIComponent('epoch/trainLoss')}`);
      t.is(r.status, 200);
      const series = JSON.parse(r.text) as [number, number, number][];
      t.deepEqual(series.map(([, step, v]) => [step, v]), [[1, f32(e.trainLoss!)]]);
    }
    // the HParams plugin: one session group per run, with the grid's beta
    const hp = await get(`${base}/data/plugin/hparams/session_groups`, JSON.stringify({ experimentName: '', allowedStatuses: ['STATUS_UNKNOWN', 'STATUS_SUCCESS', 'STATUS_FAILURE', 'STATUS_RUNNING'], colParams: [], startIndex: 0, sliceSize: 100 }));
    t.is(hp.status, 200, hp.text);
    const groups = (JSON.parse(hp.text) as { sessionGroups: { hparams: Record<string, unknown> }[] }).sessionGroups;
    t.deepEqual(groups.map((g) => g.hparams['train.beta']).sort(), [1, 6]);
    // …and the final metrics beside them: the evaluation's scalars (group `eval`, the tb/eval run)
    const withMetrics = JSON.parse(hp.text) as { sessionGroups: { hparams: Record<string, unknown>; metricValues: { name: { group: string; tag: string }; value: number }[] }[] };
    for (const g of withMetrics.sessionGroups) {
      const run = `mlp_trades_beta${g.hparams['train.beta']}_seed0`;
      const acc = g.metricValues.find((m) => m.name.group === 'eval' && m.name.tag === 'eval/accuracy');
      t.is(acc?.value, f32(RunDir.of(out, run).readSummary().accuracy), run);
    }

    // headless Chromium loads the scalars dashboard: no console error, a screenshot
    const chromium = ['chromium', 'chromium-browser'].find((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status === 0);
    if (!chromium) { t.fail('chromium not found: install Debian\'s chromium (scripts/setup.sh)'); return; }
    const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--disable-background-networking', '--disable-component-update',
      `--user-data-dir=${path.join(tmp, 'profile')}`, '--enable-logging=stderr', '--v=0', '--virtual-time-budget=15000', '--window-size=1400,900'];
    const shot = path.join(tmp, 'tensorboard.png');
    const s = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const c = spawn(chromium, [...flags, `--screenshot=${shot}`, `${base}/?darkMode=false#timeseries`], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      c.stderr!.on('data', (d) => { stderr += d; });
      const timer = setTimeout(() => c.kill('SIGKILL'), 90_000);
      c.on('exit', (code) => { clearTimeout(timer); resolve({ code, stderr }); });
    });
    t.is(s.code, 0, s.stderr);
    // Chromium logs the page's console messages as CONSOLE lines; errors and uncaught exceptions would be among them
    const consoleErrors = s.stderr.split('\n').filter((l) => /CONSOLE/.test(l) && /error|uncaught|failed/i.test(l));
    t.deepEqual(consoleErrors, []);
    t.true(fs.statSync(shot).size > 10_000, 'a screenshot with something on it');
    // the dashboard loaded the data: its run table (light DOM of the time series page) names both runs
    const dom = spawnSync(chromium, [...flags, '--dump-dom', `${base}/?darkMode=false#timeseries`], { encoding: 'utf8', timeout: 90_000 });
    t.is(dom.status, 0, dom.stderr);
    for (const run of ['mlp_trades_beta1_seed0/tb', 'mlp_trades_beta6_seed0/tb']) t.true(dom.stdout.includes(run), `the page lists ${run}`);
    t.deepEqual(dom.stderr.split('\n').filter((l) => /CONSOLE/.test(l) && /error|uncaught|failed/i.test(l)), []);
    if (process.env.FISHERLENS_TB_SCREENSHOT) fs.copyFileSync(shot, process.env.FISHERLENS_TB_SCREENSHOT);
    t.log(`screenshot: ${shot}`);
  } finally {
    tb.kill('SIGTERM');
    await new Promise((r) => { if (tb.exitCode !== null) r(null); else tb.on('exit', r); });
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test.serial('fisherlens tensorboard DIR prints the command for a sweep and for one run; a folder without events is ERR_IO', async (t) => {
  const out = await theSweep();
  const r = spawnSync(process.execPath, [CLI, 'tensorboard', out, '--json'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { logdir: string; runs: string[]; command: string };
  t.deepEqual(j.runs, ['mlp_trades_beta1_seed0', 'mlp_trades_beta6_seed0'].flatMap((r) => [`${r}/tb`, `${r}/tb/batches`, `${r}/tb/eval`]));
  t.is(j.command, `tensorboard --logdir '${out}' --port 6006`);
  const one = spawnSync(process.execPath, [CLI, 'tensorboard', path.join(out, 'mlp_trades_beta1_seed0')], { encoding: 'utf8' });
  t.is(one.stdout.trim(), `tensorboard --logdir '${path.join(out, 'mlp_trades_beta1_seed0')}' --port 6006`);
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tbempty-'));
  const e = spawnSync(process.execPath, [CLI, 'tensorboard', empty], { encoding: 'utf8' });
  t.not(e.status, 0);
  t.regex(e.stderr, /ERR_IO.*no TensorBoard event files/s);
  fs.rmSync(empty, { recursive: true, force: true });
});

test.serial('a re-evaluation replaces the evaluation\'s events: each eval tag once, at the last epoch, with the new summary\'s value', async (t) => {
  const out = await theSweep();
  await new Promise((r) => setTimeout(r, 1100));  // event file names carry the second: the new ones sort after
  const r = await runExperiment(sweep(out), { out, reevaluate: true });
  t.is(r.finished, 2);
  for (const x of r.runs) {
    const evDir = path.join(out, x.id, 'tb', 'eval');
    t.is(fs.readdirSync(evDir).length, 2, 'two event files: the first evaluation and the re-evaluation');
    const ev = readEvents(evDir)[evDir];
    t.deepEqual(ev.scalars['eval/accuracy'], [[1, f32(x.summary!.accuracy)]]);
    t.is(ev.images['classes/final/kl'].length, 1);
    t.is(ev.histograms['eval/fisherLambdaMax'].length, 1);
  }
});

/** Scalars of one tag: steps strictly increasing, each at the value metrics.jsonl holds for that epoch. */
function checkCurve(t: import('ava').ExecutionContext, s: Seen, history: EpochMetrics[], what: string): void {
  for (const field of ['trainLoss', 'trainAccuracy', 'lr'] as const) {
    t.deepEqual(s.scalars[`epoch/${field}`], history.map((h) => [h.epoch, f32(h[field])]), `${what}: epoch/${field}`);
  }
}

test.serial('a resume drops the orphaned events past its checkpoint (SessionLog START): a constructed orphan and a real kill -9', async (t) => {
  // constructed: epoch 2's events are written, then the folder is put back to epoch 1's
  // checkpoint, as a kill between the flush and the checkpoint would leave it
  const data = await synthetic({ kind: 'gaussian', n: 64, numClasses: 3, channels: 1, size: 8, seed: 1 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tbresume-'));
  const ckpt = path.join(dir, 'checkpoint.pt');
  const opts = { method: 'natural' as const, epochs: 2, batchSize: 16, optimizer: { type: 'sgd' as const, lr: 0.1 }, outDir: dir, tensorboardBatchEvery: 1, checkpointEvery: 'off' };
  const m1 = await Model.from({ arch: 'mlp', hidden: [8], inChannels: 1, inputSize: 8, numClasses: 3 });
  await train(m1, data, { ...opts, onEvent: (e) => { if (e.type === 'epoch' && e.epoch === 1) fs.copyFileSync(ckpt, `${ckpt}.epoch1`); } });
  fs.renameSync(`${ckpt}.epoch1`, ckpt);
  await new Promise((r) => setTimeout(r, 1100));  // event file names carry the second: the resumed one sorts after
  const r = await train(m1, data, { ...opts, seed: 7, resume: true });  // another seed: epoch 2 differs from the orphaned one
  m1.dispose();
  t.is(fs.readdirSync(path.join(dir, 'tb')).filter((f) => f.includes('tfevents')).length, 2);
  const s = readEvents(path.join(dir, 'tb'))[path.join(dir, 'tb')];
  checkCurve(t, s, r.history, 'constructed orphan');
  const b = readEvents(path.join(dir, 'tb', 'batches'))[path.join(dir, 'tb', 'batches')];
  t.deepEqual(b.scalars['batch/loss'].map(([step]) => step), [1, 2, 3, 4, 5, 6, 7, 8], 'batch steps once each, in order');
  fs.rmSync(dir, { recursive: true, force: true });

  // real: the CLI killed with SIGKILL inside epoch 2 (after mid-epoch checkpoints), then resumed
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tbkill-'));
  const args = [CLI, 'train', '--model', 'mlp', '--data', 'synthetic', '--subset', '512', '--batch-size', '8', '--epochs', '3', '--probe-size', '0',
    '--out', out, '--checkpoint-every', '4b', '--tensorboard-batch-every', '1'];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const killed = await new Promise<boolean>((resolve) => {
    child.stderr!.on('data', (c) => {
      err += c;
      // epoch 2 is under way once epoch 1's line is out: kill at its next progress output
      if (/epoch 1 /.test(err) && /epoch 2/.test(err.slice(err.indexOf('epoch 1 ') + 8))) { child.kill('SIGKILL'); }
    });
    child.on('exit', (code, sig) => resolve(sig === 'SIGKILL'));
  });
  t.true(killed, `killed inside epoch 2: ${err.slice(-500)}`);
  await new Promise((r) => setTimeout(r, 1100));
  const done = spawnSync(process.execPath, [...args, '--resume', '--json'], { encoding: 'utf8', timeout: 300_000 });
  t.is(done.status, 0, done.stderr);
  const history = (JSON.parse(done.stdout) as { history: EpochMetrics[] }).history;
  t.deepEqual(history.map((h) => h.epoch), [1, 2, 3]);
  const k = readEvents(path.join(out, 'tb'), path.join(out, 'tb', 'batches'));
  checkCurve(t, k[path.join(out, 'tb')], history, 'kill -9');
  const steps = k[path.join(out, 'tb', 'batches')].scalars['batch/loss'].map(([step]) => step);
  t.deepEqual(steps, Array.from({ length: 3 * 64 }, (_, i) => i + 1), 'every batch step once, in order, across the kill');
  fs.rmSync(out, { recursive: true, force: true });
});

test.serial('faults: an unwritable tb/ and a full disk print one warning each; training and its other outputs go on', async (t) => {
  const data = await synthetic({ kind: 'gaussian', n: 32, numClasses: 3, channels: 1, size: 8, seed: 2 });
  const warnings: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  // unwritable: tb is a file, so the folder cannot be made
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tbfault-'));
  fs.writeFileSync(path.join(dir, 'tb'), 'not a folder');
  (process.stderr as { write: unknown }).write = (s: string) => { if (String(s).startsWith('warning:')) warnings.push(String(s)); return true; };
  // the fs module object itself (the library's `import * as fs` reads its properties at each call)
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const fsw = require('fs') as { writeSync: unknown; openSync: unknown; closeSync: unknown };
  const realWrite = fs.writeSync, realOpen = fs.openSync, realClose = fs.closeSync;
  try {
    const m = await Model.from({ arch: 'mlp', hidden: [8], inChannels: 1, inputSize: 8, numClasses: 3 });
    const r = await train(m, data, { method: 'natural', epochs: 2, batchSize: 16, outDir: dir });
    t.is(r.history.length, 2);
    t.is(warnings.length, 1);
    t.regex(warnings[0], /TensorBoard events in .*tb stopped/);
    t.is(fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 2);
    t.true(fs.existsSync(path.join(dir, 'checkpoint.pt')));
    // a full disk: every write to an event file fails with ENOSPC after its first record
    warnings.length = 0;
    const dir2 = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tbfull-'));
    const eventFds = new Set<number>();
    let writes = 0;
    fsw.openSync = (p: fs.PathLike, ...rest: unknown[]) => {
      const fd = (realOpen as (...a: unknown[]) => number)(p, ...rest);
      if (String(p).includes('tfevents')) eventFds.add(fd);
      return fd;
    };
    fsw.writeSync = (fd: number, ...rest: unknown[]) => {
      if (eventFds.has(fd) && writes++ > 0) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return (realWrite as (...a: unknown[]) => number)(fd, ...rest);
    };
    fsw.closeSync = (fd: number) => { eventFds.delete(fd); realClose(fd); };
    const r2 = await train(m, data, { method: 'natural', epochs: 3, batchSize: 16, outDir: dir2, tensorboardBatchEvery: 1 });
    fsw.writeSync = realWrite; fsw.openSync = realOpen; fsw.closeSync = realClose;
    t.is(r2.history.length, 3);
    t.is(warnings.length, 2, 'one per event file (the epoch run and the batch run)');
    t.true(warnings.every((w) => /ENOSPC/.test(w)));
    t.is(fs.readFileSync(path.join(dir2, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 3);
    m.dispose();
    fs.rmSync(dir2, { recursive: true, force: true });
  } finally {
    fsw.writeSync = realWrite; fsw.openSync = realOpen; fsw.closeSync = realClose;
    (process.stderr as { write: unknown }).write = write;
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('the record framing: length and data each carry the masked CRC-32C (the TFRecord test vector); tensorboard: false writes nothing; Slurm tasks get --no-tensorboard', async (t) => {
  // CRC-32C("123456789") = 0xe3069283 (RFC 3720 B.4); masked: ((c >>> 15) | (c << 17)) + 0xa282ead8 mod 2^32
  const rec = tfRecord(Buffer.from('123456789'));
  const c = 0xe3069283;
  t.is(rec.readUInt32LE(12 + 9), ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0);
  t.is(Number(rec.readBigUInt64LE(0)), 9);
  t.is(rec.length, 9 + 16);
  const w = new EventWriter(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tbw-')));
  w.close();
  t.true(w.bytes > 16);
  const data = await synthetic({ kind: 'gaussian', n: 16, numClasses: 3, channels: 1, size: 8, seed: 3 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tboff-'));
  const m = await Model.from({ arch: 'mlp', hidden: [8], inChannels: 1, inputSize: 8, numClasses: 3 });
  await train(m, data, { method: 'natural', epochs: 1, batchSize: 16, outDir: dir, tensorboard: false });
  m.dispose();
  t.false(fs.existsSync(path.join(dir, 'tb')));
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tboff2-'));
  const cfg = sweep(out);
  const r = await runExperiment({ ...cfg, tensorboard: false, runs: [{ name: 'off' }], defaults: { ...cfg.defaults, eval: { attacks: [], fisher: { samples: 4 }, cckl: { samples: 12, pairs: 4 }, pictures: { samples: 0, classes: false } } } }, { out });
  t.is(r.finished, 1, JSON.stringify(r.runs));
  t.false(fs.existsSync(path.join(RunDir.of(out, r.runs[0].id).dir, 'tb')));
  // Slurm array tasks get the flag on their command line
  const cfgFile = path.join(out, 'cfg.json');
  fs.writeFileSync(cfgFile, JSON.stringify(sweep(path.join(out, 'slurm'))));
  t.regex(slurmScript(cfgFile, { tensorboard: false }).script, /--only "\$\{RUNS\[\$SLURM_ARRAY_TASK_ID\]\}" --no-progress --no-tensorboard\n/);
  t.notRegex(slurmScript(cfgFile).script, /--no-tensorboard/);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(out, { recursive: true, force: true });
});
