/**
 * What test/package.test.ts (and test/slow/package-cuda.ts) run inside an installed fisherlens
 * package, in a child process with the user's environment:
 *   node package-check.js <package folder> <fisher fixture folder> <PGD reference folder>
 * Prints one JSON object (PackageCheck): the backend loaded; a small-cnn's logits, exact Fisher
 * and FGSM on seeded weights (for a comparison with the development build of the same LibTorch);
 * the Fisher fixture's float32 TorchScript model's logits and exact Fisher (for the Python float64
 * reference, scripts/reference/fisher_ref.py); PGD-20 L∞ without random start on the PGD
 * reference's model (scripts/reference/attacks_pgd.py) and one TRADES step on it.
 * Only the package given is loaded: nothing here imports this checkout's lib/.
 */
import * as path from 'path';

/** The JSON this script prints. */
export interface PackageCheck {
  variant: string;
  libtorch: { path: string; version: string; cuda: string | null };
  addonPath: string;
  cuda: boolean;
  cudaDeviceCount: number;
  /** small-cnn, seed 7, 4 inputs [4, 1, 28, 28]: logits [4·10], λ_max [4], trace [4], FGSM x_adv [4·784]. */
  seeded: { logits: number[]; lambdaMax: number[]; trace: number[]; xAdv: number[] };
  /** Fisher fixture (tiny32.pt, the first n of x.npy): logits [n·10], λ_max, trace, ‖G‖_F [n]. */
  fisher: { n: number; logits: number[]; lambdaMax: number[]; trace: number[]; frobenius: number[] };
  /** PGD reference model and images: x_adv [n·784], clean predictions and success flags [n]. */
  pgd: { n: number; xAdv: number[]; clean: number[]; success: number[] };
  /** One TRADES step on the PGD model's first 64 images: its loss and the largest logit change. */
  trades: { steps: number; trainLoss: number; maxLogitChange: number };
}

const N_FISHER = 24;

function argmax(v: ArrayLike<number>, k: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < v.length / k; i++) {
    let a = 0;
    for (let j = 1; j < k; j++) if (v[i * k + j] > v[i * k + a]) a = j;
    out.push(a);
  }
  return out;
}

async function main(): Promise<void> {
  const [pkg, fixture, pgdDir] = process.argv.slice(2);
  // eslint-disable-next-line @typescript-eslint/no-var-requires, @typescript-eslint/no-explicit-any
  const f = require(path.resolve(pkg)) as any;
  const arr = (t: { toArray(): ArrayLike<number> }): number[] => Array.from(t.toArray());

  // Seeded small-cnn (the same numbers as the development build computes on this LibTorch)
  f.manualSeed(7);
  const m = f.Model.create({ arch: 'small-cnn', inChannels: 1, inputSize: 28, numClasses: 10 });
  const x = f.Tensor.from(Float32Array.from({ length: 4 * 784 }, (_, i) => ((i * 37) % 101) / 100), [4, 1, 28, 28]);
  const y = f.Tensor.from(new BigInt64Array([0n, 1n, 2n, 3n]), [4]);
  const fe = await f.fisherExact(m, x);
  const seeded = {
    logits: arr(await m.forward(x)), lambdaMax: Array.from(fe.lambdaMax as ArrayLike<number>), trace: Array.from(fe.trace as ArrayLike<number>),
    xAdv: arr((await f.attack(m, x, y, { kind: 'fgsm', epsilon: 0.1 })).xAdv),
  };

  // PyTorch's engine for the reference comparisons: autograd, as the Python side computes
  f.setGradientEngine('autograd');
  const fx = (await f.loadNpy(path.join(fixture, 'x.npy'), path.join(fixture, 'y.npy'))).images.slice(0, N_FISHER);
  const tiny = await f.Model.load(path.join(fixture, 'tiny32.pt'));
  const tf = await f.fisherExact(tiny, fx);
  const fisher = {
    n: N_FISHER, logits: arr(await tiny.forward(fx)),
    lambdaMax: Array.from(tf.lambdaMax as ArrayLike<number>), trace: Array.from(tf.trace as ArrayLike<number>), frobenius: Array.from(tf.frobenius as ArrayLike<number>),
  };

  const d = await f.loadNpy(path.join(pgdDir, 'x.npy'), path.join(pgdDir, 'y.npy'));
  const pm = await f.Model.load(path.join(pgdDir, 'model.pt'));
  const n = d.images.shape[0] as number;
  const clean = argmax(arr(await pm.forward(d.images)), 10);
  const r = await f.attack(pm, d.images, d.labels, { kind: 'pgd', norm: 'linf', epsilon: 0.1, stepSize: 0.01, steps: 20, randomStart: false });
  const pgd = { n, xAdv: arr(r.xAdv), clean, success: Array.from(r.success as ArrayLike<number>) };

  const small = new f.Dataset(d.images.slice(0, 64), d.labels.slice(0, 64), { numClasses: 10 });
  const before = arr(await pm.forward(small.images));
  let steps = 0;
  const tr = await f.train(pm, small, {
    method: 'trades', epochs: 1, batchSize: 64, optimizer: { type: 'sgd', lr: 0.05 },
    attack: { epsilon: 0.1, stepSize: 0.04, steps: 2, beta: 1 }, onEvent: (e: { type: string }) => { if (e.type === 'batch') steps++; },
  });
  await pm.setTraining(false);
  const after = arr(await pm.forward(small.images));
  const trades = { steps, trainLoss: tr.history[0].trainLoss as number, maxLogitChange: Math.max(...after.map((v, i) => Math.abs(v - before[i]))) };

  const b = f.backend();
  const out: PackageCheck = {
    variant: b.variant, libtorch: b.libtorch, addonPath: b.addonPath, cuda: b.cuda, cudaDeviceCount: b.cudaDeviceCount,
    seeded, fisher, pgd, trades,
  };
  process.stdout.write(JSON.stringify(out));
}

if (require.main === module) {
  main().catch((e: Error) => { process.stderr.write(String((e && e.stack) || e)); process.exit(1); });
}
