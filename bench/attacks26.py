#!/usr/bin/env python3
"""Issue 26's measurable attacks, repeated against real `host-example`
processes: one line of result each. Usage:
    bench/attacks26.py [path/to/host-example] [--quick]
Starts its own servers in a temp folder; needs only Python 3's standard
library. --quick runs smaller numbers (for a smoke run)."""
import json, os, re, resource, socket, subprocess, sys, tempfile, threading, time

args = [a for a in sys.argv[1:] if not a.startswith("--")]
quick = "--quick" in sys.argv
exe = os.path.abspath(args[0] if args else "target/release/host-example")
tmp = tempfile.mkdtemp(prefix="rcpat-attacks26-")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cli(db, *argv, stdin=None, check=True):
    return subprocess.run([exe, *argv, "--db", db], input=stdin, capture_output=True, text=True, check=check)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def serve(db, *extra):
    port, admin = free_port(), free_port()
    log = open(db + ".log", "w")
    p = subprocess.Popen([exe, "serve", "--db", db, "--listen", f"127.0.0.1:{port}",
                          "--admin-listen", f"127.0.0.1:{admin}", "--outbox", db + ".outbox",
                          "--cache-dir", os.path.join(tmp, "cache"), *extra],
                         stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "info"})
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p, port, admin
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def connect_from(ip, port):
    s = socket.socket()
    s.bind((ip, 0))
    s.connect(("127.0.0.1", port))
    return s


def request(port, method, path, body=None, headers=(), source="127.0.0.1"):
    s = connect_from(source, port)
    data = json.dumps(body) if body is not None else ""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(data)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    s.sendall((head + "\r\n" + data).encode())
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    s.close()
    status = int(reply[9:12])
    return status, reply.split(b"\r\n\r\n", 1)[1].decode()


