#!/usr/bin/env python3
"""The Cloudflare Worker (host-workers/) on a local workerd, measured with
the same independent load generator as bench/wrk.py (`wrk -t1`, a Lua script
regenerating one PAT per (user, name), users authenticated by session tokens,
two-factor off through SETTINGS):

  cold start   workerd spawned -> first reply; a user's first request (its object's start)
  latency      p50/p99 of a 401 and of a regeneration, one connection
  throughput   64 users each in their own Durable Object, against the same
               64 regenerations aimed at one shared object (one user, 64 PATs)
  login stall  user A's regenerations (one connection) alone, then while
               user B logs in back to back (bcrypt in B's object)
  memory       workerd's resident set after start and its peak at the end

CPU per request is workerd's (/proc/PID/stat) and wrk's (getrusage), apart.

Usage: bench/workers.py [--seconds 8] [--connections 64] [--users 64]
Needs wrk (apt-get install -y wrk) and the Worker built:
    ./dev test-workers      (or: cd host-workers && npm ci && node scripts/build.mjs,
                             after host-node's build)
"""
import argparse, json, os, re, resource, secrets, shutil, socket, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wrk import cpu_seconds, free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(ROOT, "host-workers")
LUA = """
local entries = {%s}
local i = 0
request = function()
  i = i + 1
  local e = entries[(i %% #entries) + 1]
  return wrk.format("POST", "/api/v1/users.regeneratePersonalAccessToken",
    {["Content-Type"] = "application/json", ["X-User-Id"] = e[1], ["X-Auth-Token"] = e[2]},
    '{"tokenName":"' .. e[3] .. '"}')
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d\\n", summary.requests,
    latency:percentile(50), latency:percentile(99), summary.errors.status))
end
"""
LUA_401 = """
request = function()
  return wrk.format("GET", "/api/v1/me", {["X-User-Id"] = "%s", ["X-Auth-Token"] = "RScctEHSmLGZGywfIhWyRpyofhKOiMoUIpimhvheU3f"})
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d\\n", summary.requests,
    latency:percentile(50), latency:percentile(99), summary.requests - summary.errors.status))
end
"""


