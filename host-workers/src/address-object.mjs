// One client address's Durable Object (named after the address): its
// failed-login count, the per-address half of login admission, counted by
// host-node's rule (localAddressGate) over this object's own records.

import { DurableObject } from 'cloudflare:workers';
import { localAddressGate } from '../../host-node/src/storage/rules.mjs';
import { objectStore } from './object-store.mjs';
import { config } from './config.mjs';

const KEY = 'self';

export class AddressObject extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.store = objectStore(ctx.storage, config.keys, config.hostId);
    this.gate = localAddressGate(this.store);
  }

  /** Counts one attempt at `at` unless the address is at `max` within `blockMs`; answers whether it was counted. */
  admit(at, max, blockMs) {
    return this.store.transaction(() => this.gate.admit(KEY, at, max, blockMs));
  }

  /** Takes one attempt back (not below zero). */
  giveBack() {
    this.store.transaction(() => this.gate.credit(KEY));
  }
}
