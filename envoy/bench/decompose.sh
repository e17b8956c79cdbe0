#!/usr/bin/env bash
# Where mlgate's Envoy CPU goes on a forged token and on a cache hit, against native jwt_authn and the
# empty wasm filter: throwaway builds that stop mlgate's work at one step each, run side by side in real
# Envoy. A benchmark, never a test. Run `make bench` first (it mints the tokens used here and builds the empty filter).
#
#   bash envoy/bench/decompose.sh            # 5 rounds; DECOMPOSE_ROUNDS, DECOMPOSE_SECONDS (4) change that
#
# The builds come from a git worktree of HEAD (target/decompose/tree: commit first, uncommitted changes are not in
# them), each with one patch to the adapter (src/filter/), built and wasm-opt'ed exactly as `make build` does:
#   mlgate           HEAD as it is
#   no-host-call     the signature step answers "bad signature" without calling verify_signature
#   call-no-key      verify_signature called with an empty key (the host parses the argument, then refuses it)
#   call-key-only    verify_signature called with hash "md5" (the host imports the key, then refuses the hash)
#   return-at-once   on_http_request_headers continues at once (the module's own cost, no host call)
#   read-token       reads only the `authorization` header, then continues
#   read-headers     reads the request header map, then continues
# Forged tokens come in two kinds: the bench's (signature < the modulus: the RSA arithmetic runs) and the same with
# the signature's first byte 0xff (≥ the modulus: BoringSSL refuses it before any arithmetic), so that the RSA step's
# cost can be read off for native jwt_authn and for mlgate's host call alike.
# Output: target/decompose/results.md (per-round differences, medians) and runs.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=${DECOMPOSE_ROUNDS:-5}
SECONDS_PER_RUN=${DECOMPOSE_SECONDS:-4}
B=$ROOT/target/bench
OUT=$ROOT/target/decompose
ENVOY=$ROOT/.venv/bin/envoy
NOOP=$ROOT/target/wasm32-wasip1/wasm/mlgate_noop_filter.wasm
log() { echo "decompose: $*" >&2; }
die() { log "error: $*"; exit 1; }

for f in "$B/tokens/forged.txt" "$B/tokens/one.txt" "$NOOP" "$ENVOY"; do
  [ -e "$f" ] || die "$f is missing: run \`make bench\` first"
done
for tool in wrk taskset timeout curl python3 git; do command -v $tool >/dev/null || die "$tool not found"; done
mkdir -p "$OUT"

# --- the builds ---------------------------------------------------------------------------------------------
# The worktree (and its target/, so later runs build incrementally) stays; `git worktree remove --force
# target/decompose/tree` drops it.
TREE=$OUT/tree
HEAD_REV=$(git rev-parse HEAD)
if [ -e "$TREE/.git" ]; then
  git -C "$TREE" checkout -q --force --detach "$HEAD_REV"
else
  rm -rf "$TREE"
  git worktree prune
  git worktree add -q --detach "$TREE" "$HEAD_REV"
fi

# patch VARIANT: edits the worktree's adapter; fails when the text it expects is not there.
patch_tree() {
  python3 - "$TREE" "$1" <<'PY'
import sys
tree, variant = sys.argv[1], sys.argv[2]
def edit(path, old, new):
    p = f"{tree}/{path}"
    s = open(p).read()
    if old not in s:
        sys.exit(f"decompose: {path} no longer has the text the '{variant}' patch expects")
    open(p, "w").write(s.replace(old, new, 1))
verify = "pub fn verify(check: &HostCheck<'_>) -> Option<bool> {\n"
experiment = "    let experiment = check.text.len() > 100; // not the configure-time probe\n"
call = "    let result = match hostcalls::call_foreign_function(FUNCTION, &args) {"
answer_false = ("    if experiment {\n        let _ = hostcalls::call_foreign_function(FUNCTION, &args);\n"
                "        return Some(false);\n    }\n")
headers = "        let headers = match hostcalls::get_headers(MapType::HttpRequestHeaders) {"
decide = "        let now = hostcalls::now_seconds();\n        match decide(&shared, &headers, now, true) {"
if variant == "no-host-call":
    edit("src/filter/host_crypto.rs", verify, verify + "    if check.text.len() > 100 {\n        return Some(false);\n    }\n")
elif variant == "call-no-key":
    edit("src/filter/host_crypto.rs", verify, verify + experiment)
    edit("src/filter/host_crypto.rs", "    field(&mut args, 2, check.spki_der);",
         "    field(&mut args, 2, if experiment { b\"\" } else { check.spki_der });")
    edit("src/filter/host_crypto.rs", call, answer_false + call)
elif variant == "call-key-only":
    edit("src/filter/host_crypto.rs", verify, verify + experiment)
    edit("src/filter/host_crypto.rs", "    field(&mut args, 1, check.hash.as_bytes());",
         "    field(&mut args, 1, if experiment { b\"md5\" } else { check.hash.as_bytes() });")
    edit("src/filter/host_crypto.rs", call, answer_false + call)
elif variant == "return-at-once":
    edit("src/filter/http.rs", headers, "        if std::hint::black_box(true) {\n            return Action::Continue;\n        }\n" + headers)
elif variant == "read-token":
    edit("src/filter/hostcalls.rs", "extern \"C\" {\n",
         "extern \"C\" {\n    fn proxy_get_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, "
         "value_data: *mut *mut u8, value_size: *mut usize) -> u32;\n")
    with open(f"{tree}/src/filter/hostcalls.rs", "a") as f:
        f.write("\npub fn read_token_only() -> Vec<u8> {\n    let (mut data, mut size) = (null_mut(), 0usize);\n"
                "    let name = \"authorization\";\n    // SAFETY: as in `get_headers`.\n"
                "    let _ = unsafe { proxy_get_header_map_value(0, name.as_ptr(), name.len(), &mut data, &mut size) };\n"
                "    take_buffer(data, size)\n}\n")
    edit("src/filter/http.rs", headers,
         "        if std::hint::black_box(true) {\n            std::hint::black_box(hostcalls::read_token_only());\n"
         "            return Action::Continue;\n        }\n" + headers)
elif variant == "read-headers":
    edit("src/filter/http.rs", decide,
         "        std::hint::black_box(&headers);\n        if std::hint::black_box(true) {\n            return Action::Continue;\n        }\n" + decide)
elif variant != "mlgate":
    sys.exit(f"decompose: unknown variant {variant}")
PY
}

