/**
 * torch.export archives (.pt2) that lie: truncations, bad JSON, another schema, shape lies in the
 * weights records and in the graph, weight files of the wrong size, unknown scalar types, missing
 * records, dangling graph values, and seeded random byte mutations. Each must load and run, or
 * fail with one FisherLensError (a coded error): never another exception, a crash or a hang.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model, Tensor, FisherLensError } from '../../lib';
import { readZip } from '../../lib/science/weights';
import { encodeStoredZip } from '../../lib/science/weights/write';
import { uniformStream } from '../../lib/util/random';
import { pt2Exporters, pt2Fixtures } from '../helpers/weights-fixtures';

const exporters = pt2Exporters();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-pt2-fuzz-'));
test.after.always(() => fs.rmSync(tmp, { recursive: true, force: true }));

type Outcome = 'ran' | string;

/** Loads `bytes` as a .pt2 and runs a forward on x [2, 1, 28, 28]; the error code, or 'ran'. */
async function attempt(name: string, bytes: Buffer): Promise<Outcome> {
  const file = path.join(tmp, `${name}.pt2`);
  fs.writeFileSync(file, bytes);
  let m: Model | undefined;
  const x = Tensor.from(new Float32Array(2 * 784).fill(0.5), [2, 1, 28, 28]);
  try {
    m = await Model.load(file);
    (await m.forward(x)).dispose();
    return 'ran';
  } catch (e) {
    if (!(e instanceof FisherLensError)) throw new Error(`${name}: not a coded error: ${(e as Error).stack}`);
    return e.code;
  } finally {
    m?.dispose();
    x.dispose();
    fs.rmSync(file, { force: true });
  }
}

/** The archive with `change(name, bytes)` applied to each entry (undefined: drop it). */
async function rewrite(base: Buffer, change: (name: string, b: Buffer) => Buffer | undefined): Promise<Buffer> {
  const out: [string, Buffer][] = [];
  for (const [n, b] of await readZip(base)) {
    const c = change(n, Buffer.from(b));
    if (c) out.push([n, c]);
  }
  return encodeStoredZip(out);
}

const jsonEdit = (suffix: string, f: (j: Record<string, any>) => void) => (n: string, b: Buffer): Buffer => {
  if (!n.endsWith(suffix)) return b;
  const j = JSON.parse(b.toString('utf8')) as Record<string, any>;
  f(j);
  return Buffer.from(JSON.stringify(j));
};

if (exporters.size === 0) test.skip('.pt2 fuzz: no torch 2.x venv (bash scripts/torch-env.sh 2.13-cpu makes it)', () => {});
const [label, py] = [...exporters][0] ?? [];
if (label) {
  test(`${label}: lying .pt2 archives are coded errors`, async (t) => {
    const base = fs.readFileSync(path.join(pt2Fixtures(label, py), 'mlp.pt2'));
    t.is(await attempt('base', base), 'ran');
    const firstWeight = (n: string) => /data\/weights\/weight_0$/.test(n);
    const cases: [string, Buffer, string[]][] = [
      ...[0.1, 0.5, 0.9].map((f): [string, Buffer, string[]] => [`truncated at ${f}`, base.subarray(0, Math.floor(base.length * f)), ['ERR_FORMAT']]),
      ['truncated by one byte', base.subarray(0, base.length - 1), ['ERR_FORMAT']],
      ['the model JSON is not JSON', await rewrite(base, (n, b) => (n.endsWith('models/model.json') ? Buffer.from('{"graph_module": [') : b)), ['ERR_FORMAT']],
      ['export schema 9', await rewrite(base, jsonEdit('models/model.json', (j) => { j.schema_version.major = 9; })), ['ERR_FORMAT']],
      ['a weight record claims twice its elements', await rewrite(base, jsonEdit('_weights_config.json', (j) => {
        const e = Object.values(j.config)[0] as any;
        e.tensor_meta.sizes[0].as_int *= 2;
      })), ['ERR_FORMAT']],
      ['a weight file 4 bytes short', await rewrite(base, (n, b) => (firstWeight(n) ? b.subarray(0, b.length - 4) : b)), ['ERR_FORMAT']],
      ['an unknown scalar type', await rewrite(base, jsonEdit('_weights_config.json', (j) => { (Object.values(j.config)[0] as any).tensor_meta.dtype = 99; })), ['ERR_FORMAT']],
      ['no weights record', await rewrite(base, (n, b) => (n.endsWith('_weights_config.json') ? undefined : b)), ['ERR_FORMAT']],
      ['no archive_format', await rewrite(base, (n, b) => (n.endsWith('/archive_format') ? undefined : b)), ['ERR_FORMAT']],
      ['the graph claims 3 input channels', await rewrite(base, jsonEdit('models/model.json', (j) => {
        const g = j.graph_module.graph;
        const input = j.graph_module.signature.input_specs.find((s: any) => s.user_input).user_input.arg.as_tensor.name;
        g.tensor_values[input].sizes[1] = { as_int: 3 };
      })), ['ERR_SHAPE']],
      ['a node reads a value never computed', await rewrite(base, jsonEdit('models/model.json', (j) => {
        j.graph_module.graph.nodes[1].inputs[0].arg = { as_tensor: { name: 'nowhere' } };
      })), ['ERR_FORMAT']],
      ['a node calls a made-up op', await rewrite(base, jsonEdit('models/model.json', (j) => { j.graph_module.graph.nodes[0].target = 'os.system'; })), ['ERR_FORMAT']],
      ['a node lacks a required argument', await rewrite(base, jsonEdit('models/model.json', (j) => { j.graph_module.graph.nodes[0].inputs = []; })), ['ERR_FORMAT']],
      ['the signature names a weight the archive lacks', await rewrite(base, jsonEdit('models/model.json', (j) => {
        j.graph_module.signature.input_specs.find((s: any) => s.parameter).parameter.parameter_name = 'ghost.weight';
      })), ['ERR_FORMAT']],
    ];
    for (const [name, bytes, codes] of cases) {
      const got = await attempt(name.replace(/\W+/g, '-'), bytes);
      t.true(codes.includes(got), `${name}: ${got}, expected ${codes.join(' or ')}`);
    }
  });

  test(`${label}: seeded byte mutations of a .pt2 load and run or are coded errors`, async (t) => {
    const base = fs.readFileSync(path.join(pt2Fixtures(label, py), 'mlp.pt2'));
    const counts: Record<string, number> = {};
    for (let seed = 1; seed <= 60; seed++) {
      const r = uniformStream(seed);  // seeded: a failing mutant can be rebuilt from its seed
      const b = Buffer.from(base);
      const pick = (n: number) => Math.floor(r() * n);
      let m: Buffer = b;
      switch (pick(3)) {
        case 0: for (let i = 1 + pick(4); i > 0; i--) b[pick(b.length)] ^= 1 + pick(255); break;
        case 1: m = b.subarray(0, pick(b.length)); break;
        default: { const at = pick(b.length); m = Buffer.concat([b.subarray(0, at), Buffer.from([pick(256), pick(256)]), b.subarray(at)]); }
      }
      const got = await attempt(`seed-${seed}`, m);  // throws on anything but a FisherLensError
      counts[got] = (counts[got] ?? 0) + 1;
    }
    t.log(counts);
    t.true(Object.keys(counts).every((k) => k === 'ran' || k.startsWith('ERR_')));
  });
}
