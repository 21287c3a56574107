#!/usr/bin/env node
// Writes dist/esm/index.mjs: the ESM entry re-exports the CommonJS build (one implementation).
'use strict';
const fs = require('fs');
const path = require('path');
const dir = path.join(__dirname, '..', 'dist', 'esm');
fs.mkdirSync(dir, { recursive: true });
fs.writeFileSync(path.join(dir, 'index.mjs'),
  "// ESM entry: re-exports the CommonJS build.\nexport * from '../lib/index.js';\nimport cjs from '../lib/index.js';\nexport default cjs;\n");
