#!/usr/bin/env python3
"""`make fleet`: N Envoys on loopback under a steady load while the policy, the IdP's key and its key
set change under them (Python standard library only; a benchmark-style report, never a timed test).

  run.py [--proxies 3] [--rate 40] [--short] [--out target/fleet]
         [--envoy .venv/bin/envoy] [--wasm target/mlgate.wasm] [--harness target/release/mlgate-harness-devtools]

Starts the demo IdP and backend (`mlgate-harness idp|backend`), a file server for the module, and N
proxies from envoy/fleet/fleet.yaml, each fetching the module over HTTP and its policy through ECDS
from one watched directory (envoy/fleet/update.py writes it). Then every proxy gets `--rate`
requests a second from a fixed mix of the demo personas' calls (half with a token minted at the
start, half with one re-minted every second) while, on a timeline:

  rotate   the IdP rotates its signing key (the previous one stays in its JWKS: tokens already
           issued stay valid); the fresh tokens carry the new `kid`, which each proxy must fetch;
  swap     policy B is pushed (update.py): four of the mix's eight calls change their decision;
  outage   the IdP's JWKS endpoint answers 503 for 30 s (6 s with --short): a scheduled refresh
           and a refetch forced by an unknown `kid` (a probe sent to each proxy) fail;
  swap     during the outage, policy A is pushed back: the new plugin must find the keys the
           proxy already has.

Every answer is compared with what policy A and what policy B decide for that call (the table
MIX below): decided by A only, by B only, by both alike, or by neither. Per proxy and second:
requests, those decisions, 5xx, 503 keys_unavailable; per swap and proxy, the time from the new
resource landing in the watched directory to that proxy's first answer only the new policy gives (and any answer of the old one
after it). Targets: zero 5xx, zero decided by neither, zero valid tokens refused, every proxy on
the new policy within 2 s. Writes <out>/report.md and <out>/report.json; exits 1 when a target is
missed (--short, the version `make test` runs: correctness targets only, no timing).
"""

import argparse
import base64
import ctypes
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

SWITCH_TARGET_S = 2.0

# The timelines, in seconds from the start of the load. The rotation comes more than min_refresh_interval_seconds (5 s) after the proxies' first fetch, and
# the probe more than that after the rotation's refetch: inside the interval an unknown kid is 401
# unknown_key at once by design (a forged kid must not make a proxy hammer the IdP), so a key used
# the moment it is published is accepted only once the proxy may refetch. The full run's outage
# covers the scheduled refresh (refresh_seconds 60, due about 60 s after the rotation's refetch).
TIMELINES = {
    "full": {"rotate": 10, "swap": 20, "outage": 45, "outage_s": 30, "probe": 46, "swap_back": 60, "end": 90},
    "short": {"rotate": 6, "swap": 8, "outage": 13, "outage_s": 6, "probe": 14, "swap_back": 16, "end": 21},
}

