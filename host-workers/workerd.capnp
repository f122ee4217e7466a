# A local workerd serving the Worker (dist/, from `npm run build`), for the
# tests, the benchmark and a try-out. Run:
#   workerd serve workerd.capnp -s http=127.0.0.1:8787 -d state=DIR
# with the secrets in the environment (never in this file or the bundle):
#   RCPAT_CODE_KEY, RCPAT_SECRET_KEY   64 hex digits each (openssl rand -hex 32)
#   RCPAT_MAIL_URL                     the HTTP mail API the outbox posts to
#   RCPAT_ADMIN_TOKEN (optional)       turns on POST /_rcpat/admin
#   RCPAT_MAIL_RETRY_BASE_MS (optional) the outbox's first back-off (1000)
#   RCPAT_SETTINGS (optional)          the component's settings, a JSON object
#                                      (WIT `settings` in camelCase)
# Durable Objects keep their SQLite files in DIR, so state survives a restart.
# On Cloudflare, wrangler.jsonc says the same to the platform.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "rcpat", worker = .worker),
    (name = "state", disk = (writable = true)),
    # The outbox's mail API may be on this machine or network (the tests'
    # recorder is on 127.0.0.1); workerd's default reaches public addresses only.
    (name = "outbound", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "rcpat")],
);

const worker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "dist/worker.js"),
    (name = "rcpat.core.wasm", wasm = embed "dist/rcpat.core.wasm"),
    (name = "rcpat.core2.wasm", wasm = embed "dist/rcpat.core2.wasm"),
    (name = "rcpat.core3.wasm", wasm = embed "dist/rcpat.core3.wasm"),
  ],
  compatibilityDate = "2026-11-01",
  globalOutbound = "outbound",
  bindings = [
    (name = "USERS", durableObjectNamespace = "UserObject"),
    (name = "DIRECTORY", durableObjectNamespace = "Directory"),
    (name = "ADDRESSES", durableObjectNamespace = "AddressObject"),
    (name = "CODE_KEY", fromEnvironment = "RCPAT_CODE_KEY"),
    (name = "SECRET_KEY", fromEnvironment = "RCPAT_SECRET_KEY"),
    (name = "MAIL_URL", fromEnvironment = "RCPAT_MAIL_URL"),
    (name = "MAIL_TOKEN", fromEnvironment = "RCPAT_MAIL_TOKEN"),
    (name = "ADMIN_TOKEN", fromEnvironment = "RCPAT_ADMIN_TOKEN"),
    (name = "MAIL_RETRY_BASE_MS", fromEnvironment = "RCPAT_MAIL_RETRY_BASE_MS"),
    (name = "SETTINGS", fromEnvironment = "RCPAT_SETTINGS"),
  ],
  durableObjectNamespaces = [
    (className = "UserObject", uniqueKey = "rcpat-users", enableSql = true),
    (className = "Directory", uniqueKey = "rcpat-directory", enableSql = true),
    (className = "AddressObject", uniqueKey = "rcpat-addresses", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "state"),
);
