/**
 * rediss:// (issue 26): a redis-server started here with a TLS port only (127.0.0.1, free port,
 * temporary folder) and certificates made here with openssl: a CA, the server's certificate
 * (127.0.0.1), a client certificate (Redis asks for one: tls-auth-clients), a second CA nobody
 * trusts, and a second server whose certificate names another host. A sweep goes through
 * `run --queue`, a worker (the fake science executor: no LibTorch), `status` and `queue clean`
 * with --tls-ca/--tls-cert/--tls-key; each wrong certificate is an ERR_IO naming its cause.
 */
import test from 'ava';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { spawn, spawnSync, ChildProcess } from 'child_process';
import { haveRedis } from '../helpers/redis';

const root = path.join(__dirname, '..', '..', '..');
const cli = path.join(root, 'dist', 'lib', 'cli', 'main.js');
const fakeModule = path.join(__dirname, '..', 'helpers', 'fake-science.js');
const haveTls = haveRedis() && spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
const maybe = haveTls ? test.serial : test.skip;

const dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-tls-')));
const f = (name: string) => path.join(dir, name);
const servers: ChildProcess[] = [];
test.after.always(() => {
  for (const s of servers) if (s.exitCode === null) s.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
});

function openssl(...args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA (name.crt, name.key). */
function ca(name: string): void {
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`), '-out', f(`${name}.crt`), '-days', '2', '-subj', `/CN=${name}`);
}

/** A certificate (name.crt, name.key) signed by CA `by`, for the subject alternative names `san`. */
function cert(name: string, by: string, san: string, usage: 'serverAuth' | 'clientAuth'): void {
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${name}`);
  fs.writeFileSync(f(`${name}.ext`), `subjectAltName=${san}\nextendedKeyUsage=${usage}\n`);
  openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${by}.crt`), '-CAkey', f(`${by}.key`), '-CAcreateserial', '-out', f(`${name}.crt`), '-days', '2', '-extfile', f(`${name}.ext`));
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

/** redis-server with only a TLS port, its certificate `serverCert`; the clients' CA is `ca`. */
async function tlsRedis(serverCert: string): Promise<number> {
  const port = await freePort();
  const data = fs.mkdtempSync(path.join(dir, 'redis-'));
  const p = spawn('redis-server', ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--dir', data, '--save', '', '--appendonly', 'no',
    '--tls-cert-file', f(`${serverCert}.crt`), '--tls-key-file', f(`${serverCert}.key`), '--tls-ca-cert-file', f('ca.crt'), '--loglevel', 'warning'], { stdio: 'ignore' });
  servers.push(p);
  for (let i = 0; i < 200; i++) {
    if (p.exitCode !== null) throw new Error('redis-server exited (built without TLS?)');
    if (await new Promise<boolean>((resolve) => { const s = net.connect(port, '127.0.0.1'); s.on('connect', () => { s.destroy(); resolve(true); }); s.on('error', () => resolve(false)); })) return port;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('redis-server did not listen');
}

async function cliRun(args: string[], env: Record<string, string> = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const p = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ...env } });
  let stdout = '', stderr = '';
  p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const status = await new Promise<number | null>((resolve) => p.on('close', resolve));
  return { status, stdout, stderr };
}

let good = 0, wrongHost = 0;
test.before(async () => {
  if (!haveTls) return;
  ca('ca');
  ca('stranger');
  cert('server', 'ca', 'IP:127.0.0.1', 'serverAuth');
  cert('elsewhere', 'ca', 'DNS:elsewhere.example', 'serverAuth');
  cert('client', 'ca', 'DNS:client', 'clientAuth');
  cert('stranger-client', 'stranger', 'DNS:client', 'clientAuth');
  good = await tlsRedis('server');
  wrongHost = await tlsRedis('elsewhere');
});

const clientFiles = () => ['--tls-ca', f('ca.crt'), '--tls-cert', f('client.crt'), '--tls-key', f('client.key')];

maybe('a sweep through rediss://: run --queue, a worker, status and queue clean with a CA file and a client certificate', async (t) => {
  const url = `rediss://127.0.0.1:${good}`;
  const cfg = {
    name: 'tls', seeds: [0],
    defaults: { data: { dataset: 'fashion-mnist', trainSize: 300, testSize: 50, probeSize: 20 }, train: { epochs: 1, batchSize: 100 } },
    runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' } }],
  };
  fs.writeFileSync(f('tls.json'), JSON.stringify(cfg));
  const sub = await cliRun(['run', f('tls.json'), '--out', f('runs'), '--queue', url, ...clientFiles(), '--detach']);
  t.is(sub.status, 0, sub.stderr);
  const w = await cliRun(['worker', '--queue', url, ...clientFiles(), '--root', dir, '--idle-exit', '1'], { FISHERLENS_EXECUTOR: fakeModule });
  t.is(w.status, 0, w.stderr);
  t.regex(w.stderr, /finished mlp_natural_seed0/);
  const st = await cliRun(['status', '--queue', url, ...clientFiles(), '--json']);
  t.is(st.status, 0, st.stderr);
  t.deepEqual((JSON.parse(st.stdout) as { runs: { runId: string; state: string }[] }).runs.map((r) => [r.runId, r.state]), [['mlp_natural_seed0', 'finished']]);
  const cl = await cliRun(['queue', 'clean', '--queue', url, ...clientFiles(), '--json']);
  t.is(cl.status, 0, cl.stderr);
  t.is((JSON.parse(cl.stdout) as { completed: string[] }).completed.length, 1);
});