VARIANTS="mlgate no-host-call call-no-key call-key-only return-at-once read-token read-headers"
for v in $VARIANTS; do
  git -C "$TREE" checkout -q -- src
  patch_tree "$v"
  log "building $v"
  make -C "$TREE" build >"$OUT/build-$v.log" 2>&1 || die "build of $v failed: $OUT/build-$v.log"
  cp "$TREE/target/mlgate.wasm" "$OUT/$v.wasm"
done

# --- tokens: the bench's forgeries, and the same with a signature ≥ the modulus ---------------------------------
python3 - "$B/tokens/forged.txt" "$OUT/forged-ge-modulus.txt" <<'PY'
import base64, sys
out = []
for line in open(sys.argv[1]).read().split():
    head, payload, sig = line.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[0] = 0xFF
    out.append(f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY

# --- runs ---------------------------------------------------------------------------------------------------
# Two free loopback ports, used by every run in turn (one Envoy at a time).
read -r PORT ADMIN_PORT <<<"$(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(*(x.getsockname()[1] for x in s))')"

# run CHAIN WASM TOKENS WANT: Envoy CPU µs per request over one wrk run (Envoy on CPU 0, wrk on CPU 1) for
# envoy/bench/CHAIN.yaml rendered as `make bench` renders it, after checking that the chain answers the first token
# with the status WANT (a broken build stops the script).
run() {
  local chain=$1 wasm=$2 tokens=$3 want=$4 yaml=$OUT/chain.yaml pid c0 c1 requests got
  python3 envoy/render.py envoy --template "envoy/bench/$chain.yaml" --out "$yaml" --wasm "$wasm" \
    --filter-config envoy/bench/mlgate-bench.json --jwks envoy/bench/bench-jwks.json \
    --set "LISTEN_PORT=$PORT" --set "ADMIN_PORT=$ADMIN_PORT" >&2
  taskset -c 0 "$ENVOY" -c "$yaml" --concurrency 1 --disable-hot-restart --log-level warn >"$yaml.log" 2>&1 &
  pid=$!
  python3 envoy/render.py wait "http://127.0.0.1:$ADMIN_PORT/ready" --timeout 60 --pid "$pid" --log "$yaml.log" >&2
  got=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "authorization: Bearer $(head -1 "$tokens")" \
    "http://127.0.0.1:$PORT/score" || true)
  if [ "$got" != "$want" ]; then
    kill "$pid" 2>/dev/null || true
    die "$chain with $(basename "$wasm") and $(basename "$tokens") answered $got, not $want (Envoy's log: $yaml.log)"
  fi
  drive() {
    timeout $(($1 + 30)) taskset -c 1 wrk -t1 -c16 -d"$1s" -s envoy/bench/tokens.lua \
      "http://127.0.0.1:$PORT/score" -- "$tokens" 2>/dev/null | grep -o 'requests=[0-9]*' | cut -d= -f2 || true
  }
  cpu() { cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
  drive 1 >/dev/null
  c0=$(cpu)
  requests=$(drive "$SECONDS_PER_RUN")
  c1=$(cpu)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -z "$requests" ] || [ "$requests" = 0 ]; then echo nan; return; fi
  awk -v a="$c0" -v b="$c1" -v n="$requests" 'BEGIN {printf "%.2f", (b - a) / 1000 / n}'
}

TSV=$OUT/runs.tsv
printf 'round\tchain\tenvoy_cpu_us_per_request\n' >"$TSV"
F=$B/tokens/forged.txt; FGE=$OUT/forged-ge-modulus.txt; ONE=$B/tokens/one.txt
for r in $(seq "$ROUNDS"); do
  log "round $r/$ROUNDS"
  while read -r name chain wasm tokens want; do
    value=$(run "$chain" "$wasm" "$tokens" "$want") || exit 1
    printf '%s\t%s\t%s\n' "$r" "$name" "$value" >>"$TSV"
  done <<EOF
