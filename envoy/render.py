#!/usr/bin/env python3
"""Envoy templates and the demo's helpers (Python standard library only).

Subcommands:

  envoy   --template T --out O [--filter-config F] [--wasm W] [--jwks J] [--set NAME=VALUE ...]
          Fill the ${NAME} placeholders of an Envoy YAML template. Every value goes in as a JSON
          scalar: integers bare, anything else as a JSON string (a JSON string is a valid YAML
          double-quoted scalar). MLGATE_CONFIG is the filter configuration file serialised to one
          compact JSON string (Envoy's StringValue `value`); WASM_PATH is the absolute path of the
          module; IDP_JWKS is a JWKS file serialised to one string (native-jwt-rbac.yaml). A
          placeholder left unfilled is an error.

  filter  --in filters/demo.json --out O --idp URL [--provider demo-idp]
          Point a filter configuration at a live demo IdP: the provider's issuer becomes the IdP's
          issuer (from its discovery document) and its inline JWKS the IdP's current key set.

  jwks    --idp URL --out O       Save the IdP's current JWKS.

  wait    URL [--timeout S] [--pid PID] [--log FILE]
          Poll URL until it answers 200; fail early if process PID exits (printing the tail of FILE).

  scenarios --idp URL --gateway URL [--file envoy/demo-scenarios.json] [--check]
          Print a ready-to-paste curl line per scenario with a fresh token and the expected answer;
          with --check send each request instead and compare (exit 1 on any mismatch);
          --status-only ignores reasons (for the native jwt_authn + rbac chain).
"""

import argparse
import json
import os
import re
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def fail(msg):
    print(f"render.py: {msg}", file=sys.stderr)
    sys.exit(1)


def scalar(value):
    if isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"[0-9]+", value)):
        return str(int(value))
    return json.dumps(str(value))


def render_template(text, values):
    missing = set()

    def sub(m):
        name = m.group(1)
        if name not in values:
            missing.add(name)
            return m.group(0)
        return values[name]

    # Placeholders in comment lines are documentation, not substitution sites.
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            out.append(line)
        else:
            out.append(PLACEHOLDER.sub(sub, line))
    if missing:
        fail("unfilled placeholders: " + ", ".join(sorted(missing)))
    return "".join(out)


def cmd_envoy(args):
    values = {}
    for item in args.set or []:
        if "=" not in item:
            fail(f"--set {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        values[k] = scalar(v)
    if args.filter_config:
        with open(args.filter_config) as f:
            config = json.load(f)
        values["MLGATE_CONFIG"] = json.dumps(json.dumps(config, separators=(",", ":")))
    if args.wasm:
        values["WASM_PATH"] = json.dumps(os.path.abspath(args.wasm))
    if args.jwks:
        with open(args.jwks) as f:
            values["IDP_JWKS"] = json.dumps(json.dumps(json.load(f), separators=(",", ":")))
    with open(args.template) as f:
        text = f.read()
    rendered = render_template(text, values)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(rendered)


def http_json(url, method="GET", timeout=5):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def cmd_filter(args):
    with open(args.input) as f:
        config = json.load(f)
    base = args.idp.rstrip("/")
    discovery = http_json(base + "/.well-known/openid-configuration")
    jwks = http_json(discovery["jwks_uri"])
    providers = [p for p in config.get("providers", []) if p.get("name") == args.provider]
    if not providers:
        fail(f"{args.input}: no provider named {args.provider!r}")
    for p in providers:
        p["issuer"] = discovery["issuer"]
        remote = p.get("jwks", {})
        if "uri" in remote or "discovery" in remote:
            # Fetched by mlgate through the Envoy cluster named in the config (demo_idp).
            remote.pop("discovery", None)
            remote["uri"] = discovery["jwks_uri"]
        else:
            p["jwks"] = {"inline": jwks}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def cmd_jwks(args):
    base = args.idp.rstrip("/")
    discovery = http_json(base + "/.well-known/openid-configuration")
    with open(args.out, "w") as f:
        json.dump(http_json(discovery["jwks_uri"]), f)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def cmd_wait(args):
    deadline = time.monotonic() + args.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if args.pid and not pid_alive(args.pid):
            tail = ""
            if args.log and os.path.exists(args.log):
                with open(args.log, errors="replace") as f:
                    tail = "".join(f.readlines()[-25:])
            fail(f"process {args.pid} exited before {args.url} was ready\n{tail}")
        try:
            with urllib.request.urlopen(args.url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.1)
    fail(f"{args.url} not ready after {args.timeout}s ({last})")


def fetch_token(idp, spec):
    """spec: persona name, or {"persona": ..., "expires_in": ..., "aud": ..., "tamper": bool}."""
    if isinstance(spec, str):
        spec = {"persona": spec}
    params = {k: v for k, v in spec.items() if k in ("persona", "expires_in", "not_before_in", "aud")}
    params["format"] = "raw"
    url = idp.rstrip("/") + "/token?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        token = resp.read().decode().strip()
    if spec.get("tamper"):
        token = tamper(token)
    return token


def tamper(token):
    """Flip one character in the middle of the signature: a well-formed token that fails verification."""
    head, payload, sig = token.split(".")
    i = len(sig) // 2
    sig = sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1:]
    return ".".join([head, payload, sig])