FINANCE_INPUT = {"id": "fleet", "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                            "data": [0.1, 0.2, 0.3, 0.4]}]}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}

# The mix: (name, persona or None, method, path, body, extra headers, what A decides, what B decides).
# A decision is (status, reason): the reason of mlgate's JSON answer, None for the backend's 200.
MIX = [
    ("alice-infer-finance", "alice", "POST", "/v2/models/finance-risk/infer", FINANCE_INPUT, {},
     (200, None), (403, "denied_by_rule")),
    ("bob-model-metadata", "bob", "GET", "/v2/models/finance-risk", None, {},
     (200, None), (403, "no_rule_matched")),
    ("scorer-score", "scorer", "POST", "/score", {"data": [[0.1, 0.2, 0.3, 0.4]]},
     {"azureml-model-deployment": "fraud-detector"},
     (200, None), (403, "no_rule_matched")),
    ("bob-chat", "bob", "POST", "/v1/chat/completions", CHAT, {},
     (403, "no_rule_matched"), (200, None)),
    ("alice-chat", "alice", "POST", "/v1/chat/completions", CHAT, {},
     (200, None), (200, None)),
    ("carl-infer-finance", "carl", "POST", "/v2/models/finance-risk/infer", FINANCE_INPUT, {},
     (403, "denied_by_rule"), (403, "denied_by_rule")),
    ("eve-other-tenant", "eve", "POST", "/v2/models/finance-risk/infer", FINANCE_INPUT, {},
     (401, "tenant_not_allowed"), (401, "tenant_not_allowed")),
    ("anonymous-infer", None, "POST", "/v2/models/finance-risk/infer", FINANCE_INPUT, {},
     (401, "missing_token"), (401, "missing_token")),
]


def policy_a(idp_url):
    """filters/demo.json pointed at this IdP, its key set refreshed every minute (so that the full
    run's outage covers a scheduled refresh)."""
    with open(os.path.join(ROOT, "filters/demo.json")) as f:
        policy = json.load(f)
    for p in policy["providers"]:
        if p["name"] == "demo-idp":
            p["issuer"] = idp_url
            p["jwks"]["uri"] = f"{idp_url}/jwks"
            p["jwks"]["refresh_seconds"] = 60
            p["jwks"]["min_refresh_interval_seconds"] = 5
    return policy


def policy_b(idp_url):
    """Policy A with four decisions of the mix changed: alice's group refused finance-* models on
    infer, model metadata for ml-scientists only, /score for users only, chat for ml-readers too."""
    policy = policy_a(idp_url)
    routes = {r["name"]: r for r in policy["routes"]}
    routes["infer"]["deny"].append({"groups": ["ml-scientists"], "models": ["finance-*"]})
    routes["model-metadata"]["allow"] = [{"groups": ["ml-scientists"]}]
    routes["score"]["allow"] = [r for r in routes["score"]["allow"] if r.get("caller") != "app"]
    routes["chat"]["allow"].append({"groups": ["ml-readers"], "models": ["gpt-4o-mini"]})
    return policy


# --- processes ---------------------------------------------------------------------------------

def _die_with_parent():
    # A fleet left behind by a killed run would hold its ports: children die with this process.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Processes:
    def __init__(self):
        self.children = []

    def start(self, name, argv, log_path):
        log = open(log_path, "wb")
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 preexec_fn=_die_with_parent, cwd=ROOT)
        self.children.append((name, child, log_path))
        return child

    def check_alive(self):
        for name, child, log_path in self.children:
            if child.poll() is not None:
                raise SystemExit(f"run.py: {name} exited ({child.returncode}); log {log_path}:\n{tail(log_path)}")

    def stop(self):
        for _, child, _ in reversed(self.children):
            if child.poll() is None:
                child.terminate()
        for _, child, _ in self.children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, procs, timeout=60, want=200):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        procs.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == want:
                    return
                last = r.status
        except Exception as e:  # noqa: BLE001 (anything: not up yet)
            last = e
        time.sleep(0.05)
    raise SystemExit(f"run.py: {url} not ready after {timeout}s ({last})")


def http_json(method, url, body=None, timeout=5):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


# --- tokens ------------------------------------------------------------------------------------

class Tokens:
    """Per persona, a token minted at the start (kept: a client's cached token) and one re-minted
    every second (after the rotation it carries the new key's kid)."""

    def __init__(self, idp_url):
        self.idp_url = idp_url
        self.personas = sorted({m[1] for m in MIX if m[1]})
        self.cached = {p: self.mint(p) for p in self.personas}
        self.fresh = dict(self.cached)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.mint_failures = 0

    def mint(self, persona):
        _, body = http_json("GET", f"{self.idp_url}/token?persona={persona}&format=raw")
        return body.decode().strip()

    def run(self):
        while not self.stop.wait(1.0):
            for p in self.personas:
                try:
                    token = self.mint(p)
                except Exception:  # noqa: BLE001 (counted; the previous token stays in use)
                    self.mint_failures += 1
                    continue
                with self.lock:
                    self.fresh[p] = token

    def get(self, persona, fresh):
        if fresh:
            with self.lock:
                return self.fresh[persona]
        return self.cached[persona]


