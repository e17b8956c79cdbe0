#!/usr/bin/env bash
# make bench: real Envoy (1.40, V8), side by side on loopback, one worker pinned to one core, wrk pinned to
# the other. A benchmark, never a test: it prints numbers and fails only when something cannot run.
#
# Chains (envoy/bench/*.yaml, each a listener with a direct_response route, no backend):
#   passthrough   no auth filter (the ceiling)
#   noop-wasm     the empty wasm filter, test-harness/noop-filter (the floor for any wasm filter)
#   native        jwt_authn + rbac, no cache
#   native-cache  jwt_authn (jwt_cache_config) + rbac
#   mlgate        mlgate with envoy/bench/mlgate-bench.json
#   mlgate-replay mlgate's chain with `make build-replay`'s module: after its first forwarded request it makes that
#                 decision's host calls again for every request without deciding (header map read, clock, counters,
#                 filter state, header rewrite): the best any code of mlgate's could do with the same host calls,
#                 so the bound on target (a). Scenario a only.
# Like for like: the native chains and mlgate check the same issuer, audience, lifetime and group rules,
# remove the token (jwt_authn `forward: false`, mlgate `strip_authorization`) and forward the same three
# identity headers (principal, tenant, scopes); mlgate's other identity headers are switched off here, and so is its
# decision-time histogram (`decision_duration_histogram: false`): the native chains record none per request, and a
# histogram sample costs Envoy ~1.5-2 us (PERFORMANCE.md). mlgate still writes its filter state and its counters.
# Scenarios (tokens from `mlgate-harness bench-tokens`, RS256, key test-harness/keys/rsa-a.pem):
#   a  one valid token repeated on GET /score (cache hits)         -> 200
#   b  a distinct valid token per request (cold verification)     -> 200
#   c  forged tokens: valid header/payload, random signature       -> 401
#   d  the repeated valid token on GET /admin (forbidden route)    -> 403
#   e  forged tokens of ~1,700 distinct claims in 16 KiB (200 top-level, the rest nested) -> 401
#   f  the repeated valid token on POST /v1/chat/completions, the model in the JSON body (mlgate holds the
#      request until its body is complete, then judges it)                               -> 200
#      (fixed-load pass only; the native chains check the route and group, they cannot read the body's model)
# Pass-through and the no-op floor check no tokens: they run scenario a only.
#
# Each round starts every chain afresh (in a rotating order), warms it up, runs its scenarios, reads its
# VmRSS and stops it. Results: medians over rounds, in target/bench/results.md (+ runs.tsv, raw).
# Two more passes follow the rounds (MLGATE_BENCH_EXTRA_ROUNDS rounds each):
#   scaling     every chain and scenario again with two Envoy workers (--concurrency 2) and wrk -t2, none of them
#               pinned: wrk shares both cores with Envoy, so the figure (req/s at 2 workers / at 1) is how far a
#               chain scales on this machine, not a ratio target (scaling.tsv)
#   fixed load  one pinned worker as in the rounds, wrk sending at a fixed offered rate (envoy/bench/rate.lua,
#               MLGATE_BENCH_RATE req/s; by default half of the slowest chain's median req/s over scenarios a-c),
#               for scenarios a, b, c and f: p50/p99 where no chain is saturated, so a filter's pauses show (latency.tsv)
#
# Environment: MLGATE_BENCH_QUICK (0; 1: one round of 2 s runs, one round of each extra pass (the two-worker one
# for scenarios a-c), no perf pass: ~2.5 min with minted tokens, for before/after checks; a variable below still
# overrides it),
# MLGATE_BENCH_ROUNDS (3), MLGATE_BENCH_DURATION (6 s per run), MLGATE_BENCH_WARMUP (2 s),
# MLGATE_BENCH_TOKENS (100000: more than one 6 s run sends, so scenario b never sends a token twice to one Envoy and
# no cache can hit: an LRU would not with any cycle longer than it holds, but mlgate admits a token on its second use,
# and that admission turns part of any shorter cycle into hits),
# MLGATE_BENCH_CHAINS (all), MLGATE_BENCH_SCENARIOS (a b c d e: the timed rounds' scenarios of the chains that
# check tokens, e.g. `a` for a before/after check of cache hits), MLGATE_BENCH_CONNECTIONS (16), MLGATE_BENCH_ENVOY_CPU (0), MLGATE_BENCH_LOAD_CPU (1),
# MLGATE_BENCH_PROFILE (1: the perf pass after the rounds; 0 skips it), MLGATE_BENCH_PROFILE_SECONDS (4),
# MLGATE_BENCH_SCALING (1; 0 skips the two-worker pass), MLGATE_BENCH_SCALING_SCENARIOS (a b c d e; quick a b c),
# MLGATE_BENCH_LATENCY (1; 0 skips the fixed-load pass),
# MLGATE_BENCH_EXTRA_ROUNDS (2; quick 1), MLGATE_BENCH_RATE (req/s of the fixed-load pass; empty: derived),
# MLGATE_BENCH_RATE_CONNECTIONS (64).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

