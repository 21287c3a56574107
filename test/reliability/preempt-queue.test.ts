/**
 * Preemption through a queue worker (issue 26): a real redis-server (127.0.0.1, free port,
 * temporary folder, data on disk across a restart) and real training in worker processes. A run
 * is interrupted at seeded mid-epoch batches: SIGTERM (the batch under way cannot end within the
 * grace, test/helpers/slow-batch.ts, so it is abandoned and the boundary before it is
 * checkpointed), kill -9 (the last periodic checkpoint is what survives), and SIGTERM while Redis
 * is gone. Another worker then finishes the run, and it equals an uninterrupted local run: summary
 * and epoch records apart from timings, and every weight. (Equal weights after the steps that
 * follow the resume also mean the optimiser state was restored: an SGD-momentum step's change is
 * lr × its momentum buffer.)
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync, ChildProcessWithoutNullStreams } from 'child_process';
import { Model } from '../../lib';
import { RunDir, readJsonl } from '../../lib/experiment/rundir';
import { queueStatus } from '../../lib/experiment/queue-status';
import { uniformStream } from '../../lib/util/random';
import { startRedis, haveRedis, RedisServer } from '../helpers/redis';

const root = path.join(__dirname, '..', '..', '..');
const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');
const slowCli = path.join(__dirname, '..', 'helpers', 'slow-batch.js');
const maybe = haveRedis() ? test.serial : test.skip;
const RUN = 'mlp_trades_seed3';
/** The promised stop deadline with Redis gone, after the checkpoint (docs/reliability.md), in s. */
const STOP_DEADLINE_S = 10;

// 60 batches of 10 per epoch, 2 epochs; interrupted in epoch 1
const config = {
  name: 'pq', seeds: [3],
  defaults: {
    data: { dataset: 'fashion-mnist', trainSize: 600, testSize: 40, probeSize: 20 },
    train: { epochs: 2, batchSize: 10, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, steps: 2, epsilon: 0.1, stepSize: 0.05, beta: 1, track: { cckl: false } },
    eval: { batchSize: 40, attacks: [{ name: 'pgd', type: 'pgd', epsilon: 0.1, stepSize: 0.05, steps: 2 }], fisher: { samples: 8 }, cckl: { samples: 40, pairs: 20 } },
  },
  runs: [{ model: { arch: 'mlp' }, train: { method: 'trades' } }],
};

/** The seeded mid-epoch batches (1-based, inside epoch 1's 60) at which the three cases interrupt. */
const draw = uniformStream(26);
const [termAt, killAt, goneAt] = [0, 1, 2].map(() => 6 + Math.floor(draw() * 50));

let redis: RedisServer | undefined;
let db = 1;
let base = '';
const leftovers: (() => unknown)[] = [];
test.before(async () => {
  if (!haveRedis()) return;
  redis = await startRedis({ persist: true });
  base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-pq-')));
  fs.writeFileSync(path.join(base, 'cfg.json'), JSON.stringify(config));
  // the uninterrupted run
  const ref = spawnSync(process.execPath, [cli, 'run', path.join(base, 'cfg.json'), '--out', path.join(base, 'ref'), '--no-progress'], { encoding: 'utf8' });
  if (ref.status !== 0) throw new Error(ref.stderr);
});
test.after.always(async () => {
  for (const f of leftovers) f();
  await redis?.stop();
  if (base) fs.rmSync(base, { recursive: true, force: true });
});

interface Child { proc: ChildProcessWithoutNullStreams; stderr(): string; when(text: string): Promise<void>; exit: Promise<{ code: number | null; at: number }> }

function child(file: string, args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, [file, ...args], { env: { ...process.env, ...env } });
  let err = '';
  const waiting: { text: string; resolve(): void }[] = [];
  proc.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    for (const w of waiting) if (err.includes(w.text)) w.resolve();
  });
  proc.stdout.resume();
  const exit = new Promise<{ code: number | null; at: number }>((resolve) => proc.on('close', (code) => {
    for (const w of waiting) w.resolve();
    resolve({ code, at: Date.now() });
  }));
  leftovers.push(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); });
  return {
    proc, stderr: () => err, exit,
    when: (text) => new Promise<void>((resolve) => { if (err.includes(text) || proc.exitCode !== null) resolve(); else waiting.push({ text, resolve }); }),
  };
}

/** A worker on `url` (short locks: a dead worker's job is handed on within seconds). */
function worker(url: string, dir: string, extra: string[], env: Record<string, string> = {}): Child {
  return child(env.SLOW_BATCH ? slowCli : cli, ['worker', '--queue', url, '--root', dir, '--lock-duration', '2000', '--stalled-interval', '2000', ...extra], env);
}

function enqueue(url: string, out: string): void {
  const r = spawnSync(process.execPath, [cli, 'run', path.join(base, 'cfg.json'), '--out', out, '--queue', url, '--detach'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
}

async function meta(rd: RunDir): Promise<[number, number | undefined]> {
  const m = await Model.loadCheckpoint(rd.checkpoint);
  const x = m.checkpointMeta as { epoch: number; batch?: number };
  m.dispose();
  return [x.epoch, x.batch];
}

async function weights(file: string): Promise<Record<string, number[]>> {
  const m = await Model.loadCheckpoint(file);
  const out: Record<string, number[]> = {};
  for (const [k, v] of await m.state()) { out[k] = Array.from(v.toArray() as Float32Array); v.dispose(); }
  m.dispose();
  return out;
}

const untimed = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([k]) => !['seconds', 'samplesPerSec', 'startedAt', 'finishedAt', 'provenance'].includes(k)));

