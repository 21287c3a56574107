import test from 'ava';
import * as path from 'path';
import { expandRuns, loadConfig } from '../lib/experiment/grid';

const root = path.join(__dirname, '..', '..');
const METHODS = ['natural', 'pgd-at', 'trades', 'mart', 'fire', 'jacobian', 'fisher-trace', 'fisher-lambda'];
const load = (f: string) => expandRuns(loadConfig(path.join(root, 'configs', f)));
/** The tuned knob of each method (configs/training-methods-tune.yaml's winners). */
const knob = (r: ReturnType<typeof load>[number]) => [r.train.method, r.train.beta ?? null, r.train.lambda ?? null];

test('training-methods.yaml: eight methods × 3 seeds on small-cnn Fashion-MNIST, AutoAttack standard and the masking checks', (t) => {
  const runs = load('training-methods.yaml');
  t.is(runs.length, 24);
  t.deepEqual([...new Set(runs.map((r) => r.train.method))], METHODS);
  for (const m of METHODS) t.deepEqual(runs.filter((r) => r.train.method === m).map((r) => r.seed), [0, 1, 2]);
  for (const r of runs) {
    t.is(r.model.arch, 'small-cnn');
    t.is(r.data.dataset, 'fashion-mnist');
    const aa = r.eval.attacks.find((a) => a.type === 'autoattack')!;
    t.is(aa.version, 'standard');
    t.truthy(r.eval.attacks.find((a) => a.type === 'square' && a.epsilon === aa.epsilon), 'Square alone at the AutoAttack ε');
    t.truthy(r.eval.attacks.find((a) => a.type === 'pgd' && a.epsilon >= 0.5), 'a large-ε PGD');
  }
});

test('training-methods-small.yaml is the same comparison at CPU scale: the same methods, seeds, presets and inner maximisation', (t) => {
  const full = load('training-methods.yaml');
  const small = load('training-methods-small.yaml');
  t.deepEqual(small.map((r) => r.id), full.map((r) => r.id));
  t.deepEqual(small.map(knob), full.map(knob));
  t.deepEqual(small.map((r) => [r.train.epsilon, r.train.stepSize, r.train.steps]), full.map((r) => [r.train.epsilon, r.train.stepSize, r.train.steps]));
  t.true(small.every((r) => r.eval.attacks.some((a) => a.type === 'square') && r.eval.attacks.some((a) => a.type === 'autoattack')));
});

test('training-methods-tune.yaml tunes on held-out training images only, and its winners are the presets', (t) => {
  const tune = load('training-methods-tune.yaml');
  t.is(tune.length, 21);
  t.true(tune.every((r) => r.data.evalSplit === 'heldout' && r.train.epochs === 1 && r.seed === 0));
  const methods = new Set(tune.map((r) => r.train.method));
  t.deepEqual([...methods], ['trades', 'mart', 'fire', 'jacobian', 'fisher-trace', 'fisher-lambda']);
  // every preset of the comparison is a value of its method's tuning grid
  for (const r of load('training-methods.yaml').filter((r) => methods.has(r.train.method))) {
    t.true(tune.some((u) => knob(u).join() === knob(r).join()), `${r.id}: ${knob(r).join()}`);
  }
});