QUICK=${MLGATE_BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
    q_rounds=1 q_duration=2 q_warmup=1 q_profile=0 q_extra=1 q_scaling="a b c"
else
    q_rounds=3 q_duration=6 q_warmup=2 q_profile=1 q_extra=2 q_scaling="a b c d e"
fi
ROUNDS=${MLGATE_BENCH_ROUNDS:-$q_rounds}
DURATION=${MLGATE_BENCH_DURATION:-$q_duration}
WARMUP=${MLGATE_BENCH_WARMUP:-$q_warmup}
PROFILE_ON=${MLGATE_BENCH_PROFILE:-$q_profile}
EXTRA_ROUNDS=${MLGATE_BENCH_EXTRA_ROUNDS:-$q_extra}
SCALING=${MLGATE_BENCH_SCALING:-1}
SCALING_SCENARIOS=${MLGATE_BENCH_SCALING_SCENARIOS:-$q_scaling}
LATENCY=${MLGATE_BENCH_LATENCY:-1}
RATE=${MLGATE_BENCH_RATE:-}
# More connections than the rounds use: each holds one scheduled send at a time, so a chain (or the machine)
# stalling for up to RATE_CONNS / RATE s costs no offered request.
RATE_CONNS=${MLGATE_BENCH_RATE_CONNECTIONS:-64}
TOKENS=${MLGATE_BENCH_TOKENS:-100000}
CONNS=${MLGATE_BENCH_CONNECTIONS:-16}
CHAINS=${MLGATE_BENCH_CHAINS:-passthrough noop-wasm native native-cache mlgate mlgate-replay}
ENVOY_CPU=${MLGATE_BENCH_ENVOY_CPU:-0}
LOAD_CPU=${MLGATE_BENCH_LOAD_CPU:-1}
ENVOY=${MLGATE_ENVOY:-$ROOT/.venv/bin/envoy}
WASM=${MLGATE_WASM:-$ROOT/target/mlgate.wasm}
REPLAY_WASM=${MLGATE_BENCH_REPLAY_WASM:-$ROOT/target/mlgate-replay.wasm}
NOOP_WASM=$ROOT/target/wasm32-wasip1/wasm/mlgate_noop_filter.wasm
HARNESS=${MLGATE_BENCH_HARNESS:-$ROOT/target/release/mlgate-harness-devtools}
OUT=$ROOT/target/bench
TOK=$OUT/tokens
RUNS=$OUT/runs.tsv
SCALE_RUNS=$OUT/scaling.tsv
LAT_RUNS=$OUT/latency.tsv
LUA=$ROOT/envoy/bench/tokens.lua
RATE_LUA=$ROOT/envoy/bench/rate.lua
BODY=$OUT/chat.json

log() { echo "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }

# --- everything we start dies with us --------------------------------------------------------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- tools ------------------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing wrk and h2load (nghttp2-client)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client) >/dev/null \
            || log "warning: apt-get could not install wrk/nghttp2-client"
    fi
fi
command -v wrk >/dev/null || die "wrk is missing (apt-get install wrk)"
[ -x "$ENVOY" ] || die "$ENVOY is missing (make envoy)"
[ -f "$WASM" ] || die "$WASM is missing (make build)"
[ -x "$HARNESS" ] || die "$HARNESS is missing (make devtools)"
PIN_ENVOY=() PIN_LOAD=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    PIN_ENVOY=(taskset -c "$ENVOY_CPU") PIN_LOAD=(taskset -c "$LOAD_CPU")
else
    log "warning: fewer than 2 CPUs or no taskset: Envoy and wrk share cores, numbers are not comparable"
fi

# --- builds: the empty filter ---------------------------------------------------------------------------
if [[ " $CHAINS " == *" noop-wasm "* ]]; then
    log "building the empty wasm filter (mlgate-noop-filter)"
    cargo build --quiet --profile wasm --target wasm32-wasip1 -p mlgate-noop-filter
fi

mkdir -p "$OUT" "$TOK"
# Scenario f's body: a small chat request naming a model the bench policy allows.
printf '{"model":"gpt-4o","messages":[{"role":"user","content":"Summarise the quarterly risk report."}],"max_tokens":64}' >"$BODY"

# --- tokens: minted once, reused while they have hours left ------------------------------------------------
# The stamp names the token format: change it when bench-tokens changes what it writes.
STAMP="v4 count=$TOKENS"
if [ ! -s "$TOK/fresh.txt" ] || [ "$(cat "$TOK/stamp" 2>/dev/null)" != "$STAMP" ] \
    || [ -n "$(find "$TOK/fresh.txt" -mmin +240 2>/dev/null)" ]; then
    log "minting $TOKENS fresh + $TOKENS forged tokens"
    rm -f "$TOK/stamp"
    "$HARNESS" bench-tokens --out "$TOK" --count "$TOKENS" --ttl 21600
    echo "$STAMP" >"$TOK/stamp"
else
    log "reusing the tokens in $TOK (minted $(stat -c %y "$TOK/fresh.txt" | cut -d. -f1))"
fi

# --- ports ------------------------------------------------------------------------------------------------
read -r -a FREE <<<"$(python3 - <<'EOF'
import socket
socks = []
for _ in range(12):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"
declare -A PORT ADMIN
i=0
for chain in passthrough noop-wasm native native-cache mlgate mlgate-replay; do
    PORT[$chain]=${FREE[$i]}; ADMIN[$chain]=${FREE[$((i + 1))]}; i=$((i + 2))
done

# --- configurations -----------------------------------------------------------------------------------------
for chain in $CHAINS; do
    template=$chain wasm=$WASM
    [ "$chain" = noop-wasm ] && wasm=$NOOP_WASM
    # mlgate's chain with the replaying module (`make build-replay`).
    [ "$chain" = mlgate-replay ] && template=mlgate wasm=$REPLAY_WASM
    [ -f "envoy/bench/$template.yaml" ] || die "unknown chain $chain"
    [ -f "$wasm" ] || die "$wasm is missing (make build-replay builds the mlgate-replay module)"
    python3 envoy/render.py envoy --template "envoy/bench/$template.yaml" --out "$OUT/$chain.yaml" \
        --wasm "$wasm" --filter-config envoy/bench/mlgate-bench.json --jwks envoy/bench/bench-jwks.json \
        --set "LISTEN_PORT=${PORT[$chain]}" --set "ADMIN_PORT=${ADMIN[$chain]}"
done

scenarios_of() {
    case "$1" in
        passthrough | noop-wasm | mlgate-replay) echo a ;;
        *) echo "${MLGATE_BENCH_SCENARIOS:-a b c d e}" ;;
    esac
}
path_of() {
    case "$1" in
        d) echo /admin ;;
        f) echo /v1/chat/completions ;;
        *) echo /score ;;
    esac
}
body_of() { [ "$1" = f ] && echo "$BODY" || true; }
tokens_of() {
    case "$1" in
        b) echo "$TOK/fresh.txt" ;;
        c) echo "$TOK/forged.txt" ;;
        e) echo "$TOK/forged-wide.txt" ;;
        *) echo "$TOK/one.txt" ;;
    esac
}
want_of() {
    case "$1:$2" in
        passthrough:* | noop-wasm:* | mlgate-replay:*) echo 200 ;;
        *:c | *:e) echo 401 ;;
        *:d) echo 403 ;;
        *) echo 200 ;;
    esac
}