def build_request(gateway, scenario, token):
    url = gateway.rstrip("/") + scenario["path"]
    headers = dict(scenario.get("headers", {}))
    if token:
        headers["authorization"] = "Bearer " + token
    body = scenario.get("body")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("content-type", "application/json")
    return url, headers, data


def curl_line(method, url, headers, data):
    parts = ["curl", "-si", "-X", method]
    for k, v in headers.items():
        if k == "authorization":
            parts += ["-H", f"authorization: {v}"]
        else:
            parts += ["-H", f"{k}: {v}"]
    if data is not None:
        parts += ["--data", data.decode()]
    parts.append(url)
    return " ".join(shlex.quote(p) for p in parts)


def send(method, url, headers, data):
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, OSError) as e:
        # No answer (timeout, reset): status 0, reported as a mismatch.
        return 0, {}, json.dumps({"reason": f"no answer: {e}"}).encode()


def cmd_scenarios(args):
    with open(args.file) as f:
        scenarios = json.load(f)["scenarios"]
    bad = 0
    for s in scenarios:
        token = fetch_token(args.idp, s["token"]) if s.get("token") else None
        method = s.get("method", "GET")
        url, headers, data = build_request(args.gateway, s, token)
        exp = s["expect"]
        want = str(exp["status"]) + (f" {exp['reason']}" if exp.get("reason") else "")
        who = s["token"]["persona"] if isinstance(s.get("token"), dict) else (s.get("token") or "anonymous")
        if not args.check:
            print(f"\n# {who}: {s['name']}  ->  expect {want}")
            print(curl_line(method, url, headers, data))
        else:
            status, resp_headers, body = send(method, url, headers, data)
            reason = None
            try:
                reason = json.loads(body).get("reason")
            except (ValueError, AttributeError):
                pass
            got = str(status) + (f" {reason}" if reason else "")
            ok = status == exp["status"] and (args.status_only or not exp.get("reason") or reason == exp["reason"])
            if not ok:
                bad += 1
            mark = "ok      " if ok else "MISMATCH"
            print(f"{mark} {who:<8} {method:<5} {s['path']:<34} want {want:<26} got {got}")
    if args.check:
        print(f"\n{len(scenarios) - bad} passed, {bad} failed")
        if bad:
            sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("envoy")
    e.add_argument("--template", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--filter-config")
    e.add_argument("--wasm")
    e.add_argument("--jwks")
    e.add_argument("--set", action="append")
    e.set_defaults(fn=cmd_envoy)
    f = sub.add_parser("filter")
    f.add_argument("--in", dest="input", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--idp", required=True)
    f.add_argument("--provider", default="demo-idp")
    f.set_defaults(fn=cmd_filter)
    j = sub.add_parser("jwks")
    j.add_argument("--idp", required=True)
    j.add_argument("--out", required=True)
    j.set_defaults(fn=cmd_jwks)
    w = sub.add_parser("wait")
    w.add_argument("url")
    w.add_argument("--timeout", type=float, default=30)
    w.add_argument("--pid", type=int)
    w.add_argument("--log")
    w.set_defaults(fn=cmd_wait)
    s = sub.add_parser("scenarios")
    s.add_argument("--idp", required=True)
    s.add_argument("--gateway", required=True)
    s.add_argument("--file", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo-scenarios.json"))
    s.add_argument("--check", action="store_true")
    s.add_argument("--status-only", action="store_true", help="with --check: compare statuses only")
    s.set_defaults(fn=cmd_scenarios)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