maybe('wrong certificates are an ERR_IO naming the cause: unknown CA, wrong hostname, missing client certificate, a client certificate the server does not trust', async (t) => {
  const url = `rediss://127.0.0.1:${good}`;
  const cases: [string, string[], RegExp][] = [
    ['unknown CA', ['--queue', url, '--tls-ca', f('stranger.crt'), '--tls-cert', f('client.crt'), '--tls-key', f('client.key')], /TLS: the server's certificate is not signed by a CA this client trusts \(unknown CA/],
    ['no CA given (the system\'s do not know ours)', ['--queue', url, '--tls-cert', f('client.crt'), '--tls-key', f('client.key')], /TLS: the server's certificate is not signed by a CA this client trusts/],
    ['wrong hostname', ['--queue', `rediss://127.0.0.1:${wrongHost}`, ...clientFiles()], /TLS: the server's certificate is not for this host name \(wrong hostname/],
    ['missing client certificate', ['--queue', url, '--tls-ca', f('ca.crt')], /TLS: the server (closed the connection at the TLS handshake: it )?requires a client certificate \(missing client certificate/],
    ['untrusted client certificate', ['--queue', url, '--tls-ca', f('ca.crt'), '--tls-cert', f('stranger-client.crt'), '--tls-key', f('stranger-client.key')], /TLS: the server (closed the connection at the TLS handshake: it )?refused this client's certificate/],
  ];
  for (const [what, args, cause] of cases) {
    const r = await cliRun(['status', ...args]);
    t.is(r.status, 1, `${what}: ${r.stderr}`);
    t.regex(r.stderr, /^fisherlens: ERR_IO: cannot reach Redis at rediss:\/\/127\.0\.0\.1:\d+: TLS: /m, what);
    t.regex(r.stderr, cause, `${what}: ${r.stderr}`);
  }
});

maybe('the TLS flags are checked before connecting: a redis:// URL, a certificate without its key, an unreadable file', async (t) => {
  const a = await cliRun(['status', '--queue', `redis://127.0.0.1:${good}`, '--tls-ca', f('ca.crt')]);
  t.is(a.status, 1, a.stderr);
  t.regex(a.stderr, /ERR_ARG: --tls-ca: expected a rediss:\/\/ URL with it/);
  const b = await cliRun(['queue', 'clean', '--queue', `rediss://127.0.0.1:${good}`, '--tls-cert', f('client.crt')]);
  t.is(b.status, 1, b.stderr);
  t.regex(b.stderr, /ERR_ARG: --tls-cert: expected --tls-key with it/);
  const c = await cliRun(['status', '--queue', `rediss://127.0.0.1:${good}`, '--tls-ca', f('nothing.crt')]);
  t.is(c.status, 1, c.stderr);
  t.regex(c.stderr, /ERR_IO: --tls-ca '.*nothing\.crt': cannot read it \(ENOENT\)/);
  const d = await cliRun(['run', f('tls.json'), '--tls-ca', f('ca.crt')]);
  t.is(d.status, 1, d.stderr);
  t.regex(d.stderr, /--tls-ca\/--tls-cert\/--tls-key: expected --queue with them/);
});