/** Another worker finishes the run; it must equal the uninterrupted one. */
async function finishesAsUninterrupted(t: import('ava').ExecutionContext, url: string, dir: string, out: string): Promise<void> {
  // a long idle exit: a dead worker's job comes back only after its lock expired and a stalled
  // check saw it; the worker is stopped once the run is done
  const w2 = worker(url, dir, ['--idle-exit', '120']);
  const rd = RunDir.of(out, RUN);
  const end = Date.now() + 180000;
  while (rd.state() !== 'finished' && Date.now() < end && w2.proc.exitCode === null) await new Promise((r) => setTimeout(r, 200));
  w2.proc.kill('SIGTERM');
  await w2.exit;
  t.is(rd.state(), 'finished', w2.stderr());
  t.regex(w2.stderr(), new RegExp(`took ${RUN}`));
  const a = RunDir.of(path.join(base, 'ref'), RUN);
  t.deepEqual(untimed(rd.readSummary() as unknown as Record<string, unknown>), untimed(a.readSummary() as unknown as Record<string, unknown>));
  t.deepEqual(readJsonl<Record<string, unknown>>(rd.metrics).map(untimed), readJsonl<Record<string, unknown>>(a.metrics).map(untimed));
  t.deepEqual(await weights(rd.checkpoint), await weights(a.checkpoint));
  const st = await queueStatus(url, 'pq');
  t.deepEqual(st.map((s) => [s.runId, s.state]), [[RUN, 'finished']]);
}

maybe(`SIGTERM to a busy worker at batch ${termAt}: the batch is abandoned, the boundary before it checkpointed, exit 143 within the grace, the job back in the queue; another worker finishes it as if uninterrupted`, async (t) => {
  const url = `${redis!.url}/${db++}`;
  const dir = fs.mkdtempSync(path.join(base, 'term-'));
  const out = path.join(dir, 'runs');
  // abandoned at abandonAfterSec(12) = 8 s: 4 s for the checkpoint, moving the job back, closing
  // and exiting on a loaded machine (2 s of 6 was once not enough: 6.4 s)
  const grace = 12;
  const w1 = worker(url, dir, ['--grace', String(grace), '--checkpoint-every', 'off'], { SLOW_BATCH: String(termAt) });
  enqueue(url, out);
  await w1.when('slow batch: started');
  const sent = Date.now();
  w1.proc.kill('SIGTERM');
  const e = await w1.exit;
  t.is(e.code, 143, w1.stderr());
  t.true(e.at - sent <= grace * 1000, `exited ${(e.at - sent) / 1000} s after SIGTERM (grace ${grace} s)`);
  t.regex(w1.stderr(), new RegExp(`stopped ${RUN} with its checkpoint; back in the queue`));
  t.deepEqual(await meta(RunDir.of(out, RUN)), [0, termAt - 1]);
  t.is((await queueStatus(url, 'pq'))[0].state, 'waiting');
  await finishesAsUninterrupted(t, url, dir, out);
});

maybe(`kill -9 of a busy worker at batch ${killAt}: the last periodic checkpoint survives; another worker resumes from it and finishes as if uninterrupted`, async (t) => {
  const url = `${redis!.url}/${db++}`;
  const dir = fs.mkdtempSync(path.join(base, 'kill-'));
  const out = path.join(dir, 'runs');
  const w1 = worker(url, dir, ['--checkpoint-every', '4b'], { SLOW_BATCH: String(killAt) });
  enqueue(url, out);
  await w1.when('slow batch: started');
  w1.proc.kill('SIGKILL');
  await w1.exit;
  t.deepEqual(await meta(RunDir.of(out, RUN)), [0, Math.floor((killAt - 1) / 4) * 4], 'the checkpoint after the last multiple of 4 batches');
  await finishesAsUninterrupted(t, url, dir, out);
});

maybe(`a busy worker whose Redis has gone: SIGTERM at batch ${goneAt} checkpoints and it exits within 10 s after; the job comes back when Redis does`, async (t) => {
  const url = `${redis!.url}/${db++}`;
  const dir = fs.mkdtempSync(path.join(base, 'gone-'));
  const out = path.join(dir, 'runs');
  const grace = 12;
  const w1 = worker(url, dir, ['--grace', String(grace), '--checkpoint-every', 'off'], { SLOW_BATCH: String(goneAt) });
  enqueue(url, out);
  await w1.when('slow batch: started');
  await redis!.halt();
  try {
    w1.proc.kill('SIGTERM');
    const e = await w1.exit;
    const rd = RunDir.of(out, RUN);
    const written = fs.statSync(rd.checkpoint).mtimeMs;
    t.is(e.code, 143, w1.stderr());
    t.true(e.at - written <= STOP_DEADLINE_S * 1000, `exited ${(e.at - written) / 1000} s after the checkpoint was written`);
    t.log(`exited ${(e.at - written) / 1000} s after the checkpoint was written`);
    t.deepEqual(await meta(rd), [0, goneAt - 1]);
  } finally {
    await redis!.restart();
  }
  await finishesAsUninterrupted(t, url, dir, out);
});
