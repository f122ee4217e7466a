// Bundles the Worker for a local workerd (workerd.capnp): esbuild follows
// src/worker.mjs into host-node's shared modules and jco's bindings in
// host-node/gen/ (run host-node's build first: `./dev test` does), and
// copies the three core modules beside the bundle under their own names,
// which workerd.capnp binds as wasm modules. wrangler bundles the same
// entry itself on deploy (wrangler.jsonc).
import { build } from 'esbuild';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const gen = join(here, '..', 'host-node', 'gen', 'rcpat.js');
if (!existsSync(gen)) {
  console.error(`build: ${gen} is missing; run host-node's build first (npm --prefix host-node run build)`);
  process.exit(1);
}
const out = join(here, 'dist');
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: [join(here, 'src', 'worker.mjs')],
  outfile: join(out, 'worker.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  conditions: ['workerd', 'worker', 'browser'],
  target: 'es2022',
  external: ['node:*', 'cloudflare:*', 'crypto'],
  loader: { '.wasm': 'copy' },
  assetNames: '[name]',
  logLevel: 'warning',
});
console.log(`build: ${join(out, 'worker.js')}`);