def kid_of(token):
    head = token.split(".")[0]
    head += "=" * (-len(head) % 4)
    return json.loads(base64.urlsafe_b64decode(head)).get("kid")


def unknown_kid_token(idp_url):
    """A token naming a key the IdP never had (its signature is never checked: the kid is unknown).
    Sent once to each proxy at the start of the outage, it forces a refetch that fails."""
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    now = int(time.time())
    claims = {"iss": idp_url, "aud": "api://ml-scoring", "iat": now, "nbf": now, "exp": now + 600,
              "tid": "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7", "sub": "probe"}
    return f"{b64({'alg': 'RS256', 'typ': 'JWT', 'kid': 'fleet-probe-unknown-kid'})}.{b64(claims)}.c2ln"


# --- load --------------------------------------------------------------------------------------

def send(conn_box, port, method, path, body, headers):
    """One request on the keep-alive connection in `conn_box` (opened or reopened as needed): its
    status and body; status 0 when no answer came, twice."""
    payload = None if body is None else json.dumps(body).encode()
    hdrs = dict(headers)
    if payload is not None:
        hdrs["content-type"] = "application/json"
    for attempt in range(2):
        if conn_box[0] is None:
            conn_box[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn_box[0].request(method, path, body=payload, headers=hdrs)
            r = conn_box[0].getresponse()
            data = r.read()
            if r.getheader("connection", "").lower() == "close":
                conn_box[0].close()
                conn_box[0] = None
            return r.status, data
        except (OSError, http.client.HTTPException):
            conn_box[0].close()
            conn_box[0] = None
            if attempt == 1:
                return 0, b""
    return 0, b""


class Load:
    """One thread per proxy, a keep-alive connection each, `rate` requests a second on a fixed
    schedule (a slow answer delays the next send; nothing is sent to catch up beyond the schedule)."""

    def __init__(self, proxies, rate, tokens):
        self.proxies = proxies
        self.rate = rate
        self.tokens = tokens
        self.records = []  # (t_sent, proxy, mix index, fresh, status, reason, latency_ms)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.t0 = None

    def worker(self, index, port):
        conn = [None]
        i = 0
        while not self.stop.is_set():
            due = self.t0 + i / self.rate
            wait = due - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                break
            k = (i + index) % len(MIX)
            name, persona, method, path, body, headers, _, _ = MIX[k]
            fresh = (i // len(MIX)) % 2 == 1
            hdrs = dict(headers)
            if persona:
                hdrs["authorization"] = "Bearer " + self.tokens.get(persona, fresh)
            sent = time.monotonic()
            status, data = send(conn, port, method, path, body, hdrs)
            latency = (time.monotonic() - sent) * 1000
            reason = None
            if status != 200 and data:
                try:
                    reason = json.loads(data).get("reason")
                except (ValueError, AttributeError):
                    reason = None
            with self.lock:
                self.records.append((sent - self.t0, index, k, fresh, status, reason, latency))
            i += 1

    def start(self):
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self.worker, args=(i, p.listen), daemon=True)
                        for i, p in enumerate(self.proxies)]
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=35)


