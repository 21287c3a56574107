/**
 * TorchScript models on the linear engine (native/models/torchscript_tape.cc): every built-in
 * architecture family exported by python3-torch (scripted and traced) and a custom model covering the
 * lowered op kinds give the same Fisher quantities on the linear engine as on autograd (the
 * reference: LibTorch's autograd through the same TorchScript graph) and as the built-in; models
 * with an op the engine does not know fall back to autograd and name it; training's changed
 * weights are seen by the next linearisation.
 *
 * Tolerance: relative 1e-4 on λ_max, tr G, ‖G‖_F and G v (max abs diff over max |G v|). Both
 * engines compute in float32 (≈ 6e-8 relative per op) through ~20–60 ops whose kernels differ
 * (a forward of the tangent vs double backward; oneDNN vs im2col), then accumulate K = J Jᵀ in
 * float64: agreement is ~1e-6 on these models; 1e-4 leaves room for other CPUs' BLAS kernels
 * without hiding a wrong op, which gives O(1) relative differences.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { Model, ModelSpec, Tensor, backend, setGradientEngine } from '../lib';
import { attack, AttackParams as AttackOptions } from '../lib/science/attacks';
import { Dataset } from '../lib/science/data/dataset';
import { fisherExact, fisherVectorProduct, fisherLanczos, fisherHutchinson, fisherPower, profileFisher, profileExactVjp, autotuneFile } from '../lib/science/fisher';
import { main } from '../lib/cli/main';
import { train, manualSeed } from '../lib/science/train';
import { PY, hasTorch } from './helpers/python';
import { useTempCache } from './helpers/env';
import { maxAbsDiff } from './fisher-fixtures';

const root = path.resolve(__dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tslower-'));
const ok = hasTorch('torch');
const maybe = ok ? test : test.skip;

// The models, written by python3-torch: built-ins (scripts/reference/models.py, randomised batch
// norm statistics) scripted and traced, a custom model covering the lowered kinds, and two models
// the engine cannot lower.
const GEN = String.raw`
import json, os, sys
import torch, torch.nn as nn, torch.nn.functional as F
sys.path.insert(0, os.path.join(sys.argv[1], "scripts", "reference"))
import models
from make_fixtures import randomise_bn
out = sys.argv[2]
SPECS = {
    "mlp": {"arch": "mlp", "inputSize": 8, "hidden": [32, 16], "activation": "tanh"},
    "small-cnn": {"arch": "small-cnn"},
    "lenet": {"arch": "lenet", "pool": "avg"},
    "resnet20": {"arch": "resnet20", "inputSize": 16, "mean": [0.5], "std": [0.25]},
    "mnist-net": {"arch": "mnist-net"},
    "vgg11": {"arch": "vgg11"},
    "preact-resnet18": {"arch": "preact-resnet18", "inChannels": 3, "inputSize": 32},
    "wrn-16-2": {"arch": "wrn-16-2", "inChannels": 3, "inputSize": 32},
}

class Kinds(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mu", torch.tensor([0.3]).view(1, 1, 1, 1))
        self.register_buffer("sigma", torch.tensor([0.4]).view(1, 1, 1, 1))
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, stride=2, padding=2, dilation=2, groups=3)
        self.bn = nn.BatchNorm2d(6)
        self.c3 = nn.Conv2d(12, 8, 1)
        self.c1d = nn.Conv1d(8, 4, 3, padding=1)
        self.w = nn.Parameter(torch.randn(44, 10) * 0.3)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = (x - self.mu) / self.sigma
        a = torch.tanh(self.c1(x))
        a = F.avg_pool2d(a, 3, stride=2, padding=1, count_include_pad=False)
        a = F.relu(a + 0.5, inplace=True) - 0.5
        b = self.bn(F.leaky_relu(self.c1(x), 0.1))
        b = F.gelu(self.c2(b))
        c = torch.cat([F.silu(a) * 0.5 - torch.sigmoid(b), a * b], 1)
        c = F.elu(self.c3(c)) + F.softplus(self.c3(c), beta=2.0)
        d = F.max_pool2d(c, 3, stride=2, padding=1)
        e = F.pad(c[:, :, 1:, ::2], (0, 1, 1, 0))
        e = F.adaptive_avg_pool2d(e, (3, 3))
        f = (d - e).flatten(2)
        f = F.hardtanh(self.c1d(f), -0.5, 0.5) + F.relu6(self.c1d(f) * 3)
        g = f.permute(0, 2, 1).reshape(f.size(0), -1)
        m = c.mean((2, 3))
        for _ in range(2):
            m = torch.tanh(m) * 1.5
        h = torch.cat([g, 1.0 - m], 1)
        h = self.drop(h)
        return torch.matmul(h, self.w) / 2.0

class PoolRelu(nn.Module):
    # ReLUs read only by overlapping, padded, dilated and ceil-mode max pools (the fused mask of
    # the general pool kind)
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 2 * 2, 10)

    def forward(self, x):
        a = F.max_pool2d(F.relu(self.c1(x)), 3, stride=2, padding=1)
        b = F.max_pool2d(F.relu(self.c2(a)), 2, stride=2, ceil_mode=True, dilation=1)
        c = F.max_pool2d(F.relu(self.c3(b)), 3, stride=1, padding=1, dilation=1)
        c = F.max_pool2d(F.relu(c - 0.05), 2, stride=2, padding=1, dilation=2)
        return self.fc(c.flatten(1))

class Hard(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 10 * 10, 10)

    def forward(self, x):
        return self.fc(F.hardswish(self.c(x)).flatten(1))

class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(144, 10)

    def forward(self, x):
        h = self.fc(x.flatten(1))
        if bool(h.sum() > 0):
            return h
        return -h

for i, (name, spec) in enumerate(SPECS.items()):
    torch.manual_seed(10 + i)
    g = torch.Generator().manual_seed(20 + i)
    m = models.build(spec)
    randomise_bn(m, g)
    m.eval()
    s = models.full_spec(spec)
    x = torch.rand(3, s["inChannels"], s["inputSize"], s["inputSize"], generator=g)
    torch.jit.script(m).save(os.path.join(out, name + ".script.pt"))
    torch.jit.trace(m, x).save(os.path.join(out, name + ".trace.pt"))
    json.dump({"spec": spec, "shape": list(x.shape), "x": x.flatten().tolist()}, open(os.path.join(out, name + ".json"), "w"))

torch.manual_seed(5)
k = Kinds()
randomise_bn(k, torch.Generator().manual_seed(6))
k.eval()
x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(7))
torch.jit.script(k).save(os.path.join(out, "kinds.script.pt"))
torch.jit.trace(k, x).save(os.path.join(out, "kinds.trace.pt"))
json.dump({"shape": list(x.shape), "x": x.flatten().tolist()}, open(os.path.join(out, "kinds.json"), "w"))
torch.manual_seed(8)
pr = PoolRelu().eval()
with torch.no_grad():
    pr.c3.bias.fill_(0.1)
torch.jit.script(pr).save(os.path.join(out, "poolrelu.pt"))
torch.jit.script(Hard().eval()).save(os.path.join(out, "hard.pt"))
torch.jit.script(Branchy().eval()).save(os.path.join(out, "branchy.pt"))
`;

test.before(() => {
  if (!ok) return;
  const script = path.join(tmp, 'gen.py');
  fs.writeFileSync(script, GEN);
  execFileSync(PY, [script, root, tmp], { stdio: 'inherit' });
});

test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Probe { spec?: ModelSpec; shape: number[]; x: number[] }
const probe = (name: string): Probe => JSON.parse(fs.readFileSync(path.join(tmp, `${name}.json`), 'utf8')) as Probe;
const input = (p: Probe, n = p.shape[0]): Tensor => Tensor.from(Float32Array.from(p.x), p.shape).slice(0, n);

function rel(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
}

const TOL = 1e-4;  // see the header

/** Exact λ_max, tr G, ‖G‖_F and G v of `lin` (expected on the linear engine) against `ref`. */
async function agrees(t: import('ava').ExecutionContext, lin: Model, x: Tensor, ref: Model, refOpts: { autograd?: boolean }, what: string): Promise<void> {
  const [a, b] = [await fisherExact(lin, x), await fisherExact(ref, x, refOpts)];
  t.is(a.engine, 'linear', `${what}: lowered (${a.engineReason})`);
  t.is(a.engineReason, '');
  for (let i = 0; i < x.shape[0]; i++) {
    t.true(b.trace[i] > 0, `${what}: a non-trivial Fisher`);
    for (const k of ['lambdaMax', 'trace', 'frobenius'] as const) t.true(rel(a[k][i], b[k][i]) <= TOL, `${what} ${k}[${i}]: ${a[k][i]} vs ${b[k][i]}`);
  }
  const n = x.shape.reduce((p, q) => p * q);
  const v = Tensor.from(Float64Array.from({ length: n }, (_, i) => Math.sin(1.7 * i + 0.3)), x.shape);
  const [ga, gb] = [(await fisherVectorProduct(lin, x, v)).toArray() as Float64Array, (await fisherVectorProduct(ref, x, v, refOpts)).toArray() as Float64Array];
  const scale = Math.max(...Array.from(gb, Math.abs));
  t.true(scale > 0 && maxAbsDiff(ga, gb) <= TOL * scale, `${what}: G v differs by ${maxAbsDiff(ga, gb)} (scale ${scale})`);
  for (const r of [a, b]) {
    r.spectrum.dispose();
    r.probs.dispose();
  }
}

