/**
 * Preemption of `fisherlens run` (issue 26): SIGTERM inside an epoch of a run makes it checkpoint
 * at the next batch boundary and exit 143; the same command then finishes the sweep, and the
 * finished run's summary and epoch records equal an uninterrupted run's apart from timings.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync } from 'child_process';
import { Model } from '../../lib';
import { RunDir, readJsonl } from '../../lib/experiment/rundir';

const root = path.join(__dirname, '..', '..', '..');
const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');

const config = {
  name: 'preempt', seeds: [3],
  defaults: {
    data: { dataset: 'fashion-mnist', trainSize: 1500, testSize: 40, probeSize: 20 },
    train: { epochs: 1, batchSize: 10, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, steps: 2, epsilon: 0.1, stepSize: 0.05, beta: 1, track: { cckl: false } },
    eval: { batchSize: 40, attacks: [{ name: 'pgd', type: 'pgd', epsilon: 0.1, stepSize: 0.05, steps: 2 }], fisher: { samples: 8 }, cckl: { samples: 40, pairs: 20 } },
  },
  runs: [{ model: { arch: 'mlp' }, train: { method: 'trades' } }],
};

const slowCli = path.join(__dirname, '..', 'helpers', 'slow-batch.js');

/** A checkpoint's model parameters and buffers, by name. */
async function weights(file: string): Promise<Record<string, number[]>> {
  const m = await Model.loadCheckpoint(file);
  const state = await m.state();
  const out: Record<string, number[]> = {};
  for (const [k, v] of state) { out[k] = Array.from(v.toArray() as Float32Array); v.dispose(); }
  m.dispose();
  return out;
}

const untimed = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([k]) => !['seconds', 'samplesPerSec', 'startedAt', 'finishedAt', 'provenance'].includes(k)));

const dirs: string[] = [];
test.after.always(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

/** The uninterrupted run's folder (made once, by the first test that needs it). */
let refDir: string | undefined;
function reference(dir: string): RunDir {
  if (!refDir) {
    const file = path.join(dir, 'cfg.json');
    const ref = spawnSync(process.execPath, [cli, 'run', file, '--out', path.join(dir, 'ref'), '--no-progress'], { encoding: 'utf8' });
    if (ref.status !== 0) throw new Error(ref.stderr);
    refDir = path.join(dir, 'ref');
  }
  return RunDir.of(refDir, 'mlp_trades_seed3');
}

test.serial('run: SIGTERM inside an epoch checkpoints at the next batch boundary, exits 143, and the same command finishes it as if uninterrupted', async (t) => {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-preempt-')));
  dirs.push(dir);
  const file = path.join(dir, 'cfg.json');
  fs.writeFileSync(file, JSON.stringify(config));
  const a = reference(dir);
  const out = path.join(dir, 'cut');
  const p = spawn(process.execPath, [cli, 'run', file, '--out', out, '--no-progress', '--checkpoint-every', '4b']);
  let err = '';
  p.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  p.stdout.resume();
  const rd = RunDir.of(out, 'mlp_trades_seed3');
  // the first mid-epoch checkpoint (after batch 4 of 150) is there: the run is inside its epoch
  await new Promise<void>((resolve) => {
    const iv = setInterval(() => { if (fs.existsSync(rd.checkpoint)) { clearInterval(iv); resolve(); } }, 5);
  });
  p.kill('SIGTERM');
  const code = await new Promise<number | null>((resolve) => p.on('close', resolve));
  t.is(code, 143, err);
  const meta = (await Model.loadCheckpoint(rd.checkpoint)).checkpointMeta as { epoch: number; batch?: number };
  t.true(meta.epoch === 0 && meta.batch !== undefined && meta.batch >= 4 && meta.batch < 150, JSON.stringify(meta));
  t.is(rd.state(), 'resumable');
  const again = spawnSync(process.execPath, [cli, 'run', file, '--out', out, '--no-progress'], { encoding: 'utf8' });
  t.is(again.status, 0, again.stderr);
  t.deepEqual(untimed(rd.readSummary() as unknown as Record<string, unknown>), untimed(a.readSummary() as unknown as Record<string, unknown>));
  t.deepEqual(readJsonl<Record<string, unknown>>(rd.metrics).map(untimed), readJsonl<Record<string, unknown>>(a.metrics).map(untimed));
});

test.serial('run: SIGTERM during a batch that cannot end within the grace abandons it, checkpoints the last boundary and exits 143 within the grace; the same command finishes it as if uninterrupted', async (t) => {
  const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-abandon-')));
  dirs.push(dir);
  const file = path.join(dir, 'cfg.json');
  fs.writeFileSync(file, JSON.stringify(config));
  const a = reference(dir);
  const out = path.join(dir, 'cut');
  // batch 37 of 150 never ends by itself (test/helpers/slow-batch.ts); the last periodic
  // checkpoint before it is after batch 20
  const grace = 9;
  const p = spawn(process.execPath, [slowCli, 'run', file, '--out', out, '--no-progress', '--checkpoint-every', '20b', '--grace', String(grace)], { env: { ...process.env, SLOW_BATCH: '37' } });
  let err = '';
  let onSlow: () => void = () => undefined;
  const slow = new Promise<void>((resolve) => { onSlow = resolve; });
  p.stderr.on('data', (d: Buffer) => { err += d.toString(); if (err.includes('slow batch: started')) onSlow(); });
  p.stdout.resume();
  const closed = new Promise<number | null>((resolve) => p.on('close', resolve));
  await Promise.race([slow, closed]);
  const sent = Date.now();
  p.kill('SIGTERM');
  const code = await closed;
  const took = (Date.now() - sent) / 1000;
  t.is(code, 143, err);
  t.true(took <= grace, `exited ${took} s after SIGTERM (grace ${grace} s)`);
  t.notRegex(err, /grace is over/, 'the checkpoint was written before the grace ran out');
  const rd = RunDir.of(out, 'mlp_trades_seed3');
  const meta = (await Model.loadCheckpoint(rd.checkpoint)).checkpointMeta as { epoch: number; batch?: number };
  t.deepEqual([meta.epoch, meta.batch], [0, 36], 'the state at the boundary before the abandoned batch');
  const again = spawnSync(process.execPath, [cli, 'run', file, '--out', out, '--no-progress'], { encoding: 'utf8' });
  t.is(again.status, 0, again.stderr);
  t.deepEqual(untimed(rd.readSummary() as unknown as Record<string, unknown>), untimed(a.readSummary() as unknown as Record<string, unknown>));
  t.deepEqual(readJsonl<Record<string, unknown>>(rd.metrics).map(untimed), readJsonl<Record<string, unknown>>(a.metrics).map(untimed));
  t.deepEqual(await weights(rd.checkpoint), await weights(a.checkpoint));
});
