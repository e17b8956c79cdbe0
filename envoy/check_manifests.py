#!/usr/bin/env python3
"""Checks the Kubernetes manifests in envoy/istio and envoy/envoy-gateway: they parse, have the
fields this project relies on, and their embedded mlgate configuration is exactly a filters/ config.
Needs PyYAML; without it, says so and succeeds (validate.sh runs it when available)."""
import json
import os
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

for p in problems:
    print("manifests: FAILED " + p)
if problems:
    sys.exit(1)
print("manifests: ok      envoy/istio/*.yaml, envoy/envoy-gateway/*.yaml (configs match filters/entra-azureml.json)")
