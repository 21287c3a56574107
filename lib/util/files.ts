/**
 * File-system safety shared by every writer (run folders, checkpoints, `attack --out`):
 * output folders are created only where a folder can be (never on procfs/sysfs/devfs, never
 * through a file), temporary files are tracked so a handled exit removes them, and stale ones
 * left by a killed process are removed on the next start. Every failure is ERR_IO naming the path.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FisherLensError } from './errors';

/** Pseudo file systems where an output folder makes no sense (a recursive mkdir on /proc spins). */
const PSEUDO_ROOTS = ['/proc', '/sys', '/dev'];
/** …except these real file systems mounted below them. */
const REAL_UNDER_PSEUDO = ['/dev/shm'];

/**
 * Creates folder `dir` (and its parents) for output. ERR_IO when a component is a file, when the
 * folder would lie on /proc, /sys or /dev, or when the system refuses (permissions, read-only).
 */
export function ensureDir(dir: string, what = 'output folder'): void {
  const abs = path.resolve(dir);
  const under = (root: string) => abs === root || abs.startsWith(root + '/');
  for (const root of PSEUDO_ROOTS) {
    if (under(root) && !REAL_UNDER_PSEUDO.some(under)) {
      throw new FisherLensError('ERR_IO', `${what} '${dir}': refusing to write under ${root} (a pseudo file system, not a folder for results)`);
    }
  }
  // the nearest existing ancestor must be a folder
  let cur = abs;
  const missing: string[] = [];
  for (;;) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(cur);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw new FisherLensError('ERR_IO', `${what} '${dir}': cannot access ${cur}: ${code ?? (e as Error).message}`);
    }
    if (st) {
      if (!st.isDirectory()) throw new FisherLensError('ERR_IO', `${what} '${dir}': ${cur} exists and is not a folder`);
      break;
    }
    missing.push(cur);
    const up = path.dirname(cur);
    if (up === cur) break;
    cur = up;
  }
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && fs.statSync(d).isDirectory()) continue;
      throw new FisherLensError('ERR_IO', `${what} '${dir}': cannot create ${d}: ${code ?? (e as Error).message}`);
    }
  }
}

/**
 * A file that appears whole or not at all, whoever writes it: this process through {@link fd},
 * native code or a child process through the path {@link tmp}. The temporary sibling
 * `<file>.tmp-<pid>-<random>` is created exclusively (a planted symlink is never followed) and
 * tracked (a handled exit removes it; removeStaleTemps removes it after a kill -9). commit()
 * fsyncs it and renames it into place (a symlink at `file` is replaced, never written through);
 * abort() removes it. The one atomic writer: {@link writeFileAtomic} is it in one step. Every
 * failure is ERR_IO naming `file`.
 */
export class AtomicFile {
  /** The temporary file, renamed to `file` by commit(). */
  readonly tmp: string;
  #fd: number | null;
  #done = false;
  #committed = false;

  /** `append`: open in append mode (native code appends to the same path while this process writes). */
  constructor(readonly file: string, opts: { append?: boolean } = {}) {
    ensureDir(path.dirname(file), 'folder');
    this.tmp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    try {
      this.#fd = fs.openSync(this.tmp, opts.append ? 'ax' : 'wx');
    } catch (e) {
      throw ioError(file, e);
    }
    track(this.tmp);
  }

  /** The open descriptor of the temporary file (ERR_IO once closed). */
  get fd(): number {
    if (this.#fd === null) throw new FisherLensError('ERR_IO', `${this.file}: its temporary file is closed`);
    return this.#fd;
  }

  /** Writes data at the end of the temporary file; ERR_IO (and the temporary file removed) on failure. */
  write(data: string | Buffer | Uint8Array): void {
    try {
      fs.writeSync(this.fd, typeof data === 'string' ? Buffer.from(data) : data);
    } catch (e) {
      this.abort();
      throw ioError(this.file, e);
    }
  }

  /** Syncs and closes the descriptor, for a writer that then writes through the path (a child process). */
  close(): void {
    if (this.#fd === null) return;
    const fd = this.#fd;
    this.#fd = null;
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Closes, syncs and renames the temporary file into place. */
  commit(): void {
    if (this.#done) throw new FisherLensError('ERR_IO', `${this.file}: already committed or aborted`);
    try {
      this.close();
      fs.renameSync(this.tmp, this.file);
    } catch (e) {
      this.abort();
      throw ioError(this.file, e);
    }
    this.#done = true;
    this.#committed = true;
    untrack(this.tmp);
  }

  /** Closes and removes the temporary file, so nothing appears at `file` (idempotent; nothing after commit()). */
  abort(): void {
    if (this.#committed) return;
    if (this.#fd !== null) {
      try { fs.closeSync(this.#fd); } catch { /* the descriptor is gone already */ }
      this.#fd = null;
    }
    this.#done = true;
    fs.rmSync(this.tmp, { force: true });
    untrack(this.tmp);
  }
}

function ioError(file: string, e: unknown): FisherLensError {
  if (e instanceof FisherLensError) return e;
  return new FisherLensError('ERR_IO', `cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
}

/**
 * Writes a file atomically (an {@link AtomicFile} written in one step): a temporary sibling
 * created exclusively, fsync, then rename. A symlink at `file` is replaced, never written through.
 */
export function writeFileAtomic(file: string, data: string | Buffer): void {
  const w = new AtomicFile(file);
  w.write(data);
  w.commit();
}

/** Temporary files of this process that a handled exit removes (see removeTracked). */
const tracked = new Set<string>();
let exitHook = false;

/** Registers a temporary file; it is removed at process exit unless untracked first (renamed into place). */
export function track(tmp: string): void {
  tracked.add(tmp);
  if (!exitHook) {
    exitHook = true;
    process.on('exit', removeTracked);
  }
}

export function untrack(tmp: string): void {
  tracked.delete(tmp);
}

/** Removes every tracked temporary file (on exit, and when a CLI command fails). */
export function removeTracked(): void {
  for (const f of tracked) {
    try { fs.rmSync(f, { force: true }); } catch { /* best effort at exit */ }
  }
  tracked.clear();
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes `<name>.tmp-<pid>[-…]` files in `dir` whose writer process is gone (a kill -9 during a
 * checkpoint or .npy write); with `only`, just the temporaries of that file name. Files of live
 * processes are left alone. Call it only on folders this process owns (a run folder it resumes,
 * the target of its own output file): a process on another host sharing the folder has a pid
 * that looks dead here. Returns the names removed.
 */
export function removeStaleTemps(dir: string, only?: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = /\.tmp-(\d+)(-[A-Za-z0-9]+)?$/.exec(n);
    if (!m || (only !== undefined && n.slice(0, m.index) !== only) || alive(Number(m[1]))) continue;
    try {
      if (fs.lstatSync(path.join(dir, n)).isFile()) {
        fs.rmSync(path.join(dir, n), { force: true });
        removed.push(n);
      }
    } catch { /* gone already */ }
  }
  return removed;
}
