#!/usr/bin/env bash
# `make fleet-proxy N=0`: one fleet proxy in the foreground, for trying the fleet by hand. Proxy N listens
# on 10100+N (admin 9910+N), in front of the demo backend (9500) and IdP (9400) when they run; all proxies
# watch .run/fleet/ecds (written by `make fleet-update`) and fetch the module from the file server on
# 127.0.0.1:9600 serving .run/fleet/modules, which the first proxy starts if nothing listens there.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-0}
RUN=$PWD/.run/fleet
ENVOY=${MLGATE_ENVOY:-$PWD/.venv/bin/envoy}
[ -f "$RUN/ecds/mlgate.json" ] || { echo "fleet-proxy: no policy yet: make fleet-update POLICY=filters/demo.json" >&2; exit 1; }
if ! (exec 3<>/dev/tcp/127.0.0.1/9600) 2>/dev/null; then
  python3 -m http.server --bind 127.0.0.1 --directory "$RUN/modules" 9600 >"$RUN/modules.log" 2>&1 &
  echo "fleet-proxy: module server on 127.0.0.1:9600 (pid $!, log $RUN/modules.log)"
fi
python3 envoy/render.py envoy --template envoy/fleet/fleet.yaml --out "$RUN/proxy-$N.yaml" \
  --set NODE_ID="proxy-$N" --set LISTEN_PORT=$((10100 + N)) --set ADMIN_PORT=$((9910 + N)) \
  --set BACKEND_PORT=9500 --set IDP_PORT=9400 --set MODULE_PORT=9600 \
  --set ECDS_DIR="$RUN/ecds" --set ECDS_FILE="$RUN/ecds/mlgate.json"
echo "fleet-proxy: proxy-$N on http://127.0.0.1:$((10100 + N)) (admin 127.0.0.1:$((9910 + N)))"
exec "$ENVOY" -c "$RUN/proxy-$N.yaml" --disable-hot-restart --concurrency 1 --log-level info
