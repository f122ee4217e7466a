// The isolate's configuration, read once at load from the Worker's
// environment (secrets.mjs), and the component instantiated with it: a
// missing secret or an unknown setting throws here, before the Worker
// serves anything.

import { env } from 'cloudflare:workers';
import { component } from './component.mjs';
import { configure } from './secrets.mjs';

export const config = configure(env);
component(config);
