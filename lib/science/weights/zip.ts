/**
 * The zip container of torch.save (torch >= 1.6), read with yauzl over the file's bytes.
 *
 * yauzl (thejoshwolfe/yauzl, 3.x): maintained for a decade, no native code, one small dependency,
 * and strict: it checks the end-of-central-directory record, Zip64 fields, that every entry and
 * local header lies inside the file, and entry sizes; and `readLocalFileHeader` gives where an
 * entry's data starts, so a stored entry is a view of the bytes already in memory (fflate, the
 * other well-kept choice, copies every entry out and cannot say where its data is). yauzl does not
 * check CRC-32; this module does, with zlib.crc32. torch writes every entry stored (method 0); a
 * compressed entry is ERR_FORMAT rather than inflated, so reading never allocates more than the
 * file.
 */
import * as yauzl from 'yauzl';
import * as zlib from 'zlib';
import { formatError } from './types';

/** Entry name → its bytes (a view of the archive buffer). */
export type ZipEntries = Map<string, Buffer>;

/** Whether `buf` starts like a zip archive (a local file header, or an empty archive's end record). */
export function looksLikeZip(buf: Buffer): boolean {
  return buf.length >= 4 && buf[0] === 0x50 && buf[1] === 0x4b && ((buf[2] === 3 && buf[3] === 4) || (buf[2] === 5 && buf[3] === 6));
}

/** Reads every entry of a zip archive held in `buf`. Any defect is one ERR_FORMAT naming it. */
export async function readZip(buf: Buffer, what = 'zip archive'): Promise<ZipEntries> {
  let zip: yauzl.ZipFile;
  try {
    zip = await openBuffer(buf);
  } catch (e) {
    throw formatError(`${what}: not a readable zip archive (${(e as Error).message})`);
  }
  const out: ZipEntries = new Map();
  try {
    for (;;) {
      const entry = await nextEntry(zip);
      if (!entry) break;
      const name = entry.fileName;
      if (name.endsWith('/')) continue; // a folder
      if (entry.compressionMethod !== 0) {
        throw formatError(`${what}: entry '${name}' is compressed (method ${entry.compressionMethod}); torch.save writes stored entries — save it again with torch.save`);
      }
      if (entry.isEncrypted()) throw formatError(`${what}: entry '${name}' is encrypted`);
      if (entry.compressedSize !== entry.uncompressedSize) {
        throw formatError(`${what}: stored entry '${name}' declares ${entry.compressedSize} bytes stored but ${entry.uncompressedSize} unpacked`);
      }
      const { fileDataStart } = await localHeader(zip, entry);
      const end = fileDataStart + entry.compressedSize;
      if (end > buf.length) throw formatError(`${what}: entry '${name}' runs past the end of the file (${end} > ${buf.length} bytes): truncated`);
      const data = buf.subarray(fileDataStart, end);
      if (zlib.crc32(data) !== entry.crc32) throw formatError(`${what}: entry '${name}' fails its CRC-32 check (corrupted)`);
      if (out.has(name)) throw formatError(`${what}: entry '${name}' appears twice`);
      out.set(name, data);
    }
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_FORMAT') throw e;
    throw formatError(`${what}: ${(e as Error).message}`);
  } finally {
    zip.close();
  }
  return out;
}

function openBuffer(buf: Buffer): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(buf, { lazyEntries: true, decodeStrings: true, validateEntrySizes: true, strictFileNames: false }, (err, zip) => {
      if (err || !zip) reject(err ?? new Error('no archive'));
      else resolve(zip);
    });
  });
}

function nextEntry(zip: yauzl.ZipFile): Promise<yauzl.Entry | null> {
  return new Promise((resolve, reject) => {
    const onEntry = (e: yauzl.Entry) => { cleanup(); resolve(e); };
    const onEnd = () => { cleanup(); resolve(null); };
    const onError = (err: Error) => { cleanup(); reject(err); };
    const cleanup = () => {
      zip.removeListener('entry', onEntry);
      zip.removeListener('end', onEnd);
      zip.removeListener('error', onError);
    };
    zip.on('entry', onEntry);
    zip.on('end', onEnd);
    zip.on('error', onError);
    zip.readEntry();
  });
}

function localHeader(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<{ fileDataStart: number }> {
  return new Promise((resolve, reject) => {
    zip.readLocalFileHeader(entry, { minimal: true }, (err, h) => (err ? reject(err) : resolve(h)));
  });
}
