#!/usr/bin/env bash
# `make validate-envoy`: every Envoy config template in envoy/*.yaml, rendered, must pass
# `envoy --mode validate` against the built target/mlgate.wasm; and demo.yaml must validate with
# every shipped filter configuration in filters/*.json; and envoy/ratelimit/*.yaml likewise.
#
# Validate mode builds the whole configuration without opening sockets. For the wasm filter that
# includes loading the module into V8 and calling its on_configure with the plugin configuration,
# so a filter configuration that mlgate refuses fails here too ("Unable to create Wasm plugin").
# The Istio and Envoy Gateway manifests (envoy/istio, envoy/envoy-gateway) are Kubernetes resources,
# not Envoy configs: envoy/check_manifests.py checks them, and has each policy they embed compiled by
# the same module through `mlgate-harness check-config` (needs PyYAML; skipped without it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ENVOY=${MLGATE_ENVOY:-$ROOT/.venv/bin/envoy}
WASM=${MLGATE_WASM:-$ROOT/target/mlgate.wasm}
[ -x "$ENVOY" ] || { echo "validate: missing $ENVOY (make envoy)" >&2; exit 1; }
[ -f "$WASM" ] || { echo "validate: missing $WASM (make build)" >&2; exit 1; }
OUT=$ROOT/.run/validate
rm -rf "$OUT" && mkdir -p "$OUT"

# Placeholders get valid values; validate mode never binds, so the ports need not be free.
COMMON=(--set LISTEN_PORT=10000 --set ADMIN_PORT=9901 --set BACKEND_PORT=9500 --set IDP_PORT=9400
        --wasm "$WASM" --filter-config filters/demo.json --jwks test-harness/keys/test-jwks.json)

failed=0
check() { # name rendered-file
  if "$ENVOY" --mode validate -c "$2" --disable-hot-restart --log-level warn >"$2.log" 2>&1; then
    echo "validate: ok      $1"
  else
    echo "validate: FAILED  $1 (rendered $2)"
    sed 's/^/    /' "$2.log" | tail -15
    failed=1
  fi
}

for tpl in envoy/*.yaml; do
  name=$(basename "$tpl" .yaml)
  python3 envoy/render.py envoy --template "$tpl" --out "$OUT/$name.yaml" "${COMMON[@]}"
  check "$tpl" "$OUT/$name.yaml"
done

# The fleet-wide quota variant (envoy/ratelimit/): demo.yaml with the global ratelimit filter and
# its gRPC cluster, which validate mode builds without connecting.
for tpl in envoy/ratelimit/*.yaml; do
  name=ratelimit-$(basename "$tpl" .yaml)
  python3 envoy/render.py envoy --template "$tpl" --out "$OUT/$name.yaml" "${COMMON[@]}" \
    --set RATELIMIT_PORT=8081
  check "$tpl" "$OUT/$name.yaml"
done

# The benchmark chains (make bench): mlgate with its bench policy, the native chains with the bench
# JWKS, and the no-op filter with its own module.
NOOP=$ROOT/target/wasm32-wasip1/wasm/mlgate_noop_filter.wasm
[ -f "$NOOP" ] || ${CARGO:-cargo} build --quiet --profile wasm --target wasm32-wasip1 -p mlgate-noop-filter
for tpl in envoy/bench/*.yaml; do
  name=bench-$(basename "$tpl" .yaml)
  wasm=$WASM
  [ "$name" = bench-noop-wasm ] && wasm=$NOOP
  python3 envoy/render.py envoy --template "$tpl" --out "$OUT/$name.yaml" "${COMMON[@]}" \
    --wasm "$wasm" --filter-config envoy/bench/mlgate-bench.json --jwks envoy/bench/bench-jwks.json
  check "$tpl" "$OUT/$name.yaml"
done

# The fleet proxy (envoy/fleet/): the bootstrap, with an ECDS resource written by envoy/fleet/update.py
# in its watched directory. Validate mode builds the listener; the resource itself (and the module
# it names) is checked by the fleet's end-to-end tests (test-harness/tests/e2e_fleet.rs).
mkdir -p "$OUT/fleet/ecds" "$OUT/fleet/modules"
python3 envoy/fleet/update.py --policy filters/demo.json --dir "$OUT/fleet/ecds" --wasm "$WASM" \
  --modules "$OUT/fleet/modules" >/dev/null
python3 envoy/render.py envoy --template envoy/fleet/fleet.yaml --out "$OUT/fleet.yaml" "${COMMON[@]}" \
  --set NODE_ID=validate --set MODULE_PORT=9600 --set ECDS_DIR="$OUT/fleet/ecds" \
  --set ECDS_FILE="$OUT/fleet/ecds/mlgate.json"
check envoy/fleet/fleet.yaml "$OUT/fleet.yaml"

for cfg in filters/*.json; do
  name=$(basename "$cfg" .json)
  python3 envoy/render.py envoy --template envoy/demo.yaml --out "$OUT/demo-with-$name.yaml" \
    "${COMMON[@]}" --filter-config "$cfg"
  check "envoy/demo.yaml + $cfg" "$OUT/demo-with-$name.yaml"
done

# The Kubernetes manifests: parse, required fields, key clusters, each embedded policy compiled by
# the module (mlgate-harness check-config, `make harness`).
python3 envoy/check_manifests.py --wasm "$WASM" \
  --harness "${MLGATE_HARNESS:-$ROOT/target/release/mlgate-harness}" || failed=1

if [ "$failed" != 0 ]; then echo "validate: some Envoy configurations are invalid" >&2; exit 1; fi
echo "validate: all Envoy configurations passed envoy --mode validate"
