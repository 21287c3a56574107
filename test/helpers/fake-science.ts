/**
 * A deterministic stand-in for the science API, for testing the runner's bookkeeping (run
 * directories, skipping, resuming, failures, progress) without training anything. Numbers are a
 * known function of the run so tests can check they land in summary.json unchanged. It writes
 * checkpoint.ckpt ({ epoch }) and metrics.jsonl exactly as the contract of Science.train asks.
 */
import * as fs from 'fs';
import { Science, scienceExecutor, RunExecutor } from '../../lib/experiment/executor';
import { appendJsonl } from '../../lib/experiment/rundir';
import { FisherLensError } from '../../lib/util/errors';

export interface FakeData { split: string; size: number; imageShape: number[]; numClasses: number }
export interface FakeModel { arch: string; trainedEpochs: number }

export interface FakeLog {
  trainCalls: { dir: string; resume: boolean; startEpoch: number }[];
  evaluated: string[];
}

/** Known final numbers of a run: a function of method, arch and seed. */
export function knownAccuracy(method: string, arch: string, seed: number): number {
  const m = { natural: 0.9, 'pgd-at': 0.8, trades: 0.78 }[method] ?? 0.5;
  return Math.round((m - arch.length / 1000 + seed / 100) * 1e4) / 1e4;
}

export function fakeScience(opts: {
  log?: FakeLog;
  /** Abort (via this controller) when this many epochs in total have been trained in this process. */
  abortAfterEpochs?: { controller: AbortController; epochs: number };
  /** Runs (by folder name) whose training throws. */
  failRuns?: string[];
  /** Milliseconds to wait per batch (lets a CLI test interrupt mid-run). */
  batchMs?: number;
  /**
   * Training of this run waits at the start of this epoch until its signal aborts, so a CLI test
   * can interrupt it at a known point however late its own timers fire (a concurrent spawnSync in
   * the test process delays them by seconds). Held longer than `ms` (default 60 s), it throws.
   */
  hold?: { run: string; epoch: number; ms?: number };
} = {}): Science<FakeModel, FakeData> {
  let epochsTrained = 0;
  return {
    async loadData(data, split) {
      const size = split === 'train' ? data.trainSize ?? 600 : data.testSize ?? 100;
      return { split, size, imageShape: [1, 28, 28], numClasses: 10 };
    },
    info: (d) => ({ size: d.size, imageShape: d.imageShape, numClasses: d.numClasses }),
    take: (d, n) => (n >= d.size ? d : { ...d, size: n }),
    async createModel(spec) { return { arch: spec.arch ?? 'file', trainedEpochs: 0 }; },
    async train(model, data, o) {
      if (opts.failRuns?.includes(o.dir.id)) throw new FisherLensError('ERR_VALUE', 'loss became NaN');
      let start = 1;
      if (o.resume) start = (JSON.parse(fs.readFileSync(o.dir.checkpoint, 'utf8')) as { epoch: number }).epoch + 1;
      opts.log?.trainCalls.push({ dir: o.dir.id, resume: o.resume, startEpoch: start });
      const batches = Math.min(Math.ceil(data.size / o.config.batchSize), o.config.maxBatches ?? Infinity);
      for (let e = start; e <= o.config.epochs; e++) {
        if (opts.hold && (opts.hold.run === '*' || opts.hold.run === o.dir.id) && opts.hold.epoch === e) await held(o.signal, opts.hold.ms ?? 60_000);
        for (let b = 1; b <= batches; b++) {
          if (o.signal?.aborted) throw new FisherLensError('ERR_ABORTED', 'aborted');
          if (opts.batchMs) await new Promise((r) => setTimeout(r, opts.batchMs));
          o.onBatch({ epoch: e, batch: b, batches, loss: 1 / e, accuracy: 0.1 * e });
        }
        const record = { epoch: e, trainLoss: 1 / e, probeAccuracy: 0.2 * e, fisherFrobeniusMean: 10 * e };
        appendJsonl(o.dir.metrics, record);
        fs.writeFileSync(o.dir.checkpoint, JSON.stringify({ epoch: e }));
        model.trainedEpochs = e;
        o.onEpoch(record);
        epochsTrained++;
        if (opts.abortAfterEpochs && epochsTrained >= opts.abortAfterEpochs.epochs) opts.abortAfterEpochs.controller.abort();
      }
      return model;
    },
    async evaluate(model, data, attacks, o) {
      opts.log?.evaluated.push(model.arch);
      o.onProgress?.(0.5, 'clean');
      const seed = o.seed;
      const method = (model as FakeModel & { method?: string }).method ?? '';
      void method;
      const acc = knownAccuracy('natural', model.arch, seed);
      return { accuracy: acc, crossEntropy: 0.3, count: data.size, attacks: Object.fromEntries(attacks.map((a, i) => [a.name, Math.round((acc / (2 + i)) * 1e4) / 1e4])) };
    },
    async fisher(_m, data) {
      const n = data.size;
      return {
        lambdaMax: Array.from({ length: n }, (_, i) => i + 1),
        frobenius: Array.from({ length: n }, (_, i) => 2 * (i + 1)),
        trace: Array.from({ length: n }, (_, i) => 3 * (i + 1)),
      };
    },
    async cckl() {
      return { cckl: 4, jsMean: 1.5, lowerBound: 0.5, nonRobust: 1, nonRobustStderr: 0.1, robust: 3, nonRobustFraction: 0.25, pairs: 100 };
    },
    dispose() { /* nothing native */ },
  };
}

/** Resolves once `signal` aborts; rejects after `ms` so a test that never interrupts fails instead of hanging. */
function held(signal: AbortSignal | undefined, ms: number): Promise<void> {
  if (!signal) return Promise.reject(new Error('fake-science hold: training got no abort signal'));
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`fake-science hold: not interrupted within ${ms} ms`)), ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/** `FAKE_HOLD=<run id>@<epoch>` (`*@<epoch>`: every run) for CLI tests: see `hold` above. */
function holdFromEnv(): { run: string; epoch: number } | undefined {
  const m = /^(.+)@(\d+)$/.exec(process.env.FAKE_HOLD ?? '');
  return m ? { run: m[1], epoch: Number(m[2]) } : undefined;
}

/** For FISHERLENS_EXECUTOR in CLI tests: a fake executor that is slow enough to interrupt. */
export const executor: RunExecutor = scienceExecutor(fakeScience({ batchMs: Number(process.env.FAKE_BATCH_MS ?? 0), hold: holdFromEnv() }));
