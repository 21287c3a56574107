/**
 * The layers of lib/, bottom to top, declared once: a module may import its own layer and the
 * layers below it, never one above, and nothing may form an import circle (type-only imports
 * count). test/architecture.test.ts runs these rules; `npx depcruise lib` runs them by hand.
 * docs/architecture.md says what each layer holds.
 */
'use strict';

/** lib/ folders, bottom to top; lib/index.ts (the package entry) sits above them all. */
const LAYERS = ['util', 'binding', 'science', 'experiment', 'report', 'cli'];

const forbidden = [
  {
    name: 'no-circular',
    comment: 'an import circle (type-only imports count): move the shared declaration down a layer',
    severity: 'error',
    from: { path: '^lib/' },
    to: { circular: true },
  },
  ...LAYERS.map((layer, i) => ({
    name: `${layer}-imports-up`,
    comment: `lib/${layer} may import only ${LAYERS.slice(0, i + 1).map((l) => `lib/${l}`).join(', ')}`,
    severity: 'error',
    from: { path: `^lib/${layer}/` },
    to: { path: i + 1 < LAYERS.length ? `^lib/(${LAYERS.slice(i + 1).join('|')})/|^lib/index\\.ts$` : '^lib/index\\.ts$' },
  })),
  {
    name: 'lib-imports-outside',
    comment: 'the library imports no test, bench or script module',
    severity: 'error',
    from: { path: '^lib/' },
    to: { path: '^(test|bench|scripts)/' },
  },
];

module.exports = {
  forbidden,
  options: {
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    doNotFollow: { path: 'node_modules' },
    exclude: { path: 'node_modules' },
  },
};
// for test/architecture.test.ts (not enumerable: dependency-cruiser refuses unknown config keys)
Object.defineProperty(module.exports, 'LAYERS', { value: LAYERS, enumerable: false });
