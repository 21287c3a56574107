/**
 * bench/fisher: FisherLens against Python PyTorch on the same LibTorch, side by side in one run.
 * Python (bench/python/fisher_bench.py) is written the way a researcher would: a loop over the C
 * classes with torch.autograd.grad for the exact Fisher, double-backward JVPs for power iteration.
 * Both sides: the same architecture, batch 128, the same intra-op thread count. The Python process
 * stays up and the two sides alternate run by run (this machine is shared: alternating exposes both
 * to the same load), the median of `repeats` (default 5) each. Prints ms per batch, samples/s, the ratio
 * FisherLens / Python, and the achieved FLOP/s against the measured matrix-product peak.
 * Never passes or fails on time.
 *
 * TorchScript rows: the Python side's own model, scripted and saved, loaded by FisherLens and run
 * on the linear engine (its graph lowered, native/models/torchscript_tape.cc) and on autograd
 * (--torchscript 0 leaves them out). tanh-avg-cnn is LeNet-5 with tanh and average pooling.
 *
 * .pt2 rows (when the Python side's torch has torch.export, e.g. the torch 2.13 venv): the Python
 * side's model exported with a dynamic batch, loaded by FisherLens (native/models/exported.cc) and
 * run on the linear engine (its graph lowered) and on the interpreter's autograd path; the summary
 * row gives .pt2 ÷ built-in (target ≤ 1.10) and the autograd path ÷ Python (target ≤ 1.20).
 *
 *   node dist/bench/fisher.js [--arch small-cnn,resnet20,tanh-avg-cnn] [--batch 128] [--repeats 5] [--power-iters 20] [--threads 2] [--torchscript 1] [--pt2 1] [--kinds fwd,exact,power] [--rows all|defaults]
 *
 * --rows defaults times only the rows with FisherLens's defaults (forward, exact, power: the
 * issue's hot paths) beside Python, leaving out the pinned, autograd-engine, TorchScript and .pt2
 * rows: on a loaded shared machine a resnet20 run of every row takes over 20 minutes.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as readline from 'readline';
import { spawn, ChildProcessWithoutNullStreams } from 'child_process';
import { Model, ModelSpec, Tensor, backend, setThreads } from '../lib';
import { fisherExact, fisherPower, FisherSpeedOptions, exactTuning, profileExactVjp } from '../lib/science/fisher';
import { uniformStream } from '../lib/util/random';
import { median, passiveOpenMp, torchPairing } from './pyserver';

const ROOT = path.resolve(__dirname, '..', '..');
const PY = process.env.FISHERLENS_PYTHON ?? '/usr/bin/python3';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

/** The Python side as a server: one request line, one reply line. */
class PySide {
  private readonly p: ChildProcessWithoutNullStreams;
  private readonly lines: AsyncIterableIterator<string>;
  // env is process.env or built from it, after main's passiveOpenMp() (OMP_WAIT_POLICY, the store)
  constructor(args: string[], env: NodeJS.ProcessEnv = process.env) {
    this.p = spawn(PY, [path.join(ROOT, 'bench', 'python', 'fisher_bench.py'), ...args, '--serve'], { stdio: 'pipe', env });
    this.p.stderr.on('data', (d: Buffer) => process.stderr.write(d));
    this.lines = readline.createInterface({ input: this.p.stdout })[Symbol.asyncIterator]();
  }
  async next(): Promise<string> {
    const r = await this.lines.next();
    if (r.done) throw new Error('python bench exited');
    return r.value;
  }
  async ask(cmd: string): Promise<[number, number]> {
    this.p.stdin.write(cmd + '\n');
    const [wall, cpu] = (await this.next()).split(' ').map(Number);
    return [wall, cpu];
  }
  p_write(cmd: string): void { this.p.stdin.write(cmd + '\n'); }
  close(): void { this.p.stdin.write('quit\n'); }
}

