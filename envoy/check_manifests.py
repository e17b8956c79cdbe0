#!/usr/bin/env python3
"""Checks the Kubernetes manifests in envoy/istio and envoy/envoy-gateway, and that the quota
configurations agree.

Manifests: every policy they embed (a WasmPlugin's or TrafficExtension's pluginConfig, an
EnvoyExtensionPolicy's config) is compiled by the filter itself: handed to the built target/mlgate.wasm's
on_configure through `mlgate-harness check-config`, so a policy mlgate would refuse fails here with
mlgate's own message naming the field. Around it, the structure the deployment relies on: the fields
each resource needs (phase, failure strategy, image digest, pull secret), both ways of attaching the
Istio filter (a pod selector and Gateway API targetRefs), the ServiceEntry / DestinationRule pair (or the
Backend and its HTTPRoute) whose cluster each policy's `jwks.cluster` names and whose host its keys come
from, and one policy across all the manifests.

Quotas: envoy/ratelimit/envoy-global.yaml describes requests with the same actions as envoy/demo.yaml's
local_ratelimit, and the envoyproxy/ratelimit service's config (envoy/ratelimit/config/mlgate.yaml)
holds the same quotas as demo.yaml's descriptors.

Needs PyYAML; without it, says so and succeeds (validate.sh runs it when available).
Usage: check_manifests.py [--harness target/release/mlgate-harness] [--wasm target/mlgate.wasm]"""
import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from urllib.parse import urlparse

try:
    import yaml
except ImportError:
    # `make tools` installs it (Debian's python3-yaml); in CI a skipped check would be a silent pass.
    if os.environ.get("CI"):
        print("manifests: FAILED PyYAML not installed (apt-get install python3-yaml)")
        sys.exit(1)
    print("manifests: PyYAML not installed; skipping the manifest check")
    sys.exit(0)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
args = argparse.ArgumentParser()
args.add_argument("--harness", default=os.path.join(ROOT, "target/release/mlgate-harness"))
args.add_argument("--wasm", default=os.environ.get("MLGATE_WASM", os.path.join(ROOT, "target/mlgate.wasm")))
args = args.parse_args()
problems = []


