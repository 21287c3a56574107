/**
 * The CLI (lib/cli/main.ts) with one training batch that cannot end by itself, for preemption
 * tests: the SLOW_BATCH-th trainStep of this process (1-based) runs with 10⁹ inner attack steps
 * (minutes on any machine), so only its cancellation ends it; it logs 'slow batch: started' on
 * stderr first. Options a cancelled step never uses: a run that abandons it is unchanged.
 * Usage: SLOW_BATCH=37 node dist/test/helpers/slow-batch.js run cfg.json ...
 */
import { addon } from '../../lib/binding/native';
import { main } from '../../lib/cli/main';

const slow = Number(process.env.SLOW_BATCH);
const native = addon() as unknown as { trainStep: (...a: unknown[]) => Promise<unknown> };
const realStep = native.trainStep;
let calls = 0;
native.trainStep = (m, o, x, y, so, ctl) => {
  if (++calls !== slow) return realStep(m, o, x, y, so, ctl);
  process.stderr.write('slow batch: started\n');
  return realStep(m, o, x, y, { ...(so as object), steps: 1e9 }, ctl);
};
void main(process.argv.slice(2));
