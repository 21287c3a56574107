import test from 'ava';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model, Tensor, setGradientEngine } from '../lib';
import { attack } from '../lib/science/attacks';
import { train } from '../lib/science/train';
import { Dataset } from '../lib/science/data/dataset';
import { readNpy } from './helpers/train-fixtures';
import { PY, hasTorch as hasTorchModules } from './helpers/python';

const hasTorch = hasTorchModules();

// The same PGD steps in Python/PyTorch (scripts/reference/attacks_pgd.py) on the same exported
// TorchScript model and images: x_adv must agree to < 1e-5 and robust accuracy exactly, except on
// samples sitting on the decision boundary, where that much rounding may flip the outcome.
(hasTorch ? test : test.skip)('PGD without random start equals the Python/PyTorch implementation (L∞ and L2); the exported model also trains', async (t) => {
  // the engine PyTorch uses: the comparison is bit for bit (docs/attacks.md, "Input gradients";
  // the linearisation's agreement with it is test/torchscript-lower.test.ts's)
  setGradientEngine('autograd');
  t.teardown(() => setGradientEngine('auto'));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-pgdref-'));
  const n = 256;
  execFileSync(PY, [path.join(__dirname, '..', '..', 'scripts', 'reference', 'attacks_pgd.py'), dir, String(n)], {
    stdio: 'inherit', env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' },
  });
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'result.json'), 'utf8')) as Record<string, number> & Record<string, number[]>;
  const m = await Model.load(path.join(dir, 'model.pt'));
  const xn = readNpy(path.join(dir, 'x.npy'));
  const yn = readNpy(path.join(dir, 'y.npy'));
  const x = Tensor.from(xn.data as Float32Array, xn.shape);
  const y = Tensor.from(yn.data as BigInt64Array, yn.shape);
  for (const [norm, eps, alpha] of [['linf', 0.1, 0.01], ['l2', 1.0, 0.1]] as const) {
    const want = readNpy(path.join(dir, `xadv_${norm}.npy`)).data as Float32Array;
    const got = new Float32Array(want.length);
    let robust = 0;
    const z = await m.forward(x);
    const clean = argmax(z.toArray() as Float32Array, 10);
    const labels = y.toNumbers();
    const success = new Uint8Array(n);
    for (let i = 0; i < n; i += 128) {
      const r = await attack(m, x.slice(i, i + 128), y.slice(i, i + 128), { kind: 'pgd', norm, epsilon: eps, stepSize: alpha, steps: 20, randomStart: false });
      got.set(r.xAdv.toArray() as Float32Array, i * 784);
      success.set(r.success, i);
      r.success.forEach((s, j) => { if (s === 0 && clean[i + j] === labels[i + j]) robust++; });
    }
    let maxDiff = 0;
    for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs(want[i] - got[i]));
    // the same float32 graph on both sides; PyTorch runs its own thread count and batch split, so
    // the iterates may part at rounding (~1e-7) and, through a ReLU or max-pool switch, by a small
    // part of a step; 1e-5 holds that on any CPU, a wrong step moves x_adv by α = 0.01 or more
    t.true(maxDiff < 1e-5, `${norm}: max |Δx_adv| = ${maxDiff}`);
    // Outcomes per sample. x_adv here and there differ by ≤ maxDiff (L∞), so a margin z_y − max z_j
    // differs by about ‖∇ margin‖₁·maxDiff, plus float32 rounding of the logits themselves (1e-4
    // bounds it for logits below ~100): a sample whose Python margins, clean and at x_adv, exceed
    // twice that is decided the same on both sides; the rest sit on the boundary, where rounding decides
    const decided = (m: number, slack: number) => Math.abs(m) > 2 * slack * Math.max(maxDiff, 1e-7) + 1e-4;
    const pyRobust = (i: number) => ref.margin_clean[i] > 0 && ref[`margin_${norm}`][i] > 0;
    let open = 0;
    for (let i = 0; i < n; i++) {
      const here = clean[i] === labels[i] && success[i] === 0;
      if (decided(ref.margin_clean[i], ref.slack_clean[i]) && decided(ref[`margin_${norm}`][i], ref[`slack_${norm}`][i])) t.is(here, pyRobust(i), `${norm} sample ${i}: robust here ${here}, in Python ${pyRobust(i)}`);
      else open++;
    }
    t.true(Math.abs(robust / n - ref[`robust_${norm}`]) <= open / n + 1e-12, `${norm} robust accuracy ${robust / n} vs ${ref[`robust_${norm}`]} (${open} on the boundary)`);
    t.log(`${norm}: max |Δx_adv| = ${maxDiff}, robust accuracy ${robust / n} (python ${ref[`robust_${norm}`]}), ${open} samples on the boundary`);
  }
  // the same exported model trains through the Classifier interface (TRADES step, checkpoint)
  const small = new Dataset(x.slice(0, 200), y.slice(0, 200), { numClasses: 10 });
  const r = await train(m, small, { method: 'trades', epochs: 1, batchSize: 100, optimizer: { type: 'adam', lr: 1e-3 },
    attack: { epsilon: 0.1, stepSize: 0.04, steps: 2, beta: 1 }, outDir: path.join(dir, 'run') });
  t.true(Number.isFinite(r.history[0].trainLoss));
  const ck = await Model.loadCheckpoint(path.join(dir, 'run', 'checkpoint.pt'));
  t.is(ck.kind, 'torchscript');
  fs.rmSync(dir, { recursive: true });
});

function argmax(v: Float32Array, k: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < v.length / k; i++) {
    let a = 0;
    for (let j = 1; j < k; j++) if (v[i * k + j] > v[i * k + a]) a = j;
    out.push(a);
  }
  return out;
}
