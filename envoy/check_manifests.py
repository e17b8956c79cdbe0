#!/usr/bin/env python3
"""Checks the Kubernetes manifests in envoy/istio and envoy/envoy-gateway: they parse, have the
fields this project relies on, and their embedded mlgate configuration is exactly a filters/ config.
And the quota configurations agree: envoy/ratelimit/envoy-global.yaml describes requests with the
same actions as envoy/demo.yaml's local_ratelimit, and the envoyproxy/ratelimit service's config
(envoy/ratelimit/config/mlgate.yaml) holds the same quotas as demo.yaml's descriptors.
Needs PyYAML; without it, says so and succeeds (validate.sh runs it when available)."""
import json
import os
import re
import sys

try:
    import yaml
except ImportError:
    print("manifests: PyYAML not installed; skipping the manifest check")
    sys.exit(0)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
problems = []


def load(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def expect(cond, msg):
    if not cond:
        problems.append(msg)


with open(os.path.join(ROOT, "filters/entra-azureml.json")) as f:
    entra = json.load(f)

(wp,) = load("envoy/istio/wasmplugin.yaml")
spec = wp["spec"]
expect(wp["apiVersion"] == "extensions.istio.io/v1alpha1" and wp["kind"] == "WasmPlugin", "istio: not a WasmPlugin")
expect(spec.get("phase") == "AUTHN", "istio: phase must be AUTHN")
expect(spec.get("failStrategy") == "FAIL_CLOSE", "istio: failStrategy must be FAIL_CLOSE")
expect(spec.get("url", "").startswith("oci://"), "istio: url must be an oci:// image")
expect(len(str(spec.get("sha256", ""))) == 64, "istio: sha256 must be 64 hex digits")
expect(spec.get("pluginConfig") == entra, "istio: pluginConfig differs from filters/entra-azureml.json")

kinds = [d["kind"] for d in load("envoy/istio/entra-serviceentry.yaml")]
expect(kinds == ["ServiceEntry", "DestinationRule"], f"istio: entra-serviceentry.yaml has {kinds}")

(eep,) = load("envoy/envoy-gateway/envoyextensionpolicy.yaml")
expect(eep["apiVersion"] == "gateway.envoyproxy.io/v1alpha1" and eep["kind"] == "EnvoyExtensionPolicy",
       "envoy-gateway: not an EnvoyExtensionPolicy")
(w,) = eep["spec"]["wasm"]
expect(w["code"]["type"] == "Image" and "url" in w["code"]["image"], "envoy-gateway: code must be an Image")
expect(len(str(w["code"]["image"].get("sha256", ""))) == 64, "envoy-gateway: image.sha256 must be 64 hex digits")
expect(w.get("failOpen") is False, "envoy-gateway: failOpen must be false")
expect(w.get("config") == entra, "envoy-gateway: config differs from filters/entra-azureml.json")

kinds = [d["kind"] for d in load("envoy/envoy-gateway/backend-entra.yaml")]
expect(kinds == ["Backend", "HTTPRoute"], f"envoy-gateway: backend-entra.yaml has {kinds}")



def http_filter(config, name):
    listener = config["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    found = [f["typed_config"] for f in hcm["http_filters"] if f["name"] == name]
    return hcm, names, found[0] if found else None


def load_template(rel):
    """An Envoy template (envoy/render.py), its ${NAME} placeholders filled with 0."""
    with open(os.path.join(ROOT, rel)) as f:
        return yaml.safe_load(re.sub(r"\$\{[A-Z][A-Z0-9_]*\}", "0", f.read()))


demo = load_template("envoy/demo.yaml")
glob = load_template("envoy/ratelimit/envoy-global.yaml")
(service,) = load("envoy/ratelimit/config/mlgate.yaml")
_, demo_names, local = http_filter(demo, "envoy.filters.http.local_ratelimit")
glob_hcm, glob_names, global_rl = http_filter(glob, "envoy.filters.http.ratelimit")
for what, names, rl in [("demo.yaml", demo_names, "envoy.filters.http.local_ratelimit"),
                        ("ratelimit/envoy-global.yaml", glob_names, "envoy.filters.http.ratelimit")]:
    expect(rl in names and names.index("envoy.filters.http.wasm") < names.index(rl),
           f"quota: {what}: {rl} must come after mlgate's wasm filter")
expect(local is not None and global_rl is not None, "quota: a rate-limit filter is missing")
if local is not None and global_rl is not None:
    vhost = glob_hcm["route_config"]["virtual_hosts"][0]
    expect(vhost.get("rate_limits") == local.get("rate_limits"),
           "quota: envoy-global.yaml's virtual-host rate_limits differ from demo.yaml's local_ratelimit rate_limits")
    expect(global_rl.get("domain") == service.get("domain"),
           "quota: the ratelimit filter's domain differs from config/mlgate.yaml's")
    units = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}

    def service_quotas(nodes, prefix=()):
        for node in nodes:
            entries = prefix + ((node["key"], node.get("value")),)
            if "rate_limit" in node:
                limit = node["rate_limit"]
                yield entries, (limit["requests_per_unit"], units[limit["unit"]])
            yield from service_quotas(node.get("descriptors", []), entries)

    def local_quotas(descriptors):
        for d in descriptors:
            entries = tuple((e["key"], e["value"]) for e in d["entries"])
            bucket = d["token_bucket"]
            seconds = int(str(bucket["fill_interval"]).rstrip("s"))
            expect(bucket["max_tokens"] == bucket["tokens_per_fill"],
                   f"quota: demo.yaml descriptor {entries}: a burst other than the rate has no service equivalent")
            yield entries, (bucket["tokens_per_fill"], seconds)

    expect(sorted(service_quotas(service.get("descriptors", []))) == sorted(local_quotas(local.get("descriptors", []))),
           "quota: config/mlgate.yaml's quotas differ from demo.yaml's local_ratelimit descriptors")

for p in problems:
    print("manifests: FAILED " + p)
if problems:
    sys.exit(1)
print("manifests: ok      envoy/istio/*.yaml, envoy/envoy-gateway/*.yaml (configs match filters/entra-azureml.json)")
print("manifests: ok      envoy/ratelimit: same descriptors and quotas as envoy/demo.yaml's local_ratelimit")
