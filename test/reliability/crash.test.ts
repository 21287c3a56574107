/**
 * Crash consistency: `train` and `run` killed with SIGKILL at seeded random moments, and `train`
 * killed while it writes its checkpoint (the moment its temporary file appears, seen by fs.watch),
 * then resumed: the result equals an uninterrupted run's, number for number, and no temporary
 * file is left behind.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { spawn } from 'child_process';
import { CLI, tmpDir, tempLitter, writeNpy } from './harness';

const dir = tmpDir('crash');
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

// 512 images [1, 8, 8] in 4 classes with a class-dependent mean, so training moves
const N = 512;
const x = new Float32Array(N * 64);
const y = new BigInt64Array(N);
let s = 7;
for (let i = 0; i < N; i++) {
  y[i] = BigInt(i % 4);
  for (let j = 0; j < 64; j++) { s = (1103515245 * s + 12345) % 2147483648; x[i * 64 + j] = Math.min(1, Math.max(0, 0.2 * (i % 4) + 0.3 * (s / 2147483648))); }
}
const IMAGES = path.join(dir, 'images.npy');
const LABELS = path.join(dir, 'labels.npy');
writeNpy(IMAGES, x, [N, 1, 8, 8]);
writeNpy(LABELS, y, [N]);
const trainArgs = (out: string, resume: boolean) => [CLI, 'train', '--model', '{"arch":"mlp","inChannels":1,"inputSize":8,"numClasses":4,"hidden":[256,256]}',
  '--data', IMAGES, '--labels', LABELS, '--epochs', '4', '--batch-size', '16', '--probe-size', '0', '--seed', '2', '--json', '--out', out,
  ...(resume ? ['--resume'] : [])];

interface Hist { history: Record<string, number>[] }
/** The numbers of a history without its wall-clock fields. */
function numbers(h: Hist): Record<string, number>[] {
  return h.history.map(({ seconds: _s, samplesPerSec: _p, ...rest }) => rest);
}

/**
 * Runs a command to its end; `work` is the wall time from its first stderr line (printed once
 * LibTorch, the data and the model are loaded) to its exit: the part a kill should land in.
 */
function runToEnd(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string; work: number }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '', started = 0;
    p.stdout.on('data', (d) => { stdout += String(d); });
    p.stderr.on('data', (d) => { stderr += String(d); if (!started) started = Date.now(); });
    p.on('close', (status) => resolve({ status, stdout, stderr, work: Date.now() - (started || Date.now()) }));
  });
}

/** When to kill: `ms` after the `count`-th stderr line matching `pattern`, or at a checkpoint write. */
type Moment = { pattern: RegExp; count: number; ms: number } | { checkpointIn: string };

/** Starts a process and SIGKILLs it at `moment`; resolves with how it ended. */
function killAt(args: string[], moment: Moment): Promise<{ signal: NodeJS.Signals | null; atWrite: boolean }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let timer: NodeJS.Timeout | undefined;
    let seen = 0;
    let buf = '';
    p.stderr.on('data', (d) => {
      if (!('pattern' in moment) || timer) return;
      buf += String(d);
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) if (moment.pattern.test(l) && ++seen === moment.count) timer = setTimeout(() => p.kill('SIGKILL'), moment.ms);
    });
    let atWrite = false;
    let watcher: fs.FSWatcher | undefined;
    if ('checkpointIn' in moment) {
      // kill the moment the checkpoint's temporary file appears: mid-write (it is fsynced before its rename)
      watcher = fs.watch(moment.checkpointIn, (_e, name) => {
        if (name && /^checkpoint\.pt\.tmp-/.test(String(name)) && !atWrite) { atWrite = true; p.kill('SIGKILL'); }
      });
    }
    p.on('exit', (_code, signal) => { clearTimeout(timer); watcher?.close(); resolve({ signal, atWrite }); });
  });
}

