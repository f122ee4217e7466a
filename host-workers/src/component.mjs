// The component in a Worker's isolate: host-node's Component (jco's
// bindings, the trap handling, the settings) over workerd's module bindings
// of gen/'s core modules (workerd refuses to compile wasm from bytes). One
// instance serves every object of the isolate: a call runs to completion
// synchronously, so its storage and mail imports are pointed at the calling
// object's just for that call.

import { Component } from '../../host-node/src/component.mjs';
import core from '../../host-node/gen/rcpat.core.wasm';
import core2 from '../../host-node/gen/rcpat.core2.wasm';
import core3 from '../../host-node/gen/rcpat.core3.wasm';

const CORE = { 'rcpat.core.wasm': core, 'rcpat.core2.wasm': core2, 'rcpat.core3.wasm': core3 };

const active = { store: null, mail: null };
// What the component's imports see: the calling object's store and mail.
const store = new Proxy({}, { get: (_, name) => active.store[name] });
const mail = { send: (message) => active.mail.send(message) };

let shared = null;

const log = (fields) => console.log(JSON.stringify({ time: new Date().toISOString(), ...fields }));

/** The isolate's component, made on first use (config.mjs makes it at load, to check the settings). */
export function component(config) {
  if (shared) return shared;
  shared = new Component({
    store,
    mail,
    keys: config.keys,
    log: (fields) => {
      if (!active.quiet) log(fields);
    },
    coreModule: (name) => CORE[name],
    settings: config.settings,
  });
  const known = Object.keys(shared.endpoints().defaultSettings());
  const unknown = Object.keys(config.settings).filter((name) => !known.includes(name));
  if (unknown.length > 0) {
    shared = null;
    throw new Error(`SETTINGS names ${unknown.join(', ')}, which the component does not know (it knows ${known.join(', ')}); refusing to start`);
  }
  return shared;
}

/** The component's settings (login limits, for the address objects). */
export const settings = (config) => component(config).settings;

/** Calls `route` with `request` over `objectStore` and `objectMail`; answers {status, body}. */
export function callOn(config, objectStore, objectMail, route, request, { quiet = false } = {}) {
  const c = component(config);
  Object.assign(active, { store: objectStore, mail: objectMail, quiet });
  try {
    return c.call(route, request);
  } finally {
    Object.assign(active, { store: null, mail: null, quiet: false });
  }
}

export { log };