ENVOY_PID=
# start_envoy CHAIN [WORKERS]: one worker pinned to ENVOY_CPU, or WORKERS unpinned workers.
start_envoy() {
    local chain=$1 workers=${2:-1} pin=("${PIN_ENVOY[@]}")
    [ "$workers" = 1 ] || pin=()
    "${pin[@]}" "$ENVOY" -c "$OUT/$chain.yaml" --concurrency "$workers" --disable-hot-restart \
        --log-level warn >"$OUT/$chain.log" 2>&1 &
    ENVOY_PID=$!
    PIDS+=("$ENVOY_PID")
    python3 envoy/render.py wait "http://127.0.0.1:${ADMIN[$chain]}/ready" --timeout 60 \
        --pid "$ENVOY_PID" --log "$OUT/$chain.log"
}
stop_envoy() {
    kill "$ENVOY_PID" 2>/dev/null || true
    wait "$ENVOY_PID" 2>/dev/null || true
    local keep=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" != "$ENVOY_PID" ] && keep+=("$pid"); done
    PIDS=("${keep[@]}")
    ENVOY_PID=
}

# Nanoseconds of CPU the running Envoy's threads have used (/proc/<pid>/task/*/schedstat, first field).
envoy_cpu_ns() {
    cat /proc/"$ENVOY_PID"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f", s }'
}

