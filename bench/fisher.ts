/**
 * bench/fisher: FisherLens against Python PyTorch on the same LibTorch, side by side in one run.
 * Python (bench/python/fisher_bench.py) is written the way a researcher would: a loop over the C
 * classes with torch.autograd.grad for the exact Fisher, double-backward JVPs for power iteration.
 * Both sides: the same architecture, batch 128, the same thread count, best of `repeats` runs
 * (the machine is shared, so the best run is the least disturbed one). Prints ms per batch,
 * samples/s, the ratio FisherLens / Python, and the achieved FLOP/s against the measured
 * matrix-product peak. Never passes or fails on time.
 *
 *   node dist/bench/fisher.js [--arch small-cnn,resnet20] [--batch 128] [--repeats 3] [--power-iters 20]
 */
import * as path from 'path';
import { spawnSync } from 'child_process';
import { Model, Tensor, backend, setThreads } from '../lib';
import { fisherExact, fisherPower, FisherSpeedOptions } from '../lib/fisher';

const ROOT = path.resolve(__dirname, '..', '..');
const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

interface PyOut { forwardFlopsPerSample: number; forwardMs: [number, number]; exactMs?: [number, number]; powerMs?: [number, number]; matmulPeakGflops?: number; threads: number }

function python(args: string[]): PyOut {
  const r = spawnSync(PY, [path.join(ROOT, 'bench', 'python', 'fisher_bench.py'), ...args], { encoding: 'utf8', timeout: 1_800_000 });
  if (r.status !== 0) throw new Error(`python bench failed: ${r.stderr || r.error}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as PyOut;
}

async function best(fn: () => Promise<unknown>, repeats: number): Promise<number> {
  await fn();
  let b = Infinity;
  for (let i = 0; i < repeats; i++) {
    const t = process.hrtime.bigint();
    await fn();
    b = Math.min(b, Number(process.hrtime.bigint() - t) / 1e6);
  }
  return b;
}

const CONFIGS: Record<string, { inChannels: number; inputSize: number }> = {
  'small-cnn': { inChannels: 1, inputSize: 28 },
  resnet20: { inChannels: 3, inputSize: 32 },
};

export async function main(): Promise<void> {
  const threads = Number(arg('threads', '2'));
  setThreads(threads);
  const batch = Number(arg('batch', '128'));
  const repeats = Number(arg('repeats', '3'));
  const iters = Number(arg('power-iters', '20'));
  const archs = arg('arch', 'small-cnn,resnet20').split(',');
  const C = 10;
  console.log(`LibTorch ${backend().torchVersion}, ${threads} threads, batch ${batch}, best of ${repeats}; power iteration: ${iters} iterations`);
  let peak = NaN;
  const rows: string[] = [];
  const line = (name: string, ms: number, pyMs: number, flops: number) => {
    const gf = flops / (ms / 1000) / 1e9;
    rows.push(`${name.padEnd(34)} ${ms.toFixed(1).padStart(9)} ${(batch * 1000 / ms).toFixed(1).padStart(9)} ${(ms / pyMs).toFixed(2).padStart(6)} ${gf.toFixed(1).padStart(8)} ${(100 * gf / peak).toFixed(1).padStart(6)}%`);
  };
  for (const arch of archs) {
    const cfg = CONFIGS[arch];
    if (!cfg) throw new Error(`unknown arch ${arch}; expected ${Object.keys(CONFIGS).join(', ')}`);
    const shape = [cfg.inChannels, cfg.inputSize, cfg.inputSize];
    const py = python(['--arch', arch, '--input', shape.join(','), '--batch', String(batch), '--repeats', String(repeats),
      '--power-iters', String(iters), '--threads', String(threads), ...(Number.isNaN(peak) ? ['--peak'] : [])]);
    if (py.matmulPeakGflops) peak = py.matmulPeakGflops;
    const model = Model.create({ arch, ...cfg, numClasses: C });
    const n = batch * shape.reduce((a, b) => a * b, 1);
    const x = Tensor.from(Float32Array.from({ length: n }, () => Math.random()), [batch, ...shape]);
    const F = py.forwardFlopsPerSample * batch;
    // FLOPs as executed: an input-gradient backward ≈ one forward; a double-backward JVP ≈ one forward
    const flopsPyExact = F * (1 + C), flopsFlExact = F * (1 + (C - 1));
    const flopsPower = F * (1 + 1 + 1 + 2 * iters);  // forward, graph of Jᵀu, start vector, JVP + VJP per iteration
    rows.push(`\n${arch} [${shape.join('×')}], forward ${(py.forwardFlopsPerSample / 1e6).toFixed(1)} MFLOP/sample; matmul peak ${peak.toFixed(1)} GFLOP/s`);
    rows.push(`${'method'.padEnd(34)} ${'ms/batch'.padStart(9)} ${'samples/s'.padStart(9)} ${'ratio'.padStart(6)} ${'GFLOP/s'.padStart(8)} ${'%peak'.padStart(7)}`);
    const pyExact = py.exactMs![0], pyPower = py.powerMs![0];
    line('python exact (C autograd.grad)', pyExact, pyExact, flopsPyExact);
    const variants: [string, FisherSpeedOptions][] = [
      ['fisherlens exact', {}],
      ['fisherlens exact channels-last', { channelsLast: true }],
      ['fisherlens exact 2 streams', { streams: 2 }],
      ['fisherlens exact channels-last+2 streams', { channelsLast: true, streams: 2 }],
    ];
    for (const [name, o] of variants) {
      const ms = await best(async () => { const r = await fisherExact(model, x, o); r.spectrum.dispose(); r.probs.dispose(); }, repeats);
      line(name, ms, pyExact, flopsFlExact);
    }
    line(`python power (${iters} it, double backward)`, pyPower, pyPower, flopsPower);
    for (const [name, o] of [['fisherlens power', {}], ['fisherlens power channels-last', { channelsLast: true }]] as [string, FisherSpeedOptions][]) {
      const ms = await best(async () => { const r = await fisherPower(model, x, { tol: 0, maxIter: iters, ...o }); r.eigvec.dispose(); }, repeats);
      line(name, ms, pyPower, flopsPower);
    }
    x.dispose();
    model.dispose();
    console.log(rows.splice(0).join('\n'));
  }
  console.log('\nratio = FisherLens ms / Python ms (targets: exact ≤ 0.5, power ≤ 0.8). GFLOP/s counts conv/linear FLOPs as executed.');
}

if (require.main === module) main().catch((e: unknown) => { console.error(e); process.exitCode = 1; });
