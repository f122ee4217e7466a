#!/usr/bin/env python3
"""The HTTP comparison of BENCHMARKS.md with an independent load generator:
`wrk -t1 -c16` regenerating one PAT per user for 64 users authenticated by
login tokens (`--two-factor false`, default SQLite, synchronous=FULL),
against `serve` (the component) and `serve --native`, alternated, in one
session. Reports each server's CPU per request and wrk's own, separately.

Usage: bench/wrk.py [--runs 3] [--seconds 10] [--connections 16] [--users 64]
                    [--bin target/release/host-example] [--only wasm|native]
                    [--serve-arg ARG]... [--prune-events N]
With --prune-events N, each run starts with N audit events past their
retention in the database, and `host-example audit prune` removes them (in
its batches, from a second process) while wrk runs: requests' latency while
pruning, beside runs without it.
Needs `wrk` (apt install wrk) and a release build:
    cargo build --release -p host-example && bench/wrk.py
"""
import argparse, json, os, re, resource, shutil, socket, sqlite3, subprocess, sys, tempfile, threading, time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")
LUA = """
local users = {%s}
local i = 0
request = function()
  i = i + 1
  local u = users[(i %% #users) + 1]
  return wrk.format("POST", "/api/v1/users.regeneratePersonalAccessToken",
    {["Content-Type"] = "application/json", ["X-User-Id"] = u[1], ["X-Auth-Token"] = u[2]},
    '{"tokenName":"bench"}')
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d\\n", summary.requests,
    latency:percentile(50), latency:percentile(99), summary.errors.status))
end
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(base, path, body, headers=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Server:
    """A seeded `serve` in its own folder."""

    def __init__(self, exe, mode, users, extra=()):
        self.dir = tempfile.mkdtemp(prefix=f"rcpat-wrk-{mode}-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.exe = exe
        self.db = os.path.join(self.dir, "rcpat.sqlite")
        self.common = common = ["--db", self.db,
                                "--secret-key-file", os.path.join(self.dir, "rcpat.key")]
        for u in range(users):
            subprocess.run([exe, "users", "add", "--username", f"u{u}", "--email", f"u{u}@example.org",
                            "--password-stdin", *common], input="pw\n", text=True,
                           capture_output=True, check=True)
        args = [exe, "serve", "--listen", f"127.0.0.1:{self.port}", "--admin-listen", "off",
                "--two-factor", "false", "--outbox", os.path.join(self.dir, "outbox"),
                "--cache-dir", os.path.join(self.dir, "cache"), *common]
        if mode == "native":
            args.append("--native")
        args.extend(extra)
        self.log = open(os.path.join(self.dir, "serve.log"), "w")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"{mode} server did not start; see {self.dir}/serve.log")
        self.creds = []
        for u in range(users):
            login = post(self.base, "/api/v1/login", {"user": f"u{u}", "password": "pw"})["data"]
            uid, tok = login["userId"], login["authToken"]
            post(self.base, "/api/v1/users.generatePersonalAccessToken", {"tokenName": "bench"},
                 {"X-User-Id": uid, "X-Auth-Token": tok})
            self.creds.append((uid, tok))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def add_old_events(server, n):
    """N events from 1970, far past any retention, as logins that failed."""
    db = sqlite3.connect(server.db, timeout=30)
    with db:
        db.executemany(
            "INSERT INTO audit_events (at, account, kind, address, user_agent, host_id) "
            "VALUES (?, ?, 'login-failed', '198.51.100.7', 'bench', 'old')",
            ((1000 + i, f"u{i % 64}") for i in range(n)))
    db.close()


def prune_during(server, delay):
    """Runs `audit prune` after DELAY seconds; returns a dict filled when it ends."""
    out = {}
    def go():
        time.sleep(delay)
        t = time.monotonic()
        p = subprocess.run([server.exe, "audit", "prune", *server.common],
                           capture_output=True, text=True)
        out["seconds"] = time.monotonic() - t
        out["said"] = (p.stdout + p.stderr).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
    th = threading.Thread(target=go)
    th.start()
    return th, out


def run_wrk(server, seconds, connections):
    lua = os.path.join(server.dir, "regenerate.lua")
    with open(lua, "w") as f:
        f.write(LUA % ", ".join(f'{{"{u}", "{t}"}}' for u, t in server.creds))
    before_server = cpu_seconds(server.proc.pid)
    before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", lua, server.base],
                         capture_output=True, text=True, check=True).stdout
    after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = cpu_seconds(server.proc.pid) - before_server
    wrk_cpu = (after_wrk.ru_utime + after_wrk.ru_stime) - (before_wrk.ru_utime + before_wrk.ru_stime)
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, p50, p99, bad = map(int, m.groups())
    return {"rate": requests / seconds, "p50": p50 / 1000, "p99": p99 / 1000, "non200": bad,
            "server_us": server_cpu / requests * 1e6, "wrk_us": wrk_cpu / requests * 1e6}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/host-example")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--only", choices=["wasm", "native"])
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="an extra argument for both `serve` processes (repeatable)")
    ap.add_argument("--prune-events", type=int, default=0,
                    help="old audit events to prune from a second process during each run")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    modes = [a.only] if a.only else ["wasm", "native"]
    exe = os.path.abspath(a.bin)
    servers = {m: Server(exe, m, a.users, a.serve_arg) for m in modes}
    results = {m: [] for m in modes}
    try:
        for run in range(a.runs):
            for m in modes:
                pruning = None
                if a.prune_events:
                    add_old_events(servers[m], a.prune_events)
                    pruning = prune_during(servers[m], 1.0)
                r = run_wrk(servers[m], a.seconds, a.connections)
                if pruning:
                    pruning[0].join()
                    print(f"run {run + 1} {m:6} audit prune: {pruning[1]['said'][0]} "
                          f"in {pruning[1]['seconds']:.2f} s (started 1 s into the run)", flush=True)
                results[m].append(r)
                print(f"run {run + 1} {m:6} {r['rate']:8.0f}/s  p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  "
                      f"server {r['server_us']:.0f} µs/req  wrk {r['wrk_us']:.0f} µs/req  non-200 {r['non200']}",
                      flush=True)
    finally:
        for s in servers.values():
            s.stop()
    print(f"\n| server | regenerations/s | p50 ms | p99 ms | server CPU/request | wrk CPU/request | non-200 |")
    print("|---|---|---|---|---|---|---|")
    for m in modes:
        name = "`serve` (component)" if m == "wasm" else "`serve --native`"
        col = lambda k, f: " / ".join(f % r[k] for r in results[m])
        print(f"| {name} | {col('rate', '%.0f')} | {col('p50', '%.2f')} | {col('p99', '%.2f')} | "
              f"{col('server_us', '%.0f')} µs | {col('wrk_us', '%.0f')} µs | {col('non200', '%d')} |")
    if len(modes) == 2:
        ratios = [w["rate"] / n["rate"] for w, n in zip(results["wasm"], results["native"])]
        p99s = [w["p99"] / n["p99"] for w, n in zip(results["wasm"], results["native"])]
        print(f"\ncomponent/native throughput: {' / '.join('%.2f' % r for r in ratios)}; "
              f"p99 component/native: {' / '.join('%.2f' % r for r in p99s)}")


if __name__ == "__main__":
    main()