# wrk, bounded; prints the BENCH line. drive PORT PATH TOKENS SECONDS [BODY]: one thread pinned to LOAD_CPU.
drive() {
    local port=$1 path=$2 tokens=$3 seconds=$4 body=${5:-}
    timeout $((seconds + 30)) "${PIN_LOAD[@]}" wrk -t1 -c"$CONNS" -d"${seconds}s" --timeout 5s \
        -s "$LUA" "http://127.0.0.1:$port$path" -- "$tokens" "$body" | grep '^BENCH ' || true
}
# The two-worker pass: two wrk threads, unpinned, on the cores Envoy's workers use too.
drive_two() {
    local port=$1 path=$2 tokens=$3 seconds=$4 body=${5:-}
    timeout $((seconds + 30)) wrk -t2 -c"$CONNS" -d"${seconds}s" --timeout 5s \
        -s "$LUA" "http://127.0.0.1:$port$path" -- "$tokens" "$body" | grep '^BENCH ' || true
}
# The fixed-load pass: one pinned thread sending RATE requests per second.
drive_rate() {
    local port=$1 path=$2 tokens=$3 seconds=$4 rate=$5 body=${6:-}
    timeout $((seconds + 30)) "${PIN_LOAD[@]}" wrk -t1 -c"$RATE_CONNS" -d"${seconds}s" --timeout 5s \
        -s "$RATE_LUA" "http://127.0.0.1:$port$path" -- "$rate" "$tokens" "$body" | grep '^BENCH ' || true
}

# One request with curl: the status a scenario gets (a POST of BODY as JSON when given).
status_of() {
    local port=$1 path=$2 token=$3 body=${4:-}
    local extra=()
    [ -n "$body" ] && extra=(-H 'content-type: application/json' --data-binary "@$body")
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "authorization: Bearer $token" "${extra[@]}" \
        "http://127.0.0.1:$port$path" || true
}

# parse_bench LINE: sets b_requests, b_duration_us, b_non2xx, b_errors, b_p50_us, b_p99_us and b_rps.
parse_bench() {
    local kv
    b_requests=0 b_duration_us=0 b_non2xx=0 b_errors=0 b_p50_us=0 b_p99_us=0
    for kv in ${1#BENCH }; do
        case "$kv" in
            requests=* | duration_us=* | non2xx=* | errors=* | p50_us=* | p99_us=*) printf -v "b_${kv%%=*}" '%s' "${kv#*=}" ;;
        esac
    done
    b_rps=$(awk -v r="$b_requests" -v d="$b_duration_us" 'BEGIN { if (d > 0) printf "%.0f", r / (d / 1e6); else print 0 }')
}
cpu_per_request() {
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (n > 0 && b > a) printf "%.2f", (b - a) / 1000 / n; else print 0 }'
}

