/**
 * The defects of issue #16, one test each: every one failed on the code before the fix (checked
 * by running this file against it) and passes now. CLI cases run in this process (harness.cli).
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { Model, Tensor, FisherLensError, train, loadNpy, loadData, attack } from '../../lib';
import { cli, errorLine, tmpDir, smallData, scriptModels, tempLitter, CLI, ROOT } from './harness';

const dir = tmpDir('defects');
// 12 images [1, 8, 8]; images 2, 5 and 9 are all zeros (the NaN model's logits are NaN there)
const ZERO = Array.from({ length: 12 }, (_, i) => i === 2 || i === 5 || i === 9);
const data = smallData(dir, ZERO);
let models: { nan: string; linear: string };
test.before(() => { models = scriptModels(dir); });
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const TRAIN = ['train', '--model', 'mlp', '--data', data.images, '--labels', data.labels, '--epochs', '1', '--batch-size', '4',
  '--probe-size', '0', '--json'];

test.serial('train --seed: the same seed gives the same numbers, run after run (fresh weights are seeded)', async (t) => {
  const a = await cli([...TRAIN, '--seed', '3']);
  const b = await cli([...TRAIN, '--seed', '3']);
  const c = await cli([...TRAIN, '--seed', '4']);
  t.is(a.code, 0, a.stderr);
  const loss = (r: { stdout: string }) => (JSON.parse(r.stdout) as { history: { trainLoss: number }[] }).history[0].trainLoss;
  // bitwise: same seed, same device, same kernels
  t.is(loss(a), loss(b));
  t.not(loss(a), loss(c));
});

test.serial('a metrics.jsonl symlink in the run folder is replaced, never written through', async (t) => {
  const out = path.join(dir, 'symlinked');
  fs.mkdirSync(out);
  const victim = path.join(dir, 'victim.txt');
  fs.writeFileSync(victim, 'precious\n');
  fs.symlinkSync(victim, path.join(out, 'metrics.jsonl'));
  const r = await cli([...TRAIN, '--out', out]);
  t.is(r.code, 0, r.stderr);
  t.is(fs.readFileSync(victim, 'utf8'), 'precious\n');
  const st = fs.lstatSync(path.join(out, 'metrics.jsonl'));
  t.true(st.isFile());
  t.is(fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').length, 1);
});

test.serial('hostile `out` folders: /proc, a file, under /dev/null, a config named . or .. are clear errors', async (t) => {
  const file = path.join(dir, 'a-file');
  fs.writeFileSync(file, 'x');
  const cfg = (name: string, out?: string) => {
    const f = path.join(dir, `cfg-${Math.random().toString(36).slice(2)}.json`);
    fs.writeFileSync(f, JSON.stringify({ name, ...(out ? { out } : {}), runs: [{ model: { arch: 'mlp' }, train: { method: 'natural', epochs: 0 }, data: { dataset: 'synthetic' } }] }));
    return f;
  };
  for (const [out, code] of [['/proc/self/x', 'ERR_IO'], [file, 'ERR_IO'], [path.join(file, 'sub'), 'ERR_IO'], ['/dev/null/x', 'ERR_IO']] as const) {
    const t0 = Date.now();
    const r = await cli(['run', cfg('ok', out)]);
    const e = errorLine(r);
    t.is(r.code, 1, out);
    t.is(e.code, code, `${out}: ${r.stderr}`);
    t.is(e.lines, 1);
    t.true(Date.now() - t0 < 20_000, `${out} took ${Date.now() - t0} ms`);
  }
  const cwdBefore = fs.readdirSync(process.cwd()).sort();
  for (const name of ['.', '..']) {
    const r = await cli(['run', cfg(name), '--dry-run']);
    t.is(errorLine(r).code, 'ERR_CONFIG', r.stderr);
  }
  t.deepEqual(fs.readdirSync(process.cwd()).sort(), cwdBefore);
});

test.serial('NaN logits: eval, attack, fisher and cckl say ERR_VALUE and how many samples', async (t) => {
  // 3 of the 12 images are all zeros: log(0 − 1) is NaN there (harness.scriptModels)
  const common = ['--model', models.nan, '--data', data.images, '--labels', data.labels];
  for (const args of [
    ['eval', ...common, '--batch-size', '12'],
    ['attack', ...common, '--batch-size', '12', '--attack', 'fgsm', '--epsilon', '0.1'],
    ['fisher', ...common, '--limit', '12'],
    ['cckl', ...common, '--batch-size', '12', '--pairs', '0'],
  ]) {
    const r = await cli(args);
    const e = errorLine(r);
    t.is(r.code, 1, `${args[0]}: ${r.stdout}`);
    t.is(e.code, 'ERR_VALUE', `${args[0]}: ${r.stderr}`);
    t.regex(e.line, /NaN or Inf for 3 of 12 samples/, args[0]);
  }
});

test.serial('a folder as --labels or to loadNpy is ERR_IO, not ERR_MEMORY', async (t) => {
  const r = await cli(['eval', '--model', models.linear, '--data', data.images, '--labels', dir]);
  t.is(errorLine(r).code, 'ERR_IO', r.stderr);
  for (const [x, y] of [[dir, data.labels], [data.images, dir]]) {
    const e = await t.throwsAsync(loadNpy(x, y));
    t.is((e as FisherLensError).code, 'ERR_IO', (e as Error).message);
  }
});

test.serial('errors carry codes: --lr -1, train({lr: -1}), forward(undefined), usage errors', async (t) => {
  for (const flag of [['--lr', '-1'], ['--weight-decay', '-1']]) {
    const r = await cli([...TRAIN, ...flag]);
    t.is(errorLine(r).code, 'ERR_ARG', r.stderr);
  }
  const m = await Model.create({ arch: 'mlp', inChannels: 1, inputSize: 8, numClasses: 3 });
  const e1 = await t.throwsAsync(() => m.forward(undefined as unknown as Tensor));
  t.true(e1 instanceof FisherLensError);
  t.is((e1 as FisherLensError).code, 'ERR_ARG');
  m.dispose();
  // commander's own errors: one line with ERR_ARG, exit 2
  for (const args of [['eval', '--nope'], ['eval'], ['frobnicate'], ['attack', '--model']]) {
    const r = await cli(args);
    const e = errorLine(r);
    t.is(r.code, 2, args.join(' '));
    t.is(e.code, 'ERR_ARG', `${args.join(' ')}: ${r.stderr}`);
    t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
});

test.serial('train() with a negative lr rejects with a FisherLensError (API)', async (t) => {
  const m = await Model.create({ arch: 'mlp', inChannels: 1, inputSize: 8, numClasses: 3 });
  const ds = await loadData(data.images, { labels: data.labels });
  const e = await t.throwsAsync(train(m, ds, { method: 'natural', epochs: 1, optimizer: { lr: -1 } }));
  t.true(e instanceof FisherLensError);
  t.is((e as FisherLensError).code, 'ERR_ARG');
  ds.dispose();
  m.dispose();
});

test.serial('out-of-range labels in attack are ERR_VALUE, not ERR_TORCH', async (t) => {
  const m = await Model.from(models.linear);
  const ds = await loadNpy(data.images, data.labels);
  const x = ds.images;
  const y = Tensor.from(BigInt64Array.from(ZERO.map((_, i) => BigInt(i === 4 ? 7 : 0))), [12]);
  const e = await t.throwsAsync(attack(m, x, y, { kind: 'fgsm', epsilon: 0.1 }));
  t.is((e as FisherLensError).code, 'ERR_VALUE');
  t.regex((e as Error).message, /labels must lie in \[0, 3\)/);
  y.dispose();
  ds.dispose();
  m.dispose();
});

test.serial('a float64 batch runs a float32 TorchScript model (same logits as the float32 batch)', async (t) => {
  const m = await Model.from(models.linear);
  const ds = await loadNpy(data.images, data.labels);
  const x = ds.images;
  // the module casts to its parameters' type: float64 pixels of float32 values give identical logits
  const x64 = x.to('float64');
  const z32 = (await m.forward(x)).toArray() as Float32Array;
  const z64 = (await m.forward(x64)).toArray() as Float32Array;
  t.is(z64.length, z32.length);
  for (let i = 0; i < z32.length; i++) t.is(z64[i], z32[i]);
  x64.dispose();
  ds.dispose();
  m.dispose();
});

test('an allocation beyond a memory cap is ERR_MEMORY', (t) => {
  // a child under `ulimit -v` (4 GiB of address space: LibTorch loads, a 16 GiB tensor cannot)
  const script = `const fl = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
fl.synthetic({ kind: 'gaussian', n: 1400000, channels: 3, size: 32, numClasses: 10 })
  .then(() => console.log('allocated'), (e) => console.log(e.code));`;
  const r = spawnSync('bash', ['-c', `ulimit -v 4194304; exec "${process.execPath}" -e "$0"`, script], { encoding: 'utf8', timeout: 60_000 });
  t.is(r.stdout.trim(), 'ERR_MEMORY', r.stderr);
});

test.serial('flag parsing: \'\' and 0x10 are not numbers; train flags obey the config schema; --resume needs --out', async (t) => {
  const cases: string[][] = [
    ['attack', '--model', models.linear, '--data', data.images, '--labels', data.labels, '--epsilon', ''],
    ['attack', '--model', models.linear, '--data', data.images, '--labels', data.labels, '--steps', '0x10'],
    [...TRAIN, '--beta', '-6'],
    [...TRAIN, '--momentum', '5'],
    [...TRAIN, '--warmup', '-1'],
    [...TRAIN, '--resume'],
  ];
  for (const args of cases) {
    const r = await cli(args);
    t.is(r.code, 1, args.join(' '));
    t.is(errorLine(r).code, 'ERR_ARG', `${args.slice(-2).join(' ')}: ${r.stderr}`);
  }
});

test.serial('configs: epsilon .inf is refused at validation; a million-run grid is refused at once unless --max-runs', async (t) => {
  const inf = path.join(dir, 'inf.yaml');
  fs.writeFileSync(inf, 'name: inf\nruns:\n  - model: { arch: mlp }\n    data: { dataset: synthetic }\n    train: { method: natural, epochs: 0 }\n    eval: { attacks: [{ type: pgd, epsilon: .inf }] }\n');
  const r1 = await cli(['run', inf, '--dry-run']);
  t.is(errorLine(r1).code, 'ERR_CONFIG', r1.stderr);
  t.regex(r1.stderr, /epsilon: expected a finite number/);
  const big = path.join(dir, 'big.json');
  const values = Array.from({ length: 1000 }, (_, i) => i + 1);
  fs.writeFileSync(big, JSON.stringify({ name: 'big', runs: [{ model: { arch: 'mlp' }, data: { dataset: 'synthetic' }, train: { method: 'natural', epochs: 0 },
    grid: { 'train.batchSize': values, 'train.maxBatches': values } }] }));
  const t0 = Date.now();
  const r2 = await cli(['run', big, '--dry-run']);
  t.is(errorLine(r2).code, 'ERR_CONFIG', r2.stderr);
  t.regex(r2.stderr, /1000000 runs/);
  t.true(Date.now() - t0 < 5000);
  // within the cap: planned
  const small = path.join(dir, 'small.json');
  fs.writeFileSync(small, JSON.stringify({ name: 'small', runs: [{ model: { arch: 'mlp' }, data: { dataset: 'synthetic' }, train: { method: 'natural', epochs: 0 },
    grid: { 'train.batchSize': [1, 2, 3] } }] }));
  t.is(errorLine(await cli(['run', small, '--dry-run', '--max-runs', '2'])).code, 'ERR_CONFIG');
  const ok = await cli(['run', small, '--dry-run', '--max-runs', '3', '--json']);
  t.is((JSON.parse(ok.stdout) as { runs: unknown[] }).runs.length, 3);
});

test.serial('a stale checkpoint temp file (writer killed) is gone after the next start', async (t) => {
  const out = path.join(dir, 'stale');
  fs.mkdirSync(out);
  // a pid that is certainly dead: a child that has exited
  const dead = spawnSync(process.execPath, ['-e', '0']).pid;
  fs.writeFileSync(path.join(out, `checkpoint.pt.tmp-${dead}-0`), 'half a checkpoint');
  const r = await cli([...TRAIN, '--out', out]);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(tempLitter(out), []);
  t.true(fs.existsSync(path.join(out, 'checkpoint.pt')));
});

test('Ctrl-C during attack --out leaves neither the .npy nor its temporary file', async (t) => {
  const out = path.join(dir, 'ctrlc');
  fs.mkdirSync(out);
  const adv = path.join(out, 'adv.npy');
  // many slow PGD steps on fashion-mnist so that SIGINT lands mid-run (after the temp file exists)
  const p = spawn(process.execPath, [CLI, 'attack', '--model', 'small-cnn', '--data', 'fashion-mnist', '--limit', '2000',
    '--batch-size', '50', '--attack', 'pgd', '--steps', '200', '--out', adv], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d) => { stderr += String(d); });
  const t0 = Date.now();
  while (tempLitter(out).length === 0 && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 50));
  t.is(tempLitter(out).length, 1, 'the temporary .npy appeared');
  p.kill('SIGINT');
  const code = await new Promise<number | null>((res) => p.on('exit', (c) => res(c)));
  t.not(code, 0, stderr);
  t.deepEqual(fs.readdirSync(out), [], stderr);
});

test('a second SIGTERM while a native op runs exits 143 at once, not with a crash in LibTorch\'s destructors', async (t) => {
  const out = path.join(dir, 'term-twice');
  // the 2nd training step never ends by itself (test/helpers/slow-batch.ts: 10⁹ PGD steps), so the
  // first SIGTERM waits for a batch boundary (grace 60 s) and the second exits while it runs
  const slowCli = path.join(__dirname, '..', 'helpers', 'slow-batch.js');
  const p = spawn(process.execPath, [slowCli, 'train', '--model', 'mlp', '--data', 'synthetic', '--method', 'pgd-at', '--epochs', '1',
    '--out', out, '--grace', '60'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, SLOW_BATCH: '2' } });
  let stderr = '';
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) => p.on('exit', (c, s) => res([c, s])));
  const slow = new Promise<void>((res) => p.stderr.on('data', (d) => { stderr += String(d); if (stderr.includes('slow batch: started')) res(); }));
  await Promise.race([slow, exited]);
  p.kill('SIGTERM');
  const t0 = Date.now();
  while (!stderr.includes('SIGTERM:') && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
  p.kill('SIGTERM');
  const [code, signal] = await exited;
  t.is(signal, null, stderr);
  t.is(code, 143, stderr);
  t.regex(stderr, /SIGTERM again, exiting now/);
});
