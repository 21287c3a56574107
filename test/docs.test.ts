/**
 * docs/architecture.md is the map a newcomer reads first: it must stay true to the tree. Every
 * repository path it names must exist, and every folder under lib/ must be named in it.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');
const DOC = 'docs/architecture.md';
const TOP = ['lib', 'native', 'scripts', 'test', 'bench', 'configs', 'docs'];

/** Every token in the page that looks like a path under one of the top-level folders. */
function namedPaths(text: string): string[] {
  const re = new RegExp(`(?<![\\w./-])(?:${TOP.join('|')})/[\\w./-]*`, 'g');
  const found = new Set<string>();
  for (const m of text.matchAll(re)) {
    const p = m[0].replace(/[.,:;)]+$/, ''); // sentence punctuation after a path
    found.add(p);
  }
  return [...found].sort();
}

function libFolders(dir = 'lib'): string[] {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .flatMap((e) => {
      const sub = path.posix.join(dir, e.name);
      return [sub, ...libFolders(sub)];
    });
}

test('every path docs/architecture.md names exists', (t) => {
  const text = fs.readFileSync(path.join(ROOT, DOC), 'utf8');
  const paths = namedPaths(text);
  t.true(paths.length > 40, `only ${paths.length} paths found: the pattern no longer matches the page`);
  const missing = paths.filter((p) => !fs.existsSync(path.join(ROOT, p)));
  t.deepEqual(missing, [], `named in ${DOC} but not in the tree`);
});

test('docs/architecture.md names every folder of lib/', (t) => {
  const text = fs.readFileSync(path.join(ROOT, DOC), 'utf8');
  const named = new Set(namedPaths(text).map((p) => p.replace(/\/$/, '')));
  // a folder counts as named when the page names it or a file inside it
  const unnamed = libFolders().filter((d) => ![...named].some((p) => p === d || p.startsWith(`${d}/`)));
  t.deepEqual(unnamed, []);
});

test('the path check fires on a missing path', (t) => {
  const paths = namedPaths('see lib/science/nothing-here.ts and native/binding/, then scripts/setup.sh.');
  t.deepEqual(paths, ['lib/science/nothing-here.ts', 'native/binding/', 'scripts/setup.sh']);
  t.false(fs.existsSync(path.join(ROOT, paths[0])));
});
