/**
 * Queue overhead (figures only): what a sweep on BullMQ/Redis costs on top of the runs themselves.
 * A throwaway redis-server on 127.0.0.1 and one in-process worker (the same runner and executor
 * as a local run):
 *   - enqueue → start: BullMQ's job timestamp to the worker's processedOn, one run at a time on an
 *     idle worker (the latency a run waits in an empty queue);
 *   - per run and per epoch: the job's time on the worker (processedOn → finishedOn) against the
 *     run's own time (summary.seconds, measured by the runner inside it), for a fake executor with
 *     a fixed time per batch and for a real LeNet run on Fashion-MNIST;
 *   - local vs queued wall time of the same small sweep.
 * `npm run bench -- queue`
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Queue } from 'bullmq';
import { startRedis, haveRedis } from '../test/helpers/redis';
import { fakeScience } from '../test/helpers/fake-science';
import { ExperimentInput } from '../lib/experiment/config';
import { runExperiment } from '../lib/experiment/runner';
import { RunExecutor, scienceExecutor } from '../lib/experiment/executor';
import { worker } from '../lib/experiment/worker';
import { JobData, JobResult } from '../lib/experiment/queue-jobs';
import { median } from '../lib/util/stats';

const tmp = (p: string) => fs.mkdtempSync(path.join(os.tmpdir(), `fl-bench-q-${p}-`));
const ms = (x: number) => `${x.toFixed(1)} ms`;

function fakeCfg(name: string, seeds: [number, ...number[]], epochs: number): ExperimentInput {
  return {
    name, seeds,
    defaults: { data: { dataset: 'fashion-mnist', trainSize: 300, testSize: 50, probeSize: 20 }, train: { epochs, batchSize: 100 } },
    runs: [{ model: { arch: 'mlp' }, train: { method: 'natural' } }],
  };
}

function realCfg(name: string, seeds: [number, ...number[]]): ExperimentInput {
  return {
    name, seeds,
    defaults: {
      data: { dataset: 'fashion-mnist', trainSize: 1000, testSize: 100, probeSize: 50 },
      train: { epochs: 3, batchSize: 50, optimizer: { type: 'adam', lr: 0.001 } },
      eval: { batchSize: 100, fisher: { samples: 16 }, cckl: { samples: 100, pairs: 50 } },
    },
    runs: [{ model: { arch: 'lenet' }, train: { method: 'natural' } }],
  };
}

async function jobs(url: string, name: string) {
  const q = new Queue<JobData, JobResult>('fisherlens', { connection: { url } });
  try {
    return (await q.getJobs(['completed'], 0, -1)).filter((j) => j.data.experiment === name);
  } finally {
    await q.close();
  }
}

/** Enqueue → start latency, and the job's time on the worker minus the run's own time. */
async function overhead(url: string, root: string, cfgOf: (name: string, seeds: [number, ...number[]]) => ExperimentInput, label: string, n: number, epochs: number): Promise<void> {
  const latency: number[] = [];
  const extra: number[] = [];
  const own: number[] = [];
  for (let i = 0; i < n; i++) {
    const name = `${label}-${i}`;
    const r = await runExperiment(cfgOf(name, [i]), { out: path.join(root, name), queue: { url, pollMs: 20 } });
    if (r.runs[0].status !== 'finished') throw new Error(`${name}: ${r.runs[0].status} ${r.runs[0].error ?? ''}`);
    const [job] = await jobs(url, name);
    latency.push(job.processedOn! - job.timestamp);
    own.push(r.runs[0].summary!.seconds * 1000);
    extra.push(job.finishedOn! - job.processedOn! - r.runs[0].summary!.seconds * 1000);
  }
  console.log(`${label.padEnd(10)} runs ${n}: run's own time ${ms(median(own))} (median); enqueue → start ${ms(median(latency))} (max ${ms(Math.max(...latency))});` +
    ` on the worker beyond the run ${ms(median(extra))} per run = ${ms(median(extra) / epochs)} per epoch (${((median(extra) / median(own)) * 100).toFixed(1)} % of the run)`);
}

export async function main(): Promise<void> {
  if (!haveRedis()) {
    console.log('redis-server is not installed (scripts/setup.sh installs it): skipped');
    return;
  }
  const redis = await startRedis();
  const root = tmp('runs');
  const fake: RunExecutor = scienceExecutor(fakeScience({ batchMs: 20 }));
  try {
    // one worker with the fake executor: 3 epochs × 3 batches × 20 ms ≈ 180 ms of run per job
    const stopFake = new AbortController();
    const wf = worker({ queue: `${redis.url}/1`, executor: fake, roots: [root], signal: stopFake.signal, progressMs: 250 });
    await overhead(`${redis.url}/1`, root, (name, seeds) => fakeCfg(name, seeds, 3), 'fake', 10, 3);
    // a sweep of 8 such runs, local vs queued on that one worker
    let t = Date.now();
    await runExperiment(fakeCfg('sweep', [0, 1, 2, 3, 4, 5, 6, 7], 3), { out: path.join(root, 'sweep-local'), executor: fake });
    const local = Date.now() - t;
    t = Date.now();
    await runExperiment(fakeCfg('sweep', [0, 1, 2, 3, 4, 5, 6, 7], 3), { out: path.join(root, 'sweep-queue'), queue: { url: `${redis.url}/1`, pollMs: 100 } });
    const queued = Date.now() - t;
    console.log(`fake sweep of 8 runs: local ${ms(local)}, queued (1 worker, submitter polling every 100 ms) ${ms(queued)}: ${(queued / local).toFixed(2)}x`);
    stopFake.abort();
    await wf;

    // the real executor: LeNet, 1000 Fashion-MNIST images, 3 epochs (LibTorch loads before the first job)
    const stopReal = new AbortController();
    const wr = worker({ queue: `${redis.url}/2`, roots: [root], signal: stopReal.signal });
    await overhead(`${redis.url}/2`, root, realCfg, 'lenet', 3, 3);
    t = Date.now();
    await runExperiment(realCfg('lenet-local', [0]), { out: path.join(root, 'lenet-local') });
    console.log(`lenet run locally (same config, in this process): ${ms(Date.now() - t)} wall`);
    stopReal.abort();
    await wr;
  } finally {
    await redis.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
}
