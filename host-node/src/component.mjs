// The component in Node: gen/rcpat.js (jco's `--instantiation sync` output)
// instantiated with this host's imports. Core modules are compiled once per
// process; an instance is kept and reused for every call, as JS hosts do
// (the component's allocator starts over at every export, so its memory
// stays flat), and replaced by a fresh one after a trap, which leaves an
// instance unusable.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { instantiate } from '../gen/rcpat.js';
import { storageImport } from './storage/rules.mjs';

const compiled = new Map();

/** gen/'s core modules, compiled from their files once per process (Node). */
function compileFromFile(path) {
  let m = compiled.get(path);
  if (!m) {
    // (The URL is made here, not at load: a bundled Worker has no file URL.)
    m = new WebAssembly.Module(readFileSync(new URL(`../gen/${path}`, import.meta.url)));
    compiled.set(path, m);
  }
  return m;
}

export { ENDPOINTS } from './routes.mjs';

/** A wall clock in ms that tests may move forward. */
export function systemClock() {
  let offset = 0;
  return {
    nowMs: () => Date.now() + offset,
    advance(ms) {
      offset += ms;
    },
  };
}

const INTERNAL = JSON.stringify({
  success: false,
  error: 'The request failed and was stopped [error-internal]',
  errorType: 'error-internal',
});

/** The shortest `settings.code-key` second-factor checks run with (`rcpat::codes::MIN_CODE_KEY_LEN`). */
export const MIN_CODE_KEY_LEN = 32;

/** The user id a request names, for security lines (as host-example logs it: an id, not a secret). */
function userIdOf(request) {
  const h = request.headers.find((h) => h.name.toLowerCase() === 'x-user-id');
  const id = h ? Buffer.from(h.value).toString('latin1') : '';
  return id.length <= 64 && /^[A-Za-z0-9]*$/.test(id) ? id : '';
}

export class Component {
  /**
   * store: a document store (storage/memory.mjs, storage/sqlite.mjs);
   * mail: {send({to, subject, text})}, throwing on failure;
   * keys: {codeKey}; clock: {nowMs()}; log: (object) => void;
   * coreModule: gen/'s core module by file name (a runtime that refuses to
   * compile wasm from bytes, like workerd, passes in its module bindings).
   */
  constructor({ store, mail, keys, clock = systemClock(), log = () => {}, settings = {}, coreModule = compileFromFile }) {
    this.coreModule = coreModule;
    // Fail closed at start: under a shorter code key the component refuses
    // every second-factor check (500 error-code-key-missing).
    if (!keys?.codeKey || keys.codeKey.length < MIN_CODE_KEY_LEN) {
      throw new Error(`the code key (settings.code-key) must be ${MIN_CODE_KEY_LEN} bytes or more; refusing to start`);
    }
    this.clock = clock;
    this.log = log;
    this.instantiations = 0;
    /** Security events the component reported, by kind (`superseded-token-reused`). */
    this.securityEvents = {};
    this.instance = null;
    const wrap = (name, fn) => (...args) => {
      try {
        return fn(...args);
      } catch (e) {
        log({ event: `${name}_failed`, error: e instanceof Error ? e.message : String(e) });
        throw { payload: `${name} failed` };
      }
    };
    const storage = storageImport(store, log);
    const mailImport = { send: wrap('mail', (msg) => mail.send(msg)) };
    const wallClock = {
      now() {
        const ms = clock.nowMs();
        return { seconds: BigInt(Math.floor(ms / 1000)), nanoseconds: (ms % 1000) * 1_000_000 };
      },
      resolution: () => ({ seconds: 0n, nanoseconds: 1_000_000 }),
    };
    const random = {
      getRandomBytes: (len) => new Uint8Array(randomBytes(Number(len))),
      getRandomU64: () => randomBytes(8).readBigUInt64LE(),
    };
    // jco's generated code looks imports up without their version; the
    // typings name them with it. Both, so either build reads them.
    this.imports = {};
    for (const [name, value] of [
      ['rcpat:tokens/storage', storage],
      ['rcpat:tokens/mail', mailImport],
      ['wasi:clocks/wall-clock', wallClock],
      ['wasi:random/random', random],
    ]) {
      this.imports[name] = value;
      this.imports[`${name}@${name.startsWith('wasi') ? '0.2.12' : '0.11.0'}`] = value;
    }
    this.settings = { ...this.endpoints().defaultSettings(), ...settings, codeKey: new Uint8Array(keys.codeKey) };
  }

  /** The kept instance's exports, instantiating when there is none. */
  endpoints() {
    if (!this.instance) {
      // Keep the guest's linear memory in view (memoryBytes) as it is made.
      const core = (module, imports) => {
        const instance = new WebAssembly.Instance(module, imports);
        if (instance.exports.memory instanceof WebAssembly.Memory) this.memory = instance.exports.memory;
        return instance;
      };
      this.instance = instantiate(this.coreModule, this.imports, core).endpoints;
      this.instantiations += 1;
    }
    return this.instance;
  }

  /** The kept instance's linear memory, in bytes. */
  memoryBytes() {
    return this.memory ? this.memory.buffer.byteLength : 0;
  }

  /**
   * What a reply does not show (WIT `security-event`s): each a security
   * log line, counted in `securityEvents` by kind.
   */
  logEvents(route, request, events) {
    for (const e of events) {
      this.securityEvents[e.tag] = (this.securityEvents[e.tag] ?? 0) + 1;
      if (e.tag === 'superseded-token-reused') {
        this.log({
          event: 'token_reuse_detected',
          endpoint: route,
          client: request.clientAddress,
          user_id: userIdOf(request),
          // (A name is the user's text, never a secret; JSON escapes it.)
          token_name: e.val,
        });
      }
    }
  }

  /**
   * Calls `handle` for `route` (e.g. 'regenerate-personal-access-token')
   * with a WIT `request` ({headers: [{name, value}], clientAddress, body});
   * answers {status, body}. A trap is answered 500 and the instance dropped.
   */
  call(route, request) {
    try {
      const reply = this.endpoints().handle(route, this.settings, request);
      if (reply.status === 500 && reply.body.includes('error-code-key-missing')) {
        this.log({ event: 'configuration_error', setting: 'code-key', endpoint: route });
      }
      this.logEvents(route, request, reply.events ?? []);
      return { status: reply.status, body: reply.body };
    } catch (e) {
      this.instance = null;
      this.log({ event: 'component_trapped', endpoint: route, error: e instanceof Error ? e.message : String(e) });
      return { status: 500, body: INTERNAL };
    }
  }
}
