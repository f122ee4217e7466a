#!/usr/bin/env bash
# The PostgreSQL benchmark of BENCHMARKS.md, in one session on one machine:
#   1. PostgreSQL's own ceiling: pgbench -b simple-update -c 16 -j 2 (three
#      statements and a durable commit per transaction);
#   2. host-example bench (self-rotation through the component, loss check)
#      against one, then two `serve` processes on one database, one
#      `serve --native` (no component), and one `serve` on SQLite with the
#      same load, for comparison; each PostgreSQL run also splits the CPU per
#      request between the hosts and the database's processes;
#   3. the database's floor for a request's statements: pgbench running a
#      bare pair (an indexed SELECT of a token with its user, a conditional
#      UPDATE of that token) with no host in between, at full speed and
#      paced (-R) at the one host's rate, where the database's per-second
#      costs are spread over as many requests as the host's; the last line
#      gives the host's database CPU per request against both.
# A throw-away cluster with the defaults that matter (fsync=on,
# synchronous_commit=on), stopped on exit. Needs a release build:
#   cargo build --release -p host-example && bench/postgres.sh
# (BIN=path runs another build, e.g. a copy of the one before a change).
# Environment: SECS (per run, default 10), USERS (256), CONNECTIONS (32).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release/host-example}
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

tick=$(getconf CLK_TCK)
# CPU (user + system, in clock ticks) of these processes, threads included.
cpu_ticks() {
    local t=0 pid
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$t"
}
# The database's CPU: the postmaster, its live children, and what its reaped
# children used (backends of closed connections).
database_ticks() {
    local postmaster
    postmaster=$(head -1 "$dir/data/postmaster.pid")
    echo $(( $(awk '{print $16 + $17}' "/proc/$postmaster/stat") \
        + $(cpu_ticks "$postmaster" $(pgrep -P "$postmaster")) ))
}
# pgbench_cpu ARG...: pgbench's throughput and latency, and the machine's CPU per
# transaction, pgbench's own client included (compare the hosts' µs/req).
pgbench_cpu() {
    local before after d0 d1 out txns
    before=$(busy_ticks)
    d0=$(database_ticks)
    out=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U rcpat "$@" 2>/dev/null)
    # pgbench's backends end as it disconnects: let the postmaster reap
    # them (their CPU counts once reaped).
    sleep 1
    d1=$(database_ticks)
    after=$(busy_ticks)
    echo "$out" | grep -E "^(tps|latency average)"
    txns=$(echo "$out" | awk -F': ' '/^number of transactions actually processed/{print $2+0}')
    last_pg_db=$(( (d1 - d0) * 1000000 / tick / txns ))
    echo "machine CPU per transaction: $(( (after - before) * 1000000 / tick / txns )) µs ($txns transactions)," \
        "of which the database $last_pg_db µs"
}

echo "== pgbench -b simple-update -c 16 -j 2 -T 8 (the database's ceiling)"
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U rcpat -i -q pgbench >/dev/null 2>&1
pgbench_cpu -b simple-update -c 16 -j 2 -T 8 pgbench

