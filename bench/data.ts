/**
 * Data figures: loading Fashion-MNIST's 60 000 training images from the Debian .gz files
 * (target < 1.5 s), and one epoch of batching (batch 128, shuffled) with and without native CIFAR
 * augmentation, without a model (target: negligible beside a training step). Python PyTorch
 * doing the same work (gzip + numpy + torch; pad/crop/flip per image) runs side by side.
 */
import { execFileSync } from 'child_process';
import { fashionMnist, fashionMnistDir } from '../lib/science/data';
import { Model } from '../lib';
import { addon } from '../lib/binding/native';
import { median } from '../lib/util/stats';

const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';

/** The Python side's figures, or why there are none (its last error line). */
function python(dir: string): { load: number; epochPlain: number; epochAug: number } | string {
  const code = `
import gzip, time, json, numpy as np, torch
d = '${dir}'
def load():
    with gzip.open(d + '/train-images-idx3-ubyte.gz') as f: b = f.read()
    with gzip.open(d + '/train-labels-idx1-ubyte.gz') as f: l = f.read()
    x = torch.from_numpy(np.frombuffer(b, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28).copy()).float().div_(255)
    y = torch.from_numpy(np.frombuffer(l, dtype=np.uint8, offset=8).astype(np.int64))
    return x, y
ts = []
for _ in range(3):
    t0 = time.perf_counter(); x, y = load(); ts.append(time.perf_counter() - t0)
g = torch.Generator().manual_seed(0)
def epoch(aug):
    perm = torch.randperm(x.shape[0], generator=g)
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], 128):
        idx = perm[i:i + 128]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        if aug:
            p = torch.nn.functional.pad(xb, (4, 4, 4, 4))
            out = torch.empty_like(xb)
            off = torch.randint(0, 9, (xb.shape[0], 2), generator=g).tolist()
            fl = torch.rand(xb.shape[0], generator=g).tolist()
            for j in range(xb.shape[0]):
                c = p[j, :, off[j][0]:off[j][0] + 28, off[j][1]:off[j][1] + 28]
                out[j] = c.flip(2) if fl[j] < 0.5 else c
    return time.perf_counter() - t0
print(json.dumps({'load': sorted(ts)[1], 'epochPlain': epoch(False), 'epochAug': epoch(True)}))
`;
  try {
    return JSON.parse(execFileSync(PY, ['-c', code], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })) as { load: number; epochPlain: number; epochAug: number };
  } catch (e) {
    // a failing script must not read as "no torch" (a JS line pasted into it went unnoticed that way)
    const err = String((e as { stderr?: unknown }).stderr ?? e).trim().split('\n');
    return err[err.length - 1];
  }
}

export async function main(): Promise<void> {
  const dir = fashionMnistDir();
  addon();
  const loads: number[] = [];
  let ds = await fashionMnist({ split: 'train' });
  ds.dispose();
  for (let r = 0; r < 3; r++) {
    const t0 = process.hrtime.bigint();
    ds = await fashionMnist({ split: 'train' });
    loads.push(Number(process.hrtime.bigint() - t0) / 1e9);
    if (r < 2) ds.dispose();
  }
  const load = median(loads);
  console.log(`load Fashion-MNIST train (${ds.size} images, .gz): ${load.toFixed(3)} s (median of 3); target < 1.5 s`);

  let t0 = process.hrtime.bigint();
  let n = 0;
  for (const b of ds.batches({ batchSize: 128, shuffle: true, seed: 1 })) n += b.indices.length;
  const plain = Number(process.hrtime.bigint() - t0) / 1e9;
  t0 = process.hrtime.bigint();
  n = 0;
  for await (const b of ds.augmentedBatches({ batchSize: 128, shuffle: true, seed: 1 })) n += b.indices.length;
  const aug = Number(process.hrtime.bigint() - t0) / 1e9;
  const steps = Math.ceil(n / 128);
  console.log(`epoch of batching (batch 128, shuffled): ${plain.toFixed(3)} s (${(1e3 * plain / steps).toFixed(2)} ms/batch); ` +
    `with augmentation (pad 4, crop, flip): ${aug.toFixed(3)} s (${(1e3 * aug / steps).toFixed(2)} ms/batch)`);

  // a training step's scale for comparison: one small-cnn forward of a batch (no backward)
  const m = Model.create({ arch: 'small-cnn' });
  const b = ds.batch(Array.from({ length: 128 }, (_, i) => i));
  await m.forward(b.x);
  const fw: number[] = [];
  for (let r = 0; r < 5; r++) {
    const s = process.hrtime.bigint();
    (await m.forward(b.x)).dispose();
    fw.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  console.log(`for scale: small-cnn forward of one batch of 128: ${median(fw).toFixed(1)} ms ` +
    `(a training step is ≈ 3× that); augmented batching = ${(100 * (1e3 * aug / steps) / (3 * median(fw))).toFixed(1)} % of a step`);

  const py = python(dir);
  if (typeof py !== 'string') {
    console.log(`python3-torch, same work: load ${py.load.toFixed(3)} s, epoch ${py.epochPlain.toFixed(3)} s, ` +
      `augmented epoch ${py.epochAug.toFixed(3)} s`);
    console.log(`ratios (Python / FisherLens): load ${(py.load / load).toFixed(2)}×, epoch ${(py.epochPlain / plain).toFixed(2)}×, ` +
      `augmented epoch ${(py.epochAug / aug).toFixed(2)}×`);
  } else {
    console.log(`python3-torch comparison failed (${PY}): ${py}`);
  }
  ds.dispose();
}

if (require.main === module) main().catch((e: unknown) => { console.error(e); process.exitCode = 1; });