// every built-in architecture family (resnet32/44/56 are resnet20's, vgg13/16 vgg11's)
for (const name of ['mlp', 'small-cnn', 'lenet', 'resnet20', 'mnist-net', 'vgg11', 'preact-resnet18', 'wrn-16-2']) {
  maybe(`${name}: scripted and traced exports are lowered and agree with autograd and with the built-in`, async (t) => {
    const p = probe(name);
    const x = input(p, ['resnet20', 'preact-resnet18', 'wrn-16-2'].includes(name) ? 2 : 3);
    const builtin = Model.create(p.spec!);
    for (const kind of ['script', 'trace']) {
      const ts = await Model.load(path.join(tmp, `${name}.${kind}.pt`));
      if (kind === 'script') {  // the same weights in the built-in (moved by name through a checkpoint)
        const ck = path.join(tmp, `${name}.ckpt`);
        await ts.save(ck);
        await builtin.loadState(ck);
      }
      await agrees(t, ts, x, ts, { autograd: true }, `${name} ${kind} vs autograd`);
      await agrees(t, ts, x, builtin, {}, `${name} ${kind} vs built-in`);
      if (name === 'resnet20') {
        // the option-A shortcut (x[:, :, ::2, ::2] and a zero-channel pad) is recorded as the
        // built-in's one op, not as slices and a pad
        const kinds = async (m: Model) => (await profileExactVjp(m, x.slice(0, 1))).map((o) => o.op);
        const [lk, bk] = [await kinds(ts), await kinds(builtin)];
        const count = (ks: string[], k: string) => ks.filter((o) => o === k).length;
        t.true(count(bk, 'shortcut') === 2 && count(lk, 'shortcut') === 2, `${name} ${kind}: shortcuts ${count(lk, 'shortcut')}`);
        t.deepEqual([count(lk, 'slice'), count(lk, 'pad')], [0, 0], `${name} ${kind}: no slices or pads left`);
      }
      ts.dispose();
    }
    builtin.dispose();
  });
}

