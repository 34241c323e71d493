#!/usr/bin/env node
// Runs one WASI test program (make test-wasm) with the current directory as its "/", so the
// relative paths the tests use (tests/data/...) resolve as they do natively.
'use strict';
const fs = require('node:fs');
const { WASI } = require('node:wasi');

const [file, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env: process.env,
  preopens: { '/': process.cwd() }, returnOnExit: true });
const wasm = new WebAssembly.Module(fs.readFileSync(file));
process.exitCode = wasi.start(new WebAssembly.Instance(wasm, wasi.getImportObject()));
