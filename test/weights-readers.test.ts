/**
 * The weights readers alone (no model): files written by PyTorch (Debian's torch 1.13, and torch
 * 2.x where its venv exists) read back to exactly the bytes Python saved; hostile pickles run
 * nothing and name their global; crafted, truncated and lying files are one ERR_FORMAT each.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import {
  FisherLensError, contiguousBytes, readWeights, readWeightsFile, unpickle, sniff, readSafetensors, readZip,
} from '../lib/science/weights';
import { fixturePythons, weightFixtures } from './helpers/weights-fixtures';

const pythons = fixturePythons();

/** Asserts `p` rejects with one FisherLensError of `code` whose message contains `phrase`. */
async function rejects(t: import('ava').ExecutionContext, p: Promise<unknown> | (() => unknown), code: FisherLensError['code'], phrase?: string | RegExp) {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  t.true(err instanceof FisherLensError, `expected a FisherLensError, got ${err instanceof Error ? err.stack : String(err)}`);
  const e = err as FisherLensError;
  t.is(e.code, code, e.message);
  if (phrase) t.regex(e.message, typeof phrase === 'string' ? new RegExp(phrase.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : phrase);
  return e;
}

if (pythons.size === 0) {
  test.skip('weights readers: no Python with torch (python3-torch) on this machine', () => {});
}

for (const [label, python] of pythons) {
  test(`${label}: every format reads to the exact bytes torch saved`, async (t) => {
    const { dir, expected } = weightFixtures(label, python);
    t.log(`torch ${expected.torch}; safetensors ${expected.files['tensors.safetensors'].how}`);
    for (const [file, want] of Object.entries(expected.files)) {
      const w = await readWeightsFile(path.join(dir, file));
      t.deepEqual(w.container, want.inner, file);
      // safetensors keeps no order (the package sorts by dtype, then name); torch files keep the dict's
      const names = w.tensors.map((x) => x.name);
      if (file.endsWith('.safetensors')) t.deepEqual(names.sort(), Object.keys(want.tensors).sort(), file);
      else t.deepEqual(names, Object.keys(want.tensors), `${file}: names in order`);
      for (const x of w.tensors) {
        const e = want.tensors[x.name];
        t.is(x.dtype as string, e.dtype, `${file}:${x.name}`);
        t.deepEqual(x.shape, e.shape, `${file}:${x.name}`);
        t.is(contiguousBytes(x).toString('base64'), e.b64, `${file}:${x.name} bytes`);
      }
      const format = file.endsWith('.safetensors') ? 'safetensors' : /legacy|model/.test(file) ? 'torch-legacy' : 'torch-zip';
      t.is(w.format, format, file);
      if (file.includes('cuda')) t.true(w.tensors.every((x) => x.location === 'cuda:0'), `${file}: locations`);
      if (file === 'tensors-nested.pt') t.deepEqual(w.extras, { epoch: '7', best_acc: '0.5' });
    }
    // views share one storage: the transpose and the slice of f32 point into the same bytes
    const z = await readWeightsFile(path.join(dir, 'tensors-zip.pt'));
    const by = new Map(z.tensors.map((x) => [x.name, x]));
    t.is(by.get('f32_t')!.storage, by.get('f32')!.storage);
    t.deepEqual([by.get('f32_t')!.strides, by.get('f32_slice')!.offset], [[1, 5], 7]);
  });

  test(`${label}: hostile pickles run nothing and name the global`, async (t) => {
    const { dir, expected } = weightFixtures(label, python);
    const marker = expected.hostile_marker;
    t.false(fs.existsSync(marker));
    const names: Record<string, string> = {
      'os-system': 'os.system', 'posix-stack-global': 'posix.system', 'builtins-eval': 'builtins.eval',
      'nested-in-ordereddict': 'os.system', class: '__main__.Evil', 'torch-save': 'posix.system',
    };
    let n = 0;
    for (const [name, files] of Object.entries(expected.hostile)) {
      const global = names[name];
      t.truthy(global, name);
      if (files.pkl) {
        const buf = fs.readFileSync(path.join(dir, files.pkl));
        await rejects(t, () => unpickle(buf), 'ERR_FORMAT', `'${global}' is not allowed`);
        n++;
      }
      for (const f of [files.zip, files.legacy]) {
        if (!f) continue;
        await rejects(t, readWeightsFile(path.join(dir, f)), 'ERR_FORMAT', `'${global}' is not allowed`);
        n++;
      }
    }
    t.true(n >= 14, `${n} hostile files`);
    t.false(fs.existsSync(marker), 'the marker file appeared: a hostile pickle ran');
  });

  test(`${label}: crafted storages and views that lie are one ERR_FORMAT each`, async (t) => {
    const { dir, expected } = weightFixtures(label, python);
    for (const [file, phrase] of Object.entries((expected as unknown as { crafted: Record<string, string | null> }).crafted)) {
      if (phrase === null) {
        const w = await readWeightsFile(path.join(dir, file));
        t.deepEqual([...new Float32Array(Uint8Array.from(contiguousBytes(w.tensors[0])).buffer)], [2, 3, 4], file);
      } else {
        await rejects(t, readWeightsFile(path.join(dir, file)), 'ERR_FORMAT', phrase);
      }
    }
  });

  test(`${label}: truncated and corrupted copies of every format are one ERR_FORMAT each`, async (t) => {
    const { dir } = weightFixtures(label, python);
    for (const file of ['tensors-zip.pt', 'tensors-legacy.pt', 'tensors.safetensors']) {
      const buf = fs.readFileSync(path.join(dir, file));
      for (const cut of [1, 7, 8, 9, 30, Math.floor(buf.length / 3), Math.floor(buf.length / 2), buf.length - 23, buf.length - 1]) {
        await rejects(t, readWeights(buf.subarray(0, cut), { what: `${file}[:${cut}]` }), 'ERR_FORMAT');
      }
    }
    // a flipped byte inside a zip entry's data fails its CRC-32
    const zip = Buffer.from(fs.readFileSync(path.join(dir, 'tensors-zip.pt')));
    const entry = [...(await readZip(zip)).entries()].find(([n]) => n.endsWith('/data/0'))![1];
    zip[entry.byteOffset - zip.byteOffset + 3] ^= 0xff;
    await rejects(t, readWeights(zip), 'ERR_FORMAT', /CRC-32|zip/);
  });
}

// ---------------------------------------------------------------- safetensors built here

/** A safetensors file from a header object and a data section (the header as given, unchecked). */
function st(header: object, data: Buffer): Buffer {
  let h = Buffer.from(JSON.stringify(header));
  h = Buffer.concat([h, Buffer.alloc(-h.length & 7, 0x20)]);
  const n = Buffer.alloc(8);
  n.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([n, h, data]);
}

test('safetensors: lying headers are one ERR_FORMAT each, before anything is allocated', async (t) => {
  const data = Buffer.from(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
  const ok = st({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2, 2], data_offsets: [8, 24] } }, data);
  const w = readSafetensors(ok);
  t.deepEqual(w.tensors.map((x) => [x.name, x.shape, [...new Float32Array(Uint8Array.from(contiguousBytes(x)).buffer)]]), [
    ['a', [2], [1, 2]], ['b', [2, 2], [3, 4, 5, 6]],
  ]);
  t.is(await sniff(ok), 'safetensors');
  const bad: [string, Buffer, string | RegExp][] = [
    ['overlap', st({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, data), 'overlaps'],
    ['past the end', st({ a: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, data), 'out of range'],
    ['gap', st({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [16, 24] } }, data), 'unclaimed'],
    ['short of the end', st({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data), 'cover 8 bytes'],
    ['huge shape', st({ a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 24] } }, data), 'needs 4835703278458516698824704 bytes'],
    ['shape vs offsets', st({ a: { dtype: 'F32', shape: [5], data_offsets: [0, 24] } }, data), 'needs 20 bytes'],
    ['negative shape', st({ a: { dtype: 'F32', shape: [-6], data_offsets: [0, 24] } }, data), 'shape'],
    ['bad dtype', st({ a: { dtype: 'F8_E4M3', shape: [24], data_offsets: [0, 24] } }, data), 'dtype "F8_E4M3"'],
    ['bad metadata', st({ __metadata__: { a: 1 }, a: { dtype: 'F32', shape: [6], data_offsets: [0, 24] } }, data), '__metadata__'],
  ];
  for (const [what, buf, phrase] of bad) {
    const e = await rejects(t, () => readSafetensors(buf, what), 'ERR_FORMAT', phrase);
    t.regex(e.message, new RegExp(`^${what}`));
  }
  // a header length past the end, and one over the format's limit
  const lying = Buffer.from(ok);
  lying.writeBigUInt64LE(BigInt(ok.length));
  await rejects(t, () => readSafetensors(lying), 'ERR_FORMAT', 'runs past the end');
  lying.writeBigUInt64LE(2n ** 63n);
  await rejects(t, () => readSafetensors(lying), 'ERR_FORMAT', 'exceeds');
  const notJson = Buffer.from(ok);
  notJson[10] = 0xff;
  await rejects(t, () => readSafetensors(notJson), 'ERR_FORMAT', 'not UTF-8 JSON');
});

