#!/usr/bin/env python3
"""Issue 7's attacks against a real `host-example serve` (release build), one
line of result each. Usage: bench/attacks.py [path/to/host-example]
Starts its own server in a temp folder; needs only Python 3's standard library."""
import json, os, socket, sqlite3, stat, subprocess, sys, tempfile, time, urllib.request, urllib.error

exe = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/host-example")
tmp = tempfile.mkdtemp(prefix="rcpat-attacks-")
db, port = os.path.join(tmp, "rcpat.sqlite"), 39000 + os.getpid() % 1000
base = f"http://127.0.0.1:{port}"
common = ["--db", db, "--outbox", os.path.join(tmp, "outbox"), "--cache-dir", os.path.join(tmp, "cache")]

def run(*args, stdin=None):
    return subprocess.run([exe, *args, *common], input=stdin, capture_output=True, text=True, check=True).stdout

def post(path, body, headers=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

def serve():
    log = open(os.path.join(tmp, "serve.log"), "a")
    p = subprocess.Popen([exe, "serve", "--listen", f"127.0.0.1:{port}", *common], stdout=log, stderr=log)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")

run("users", "add", "--username", "alice", "--email", "alice@example.org", "--password-stdin", stdin="correct horse\n")
uri = run("users", "enable-totp", "alice").split("otpauth://")[1].split()[0]
secret = uri.split("secret=")[1].split("&")[0]
server = serve()

# 1. Brute force: 214 wrong passwords, then the right one.
replies = [post("/api/v1/login", {"user": "alice", "password": f"guess{i}"})[1]["error"] for i in range(214)]
right = post("/api/v1/login", {"user": "alice", "password": "correct horse"})[1]
print(f"brute force: {replies.count('Unauthorized')} wrong passwords checked, "
      f"{replies.count('error-login-blocked-for-user')} refused as blocked for the user, "
      f"{replies.count('error-login-blocked-for-ip')} as blocked for the address; then the right one: {right.get('error')}")

# 5./6. Files and secrets at rest.
modes = {n: oct(stat.S_IMODE(os.stat(os.path.join(tmp, n)).st_mode)) for n in sorted(os.listdir(tmp))
         if n.startswith("rcpat") or n in ("outbox", "cache")}
print(f"file modes: {modes}")
row = sqlite3.connect(db).execute("SELECT secret, secret_key_id FROM totp").fetchone()
blob = b"".join(open(os.path.join(tmp, n), "rb").read() for n in os.listdir(tmp) if n.startswith("rcpat.sqlite"))
print(f"TOTP secret in the database: {row[0][:24]}... (key {row[1]}); "
      f"plaintext secret found in database/WAL/SHM bytes: {secret.encode() in blob}")

# 7. Slow clients: 1,000 connections sending half a header, then stalling.
start = time.time()
stalled = []
for _ in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nX-Us")
    stalled.append(s)
t = time.time(); status = post("/api/v1/login", {"user": "bob", "password": "x"})[0]
served_ms = (time.time() - t) * 1000
rss = int(open(f"/proc/{server.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
time.sleep(11)
closed = 0
for s in stalled:
    s.settimeout(0.5)
    try:
        closed += s.recv(1) == b""
    except OSError:
        closed += 1
print(f"slow clients: 1,000 stalled connections, a normal request meanwhile answered {status} in {served_ms:.1f} ms, "
      f"server RSS {rss} MB; {closed} of 1,000 closed 11 s later")
for s in stalled:
    s.close()

# 3./8. Cache tampering and log colours.
server.terminate(); server.wait()
cwasm = [os.path.join(tmp, "cache", n) for n in os.listdir(os.path.join(tmp, "cache")) if n.endswith(".cwasm")][0]
data = bytearray(open(cwasm, "rb").read())
for i in range(len(data) // 2, len(data) // 2 + 64):
    data[i] ^= 0xFF
open(cwasm, "wb").write(data)
server = serve(); time.sleep(0.3); server.terminate(); server.wait()
log = open(os.path.join(tmp, "serve.log")).read()
print(f"cache: after 64 flipped bytes the log says: "
      f"{[l.split('WARN ')[1][:90] for l in log.splitlines() if 'cache_artifact_refused' in l]}; "
      f"ANSI escapes in the redirected log: {chr(27) in log}")