c:native native $OUT/mlgate.wasm $F 401
c:native,sig>=n native $OUT/mlgate.wasm $FGE 401
c:mlgate mlgate $OUT/mlgate.wasm $F 401
c:mlgate,sig>=n mlgate $OUT/mlgate.wasm $FGE 401
c:call-key-only mlgate $OUT/call-key-only.wasm $F 401
c:call-no-key mlgate $OUT/call-no-key.wasm $F 401
c:no-host-call mlgate $OUT/no-host-call.wasm $F 401
a:noop noop-wasm $NOOP $ONE 200
a:return-at-once mlgate $OUT/return-at-once.wasm $ONE 200
a:read-token mlgate $OUT/read-token.wasm $ONE 200
a:read-headers mlgate $OUT/read-headers.wasm $ONE 200
a:mlgate mlgate $OUT/mlgate.wasm $ONE 200
EOF
done

python3 - "$TSV" "$OUT/results.md" "$(git rev-parse --short HEAD)" "$ROUNDS" <<'PY'
import collections, statistics, sys, datetime
tsv, out, commit, rounds = sys.argv[1:]
runs = collections.defaultdict(dict)
for line in open(tsv).read().splitlines()[1:]:
    r, chain, value = line.split("\t")
    if value != "nan":
        runs[r][chain] = float(value)
def median(fn, places=1):
    values = []
    for row in runs.values():
        try:
            values.append(fn(row))
        except KeyError:
            pass
    if not values:
        return "n/a", ""
    return f"{statistics.median(values):.{places}f}", f"{min(values):.{places}f} to {max(values):.{places}f}"
lines = [
    "# Where the Envoy CPU goes: forged tokens and cache hits", "",
    f"- {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}, {rounds} rounds, "
    "Envoy CPU µs per request (schedstat), medians over rounds of per-round differences",
    "- command: `bash envoy/bench/decompose.sh` (after `make bench`)", "",
    "| what | µs per request (median) | min to max |", "|---|---:|---|",
]
rows = [
    ("c: native jwt_authn + rbac, forged token", lambda x: x["c:native"]),
    ("c: mlgate, forged token", lambda x: x["c:mlgate"]),
    ("c: mlgate − native", lambda x: x["c:mlgate"] - x["c:native"]),
    ("c: native / mlgate (the bench's CPU ratio)", lambda x: x["c:native"] / x["c:mlgate"]),
    ("c: mlgate − native, signature ≥ modulus (no RSA arithmetic on either side)", lambda x: x["c:mlgate,sig>=n"] - x["c:native,sig>=n"]),
    ("c: native's RSA step (signature < modulus − ≥ modulus)", lambda x: x["c:native"] - x["c:native,sig>=n"]),
    ("c: mlgate's RSA step in verify_signature (same)", lambda x: x["c:mlgate"] - x["c:mlgate,sig>=n"]),
    ("c: mlgate's whole verify_signature call (mlgate − no-host-call)", lambda x: x["c:mlgate"] - x["c:no-host-call"]),
    ("c: … the call and the host's argument parsing (call-no-key − no-host-call)", lambda x: x["c:call-no-key"] - x["c:no-host-call"]),
    ("c: … the key import and the result (call-key-only − call-no-key)", lambda x: x["c:call-key-only"] - x["c:call-no-key"]),
    ("c: … digest, EVP set-up and RSA (mlgate − call-key-only)", lambda x: x["c:mlgate"] - x["c:call-key-only"]),
    ("c: mlgate without the call − native with a signature ≥ modulus", lambda x: x["c:no-host-call"] - x["c:native,sig>=n"]),
    ("a: the empty wasm filter (floor)", lambda x: x["a:noop"]),
    ("a: mlgate, cache hit", lambda x: x["a:mlgate"]),
    ("a: mlgate's module, continuing at once − floor", lambda x: x["a:return-at-once"] - x["a:noop"]),
    ("a: reading the `authorization` header (read-token − return-at-once)", lambda x: x["a:read-token"] - x["a:return-at-once"]),
    ("a: reading the header map (read-headers − return-at-once)", lambda x: x["a:read-headers"] - x["a:return-at-once"]),
    ("a: the decision, token removal and counter (mlgate − read-headers)", lambda x: x["a:mlgate"] - x["a:read-headers"]),
    ("a: floor / read-token (a filter that only reads the token)", lambda x: x["a:noop"] / x["a:read-token"]),
    ("a: floor / read-headers", lambda x: x["a:noop"] / x["a:read-headers"]),
    ("a: floor / mlgate (the bench's CPU ratio)", lambda x: x["a:noop"] / x["a:mlgate"]),
]
for name, fn in rows:
    m, spread = median(fn, 2 if "/" in name.split("(")[0] else 1)
    lines.append(f"| {name} | {m} | {spread} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "wrote $OUT/results.md (raw runs: $TSV)"