# --- the runs ---------------------------------------------------------------------------------------------
load=$(cut -d' ' -f1 /proc/loadavg)
log "load average $load before the runs$(awk -v l="$load" 'BEGIN { if (l > 0.5) print " (not quiet: expect noise)" }')"
read -r -a CHAIN_LIST <<<"$CHAINS"
total_runs=0
for chain in "${CHAIN_LIST[@]}"; do total_runs=$((total_runs + $(scenarios_of "$chain" | wc -w))); done
log "$ROUNDS rounds x $total_runs runs of ${DURATION}s (+${WARMUP}s warm-up per chain start), wrk -t1 -c$CONNS"
printf 'round\tchain\tscenario\trps\tp50_us\tp99_us\trequests\tnon2xx\terrors\twant\tfirst_status\trss_kb\tcpu_us\n' >"$RUNS"
started=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
    n=${#CHAIN_LIST[@]}
    for ((k = 0; k < n; k++)); do
        chain=${CHAIN_LIST[$(((k + round - 1) % n))]}
        start_envoy "$chain"
        port=${PORT[$chain]}
        drive "$port" /score "$TOK/one.txt" "$WARMUP" >/dev/null
        for sc in $(scenarios_of "$chain"); do
            path=$(path_of "$sc")
            tokens=$(tokens_of "$sc")
            want=$(want_of "$chain" "$sc")
            # The first token of the file: for b and c, one the run will send again only after a full cycle.
            first=$(status_of "$port" "$path" "$(head -1 "$tokens")")
            cpu_before=$(envoy_cpu_ns)
            line=$(drive "$port" "$path" "$tokens" "$DURATION")
            cpu_after=$(envoy_cpu_ns)
            [ -n "$line" ] || die "wrk gave no result for $chain/$sc (see $OUT/$chain.log)"
            rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$ENVOY_PID/status" 2>/dev/null || echo 0)
            # shellcheck disable=SC2086
            eval "$(echo "${line#BENCH }" | tr ' ' '\n' | sed 's/^/local_/')"
            rps=$(awk -v r="$local_requests" -v d="$local_duration_us" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
            # Envoy's CPU time per request (all its threads): steadier than req/s when other work shares
            # the machine, since time spent descheduled is not counted.
            cpu_us=$(awk -v a="$cpu_before" -v b="$cpu_after" -v n="$local_requests" \
                'BEGIN { if (n > 0 && b > a) printf "%.2f", (b - a) / 1000 / n; else print 0 }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$chain" "$sc" "$rps" \
                "$local_p50_us" "$local_p99_us" "$local_requests" "$local_non2xx" "$local_errors" "$want" \
                "$first" "$rss" "$cpu_us" >>"$RUNS"
            log "round $round/$ROUNDS  $(printf '%-12s' "$chain") $sc  $(printf '%7s' "$rps") req/s  p50 ${local_p50_us}µs  p99 ${local_p99_us}µs  first=$first (want $want)  non-2xx $local_non2xx/$local_requests"
        done
        # mlgate's own counters (which crypto path is active, cache hits, reasons) for the report.
        [ "$chain" = mlgate ] && curl -s --max-time 5 "http://127.0.0.1:${ADMIN[$chain]}/stats?filter=wasmcustom" \
            >"$OUT/mlgate.stats" || true
        stop_envoy
    done
done
log "runs took $(($(date +%s) - started)) s"

# --- two workers: how far each chain scales on this machine -------------------------------------------------
rm -f "$SCALE_RUNS"
if [ "$SCALING" != 0 ]; then
    pass_started=$(date +%s)
    log "two-worker pass: $EXTRA_ROUNDS round(s), Envoy --concurrency 2 and wrk -t2 -c$CONNS, unpinned"
    printf 'round\tchain\tscenario\trps\tp50_us\tp99_us\trequests\tnon2xx\terrors\twant\tfirst_status\tcpu_us\n' >"$SCALE_RUNS"
    for ((round = 1; round <= EXTRA_ROUNDS; round++)); do
        n=${#CHAIN_LIST[@]}
        for ((k = 0; k < n; k++)); do
            chain=${CHAIN_LIST[$(((k + round - 1) % n))]}
            start_envoy "$chain" 2
            port=${PORT[$chain]}
            drive_two "$port" /score "$TOK/one.txt" "$WARMUP" >/dev/null
            for sc in $(scenarios_of "$chain"); do
                [[ " $SCALING_SCENARIOS " == *" $sc "* ]] || continue
                path=$(path_of "$sc") tokens=$(tokens_of "$sc") want=$(want_of "$chain" "$sc")
                first=$(status_of "$port" "$path" "$(head -1 "$tokens")")
                cpu_before=$(envoy_cpu_ns)
                line=$(drive_two "$port" "$path" "$tokens" "$DURATION")
                cpu_after=$(envoy_cpu_ns)
                [ -n "$line" ] || die "wrk gave no result for $chain/$sc at two workers (see $OUT/$chain.log)"
                parse_bench "$line"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$chain" "$sc" "$b_rps" \
                    "$b_p50_us" "$b_p99_us" "$b_requests" "$b_non2xx" "$b_errors" "$want" "$first" \
                    "$(cpu_per_request "$cpu_before" "$cpu_after" "$b_requests")" >>"$SCALE_RUNS"
                log "2 workers $round/$EXTRA_ROUNDS  $(printf '%-12s' "$chain") $sc  $(printf '%7s' "$b_rps") req/s  p99 ${b_p99_us}µs  first=$first (want $want)  non-2xx $b_non2xx/$b_requests"
            done
            stop_envoy
        done
    done
    log "two-worker pass took $(($(date +%s) - pass_started)) s"
fi

# --- a fixed offered load: p99 where no chain is saturated --------------------------------------------------
rm -f "$LAT_RUNS"
if [ "$LATENCY" != 0 ]; then
    if [ -z "$RATE" ]; then
        # Half of the slowest median req/s of the token-checking chains over scenarios a-c (of every chain when
        # none of those ran), rounded down to 100: a rate each chain sustains with room for the noise.
        RATE=$(python3 - "$RUNS" <<'EOF'
import csv, statistics, sys
runs = {}
with open(sys.argv[1]) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        if r["scenario"] in ("a", "b", "c") and float(r["rps"] or 0) > 0:
            runs.setdefault((r["chain"], r["scenario"]), []).append(float(r["rps"]))
medians = {k: statistics.median(v) for k, v in runs.items()}
checking = [m for (chain, _), m in medians.items() if chain not in ("passthrough", "noop-wasm", "mlgate-replay")]
slowest = min(checking or medians.values() or [0])
print(int(slowest / 2 / 100) * 100)
EOF
)
    fi
    if [ -z "$RATE" ] || [ "$RATE" -le 0 ]; then
        log "no throughput to derive the fixed load from (MLGATE_BENCH_RATE sets it): skipping the fixed-load pass"
    else
        pass_started=$(date +%s)
        log "fixed-load pass: $EXTRA_ROUNDS round(s) at $RATE req/s offered (wrk -t1 -c$RATE_CONNS, envoy/bench/rate.lua)"
        printf 'round\tchain\tscenario\toffered\trps\tp50_us\tp99_us\trequests\tnon2xx\terrors\twant\tfirst_status\tcpu_us\n' >"$LAT_RUNS"
        for ((round = 1; round <= EXTRA_ROUNDS; round++)); do
            n=${#CHAIN_LIST[@]}
            for ((k = 0; k < n; k++)); do
                chain=${CHAIN_LIST[$(((k + round - 1) % n))]}
                start_envoy "$chain"
                port=${PORT[$chain]}
                drive "$port" /score "$TOK/one.txt" "$WARMUP" >/dev/null
                case "$chain" in passthrough | noop-wasm | mlgate-replay) lat_scenarios=a ;; *) lat_scenarios="a b c f" ;; esac
                for sc in $lat_scenarios; do
                    path=$(path_of "$sc") tokens=$(tokens_of "$sc") want=$(want_of "$chain" "$sc") body=$(body_of "$sc")
                    first=$(status_of "$port" "$path" "$(head -1 "$tokens")" "$body")
                    cpu_before=$(envoy_cpu_ns)
                    line=$(drive_rate "$port" "$path" "$tokens" "$DURATION" "$RATE" "$body")
                    cpu_after=$(envoy_cpu_ns)
                    [ -n "$line" ] || die "wrk gave no result for $chain/$sc at a fixed load (see $OUT/$chain.log)"
                    parse_bench "$line"
                    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$chain" "$sc" "$RATE" \
                        "$b_rps" "$b_p50_us" "$b_p99_us" "$b_requests" "$b_non2xx" "$b_errors" "$want" "$first" \
                        "$(cpu_per_request "$cpu_before" "$cpu_after" "$b_requests")" >>"$LAT_RUNS"
                    log "fixed load $round/$EXTRA_ROUNDS  $(printf '%-12s' "$chain") $sc  $(printf '%7s' "$b_rps") of $RATE req/s  p50 ${b_p50_us}µs  p99 ${b_p99_us}µs  first=$first (want $want)  non-2xx $b_non2xx/$b_requests"
                done
                stop_envoy
            done
        done
        log "fixed-load pass took $(($(date +%s) - pass_started)) s"
    fi
fi

# --- where each chain's CPU goes: one perf-sampled run per chain and scenario ---------------------------------
# perf (cpu-clock, 999 Hz, attached to Envoy for one run) sorts Envoy's samples by where the code lives: the
# wasm VM's compiled code (V8's JIT: for mlgate, its own work), the Envoy binary (the proxy, BoringSSL, the V8
# runtime and the host side of every host call), the kernel, other libraries. Skipped without a usable perf
# (MLGATE_BENCH_PROFILE=0 skips it too); a separate pass, so perf's overhead never touches the timed runs.
PROFILE=$OUT/profile.tsv
rm -f "$PROFILE"
PROFILE_SECONDS=${MLGATE_BENCH_PROFILE_SECONDS:-4}
if [ "$PROFILE_ON" != 0 ] && command -v perf >/dev/null \
    && perf record -q -F 999 -o "$OUT/perf.probe" -- true >/dev/null 2>&1; then
    log "profiling each chain and scenario with perf (${PROFILE_SECONDS}s each)"
    printf 'chain\tscenario\trequests\tfrequency\tvm\tenvoy\tkernel\tother\n' >"$PROFILE"
    for chain in "${CHAIN_LIST[@]}"; do
        start_envoy "$chain"
        port=${PORT[$chain]}
        drive "$port" /score "$TOK/one.txt" "$WARMUP" >/dev/null
        for sc in $(scenarios_of "$chain"); do
            perf record -q -F 999 -p "$ENVOY_PID" -o "$OUT/perf.data" >/dev/null 2>&1 &
            perf_pid=$!
            sleep 0.3
            line=$(drive "$port" "$(path_of "$sc")" "$(tokens_of "$sc")" "$PROFILE_SECONDS")
            kill -INT "$perf_pid" 2>/dev/null || true
            wait "$perf_pid" 2>/dev/null || true
            requests=$(echo "$line" | tr ' ' '\n' | sed -n 's/^requests=//p')
            # perf script prints each sample's address and code object: "(/tmp/perf-PID.map)" for JIT code.
            counts=$({ perf script -i "$OUT/perf.data" -F ip,dso 2>/dev/null || true; } | awk '
                NF < 2 { next }
                $2 ~ /perf-[0-9]+\.map|\[JIT\]/ { vm++; next }
                $2 ~ /kernel/ { kernel++; next }
                $2 ~ /\.so|vdso|unknown/ { other++; next }
                { envoy_bin++ }
                END { printf "%d\t%d\t%d\t%d", vm, envoy_bin, kernel, other }')
            printf '%s\t%s\t%s\t999\t%s\n' "$chain" "$sc" "${requests:-0}" "$counts" >>"$PROFILE"
            log "profile $(printf '%-12s' "$chain") $sc  requests ${requests:-0}  vm/envoy/kernel/other samples $(echo "$counts" | tr '\t' /)"
        done
        stop_envoy
    done
    rm -f "$OUT/perf.data" "$OUT/perf.data.old" "$OUT/perf.probe"
else
    log "no usable perf (or MLGATE_BENCH_PROFILE=0): skipping the CPU profile"
fi

log "everything took $(($(date +%s) - started)) s since the first run"
python3 envoy/bench/report.py --runs "$RUNS" --out "$OUT/results.md" \
    --wasm "$WASM" --noop-wasm "$NOOP_WASM" --envoy "$ENVOY" \
    --duration "$DURATION" --rounds "$ROUNDS" --connections "$CONNS" --tokens "$TOKENS" --load "$load" \
    --mlgate-stats "$OUT/mlgate.stats" --profile "$PROFILE" --scaling "$SCALE_RUNS" --latency "$LAT_RUNS" \
    --quick "$QUICK" --warmup "$WARMUP" --extra-rounds "$EXTRA_ROUNDS"
