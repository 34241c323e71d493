#!/usr/bin/env node
// onebit-run under Node's WASI (build/wasm/onebit-run runs it with --no-warnings): the same
// arguments, output and exit status as the native CLI.
//
// The WASI program sees the host's file system through one preopened directory, "/" (this
// wasi-libc resolves relative paths against "/" rather than the shell's directory, and a second
// "." preopen shadows absolute paths), so the file arguments are made absolute here.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { WASI } = require('node:wasi');

const FILE_FLAGS = new Set(['-m', '--model', '--ppl']);
const args = process.argv.slice(2).map((a, i, all) =>
  i > 0 && FILE_FLAGS.has(all[i - 1]) ? path.resolve(a) : a);

const wasi = new WASI({
  version: 'preview1',
  args: ['onebit-run', ...args],
  env: process.env,
  preopens: { '/': '/' },
  returnOnExit: true,
});
const wasm = new WebAssembly.Module(fs.readFileSync(path.join(__dirname, 'onebit-run.wasm')));
const instance = new WebAssembly.Instance(wasm, wasi.getImportObject());
process.exitCode = wasi.start(instance);
