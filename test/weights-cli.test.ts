/**
 * The weights files from the CLI and configs: `--model SPEC --weights FILE` on a command gives
 * the model Python's logits (checked through eval's accuracy on labels made from those logits),
 * `--model state_dict.pt` says what to do instead, `info --model FILE` describes a file without
 * running it, `train --export-weights` writes a file PyTorch loads, and a config's `model.weights`
 * loads through the experiment runner's model factory.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { Model, ModelSpec, Tensor } from '../lib';
import { defaultScience } from '../lib/experiment/science';
import { cli, errorLine, tmpDir } from './reliability/harness';
import { readNpy, writeNpy } from './fisher-fixtures';
import { fixturePythons, modelWeightFixtures, weightFixtures, MODEL_WRITER } from './helpers/weights-fixtures';

const py = fixturePythons().get('torch1');
const dir = tmpDir('weights-cli');
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Labels from logits [B, K] shifted by `shift` classes (0: the arg-max, so accuracy is 1). */
function labels(logits: Float32Array, k: number, shift: number, file: string): string {
  const b = logits.length / k;
  const y = new BigInt64Array(b);
  for (let i = 0; i < b; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (logits[i * k + j] > logits[i * k + best]) best = j;
    y[i] = BigInt((best + shift) % k);
  }
  writeNpy(file, y, [b]);
  return file;
}