maybe('a custom model over the lowered kinds (tanh, GELU, SiLU, ELU, softplus, in-place ReLU, pools, cat, permute, slices, pad, conv1d, loop...) agrees with autograd, scripted and traced, with every method', async (t) => {
  const x = input(probe('kinds'));
  for (const kind of ['script', 'trace']) {
    const ts = await Model.load(path.join(tmp, `kinds.${kind}.pt`));
    await agrees(t, ts, x, ts, { autograd: true }, `kinds ${kind}`);
    // the matrix-free methods on the lowered tape against autograd: Lanczos (exact with steps ≥ C),
    // Hutchinson (same seeded probes) and power iteration (tol 0: the same iterates)
    const [l, la] = [await fisherLanczos(ts, x, { steps: 12 }), await fisherLanczos(ts, x, { steps: 12, autograd: true })];
    const [h, ha] = [await fisherHutchinson(ts, x, { probes: 4, seed: 2 }), await fisherHutchinson(ts, x, { probes: 4, seed: 2, autograd: true })];
    const [pw, pa] = [await fisherPower(ts, x, { tol: 0, maxIter: 10 }), await fisherPower(ts, x, { tol: 0, maxIter: 10, autograd: true })];
    t.is(pw.engine, 'linear');
    t.is(pa.engineReason, 'the autograd option');
    for (let i = 0; i < 3; i++) {
      t.true(rel(l.lambdaMax[i], la.lambdaMax[i]) <= TOL && rel(l.trace[i], la.trace[i]) <= TOL, `Lanczos ${i}`);
      t.true(rel(h.trace[i], ha.trace[i]) <= TOL, `Hutchinson ${i}: ${h.trace[i]} vs ${ha.trace[i]}`);
      t.true(rel(pw.lambdaMax[i], pa.lambdaMax[i]) <= TOL, `power ${i}`);
    }
    for (const r of [l, la]) {
      r.eigvec.dispose();
      r.ritz.dispose();
    }
    pw.eigvec.dispose();
    pa.eigvec.dispose();
    ts.dispose();
  }
});

