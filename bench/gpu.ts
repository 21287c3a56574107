/**
 * The CUDA variant's side-by-side bench (issue #11; run by scripts/cuda-variant.sh on the GPU
 * machine): per architecture (default resnet20 and wrn-34-10, 3×32×32, batch 128), FisherLens
 * against the same workload written in PyTorch (bench/python/gpu_bench.py) on the same device:
 *   exact Fisher (FisherLens: linear engine; Python: a loop over the C classes of autograd.grad),
 *   20 power iterations (Python: double-backward JVPs), PGD-20 (L∞, ε 8/255, step 2/255),
 *   one TRADES step with 10 inner steps (SGD 0.1 / 0.9 / 5e-4, β 6).
 * Interleaved BENCH_REPS times (default 5), median of each kept; ratio = FisherLens / Python.
 * Every FisherLens op here returns host numbers (λ per sample, success flags, the loss), so its
 * time includes the device's completion; the Python side synchronises around each request.
 *
 * Environment: BENCH_DEVICE (default cuda; `cpu` for a smoke run anywhere), BENCH_ARCHS
 * (comma-separated), BENCH_BATCH, BENCH_REPS, BENCH_JSON (a file for the figures as JSON).
 * Without CUDA and without BENCH_DEVICE=cpu it prints why and does nothing.
 */
import * as fs from 'fs';
import { Model, ModelSpec, Tensor, backend } from '../lib';
import { addon } from '../lib/binding/native';
import { modelHandle } from '../lib/science/model';
import { optimizerOptions, trainStepOptions } from '../lib/science/options';
import { fisherExact, fisherPower } from '../lib/science/fisher';
import { attack } from '../lib/science/attacks';
import { PyServer, passiveOpenMp } from './pyserver';
import { median } from '../lib/util/stats';

const WORKLOADS = ['exact', 'power', 'pgd', 'trades'] as const;
type Workload = (typeof WORKLOADS)[number];

export async function main(): Promise<void> {
  passiveOpenMp();
  const device = process.env.BENCH_DEVICE ?? 'cuda';
  const b = backend();
  if (device.startsWith('cuda') && !b.cuda) {
    console.log('bench/gpu: this LibTorch has no CUDA device (BENCH_DEVICE=cpu runs it on the CPU as a smoke run)');
    return;
  }
  const archs = (process.env.BENCH_ARCHS ?? 'resnet20,wrn-34-10').split(',').map((s) => s.trim()).filter(Boolean);
  const batch = Number(process.env.BENCH_BATCH ?? 128);
  const reps = Number(process.env.BENCH_REPS ?? 5);
  const n = addon();
  const figures: Record<string, Record<Workload, { fisherlensMs: number; pythonMs: number; ratio: number }>> = {};
  console.log(`device ${device}, batch ${batch}, ${reps} interleaved repetitions (medians); LibTorch ${b.torchVersion}, variant ${(b as { variant?: string }).variant ?? '?'}`);
  for (const arch of archs) {
    const spec: ModelSpec = { arch, inChannels: 3, inputSize: 32, numClasses: 10 } as ModelSpec;
    const server = new PyServer('gpu_bench.py', [JSON.stringify(spec), String(batch), device]);
    const ready = (await server.next()) as unknown as { gpu?: string; torch?: string };
    const m = Model.create(spec);
    await m.to(device as never);
    const numel = 3 * 32 * 32;
    const x = Tensor.from(Float32Array.from({ length: batch * numel }, (_, i) => ((i * 7919) % 1000) / 1000), [batch, 3, 32, 32]).to(device as never);
    const y = Tensor.from(BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % 10)), [batch]).to(device as never);
    const opt = await n.createOptimizer(modelHandle(m), optimizerOptions({ type: 'sgd', lr: 0.1, momentum: 0.9, weightDecay: 5e-4 }));
    const fl: Record<Workload, () => Promise<unknown>> = {
      exact: () => fisherExact(m, x),
      power: () => fisherPower(m, x, { tol: 0, maxIter: 20 }),
      pgd: () => attack(m, x, y, { kind: 'pgd', epsilon: 8 / 255, stepSize: 2 / 255, steps: 20, randomStart: false }),
      trades: () => n.trainStep(modelHandle(m), opt, x.native, y.native, trainStepOptions({ method: 'trades', lr: 0.1, epsilon: 0.031, stepSize: 0.007, steps: 10, beta: 6, seed: 1 })),
    };
    for (const w of WORKLOADS) await fl[w]();  // warm-up (cuDNN autotuning, caching allocator)
    const t: Record<string, number[]> = {};
    for (let r = 0; r < reps; r++) {
      for (const w of WORKLOADS) {
        (t[`py ${w}`] ??= []).push(1000 * await server.time(w));
        const t0 = process.hrtime.bigint();
        await fl[w]();
        (t[`fl ${w}`] ??= []).push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
    }
    server.close();
    figures[arch] = {} as Record<Workload, { fisherlensMs: number; pythonMs: number; ratio: number }>;
    console.log(`\n${arch} [${batch}×3×32×32] on ${ready.gpu ?? device} (Python torch ${ready.torch})`);
    console.log(`${'workload'.padEnd(34)} ${'FisherLens ms'.padStart(14)} ${'PyTorch ms'.padStart(11)} ${'ratio'.padStart(6)}`);
    const names: Record<Workload, string> = {
      exact: 'exact Fisher', power: 'power iteration, 20 it', pgd: 'PGD-20 (L∞)', trades: 'TRADES step (10 inner)',
    };
    for (const w of WORKLOADS) {
      const f = median(t[`fl ${w}`]), p = median(t[`py ${w}`]);
      figures[arch][w] = { fisherlensMs: f, pythonMs: p, ratio: f / p };
      console.log(`${names[w].padEnd(34)} ${f.toFixed(1).padStart(14)} ${p.toFixed(1).padStart(11)} ${(f / p).toFixed(2).padStart(6)}`);
    }
    m.dispose(); x.dispose(); y.dispose();
  }
  console.log('\nratio = FisherLens time / PyTorch time on the same device (below 1: FisherLens faster)');
  if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify({ device, batch, reps, backend: b, figures }, null, 2) + '\n');
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
