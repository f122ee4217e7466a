#!/usr/bin/env bash
# The PostgreSQL benchmark of BENCHMARKS.md, in one session on one machine:
#   1. PostgreSQL's own ceiling: pgbench -b simple-update -c 16 -j 2 (three
#      statements and a durable commit per transaction);
#   2. host-example bench (self-rotation through the component, loss check)
#      against one, then two `serve` processes on one database, and against
#      one `serve` on SQLite with the same load, for comparison.
# A throw-away cluster with the defaults that matter (fsync=on,
# synchronous_commit=on), stopped on exit. Needs a release build:
#   cargo build --release -p host-example && bench/postgres.sh
# Environment: SECS (per run, default 10), USERS (256), CONNECTIONS (32).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/host-example
PG_BIN=/usr/lib/postgresql/15/bin
SECS=${SECS:-10}
USERS=${USERS:-256}
CONNECTIONS=${CONNECTIONS:-32}
[ -x "$BIN" ] || { echo "build first: cargo build --release -p host-example" >&2; exit 1; }

dir=$(mktemp -d /tmp/rcpat-pgbench.XXXXXX)
as=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as=(runuser -u postgres --)
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
ctl=(${as[@]+"${as[@]}"} "$PG_BIN/pg_ctl" -D "$dir/data" -w -l "$dir/log"
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300")
hosts=()
cleanup() {
    for pid in ${hosts[@]+"${hosts[@]}"}; do kill "$pid" 2>/dev/null || true; done
    (cd /tmp && "${ctl[@]}" -m fast stop >/dev/null 2>&1) || true
    rm -rf "$dir"
}
trap cleanup EXIT
(cd /tmp && ${as[@]+"${as[@]}"} "$PG_BIN/initdb" -D "$dir/data" -A trust -U rcpat >/dev/null)
(cd /tmp && "${ctl[@]}" start >/dev/null)
psql() { command psql -h 127.0.0.1 -p "$port" -U rcpat -qAt "$@"; }
psql -d postgres -c "CREATE DATABASE rcpat" -c "CREATE DATABASE pgbench"
echo "PostgreSQL $(psql -d postgres -c 'SHOW server_version'), fsync=$(psql -d postgres -c 'SHOW fsync'), synchronous_commit=$(psql -d postgres -c 'SHOW synchronous_commit')"

# Busy CPU time of the whole machine so far, in clock ticks (all cores:
# /proc/stat's first line less idle and iowait).
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

echo "== pgbench -b simple-update -c 16 -j 2 -T 8 (the database's ceiling)"
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U rcpat -i -q pgbench >/dev/null 2>&1
before=$(busy_ticks)
out=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U rcpat -b simple-update -c 16 -j 2 -T 8 pgbench 2>/dev/null)
after=$(busy_ticks)
echo "$out" | grep -E "^(tps|latency average)"
# Machine CPU per transaction, pgbench's own client included: what one
# durable simple-update costs on these cores (compare the hosts' µs/req).
txns=$(echo "$out" | awk -F': ' '/^number of transactions actually processed/{print $2+0}')
tick=$(getconf CLK_TCK)
echo "machine CPU per transaction: $(( (after - before) * 1000000 / tick / txns )) µs ($txns transactions)"

url="postgres://rcpat@127.0.0.1:$port/rcpat?sslmode=disable"
mkdir -p "$dir/sqlite"
common=(--storage postgres --database-url "$url" --secret-key-file "$dir/rcpat.key")
run_hosts() {
    local n=$1 label=$2 p
    hosts=()
    local urls=()
    for _ in $(seq "$n"); do
        p=$(free_port)
        "$BIN" serve "${common[@]}" --admin-listen off --listen "127.0.0.1:$p" --outbox "$dir/outbox" \
            >"$dir/host-$p.log" 2>&1 &
        hosts+=($!)
        urls+=(--url "http://127.0.0.1:$p")
        for _ in $(seq 100); do
            curl -s -o /dev/null "http://127.0.0.1:$p/api/v1/me" && break
            sleep 0.1
        done
    done
    echo "== host-example bench: $n host(s) on one database, $label, $USERS users, $CONNECTIONS connections, $SECS s"
    "$BIN" bench "${common[@]}" "${urls[@]}" --users "$USERS" --connections "$CONNECTIONS" --seconds "$SECS"
    for pid in "${hosts[@]}"; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
    hosts=()
}
# The same load against one host on SQLite (its own group commit), as a
# separate process like the PostgreSQL hosts.
p=$(free_port)
"$BIN" serve --admin-listen off --db "$dir/sqlite/rcpat.sqlite" --listen "127.0.0.1:$p" --outbox "$dir/outbox" \
    >"$dir/sqlite.log" 2>&1 &
hosts=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/api/v1/me" && break; sleep 0.1; done
echo "== host-example bench: 1 host on SQLite, $USERS users, $CONNECTIONS connections, $SECS s"
"$BIN" bench --db "$dir/sqlite/rcpat.sqlite" --url "http://127.0.0.1:$p" --users "$USERS" \
    --connections "$CONNECTIONS" --seconds "$SECS"
kill "${hosts[0]}"; wait "${hosts[0]}" 2>/dev/null || true
hosts=()
run_hosts 1 "synchronous_commit=on"
run_hosts 2 "synchronous_commit=on"
# What durability costs: the same with commits acknowledged before the WAL
# is flushed (a crash may lose the last ~0.6 s of acknowledged writes).
psql -d postgres -c "ALTER SYSTEM SET synchronous_commit = off" -c "SELECT pg_reload_conf()" >/dev/null
run_hosts 1 "synchronous_commit=off (not durable; for comparison only)"