/** Wall and process CPU milliseconds of one run. */
async function timed(fn: () => Promise<unknown>): Promise<[number, number]> {
  const c = process.cpuUsage();
  const t = process.hrtime.bigint();
  await fn();
  const u = process.cpuUsage(c);
  return [Number(process.hrtime.bigint() - t) / 1e6, (u.user + u.system) / 1000];
}
const fix = (v: number, d: number): string => (Number.isFinite(v) ? v.toFixed(d) : '—');
// ' ± (max − min) / 2' of an autotune candidate's timed passes (its noise, lib/science/fisher.ts chooseExactCandidate)
const spread = (v?: number[]): string => (v && v.length > 1 ? ` ± ${((Math.max(...v) - Math.min(...v)) / 2).toFixed(1)}` : '');
// the median wall and the median CPU time of a row's runs (bench/pyserver.ts median)
const medPair = (runs: [number, number][]): [number, number] => [median(runs.map((r) => r[0])), median(runs.map((r) => r[1]))];

// exact: pinned layout × classes per pass rows beside the autotuned default
const EXACT_PINS: [string, FisherSpeedOptions][] = [
  ['fisherlens exact CL, 1 class/pass', { layout: 'channels-last', classesPerPass: 1 }],
  ['fisherlens exact NCHW, 1 class/pass', { layout: 'nchw', classesPerPass: 1 }],
  ['fisherlens exact CL, 3 classes/pass', { layout: 'channels-last', classesPerPass: 3 }],
  ['fisherlens exact NCHW, 3 classes/pass', { layout: 'nchw', classesPerPass: 3 }],
];

const CONFIGS: Record<string, { inChannels: number; inputSize: number; spec?: Record<string, unknown> }> = {
  'small-cnn': { inChannels: 1, inputSize: 28 },
  resnet20: { inChannels: 3, inputSize: 32 },
  'tanh-avg-cnn': { inChannels: 1, inputSize: 28, spec: { arch: 'lenet', activation: 'tanh', pool: 'avg' } },
};

