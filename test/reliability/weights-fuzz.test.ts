/**
 * Fuzz over each weights reader (torch zip, torch legacy, safetensors, the bare unpickler): seeded
 * mutations of files PyTorch wrote (flipped bytes, truncations, insertions, 64-bit fields set to
 * huge values). Each mutant must either read — and then every tensor view lies inside its storage
 * and materialises to numel × element-size bytes — or fail with one FisherLensError ERR_FORMAT.
 * Any other exception, or a hang, is a defect.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { DTYPES, FisherLensError, contiguousBytes, numelOf, readWeights, unpickle, readZip } from '../../lib/science/weights';
import { StorageRef } from '../../lib/science/weights/pickle';
import { fixturePythons, weightFixtures } from '../helpers/weights-fixtures';

/** mulberry32: a small seeded generator, so a failing mutant can be rebuilt from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One mutant of `base` drawn from `r`. */
function mutate(base: Buffer, r: () => number): Buffer {
  const pick = (n: number) => Math.floor(r() * n);
  const b = Buffer.from(base);
  switch (pick(5)) {
    case 0: { // flip 1-4 bytes
      for (let i = 1 + pick(4); i > 0; i--) b[pick(b.length)] ^= 1 + pick(255);
      return b;
    }
    case 1: return b.subarray(0, pick(b.length)); // truncate
    case 2: { // insert 1-16 random bytes
      const at = pick(b.length);
      const ins = Buffer.from(Array.from({ length: 1 + pick(16) }, () => pick(256)));
      return Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
    }
    case 3: { // a 64-bit little-endian field set to a huge or negative value
      const at = pick(Math.max(1, b.length - 8));
      b.writeBigUInt64LE([2n ** 63n - 1n, 2n ** 62n, 2n ** 40n, 2n ** 64n - 1n][pick(4)], at);
      return b;
    }
    default: { // a 32-bit field set to a huge value (zip sizes and offsets, pickle lengths)
      const at = pick(Math.max(1, b.length - 4));
      b.writeUInt32LE([0xffffffff, 0x7fffffff, 0x10000][pick(3)], at);
      return b;
    }
  }
}

const pythons = fixturePythons();
const PER_FILE = 400;

if (!pythons.has('torch1')) test.skip('weights fuzz: no Python with torch (python3-torch)', () => {});
else {
  test('fuzz: every mutant of every reader reads consistently or is one ERR_FORMAT', async (t) => {
    const { dir } = weightFixtures('torch1', pythons.get('torch1')!);
    const zipBuf = fs.readFileSync(path.join(dir, 'tensors-zip.pt'));
    const pkl = [...(await readZip(zipBuf)).entries()].find(([n]) => n.endsWith('data.pkl'))![1];
    const bases: [string, Buffer, (b: Buffer) => Promise<unknown>][] = [];
    const whole = async (b: Buffer) => {
      const w = await readWeights(b);
      for (const x of w.tensors) {
        const bytes = contiguousBytes(x);
        if (bytes.length !== numelOf(x.shape) * DTYPES[x.dtype].size) throw new Error(`tensor ${x.name}: ${bytes.length} bytes for shape ${x.shape}`);
      }
    };
    for (const f of ['tensors-zip.pt', 'tensors-legacy.pt', 'tensors.safetensors', 'tensors-nested.pt']) bases.push([f, fs.readFileSync(path.join(dir, f)), whole]);
    // the unpickler alone, with every persistent id answered by a storage
    bases.push(['data.pkl', Buffer.from(pkl), async (b) => unpickle(b, 0, { persistentLoad: () => new StorageRef('0', 'float32', 'cpu', 4) })]);
    const failures: string[] = [];
    let read = 0, refused = 0;
    for (const [name, base, run] of bases) {
      for (let i = 0; i < PER_FILE; i++) {
        const seed = (name.length * 7919 + i) >>> 0;
        const m = mutate(base, rng(seed));
        try {
          // a reader that never settles is a defect too
          await Promise.race([run(m), new Promise((_, rej) => setTimeout(() => rej(new Error('hang (> 5 s)')), 5000).unref())]);
          read++;
        } catch (e) {
          if (e instanceof FisherLensError && e.code === 'ERR_FORMAT') refused++;
          else failures.push(`${name} seed ${seed}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
        }
      }
    }
    t.log(`${bases.length} readers × ${PER_FILE} mutants: ${read} read consistently, ${refused} refused with ERR_FORMAT, ${failures.length} other`);
    t.deepEqual(failures.slice(0, 20), []);
    t.true(refused > bases.length * PER_FILE * 0.3, 'most mutants should be refused');
  });
}
