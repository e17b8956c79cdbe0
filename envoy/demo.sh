#!/usr/bin/env bash
# mlgate demo: the demo IdP, the demo ML backend and Envoy with mlgate, all on 127.0.0.1.
# `make demo` builds what it needs first and then runs this script.
#
# Environment (defaults in brackets):
#   MLGATE_DEMO_PORT [10000]  Envoy listener          ADMIN_PORT   [9901]  Envoy admin
#   IDP_PORT         [9400]   demo identity provider  BACKEND_PORT [9500]  demo ML backend
#   MLGATE_ENVOY     [.venv/bin/envoy]                MLGATE_WASM  [target/mlgate.wasm]
#   MLGATE_DEMO_CONCURRENCY [2]  Envoy worker threads     MLGATE_DEMO_LOG_LEVEL [info]  Envoy's --log-level
#   MLGATE_DEMO_CHECK=1   send every scenario once, print ok/MISMATCH, stop, exit 1 on any mismatch
#   MLGATE_DEMO_NATIVE=1  run envoy/native-jwt-rbac.yaml (Envoy's jwt_authn + rbac) instead of mlgate
#
# Logs: .run/idp.log, .run/backend.log, .run/envoy.log. Rendered configs: .run/demo.filter.json,
# .run/demo.envoy.yaml. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

LISTEN_PORT=${MLGATE_DEMO_PORT:-10000}
ADMIN_PORT=${ADMIN_PORT:-9901}
IDP_PORT=${IDP_PORT:-9400}
BACKEND_PORT=${BACKEND_PORT:-9500}
ENVOY=${MLGATE_ENVOY:-$ROOT/.venv/bin/envoy}
WASM=${MLGATE_WASM:-$ROOT/target/mlgate.wasm}
HARNESS=${MLGATE_HARNESS:-$ROOT/target/release/mlgate-harness-devtools}
CONCURRENCY=${MLGATE_DEMO_CONCURRENCY:-2}
RUN=$ROOT/.run
RENDER="python3 $ROOT/envoy/render.py"

for f in "$ENVOY" "$WASM" "$HARNESS"; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "demo: missing $f (run: make demo)" >&2; exit 1; }
done
mkdir -p "$RUN"

pids=()
alive() { [ -e "/proc/$1" ] && ! grep -q ') Z ' "/proc/$1/stat" 2>/dev/null; }
cleanup() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo
    echo "demo: stopping (envoy, backend, idp)"
    for ((i=${#pids[@]}-1; i>=0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
      for _ in $(seq 50); do alive "$p" || break; sleep 0.1; done
      kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    done
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "demo: ports: envoy 127.0.0.1:$LISTEN_PORT (MLGATE_DEMO_PORT), admin :$ADMIN_PORT (ADMIN_PORT)," \
     "idp :$IDP_PORT (IDP_PORT), backend :$BACKEND_PORT (BACKEND_PORT)"

"$HARNESS" idp --port "$IDP_PORT" >"$RUN/idp.log" 2>&1 &
pids+=($!)
"$HARNESS" backend --port "$BACKEND_PORT" >"$RUN/backend.log" 2>&1 &
pids+=($!)
$RENDER wait "http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration" --pid "${pids[0]}" --log "$RUN/idp.log" --timeout 20
$RENDER wait "http://127.0.0.1:$BACKEND_PORT/healthz" --pid "${pids[1]}" --log "$RUN/backend.log" --timeout 20
echo "demo: idp     http://127.0.0.1:$IDP_PORT  (log .run/idp.log)"
echo "demo: backend http://127.0.0.1:$BACKEND_PORT  (log .run/backend.log)"

# The filter configuration with the live IdP's issuer and keys inlined.
$RENDER filter --in filters/demo.json --out "$RUN/demo.filter.json" --idp "http://127.0.0.1:$IDP_PORT"
TEMPLATE=envoy/demo.yaml
STATUS_ONLY=()
if [ "${MLGATE_DEMO_NATIVE:-}" = 1 ]; then
  # The same policy with Envoy's native jwt_authn + rbac (no mlgate): compare statuses only,
  # the native filters give no reasons.
  TEMPLATE=envoy/native-jwt-rbac.yaml
  STATUS_ONLY=(--status-only)
  echo "demo: MLGATE_DEMO_NATIVE=1: Envoy runs envoy/native-jwt-rbac.yaml instead of mlgate"
fi
$RENDER jwks --idp "http://127.0.0.1:$IDP_PORT" --out "$RUN/idp-jwks.json"
$RENDER envoy --template "$TEMPLATE" --out "$RUN/demo.envoy.yaml" \
  --filter-config "$RUN/demo.filter.json" --wasm "$WASM" --jwks "$RUN/idp-jwks.json" \
  --set LISTEN_PORT="$LISTEN_PORT" --set ADMIN_PORT="$ADMIN_PORT" \
  --set BACKEND_PORT="$BACKEND_PORT" --set IDP_PORT="$IDP_PORT"

# Access-log lines reach .run/envoy.log within a second (Envoy's default flush is every 10 s).
"$ENVOY" -c "$RUN/demo.envoy.yaml" --concurrency "$CONCURRENCY" --disable-hot-restart \
  --file-flush-interval-msec 1000 \
  --log-level "${MLGATE_DEMO_LOG_LEVEL:-info}" >"$RUN/envoy.log" 2>&1 &
pids+=($!)
if ! $RENDER wait "http://127.0.0.1:$ADMIN_PORT/ready" --pid "${pids[2]}" --log "$RUN/envoy.log" --timeout 60; then
  echo "demo: envoy did not become ready; the mlgate lines of .run/envoy.log:" >&2
  grep -i 'mlgate' "$RUN/envoy.log" | tail -20 >&2 || true
  exit 1
fi
echo "demo: envoy   http://127.0.0.1:$LISTEN_PORT  (admin http://127.0.0.1:$ADMIN_PORT, log .run/envoy.log)"
echo
echo "Personas (GET http://127.0.0.1:$IDP_PORT/personas):"
echo "  alice   data scientist: ml-scientists + llm-users      bob    reader: ml-readers, scope Models.Read"
echo "  carl    contractor: contractors + ml-scientists       scorer service principal, role Scoring.Invoke"
echo "  carol   groups overage (_claim_names)                 eve    user from another tenant"
echo "A fresh token: curl -s 'http://127.0.0.1:$IDP_PORT/token?persona=alice&format=raw'"
echo "Rotate the IdP's key: curl -s -X POST http://127.0.0.1:$IDP_PORT/admin/rotate"

if [ "${MLGATE_DEMO_CHECK:-}" = 1 ]; then
  $RENDER scenarios --idp "http://127.0.0.1:$IDP_PORT" --gateway "http://127.0.0.1:$LISTEN_PORT" --check "${STATUS_ONLY[@]}"
  exit $?
fi
$RENDER scenarios --idp "http://127.0.0.1:$IDP_PORT" --gateway "http://127.0.0.1:$LISTEN_PORT"
echo
echo "demo: running; tokens above are valid for an hour. Ctrl-C stops everything."
# Stay until a signal arrives or a component dies.
while :; do
  for p in "${pids[@]}"; do
    if ! alive "$p"; then
      # Ctrl-C reaches every process of the terminal's group: a clean exit here is that, not a crash.
      status=0; wait "$p" || status=$?
      if [ "$status" = 0 ]; then exit 0; fi
      echo "demo: a component exited with status $status (pid $p); see .run/*.log" >&2; exit 1
    fi
  done
  sleep 1
done