if (!py) test.skip('weights CLI: no Python with torch (python3-torch)', () => {});
else {
  test.serial('eval --model SPEC --weights FILE scores the published TRADES layout as Python does', async (t) => {
    const { dir: fx, expected } = modelWeightFixtures('torch1', py);
    const e = expected.files['small-cnn-trades.pt'];
    const z = readNpy(path.join(fx, e.logits)).data as Float32Array;
    for (const [shift, acc] of [[0, 1], [1, 0]]) {
      const y = labels(z, 10, shift, path.join(dir, `y${shift}.npy`));
      const r = await cli(['eval', '--model', JSON.stringify(e.spec), '--weights', path.join(fx, 'small-cnn-trades.pt'),
        '--data', path.join(fx, e.x), '--labels', y, '--json']);
      t.is(r.code, 0, r.stderr);
      t.is(JSON.parse(r.stdout).accuracy, acc);
      t.regex(r.stderr, /weights: 14 tensors from .*small-cnn-trades\.pt, torch-legacy; TRADES' SmallCNN \(feature_extractor\.\* \/ classifier\.\*\): 14 keys renamed; kept from the spec: norm_mean, norm_std/);
    }
  });

  test.serial('a state dict as --model, a file that does not fit, and a hostile pickle are one coded line each', async (t) => {
    const { dir: fx, expected } = modelWeightFixtures('torch1', py);
    const { dir: wf } = weightFixtures('torch1', py);
    const e = expected.files['small-cnn.pt'];
    const data = ['--data', path.join(fx, e.x)];
    const cases: [string[], string, RegExp][] = [
      [['eval', '--model', path.join(fx, 'small-cnn.pt'), ...data], 'ERR_FORMAT', /is a state dict .*use --model SPEC --weights/],
      [['fisher', '--model', path.join(fx, 'small-cnn.safetensors'), ...data], 'ERR_FORMAT', /is a state dict/],
      [['eval', '--model', path.join(fx, 'small-cnn-legacy.pt'), ...data], 'ERR_FORMAT', /is a state dict/],
      [['eval', '--model', '{"arch":"small-cnn","numClasses":5}', '--weights', path.join(fx, 'small-cnn.pt'), ...data], 'ERR_FORMAT', /fc3\.weight: file \[10, 200\] float32, model \[5, 200\]/],
      [['eval', '--model', 'small-cnn', '--weights', path.join(wf, 'hostile-os-system.pt'), ...data], 'ERR_FORMAT', /'os\.system' is not allowed/],
      [['eval', '--model', 'small-cnn', '--weights-entry', 'ema', ...data], 'ERR_ARG', /need --weights/],
      [['eval', '--model', 'small-cnn', '--weights', path.join(fx, 'small-cnn-nested.pt'), '--weights-entry', 'ema', ...data], 'ERR_FORMAT', /no entry 'ema' \(keys: epoch, state_dict, best_acc\)/],
      [['info', '--model', path.join(wf, 'hostile-torch-save.pt')], 'ERR_FORMAT', /'posix\.system' is not allowed/],
    ];
    for (const [args, code, msg] of cases) {
      const r = await cli(args);
      const el = errorLine(r);
      t.is(el.code, code, `${args.join(' ')}: ${r.stderr}`);
      t.is(el.lines, 1);
      t.false(el.stack);
      t.regex(el.line, msg);
    }
    t.false(fs.existsSync(JSON.parse(fs.readFileSync(path.join(wf, 'expected.json'), 'utf8')).hostile_marker));
  });

  test.serial('info --model describes each kind of file and names the architecture a state dict fits', async (t) => {
    const { dir: fx } = modelWeightFixtures('torch1', py);
    const r = await cli(['info', '--model', path.join(fx, 'wrn-16-4-trades-dp.pt')]);
    t.is(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    t.like(j, { kind: 'state-dict', format: 'torch-zip', fits: { arch: 'wrn-16-4', inChannels: 3, numClasses: 10 }, mapping: { tensors: 83 } });
    t.regex(j.mapping.ignored[0], /sub_block1/);
    t.regex(j.use, /^--model '\{"arch":"wrn-16-4".*\}' --weights /);
    const vgg = JSON.parse((await cli(['info', '--model', path.join(fx, 'vgg16.pt')])).stdout);
    t.like(vgg, { fits: { arch: 'vgg16', inChannels: 3, numClasses: 100 } });
    const spec = path.join(dir, 'spec.json');
    fs.writeFileSync(spec, '{"arch": "lenet"}');
    t.like(JSON.parse((await cli(['info', '--model', spec])).stdout), { kind: 'spec', spec: { arch: 'lenet' } });
  });

  test.serial('train --weights … --export-weights writes a file PyTorch loads with FisherLens\' logits', async (t) => {
    const { dir: fx, expected } = modelWeightFixtures('torch1', py);
    const e = expected.files['mlp.pt'];
    const x = readNpy(path.join(fx, e.x));
    const y = labels(readNpy(path.join(fx, e.logits)).data as Float32Array, 10, 1, path.join(dir, 'ytrain.npy'));
    for (const out of [path.join(dir, 'trained.pt'), path.join(dir, 'trained.safetensors')]) {
      // numClasses explicit: train fills what a spec leaves out from the data (3 labels here)
      const r = await cli(['train', '--model', JSON.stringify({ ...e.spec, numClasses: 10 }), '--weights', path.join(fx, 'mlp.pt'), '--data', path.join(fx, e.x), '--labels', y,
        '--epochs', '1', '--batch-size', '3', '--probe-size', '0', '--export-weights', out]);
      t.is(r.code, 0, r.stderr);
      t.regex(r.stderr, /weights written to/);
      // the trained weights differ from the loaded ones (one SGD step on wrong labels), so this
      // checks the export, not the fixture: FisherLens and PyTorch agree on the exported file
      const m = Model.create(e.spec as ModelSpec);
      await m.loadWeights(out);
      const ours = (await m.forward(Tensor.from(x.data as Float32Array, x.shape))).toArray() as Float32Array;
      const before = readNpy(path.join(fx, e.logits)).data as Float32Array;
      t.true(ours.some((v, i) => Math.abs(v - before[i]) > 1e-4), 'training changed the weights');
      const tv = fixturePythons().get(out.endsWith('.safetensors') ? 'torch2' : 'torch1');
      if (!tv) continue;
      const zf = path.join(dir, `z-${path.basename(out)}.npy`);
      const p = spawnSync(tv, [MODEL_WRITER, 'logits', '--spec', JSON.stringify(e.spec), '--weights', out, '--x', path.join(fx, e.x), '--out', zf], { encoding: 'utf8' });
      t.is(p.status, 0, p.stderr);
      const theirs = readNpy(zf).data as Float32Array;
      // same LibTorch kernels on the same float32 weights: ≤ 1e-5 (see weights-models.test.ts)
      t.true(ours.every((v, i) => Math.abs(v - theirs[i]) <= 1e-5), `${out}: PyTorch's logits differ`);
      m.dispose();
    }
    const bad = await cli(['train', '--model', JSON.stringify(e.spec), '--data', path.join(fx, e.x), '--labels', y, '--epochs', '1', '--probe-size', '0',
      '--export-weights', path.join(dir, 'no-such-dir', 'w.pt')]);
    t.is(errorLine(bad).code, 'ERR_IO');
  });

  test('a config\'s model.weights loads through the runner\'s model factory', async (t) => {
    const { dir: fx, expected } = modelWeightFixtures('torch1', py);
    const e = expected.files['resnet20-no-norm.pt'];
    const { arch, mean, std } = e.spec as ModelSpec & { arch: 'resnet20' };
    const x = readNpy(path.join(fx, e.x));
    const m = await defaultScience().createModel({ arch, mean, std, weights: path.join(fx, 'resnet20-no-norm.pt') },
      { size: 3, imageShape: [3, 32, 32], numClasses: 10 }, { seed: 0, device: 'cpu' });
    const z = (await m.forward(Tensor.from(x.data as Float32Array, x.shape))).toArray() as Float32Array;
    const want = readNpy(path.join(fx, e.logits)).data as Float32Array;
    t.true(z.every((v, i) => Math.abs(v - want[i]) <= 1e-5));
    m.dispose();
  });
}
