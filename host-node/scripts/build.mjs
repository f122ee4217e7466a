// Transpiles the component for Node: `host-example export` writes the very
// component the wasmtime host embeds, and jco turns it into gen/rcpat.js (an
// `instantiate(getCoreModule, imports)` function) plus its core modules.
// The host instantiates it itself (src/component.mjs), so that it controls
// when an instance is made, and gets a fresh one after a trap.
//
// RCPAT_HOST_EXAMPLE names a built host-example binary; otherwise cargo
// builds and runs it (the workspace's dev profile, as the tests use).
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const repo = dirname(here);
const gen = join(here, 'gen');
const component = join(gen, 'rcpat.wasm');

rmSync(gen, { recursive: true, force: true });
mkdirSync(gen, { recursive: true });
const exporter = process.env.RCPAT_HOST_EXAMPLE;
if (exporter) {
  execFileSync(exporter, ['export', component], { stdio: 'inherit' });
} else {
  execFileSync('cargo', ['run', '-q', '-p', 'host-example', '--', 'export', component], {
    cwd: repo,
    stdio: 'inherit',
  });
}
const jco = join(here, 'node_modules', '@bytecodealliance', 'jco', 'dist', 'jco.js');
execFileSync(
  process.execPath,
  [jco, 'transpile', component, '-o', gen, '--name', 'rcpat', '--instantiation', 'sync', '--quiet'],
  { stdio: 'inherit' },
);

// jco 1.35's bindings read process.env.JCO_DEBUG on every lowering step:
// about 45 % of a regeneration's time in Node (node --cpu-prof). Read it once
// at load instead; the switch still works, per process.
const bindings = join(gen, 'rcpat.js');
const perCall = 'if (!globalThis?.process?.env?.JCO_DEBUG) { return; }';
let js = readFileSync(bindings, 'utf8');
if (js.includes(perCall)) {
  js = js.replaceAll(perCall, 'if (!JCO_DEBUG) { return; }');
  js = js.replace('\n', '\nconst JCO_DEBUG = !!globalThis?.process?.env?.JCO_DEBUG;\n');
  writeFileSync(bindings, js);
} else {
  console.warn('build: jco debug check not found (another jco version?); bindings left as generated');
}
console.log(`build: ${component} transpiled into ${gen}`);