test.serial('train: SIGKILL at seeded random moments and during the checkpoint write, then --resume: identical numbers', async (t) => {
  const ref = path.join(dir, 'train-ref');
  const r = await runToEnd(trainArgs(ref, false));
  const wall = r.work;
  t.is(r.status, 0, r.stderr);
  const want = numbers(JSON.parse(r.stdout) as Hist);
  t.is(want.length, 4);
  // seeded moments: after epoch line 1 or 2 (two epochs still to go), plus a fraction in (0, 0.9)
  // of an epoch of the uninterrupted run: mid-epoch, at any batch, on a loaded machine as well
  let rng = 16807;
  const rand = () => { rng = (rng * 48271) % 2147483647; return rng / 2147483647; };
  const epochMs = wall / 4;
  const moments = [0, 1].map(() => ({ pattern: /^epoch \d+  loss/, count: 1 + Math.floor(2 * rand()), ms: Math.round(0.9 * rand() * epochMs) }));
  const killed: string[] = [];
  for (const [k, moment] of moments.entries()) {
    const out = path.join(dir, `train-kill-${k}`);
    const e = await killAt(trainArgs(out, false), moment);
    t.is(e.signal, 'SIGKILL', `kill ${k} landed before the end`);
    killed.push(`${moment.ms} ms after epoch ${moment.count}: ${e.signal ?? 'finished first'}`);
    const ms = moment.ms;
    const again = await runToEnd(trainArgs(out, true));
    t.is(again.status, 0, again.stderr);
    t.deepEqual(numbers(JSON.parse(again.stdout) as Hist), want, `killed at ${ms} ms`);
    t.deepEqual(tempLitter(out), []);
    t.deepEqual(fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => { const { seconds: _a, samplesPerSec: _b, ...rest } = JSON.parse(l) as Record<string, number>; return rest; }), want);
  }
  // during a checkpoint write: the first one is after epoch 1
  const out = path.join(dir, 'train-kill-write');
  fs.mkdirSync(out);
  const e = await killAt(trainArgs(out, false), { checkpointIn: out });
  t.true(e.atWrite, 'killed during the checkpoint write');
  killed.push(`at the checkpoint write: ${e.signal}`);
  const again = await runToEnd(trainArgs(out, true));
  t.is(again.status, 0, again.stderr);
  t.deepEqual(numbers(JSON.parse(again.stdout) as Hist), want);
  t.deepEqual(tempLitter(out), []);
  t.log(`uninterrupted: ${wall} ms of training; kills: ${killed.join('; ')}`);
});

test.serial('run: SIGKILL at a seeded random moment, then the same command: the same summary.json as an uninterrupted sweep', async (t) => {
  const cfg = path.join(dir, 'sweep.json');
  fs.writeFileSync(cfg, JSON.stringify({
    name: 'crash',
    seeds: [0],
    defaults: {
      data: { dataset: 'synthetic', probeSize: 16, synthetic: { channels: 1, size: 8, classes: 3, trainSize: 256, testSize: 32 } },
      model: { arch: 'mlp', hidden: [256, 256] },
      train: { method: 'natural', epochs: 3, batchSize: 16, optimizer: { type: 'sgd', lr: 0.05 }, track: { cckl: false } },
      eval: { attacks: [{ name: 'pgd', type: 'pgd', epsilon: 0.1, stepSize: 0.03, steps: 3 }], fisher: { samples: 8 }, cckl: { samples: 16, pairs: 16 } },
    },
    runs: [{ name: 'a' }, { name: 'b', train: { method: 'pgd-at', epsilon: 0.1, stepSize: 0.05, steps: 2 } }],
  }));
  const args = (out: string) => [CLI, 'run', cfg, '--out', out, '--no-progress', '--json'];
  const ref = path.join(dir, 'run-ref');
  const r = await runToEnd(args(ref));
  const wall = r.work;
  t.is(r.status, 0, r.stderr);
  const strip = (f: string) => {
    const { startedAt: _a, finishedAt: _b, seconds: _c, ...rest } = JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>;
    return rest;
  };
  // a seeded moment: after one of the first 4 of the sweep's 6 epoch lines, plus a fraction of an epoch
  let rng = 48271;
  const rand = () => { rng = (rng * 48271) % 2147483647; return rng / 2147483647; };
  const count = 1 + Math.floor(4 * rand());
  const ms = Math.round(0.9 * rand() * (wall / 8));
  const out = path.join(dir, 'run-kill');
  const e = await killAt(args(out), { pattern: /^ {2}\S+ epoch \d+:/, count, ms });
  t.is(e.signal, 'SIGKILL');
  const again = await runToEnd(args(out));
  t.is(again.status, 0, again.stderr);
  for (const id of ['a_natural_seed0', 'b_pgd-at_seed0']) {
    t.deepEqual(strip(path.join(out, id, 'summary.json')), strip(path.join(ref, id, 'summary.json')), id);
  }
  t.deepEqual(tempLitter(out), []);
  t.log(`uninterrupted: ${wall} ms after its first line; killed ${ms} ms after epoch line ${count} (${e.signal ?? 'finished first'})`);
});
