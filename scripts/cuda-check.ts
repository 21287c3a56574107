/**
 * CUDA checks, run on a GPU machine (scripts/gpu-check.sh builds the addon there against a CUDA
 * LibTorch first). Each check compares the CUDA result with the same computation on the CPU and
 * prints one line; the script exits non-zero when any check fails. Prints timings for the record.
 */
import * as os from 'os';
import * as path from 'path';
import { backend } from '../lib/binding/backend';
import { Model } from '../lib/science/model';
import { Tensor } from '../lib/binding/tensor';
import { fisherExact, fisherPower, fisherVectorProduct } from '../lib/science/fisher';
import { attack } from '../lib/science/attacks';
import { train } from '../lib/science/train';
import { synthetic } from '../lib/science/data';

let failed = 0;
function check(name: string, ok: boolean, detail: string): void {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}`);
  if (!ok) failed++;
}
function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1e-12, Math.abs(b[i])));
  return m;
}
function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
async function timeMs(fn: () => Promise<unknown>, reps = 5): Promise<number> {
  await fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return t.sort((a, b) => a - b)[Math.floor(reps / 2)];
}

async function main(): Promise<void> {
  const b = backend();
  console.log(JSON.stringify(b));
  check('backend sees CUDA', b.cuda && b.cudaDeviceCount >= 1, `cuda=${b.cuda} devices=${b.cudaDeviceCount} torch=${b.torchVersion}`);
  if (!b.cuda) throw new Error('no CUDA: nothing more to check');

  const host = Float32Array.from({ length: 4 * 3 * 32 * 32 }, (_, i) => (Math.sin(i) + 1) / 2);
  const xc = Tensor.from(host, [4, 3, 32, 32]);
  const xg = xc.to('cuda');
  check('tensor cpu → cuda → cpu', xg.device === 'cuda:0' && maxAbs(xg.to('cpu').toArray() as Float32Array, host) === 0, `device ${xg.device}`);

  for (const spec of [{ arch: 'small-cnn', inChannels: 3, inputSize: 32 }, { arch: 'resnet20', inChannels: 3, inputSize: 32 }]) {
    const m = Model.create(spec);
    const zc = (await m.forward(xc)).toArray() as Float32Array;
    const fc = await fisherExact(m, xc, { eigvec: true });
    await m.to('cuda');
    const zg = (await m.forward(xg)).toArray() as Float32Array;
    check(`${spec.arch} logits cuda vs cpu`, maxAbs(zg, zc) < 1e-4, `max abs diff ${maxAbs(zg, zc).toExponential(2)}`);
    const fg = await fisherExact(m, xg, { eigvec: true });
    check(`${spec.arch} exact Fisher λ_max cuda vs cpu`, maxRel(fg.lambdaMax, fc.lambdaMax) < 1e-3,
      `max rel diff ${maxRel(fg.lambdaMax, fc.lambdaMax).toExponential(2)} (eigvec on ${fg.eigvec?.device})`);
    const pw = await fisherPower(m, xg, { tol: 1e-6, maxIter: 200 });
    const pl = pw.lambdaMax;
    check(`${spec.arch} power iteration on cuda vs exact`, maxRel(pl, fg.lambdaMax) < 1e-3, `max rel diff ${maxRel(pl, fg.lambdaMax).toExponential(2)}`);
    // the linearised engine (models/linear_tape) against autograd on the GPU, and G v cuda vs cpu
    const fa = await fisherExact(m, xg, { autograd: true });
    check(`${spec.arch} exact on cuda: linear engine vs autograd`, fg.engine === 'linear' && fa.engine === 'autograd' && maxRel(fg.lambdaMax, fa.lambdaMax) < 1e-4,
      `engines ${fg.engine}/${fa.engine}, max rel diff ${maxRel(fg.lambdaMax, fa.lambdaMax).toExponential(2)}`);
    const dir = Tensor.from(Float64Array.from({ length: host.length }, (_, i) => Math.cos(0.37 * i)), [4, 3, 32, 32]);
    const gvg = (await fisherVectorProduct(m, xg, dir.to('cuda'))).toArray() as Float64Array;
    await m.to('cpu');
    const gvc = (await fisherVectorProduct(m, xc, dir)).toArray() as Float64Array;
    const gs = Math.max(...Array.from(gvc, Math.abs));
    check(`${spec.arch} Fisher-vector product cuda vs cpu (linear engine)`, maxAbs(gvg, gvc) <= 1e-3 * gs, `max abs diff ${maxAbs(gvg, gvc).toExponential(2)} (scale ${gs.toExponential(2)})`);
    m.dispose();
  }

  // PGD without random start: the same sign steps on both devices
  const m = Model.create({ arch: 'small-cnn', inChannels: 3, inputSize: 32 });
  const y = Tensor.from(BigInt64Array.from([0n, 1n, 2n, 3n]), [4]);
  const ac = await attack(m, xc, y, { kind: 'pgd', epsilon: 0.031, stepSize: 0.003, steps: 10, randomStart: false });
  await m.to('cuda');
  const ag = await attack(m, xg, y.to('cuda'), { kind: 'pgd', epsilon: 0.031, stepSize: 0.003, steps: 10, randomStart: false });
  const da = maxAbs(ag.xAdv.to('cpu').toArray() as Float32Array, ac.xAdv.toArray() as Float32Array);
  check('PGD-10 x_adv cuda vs cpu', da <= 0.031 * 2 + 1e-6 && ag.xAdv.device === 'cuda:0', `max abs diff ${da.toExponential(2)} on ${ag.xAdv.device}`);

  // Training on CUDA against the same training on the CPU (same seed, same batches): natural
  // training of an MLP (no randomness beyond the batch order) must give the same losses; TRADES
  // (random start of its inner attack drawn on each device) the same losses within 2 %
  const dataC = await synthetic({ kind: 'gaussian', n: 512, numClasses: 10, channels: 3, size: 32, seed: 1 });
  const dataG = await dataC.to('cuda');
  const runTrain = async (spec: object, method: 'natural' | 'trades', device: 'cpu' | 'cuda') => {
    const mm = Model.create(spec as never);
    const init = path.join(os.tmpdir(), `fl-cuda-init-${method}.ckpt`);
    if (device === 'cpu') await mm.save(init); else { await mm.loadState(init); await mm.to('cuda'); }
    const res = await train(mm, device === 'cpu' ? dataC : dataG, {
      method, epochs: 3, batchSize: 128, seed: 0, attack: { epsilon: 0.031, stepSize: 0.007, steps: 3, beta: 6 },
    });
    return { losses: res.history.map((e) => e.trainLoss), device: mm.device };
  };
  for (const [spec, method, tol] of [[{ arch: 'mlp', inChannels: 3, inputSize: 32 }, 'natural', 1e-4], [{ arch: 'small-cnn', inChannels: 3, inputSize: 32 }, 'trades', 2e-2]] as const) {
    const c = await runTrain(spec, method, 'cpu');
    const g = await runTrain(spec, method, 'cuda');
    const rel = Math.max(...g.losses.map((l, i) => Math.abs(l - c.losses[i]) / Math.abs(c.losses[i])));
    check(`${method} training (${spec.arch}) on cuda vs cpu`, g.device === 'cuda:0' && g.losses.every(Number.isFinite) && rel <= tol,
      `epoch losses cuda ${g.losses.map((l) => l.toFixed(4)).join(' ')} vs cpu ${c.losses.map((l) => l.toFixed(4)).join(' ')} (max rel diff ${rel.toExponential(1)}), model on ${g.device}`);
  }

  // Timings for the record (CUDA vs the same on CPU in this machine)
  const big = Tensor.from(Float32Array.from({ length: 128 * 3 * 32 * 32 }, (_, i) => (Math.cos(i) + 1) / 2), [128, 3, 32, 32]);
  const r20 = Model.create({ arch: 'resnet20', inChannels: 3, inputSize: 32 });
  const cpuMs = await timeMs(() => fisherExact(r20, big), 3);
  await r20.to('cuda');
  const bigG = big.to('cuda');
  const gpuMs = await timeMs(() => fisherExact(r20, bigG), 10);
  const gpuAgMs = await timeMs(() => fisherExact(r20, bigG, { autograd: true }), 10);
  const gpuPow = await timeMs(() => fisherPower(r20, bigG, { tol: 0, maxIter: 20 }), 3);
  const gpuPowAg = await timeMs(() => fisherPower(r20, bigG, { tol: 0, maxIter: 20, autograd: true }), 3);
  console.log(`timing: exact Fisher, resnet20, batch 128: cuda ${gpuMs.toFixed(1)} ms (autograd engine ${gpuAgMs.toFixed(1)} ms), cpu (${b.threads} threads) ${cpuMs.toFixed(1)} ms`);
  console.log(`timing: power iteration (20 it), resnet20, batch 128 on cuda: linear engine ${gpuPow.toFixed(1)} ms, autograd engine ${gpuPowAg.toFixed(1)} ms`);

  console.log(`${failed === 0 ? 'all CUDA checks passed' : `${failed} CUDA check(s) failed`}`);
  process.exitCode = failed === 0 ? 0 : 1;
}

main().catch((e: unknown) => {
  console.error('cuda-check crashed:', e);
  process.exitCode = 2;
});
