/**
 * Parser fuzzing: every truncation of small valid IDX / .npy / CIFAR files, and random bytes,
 * must reject with ERR_FORMAT (never crash, never another code); intact files must load.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { addon } from '../lib/binding/native';
import { runOp } from '../lib/binding/op';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-fuzz-'));


function idxBytes(dims: number[], n: number): Buffer {
  const h = Buffer.alloc(4 + 4 * dims.length);
  h[2] = 8;
  h[3] = dims.length;
  dims.forEach((d, i) => h.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([h, Buffer.from(Array.from({ length: n }, (_, i) => i % 10))]);
}

function npyBytes(): Buffer {
  const header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 3), }";
  const total = 10 + header.length + 1;
  const padded = header + ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const h = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(h);
  h.writeUInt16LE(padded.length, 8);
  const data = Buffer.from(Float32Array.from({ length: 18 }, (_, i) => i / 18).buffer);
  return Buffer.concat([h, Buffer.from(padded, 'latin1'), data]);
}

/** Loads `bytes` with `load`; returns 'ok' or the error code (a crash would kill the test process). */
async function outcome(file: string, bytes: Buffer, load: (f: string) => Promise<unknown>): Promise<string> {
  fs.writeFileSync(file, bytes);
  try {
    await runOp({}, () => load(file));
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? 'no code';
  }
}

/** `validAt`: lengths that are themselves valid files (whole CIFAR records). */
async function truncations(t: { is: (a: unknown, b: unknown, m?: string) => void }, name: string, full: Buffer,
  load: (f: string) => Promise<unknown>, step = 1, validAt: (n: number) => boolean = () => false): Promise<void> {
  const file = path.join(tmp, name);
  t.is(await outcome(file, full, load), 'ok', `${name}: the intact file loads`);
  for (let n = 0; n < full.length; n += step) {
    t.is(await outcome(file, full.subarray(0, n), load), validAt(n) ? 'ok' : 'ERR_FORMAT', `${name} truncated to ${n} bytes`);
  }
}

const labels = path.join(tmp, 'labels-ok');
fs.writeFileSync(labels, idxBytes([4], 4));

test('IDX images: every truncation (raw and gzip) is ERR_FORMAT', async (t) => {
  const full = idxBytes([4, 3, 3], 36);
  await truncations(t, 'img.idx', full, (f) => addon().loadIdx(f, labels, 10));
  await truncations(t, 'img.idx.gz', zlib.gzipSync(full), (f) => addon().loadIdx(f, labels, 10));
});

test('IDX labels: every truncation is ERR_FORMAT', async (t) => {
  const img = path.join(tmp, 'img-ok');
  fs.writeFileSync(img, idxBytes([4, 2, 2], 16));
  await truncations(t, 'lbl.idx', idxBytes([4], 4), (f) => addon().loadIdx(img, f, 10));
});

test('.npy: every truncation is ERR_FORMAT', async (t) => {
  await truncations(t, 'x.npy', npyBytes(), (f) => addon().loadNpy(f, 'images'));
  await truncations(t, 'x.npy.gz', zlib.gzipSync(npyBytes()), (f) => addon().loadNpy(f, 'raw'));
});

test('CIFAR: truncations are ERR_FORMAT', async (t) => {
  const rec = Buffer.alloc(2 * 3073);
  rec[0] = 3;
  rec[3073] = 7;
  await truncations(t, 'c10.bin', rec, (f) => addon().loadCifar([f], 10, false), 3, (n) => n > 0 && n % 3073 === 0);
});

test('random bytes never crash: ERR_FORMAT (or, by chance, a valid file)', async (t) => {
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const file = path.join(tmp, 'random');
  const loaders: [string, (f: string) => Promise<unknown>, Buffer][] = [
    ['idx', (f) => addon().loadIdx(f, labels, 10), idxBytes([4, 3, 3], 36)],
    ['npy', (f) => addon().loadNpy(f, 'images'), npyBytes()],
    ['cifar', (f) => addon().loadCifar([f], 100, false), Buffer.alloc(3074)],
  ];
  for (const [name, load, valid] of loaders) {
    for (let i = 0; i < 150; i++) {
      const len = Math.floor(rnd() * 200);
      let b = Buffer.from(Array.from({ length: len }, () => Math.floor(rnd() * 256)));
      if (i % 3 === 0) {
        // keep the valid header, corrupt the rest: reaches the deeper checks
        b = Buffer.from(valid);
        for (let k = 0; k < 4; k++) b[Math.floor(rnd() * b.length)] = Math.floor(rnd() * 256);
      }
      const r = await outcome(file, b, load);
      t.true(r === 'ERR_FORMAT' || r === 'ok', `${name} #${i}: ${r}`);
    }
    t.is(await outcome(file, Buffer.alloc(0), load), 'ERR_FORMAT');
  }
  t.is(await outcome(path.join(tmp, 'missing'), Buffer.alloc(0), () => addon().loadNpy(path.join(tmp, 'nope.npy'), 'raw')), 'ERR_IO');
});
