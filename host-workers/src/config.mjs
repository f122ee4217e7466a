// The isolate's configuration, read once at load from the Worker's
// environment (secrets.mjs): a missing secret throws here, before the
// Worker serves anything.

import { env } from 'cloudflare:workers';
import { configure } from './secrets.mjs';

export const config = configure(env);
