/**
 * torch.export archives (.pt2) against PyTorch 2.x (scripts/reference/export_pt2.py, run by the
 * torch 2.13 venv of scripts/torch-env.sh at test time, never committed): the reference
 * architectures exported with a dynamic batch load with Python's logits, input gradients, exact
 * Fisher (a float64 reference), one SGD step in train mode (batch-norm batch statistics and
 * running averages) and L2 PGD; a fixed-batch export runs any batch in eval mode and refuses to
 * train on another; checkpoints and exportWeights carry the program's state; archives with a
 * custom op, an ATen op outside the allowlist, another archive_version or pickled weights are
 * ERR_FORMAT naming it.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { Model, Tensor, FisherLensError, fisherExact, fisherPower, attack, backend, fashionMnist } from '../lib';
import { addon } from '../lib/binding/native';
import { modelHandle } from '../lib/science/model';
import { optimizerOptions, trainStepOptions } from '../lib/science/options';
import { maxAbsDiff, npyTensor, readNpy } from './fisher-fixtures';
import { ROOT, pt2Exporters, pt2Fixtures } from './helpers/weights-fixtures';

const pythons = pt2Exporters();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-pt2-'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));
const fixtures = pt2Fixtures;

async function run(m: Model, x: Tensor): Promise<Float32Array> {
  const z = await m.forward(x);
  try {
    return z.toArray() as Float32Array;
  } finally {
    z.dispose();
  }
}

/** ‖a − b‖ / ‖b‖ */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

// Python's torch and this addon run the same ATen kernels in float32 on the same weights; what
// differs is the order of float32 sums (BLAS blocking, oneDNN or not, thread counts, LibTorch
// 1.13 against 2.13): a difference of ~1e-7 relative per layer that a 20-layer net grows to ~1e-6.
// 1e-5 (relative to the largest logit, at least 1) holds that with room for other CPUs, and any
// wrong weight, op argument or mode moves logits by > 1e-2.
const LOGIT_TOL = 1e-5;