maybe('ReLUs read only by general max pools (overlapping, padded, dilated, ceil mode) agree with autograd, masked at the pool\'s output', async (t) => {
  const x = Tensor.from(Float32Array.from({ length: 3 * 144 }, (_, i) => (Math.sin(0.7 * i) + 1) / 2), [3, 1, 12, 12]);
  const ts = await Model.load(path.join(tmp, 'poolrelu.pt'));
  await agrees(t, ts, x, ts, { autograd: true }, 'poolrelu');
  // the same in channels-last and with several classes per pass (the mask broadcast over k blocks)
  for (const o of [{ layout: 'channels-last' as const, classesPerPass: 3 }, { layout: 'nchw' as const, classesPerPass: 4 }]) {
    const [a, b] = [await fisherExact(ts, x, o), await fisherExact(ts, x, { autograd: true })];
    for (let i = 0; i < 3; i++) t.true(rel(a.trace[i], b.trace[i]) <= TOL, `${JSON.stringify(o)} trace ${i}: ${a.trace[i]} vs ${b.trace[i]}`);
  }
  ts.dispose();
  x.dispose();
});

maybe('a model with an op the engine does not know falls back to autograd and names the op (also in profile fisher)', async (t) => {
  const x = Tensor.from(Float32Array.from({ length: 2 * 144 }, (_, i) => (Math.cos(i) + 1) / 2), [2, 1, 12, 12]);
  const hard = await Model.load(path.join(tmp, 'hard.pt'));
  const r = await fisherExact(hard, x);
  t.is(r.engine, 'autograd');
  t.regex(r.engineReason, /^aten::hardswish .*at .*:\d+/);
  // the same reason again (cached per input shape), and the autograd result is a Fisher
  const p = await fisherPower(hard, x, { maxIter: 5 });
  t.is(p.engine, 'autograd');
  t.is(p.engineReason, r.engineReason);
  t.true(r.trace[0] > 0);
  // profile fisher reports it: the rows, and the CLI's text (in-process)
  const rows = await profileFisher(hard, { inputShape: [1, 12, 12], batchSizes: [2], methods: ['exact'], repeats: 1 });
  t.is(rows[0].engine, 'autograd');
  t.is(rows[0].engineReason, r.engineReason);
  hard.dispose();
  const out: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => { out.push(String(chunk)); return true; }) as typeof process.stdout.write;
  try {
    await main(['profile', 'fisher', '--model', path.join(tmp, 'hard.pt'), '--input-shape', '1,12,12', '--batch', '2', '--methods', 'exact', '--repeats', '1']);
  } finally {
    process.stdout.write = write;
  }
  t.true(out.join('').includes(`engine: autograd (${r.engineReason})`), out.join(''));
  // an input-dependent Python if: its condition reads the batch's values (a reduction over the batch)
  const branchy = await Model.load(path.join(tmp, 'branchy.pt'));
  const b = await fisherExact(branchy, x);
  t.is(b.engine, 'autograd');
  t.regex(b.engineReason, /^aten::sum .*reduction over the batch/);
  branchy.dispose();
});

// Attacks' input gradients: the engine is a process-wide setting, so these tests run serially
// (AVA runs serial tests before the concurrent ones: no other test's attack sees it switched).
const maybeSerial = ok ? test.serial : test.serial.skip;