export async function main(): Promise<void> {
  passiveOpenMp();  // both sides (see bench/pyserver.ts): spinning OpenMP threads of one side slow the other's next run
  const threads = Number(arg('threads', '2'));
  setThreads(threads);
  const batch = Number(arg('batch', '128'));
  const repeats = Number(arg('repeats', '5'));
  const iters = Number(arg('power-iters', '20'));
  const archs = arg('arch', 'small-cnn,resnet20').split(',');
  const kinds = arg('kinds', 'fwd,exact,power').split(',');
  const DEFAULT_ROWS = ['fisherlens forward', 'fisherlens exact', 'fisherlens power'];
  const onlyDefaults = arg('rows', 'all') === 'defaults';
  const C = 10;
  console.log(torchPairing());
  console.log(`LibTorch ${backend().torchVersion}, ${threads} intra-op threads both sides, batch ${batch}, ` +
    `median of ${repeats} alternating runs; power iteration: ${iters} iterations`);
  for (const arch of archs) {
    const cfg = CONFIGS[arch];
    if (!cfg) throw new Error(`unknown arch ${arch}; expected ${Object.keys(CONFIGS).join(', ')}`);
    const shape = [cfg.inChannels, cfg.inputSize, cfg.inputSize];
    const spec = { arch, ...cfg.spec };
    // TorchScript rows: the Python side saves the model it runs
    const tsFile = arg('torchscript', '1') !== '0' ? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-bench-')), `${arch}.pt`) : '';
    const pt2File = arg('pt2', '1') !== '0' ? path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fl-bench-')), `${arch}.pt2`) : '';
    const py = new PySide(['--arch', String(spec.arch), '--spec', JSON.stringify(cfg.spec ?? {}), '--input', shape.join(','), '--batch', String(batch),
      '--power-iters', String(iters), '--threads', String(threads), ...(tsFile ? ['--save-torchscript', tsFile] : []), ...(pt2File ? ['--save-pt2', pt2File] : [])]);
    const info = JSON.parse(await py.next()) as { forwardFlopsPerSample: number };
    // the same Python with glibc tuned as FisherLens tunes it (backend().allocator 'glibc-reuse'):
    // shows how much of the difference is the allocator policy
    const pyReuse = new PySide(['--arch', String(spec.arch), '--spec', JSON.stringify(cfg.spec ?? {}), '--input', shape.join(','), '--batch', String(batch), '--power-iters', String(iters), '--threads', String(threads)],
      { ...process.env, MALLOC_MMAP_THRESHOLD_: String(32 << 20), MALLOC_TRIM_THRESHOLD_: String(1 << 30), MALLOC_TOP_PAD_: String(64 << 20) });
    await pyReuse.next();
    py.p_write('peak');
    const peak = Number(await py.next());
    const model = Model.create({ ...spec, inChannels: cfg.inChannels, inputSize: cfg.inputSize, numClasses: C } as ModelSpec);
    const ts = tsFile ? await Model.load(tsFile) : undefined;
    // the Python side writes the .pt2 only where its torch has torch.export
    const pt2 = pt2File && fs.existsSync(pt2File) ? await Model.load(pt2File) : undefined;
    const n = batch * shape.reduce((a, b) => a * b, 1);
    const x = Tensor.from(Float32Array.from({ length: n }, uniformStream(batch)), [batch, ...shape]);
    const F = info.forwardFlopsPerSample * batch;
    // FLOPs as executed: an input-gradient backward ≈ one forward; a double-backward JVP ≈ one forward
    const flops = { pyExact: F * (1 + C), flExact: F * (1 + (C - 1)), power: F * (3 + 2 * iters), fwd: F };
    const flVariants: [string, string, FisherSpeedOptions, () => (o: FisherSpeedOptions) => Promise<unknown>][] = [
      ['fisherlens forward', 'fwd', {}, () => () => model.forward(x).then((t) => t.dispose())],
      ['fisherlens exact', 'exact', {}, () => (o) => fisherExact(model, x, o).then((r) => { r.spectrum.dispose(); r.probs.dispose(); })],
      // the layout × classes-per-pass candidates pinned (channels-last, 1: the default before the autotune)
      ...EXACT_PINS.map(([name, o]): [string, string, FisherSpeedOptions, () => (o: FisherSpeedOptions) => Promise<unknown>] =>
        [name, 'exact', o, () => (q) => fisherExact(model, x, q).then((r) => { r.spectrum.dispose(); r.probs.dispose(); })]),
      ['fisherlens exact, autograd engine', 'exact', { autograd: true }, () => (o) => fisherExact(model, x, o).then((r) => { r.spectrum.dispose(); r.probs.dispose(); })],
      ['fisherlens power', 'power', {}, () => (o) => fisherPower(model, x, { tol: 0, maxIter: iters, ...o }).then((r) => r.eigvec.dispose())],
      ['fisherlens power channels-last', 'power', { channelsLast: true }, () => (o) => fisherPower(model, x, { tol: 0, maxIter: iters, ...o }).then((r) => r.eigvec.dispose())],
      ['fisherlens power, autograd engine', 'power', { autograd: true }, () => (o) => fisherPower(model, x, { tol: 0, maxIter: iters, ...o }).then((r) => r.eigvec.dispose())],
    ];
    // TorchScript: the same rows on the Python side's own scripted model (both engines)
    const TS_ROWS = ['torchscript exact', 'torchscript exact, autograd engine', 'torchscript power', 'torchscript power, autograd engine',
      "torchscript exact, built-in's choice"];
    if (ts) {
      for (const [name, autograd] of [[TS_ROWS[0], false], [TS_ROWS[1], true]] as const)
        flVariants.push([name, 'exact', { autograd }, () => (o) => fisherExact(ts, x, o).then((r) => { r.spectrum.dispose(); r.probs.dispose(); })]);
      // like for like: the TorchScript model pinned to the layout and classes per pass the built-in's
      // autotune chose (its own autotune can pick differently among near-equal candidates)
      flVariants.push([TS_ROWS[4], 'exact', {}, () => {
        let pin: FisherSpeedOptions | undefined;
        return async () => {
          if (!pin) { const c = await exactTuning(model, x); pin = { layout: c.layout, classesPerPass: c.classesPerPass }; }
          const r = await fisherExact(ts, x, pin);
          r.spectrum.dispose(); r.probs.dispose();
        };
      }]);
      for (const [name, autograd] of [[TS_ROWS[2], false], [TS_ROWS[3], true]] as const)
        flVariants.push([name, 'power', { autograd }, () => (o) => fisherPower(ts, x, { tol: 0, maxIter: iters, ...o }).then((r) => r.eigvec.dispose())]);
      const e = await fisherPower(ts, x.slice(0, 1), { tol: 0, maxIter: 1 });
      e.eigvec.dispose();
      console.log(`${arch} TorchScript: engine ${e.engine}${e.engineReason ? ` (${e.engineReason})` : ''}`);
    }
    const PT2_ROWS = ['pt2 exact', 'pt2 exact, autograd engine', 'pt2 power', 'pt2 power, autograd engine'];
    if (pt2) {
      for (const [name, autograd] of [[PT2_ROWS[0], false], [PT2_ROWS[1], true]] as const)
        flVariants.push([name, 'exact', { autograd }, () => (o) => fisherExact(pt2, x, o).then((r) => { r.spectrum.dispose(); r.probs.dispose(); })]);
      for (const [name, autograd] of [[PT2_ROWS[2], false], [PT2_ROWS[3], true]] as const)
        flVariants.push([name, 'power', { autograd }, () => (o) => fisherPower(pt2, x, { tol: 0, maxIter: iters, ...o }).then((r) => r.eigvec.dispose())]);
      const e = await fisherPower(pt2, x.slice(0, 1), { tol: 0, maxIter: 1 });
      e.eigvec.dispose();
      console.log(`${arch} .pt2: engine ${e.engine}${e.engineReason ? ` (${e.engineReason})` : ''}`);
    }
    const variants = flVariants.filter(([name, kind]) => kinds.includes(kind) && (!onlyDefaults || DEFAULT_ROWS.includes(name)));
    // every run of each row; the Python runs of a kind are pooled over all the rows of that kind
    // (each FisherLens run has a Python run of its kind next to it)
    const runs: Record<string, [number, number][]> = {};
    const pyRuns: Record<string, [number, number][]> = { fwd: [], exact: [], power: [] };
    const pyReuseRuns: Record<string, [number, number][]> = { fwd: [], exact: [], power: [] };
    for (const [name, kind, o, mk] of variants) {
      const fn = mk();
      await fn(o);  // warm-up
      if (pyRuns[kind].length === 0) { await py.ask(kind); await pyReuse.ask(kind); }
      runs[name] = [];
      for (let r = 0; r < repeats; r++) {
        pyRuns[kind].push(await py.ask(kind));
        if (r < 2) pyReuseRuns[kind].push(await pyReuse.ask(kind));
        runs[name].push(await timed(() => fn(o)));
      }
    }
    const best: Record<string, [number, number]> = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, medPair(v)]));
    const pyBest: Record<string, [number, number]> = Object.fromEntries(Object.entries(pyRuns).map(([k, v]) => [k, medPair(v)]));
    const pyReuseBest: Record<string, [number, number]> = Object.fromEntries(Object.entries(pyReuseRuns).map(([k, v]) => [k, medPair(v)]));
    py.close();
    pyReuse.close();
    const rows: string[] = [];
    rows.push(`\n${arch} [${shape.join('×')}], forward ${(info.forwardFlopsPerSample / 1e6).toFixed(1)} MFLOP/sample; matmul peak ${peak.toFixed(1)} GFLOP/s (2048² sgemm, same threads)`);
    rows.push(`${'method'.padEnd(38)} ${'ms/batch'.padStart(9)} ${'samples/s'.padStart(9)} ${'ratio'.padStart(6)} ${'GFLOP/s'.padStart(8)} ${'%peak'.padStart(7)} ${'cpu ms'.padStart(8)} ${'cpu ratio'.padStart(9)}`);
    const line = (name: string, t: [number, number] | undefined, ref: [number, number], fl: number) => {
      if (!t) return;  // a row not timed in this run (--rows defaults)
      const [ms, cpu] = t;
      const gf = fl / (ms / 1000) / 1e9;
      rows.push(`${name.padEnd(38)} ${ms.toFixed(1).padStart(9)} ${(batch * 1000 / ms).toFixed(1).padStart(9)} ${(ms / ref[0]).toFixed(2).padStart(6)} ${gf.toFixed(1).padStart(8)} ${(100 * gf / peak).toFixed(1).padStart(6)}% ${fix(cpu, 1).padStart(8)} ${fix(cpu / ref[1], 2).padStart(9)}`);
    };
    const has = (name: string) => best[name] !== undefined;
    if (has('fisherlens forward')) {
    line('python forward', pyBest.fwd, pyBest.fwd, flops.fwd);
    line('python forward, malloc as FisherLens', pyReuseBest.fwd, pyBest.fwd, flops.fwd);
    line('fisherlens forward', best['fisherlens forward'], pyBest.fwd, flops.fwd);
    }
    if (has('fisherlens exact')) {
    line('python exact (C autograd.grad loop)', pyBest.exact, pyBest.exact, flops.pyExact);
    line('python exact, malloc as FisherLens', pyReuseBest.exact, pyBest.exact, flops.pyExact);
    for (const k of ['fisherlens exact', ...EXACT_PINS.map(([n]) => n), 'fisherlens exact, autograd engine']) line(k, best[k], pyBest.exact, flops.flExact);
    if (ts && has(TS_ROWS[0])) for (const k of [...TS_ROWS.slice(0, 2), TS_ROWS[4]]) line(k, best[k], pyBest.exact, flops.flExact);
    // the fastest any implementation of C−1 input-gradient passes could be here: its FLOPs at the
    // measured matrix-product peak (every convolution and matmul at 100 % of the 2048² sgemm rate)
    const boundMs = flops.flExact / (peak * 1e9) * 1000;
    line('bound: C−1 passes at 100% of peak', [boundMs, NaN], pyBest.exact, flops.flExact);
    // what the autotune chose (cached by the warm-up run), and where one class's VJP spends its time
    const tn = await exactTuning(model, x);
    rows.push(`autotune (${tn.source === 'cached' ? 'measured in this run' : tn.source}) chose ${tn.layout}, ${tn.classesPerPass} classes/pass; measured ms/class: ` +
      (tn.candidates ?? []).map((c) => `${c.layout} ${c.classesPerPass}: ${fix(c.msPerClass, 1)}${spread(c.msSamples)}`).join(', ') +
      ' (median ± half the spread of its timed passes; chooseExactCandidate)');
    const vjpBound = F / (peak * 1e9) * 1000;
    // one VJP pass profiled per configuration: ms per class, in total and by op kind
    const CONFIGS_VJP = [['nchw', 1], ['nchw', 3], ['channels-last', 1], ['channels-last', 3]] as const;
    const perClass = async (m: Model, layout: 'nchw' | 'channels-last', k: number) => {
      const ops = await profileExactVjp(m, x, { layout, classesPerPass: k });
      const by: Record<string, number> = {};
      for (const o of ops) by[o.op] = (by[o.op] ?? 0) + o.ms / k;
      const tot = Object.values(by).reduce((a, b) => a + b, 0);
      const kinds = Object.entries(by).sort((a, b) => b[1] - a[1]).map(([o, ms]) => `${o} ${ms.toFixed(1)}`).join(', ');
      return { ops, tot, kinds };
    };
    let fastest: { name: string; tot: number; ops: { op: string; ms: number; flops: number }[]; k: number } | undefined;
    for (const [layout, k] of CONFIGS_VJP) {
      const { ops, tot, kinds } = await perClass(model, layout, k);
      // the FLOP-counting kernels alone (convolutions, linear layers) against the matmul peak
      const kMs = ops.reduce((a, o) => a + (o.flops > 0 ? o.ms : 0), 0), kFl = ops.reduce((a, o) => a + o.flops, 0);
      rows.push(`VJP per class, ${layout}, ${k}/pass: ${tot.toFixed(1)} ms (bound ${vjpBound.toFixed(1)} ms = ${(100 * vjpBound / tot).toFixed(0)}%; ` +
        `conv+linear kernels at ${(kFl / (kMs / 1000) / 1e9).toFixed(1)} GFLOP/s = ${(100 * kFl / (kMs / 1000) / 1e9 / peak).toFixed(0)}% of peak); ${kinds}`);
      if (!fastest || tot < fastest.tot) fastest = { name: `${layout}, ${k}/pass`, tot, ops, k };
    }
    // the TorchScript model's lowered tape, the same four configurations (totals by op kind)
    if (ts) {
      const tt = await exactTuning(ts, x);
      rows.push(`TorchScript autotune chose ${tt.layout}, ${tt.classesPerPass} classes/pass; measured ms/class: ` +
        (tt.candidates ?? []).map((c) => `${c.layout} ${c.classesPerPass}: ${fix(c.msPerClass, 1)}`).join(', '));
      for (const [layout, k] of CONFIGS_VJP) {
        const { tot, kinds } = await perClass(ts, layout, k);
        rows.push(`TorchScript VJP per class, ${layout}, ${k}/pass: ${tot.toFixed(1)} ms; ${kinds}`);
      }
    }
    // per kernel of the fastest configuration: where the time above the bound goes
    if (fastest) rows.push(`per op (${fastest.name}; ms per pass of ${fastest.k} classes, GFLOP/s and % of peak for the FLOP-counting kernels): ` +
      fastest.ops.map((o) => `${o.op} ${o.ms.toFixed(1)}` + (o.flops > 0 ? ` (${(o.flops / (o.ms / 1000) / 1e9).toFixed(0)} GF/s, ${(100 * o.flops / (o.ms / 1000) / 1e9 / peak).toFixed(0)}%)` : '')).join(', '));
    }
    if (has('fisherlens power')) {    line(`python power (${iters} it, double backward)`, pyBest.power, pyBest.power, flops.power);
    line('python power, malloc as FisherLens', pyReuseBest.power, pyBest.power, flops.power);
    for (const k of ['fisherlens power', 'fisherlens power channels-last', 'fisherlens power, autograd engine']) line(k, best[k], pyBest.power, flops.power);
    // the TorchScript power rows only (TS_ROWS[4] is an exact row: under the power baseline it read "201 % of peak")
    if (ts) for (const k of TS_ROWS.slice(2, 4)) line(k, best[k], pyBest.power, flops.power);
    }
    if (pt2 && has(PT2_ROWS[0])) for (const k of PT2_ROWS.slice(0, 2)) line(k, best[k], pyBest.exact, flops.flExact);
    if (pt2 && has(PT2_ROWS[2])) for (const k of PT2_ROWS.slice(2, 4)) line(k, best[k], pyBest.power, flops.power);
    if (pt2 && has(PT2_ROWS[0]) && has(PT2_ROWS[2])) rows.push(`.pt2 / built-in (linear engine; target ≤ 1.10): exact ${(best[PT2_ROWS[0]][0] / best['fisherlens exact'][0]).toFixed(2)}, ` +
      `power ${(best[PT2_ROWS[2]][0] / best['fisherlens power'][0]).toFixed(2)}; .pt2 autograd path / python (target ≤ 1.20): exact ${(best[PT2_ROWS[1]][0] / pyBest.exact[0]).toFixed(2)}, ` +
      `power ${(best[PT2_ROWS[3]][0] / pyBest.power[0]).toFixed(2)}`);
    if (ts && has(TS_ROWS[0]) && has(TS_ROWS[2])) rows.push(`TorchScript / built-in (same engine, same defaults): exact ${(best[TS_ROWS[0]][0] / best['fisherlens exact'][0]).toFixed(2)}, ` +
      `exact with the built-in's choice pinned ${(best[TS_ROWS[4]][0] / best['fisherlens exact'][0]).toFixed(2)}, power ${(best[TS_ROWS[2]][0] / best['fisherlens power'][0]).toFixed(2)}`);
    console.log(rows.join('\n'));
    x.dispose();
    model.dispose();
    ts?.dispose();
    pt2?.dispose();
    if (tsFile) fs.rmSync(path.dirname(tsFile), { recursive: true, force: true });
    if (pt2File) fs.rmSync(path.dirname(pt2File), { recursive: true, force: true });
  }
  console.log('\nratio = FisherLens ms / Python ms (targets: exact ≤ 0.5, power ≤ 0.8); FisherLens rows use the linear engine\n' +
    '(built-ins: the linearisation recorded in one forward) unless marked autograd, and their defaults (exact: autotuned layout and\n' +
    'classes per VJP pass, see the "autotune chose" line; the VJP lines time one pass op by op after a warm-up);\n' +
    'the bound row is the exact method\'s ' +
    'FLOPs at the measured matmul peak, the least time any implementation of C−1 input-gradient passes can take here.\n' +
    'The "malloc as FisherLens" rows run the same Python with glibc\'s mmap/trim thresholds set as FisherLens sets them\n' +
    '(median of 2 runs per row; ratio against the default Python). cpu = process CPU time of the run (user + system,\n' +
    'all threads: less sensitive to other processes on a shared machine). GFLOP/s counts conv/linear FLOPs as executed\n' +
    '(exact: forward + one input-gradient backward per pass, FisherLens C−1 passes, Python C; power: 3 + 2·iterations forward-equivalents).');
}

if (require.main === module) main().catch((e: unknown) => { console.error(e); process.exitCode = 1; });
