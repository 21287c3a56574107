/**
 * model.loadWeights and model.exportWeights against PyTorch: every built-in architecture's state
 * dict, written by torch 1.13 (and torch 2.x where its venv exists) in every published layout
 * (scripts/reference/model_weights.py), loads into the model its spec builds with logits within
 * 1e-5 of Python's on the same probe batch; exports load back in Python (torch.load with
 * weights_only=True, and safetensors) into scripts/reference/models.py with the same logits.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { Model, ModelSpec, Tensor, FisherLensError } from '../lib';
import { maxAbsDiff, readNpy, writeNpy } from './fisher-fixtures';
import { fixturePythons, modelWeightFixtures, MODEL_WRITER } from './helpers/weights-fixtures';

// Python's torch and this addon run the same kernels on the same weights; what differs is the
// order of float32 sums (BLAS blocking, thread counts, LibTorch versions): measured ≤ 3e-8 here,
// 1e-5 leaves room for other CPUs' kernels while catching any wrong or mis-mapped weight (those
// move logits by > 1e-2).
const TOL = 1e-5;

const pythons = fixturePythons();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-weights-'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function logits(m: Model, xFile: string): Promise<Float32Array> {
  const x = readNpy(xFile);
  const xt = Tensor.from(x.data as Float32Array, x.shape);
  const z = await m.forward(xt);
  const out = z.toArray() as Float32Array;
  xt.dispose();
  z.dispose();
  return out;
}

if (pythons.size === 0) test.skip('loadWeights vs PyTorch: no Python with torch (python3-torch)', () => {});

for (const [label, py] of pythons) {
  test(`${label}: every built-in loads every published layout with Python's logits`, async (t) => {
    const { dir, expected } = modelWeightFixtures(label, py);
    const rows: string[] = [];
    // one model per spec (building a WRN or VGG takes seconds): each load overwrites every weight
    // the file has, and the files of one spec agree on the rest (norm buffers come from the spec)
    const models = new Map<string, Model>();
    for (const [file, e] of Object.entries(expected.files)) {
      const key = JSON.stringify(e.spec);
      if (!models.has(key)) models.set(key, Model.create(e.spec as ModelSpec));
      const m = models.get(key)!;
      const warnings: string[] = [];
      const r = await m.loadWeights(path.join(dir, file), { onWarning: (w) => warnings.push(w) });
      const d = maxAbsDiff(await logits(m, path.join(dir, e.x)), readNpy(path.join(dir, e.logits)).data as Float32Array);
      rows.push(`${file}: ${r.format}, ${r.loaded} tensors, max |Δlogit| ${d.toExponential(1)}`);
      t.true(d <= TOL, `${file} (${e.how}): logits differ by ${d}`);
      t.is(warnings.length > 0, /float64|float16|bfloat16/.test(file), `${file}: warnings ${warnings}`);
    }
    for (const m of models.values()) m.dispose();
    t.log(`torch ${expected.torch}\n${rows.join('\n')}`);
  });
}

if (pythons.size) {
  test('a failed load changes nothing, and says which architecture the file fits', async (t) => {
    const [label, py] = [...pythons][0];
    const { dir, expected } = modelWeightFixtures(label, py);
    const e = expected.files['wrn-16-4.pt'];
    const m = Model.create({ ...(e.spec as ModelSpec), numClasses: 5 });
    const before = await logits(m, path.join(dir, e.x));
    const err = await t.throwsAsync(m.loadWeights(path.join(dir, 'wrn-16-4.pt')));
    t.true(err instanceof FisherLensError);
    t.is((err as FisherLensError).code, 'ERR_FORMAT');
    t.regex(err!.message, /fc\.weight: file \[10, 256\] float32, model \[5, 256\] float32.*looks like \{"arch":"wrn-16-4","inChannels":3/);
    t.is(maxAbsDiff(await logits(m, path.join(dir, e.x)), before), 0, 'the model is unchanged');
    // strict: false loads what fits and warns about the rest
    const warnings: string[] = [];
    const r = await m.loadWeights(path.join(dir, 'wrn-16-4.pt'), { strict: false, onWarning: (w) => warnings.push(w) });
    t.is(r.loaded, 83);
    t.regex(warnings.join('\n'), /mis-shaped or mis-typed \(2\): fc\.weight.*fc\.bias/);
    m.dispose();
  });

  test('exports load in PyTorch (weights_only=True, safetensors) into models.py with the same logits', async (t) => {
    const [label, py] = [...pythons][0];
    const { dir, expected } = modelWeightFixtures(label, py);
    const t2 = pythons.get('torch2');
    let checked = 0;
    for (const name of ['small-cnn', 'resnet20', 'wrn-16-4', 'mlp']) {
      const e = expected.files[`${name}.pt`];
      const m = Model.create(e.spec as ModelSpec);
      await m.loadWeights(path.join(dir, `${name}.pt`));
      const ours = await logits(m, path.join(dir, e.x));
      for (const ext of ['pt', 'safetensors']) {
        const out = path.join(tmp, `${name}.${ext}`);
        await m.exportWeights(out);
        // back into a fresh FisherLens model: bit-exact
        const back = Model.create(e.spec as ModelSpec);
        await back.loadWeights(out);
        t.is(maxAbsDiff(await logits(back, path.join(dir, e.x)), ours), 0, `${out} round trip`);
        back.dispose();
        // and into PyTorch: Debian's torch 1.13 reads .pt; torch 2.x reads both (weights_only=True)
        for (const [plabel, p] of [['torch1', pythons.get('torch1')], ['torch2', t2]] as const) {
          if (!p || (ext === 'safetensors' && plabel === 'torch1')) continue;
          const z = path.join(tmp, `${name}-${ext}-${plabel}.npy`);
          const r = spawnSync(p, [MODEL_WRITER, 'logits', '--spec', JSON.stringify(e.spec), '--weights', out, '--x', path.join(dir, e.x), '--out', z], { encoding: 'utf8' });
          t.is(r.status, 0, r.stderr);
          t.true(maxAbsDiff(readNpy(z).data as Float32Array, ours) <= TOL, `${out} in ${plabel}`);
          checked++;
        }
      }
      m.dispose();
    }
    t.log(`${checked} exports loaded in PyTorch`);
    t.true(checked >= 4);
  });
}

if (pythons.size) {
  test('TorchScript models load state dicts and export their parameters the same way', async (t) => {
    const [label, py] = [...pythons][0];
    const { dir, expected } = modelWeightFixtures(label, py);
    const ts = expected.torchscript;
    const m = await Model.load(path.join(dir, ts.model));
    const r = await m.loadWeights(path.join(dir, ts.weights));
    t.is(r.loaded, 12);
    const ours = await logits(m, path.join(dir, ts.x));
    t.true(maxAbsDiff(ours, readNpy(path.join(dir, ts.logits)).data as Float32Array) <= TOL);
    const out = path.join(tmp, 'ts-export.pt');
    await m.exportWeights(out);
    const z = path.join(tmp, 'ts-export.npy');
    const p = spawnSync(py, [MODEL_WRITER, 'logits', '--spec', JSON.stringify(ts.spec), '--weights', out, '--x', path.join(dir, ts.x), '--out', z], { encoding: 'utf8' });
    t.is(p.status, 0, p.stderr);
    t.true(maxAbsDiff(readNpy(z).data as Float32Array, ours) <= TOL);
    m.dispose();
  });
}

test('exportWeights writes nothing on failure and refuses a folder', async (t) => {
  const m = Model.create({ arch: 'mlp', inputSize: 4, hidden: [3] });
  const bad = path.join(tmp, 'no-such-dir', 'm.pt');
  const err = await t.throwsAsync(m.exportWeights(bad));
  t.is((err as FisherLensError).code, 'ERR_IO');
  t.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')), []);
  m.dispose();
  void writeNpy;
});
