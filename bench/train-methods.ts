/**
 * Training cost of the eight methods on small-cnn (1×28×28, batch 128, SGD 0.01 momentum 0.9):
 * FisherLens (one native trainStep op per step) beside the same losses in plain PyTorch on the
 * same LibTorch (bench/python/train_methods_bench.py), interleaved BENCH_REPS times (default 5),
 * CPU seconds of the process per step (process.cpuUsage / time.process_time; the median of the
 * repetitions), BENCH_THREADS threads each (default 1: CPU time is then the work, not the spinning).
 * Inner maximisations: 10 L∞ steps of 0.007 in ε 0.031 (TRADES' settings); Jacobian and
 * fisher-trace with one sample, fisher-lambda with 3 power iterations, and its cost per power
 * iteration from steps with 1 and 5 iterations ((t5 − t1) / 4).
 * Prints per step and per Fashion-MNIST epoch (469 steps of 128), the ratio to TRADES (targets: MART
 * and FIRE ≤ 1.10×) and to natural (targets: the penalties ≤ 3×), and the FLOP model beside them:
 * F = forward FLOPs per sample (convolutions + linear layers, bench/python/fisher_bench.py).
 * Usage: npx tsc -p tsconfig.json && node dist/bench/train-methods.js
 */
import { Model, Tensor, setThreads } from '../lib';
import { addon } from '../lib/binding/native';
import { modelHandle } from '../lib/science/model';
import { optimizerOptions, trainStepOptions } from '../lib/science/options';
import { PyServer, passiveOpenMp } from './pyserver';

const STEPS_PER_EPOCH = Math.ceil(60000 / 128);

/**
 * FLOPs per sample of one step, in units of F (one forward): a forward F, a backward 2F (input
 * and weight gradients); an input gradient alone ≈ F; differentiating a pass recorded with
 * create_graph costs about twice that pass. Inner steps: forward + input gradient = 2F each.
 */
const FLOP_MODEL: Record<string, [number, string]> = {
  natural: [3, 'fwd F + bwd 2F'],
  'pgd-at': [3 + 2 * 10, '10 inner × 2F + 3F'],
  trades: [3 + 1 + 2 * 10 + 3, 'p(x) F + 10 inner × 2F + 2 fwd + 2 bwd = 6F'],
  mart: [1 + 2 * 10 + 6, 'as TRADES'],
  fire: [1 + 2 * 10 + 6, 'as TRADES'],
  jacobian: [3 + 1 + 2 * (1 + 1), 'CE 3F + vjp with graph F + its backward 2·(F + F)'],
  'fisher-trace': [3 + 1 + 2 * (1 + 1), 'as jacobian'],
  'fisher-lambda': [3 + 1 + 3 * 3 + 2 + 2 * (2 + 1), 'start F + 3 × (JVP 2F + VJP F) + quotient JVP with graph 2F + its backward 2·3F'],
};

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export async function main(): Promise<void> {
  passiveOpenMp();
  const reps = Number(process.env.BENCH_REPS ?? 5);
  const threads = Number(process.env.BENCH_THREADS ?? 1);
  const batch = 128;
  setThreads(threads);
  const n = addon();
  const server = new PyServer('train_methods_bench.py', [String(batch), String(threads)]);
  const info = await server.next() as { forwardFlopsPerSample: number };
  const x = Tensor.from(Float32Array.from({ length: batch * 784 }, (_, i) => ((i * 7919) % 1000) / 1000), [batch, 1, 28, 28]);
  const y = Tensor.from(BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % 10)), [batch]);
  const m = Model.create({ arch: 'small-cnn' });
  const opt = await n.createOptimizer(modelHandle(m), optimizerOptions({ type: 'sgd', lr: 0.01, momentum: 0.9 }));
  const fl = async (method: string, powerIters = 3): Promise<number> => {
    const c0 = process.cpuUsage();
    await n.trainStep(modelHandle(m), opt, x.native, y.native, trainStepOptions({ method, lr: 0.01, epsilon: 0.031, stepSize: 0.007, steps: 10, beta: 6, seed: 1, powerIters }));
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 1e6;
  };
  const methods = ['natural', 'trades', 'mart', 'fire', 'jacobian', 'fisher-trace', 'fisher-lambda'];
  for (const k of methods) await fl(k);
  const t: Record<string, { fl: number[]; py: number[] }> = {};
  const rec = (k: string) => (t[k] ??= { fl: [], py: [] });
  for (let r = 0; r < reps; r++) {
    for (const k of methods) {
      rec(k).py.push(await server.time(k === 'fisher-lambda' ? 'fisher-lambda:3' : k));
      rec(k).fl.push(await fl(k));
    }
    for (const it of [1, 5]) {
      rec(`fisher-lambda:${it}`).py.push(await server.time(`fisher-lambda:${it}`));
      rec(`fisher-lambda:${it}`).fl.push(await fl('fisher-lambda', it));
    }
  }
  server.close();
  const med = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, { fl: median(v.fl), py: median(v.py) }]));
  const F = info.forwardFlopsPerSample;
  const ms = (s: number) => (1000 * s).toFixed(1).padStart(7);
  const ep = (s: number) => (s * STEPS_PER_EPOCH).toFixed(1).padStart(6);
  console.log(`small-cnn, batch 128, ${threads} thread(s), CPU seconds, median of ${reps} interleaved repetitions; F = ${(F / 1e6).toFixed(2)} MFLOP per sample forward`);
  console.log(`${'method'.padEnd(14)} ${'FL ms/step'.padStart(10)} ${'Py ms/step'.padStart(10)} ${'FL/Py'.padStart(6)} ${'FL s/epoch'.padStart(10)} ${'Py s/epoch'.padStart(10)} ${'FL ×TRADES'.padStart(10)} ${'FL ×natural'.padStart(11)} ${'FLOP model'.padStart(10)}  (FLOPs per sample)`);
  for (const k of methods) {
    const { fl: a, py: b } = med[k];
    const [units, why] = FLOP_MODEL[k];
    console.log(`${k.padEnd(14)} ${ms(a).padStart(10)} ${ms(b).padStart(10)} ${(a / b).toFixed(2).padStart(6)} ${ep(a).padStart(10)} ${ep(b).padStart(10)} ${(a / med.trades.fl).toFixed(2).padStart(10)} ${(a / med.natural.fl).toFixed(2).padStart(11)} ${`${units}F = ${(units / 3).toFixed(1)}× nat`.padStart(10)}  ${why}`);
  }
  const per = (side: 'fl' | 'py') => (med['fisher-lambda:5'][side] - med['fisher-lambda:1'][side]) / 4;
  console.log(`fisher-lambda per power iteration: FisherLens ${ms(per('fl'))} ms, Python ${ms(per('py'))} ms ((5 iterations − 1) / 4; FLOP model 3F per sample = ${(3 / 3).toFixed(1)}× a natural step)`);
  console.log('targets: MART and FIRE ≤ 1.10 × TRADES; jacobian, fisher-trace, fisher-lambda ≤ 3 × natural (FisherLens)');
  m.dispose(); x.dispose(); y.dispose();
}

if (require.main === module) main().catch((e) => { console.error(e); process.exitCode = 1; });