/** x_adv of an attack on each gradient engine, the setting restored afterwards. */
async function onEngines(model: Model, x: Tensor, y: Tensor, o: AttackOptions): Promise<Record<'linear' | 'autograd', Float32Array>> {
  const out: Partial<Record<'linear' | 'autograd', Float32Array>> = {};
  try {
    for (const e of ['linear', 'autograd'] as const) {
      setGradientEngine(e);
      const r = await attack(model, x, y, o);
      out[e] = r.xAdv.toArray() as Float32Array;
      r.xAdv.dispose();
    }
  } finally {
    setGradientEngine('auto');
  }
  return out as Record<'linear' | 'autograd', Float32Array>;
}

// Tolerances. L2 steps α·g/‖g‖ move continuously with the gradient: the engines' gradients agree
// to ~1e-6 relative (float32, different kernels), so 10 steps of α = 0.05 differ by ~1e-6
// absolute, until an iterate lands within rounding of a ReLU kink or a max-pool tie, where the
// engines can take different sides and the paths part by a fraction of one step (seen: 1.8e-3
// over 256 images × 20 steps of α = 0.1 against PyTorch). 5e-3 (a tenth of one step) allows that
// on any CPU and still catches a wrong op, which moves x_adv by O(α) (a flipped gradient: 0.12).
// Sign steps (L∞, TRADES' KL attack) are equal except where a gradient component is within
// rounding of 0 and its sign flips: at most 1 % of the pixels may differ. APGD also compares
// losses at its checkpoints to halve its step (η starts at 2ε): where two compared losses lie
// within rounding of each other (not yet seen between the engines; test/apgd-python.test.ts meets
// such plateaus against PyTorch), the engines may decide differently and that sample's path parts by up to a step,
// so for APGD one sample of a batch may exceed L2_TOL; a wrong op moves every sample.
const L2_TOL = 5e-3;
const SIGN_SHARE = 0.01;
const differing = (a: Float32Array, b: Float32Array): number => a.reduce((n, v, i) => n + (v !== b[i] ? 1 : 0), 0) / a.length;
/** Samples of a [B, ...] batch (flattened) whose largest |a − b| exceeds tol. */
const partedSamples = (a: Float32Array, b: Float32Array, B: number, tol: number): number => {
  const d = a.length / B;
  let n = 0;
  for (let s = 0; s < B; s++) if (maxAbsDiff(a.subarray(s * d, (s + 1) * d), b.subarray(s * d, (s + 1) * d)) > tol) n++;
  return n;
};

maybeSerial('attacks and TRADES\' inner maximisation on the lowered tape: the same iterates as autograd and as the built-in', async (t) => {
  const attacks: [string, AttackOptions][] = [
    ['pgd l2', { kind: 'pgd', norm: 'l2', epsilon: 0.5, stepSize: 0.05, steps: 10, randomStart: false }],
    ['pgd linf', { kind: 'pgd', epsilon: 0.03, stepSize: 0.003, steps: 10, randomStart: false }],
    ['kl (TRADES)', { kind: 'kl', epsilon: 0.03, stepSize: 0.007, steps: 5, seed: 1 }],
    ['apgd-ce l2', { kind: 'apgd-ce', norm: 'l2', epsilon: 0.5, steps: 10, seed: 1 }],
  ];
  // every built-in family (as above) and the custom model over the lowered kinds
  for (const name of ['mlp', 'small-cnn', 'mnist-net', 'lenet', 'vgg11', 'resnet20', 'preact-resnet18', 'wrn-16-2', 'kinds']) {
    const p = probe(name);
    const x = input(p);
    const y = Tensor.from(BigInt64Array.from({ length: x.shape[0] }, (_, i) => BigInt((3 * i + 1) % 10)), [x.shape[0]]);
    const ts = await Model.load(path.join(tmp, `${name}.script.pt`));
    let builtin: Model | undefined;
    if (p.spec) {
      builtin = Model.create(p.spec);
      const ck = path.join(tmp, `${name}.attack.ckpt`);
      await ts.save(ck);
      await builtin.loadState(ck);
    }
    // the linear rows below run on the tape: 'auto' measured it on this model (NaN: no linearisation)
    const a = await attack(ts, x, y, { kind: 'pgd', steps: 6, randomStart: false });
    a.xAdv.dispose();
    t.true(ts.gradientChoices[0]?.linearMs > 0, `${name}: a linearisation for attacks (${JSON.stringify(ts.gradientChoices)})`);
    for (const [what, o] of attacks) {
      const r = await onEngines(ts, x, y, o);
      const moved = maxAbsDiff(r.linear, x.toArray() as Float32Array);
      t.true(moved > 1e-3, `${name} ${what}: the attack moved x (${moved})`);
      const sign = o.norm !== 'l2';
      t.log(`${name} ${what}: linear vs autograd ${sign ? `${differing(r.linear, r.autograd)} of the pixels differ` : `max |Δ| ${maxAbsDiff(r.linear, r.autograd).toExponential(1)}`}`);
      const parted = o.kind === 'apgd-ce' ? 1 : 0;  // see L2_TOL
      const B = x.shape[0];
      if (sign) t.true(differing(r.linear, r.autograd) <= SIGN_SHARE, `${name} ${what}: ${differing(r.linear, r.autograd)} of the pixels differ`);
      else t.true(partedSamples(r.linear, r.autograd, B, L2_TOL) <= parted, `${name} ${what}: linear vs autograd ${maxAbsDiff(r.linear, r.autograd)}`);
      if (builtin) {
        const b = await onEngines(builtin, x, y, o);
        if (sign) t.true(differing(r.linear, b.linear) <= SIGN_SHARE, `${name} ${what}: lowered vs built-in`);
        else t.true(partedSamples(r.linear, b.linear, B, L2_TOL) <= parted, `${name} ${what}: lowered vs built-in ${maxAbsDiff(r.linear, b.linear)}`);
      }
    }
    x.dispose(); y.dispose(); ts.dispose(); builtin?.dispose();
  }
});