if (pythons.size === 0) test.skip('.pt2 vs PyTorch 2.x: no torch 2.x venv (bash scripts/torch-env.sh 2.13-cpu makes it)', () => {});
for (const [label, py] of pythons) {
  const archs = ['mlp', 'small-cnn', 'resnet20'];

  for (const arch of archs) {
    test(`${label}: ${arch}.pt2 (dynamic batch): logits and input gradients equal PyTorch's`, async (t) => {
      const dir = fixtures(label, py);
      const m = await Model.load(path.join(dir, `${arch}.pt2`));
      t.is(m.kind, 'exported');
      t.is(m.spec.arch, 'exported');
      const x = npyTensor(path.join(dir, `${arch}.x.npy`));
      const want = readNpy(path.join(dir, `${arch}.logits.npy`)).data as Float32Array;
      const got = await run(m, x);
      const scale = Math.max(1, ...Array.from(want, Math.abs));
      t.true(maxAbsDiff(got, want) <= LOGIT_TOL * scale, `max |Δlogit| ${maxAbsDiff(got, want)}`);
      // any batch: the dynamic export runs one sample as well
      const one = await run(m, x.slice(0, 1));
      t.true(maxAbsDiff(one, want.subarray(0, want.length / 6)) <= LOGIT_TOL * scale);
      // ∇ₓ of the mean cross-entropy: the dispatcher's autograd kernels recorded every op
      const y = readNpy(path.join(dir, `${arch}.y.npy`));
      const yt = Tensor.from(BigInt64Array.from(y.data as BigInt64Array), y.shape);
      const r = await attack(m, x, yt, { kind: 'fgsm', norm: 'l2', epsilon: 1 });
      // FGSM-L2 moves each sample by ε·g/‖g‖, then clamps to the box [0, 1]: on the pixels the box
      // leaves alone, (x_adv − x)/ε is the unit gradient direction. Compared with Python's g/‖g‖
      // there; float32 rounding of x_adv − x (ulp 6e-8 against steps of ~1e-2) is ~1e-5 relative.
      const g = readNpy(path.join(dir, `${arch}.grad.npy`)).data as Float32Array;
      const xa = r.xAdv.toArray() as Float32Array, x0 = x.toArray() as Float32Array;
      const d = xa.length / 6;
      for (let i = 0; i < 6; i++) {
        const gi = g.subarray(i * d, (i + 1) * d);
        const gn = Math.hypot(...gi);
        const got: number[] = [], want: number[] = [];
        for (let k = i * d; k < (i + 1) * d; k++) {
          if (xa[k] <= 0 || xa[k] >= 1) continue;
          got.push(xa[k] - x0[k]);
          want.push(g[k] / gn);
        }
        t.true(got.length > d / 2, `sample ${i}: most pixels inside the box`);
        t.true(relErr(got, want) <= 1e-3, `sample ${i}: gradient direction, relative error ${relErr(got, want)}`);
      }
      r.xAdv.dispose();
      x.dispose();
      yt.dispose();
      m.dispose();
    });
  }

  test(`${label}: the other reference architectures load with PyTorch's logits and lower onto the linear engine`, async (t) => {
    const dir = fixtures(label, py);
    const more = (JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as { files: { more: string[] } }).files.more;
    t.is(more.length, 5);
    for (const arch of more) {
      const m = await Model.load(path.join(dir, 'more', `${arch}.pt2`));
      const x = npyTensor(path.join(dir, 'more', `${arch}.x.npy`));
      const want = readNpy(path.join(dir, 'more', `${arch}.logits.npy`)).data as Float32Array;
      const got = await run(m, x);
      t.true(maxAbsDiff(got, want) <= LOGIT_TOL * Math.max(1, ...Array.from(want, Math.abs)), `${arch}: max |Δlogit| ${maxAbsDiff(got, want)}`);
      const p = await fisherPower(m, x.slice(0, 1), { tol: 0, maxIter: 1 });
      t.is(p.engine, 'linear', `${arch}: ${p.engineReason}`);
      p.eigvec.dispose();
      x.dispose();
      m.dispose();
    }
  });

  test(`${label}: exact Fisher of .pt2 programs runs on the linear engine and equals a float64 reference`, async (t) => {
    const dir = fixtures(label, py);
    // resnet20 here is a residual net with batch norm, GELU, average pooling and elementwise adds
    for (const arch of ['mlp', 'small-cnn', 'resnet20']) {
      const m = await Model.load(path.join(dir, `${arch}.pt2`));
      const x = npyTensor(path.join(dir, `${arch}.x.npy`)).slice(0, 2);
      const ref = JSON.parse(fs.readFileSync(path.join(dir, `${arch}.fisher.json`), 'utf8')) as Record<'lambdaMax' | 'trace' | 'frobenius', number[]>;
      const r = await fisherExact(m, x);
      t.is(r.engine, 'linear', `${arch}: ${r.engineReason}`);
      t.is(r.engineReason, '');
      // float32 Jacobians against float64 ones: ~1e-6 relative; 1e-4 is the Fisher tests' bound
      for (const k of ['lambdaMax', 'trace', 'frobenius'] as const) {
        for (let i = 0; i < 2; i++) t.true(Math.abs(r[k][i] - ref[k][i]) <= 1e-4 * Math.abs(ref[k][i]), `${arch} ${k}[${i}]: ${r[k][i]} vs ${ref[k][i]}`);
      }
      r.spectrum.dispose();
      r.probs.dispose();
      m.dispose();
    }
  });

  test(`${label}: an op the linear engine does not know: Fisher runs on autograd, and engineReason names the op`, async (t) => {
    const dir = fixtures(label, py);
    const m = await Model.load(path.join(dir, 'hardswish.pt2'));
    const x = npyTensor(path.join(dir, 'rmsnorm.x.npy'));
    const r = await fisherExact(m, x);
    t.is(r.engine, 'autograd');
    t.regex(r.engineReason, /aten::hardswish/);
    t.true(r.lambdaMax.every((v) => v > 0));
    r.spectrum.dispose();
    r.probs.dispose();
    m.dispose();
  });

  for (const arch of ['mlp', 'resnet20']) {
    test(`${label}: ${arch}.pt2: one SGD step in train mode gives PyTorch's parameters and running statistics`, async (t) => {
      const dir = fixtures(label, py);
      const m = await Model.load(path.join(dir, `${arch}.pt2`));
      const x = npyTensor(path.join(dir, `${arch}.x.npy`));
      const y = readNpy(path.join(dir, `${arch}.y.npy`));
      const yt = Tensor.from(BigInt64Array.from(y.data as BigInt64Array), y.shape);
      const opt = await addon().createOptimizer(modelHandle(m), optimizerOptions({ type: 'sgd', lr: 0.1, momentum: 0 }));
      await addon().trainStep(modelHandle(m), opt, x.native, yt.native, trainStepOptions({ method: 'natural', lr: 0.1, seed: 0 }));
      const state = await m.state();
      const sgdDir = path.join(dir, `${arch}.sgd`);
      const names = fs.readdirSync(sgdDir).map((f) => f.slice(0, -4));
      t.deepEqual([...state.keys()].sort(), [...names].sort(), 'the program holds every parameter and buffer PyTorch has');
      let worst = 0, worstName = '';
      for (const n of names) {
        const want = readNpy(path.join(sgdDir, `${n}.npy`));
        const got = state.get(n);
        t.truthy(got, `${n} is in the model's state`);
        if (!got) continue;
        const e = relErr(got.toNumbers(), Array.from(want.data as ArrayLike<number | bigint>, Number));
        if (e > worst) [worst, worstName] = [e, n];
      }
      // one step from the same weights: float32 rounding of the gradient, ~1e-6 relative
      t.true(worst <= 1e-5, `${worstName}: ‖Δ‖/‖p‖ ${worst}`);
      for (const v of state.values()) v.dispose();
      x.dispose();
      yt.dispose();
      m.dispose();
    });
  }

  test(`${label}: resnet20.pt2: L2 PGD equals PyTorch PGD on the exported program`, async (t) => {
    const dir = fixtures(label, py);
    const m = await Model.load(path.join(dir, 'resnet20.pt2'));
    const x = npyTensor(path.join(dir, 'resnet20.x.npy'));
    const y = readNpy(path.join(dir, 'resnet20.y.npy'));
    const yt = Tensor.from(BigInt64Array.from(y.data as BigInt64Array), y.shape);
    const r = await attack(m, x, yt, { kind: 'pgd', norm: 'l2', epsilon: 1, stepSize: 0.25, steps: 10, randomStart: false });
    const want = readNpy(path.join(dir, 'resnet20.pgd.npy')).data as Float32Array;
    // L2 steps are continuous in the gradient (no sign to flip) and the GELU net is smooth (no
    // ReLU kink or max-pool tie a path could cross by rounding): float32 rounding of ~1e-6 per
    // step over 10 steps stays far below 1e-4
    t.true(maxAbsDiff(r.xAdv.toArray() as Float32Array, want) <= 1e-4, `max |Δx_adv| ${maxAbsDiff(r.xAdv.toArray() as Float32Array, want)}`);
    r.xAdv.dispose();
    x.dispose();
    yt.dispose();
    m.dispose();
  });

  test(`${label}: a fixed-batch export runs any batch in eval mode and refuses to train on another`, async (t) => {
    const dir = fixtures(label, py);
    const m = await Model.load(path.join(dir, 'small-cnn-static.pt2'));
    const x = npyTensor(path.join(dir, 'small-cnn.x.npy'));  // 6 samples; exported for 4
    const want = readNpy(path.join(dir, 'small-cnn.logits.npy')).data as Float32Array;
    const got = await run(m, x);
    t.true(maxAbsDiff(got, want) <= LOGIT_TOL * Math.max(1, ...Array.from(want, Math.abs)));
    // power iteration drops converged samples, so its batches shrink below and between the exported
    // size: λ_max per sample equals the dynamic export's exact value (the power method stops at a
    // relative change of 1e-7, and its Rayleigh quotient converges faster than its vector: 1e-3
    // leaves room for small eigengaps, while a wrong chunk or padding row moves λ by far more)
    const dyn = await Model.load(path.join(dir, 'small-cnn.pt2'));
    const exact = await fisherExact(dyn, x);
    const power = await fisherPower(m, x, { tol: 1e-7, maxIter: 100 });
    for (let i = 0; i < 6; i++) t.true(Math.abs(power.lambdaMax[i] - exact.lambdaMax[i]) <= 1e-3 * exact.lambdaMax[i], `sample ${i}: ${power.lambdaMax[i]} vs ${exact.lambdaMax[i]}`);
    power.eigvec.dispose();
    exact.spectrum.dispose();
    exact.probs.dispose();
    dyn.dispose();
    await m.setTraining(true);
    const e = await t.throwsAsync(run(m, x), { instanceOf: FisherLensError });
    t.is(e?.code, 'ERR_SHAPE');
    t.regex(e!.message, /dynamic_shapes/);
    x.dispose();
    m.dispose();
  });

  test(`${label}: input of the wrong shape is ERR_SHAPE naming expected against got`, async (t) => {
    const dir = fixtures(label, py);
    const m = await Model.load(path.join(dir, 'small-cnn.pt2'));
    const x = Tensor.from(new Float32Array(2 * 3 * 32 * 32), [2, 3, 32, 32]);
    const e = await t.throwsAsync(run(m, x), { instanceOf: FisherLensError });
    t.is(e?.code, 'ERR_SHAPE');
    t.regex(e!.message, /expects input \[B, 1, 28, 28\], got \[2, 3, 32, 32\]/);
    x.dispose();
    m.dispose();
  });

  test(`${label}: checkpoints and exportWeights carry a .pt2 program's state`, async (t) => {
    const dir = fixtures(label, py);
    const src = path.join(tmp, `${label}-moved.pt2`);
    fs.copyFileSync(path.join(dir, 'resnet20.pt2'), src);
    const m = await Model.load(src);
    const x = npyTensor(path.join(dir, 'resnet20.x.npy'));
    const want = await run(m, x);
    const ck = path.join(tmp, `${label}-resnet20.ckpt`);
    await m.save(ck);
    fs.rmSync(src);  // the checkpoint holds the program itself, not only the archive's path
    const back = await Model.loadCheckpoint(ck);
    t.is(back.kind, 'exported');
    t.is(maxAbsDiff(await run(back, x), want), 0);
    // exported weights are the built-in resnet20's state dict (models.py names them alike)
    const w = path.join(tmp, `${label}-resnet20.safetensors`);
    await back.exportWeights(w);
    const spec = (JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as { files: Record<string, { spec: object }> }).files.resnet20.spec;
    const builtin = Model.create(spec as never);
    await builtin.loadWeights(w);
    const zb = await run(builtin, x);
    t.true(maxAbsDiff(zb, want) <= LOGIT_TOL * Math.max(1, ...Array.from(want, Math.abs)));
    x.dispose();
    for (const mm of [m, back, builtin]) mm.dispose();
  });

  test(`${label}: archives FisherLens must not run are ERR_FORMAT naming the reason`, async (t) => {
    const dir = fixtures(label, py);
    const cases: [string, RegExp][] = [
      ['custom-op.pt2', /custom op 'torch\.ops\.fltest\.twice\.default'.*pure ATen ops only/],
      ['sort.pt2', /'torch\.ops\.aten\.sort\.(default|stable)', which is not among the pure ATen ops/],
      ['version99.pt2', /archive_version '99'/],
      ['pickled.pt2', /pickled \(use_pickle\)/],
    ];
    for (const [file, re] of cases) {
      const e = await t.throwsAsync(Model.load(path.join(dir, file)), { instanceOf: FisherLensError }, file);
      t.is(e?.code, 'ERR_FORMAT', file);
      t.regex(e!.message, re, file);
    }
    // through Model.from and a state-dict reader alike
    t.is((await t.throwsAsync(Model.from(path.join(dir, 'custom-op.pt2')), { instanceOf: FisherLensError }))?.code, 'ERR_FORMAT');
    const m = Model.create({ arch: 'mlp' });
    t.regex((await t.throwsAsync(m.loadWeights(path.join(dir, 'mlp.pt2')), { instanceOf: FisherLensError }))!.message, /torch\.export archive/);
    m.dispose();
  });

  test(`${label}: an op this LibTorch lacks is ERR_FORMAT naming it and the exporting torch; where present it runs`, async (t) => {
    const dir = fixtures(label, py);
    const [major, minor] = backend().torchVersion.split('.').map(Number);
    if (major < 2 || (major === 2 && minor < 4)) {
      const e = await t.throwsAsync(Model.load(path.join(dir, 'rmsnorm.pt2')), { instanceOf: FisherLensError });
      t.is(e?.code, 'ERR_FORMAT');
      t.regex(e!.message, /aten\.rms_norm\.default.*lacks.*2\.1[34]/);
    } else {
      const m = await Model.load(path.join(dir, 'rmsnorm.pt2'));
      const want = readNpy(path.join(dir, 'rmsnorm.logits.npy')).data as Float32Array;
      t.true(maxAbsDiff(await run(m, npyTensor(path.join(dir, 'rmsnorm.x.npy'))), want) <= LOGIT_TOL);
      m.dispose();
    }
  });
}

