/**
 * A throwaway redis-server for tests and benches: 127.0.0.1, a free port, a temporary folder, no
 * persistence (`--save ''`, no AOF); stop() kills it and removes the folder.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync, ChildProcess } from 'child_process';

export interface RedisServer {
  url: string; port: number; dir: string;
  /** The server's process id (tests stop it with SIGSTOP to make it hang). */
  pid: number;
  /** Kills the server and removes its folder. */
  stop(): Promise<void>;
  /** With `persist`: shuts the server down (its data is on disk), keeping the folder. */
  halt(): Promise<void>;
  /** With `persist`: starts it again on the same port and folder, with the data it had (pid changes). */
  restart(): Promise<void>;
}

/** True when redis-server is installed (scripts/setup.sh installs Debian's). */
export function haveRedis(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')); });
    s.on('error', () => resolve(false));
  });
}

/**
 * Starts redis-server; `password` sets requirepass (the URL then carries it); `persist` keeps its
 * data on disk (append-only file, fsync on every write) across halt() and restart(), as a managed
 * Redis that restarts does.
 */
export async function startRedis(opts: { password?: string; persist?: boolean } = {}): Promise<RedisServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-redis-'));
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--loglevel', 'warning',
    ...(opts.persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'])];
  if (opts.password) args.push('--requirepass', opts.password);
  let proc = await launch(args, port, opts.password !== undefined);
  const auth = opts.password ? `:${encodeURIComponent(opts.password)}@` : '';
  const server: RedisServer = {
    url: `redis://${auth}127.0.0.1:${port}`, port, dir, pid: proc.pid!,
    async stop() {
      await server.halt();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    async halt() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        // SIGTERM: redis-server flushes its append-only file and exits; SIGKILL if it hangs
        proc.kill(opts.persist ? 'SIGTERM' : 'SIGKILL');
        const t = setTimeout(() => proc.kill('SIGKILL'), 10000);
        await exited;
        clearTimeout(t);
      }
    },
    async restart() {
      proc = await launch(args, port, opts.password !== undefined);
      server.pid = proc.pid!;
    },
  };
  return server;
}

async function launch(args: string[], port: number, password: boolean): Promise<ChildProcess> {
  const proc: ChildProcess = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr?.on('data', (d) => { err += String(d); });
  const deadline = Date.now() + 10000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited: ${err}`);
    if (password ? await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve(true); });
      s.on('error', () => resolve(false));
    }) : await ping(port)) break;
    if (Date.now() > deadline) { proc.kill('SIGKILL'); throw new Error(`redis-server did not answer on port ${port}: ${err}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
  return proc;
}