maybeSerial("the 'auto' gradient engine measures both engines once per architecture and input shape, or takes autograd where there is no linearisation", async (t) => {
  t.is(backend().gradientEngine, 'auto');
  const x = input(probe('small-cnn'));
  const y = Tensor.from(BigInt64Array.from([1n, 2n, 3n]), [3]);
  // a copy of the archive: a spec (path) no other test has measured
  const file = path.join(tmp, 'auto-small-cnn.pt');
  fs.copyFileSync(path.join(tmp, 'small-cnn.script.pt'), file);
  const ts = await Model.load(file);
  t.deepEqual(ts.gradientChoices, []);
  // the first gradient measures
  let r = await attack(ts, x, y, { kind: 'pgd', steps: 1, randomStart: false });
  r.xAdv.dispose();
  const [c] = ts.gradientChoices;
  t.deepEqual(c.shape, [3, 1, 28, 28]);
  t.true(c.linearMs > 0 && c.autogradMs > 0, `both measured: ${JSON.stringify(c)}`);
  t.is(c.engine, c.linearMs < 0.95 * c.autogradMs ? 'linear' : 'autograd');  // the linearisation when clearly faster
  // the choice holds for the architecture: a second model object of the same archive, and later
  // attacks, reuse it (the same measured figures); and an attack repeats bit for bit
  const again = await Model.load(file);
  t.deepEqual(again.gradientChoices, [c]);
  const o = { kind: 'pgd' as const, norm: 'l2' as const, epsilon: 0.5, stepSize: 0.05, steps: 8, randomStart: false };
  const [p1, p2] = [await attack(ts, x, y, o), await attack(again, x, y, o)];
  t.deepEqual(p1.xAdv.toArray(), p2.xAdv.toArray());
  t.deepEqual(ts.gradientChoices, [c]);
  // another batch shape is measured on its own; the first stays
  const x2 = x.slice(0, 2), y2 = y.slice(0, 2);
  r = await attack(ts, x2, y2, { kind: 'pgd', steps: 2, randomStart: false });
  r.xAdv.dispose();
  t.deepEqual(ts.gradientChoices.map((e) => e.shape), [[2, 1, 28, 28], [3, 1, 28, 28]]);
  // no linearisation (hardswish): autograd, nothing to compare
  const hard = await Model.load(path.join(tmp, 'hard.pt'));
  const xh = Tensor.from(Float32Array.from({ length: 2 * 144 }, (_, i) => (Math.cos(i) + 1) / 2), [2, 1, 12, 12]);
  const rh = await attack(hard, xh, y2, { kind: 'pgd', steps: 1, randomStart: false });
  rh.xAdv.dispose();
  t.deepEqual(hard.gradientChoices.map((e) => [e.engine, Number.isNaN(e.linearMs)]), [['autograd', true]]);
  // bad settings are ERR_ARG naming the values
  t.throws(() => setGradientEngine('tape' as never), { code: 'ERR_ARG', message: /auto, linear, autograd/ });
  for (const m of [ts, again, hard]) m.dispose();
  for (const v of [x, y, x2, y2, xh, p1.xAdv, p2.xAdv]) v.dispose();
});

