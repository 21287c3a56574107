/**
 * Shape errors name what the model expects against what it got (issue 26): a forward on an input
 * of the wrong [C, H, W] is ERR_SHAPE "expects input [B, C, H, W] (where that is known from), got
 * [...]", with LibTorch's or the TorchScript interpreter's message only as the trailing detail
 * (was: ERR_TORCH with the interpreter's two tracebacks). Built-in models know it from their spec
 * (checkpoints too), TorchScript archives from a recorded shape (exportTorchScript writes it) or
 * from their first successful forward.
 */
import test from 'ava';
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FisherLensError, Model, Tensor } from '../lib';
import { attack } from '../lib/science/attacks';
import { PY, hasTorch as hasTorchModules } from './helpers/python';

const hasTorch = hasTorchModules('torch');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-shape-'));
const PLAIN = path.join(dir, 'linear.pt');       // scripted Linear(784, 10) on the flattened input, no recorded shape
const RECORDED = path.join(dir, 'recorded.pt');  // the same with fisherlens.json {"inputShape": [1, 28, 28]}
const BAD_META = path.join(dir, 'bad-meta.pt');  // fisherlens.json that is not [C, H, W]

test.before(() => {
  if (!hasTorch) return;
  // a Python process: before any native op of this process starts
  const script = path.join(dir, 'make.py');
  fs.writeFileSync(script, [
    'import sys, torch',
    'class M(torch.nn.Module):',
    '    def __init__(self):',
    '        super().__init__()',
    '        self.fc = torch.nn.Linear(784, 10)',
    '    def forward(self, x):',
    '        return self.fc(x.flatten(1))',
    'm = torch.jit.script(M())',
    'm.save(sys.argv[1])',
    "torch.jit.save(m, sys.argv[2], _extra_files={'fisherlens.json': '{\"inputShape\": [1, 28, 28]}'})",
    "torch.jit.save(m, sys.argv[3], _extra_files={'fisherlens.json': '{\"inputShape\": [28, 28]}'})",
  ].join('\n'));
  execFileSync(PY, [script, PLAIN, RECORDED, BAD_META], { stdio: 'inherit' });
});
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const zeros = (shape: number[]): Tensor => Tensor.from(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
const shapeErr = (message: RegExp) => ({ instanceOf: FisherLensError, code: 'ERR_SHAPE', message } as const);
/** The detail is the failing line alone: none of the interpreter's tracebacks. */
const noTraceback = (t: { false: (v: boolean, m?: string) => void }, e: Error | undefined) => t.false(/Traceback|\n/.test(e?.message ?? ''), e?.message);

const ts = hasTorch ? test : test.skip;

ts('TorchScript, nothing recorded: ERR_SHAPE naming the input; after a successful forward, expected against got', async (t) => {
  const m = await Model.load(PLAIN);
  const x32 = zeros([2, 1, 32, 32]);
  let e = await t.throwsAsync(m.forward(x32), shapeErr(/^the TorchScript model cannot take input \[2, 1, 32, 32\] \(its expected input shape is not recorded and it has not yet run; mat1 and mat2 shapes cannot be multiplied \(2x1024 and 784x10\)\)$/));
  noTraceback(t, e);
  const x28 = zeros([3, 1, 28, 28]);
  const z = await m.forward(x28);
  t.deepEqual(z.shape, [3, 10]);
  e = await t.throwsAsync(m.forward(x32), shapeErr(/^the TorchScript model expects input \[B, 1, 28, 28\] \(the shape of its first successful forward\), got \[2, 1, 32, 32\] \(mat1 and mat2 shapes cannot be multiplied/));
  noTraceback(t, e);
  // an attack on the wrong shape says the same (every op runs the model through one forward)
  await t.throwsAsync(attack(m, x32, Tensor.fromNested([0, 1], { dtype: 'int64' }), { kind: 'fgsm', epsilon: 0.1 }), shapeErr(/expects input \[B, 1, 28, 28\].*got \[2, 1, 32, 32\]/));
  [x32, x28, z].forEach((v) => v.dispose());
  m.dispose();
});

ts('TorchScript with a recorded input shape: expected against got from the first forward; a malformed record is ERR_FORMAT', async (t) => {
  const m = await Model.load(RECORDED);
  for (const shape of [[2, 1, 32, 32], [2, 3, 28, 28]]) {
    const x = zeros(shape);
    const e = await t.throwsAsync(m.forward(x), shapeErr(new RegExp(`^the TorchScript model expects input \\[B, 1, 28, 28\\] \\(recorded in its archive\\), got \\[${shape.join(', ')}\\] \\(mat1 and mat2 shapes cannot be multiplied`)));
    noTraceback(t, e);
    x.dispose();
  }
  // the record survives a re-export of the archive
  const again = path.join(dir, 'again.pt');
  await m.exportTorchScript(again);
  const m2 = await Model.load(again);
  const x = zeros([1, 1, 32, 32]);
  await t.throwsAsync(m2.forward(x), shapeErr(/expects input \[B, 1, 28, 28\] \(recorded in its archive\), got \[1, 1, 32, 32\]/));
  x.dispose(); m.dispose(); m2.dispose();
  await t.throwsAsync(Model.load(BAD_META), { instanceOf: FisherLensError, code: 'ERR_FORMAT', message: /fisherlens\.json must be \{"inputShape": \[C, H, W\]\}/ });
});

test('built-in models (fresh, from a checkpoint, exported to TorchScript) name their spec\'s shape', async (t) => {
  for (const arch of ['mlp', 'small-cnn', 'lenet'] as const) {
    const m = await Model.create({ arch });
    for (const shape of [[2, 1, 32, 32], [2, 3, 28, 28]]) {
      const x = zeros(shape);
      const e = await t.throwsAsync(m.forward(x), shapeErr(new RegExp(`^the model expects input \\[B, 1, 28, 28\\] \\(${arch}'s spec: inChannels 1, inputSize 28\\), got \\[${shape.join(', ')}\\] \\(.+\\)$`)));
      noTraceback(t, e);
      x.dispose();
    }
    m.dispose();
  }
  // a CIFAR-shaped spec: its own numbers; the same from a checkpoint of it
  const spec = { arch: 'small-cnn', inChannels: 3, inputSize: 32, numClasses: 10 } as const;
  const m = await Model.create(spec);
  const ck = path.join(dir, 'ck.pt');
  await m.save(ck);
  const loaded = await Model.loadCheckpoint(ck);
  const x = zeros([2, 1, 28, 28]);
  // and with PyTorch weights loaded into the spec (safetensors written from it)
  const st = path.join(dir, 'w.safetensors');
  await m.exportWeights(st);
  const weighted = await Model.create(spec);
  await weighted.loadWeights(st);
  for (const model of [m, loaded, weighted]) {
    await t.throwsAsync(model.forward(x), shapeErr(/^the model expects input \[B, 3, 32, 32\] \(small-cnn's spec: inChannels 3, inputSize 32\), got \[2, 1, 28, 28\]/));
  }
  weighted.dispose();
  // exported to TorchScript, the spec's shape is recorded in the archive
  if (hasTorch) {
    const file = path.join(dir, 'exported.pt');
    await m.exportTorchScript(file);
    const ts2 = await Model.load(file);
    await t.throwsAsync(ts2.forward(x), shapeErr(/^the TorchScript model expects input \[B, 3, 32, 32\] \(recorded in its archive\), got \[2, 1, 28, 28\]/));
    ts2.dispose();
  }
  // a resnet takes other sizes (global pooling): no error where the model runs
  const r = await Model.create({ arch: 'resnet20' });
  const x32 = zeros([1, 1, 32, 32]);
  t.deepEqual((await r.forward(x32)).shape, [1, 10]);
  [x, x32].forEach((v) => v.dispose());
  [m, loaded, r].forEach((v) => v.dispose());
});