url="postgres://rcpat@127.0.0.1:$port/rcpat?sslmode=disable"
mkdir -p "$dir/sqlite"
common=(--storage postgres --database-url "$url" --secret-key-file "$dir/rcpat.key")
# SIGTERM, then the exit status: a host stops gracefully with 0, and anything
# else is a fault of the host to report, not noise to hide.
stop_host() {
    local status=0
    kill "$1"
    wait "$1" 2>/dev/null || status=$?
    if [ "$status" != 0 ]; then
        echo "  !! host $1 exited with status $status on SIGTERM" >&2
        grep -h -m3 -A1 "panicked" "$dir"/*.log >&2 || true
    fi
}
# run_hosts N LABEL [SERVE-ARG...]: N hosts on the database, then the bench.
run_hosts() {
    local n=$1 label=$2 p
    shift 2
    hosts=()
    local urls=()
    for _ in $(seq "$n"); do
        p=$(free_port)
        "$BIN" serve "${common[@]}" "$@" --admin-listen off --listen "127.0.0.1:$p" --outbox "$dir/outbox" \
            >"$dir/host-$p.log" 2>&1 &
        hosts+=($!)
        urls+=(--url "http://127.0.0.1:$p")
        for _ in $(seq 100); do
            curl -s -o /dev/null "http://127.0.0.1:$p/api/v1/me" && break
            sleep 0.1
        done
    done
    echo "== host-example bench: $n host(s) on one database, $label, $USERS users, $CONNECTIONS connections, $SECS s"
    local h0 d0 out requests
    h0=$(cpu_ticks "${hosts[@]}")
    d0=$(database_ticks)
    out=$("$BIN" bench "${common[@]}" "${urls[@]}" --users "$USERS" --connections "$CONNECTIONS" --seconds "$SECS")
    echo "$out"
    requests=$(echo "$out" | awk '$1 == "requests" {print $2}')
    # Seeding is counted too (a few ms of each: negligible against the run).
    last_db=$(( ($(database_ticks) - d0) * 1000000 / tick / requests ))
    last_rate=$(( requests / SECS ))
    echo "  split           hosts $(( ($(cpu_ticks "${hosts[@]}") - h0) * 1000000 / tick / requests )) µs," \
        "database $last_db µs per request"
    for pid in "${hosts[@]}"; do stop_host "$pid"; done
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
stop_host "${hosts[0]}"
hosts=()
run_hosts 1 "synchronous_commit=on"
host_db=$last_db host_rate=$last_rate
run_hosts 2 "synchronous_commit=on"
run_hosts 1 "synchronous_commit=on, --native (the same logic without the component)" --native

# The database's floor: what a bare SELECT + conditional UPDATE costs it
# (prepared, autocommit, durable), on the tokens the runs above seeded, with
# pgbench's own client in the figure. A lower bound for any host: the UPDATE
# keeps the token's hash (a HOT update), which a real regeneration cannot.
psql -d rcpat -c "CREATE TABLE bench_pick AS SELECT row_number() OVER () AS n, user_id, hashed_token
                  FROM tokens WHERE kind = 'pat'" -c "CREATE UNIQUE INDEX ON bench_pick (n)"
picks=$(psql -d rcpat -c "SELECT count(*) FROM bench_pick")
pick="\\set n random(1, $picks)
SELECT user_id AS u, hashed_token AS h FROM bench_pick WHERE n = :n \\gset"
printf '%s\n' "$pick" >"$dir/pick.sql"
printf '%s\n' "$pick" \
    "SELECT k.name, k.created_at, u.username FROM tokens k JOIN users u ON u.id = k.user_id WHERE k.hashed_token = :h AND k.user_id = :u;" \
    "UPDATE tokens SET created_at = created_at + 1 WHERE user_id = :u AND kind = 'pat' AND name = 'load' AND hashed_token = :h;" \
    >"$dir/pair.sql"
floor=(-n -M prepared -c "$CONNECTIONS" -j 2 -T "$SECS")
echo "== pgbench: the bare pair (SELECT a token and its user; UPDATE the token), -c $CONNECTIONS -j 2, $SECS s"
pgbench_cpu "${floor[@]}" -f "$dir/pair.sql" rcpat
pair_db=$last_pg_db
echo "== pgbench: the pick alone (the pair's figure includes it)"
pgbench_cpu "${floor[@]}" -f "$dir/pick.sql" rcpat
pick_db=$last_pg_db
# The same pair at the one host's request rate: a database's fixed costs
# (WAL writer, flushes shared by fewer commits, background processes) are
# per second, so at the pair's full rate they are spread over more requests.
echo "== pgbench: the bare pair at the 1-host rate (-R $host_rate)"
pgbench_cpu "${floor[@]}" -R "$host_rate" -f "$dir/pair.sql" rcpat
paced_db=$last_pg_db
echo "== pgbench: the pick alone at that rate"
pgbench_cpu "${floor[@]}" -R "$host_rate" -f "$dir/pick.sql" rcpat
paced_pick_db=$last_pg_db
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
echo "== database CPU per regeneration (1 host, component: $host_db µs) against the bare pair less its pick:"
echo "   at full rate $(ratio "$host_db" $((pair_db - pick_db)))x ($((pair_db - pick_db)) µs)," \
    "at the host's rate $(ratio "$host_db" $((paced_db - paced_pick_db)))x ($((paced_db - paced_pick_db)) µs)"
psql -d rcpat -c "DROP TABLE bench_pick"
# What durability costs: the same with commits acknowledged before the WAL
# is flushed (a crash may lose the last ~0.6 s of acknowledged writes).
psql -d postgres -c "ALTER SYSTEM SET synchronous_commit = off" -c "SELECT pg_reload_conf()" >/dev/null
run_hosts 1 "synchronous_commit=off (not durable; for comparison only)"
