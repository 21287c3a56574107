/**
 * The house rules of lib/, checked with dependency-cruiser against .dependency-cruiser.cjs (where
 * the layer order is declared once): no import circle (type-only imports and lazy require()s
 * count) and no import that runs up a layer (util < binding < science < experiment < report <
 * cli < lib/index.ts). The sources are cruised as TypeScript, so what is checked is what we write,
 * not what tsc emits.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const config = require(path.join(ROOT, '.dependency-cruiser.cjs')) as {
  LAYERS: string[];
  forbidden: object[];
  options: Record<string, unknown>;
};

interface Violation { from: string; to: string; rule: { name: string }; cycle?: Array<{ name: string } | string> }
interface CruiseOutput { summary: { violations: Violation[]; totalCruised: number }; modules: Array<{ source: string }> }
type Cruise = (files: string[], options: object, resolve?: object, transpile?: object) => Promise<{ output: CruiseOutput }>;

/** dependency-cruiser is an ES module: import() kept as import() after compilation to CommonJS. */
async function cruiser(): Promise<Cruise> {
  const load = new Function('s', 'return import(s)') as (s: string) => Promise<{ cruise: Cruise }>;
  return (await load('dependency-cruiser')).cruise;
}

/** Cruises `dir` (relative to `base`) with the project's rules; returns the violations and modules. */
async function check(base: string, dir: string): Promise<CruiseOutput> {
  const cruise = await cruiser();
  const cwd = process.cwd();
  process.chdir(base); // rule paths are relative to the cruise's base folder
  try {
    const tsConfig = path.join(base, 'tsconfig.json');
    const r = await cruise([dir], {
      ...config.options, tsConfig: { fileName: tsConfig }, validate: true, ruleSet: { forbidden: config.forbidden },
    }, undefined, { tsConfig: { fileName: tsConfig } });
    return r.output;
  } finally {
    process.chdir(cwd);
  }
}

function describe(v: Violation): string {
  const cycle = v.cycle?.map((c) => (typeof c === 'string' ? c : c.name)).join(' -> ');
  return `${v.rule.name}: ${v.from} -> ${v.to}${cycle ? ` (circle: ${v.from} -> ${cycle})` : ''}`;
}

test('lib/ has no import circle and no import that runs up a layer', async (t) => {
  const out = await check(ROOT, 'lib');
  const libFiles = (function walk(d: string): string[] {
    return fs.readdirSync(path.join(ROOT, d), { withFileTypes: true }).flatMap((e) => (e.isDirectory()
      ? walk(path.posix.join(d, e.name)) : e.name.endsWith('.ts') ? [path.posix.join(d, e.name)] : []));
  })('lib');
  // the cruise saw every source file (an empty or broken cruise must not pass)
  const seen = new Set(out.modules.map((m) => m.source));
  t.deepEqual(libFiles.filter((f) => !seen.has(f)), []);
  t.deepEqual(out.summary.violations.map(describe), []);
});

test('every lib/ source sits in a layer folder, except the entry lib/index.ts', (t) => {
  const entries = fs.readdirSync(path.join(ROOT, 'lib'), { withFileTypes: true });
  t.deepEqual(entries.filter((e) => e.isFile()).map((e) => e.name), ['index.ts']);
  t.deepEqual(entries.filter((e) => e.isDirectory()).map((e) => e.name).sort(), [...config.LAYERS].sort());
});

test('the rules catch a circle, an upward import and an upward type-only import (a planted tree)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fl-arch-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (f: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), text);
  };
  write('tsconfig.json', JSON.stringify({ compilerOptions: { module: 'Node16', moduleResolution: 'Node16', strict: true } }));
  write('lib/util/a.ts', "import type { B } from '../binding/b';\nexport type A = B | number;\n");
  write('lib/binding/b.ts', "import type { A } from '../util/a';\nexport type B = string;\nexport type AB = A;\n");
  write('lib/science/c.ts', "import { d } from '../cli/d';\nexport const c = d + 1;\n");
  write('lib/cli/d.ts', 'export const d = 1;\n');
  const out = await check(dir, 'lib');
  // dependency-cruiser reports each import once, under one of the rules it breaks
  const v = out.summary.violations;
  t.deepEqual([...new Set(v.map((x) => `${x.from} -> ${x.to}`))].sort(), [
    'lib/binding/b.ts -> lib/util/a.ts', 'lib/science/c.ts -> lib/cli/d.ts', 'lib/util/a.ts -> lib/binding/b.ts',
  ]);
  t.deepEqual([...new Set(v.map((x) => x.rule.name))].sort(), ['no-circular', 'science-imports-up', 'util-imports-up']);
  t.true(v.some((x) => x.rule.name === 'no-circular' && x.from === 'lib/binding/b.ts'), 'the type-only circle util <-> binding');
});
