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
#   MLGATE_DEMO_BACKEND [demo]  `mlserver` (`make demo BACKEND=mlserver`): a real MLServer with its scikit-learn
#                         runtime on BACKEND_PORT (gRPC on MLSERVER_GRPC_PORT [9501]) instead of the demo backend,
#                         serving finance-risk and fraud-detector, a tiny model trained into .run/mlserver/
#
# Logs: .run/idp.log, .run/backend.log (.run/mlserver.log), .run/envoy.log. Rendered configs: .run/demo.filter.json,
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
BACKEND_KIND=${MLGATE_DEMO_BACKEND:-demo}
MLSERVER_GRPC_PORT=${MLSERVER_GRPC_PORT:-9501}
PYTHON=$ROOT/.venv/bin/python
RUN=$ROOT/.run
RENDER="python3 $ROOT/envoy/render.py"

for f in "$ENVOY" "$WASM" "$HARNESS"; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "demo: missing $f (run: make demo)" >&2; exit 1; }
done
case "$BACKEND_KIND" in
  demo) ;;
  mlserver)
    [ -x "$ROOT/.venv/bin/mlserver" ] || { echo "demo: missing .venv/bin/mlserver (run: make demo BACKEND=mlserver)" >&2; exit 1; } ;;
  *) echo "demo: unknown backend '$BACKEND_KIND' (demo or mlserver)" >&2; exit 1 ;;
esac
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
if [ "$BACKEND_KIND" = mlserver ]; then
  # A tiny scikit-learn model, trained now, served by MLServer under the demo's model names.
  rm -rf "$RUN/mlserver"
  "$PYTHON" test-harness/tests/clients/mlserver_model.py --out "$RUN/mlserver" --http-port "$BACKEND_PORT" \
    --grpc-port "$MLSERVER_GRPC_PORT" --model finance-risk --model fraud-detector >"$RUN/mlserver.log" 2>&1
  (cd "$RUN/mlserver" && exec "$ROOT/.venv/bin/mlserver" start .) >>"$RUN/mlserver.log" 2>&1 &
  pids+=($!)
else
  "$HARNESS" backend --port "$BACKEND_PORT" >"$RUN/backend.log" 2>&1 &
  pids+=($!)
fi
$RENDER wait "http://127.0.0.1:$IDP_PORT/.well-known/openid-configuration" --pid "${pids[0]}" --log "$RUN/idp.log" --timeout 20
echo "demo: idp     http://127.0.0.1:$IDP_PORT  (log .run/idp.log)"
if [ "$BACKEND_KIND" = mlserver ]; then
  $RENDER wait "http://127.0.0.1:$BACKEND_PORT/v2/health/ready" --pid "${pids[1]}" --log "$RUN/mlserver.log" --timeout 120
  echo "demo: backend http://127.0.0.1:$BACKEND_PORT  MLServer (scikit-learn runtime): finance-risk, fraud-detector (log .run/mlserver.log)"
else
  $RENDER wait "http://127.0.0.1:$BACKEND_PORT/healthz" --pid "${pids[1]}" --log "$RUN/backend.log" --timeout 20
  echo "demo: backend http://127.0.0.1:$BACKEND_PORT  (log .run/backend.log)"
fi

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

SCENARIOS=(--file envoy/demo-scenarios.json)
[ "$BACKEND_KIND" = mlserver ] && SCENARIOS=(--file envoy/demo-scenarios-mlserver.json)
if [ "${MLGATE_DEMO_CHECK:-}" = 1 ]; then
  $RENDER scenarios "${SCENARIOS[@]}" --idp "http://127.0.0.1:$IDP_PORT" --gateway "http://127.0.0.1:$LISTEN_PORT" --check "${STATUS_ONLY[@]}"
  exit $?
fi
$RENDER scenarios "${SCENARIOS[@]}" --idp "http://127.0.0.1:$IDP_PORT" --gateway "http://127.0.0.1:$LISTEN_PORT"
TOKEN_OF="curl -s 'http://127.0.0.1:$IDP_PORT/token?persona=alice&format=raw'"
echo
if [ "$BACKEND_KIND" = mlserver ]; then
  echo "# alice with a real KServe v2 client (tritonclient[http]; the token goes in MLGATE_TOKEN, never on the command line):"
  echo "MLGATE_TOKEN=\$($TOKEN_OF) .venv/bin/python test-harness/tests/clients/kserve_client.py --url 127.0.0.1:$LISTEN_PORT --persona alice infer finance-risk"
else
  echo "# alice: a streamed chat completion, Server-Sent Events through Envoy (-N: print each event as it comes)"
  echo "curl -N -H \"authorization: Bearer \$($TOKEN_OF)\" -H 'content-type: application/json' \\"
  echo "  -d '{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}' http://127.0.0.1:$LISTEN_PORT/v1/chat/completions"
  echo "# alice with the OpenAI Python SDK (the token is the api_key; stream, create or models):"
  echo "OPENAI_API_KEY=\$($TOKEN_OF) .venv/bin/python test-harness/tests/clients/openai_client.py --base-url http://127.0.0.1:$LISTEN_PORT/v1 --persona alice stream gpt-4o-mini 'hello'"
fi
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
