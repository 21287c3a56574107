/**
 * Key mapping and spec inference on state dicts PyTorch wrote for every built-in architecture in
 * the published layouts (scripts/reference/model_weights.py): each file maps onto the model its
 * spec builds (names and shapes read from the native model) with every parameter and buffer
 * assigned, and inferSpec names that spec from the keys alone. Files that do not fit are one
 * ERR_FORMAT listing every missing, unexpected and mis-shaped key.
 */
import test from 'ava';
import * as path from 'path';
import { Model, ModelSpec } from '../lib';
import { FisherLensError, TargetEntry, WeightDtype, inferSpec, planWeights, readWeightsFile } from '../lib/science/weights';
import { fixturePythons, modelWeightFixtures } from './helpers/weights-fixtures';

const py = fixturePythons().get('torch1');

async function targets(spec: ModelSpec): Promise<TargetEntry[]> {
  const m = Model.create(spec);
  const s = await m.state();
  const out = [...s].map(([name, t]) => ({ name, shape: t.shape, dtype: t.dtype as WeightDtype }));
  for (const t of s.values()) t.dispose();
  m.dispose();
  return out;
}

if (!py) test.skip('weights keymap: no Python with torch (python3-torch)', () => {});
else {
  test('every published layout of every built-in maps fully onto the model its spec builds', async (t) => {
    const { dir, expected } = modelWeightFixtures('torch1', py);
    for (const [file, e] of Object.entries(expected.files)) {
      const w = await readWeightsFile(path.join(dir, file));
      const target = await targets(e.spec as ModelSpec);
      const plan = planWeights(e.spec.arch, target, w.tensors, { what: file });
      const spec = e.spec as ModelSpec;
      // models.py saves norm_mean/norm_std (as FisherLens does); published layouts and no-norm lack them
      const normFromSpec = file.includes('no-norm') || file.includes('trades');
      t.is(plan.assign.length, target.length - (normFromSpec ? 2 : 0), `${file}: every parameter and buffer assigned`);
      t.deepEqual(plan.kept, normFromSpec ? ['norm_mean', 'norm_std'] : [], file);
      t.deepEqual([plan.missing, plan.unexpected, plan.mismatched], [[], [], []], file);
      if (file.includes('dataparallel') || file.endsWith('-dp.pt')) t.true(plan.mapped.some((m) => m.includes('module.')), file);
      if (file.includes('trades') && spec.arch === 'small-cnn') t.true(plan.mapped.some((m) => m.includes("TRADES' SmallCNN")), file);
      if (file.includes('trades') && spec.arch.startsWith('wrn')) t.true(plan.ignored.some((m) => m.includes('sub_block1')), file);
      if (/float64|float16|bfloat16/.test(file)) t.true(plan.warnings.some((m) => m.startsWith('cast ')), `${file}: ${plan.warnings}`);
      else t.deepEqual(plan.warnings, [], file);

      const inf = inferSpec(w.tensors);
      t.truthy(inf.spec, `${file}: ${inf.why}`);
      const want = { arch: spec.arch, inChannels: spec.inChannels ?? 1, numClasses: spec.numClasses ?? 10, width: spec.width };
      t.like({ ...inf.spec, width: inf.spec?.width }, want, `${file}: inferred ${JSON.stringify(inf.spec)}`);
    }
  });

  test('a file that does not fit is one ERR_FORMAT naming every bad key; strict: false warns and loads the rest', async (t) => {
    const { dir } = modelWeightFixtures('torch1', py);
    const sc = await readWeightsFile(path.join(dir, 'small-cnn.pt'));
    const five = await targets({ arch: 'small-cnn', numClasses: 5 });
    const e = t.throws(() => planWeights('small-cnn', five, sc.tensors, { what: 'small-cnn.pt' })) as FisherLensError;
    t.is(e.code, 'ERR_FORMAT');
    t.regex(e.message, /mis-shaped or mis-typed \(2\): fc3\.weight: file \[10, 200\] float32, model \[5, 200\] float32, fc3\.bias/);
    const loose = planWeights('small-cnn', five, sc.tensors, { strict: false });
    t.is(loose.assign.length, 14);
    t.regex(loose.warnings.join('\n'), /strict: false: loaded the 14 tensors that match/);

    const wrn = await readWeightsFile(path.join(dir, 'wrn-16-4.pt'));
    const r20 = await targets({ arch: 'resnet20', inChannels: 3 });
    const e2 = t.throws(() => planWeights('resnet20', r20, wrn.tensors, { what: 'wrn-16-4.pt' })) as FisherLensError;
    t.regex(e2.message, /^wrn-16-4\.pt does not fit resnet20: missing from the file \(\d+\): .*; not in the model \(\d+\): block1\.layer\.0/);
    // sub_block1 is ignored only for the WideResNets
    const trades = await readWeightsFile(path.join(dir, 'small-cnn-trades.pt'));
    t.is(trades.format, 'torch-legacy');
    const tiny = await targets({ arch: 'small-cnn' });
    t.is(planWeights('small-cnn', tiny, trades.tensors).assign.length, 14);
  });
}
