/**
 * PGD-20 (L∞, ε 0.031, step 0.003, no random start: TRADES' pgd_whitebox) on one batch of 128,
 * small-cnn (1×28×28) and resnet20 (3×32×32): FisherLens vs the same loop in Python/PyTorch on
 * the same LibTorch (bench/python/attacks_bench.py), side by side, 2 threads each. Python runs
 * TRADES' loop as written ("reference": weight gradients computed by loss.backward()) and a lean
 * variant (input gradient only). FisherLens runs the built-in architecture and the very
 * TorchScript module Python exported, and the built-in with channelsLast: true. Prints samples/s and time ratios (target ≤ 0.7 × Python's
 * reference). The four runs are interleaved BENCH_REPS times (default 2; the machine is shared)
 * and the best of each is kept.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model, ModelSpec, Tensor, setThreads } from '../lib';
import { attack } from '../lib/attacks';
import { PyServer, passiveOpenMp } from './pyserver';


const P = { kind: 'pgd' as const, epsilon: 0.031, stepSize: 0.003, randomStart: false };
async function timePgd(model: Model, x: Tensor, y: Tensor, steps = 20, channelsLast = false): Promise<number> {
  const t0 = process.hrtime.bigint();
  const a = await attack(model, x, y, { ...P, steps, channelsLast });
  const t = Number(process.hrtime.bigint() - t0) / 1e9;
  a.xAdv.dispose();
  return t;
}

export async function main(): Promise<void> {
  passiveOpenMp();
  const reps = Number(process.env.BENCH_REPS ?? 2);
  const batch = 128;
  setThreads(2);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-bench-attacks-'));
  const rows: string[] = [];
  const archs: [string, ModelSpec, number[]][] = [
    ['small-cnn', { arch: 'small-cnn' }, [1, 28, 28]],
    ['resnet20', { arch: 'resnet20', inChannels: 3, inputSize: 32 }, [3, 32, 32]],
  ];
  for (const [arch, spec, shape] of archs) {
    const ts = path.join(dir, `${arch}.pt`);
    const server = new PyServer('attacks_bench.py', [arch, String(batch), ts]);
    await server.ready();
    const numel = shape.reduce((a, b) => a * b, 1);
    const x = Tensor.from(Float32Array.from({ length: batch * numel }, (_, i) => ((i * 7919) % 1000) / 1000), [batch, ...shape]);
    const y = Tensor.from(BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % 10)), [batch]);
    const builtin = Model.create(spec);
    const script = await Model.load(ts);
    await timePgd(builtin, x, y, 2);
    await timePgd(script, x, y, 2);
    const py = { reference: Infinity, lean: Infinity };
    let tBuiltin = Infinity, tScript = Infinity, tCl = Infinity;
    await timePgd(builtin, x, y, 2, true);
    for (let r = 0; r < reps; r++) {
      py.reference = Math.min(py.reference, await server.time('reference'));
      tBuiltin = Math.min(tBuiltin, await timePgd(builtin, x, y));
      py.lean = Math.min(py.lean, await server.time('lean'));
      tScript = Math.min(tScript, await timePgd(script, x, y));
      tCl = Math.min(tCl, await timePgd(builtin, x, y, 20, true));
    }
    server.close();
    const sps = (t: number): string => (batch / t).toFixed(1).padStart(8);
    rows.push(`${arch.padEnd(10)} python reference ${sps(py.reference)} samples/s | python lean ${sps(py.lean)} | ` +
      `FisherLens built-in ${sps(tBuiltin)} (${(tBuiltin / py.reference).toFixed(2)}× ref time, ${(tBuiltin / py.lean).toFixed(2)}× lean) | ` +
      `FisherLens TorchScript ${sps(tScript)} (${(tScript / py.reference).toFixed(2)}× ref, ${(tScript / py.lean).toFixed(2)}× lean) | ` +
      `FisherLens built-in channels-last ${sps(tCl)} (${(tCl / py.reference).toFixed(2)}× ref, ${(tCl / py.lean).toFixed(2)}× lean)`);
    console.log(rows[rows.length - 1]);
    builtin.dispose(); script.dispose(); x.dispose(); y.dispose();
  }
  fs.rmSync(dir, { recursive: true, force: true });
  console.log('PGD-20, batch 128, 2 threads; ratios are FisherLens time / Python time (target ≤ 0.7 vs the reference loop)');
}

if (require.main === module) main().catch((e) => { console.error(e); process.exitCode = 1; });
