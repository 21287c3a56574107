/**
 * One natural step and one TRADES step (10 inner steps, ε 0.031, step 0.007, β 6) on a batch of
 * 128, small-cnn (1×28×28) and resnet20 (3×32×32), SGD (0.01, momentum 0.9, wd 2e-4): FisherLens
 * (one native op per step) vs the same step in Python/PyTorch on the same LibTorch with the TRADES
 * reference's structure (bench/python/train_bench.py), interleaved BENCH_REPS times (default 5;
 * the machine is shared), the median of each kept, 2 threads each. Prints ms per step and the ratio
 * (target ≤ 0.8 × Python's time), also with channelsLast: true (not with BENCH_ROWS=defaults).
 */
import { Model, ModelSpec, Tensor, setThreads } from '../lib';
import { addon } from '../lib/binding/native';
import { modelHandle } from '../lib/science/model';
import { optimizerOptions, trainStepOptions } from '../lib/science/options';
import { PyServer, median, passiveOpenMp, torchPairing } from './pyserver';

export async function main(): Promise<void> {
  passiveOpenMp();
  const reps = Number(process.env.BENCH_REPS ?? 5);
  const batch = 128;
  setThreads(2);
  console.log(torchPairing());
  const n = addon();
  const archs: [string, ModelSpec, number[]][] = [
    ['small-cnn', { arch: 'small-cnn' }, [1, 28, 28]],
    ['resnet20', { arch: 'resnet20', inChannels: 3, inputSize: 32 }, [3, 32, 32]],
  ];
  for (const [arch, spec, shape] of archs) {
    const server = new PyServer('train_bench.py', [arch, String(batch)]);
    await server.ready();
    const numel = shape.reduce((a, b) => a * b, 1);
    const x = Tensor.from(Float32Array.from({ length: batch * numel }, (_, i) => ((i * 7919) % 1000) / 1000), [batch, ...shape]);
    const y = Tensor.from(BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % 10)), [batch]);
    const m = Model.create(spec);
    const opt = await n.createOptimizer(modelHandle(m), optimizerOptions({ type: 'sgd', lr: 0.01, momentum: 0.9, weightDecay: 2e-4 }));
    const step = async (method: string, steps = 10, channelsLast = false): Promise<number> => {
      const t0 = process.hrtime.bigint();
      await n.trainStep(modelHandle(m), opt, x.native, y.native, trainStepOptions({ method, lr: 0.01, epsilon: 0.031, stepSize: 0.007, steps, beta: 6, seed: 1, channelsLast }));
      return Number(process.hrtime.bigint() - t0) / 1e9;
    };
    await step('natural');
    await step('trades', 1);
    await step('natural', 10, true);
    const runs: Record<'pyNatural' | 'pyTrades' | 'flNatural' | 'flTrades' | 'clNatural' | 'clTrades', number[]> =
      { pyNatural: [], pyTrades: [], flNatural: [], flTrades: [], clNatural: [], clTrades: [] };
    for (let r = 0; r < reps; r++) {
      runs.pyNatural.push(await server.time('natural'));
      runs.flNatural.push(await step('natural'));
      runs.pyTrades.push(await server.time('trades'));
      runs.flTrades.push(await step('trades'));
      if (process.env.BENCH_ROWS === 'defaults') continue;  // the default (NCHW) rows only
      runs.clNatural.push(await step('natural', 10, true));
      runs.clTrades.push(await step('trades', 10, true));
    }
    server.close();
    const med = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, median(v)])) as Record<keyof typeof runs, number>;
    const ms = (s: number): string => (1000 * s).toFixed(1).padStart(8);
    console.log(`${arch.padEnd(10)} natural step: python ${ms(med.pyNatural)} ms, FisherLens ${ms(med.flNatural)} ms (${(med.flNatural / med.pyNatural).toFixed(2)}×) | ` +
      `TRADES step (10 inner): python ${ms(med.pyTrades)} ms, FisherLens ${ms(med.flTrades)} ms (${(med.flTrades / med.pyTrades).toFixed(2)}×)` +
      (runs.clNatural.length === 0 ? '' : ' | ' + `channels-last: natural ${ms(med.clNatural)} ms (${(med.clNatural / med.pyNatural).toFixed(2)}×), TRADES ${ms(med.clTrades)} ms (${(med.clTrades / med.pyTrades).toFixed(2)}×)`));
    m.dispose(); x.dispose(); y.dispose();
  }
  console.log(`batch 128, 2 threads, median of ${reps} interleaved runs (BENCH_REPS); ratio = FisherLens time / Python time (target ≤ 0.8)`);
}

if (require.main === module) main().catch((e) => { console.error(e); process.exitCode = 1; });