class Proxy:
    def __init__(self, index):
        self.index = index
        self.node = f"proxy-{index}"
        self.listen = free_port()
        self.admin = free_port()

    def stats(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/stats?filter=mlgate", timeout=5) as r:
                lines = r.read().decode().splitlines()
        except OSError:
            return {}
        out = {}
        for line in lines:
            k, _, v = line.partition(": ")
            if v.strip().isdigit():
                out[k] = int(v)
        return out


# --- the run -----------------------------------------------------------------------------------

def classify(record):
    _, _, k, _, status, reason, _ = record
    a, b = MIX[k][6], MIX[k][7]
    got = (status, reason if status != 200 else None)
    in_a, in_b = got == a, got == b
    if in_a and in_b:
        return "same"
    if in_a:
        return "A"
    if in_b:
        return "B"
    return "neither"


def valid_token_refused(record):
    """A call whose token both policies accept (neither expects a 401) answered 401 or 503."""
    _, _, k, _, status, _, _ = record
    expects_token_accepted = MIX[k][1] is not None and MIX[k][6][0] != 401 and MIX[k][7][0] != 401
    return expects_token_accepted and status in (401, 503)


def analyse(records, events, n, timeline, duration):
    by_proxy_second = {}
    for r in records:
        key = (r[1], int(r[0]))
        row = by_proxy_second.setdefault(key, {"requests": 0, "same": 0, "A": 0, "B": 0, "neither": 0,
                                               "5xx": 0, "keys_unavailable": 0, "valid_refused": 0})
        row["requests"] += 1
        row[classify(r)] += 1
        if r[4] >= 500 or r[4] == 0:
            row["5xx"] += 1
        if r[4] == 503 and r[5] == "keys_unavailable":
            row["keys_unavailable"] += 1
        if valid_token_refused(r):
            row["valid_refused"] += 1
    # Each swap: per proxy, the first answer only the new policy gives, sent after update.py
    # landed (its file written), and any answer only the old policy gives after that.
    swaps = []
    for ev in events:
        if ev["event"] not in ("swap", "swap_back"):
            continue
        new, old = ev["to"], ev["from"]
        # Until the next update.py starts; "new before the update": answers only the new policy gives,
        # in the 5 s before this update.py started.
        nxt = min([e["started"] for e in events if e["event"] in ("swap", "swap_back") and e["t"] > ev["t"]]
                  or [duration])
        per = []
        for p in range(n):
            mine = sorted((r for r in records if r[1] == p and ev["t"] <= r[0] < nxt), key=lambda r: r[0])
            first_new = next((r[0] for r in mine if classify(r) == new), None)
            before_update = sum(1 for r in records if r[1] == p and ev["started"] - 5 <= r[0] < ev["started"]
                                and classify(r) == new)
            stale = 0 if first_new is None else sum(1 for r in mine if r[0] > first_new and classify(r) == old)
            per.append({"proxy": p, "switched_after_s": None if first_new is None else round(first_new - ev["t"], 3),
                        "old_after_switch": stale, "new_before_update": before_update})
        switched = [x["switched_after_s"] for x in per]
        swaps.append({"event": ev["event"], "at_s": round(ev["t"], 3), "from": old, "to": new, "proxies": per,
                      "last_proxy_switched_after_s": None if None in switched else max(switched)})
    totals = {k: sum(row[k] for row in by_proxy_second.values())
              for k in ("requests", "same", "A", "B", "neither", "5xx", "keys_unavailable", "valid_refused")}
    lat = sorted(r[6] for r in records)
    pct = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)) if lat else (lambda q: None)
    return by_proxy_second, swaps, totals, {"p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxies", type=int, default=3)
    ap.add_argument("--rate", type=float, default=40.0, help="requests a second per proxy")
    ap.add_argument("--short", action="store_true", help="the short timeline (make test)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/fleet"))
    ap.add_argument("--envoy", default=os.environ.get("MLGATE_ENVOY", os.path.join(ROOT, ".venv/bin/envoy")))
    ap.add_argument("--wasm", default=os.path.join(ROOT, "target/mlgate.wasm"))
    ap.add_argument("--harness", default=os.path.join(ROOT, "target/release/mlgate-harness-devtools"))
    args = ap.parse_args()
    if not 1 <= args.proxies <= 16 or not 1 <= args.rate <= 1000:
        raise SystemExit("run.py: --proxies 1..16, --rate 1..1000")
    for what, path in (("envoy", args.envoy), ("wasm", args.wasm), ("harness", args.harness)):
        if not os.path.exists(path):
            raise SystemExit(f"run.py: no {what} at {path}")
    timeline = TIMELINES["short" if args.short else "full"]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    ecds, modules = os.path.join(out, "ecds"), os.path.join(out, "modules")
    for d in (ecds, modules):
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))

    procs = Processes()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args, timeline, out, ecds, modules, procs)
    finally:
        procs.stop()