test('files are told apart by content, never by extension', async (t) => {
  const fake = Buffer.from('FLCKPT\x00\x02 rest of a FisherLens checkpoint', 'latin1');
  t.is(await sniff(fake), 'fisherlens-checkpoint');
  await rejects(t, readWeights(fake, { what: 'x.safetensors' }), 'ERR_FORMAT', 'is a FisherLens checkpoint');
  await rejects(t, readWeights(Buffer.from('hello world, not weights'), { what: 'w.pt' }), 'ERR_FORMAT', 'is not a weights file');
  await rejects(t, readWeightsFile('/no/such/weights.pt'), 'ERR_IO', 'ENOENT');
});

test('unpickler: malformed pickles are ERR_FORMAT, never an exception of another kind', async (t) => {
  const cases: [string, Buffer, string][] = [
    ['empty', Buffer.alloc(0), 'empty'],
    ['stop on empty stack', Buffer.from([0x80, 0x02, 0x2e]), 'underflow'],
    ['no stop', Buffer.from([0x80, 0x02, 0x4e]), 'truncated'],
    ['memo before write', Buffer.from([0x80, 0x02, 0x68, 0x05, 0x2e]), 'memo slot 5'],
    ['append to a dict', Buffer.from([0x80, 0x02, 0x7d, 0x4e, 0x61, 0x2e]), 'APPEND to dict'],
    ['protocol 6', Buffer.from([0x80, 0x06, 0x4e, 0x2e]), 'protocol 6'],
    ['reduce on a tuple', Buffer.from([0x80, 0x02, 0x29, 0x29, 0x52, 0x2e]), 'not callable'],
    ['newobj', Buffer.from('\x80\x02ctorch\nTensor\n)\x81.', 'latin1'), 'NEWOBJ'],
    ['storage class called', Buffer.from('\x80\x02ctorch\nFloatStorage\n)R.', 'latin1'), 'torch.FloatStorage is not callable'],
    ['persistent id unasked', Buffer.from([0x80, 0x02, 0x4e, 0x51, 0x2e]), 'persistent id'],
    ['huge BINUNICODE8', Buffer.from([0x80, 0x04, 0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x2e]), 'longer than the file'],
    ['leftover stack', Buffer.from([0x80, 0x02, 0x4e, 0x4e, 0x2e]), 'left on the stack'],
  ];
  for (const [what, buf, phrase] of cases) {
    const e = await rejects(t, () => unpickle(buf), 'ERR_FORMAT', phrase);
    t.truthy(e, what);
  }
  // and the data it does know comes out as Python built it
  const ok = unpickle(Buffer.from('\x80\x02]q\x00(K\x01J\xff\xff\xff\xff\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01G?\xf8\x00\x00\x00\x00\x00\x00\x88Ne.', 'latin1'));
  t.deepEqual(ok.value, [1, -1, 2n ** 64n, 1.5, true, null]);
});
