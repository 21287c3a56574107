/** A Python timing server (bench/python/*_bench.py): one JSON line per request, for interleaving. */
import { spawn, ChildProcessWithoutNullStreams } from 'child_process';
import * as path from 'path';
import * as readline from 'readline';

export const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';
export const PY_DIR = path.join(__dirname, '..', '..', 'bench', 'python');

export class PyServer {
  private proc: ChildProcessWithoutNullStreams;
  private lines: AsyncIterableIterator<string>;
  constructor(script: string, args: string[]) {
    this.proc = spawn(PY, [path.join(PY_DIR, script), ...args], { cwd: PY_DIR });
    this.proc.stderr.on('data', (d) => process.stderr.write(d));
    this.lines = readline.createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
  }
  async next(): Promise<Record<string, number>> {
    const r = await this.lines.next();
    if (r.done) throw new Error('python benchmark server exited');
    return JSON.parse(r.value) as Record<string, number>;
  }
  async ready(): Promise<void> { await this.next(); }
  /** Runs one timed request; returns seconds. */
  async time(name: string): Promise<number> {
    this.proc.stdin.write(name + '\n');
    return (await this.next())[name];
  }
  close(): void { this.proc.stdin.end(); }
}