def is_open(s):
    """Whether the server still holds `s` open (no EOF, no reset)."""
    s.setblocking(False)
    try:
        while True:
            if s.recv(4096) == b"":
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def item1_rotation_race():
    """Two `keys rotate` at once on one database, 300 TOTP users, 20 trials."""
    users, trials = (40, 5) if quick else (300, 20)
    db = os.path.join(tmp, "rotate.sqlite")
    for i in range(users):
        cli(db, "users", "add", "--username", f"u{i}")
        cli(db, "users", "enable-totp", f"u{i}")
    broken = 0
    for _ in range(trials):
        racers = [subprocess.Popen([exe, "keys", "rotate", "--db", db], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outs = [r.communicate()[0] for r in racers]
        if any(r.returncode != 0 for r in racers):
            broken += 1
            print("   a rotation failed:", [o.strip()[-200:] for o in outs])
    final = cli(db, "keys", "rotate", check=False)
    readable = re.search(r"re-encrypted (\d+) TOTP secrets", final.stdout + final.stderr)
    print(f"item 1: {trials} trials of two concurrent `keys rotate`, {users} TOTP users: "
          f"{broken} trials with a failed rotation; a final rotation re-encrypted "
          f"{readable.group(1) if readable else 'NONE'} of {users} secrets (exit {final.returncode})")


def item6_connection_hog():
    """4,096 connections from one address; a victim from another."""
    n = 600 if quick else 4096
    db = os.path.join(tmp, "hog.sqlite")
    p, port, _ = serve(db)
    hog = []
    for _ in range(n):
        try:
            hog.append(connect_from("127.0.0.41", port))
        except OSError:
            break
    time.sleep(1.0)
    refused = 0
    for s in hog:
        s.setblocking(False)
        try:
            if s.recv(12)[9:12] == b"503":
                refused += 1
        except BlockingIOError:
            pass
    held = len(hog) - refused
    victim = [request(port, "GET", "/api/v1/me", headers=[("X-User-Id", "u"), ("X-Auth-Token", "t")],
                      source="127.0.0.42")[0] for _ in range(20)]
    # The hog keeps trying for 10 s: refusals must stay a line a second.
    started, retried = time.time(), 0
    while time.time() - started < 10:
        try:
            s = connect_from("127.0.0.41", port)
            s.close()
            retried += 1
        except OSError:
            pass
    for s in hog:
        s.close()
    p.terminate()
    p.wait()
    log = open(db + ".log").read()
    warn_lines = log.count("connection_refused")
    print(f"item 6: {len(hog)} connections from one address: {held} held, {refused} answered 503; "
          f"victim from another address: {victim.count(401)} of 20 served (401 = reached the component), "
          f"{victim.count(503)} got 503; {retried} more attempts in 10 s; "
          f"{warn_lines} connection_refused log lines in all")


def item8_proxy():
    """50 failed logins for made-up names behind a proxy, then a real user."""
    db = os.path.join(tmp, "proxy.sqlite")
    cli(db, "users", "add", "--username", "alice", "--password-stdin", stdin="correct horse\n")
    results = {}
    for mode, extra in [("without --trusted-proxies", []), ("with --trusted-proxies 127.0.0.1", ["--trusted-proxies", "127.0.0.1"])]:
        p, port, _ = serve(db, *extra)
        for i in range(50):
            request(port, "POST", "/api/v1/login", {"user": f"nobody{i}-{mode[:4]}", "password": "x"},
                    headers=[("X-Forwarded-For", "203.0.113.7")])
        status, body = request(port, "POST", "/api/v1/login", {"user": "alice", "password": "correct horse"},
                               headers=[("X-Forwarded-For", "203.0.113.8")])
        results[mode] = f"{status} {json.loads(body).get('error', 'ok')}"
        p.terminate()
        p.wait()
        os.remove(db)  # fresh counts for the next mode
        cli(db, "users", "add", "--username", "alice", "--password-stdin", stdin="correct horse\n")
    print("item 8: 50 failed logins for made-up names from 203.0.113.7 behind the proxy, then alice "
          "from 203.0.113.8: " + "; ".join(f"{k}: {v}" for k, v in results.items()))


def item11_admin_half_sent():
    """500 half-sent requests to the admin listener."""
    n = 100 if quick else 500
    db = os.path.join(tmp, "admin.sqlite")
    p, _, admin = serve(db, "--request-timeout-secs", "10")
    conns = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", admin))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        conns.append(s)
    started = time.time()
    open_at = {}
    for mark in (5, 12, 30):
        time.sleep(max(0, mark - (time.time() - started)))
        open_at[mark] = sum(is_open(s) for s in conns)
    p.terminate()
    p.wait()
    print(f"item 11: {n} half-sent requests to the admin listener (header timeout 10 s): "
          + ", ".join(f"{v} open after {k} s" for k, v in open_at.items()))


def item3_short_prefix():
    """--token-prefix A: refused at start; ACME: every older token still works."""
    db = os.path.join(tmp, "prefix.sqlite")
    out = subprocess.run([exe, "serve", "--db", db, "--token-prefix", "A", "--listen", "127.0.0.1:0",
                          "--admin-listen", "off"], capture_output=True, text=True, timeout=30)
    print(f"item 3: --token-prefix A: exit {out.returncode}, "
          f"{(out.stderr.strip().splitlines() or [''])[-1][:120]!r}")


def item12_sigterm_keep_alive():
    """16 keep-alive clients, SIGTERM after 2 s: requests sent on an open
    connection that got no reply."""
    import http.client, signal
    db = os.path.join(tmp, "drain.sqlite")
    p, port, _ = serve(db)
    stop = threading.Event()
    totals = {"answered": 0, "lost": 0, "refused_new": 0}
    lock = threading.Lock()

    def client():
        answered = lost = 0
        conn, reused = http.client.HTTPConnection("127.0.0.1", port, timeout=10), False
        while not stop.is_set():
            try:
                conn.request("GET", "/api/v1/me", headers={"X-User-Id": "u", "X-Auth-Token": "t"})
                r = conn.getresponse()
                r.read()
                answered += 1
                reused = True
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn, reused = http.client.HTTPConnection("127.0.0.1", port, timeout=10), False
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                lost += int(reused)
                conn.close()
                conn, reused = http.client.HTTPConnection("127.0.0.1", port, timeout=10), False
            except ConnectionRefusedError:
                break
        with lock:
            totals["answered"] += answered
            totals["lost"] += lost

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(2)
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=60)
    stop.set()
    for t in threads:
        t.join()
    print(f"item 12: 16 keep-alive clients, SIGTERM after 2 s: {totals['answered']} requests answered, "
          f"{totals['lost']} sent on an open connection without a reply; exit {code}")


for item in (item12_sigterm_keep_alive, item3_short_prefix, item8_proxy, item11_admin_half_sent, item6_connection_hog, item1_rotation_race):
    t = time.time()
    item()
    print(f"   ({time.time() - t:.0f} s)")