for (const [label, py] of pythons) {
  test(`${label}: the CLI takes a .pt2 wherever it takes a model: info --model describes it, fisher runs it`, async (t) => {
    const dir = fixtures(label, py);
    const cli = path.join(ROOT, 'dist', 'lib', 'cli', 'main.js');
    const file = path.join(dir, 'small-cnn.pt2');
    const info = spawnSync(process.execPath, [cli, 'info', '--model', file], { encoding: 'utf8' });
    t.is(info.status, 0, info.stderr);
    const d = JSON.parse(info.stdout) as Record<string, unknown>;
    t.like(d, { kind: 'pt2', batch: 'dynamic', torchVersion: JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')).torch });
    // fisher on the first 8 Fashion-MNIST test images: the CLI's mean λ_max is the API's on the same images
    const r = spawnSync(process.execPath, [cli, 'fisher', '--model', file, '--data', 'fashion-mnist', '--limit', '8', '--json'], { encoding: 'utf8' });
    if (r.status !== 0 && /fashion-mnist/i.test(r.stderr) && /ERR_IO/.test(r.stderr)) {
      t.pass('no Fashion-MNIST on this machine (dataset-fashion-mnist)');
      return;
    }
    t.is(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { n: number; mean: { lambdaMax: number } };
    t.is(out.n, 8);
    const ds = await fashionMnist({ split: 'test' });
    const b = ds.batch([0, 1, 2, 3, 4, 5, 6, 7]);
    const m = await Model.load(file);
    const f = await fisherExact(m, b.x);
    const mean = Array.from(f.lambdaMax).reduce((a, v) => a + v, 0) / 8;
    // the same op on the same images and weights: only the mean's summation order differs
    t.true(Math.abs(out.mean.lambdaMax - mean) <= 1e-6 * mean, `${out.mean.lambdaMax} vs ${mean}`);
    m.dispose();
  });
}
