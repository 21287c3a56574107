/**
 * Foundation figures: round trip of a trivial async op (median µs; target < 50 µs) and the
 * typed array → tensor → typed array copy bandwidth (target ≥ 2 GB/s).
 */
import { Tensor } from '../lib';
import { runOp } from '../lib/binding/op';
import { testAddon } from '../test/helpers/test-hooks';
import { median } from '../lib/util/stats';

export async function main(): Promise<void> {
  const n = testAddon(); // noop and spin: the development build's test hooks (FL_TEST_HOOKS)
  for (let i = 0; i < 200; i++) await n.noop(); // warm-up
  const raw: number[] = [];
  for (let i = 0; i < 2000; i++) {
    const t0 = process.hrtime.bigint();
    await n.noop();
    raw.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  const wrapped: number[] = [];
  for (let i = 0; i < 2000; i++) {
    const t0 = process.hrtime.bigint();
    await runOp({ signal: new AbortController().signal }, (ctl) => n.noop(ctl));
    wrapped.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  console.log(`async op round trip: median ${median(raw).toFixed(1)} µs (native), ` +
    `${median(wrapped).toFixed(1)} µs (with AbortSignal + error mapping); target < 50 µs`);

  const lat: number[] = [];
  for (let i = 0; i < 20; i++) {
    const ac = new AbortController();
    let at = 0;
    setTimeout(() => { at = Number(process.hrtime.bigint()) / 1e6; ac.abort(); }, 20);
    await runOp({ signal: ac.signal }, (ctl) => n.spin(5000, ctl)).catch(() => undefined);
    lat.push(Number(process.hrtime.bigint()) / 1e6 - at);
  }
  console.log(`abort → rejection latency: median ${median(lat).toFixed(1)} ms, max ${Math.max(...lat).toFixed(1)} ms; target < 100 ms`);

  for (const mb of [4, 64]) {
    const data = new Float32Array((mb * 1024 * 1024) / 4).map((_, i) => i % 255);
    const times: number[] = [];
    for (let r = 0; r < 7; r++) {
      const t0 = process.hrtime.bigint();
      const t = Tensor.from(data, [data.length]);
      const back = t.toArray();
      times.push(Number(process.hrtime.bigint() - t0) / 1e9);
      t.dispose();
      if (back.length !== data.length) throw new Error('copy lost data');
    }
    const gbs = (2 * data.byteLength) / median(times) / 1e9;
    console.log(`copy typed array → tensor → typed array, ${mb} MiB: ${gbs.toFixed(2)} GB/s ` +
      `(bytes copied both ways / median time); target ≥ 2 GB/s`);
  }
}
