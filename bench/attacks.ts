/**
 * PGD-20 (L∞, ε 0.031, step 0.003, no random start: TRADES' pgd_whitebox) on one batch of 128,
 * small-cnn (1×28×28), resnet20 (3×32×32), a tanh / average-pool LeNet and an MLP (BENCH_ARCHS
 * picks some): FisherLens vs the same loop in Python/PyTorch on
 * the same LibTorch (bench/python/attacks_bench.py), side by side, 2 threads each. Python runs
 * TRADES' loop as written ("reference": weight gradients computed by loss.backward()) and a lean
 * variant (input gradient only). FisherLens runs the built-in architecture and the very
 * TorchScript module Python exported, each on the three input-gradient engines (auto, linear,
 * autograd: lib/binding/backend.ts setGradientEngine), and the built-in with channelsLast: true. Prints
 * samples/s and time ratios (target ≤ 0.7 × Python's reference) and what auto chose. The runs are
 * interleaved BENCH_REPS times (default 5; the machine is shared) and the median of each is kept.
 * BENCH_ROWS=defaults times only the default row (built-in, auto) beside Python.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { GradientEngine, Model, ModelSpec, Tensor, setGradientEngine, setThreads } from '../lib';
import { attack } from '../lib/science/attacks';
import { PyServer, median, passiveOpenMp, torchPairing } from './pyserver';


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
  const reps = Number(process.env.BENCH_REPS ?? 5);
  const batch = 128;
  setThreads(2);
  console.log(torchPairing());
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-bench-attacks-'));
  const rows: string[] = [];
  const all: [string, ModelSpec, number[]][] = [
    ['small-cnn', { arch: 'small-cnn' }, [1, 28, 28]],
    ['resnet20', { arch: 'resnet20', inChannels: 3, inputSize: 32 }, [3, 32, 32]],
    // smooth activations and average pools (autograd's backward differs most here), and an MLP
    // (small kernels: the tape's recording weighs most)
    ['tanh-avg-cnn', { arch: 'lenet', activation: 'tanh', pool: 'avg' }, [1, 28, 28]],
    ['mlp', { arch: 'mlp' }, [1, 28, 28]],
  ];
  const archs = all.filter(([a]) => !process.env.BENCH_ARCHS || process.env.BENCH_ARCHS.split(',').includes(a));
  for (const [arch, spec, shape] of archs) {
    const ts = path.join(dir, `${arch}.pt`);
    const server = new PyServer('attacks_bench.py', [arch === 'small-cnn' || arch === 'resnet20' ? arch : JSON.stringify(spec), String(batch), ts]);
    await server.ready();
    const numel = shape.reduce((a, b) => a * b, 1);
    const x = Tensor.from(Float32Array.from({ length: batch * numel }, (_, i) => ((i * 7919) % 1000) / 1000), [batch, ...shape]);
    const y = Tensor.from(BigInt64Array.from({ length: batch }, (_, i) => BigInt(i % 10)), [batch]);
    const builtin = Model.create(spec);
    const script = await Model.load(ts);
    // FisherLens rows: the built-in and the TorchScript module Python exported, on each input-gradient
    // engine (lib/binding/backend.ts setGradientEngine; auto measures both on its first steps and keeps the
    // faster, so its row includes that), and the built-in channels-last
    // BENCH_ROWS=defaults: the default row only (built-in, auto) beside Python, for loaded machines
    const fl: [string, Model, GradientEngine, boolean][] = ([
      ['built-in, auto', builtin, 'auto', false], ['built-in, linear', builtin, 'linear', false], ['built-in, autograd', builtin, 'autograd', false],
      ['TorchScript, auto', script, 'auto', false], ['TorchScript, linear', script, 'linear', false], ['TorchScript, autograd', script, 'autograd', false],
      ['built-in channels-last, auto', builtin, 'auto', true],
    ] as [string, Model, GradientEngine, boolean][]).filter(([name]) => process.env.BENCH_ROWS !== 'defaults' || name === 'built-in, auto');
    const run = async ([, m, engine, cl]: [string, Model, GradientEngine, boolean], steps = 20): Promise<number> => {
      setGradientEngine(engine);
      try {
        return await timePgd(m, x, y, steps, cl);
      } finally {
        setGradientEngine('auto');
      }
    };
    for (const r of fl) await run(r, 2);  // warm-up (and the auto rows' measurement for this shape)
    const pyRuns = { reference: [] as number[], lean: [] as number[] };
    const flRuns: number[][] = fl.map(() => []);
    for (let r = 0; r < reps; r++) {
      pyRuns.reference.push(await server.time('reference'));
      pyRuns.lean.push(await server.time('lean'));
      for (let i = 0; i < fl.length; i++) flRuns[i].push(await run(fl[i]));
    }
    server.close();
    const py = { reference: median(pyRuns.reference), lean: median(pyRuns.lean) };
    const med = flRuns.map(median);
    const sps = (t: number): string => (batch / t).toFixed(1).padStart(9);
    rows.push(`\n${arch}: ${'samples/s'.padStart(36)} ${'× ref'.padStart(6)} ${'× lean'.padStart(6)}`);
    rows.push(`${'python reference (TRADES pgd_whitebox)'.padEnd(38)}${sps(py.reference)}   1.00 ${(py.reference / py.lean).toFixed(2).padStart(6)}`);
    rows.push(`${'python lean (input gradient only)'.padEnd(38)}${sps(py.lean)} ${(py.lean / py.reference).toFixed(2).padStart(6)}   1.00`);
    fl.forEach(([name], i) => rows.push(`${('FisherLens ' + name).padEnd(38)}${sps(med[i])} ${(med[i] / py.reference).toFixed(2).padStart(6)} ${(med[i] / py.lean).toFixed(2).padStart(6)}`));
    const choice = (m: Model) => m.gradientChoices.filter((c) => c.shape[0] === batch)
      .map((c) => `${c.engine} (linear ${c.linearMs.toFixed(1)} ms, autograd ${c.autogradMs.toFixed(1)} ms per gradient)`).join('; ');
    rows.push(`auto chose: built-in ${choice(builtin)}; TorchScript ${choice(script)}`);
    console.log(rows.slice(-fl.length - 4).join('\n'));
    builtin.dispose(); script.dispose(); x.dispose(); y.dispose();
  }
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(`\nPGD-20, batch 128, 2 threads, median of ${reps} interleaved runs (BENCH_REPS); × = time / Python time (target ≤ 0.7 vs the reference loop)`);
}

if (require.main === module) main().catch((e) => { console.error(e); process.exitCode = 1; });