def call(base, path, body, headers=None, method="POST"):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def rss_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Workerd:
    """A local workerd serving host-workers/dist with fresh state and secrets."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="rcpat-workers-bench-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_hex(24)
        env = {"PATH": os.environ["PATH"], "RCPAT_CODE_KEY": secrets.token_hex(32),
               "RCPAT_SECRET_KEY": secrets.token_hex(32), "RCPAT_ADMIN_TOKEN": self.admin_token,
               "RCPAT_MAIL_URL": "http://127.0.0.1:9/unused",
               "RCPAT_SETTINGS": json.dumps({"twoFactorEnabled": False})}
        os.makedirs(os.path.join(self.dir, "state"))
        self.log = open(os.path.join(self.dir, "workerd.log"), "w")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [os.path.join(WORKERS, "node_modules", ".bin", "workerd"), "serve",
             os.path.join(WORKERS, "workerd.capnp"), "-s", f"http=127.0.0.1:{self.port}",
             "-d", f"state={os.path.join(self.dir, 'state')}"],
            env=env, stdout=self.log, stderr=self.log)
        while True:
            try:
                status, _ = call(self.base, "/api/v1/me", {}, method="GET")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.perf_counter() - started > 30:
                    raise SystemExit(f"workerd did not start; see {self.dir}/workerd.log")
                time.sleep(0.005)
        self.first_reply_ms = (time.perf_counter() - started) * 1000
        self.rss_start_kb = rss_kb(self.proc.pid, "VmRSS")

    def admin(self, op, **args):
        status, answer = call(self.base, "/_rcpat/admin", {"op": op, **args},
                              {"Authorization": f"Bearer {self.admin_token}"})
        if "error" in answer:
            raise SystemExit(f"admin {op}: {answer['error']}")
        return answer["ok"]

    def user(self, name, pats=("bench",), password=None):
        uid = self.admin("createUser", username=name, email=f"{name}@example.org", password=password)
        session = self.admin("issueToken", userId=uid, rest=[{}])
        for p in pats:
            self.admin("issueToken", userId=uid, rest=[{"kind": "personal-access-token", "name": p}])
        return uid, session

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_wrk(w, seconds, connections, script):
    lua = os.path.join(w.dir, f"bench-{time.monotonic_ns()}.lua")
    with open(lua, "w") as f:
        f.write(script)
    before_server = cpu_seconds(w.proc.pid)
    before_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", lua, w.base],
                         capture_output=True, text=True, check=True).stdout
    after_wrk = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = cpu_seconds(w.proc.pid) - before_server
    wrk_cpu = (after_wrk.ru_utime + after_wrk.ru_stime) - (before_wrk.ru_utime + before_wrk.ru_stime)
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    requests, p50, p99, bad = map(int, m.groups())
    return {"rate": requests / seconds, "p50": p50 / 1000, "p99": p99 / 1000, "bad": bad,
            "server_us": server_cpu / max(requests, 1) * 1e6, "wrk_us": wrk_cpu / max(requests, 1) * 1e6}


def regenerations(entries):
    return LUA % ", ".join(f'{{"{u}", "{t}", "{n}"}}' for u, t, n in entries)


def row(name, r):
    return (f"| {name} | {r['rate']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['server_us']:.0f} µs | "
            f"{r['wrk_us']:.0f} µs | {r['bad']} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--users", type=int, default=64)
    a = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    if not os.path.exists(os.path.join(WORKERS, "dist", "worker.js")):
        raise SystemExit("host-workers/dist is missing: run ./dev test-workers (or its build) first")
    w = Workerd()
    try:
        users = [w.user(f"u{i}") for i in range(a.users)]
        t = time.perf_counter()
        status, _ = call(w.base, "/api/v1/users.regeneratePersonalAccessToken", {"tokenName": "bench"},
                         {"X-User-Id": users[0][0], "X-Auth-Token": users[0][1]})
        first_regen_ms = (time.perf_counter() - t) * 1000
        shared_uid, shared_session = w.user("shared", pats=[f"bench{i}" for i in range(a.users)])
        a_uid, a_session = w.user("alice")
        w.user("bob", pats=(), password="pw")

        print(f"cold start: first reply {w.first_reply_ms:.0f} ms after spawn; "
              f"a regeneration on a warm object {first_regen_ms:.1f} ms (status {status}); "
              f"workerd RSS after start {w.rss_start_kb / 1024:.0f} MiB", flush=True)
        results = {}
        results["401, 1 connection"] = run_wrk(w, a.seconds, 1, LUA_401 % users[1][0])
        results["regeneration, 1 connection"] = run_wrk(
            w, a.seconds, 1, regenerations([(u, s, "bench") for u, s in users]))
        results[f"{a.users} users, own objects, {a.connections} connections"] = run_wrk(
            w, a.seconds, a.connections, regenerations([(u, s, "bench") for u, s in users]))
        results[f"{a.users} PATs, one shared object, {a.connections} connections"] = run_wrk(
            w, a.seconds, a.connections,
            regenerations([(shared_uid, shared_session, f"bench{i}") for i in range(a.users)]))
        alone = run_wrk(w, a.seconds, 1, regenerations([(a_uid, a_session, "bench")]))
        results["user A alone, 1 connection"] = alone

        stop = threading.Event()
        logins = []

        def log_in_b():
            while not stop.is_set():
                t = time.perf_counter()
                status, _ = call(w.base, "/api/v1/login", {"user": "bob", "password": "pw"})
                logins.append(((time.perf_counter() - t) * 1000, status))

        b = threading.Thread(target=log_in_b)
        b.start()
        try:
            results["user A while B logs in, 1 connection"] = run_wrk(
                w, a.seconds, 1, regenerations([(a_uid, a_session, "bench")]))
        finally:
            stop.set()
            b.join()
        peak = rss_kb(w.proc.pid, "VmHWM")
    finally:
        w.stop()

    print("\n| run | requests/s | p50 ms | p99 ms | workerd CPU/request | wrk CPU/request | non-2xx (401 run: non-401) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(row(name, r))
    ok = [ms for ms, s in logins if s == 200]
    ok.sort()
    with_b = results["user A while B logs in, 1 connection"]
    print(f"\nB's logins during A's run: {len(ok)} of {len(logins)} succeeded, "
          f"median {ok[len(ok) // 2] if ok else 0:.0f} ms each")
    print(f"login stall: A's p99 {alone['p99']:.2f} ms alone -> {with_b['p99']:.2f} ms while B logs in "
          f"(+{with_b['p99'] - alone['p99']:.2f} ms); p50 {alone['p50']:.2f} -> {with_b['p50']:.2f} ms")
    own = results[f"{a.users} users, own objects, {a.connections} connections"]
    shared = results[f"{a.users} PATs, one shared object, {a.connections} connections"]
    print(f"own objects / one shared object throughput: {own['rate'] / shared['rate']:.2f}")
    print(f"workerd memory: {w.rss_start_kb / 1024:.0f} MiB after start, peak {peak / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
