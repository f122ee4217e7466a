// One user's Durable Object (named after the user id), or one unknown
// login's (named `login:<kind>:<identifier>`, holding only its failed-login
// counts). It runs the component on its own state, so one user's requests
// (a login's bcrypt among them) never wait for another user's. A whole
// call is one storage transaction, mail included (outbox.mjs).
//
// A login's per-address count lives in the address's own object
// (address-object.mjs): before the call this object reserves an attempt
// there, the component's `reserve-login-attempt` sees the verdict through
// the store's addressGate, and afterwards an attempt that was not used (the
// account was blocked first) or was given back (a right password) is
// returned. A failure between the two steps leaves the address one attempt
// high until its block window passes: the count errs towards blocking.

import { DurableObject } from 'cloudflare:workers';
import { Admin } from '../../host-node/src/admin.mjs';
import { StoreError } from '../../host-node/src/storage/store.mjs';
import { callOn, log, settings } from './component.mjs';
import { deliverDue, enqueue, nextDue } from './outbox.mjs';
import { objectStore } from './object-store.mjs';
import { config } from './config.mjs';

/** The operations the admin route may ask of a user's object. */
const ADMIN_OPS = new Set(['createUser', 'issueToken', 'enableTotp', 'enableEmailTwoFactor', 'setPermission']);

export class UserObject extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.store = objectStore(ctx.storage, config.keys, config.hostId);
    this.mailQueued = false;
    this.mail = {
      send: (message) => {
        this.store.schema.ensure();
        enqueue(ctx.storage, config.keys.secretKey, message, Date.now());
        this.mailQueued = true;
      },
    };
  }

  /** The component's reply to `route` with WIT request `request`: {status, body}. */
  async handle(route, request) {
    const reservation = route === 'login' ? await this.#reserveAddress(request.clientAddress) : null;
    this.store.addressGate = reservation?.gate ?? null;
    let reply;
    try {
      reply = this.ctx.storage.transactionSync(() => callOn(config, this.store, this.mail, route, request));
    } finally {
      this.store.addressGate = null;
    }
    if (this.mailQueued) {
      this.mailQueued = false;
      // Not awaited before the reply: the alarm is written with the same batch.
      this.ctx.storage.setAlarm(Date.now());
    }
    if (reservation) await reservation.settle();
    return reply;
  }

  /** Reserves one login attempt at the address's object; null when addresses are not limited. */
  async #reserveAddress(address) {
    const s = settings(config);
    const max = s.maxFailedLoginsPerAddress;
    if (max === 0) return { gate: { admit: () => true, credit() {} }, settle: async () => {} };
    const stub = this.env.ADDRESSES.get(this.env.ADDRESSES.idFromName(address || '(none)'));
    const admitted = await stub.admit(Date.now(), max, s.addressLoginBlockMinutes * 60_000);
    let used = false;
    let credited = false;
    return {
      gate: {
        admit() {
          used = admitted;
          return admitted;
        },
        credit() {
          credited = true;
        },
      },
      // An attempt reserved but not used, or used and given back, goes back.
      async settle() {
        if ((admitted && !used) || credited) await stub.giveBack();
      },
    };
  }

  /** An operator's change (admin route): answers {ok} or {error}. */
  admin(op, args) {
    if (!ADMIN_OPS.has(op)) return { error: `unknown operation ${op}` };
    const admin = new Admin(this.store, config.keys);
    try {
      const ok = op === 'createUser' ? admin.createUser(args) : admin[op](args.userId, ...(args.rest ?? []));
      return { ok: ok ?? null };
    } catch (e) {
      if (e instanceof StoreError) return { error: e.message };
      throw e;
    }
  }

  /** This object's audit events, newest first (admin route `auditEvents`): {total, events}. */
  auditEvents(filter = {}, offset = 0, count = 100) {
    const page = this.store.audit.list(filter, offset, count);
    return {
      total: page.total,
      events: page.events.map((s) => ({ ...s.event, at: Number(s.event.at), hostId: s.hostId, count: s.count })),
    };
  }

  /** Mail still in the outbox, for tests and operators: {count, nextDue}. */
  outbox() {
    if (!this.store.schema.exists()) return { count: 0, nextDue: null };
    const count = this.ctx.storage.sql.exec('SELECT count(*) AS n FROM outbox').one().n;
    return { count, nextDue: nextDue(this.ctx.storage) };
  }

  async alarm() {
    if (!this.store.schema.exists()) return;
    const done = await deliverDue(this.ctx.storage, config.keys.secretKey, config.mail, Date.now());
    if (done.delivered || done.failed) log({ event: 'outbox', ...done });
    const due = nextDue(this.ctx.storage);
    if (due !== null) await this.ctx.storage.setAlarm(Math.max(due, Date.now()));
  }
}
