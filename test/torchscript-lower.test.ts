/**
 * TorchScript models on the linear engine (native/models/torchscript_tape.cc): built-in
 * architectures exported by python3-torch (scripted and traced) and a custom model covering the
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
import { Model, ModelSpec, Tensor } from '../lib';
import { Dataset } from '../lib/data/dataset';
import { fisherExact, fisherVectorProduct, fisherLanczos, fisherHutchinson, fisherPower, profileFisher } from '../lib/fisher';
import { main } from '../lib/cli/main';
import { train, manualSeed } from '../lib/train';
import { PY, hasTorch } from './helpers/python';

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

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return a.length === b.length ? m : Infinity;
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

for (const name of ['mlp', 'small-cnn', 'lenet', 'resnet20']) {
  maybe(`${name}: scripted and traced exports are lowered and agree with autograd and with the built-in`, async (t) => {
    const p = probe(name);
    const x = input(p, name === 'resnet20' ? 2 : 3);
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