def push(policy, name, out, ecds, modules, wasm):
    path = os.path.join(out, f"policy-{name}.json")
    with open(path, "w") as f:
        json.dump(policy, f, indent=1)
    subprocess.run([sys.executable, os.path.join(ROOT, "envoy/fleet/update.py"), "--policy", path, "--dir", ecds,
                    "--wasm", wasm, "--modules", modules], check=True, stdout=subprocess.DEVNULL)


def landed(ecds, load):
    """When the resource update.py wrote landed (its file's modification time; the rename that makes
    Envoy read it follows at once), in seconds from the start of the load."""
    wall_at_t0 = time.time() - (time.monotonic() - load.t0)
    mtime = os.stat(os.path.join(ecds, "mlgate.json")).st_mtime
    load.landed_wall = mtime
    return mtime - wall_at_t0


def run(args, timeline, out, ecds, modules, procs):
    idp_port, backend_port, module_port = free_port(), free_port(), free_port()
    procs.start("idp", [args.harness, "idp", "--port", str(idp_port)], os.path.join(out, "idp.log"))
    procs.start("backend", [args.harness, "backend", "--port", str(backend_port)], os.path.join(out, "backend.log"))
    procs.start("modules", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", modules,
                            str(module_port)], os.path.join(out, "modules.log"))
    idp_url = f"http://127.0.0.1:{idp_port}"
    wait_http(f"{idp_url}/healthz", procs)
    wait_http(f"http://127.0.0.1:{backend_port}/healthz", procs)
    policies = {"A": policy_a(idp_url), "B": policy_b(idp_url)}
    push(policies["A"], "A", out, ecds, modules, args.wasm)

    proxies = [Proxy(i) for i in range(args.proxies)]
    for p in proxies:
        cfg = os.path.join(out, f"{p.node}.yaml")
        subprocess.run([sys.executable, os.path.join(ROOT, "envoy/render.py"), "envoy",
                        "--template", os.path.join(ROOT, "envoy/fleet/fleet.yaml"), "--out", cfg,
                        "--set", f"NODE_ID={p.node}", "--set", f"LISTEN_PORT={p.listen}",
                        "--set", f"ADMIN_PORT={p.admin}", "--set", f"BACKEND_PORT={backend_port}",
                        "--set", f"IDP_PORT={idp_port}", "--set", f"MODULE_PORT={module_port}",
                        "--set", f"ECDS_DIR={ecds}", "--set", f"ECDS_FILE={os.path.join(ecds, 'mlgate.json')}"],
                       check=True, stdout=subprocess.DEVNULL)
        procs.start(p.node, [args.envoy, "-c", cfg, "--disable-hot-restart", "--concurrency", "1",
                             "--log-level", "info", "--file-flush-interval-msec", "100"],
                    os.path.join(out, f"{p.node}.log"))
    for p in proxies:
        wait_http(f"http://127.0.0.1:{p.admin}/ready", procs)

    tokens = Tokens(idp_url)
    # Policy A, checked once per proxy before the load: a mix entry this run mis-describes would
    # make every one of its answers "neither"; say so at once instead.
    for p in proxies:
        conn = [None]
        for k, (name, persona, method, path, body, headers, a, _) in enumerate(MIX):
            hdrs = dict(headers)
            if persona:
                hdrs["authorization"] = "Bearer " + tokens.get(persona, False)
            status, data = send(conn, p.listen, method, path, body, hdrs)
            reason = json.loads(data).get("reason") if status != 200 and data else None
            if (status, reason) != a:
                raise SystemExit(f"run.py: {p.node}: {name} answered {status} {reason}, policy A says {a}")

    minting = threading.Thread(target=tokens.run, daemon=True)
    minting.start()
    load = Load(proxies, args.rate, tokens)
    events = []
    probes = []
    load.start()

    def at(t):
        delay = load.t0 + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        procs.check_alive()
        return time.monotonic() - load.t0

    t = at(timeline["rotate"])
    _, body = http_json("POST", f"{idp_url}/admin/rotate")
    events.append({"event": "rotate", "t": t, "kid": json.loads(body)["kid"]})
    t = at(timeline["swap"])
    push(policies["B"], "B", out, ecds, modules, args.wasm)
    events.append({"event": "swap", "t": landed(ecds, load), "from": "A", "to": "B", "started": t})
    t = at(timeline["outage"])
    http_json("POST", f"{idp_url}/admin/outage?seconds={timeline['outage_s']}")
    events.append({"event": "outage", "t": t, "seconds": timeline["outage_s"]})
    t = at(timeline["probe"])
    forged = unknown_kid_token(idp_url)
    for p in proxies:
        conn = [None]
        status, data = send(conn, p.listen, "POST", "/v2/models/finance-risk/infer", FINANCE_INPUT,
                                 {"authorization": "Bearer " + forged})
        reason = json.loads(data).get("reason") if data else None
        probes.append({"proxy": p.index, "status": status, "reason": reason})
    events.append({"event": "unknown_kid_probe", "t": t})
    t = at(timeline["swap_back"])
    push(policies["A"], "A-again", out, ecds, modules, args.wasm)
    events.append({"event": "swap_back", "t": landed(ecds, load), "from": "B", "to": "A", "started": t})
    at(timeline["end"])
    load.join()
    tokens.stop.set()
    procs.check_alive()
    stats = [p.stats() for p in proxies]

    kids_seen = sorted({kid_of(tokens.get(p, True)) for p in tokens.personas} |
                       {kid_of(tokens.get(p, False)) for p in tokens.personas})
    per_second, swaps, totals, latency = analyse(load.records, events, len(proxies), timeline, timeline["end"])
    switch_times = [s["last_proxy_switched_after_s"] for s in swaps]
    targets = [
        ("zero 5xx", totals["5xx"] == 0, totals["5xx"]),
        ("zero requests decided by neither policy", totals["neither"] == 0, totals["neither"]),
        ("zero valid tokens refused (rotation, outage)", totals["valid_refused"] == 0, totals["valid_refused"]),
        ("zero 503 keys_unavailable", totals["keys_unavailable"] == 0, totals["keys_unavailable"]),
        ("no answer of the old policy after a proxy switched",
         all(x["old_after_switch"] == 0 for s in swaps for x in s["proxies"]),
         sum(x["old_after_switch"] for s in swaps for x in s["proxies"])),
        ("every proxy switched at each swap", None not in switch_times, switch_times),
    ]
    timing = ("every proxy on the new policy within 2 s",
              None not in switch_times and max(switch_times) <= SWITCH_TARGET_S, switch_times)
    if not args.short:
        targets.append(timing)
    report = {
        "mode": "short" if args.short else "full", "proxies": len(proxies), "rate_per_proxy": args.rate,
        "timeline": timeline, "events": events, "totals": totals, "latency": latency, "swaps": swaps,
        "unknown_kid_probes": probes, "kids_in_tokens": kids_seen, "mint_failures": tokens.mint_failures,
        "targets": [{"target": n, "met": ok, "value": v} for n, ok, v in targets],
        "timing": {"target": timing[0], "met": timing[1], "value": timing[2]},
        "per_proxy_second": [dict(proxy=p, second=s, **row) for (p, s), row in sorted(per_second.items())],
        "stats": stats,
        # Envoy's own clock of the last update (ECDS update_time, ms since the epoch) after the file landed.
        "last_update_accepted_after_ms": [round(st.get("extension_config_discovery.http_filter.mlgate.update_time", 0)
                                                - load.landed_wall * 1000, 1) for st in stats],
        "commit": git_commit(), "wasm_sha256": sha256_file(args.wasm),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "answers.jsonl"), "w") as f:
        for t, p, k, fresh, status, reason, latency in load.records:
            f.write(json.dumps({"t": round(t, 4), "proxy": p, "call": MIX[k][0], "token": "fresh" if fresh else "cached",
                                "status": status, "reason": reason, "ms": round(latency, 2),
                                "decided_by": classify((t, p, k, fresh, status, reason, latency))}) + "\n")
    md = render_markdown(report)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(md)
    print(md)
    print(f"run.py: {os.path.join(out, 'report.md')}, {os.path.join(out, 'report.json')}")
    return 0 if all(ok for _, ok, _ in targets) else 1


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def render_markdown(r):
    lines = [f"# mlgate fleet run ({r['mode']})", "",
             f"{r['date']}, commit {r['commit']}, module sha256 {r['wasm_sha256'][:16]}…; {r['proxies']} Envoys "
             f"(1 worker each), {r['rate_per_proxy']:g} requests/s per proxy, a mix of {len(MIX)} calls "
             "(4 of them decided differently by policies A and B).", "",
             "## Targets", "", "| target | met | value |", "|---|---|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['target']} | {'yes' if t['met'] else '**NO**'} | {t['value']} |")
    if r["mode"] == "short":
        tm = r["timing"]
        lines.append(f"| ({tm['target']}: not a target of the short run) | {'yes' if tm['met'] else 'no'} | {tm['value']} |")
    t = r["totals"]
    lines += ["", "## Totals", "",
              f"{t['requests']} requests: {t['same']} decided alike by both policies, {t['A']} by A only, "
              f"{t['B']} by B only, {t['neither']} by neither; {t['5xx']} 5xx, {t['keys_unavailable']} 503 "
              f"keys_unavailable, {t['valid_refused']} valid tokens refused. Latency p50 {r['latency']['p50_ms']} ms, "
              f"p99 {r['latency']['p99_ms']} ms, max {r['latency']['max_ms']} ms (client-side, Python).", "",
              "## Events", "", "| t (s) | event |", "|---|---|"]
    for e in r["events"]:
        desc = {k: v for k, v in e.items() if k not in ("t", "event")}
        lines.append(f"| {e['t']:.2f} | {e['event']} {json.dumps(desc) if desc else ''} |")
    lines += ["", "Unknown-kid probes during the outage (a refetch that fails): " +
              ", ".join(f"proxy-{p['proxy']} {p['status']} {p['reason']}" for p in r["unknown_kid_probes"]),
              f"Signing keys in the tokens at the end: {', '.join(r['kids_in_tokens'])}.", "",
              "## Swaps", "", "| swap | at (s) | proxy | first answer of the new policy after (s) | old after it | new before the update |",
              "|---|---|---|---|---|---|"]
    for s in r["swaps"]:
        for x in s["proxies"]:
            lines.append(f"| {s['from']}→{s['to']} | {s['at_s']} | proxy-{x['proxy']} | {x['switched_after_s']} | "
                         f"{x['old_after_switch']} | {x['new_before_update']} |")
    lines += ["", f"Resolution: a call the swap changes every {2000 / r['rate_per_proxy']:g} ms per proxy at "
              f"{r['rate_per_proxy']:g} requests/s. Envoy's own "
              "`update_time` for the last swap, after the file landed (ms): "
              + ", ".join(f"proxy-{i} {v}" for i, v in enumerate(r["last_update_accepted_after_ms"])) + ".",
              "", "## Per proxy and second", "",
              "| proxy | s | requests | alike | A only | B only | neither | 5xx | 503 keys_unavailable |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in r["per_proxy_second"]:
        lines.append(f"| {row['proxy']} | {row['second']} | {row['requests']} | {row['same']} | {row['A']} | {row['B']} | "
                     f"{row['neither']} | {row['5xx']} | {row['keys_unavailable']} |")
    lines += ["", "## mlgate's counters per proxy at the end", ""]
    for i, st in enumerate(r["stats"]):
        keep = {k: v for k, v in st.items() if "jwks" in k or "key" in k or "config_" in k or "update_" in k}
        lines.append(f"- proxy-{i}: " + ", ".join(f"{k} {v}" for k, v in sorted(keep.items())))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
