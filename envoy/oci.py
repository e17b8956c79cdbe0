#!/usr/bin/env python3
"""Package mlgate.wasm as an OCI image that Istio (WasmPlugin) and Envoy Gateway (EnvoyExtensionPolicy)
pull. Python standard library only; no Docker, no registry.

Format: the "compat" variant of the Wasm image specification, which both Istio's and Envoy
Gateway's image fetchers accept: an OCI image manifest with config media type
application/vnd.oci.image.config.v1+json and ONE layer, application/vnd.oci.image.layer.v1.tar+gzip,
a gzipped tar holding the module as `plugin.wasm`. (Both fetchers take the image's last layer; the
alternative "oci" variant with application/vnd.module.wasm.content.layer.v1+wasm needs exactly two
layers and is less widely supported by registries and tools.)

Output (reproducible: fixed timestamps and owners, so the same module always gives the same digests):
  target/oci/              an OCI image layout (oci-layout, index.json, blobs/sha256/...)
  target/mlgate-oci.tar    the same layout as one tarball ("oci-archive")

Push with any OCI tool, e.g.
  skopeo copy oci:target/oci:VERSION docker://REGISTRY/mlgate:VERSION
  skopeo copy oci-archive:target/mlgate-oci.tar docker://REGISTRY/mlgate:VERSION
The manifest digest printed here is the `sha256` for Istio's WasmPlugin and Envoy Gateway's
image source (both verify the image by its manifest digest), and `@sha256:` in image references.

usage: oci.py [--wasm target/mlgate.wasm] [--out target/oci] [--tar target/mlgate-oci.tar]
              [--tag VERSION] [--json]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
INDEX_MT = "application/vnd.oci.image.index.v1+json"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
LAYER_MT = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(module):
    """A tar with one file, plugin.wasm, with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(module)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def gzip_fixed(data):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9, filename="") as gz:
        gz.write(data)
    return out.getvalue()


def build(wasm_path, out_dir, tar_path, tag):
    with open(wasm_path, "rb") as f:
        module = f.read()
    if module[:4] != b"\0asm":
        sys.exit(f"oci.py: {wasm_path} is not a wasm module")
    tar = layer_tar(module)
    layer = gzip_fixed(tar)
    config = canonical({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(tar)]},
        "history": [{"created_by": "envoy/oci.py: plugin.wasm (mlgate)"}],
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "config": {"mediaType": CONFIG_MT, "digest": "sha256:" + sha256(config), "size": len(config)},
        "layers": [{
            "mediaType": LAYER_MT,
            "digest": "sha256:" + sha256(layer),
            "size": len(layer),
            "annotations": {"org.opencontainers.image.title": "plugin.wasm"},
        }],
        "annotations": {
            "module.wasm.image/variant": "compat",
            "org.opencontainers.image.title": "mlgate",
            "org.opencontainers.image.description": "mlgate proxy-wasm filter (JWT authn/authz for ML endpoints)",
            "io.mlgate.module.sha256": sha256(module),
        },
    })
    index = canonical({
        "schemaVersion": 2,
        "mediaType": INDEX_MT,
        "manifests": [{
            "mediaType": MANIFEST_MT,
            "digest": "sha256:" + sha256(manifest),
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    })

    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    blobs = os.path.join(out_dir, "blobs", "sha256")
    os.makedirs(blobs)
    files = {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
    }
    for blob in (layer, config, manifest):
        files[os.path.join("blobs", "sha256", sha256(blob))] = blob
    for rel, data in files.items():
        with open(os.path.join(out_dir, rel), "wb") as f:
            f.write(data)

    # The layout as one tarball, entries in a fixed order with fixed metadata.
    os.makedirs(os.path.dirname(os.path.abspath(tar_path)), exist_ok=True)
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as archive:
        for rel in ["oci-layout", "index.json", "blobs", "blobs/sha256"] + sorted(
                k for k in files if k.startswith("blobs" + os.sep)):
            path = os.path.join(out_dir, rel)
            info = archive.gettarinfo(path, arcname=rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isdir():
                info.mode = 0o755
                archive.addfile(info)
            else:
                info.mode = 0o644
                with open(path, "rb") as f:
                    archive.addfile(info, f)

    return {
        "layout": out_dir,
        "tarball": tar_path,
        "tag": tag,
        "manifest_digest": "sha256:" + sha256(manifest),
        "config_digest": "sha256:" + sha256(config),
        "layer_digest": "sha256:" + sha256(layer),
        "module_sha256": sha256(module),
        "module_bytes": len(module),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", default="target/mlgate.wasm")
    ap.add_argument("--out", default="target/oci")
    ap.add_argument("--tar", default="target/mlgate-oci.tar")
    ap.add_argument("--tag", default="latest")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    r = build(args.wasm, args.out, args.tar, args.tag)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"oci: image layout {r['layout']} (tag {r['tag']}), tarball {r['tarball']}")
    print(f"oci: module  plugin.wasm  {r['module_bytes']} bytes, sha256 {r['module_sha256']}")
    print(f"oci: layer   {LAYER_MT}  {r['layer_digest']}")
    print(f"oci: manifest sha256 (WasmPlugin / EnvoyExtensionPolicy `sha256`): {r['manifest_digest'][7:]}")


if __name__ == "__main__":
    main()
