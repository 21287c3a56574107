/**
 * The slow weights check (FISHERLENS_SLOW=1): TRADES' WideResNet-34-10 at its published size
 * (46 M parameters, with the unused sub_block1), written by PyTorch in TRADES' layout (legacy
 * format, cuda:0) and under DataParallel (zip), loads with logits within 1e-5 of PyTorch's.
 * CI runs the same layouts narrow (wrn-16-4, test/weights-models.test.ts).
 */
import test from 'ava';
import * as path from 'path';
import { Model, ModelSpec, Tensor } from '../lib';
import { readNpy } from './fisher-fixtures';
import { fixturePythons, modelWeightFixtures } from './helpers/weights-fixtures';

const py = fixturePythons().get('torch1') ?? fixturePythons().get('torch2');

if (!process.env.FISHERLENS_SLOW || !py) {
  test.skip('wrn-34-10 in TRADES\' layout: a slow test (set FISHERLENS_SLOW=1; needs python3-torch)', () => {});
} else {
  test('wrn-34-10 in TRADES\' layout loads with PyTorch\'s logits', async (t) => {
    const { dir, expected } = modelWeightFixtures('torch1', py, 'write-slow');
    const e = expected.files['wrn-34-10-trades.pt'];
    const m = Model.create(e.spec as ModelSpec);
    const x = readNpy(path.join(dir, e.x));
    for (const file of ['wrn-34-10-trades.pt', 'wrn-34-10-trades-dp.pt']) {
      const r = await m.loadWeights(path.join(dir, file));
      t.is(r.loaded, 191);
      t.regex(r.ignored.join(), /61 keys ignored/);
      const z = (await m.forward(Tensor.from(x.data as Float32Array, x.shape))).toArray() as Float32Array;
      const want = readNpy(path.join(dir, e.logits)).data as Float32Array;
      // same kernels, same weights; float32 sums in other orders (see weights-models.test.ts)
      const d = Math.max(...Array.from(z, (v, i) => Math.abs(v - want[i])));
      t.log(`${file}: max |Δlogit| ${d.toExponential(1)}`);
      t.true(d <= 1e-5);
    }
    m.dispose();
  });
}
