#!/usr/bin/env python3
"""Roll a policy (and the module) to every fleet proxy watching an ECDS directory (standard library only).

  update.py --policy filters/x.json --dir .run/fleet/ecds --wasm target/mlgate.wasm \
            --modules .run/fleet/modules [--sha256 HEX] [--name mlgate]

Copies the module into the modules directory the loopback file server serves, under a name that is
its digest (mlgate-<sha256[:16]>.wasm: a new module never overwrites one a proxy may still fetch),
then writes <dir>/<name>.json: an xDS DiscoveryResponse holding one TypedExtensionConfig, the Wasm
HTTP filter configuration with the policy as its `configuration` and the module as
`vm_config.code.remote` (the `mlgate_modules` cluster, its SHA-256, a retry policy). Written to a
temporary file in the same directory and renamed over the old one: Envoy's `watched_directory`
reacts to the move, and a proxy never reads a half-written file.

--sha256 overrides the digest the resource names (to show a module whose digest does not match
being refused).

A new module is refused while a resource naming another one exists, unless --replace-module: Envoy
1.40 fetches a remote module only while it initialises. A running proxy accepts an ECDS update
naming a module it has not fetched yet, never fetches it, and then runs the listener WITHOUT the
filter (requests go through unchecked; envoy/README.md, "A fleet"). So a new module rolls with the
proxies' restarts: --replace-module while they are stopped, then start them (each fetches and checks
it while warming). The policy goes in as it is: Envoy hands it to mlgate, which refuses it (naming the
field) if it does not compile, and every proxy keeps the configuration it had.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def fail(msg):
    print(f"update.py: {msg}", file=sys.stderr)
    sys.exit(1)


def atomic_write(path, data):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def resource(name, policy, module_path, sha256, version):
    return {
        "version_info": version,
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                "name": name,
                "typed_config": {
                    "@type": WASM_TYPE,
                    "config": {
                        "name": "mlgate",
                        "root_id": "mlgate",
                        # The VM cannot be created or has crashed: refuse the request, never let it through.
                        "failure_policy": "FAIL_CLOSED",
                        "allow_on_headers_stop_iteration": True,
                        "configuration": {
                            "@type": "type.googleapis.com/google.protobuf.StringValue",
                            "value": json.dumps(policy, separators=(",", ":")),
                        },
                        "vm_config": {
                            "vm_id": "mlgate",
                            "runtime": "envoy.wasm.runtime.v8",
                            "code": {
                                "remote": {
                                    # The authority is only the Host header: the connection goes to the cluster.
                                    "http_uri": {
                                        "uri": f"http://mlgate-modules/{module_path}",
                                        "cluster": "mlgate_modules",
                                        "timeout": "10s",
                                    },
                                    "sha256": sha256,
                                    "retry_policy": {
                                        "retry_back_off": {"base_interval": "0.2s", "max_interval": "2s"},
                                        "num_retries": 5,
                                    },
                                }
                            },
                        },
                    },
                },
            }
        ],
    }


def current_module(path):
    """The module digest the resource at `path` names, or None when there is none."""
    try:
        with open(path) as f:
            doc = json.load(f)
        return doc["resources"][0]["typed_config"]["config"]["vm_config"]["code"]["remote"]["sha256"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="the filter configuration (JSON)")
    ap.add_argument("--dir", required=True, help="the directory the proxies watch")
    ap.add_argument("--wasm", required=True, help="the module to roll")
    ap.add_argument("--modules", required=True, help="the directory the module file server serves")
    ap.add_argument("--sha256", help="name this digest instead of the module's own")
    ap.add_argument("--replace-module", action="store_true", help="allow a new module (only while no proxy runs)")
    ap.add_argument("--name", default="mlgate", help="the ECDS resource name (the HTTP filter's name)")
    args = ap.parse_args()

    try:
        with open(args.policy) as f:
            policy = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{args.policy}: {e}")
    try:
        with open(args.wasm, "rb") as f:
            module = f.read()
    except OSError as e:
        fail(f"{args.wasm}: {e}")
    digest = hashlib.sha256(module).hexdigest()
    wanted = args.sha256 or digest
    out = os.path.join(args.dir, f"{args.name}.json")
    current = current_module(out)
    if current is not None and current != wanted and not args.replace_module:
        fail(
            f"{out} names module sha256 {current}; refusing a new module ({wanted}) for running proxies: "
            "Envoy fetches a remote module only at start and would run without the filter. "
            "Stop the proxies, rerun with --replace-module, start them."
        )
    module_path = f"mlgate-{digest[:16]}.wasm"
    target = os.path.join(args.modules, module_path)
    if not os.path.exists(target):
        atomic_write(target, module)
    version = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {os.path.basename(args.policy)} {digest[:16]}"
    doc = resource(args.name, policy, module_path, wanted, version)
    atomic_write(out, (json.dumps(doc, indent=2) + "\n").encode())
    print(f"update.py: {out}: policy {args.policy}, module {module_path} (sha256 {args.sha256 or digest})")


if __name__ == "__main__":
    main()