def load(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def text(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def expect(cond, msg):
    if not cond:
        problems.append(msg)
    return cond


def namespace(doc):
    return doc.get("metadata", {}).get("namespace")


def is_sha256(value):
    return re.fullmatch(r"[0-9a-f]{64}", str(value or "")) is not None


def fetch_hosts(policy):
    """(provider index, jwks.cluster, host each remote key set is fetched from) per remote provider."""
    for i, provider in enumerate(policy.get("providers", [])):
        jwks = provider.get("jwks") or {}
        discovery = jwks.get("discovery")
        if isinstance(discovery, str):
            url = discovery
        elif discovery is True:
            url = provider.get("issuer") if isinstance(provider.get("issuer"), str) else None
        else:
            url = jwks.get("uri")
        if "inline" in jwks or url is None and not discovery:
            continue
        yield i, jwks.get("cluster"), urlparse(url).hostname if url else None


def check_remote_keys(where, policy, cluster, host):
    """Every remote key set goes through `cluster`, which reaches `host`."""
    remote = list(fetch_hosts(policy))
    expect(remote, f"{where}: no provider fetches its keys (jwks.discovery / jwks.uri): a production policy does")
    for i, got_cluster, got_host in remote:
        expect(got_cluster == cluster, f"{where}: providers[{i}].jwks.cluster is {got_cluster!r}, the cluster the manifests create is {cluster!r}")
        expect(got_host == host, f"{where}: providers[{i}] fetches its keys from {got_host!r}, but {cluster!r} reaches {host!r}")


def without_clusters(policy):
    policy = copy.deepcopy(policy)
    for provider in policy.get("providers", []):
        (provider.get("jwks") or {}).pop("cluster", None)
    return policy


def pull_secret_documented(rel, ns, name):
    """The manifest's comments say how to create its pull secret (wasmplugin.yaml and the
    EnvoyExtensionPolicy give the kubectl command; the variants refer to it by name)."""
    body = text(rel)
    command = f"kubectl -n {ns} create secret docker-registry {name}"
    return command in body or f"`{name}`" in body


policies = {}  # manifest -> embedded policy

# --- Istio -------------------------------------------------------------------------------------------
SE_FILE = "envoy/istio/entra-serviceentry.yaml"
docs = load(SE_FILE)
kinds = [d["kind"] for d in docs]
istio_cluster = istio_host = istio_ns = None
if expect(kinds == ["ServiceEntry", "DestinationRule"], f"istio: {SE_FILE} has {kinds}, not a ServiceEntry and a DestinationRule"):
    se, dr = docs
    istio_ns = namespace(se)
    hosts = se["spec"].get("hosts", [])
    ports = se["spec"].get("ports", [])
    expect(len(hosts) == 1, f"istio: {SE_FILE}: the ServiceEntry must have one host, has {hosts}")
    expect(len(ports) == 1, f"istio: {SE_FILE}: the ServiceEntry must have one port, has {ports}")
    istio_host = hosts[0] if hosts else None
    port = ports[0].get("number") if ports else None
    istio_cluster = f"outbound|{port}||{istio_host}"
    expect(se["spec"].get("location") == "MESH_EXTERNAL", f"istio: {SE_FILE}: the ServiceEntry must be MESH_EXTERNAL")
    expect(se["spec"].get("resolution") == "DNS", f"istio: {SE_FILE}: the ServiceEntry must resolve by DNS")
    expect(namespace(dr) == istio_ns, f"istio: {SE_FILE}: the DestinationRule is not in the ServiceEntry's namespace")
    expect(dr["spec"].get("host") == istio_host, f"istio: {SE_FILE}: the DestinationRule's host is not the ServiceEntry's")
    tls = [s.get("tls", {}) for s in dr["spec"].get("trafficPolicy", {}).get("portLevelSettings", [])
           if s.get("port", {}).get("number") == port]
    if expect(len(tls) == 1, f"istio: {SE_FILE}: the DestinationRule has no TLS settings for port {port}"):
        expect(tls[0].get("mode") == "SIMPLE", f"istio: {SE_FILE}: the DestinationRule must originate TLS (mode SIMPLE)")
        expect(tls[0].get("sni") == istio_host, f"istio: {SE_FILE}: the DestinationRule's sni must be {istio_host}")
        expect(istio_host in tls[0].get("subjectAltNames", []),
               f"istio: {SE_FILE}: the DestinationRule must check the certificate is {istio_host}'s (subjectAltNames)")

ISTIO = [  # file, kind, how it is attached
    ("envoy/istio/wasmplugin.yaml", "WasmPlugin", "selector"),
    ("envoy/istio/wasmplugin-gateway-api.yaml", "WasmPlugin", "targetRefs"),
    ("envoy/istio/trafficextension.yaml", "TrafficExtension", "targetRefs"),
]
istio_secrets = set()
for rel, kind, attached in ISTIO:
    (doc,) = load(rel)
    spec = doc["spec"]
    expect(doc["apiVersion"] == "extensions.istio.io/v1alpha1" and doc["kind"] == kind, f"istio: {rel}: not a {kind}")
    expect(namespace(doc) == istio_ns, f"istio: {rel}: not in the ServiceEntry's namespace {istio_ns} (its exportTo is \".\")")
    expect([k for k in ("selector", "targetRef", "targetRefs") if k in spec] == [attached],
           f"istio: {rel}: must be attached by {attached} alone")
    if attached == "selector":
        expect(spec["selector"].get("matchLabels"), f"istio: {rel}: selector.matchLabels is empty (it would select every workload)")
    else:
        refs = spec.get("targetRefs", [])
        expect(refs and all(r.get("group") == "gateway.networking.k8s.io" and r.get("kind") == "Gateway" and r.get("name")
                            for r in refs), f"istio: {rel}: targetRefs must name Gateway API Gateways")
    expect(spec.get("phase") == "AUTHN", f"istio: {rel}: phase must be AUTHN")
    wasm = spec.get("wasm", {}) if kind == "TrafficExtension" else spec
    expect(wasm.get("failStrategy") in ("FAIL_CLOSE", "FAIL_RELOAD"), f"istio: {rel}: failStrategy must be FAIL_CLOSE or FAIL_RELOAD")
    expect(wasm.get("type") == "HTTP", f"istio: {rel}: type must be HTTP")
    expect(str(wasm.get("url", "")).startswith("oci://"), f"istio: {rel}: url must be an oci:// image")
    expect(is_sha256(wasm.get("sha256")), f"istio: {rel}: sha256 must be 64 lower-case hex digits")
    secret = wasm.get("imagePullSecret")
    if expect(secret, f"istio: {rel}: imagePullSecret is missing (a private registry needs it)"):
        istio_secrets.add(secret)
        expect(pull_secret_documented(rel, istio_ns, secret), f"istio: {rel}: its comments do not say how to create the pull secret {secret!r}")
    if expect(isinstance(wasm.get("pluginConfig"), dict), f"istio: {rel}: no pluginConfig"):
        policies[rel] = wasm["pluginConfig"]
        check_remote_keys(f"istio: {rel}: pluginConfig", wasm["pluginConfig"], istio_cluster, istio_host)
expect(len(istio_secrets) <= 1, f"istio: the manifests name different pull secrets {sorted(istio_secrets)}")
expect(pull_secret_documented(ISTIO[0][0], istio_ns, next(iter(istio_secrets), "")) and
       f"kubectl -n {istio_ns} create secret docker-registry" in text(ISTIO[0][0]),
       f"istio: {ISTIO[0][0]} must give the kubectl command that creates the pull secret")

# --- Envoy Gateway -----------------------------------------------------------------------------------
BACKEND_FILE = "envoy/envoy-gateway/backend-entra.yaml"
EEP_FILE = "envoy/envoy-gateway/envoyextensionpolicy.yaml"
(eep,) = load(EEP_FILE)
eg_ns = namespace(eep)
expect(eep["apiVersion"] == "gateway.envoyproxy.io/v1alpha1" and eep["kind"] == "EnvoyExtensionPolicy",
       f"envoy-gateway: {EEP_FILE}: not an EnvoyExtensionPolicy")
refs = eep["spec"].get("targetRefs", [])
gateways = {r.get("name") for r in refs if r.get("group") == "gateway.networking.k8s.io" and r.get("kind") == "Gateway"}
expect(refs and len(gateways) == len(refs), f"envoy-gateway: {EEP_FILE}: targetRefs must name Gateway API Gateways")

docs = load(BACKEND_FILE)
kinds = [d["kind"] for d in docs]
eg_cluster = eg_host = None
if expect(kinds == ["Backend", "HTTPRoute"], f"envoy-gateway: {BACKEND_FILE} has {kinds}, not a Backend and an HTTPRoute"):
    backend, route = docs
    expect(namespace(backend) == eg_ns and namespace(route) == eg_ns,
           f"envoy-gateway: {BACKEND_FILE}: not in the EnvoyExtensionPolicy's namespace {eg_ns}")
    endpoints = backend["spec"].get("endpoints", [])
    fqdns = [e["fqdn"] for e in endpoints if "fqdn" in e]
    if expect(len(endpoints) == 1 and len(fqdns) == 1, f"envoy-gateway: {BACKEND_FILE}: the Backend must have one fqdn endpoint"):
        eg_host = fqdns[0].get("hostname")
    tls = backend["spec"].get("tls", {})
    expect(tls.get("wellKnownCACertificates") == "System" or tls.get("caCertificateRefs"),
           f"envoy-gateway: {BACKEND_FILE}: the Backend must check the server's certificate (tls)")
    expect(tls.get("sni") == eg_host and not tls.get("insecureSkipVerify"),
           f"envoy-gateway: {BACKEND_FILE}: the Backend's tls.sni must be {eg_host}, with verification on")
    expect({p.get("name") for p in route["spec"].get("parentRefs", [])} == gateways,
           f"envoy-gateway: {BACKEND_FILE}: the HTTPRoute is not on the Gateway the EnvoyExtensionPolicy targets")
    rules = [i for i, rule in enumerate(route["spec"].get("rules", []))
             if any(b.get("kind") == "Backend" and b.get("name") == backend["metadata"]["name"] for b in rule.get("backendRefs", []))]
    if expect(len(rules) == 1, f"envoy-gateway: {BACKEND_FILE}: exactly one HTTPRoute rule must reference the Backend"):
        rule = route["spec"]["rules"][rules[0]]
        # Envoy Gateway names a route rule's cluster httproute/<namespace>/<route>/rule/<index>.
        eg_cluster = f"httproute/{eg_ns}/{route['metadata']['name']}/rule/{rules[0]}"
        prefix = ((eep["spec"].get("wasm") or [{}])[0].get("config") or {}).get("forward", {}).get("prefix", "x-mlgate-")
        expect(all(any(h.get("name", "").lower().startswith(prefix) for h in m.get("headers", [])) for m in rule.get("matches", [{}])),
               f"envoy-gateway: {BACKEND_FILE}: every match of the key route must require a {prefix}* header (which mlgate strips)")

wasms = eep["spec"].get("wasm", [])
if expect(len(wasms) == 1, f"envoy-gateway: {EEP_FILE}: one wasm extension expected, found {len(wasms)}"):
    (w,) = wasms
    code = w.get("code", {})
    image = code.get("image", {})
    expect(code.get("type") == "Image" and image.get("url"), f"envoy-gateway: {EEP_FILE}: code must be an Image with a url")
    expect(is_sha256(image.get("sha256")), f"envoy-gateway: {EEP_FILE}: image.sha256 must be 64 lower-case hex digits")
    expect(w.get("failOpen") is False, f"envoy-gateway: {EEP_FILE}: failOpen must be false")
    secret = image.get("pullSecretRef") or {}
    if expect(secret.get("name") and secret.get("kind", "Secret") == "Secret" and secret.get("namespace", eg_ns) == eg_ns,
              f"envoy-gateway: {EEP_FILE}: image.pullSecretRef must name a Secret in {eg_ns} (a private registry needs it)"):
        expect(f"kubectl -n {eg_ns} create secret docker-registry {secret['name']}" in text(EEP_FILE),
               f"envoy-gateway: {EEP_FILE}: its comments must give the kubectl command that creates the pull secret {secret['name']!r}")
    if expect(isinstance(w.get("config"), dict), f"envoy-gateway: {EEP_FILE}: no config"):
        policies[EEP_FILE] = w["config"]
        check_remote_keys(f"envoy-gateway: {EEP_FILE}: config", w["config"], eg_cluster, eg_host)

# One policy everywhere, apart from the cluster each platform names.
if policies:
    first, reference = next(iter(policies.items()))
    for rel, policy in policies.items():
        expect(without_clusters(policy) == without_clusters(reference), f"{rel}: its policy differs from {first}'s (beyond jwks.cluster)")

# Each policy compiled by the filter: the built module's on_configure, through mlgate-harness check-config.
compiled = []
if expect(os.access(args.harness, os.X_OK), f"missing {args.harness} (make harness), which compiles the policies"):
    with tempfile.TemporaryDirectory(prefix="mlgate-manifests-") as tmp:
        files = {}
        for rel, policy in policies.items():
            path = os.path.join(tmp, rel.replace("/", "_") + ".json")
            with open(path, "w") as f:
                json.dump(policy, f)
            files[path] = rel
        run = subprocess.run([args.harness, "check-config", "--wasm", args.wasm, *files],
                             capture_output=True, text=True)
        refused = 0
        for line in run.stdout.splitlines():
            m = re.match(r"check-config: (ok|FAILED)\s+(\S+?)(?:: (.*))?$", line)
            if m and m.group(2) in files:
                rel = files.pop(m.group(2))
                if expect(m.group(1) == "ok", f"{rel}: its policy does not compile: {m.group(3)}"):
                    compiled.append(rel)
                else:
                    refused += 1
        expect(run.returncode == (1 if refused else 0) and not files,
               f"mlgate-harness check-config exited {run.returncode}: {(run.stderr or run.stdout).strip()}")


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
for rel in compiled:
    print(f"manifests: ok      {rel}: its policy compiles in {os.path.relpath(args.wasm, ROOT)}")
print("manifests: ok      envoy/istio, envoy/envoy-gateway: fields, pull secrets, selector and targetRefs, "
      "key clusters (ServiceEntry + DestinationRule, Backend + HTTPRoute), one policy")
print("manifests: ok      envoy/ratelimit: same descriptors and quotas as envoy/demo.yaml's local_ratelimit")