maybeSerial("'auto' stores its gradient-engine choice: another process on this machine takes it without measuring", async (t) => {
  useTempCache(t, 'fl-gradstore-');
  const file = path.join(tmp, 'stored-lenet.pt');
  fs.copyFileSync(path.join(tmp, 'lenet.script.pt'), file);
  const x = input(probe('lenet'));
  const y = Tensor.from(BigInt64Array.from([4n, 5n, 6n]), [3]);
  const m = await Model.load(file);
  const r = await attack(m, x, y, { kind: 'pgd', steps: 1, randomStart: false });
  r.xAdv.dispose();
  const [c] = m.gradientChoices;
  t.true(c.linearMs > 0 && c.autogradMs > 0);
  const stored = Object.keys(JSON.parse(fs.readFileSync(autotuneFile(), 'utf8')).entries as object).filter((k) => k.includes('gradient'));
  t.is(stored.length, 1);
  // a second process: its first attack reads the choice (the same measured figures) instead of measuring
  const child = String.raw`
    const { Model, Tensor } = require(${JSON.stringify(path.join(root, 'dist', 'lib'))});
    const { attack } = require(${JSON.stringify(path.join(root, 'dist', 'lib', 'science', 'attacks'))});
    (async () => {
      const m = await Model.load(process.argv[1]);
      const x = Tensor.from(Float32Array.from(JSON.parse(process.argv[2])), JSON.parse(process.argv[3]));
      const y = Tensor.from(BigInt64Array.from([4n, 5n, 6n]), [3]);
      const r = await attack(m, x, y, { kind: 'pgd', steps: 1, randomStart: false });
      console.log(JSON.stringify(m.gradientChoices));
    })();`;
  const out = execFileSync(process.execPath, ['-e', child, file, JSON.stringify(Array.from(x.toArray() as Float32Array)), JSON.stringify(x.shape)],
    { env: { ...process.env }, encoding: 'utf8' });
  const theirs = JSON.parse(out.trim().split('\n').pop()!) as typeof c[];
  t.deepEqual(theirs.map((e) => [e.shape, e.engine, e.linearMs, e.autogradMs]), [[c.shape, c.engine, c.linearMs, c.autogradMs]]);
  m.dispose(); x.dispose(); y.dispose();
});

maybe('training a lowered TorchScript model: the next linearisation sees the new weights and matches autograd', async (t) => {
  const ts = await Model.load(path.join(tmp, 'mlp.script.pt'));
  const x = input(probe('mlp'));
  const before = await fisherExact(ts, x);
  t.is(before.engine, 'linear');
  const n = 64;
  const data = new Dataset(Tensor.from(Float32Array.from({ length: n * 64 }, (_, i) => (Math.sin(i * 0.37) + 1) / 2), [n, 1, 8, 8]),
    Tensor.from(BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 10)), [n]), { numClasses: 10, name: 'synthetic' });
  manualSeed(0);
  await train(ts, data, { method: 'natural', epochs: 1, batchSize: 32, optimizer: { type: 'sgd', lr: 0.5 }, seed: 0 });
  await ts.setTraining(false);
  const [after, ag] = [await fisherExact(ts, x), await fisherExact(ts, x, { autograd: true })];
  t.is(after.engine, 'linear');
  for (let i = 0; i < 3; i++) {
    t.true(rel(after.lambdaMax[i], before.lambdaMax[i]) > 1e-3, `λ[${i}] changed by training: ${before.lambdaMax[i]} -> ${after.lambdaMax[i]}`);
    t.true(rel(after.lambdaMax[i], ag.lambdaMax[i]) <= TOL && rel(after.trace[i], ag.trace[i]) <= TOL, `after training ${i}: ${after.lambdaMax[i]} vs ${ag.lambdaMax[i]}`);
  }
  data.dispose();
  ts.dispose();
});
