#!/usr/bin/env bash
# The database's work per statement of a self-rotation, from
# pg_stat_statements: calls, mean execution time, buffers touched and WAL
# written per call, for the statements one host sends under
# `host-example bench`, beside pgbench's bare pair (an indexed SELECT of a
# token with its user, a conditional UPDATE of the token). Buffers and WAL per
# call do not depend on how busy the machine is; times do.
#   cargo build --release -p host-example && bench/postgres_statements.sh
# Environment: BIN (default target/release/host-example), SECS (10), USERS
# (256), CONNECTIONS (32).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/host-example}
PG_BIN=/usr/lib/postgresql/15/bin
SECS=${SECS:-10}
USERS=${USERS:-256}
CONNECTIONS=${CONNECTIONS:-32}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p host-example" >&2; exit 1; }

dir=$(mktemp -d /tmp/rcpat-pgss.XXXXXX)
as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
ctl=(${as[@]+"${as[@]}"} "$PG_BIN/pg_ctl" -D "$dir/data" -w -l "$dir/log"
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 \
        -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all")
host=""
cleanup() {
    [ -n "$host" ] && kill "$host" 2>/dev/null || true
    (cd /tmp && "${ctl[@]}" -m fast stop >/dev/null 2>&1) || true
    rm -rf "$dir"
}
trap cleanup EXIT
(cd /tmp && ${as[@]+"${as[@]}"} "$PG_BIN/initdb" -D "$dir/data" -A trust -U rcpat >/dev/null)
(cd /tmp && "${ctl[@]}" start >/dev/null)
psql() { command psql -h 127.0.0.1 -p "$port" -U rcpat -qAt "$@"; }
psql -d postgres -c "CREATE DATABASE rcpat"
psql -d rcpat -c "CREATE EXTENSION pg_stat_statements"

url="postgres://rcpat@127.0.0.1:$port/rcpat?sslmode=disable"
common=(--storage postgres --database-url "$url" --secret-key-file "$dir/rcpat.key")
p=$(free_port)
"$BIN" serve "${common[@]}" --admin-listen off --listen "127.0.0.1:$p" --outbox "$dir/outbox" >"$dir/host.log" 2>&1 &
host=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/api/v1/me" && break; sleep 0.1; done
# Seed and warm up, then count only the measured run.
"$BIN" bench "${common[@]}" --url "http://127.0.0.1:$p" --users "$USERS" --connections "$CONNECTIONS" --seconds 2 >/dev/null
psql -d rcpat -c "SELECT pg_stat_statements_reset()" >/dev/null
out=$("$BIN" bench "${common[@]}" --url "http://127.0.0.1:$p" --users "$USERS" --connections "$CONNECTIONS" --seconds "$SECS")
echo "$out" | grep -E "throughput|requests"
requests=$(echo "$out" | awk '$1 == "requests" {print $2}')
report() {
    psql -d rcpat -F ' | ' -c "
        SELECT calls, round((calls::numeric / $1), 2), round(mean_exec_time::numeric * 1000, 1),
               round((shared_blks_hit + shared_blks_read)::numeric / calls, 1),
               round(shared_blks_dirtied::numeric / calls, 2), round(wal_records::numeric / calls, 2),
               round(wal_bytes::numeric / calls, 0), left(regexp_replace(query, '\s+', ' ', 'g'), 70)
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'rcpat')
          AND calls >= $1 / 2 ORDER BY total_exec_time DESC LIMIT 8"
}
echo "calls | per request | mean µs | buffers/call | dirtied/call | WAL records/call | WAL bytes/call | statement"
report "$requests"
kill "$host"; wait "$host" 2>/dev/null || true; host=""

# pgbench's bare pair on the tokens the run seeded.
psql -d rcpat -c "CREATE TABLE bench_pick AS SELECT row_number() OVER () AS n, user_id, hashed_token
                  FROM tokens WHERE kind = 'pat'" -c "CREATE UNIQUE INDEX ON bench_pick (n)"
picks=$(psql -d rcpat -c "SELECT count(*) FROM bench_pick")
printf '%s\n' "\\set n random(1, $picks)" \
    "SELECT user_id AS u, hashed_token AS h FROM bench_pick WHERE n = :n \\gset" \
    "SELECT k.name, k.created_at, u.username FROM tokens k JOIN users u ON u.id = k.user_id WHERE k.hashed_token = :h AND k.user_id = :u;" \
    "UPDATE tokens SET created_at = created_at + 1 WHERE user_id = :u AND kind = 'pat' AND name = 'load' AND hashed_token = :h;" \
    >"$dir/pair.sql"
psql -d rcpat -c "SELECT pg_stat_statements_reset()" >/dev/null
txns=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U rcpat -n -M prepared -c "$CONNECTIONS" -j 2 -T "$SECS" -f "$dir/pair.sql" rcpat 2>/dev/null \
    | awk -F': ' '/^number of transactions actually processed/{print $2+0}')
echo "== pgbench: the bare pair, $txns transactions"
echo "calls | per pair | mean µs | buffers/call | dirtied/call | WAL records/call | WAL bytes/call | statement"
report "$txns"
