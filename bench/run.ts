/**
 * Runs the benchmarks: `npm run bench` (all) or `npm run bench -- fisher attacks` (by name).
 * Each bench/<name>.ts exports `main(): Promise<void>` and prints its figures and ratios; none
 * passes or fails on time.
 */
import * as fs from 'fs';
import * as path from 'path';

async function run(): Promise<void> {
  const names = process.argv.slice(2);
  const all = fs.readdirSync(__dirname)
    .filter((f) => f.endsWith('.js') && f !== 'run.js' && !f.startsWith('_'))
    .map((f) => f.replace(/\.js$/, ''))
    .sort();
  const chosen = names.length ? names : all;
  for (const n of chosen) {
    if (!all.includes(n)) throw new Error(`unknown benchmark '${n}'; have: ${all.join(', ')}`);
    const mod = require(path.join(__dirname, n)) as { main?: () => Promise<void> };
    if (typeof mod.main !== 'function') continue; // a helper module (e.g. pyserver), not a benchmark
    console.log(`\n=== bench/${n}`);
    await mod.main();
  }
}

run().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
