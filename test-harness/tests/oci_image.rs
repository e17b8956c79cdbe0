//! `make oci` (envoy/oci.py): the OCI image layout holds a compat-variant Wasm image that Istio and
//! Envoy Gateway can pull: right media types, one gzipped tar layer with `plugin.wasm`, digests that
//! match the blobs, the module byte for byte, and the same digests on every build.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs envoy/oci.py on `wasm` into `dir`; returns its JSON report.
fn package(wasm: &Path, dir: &Path) -> Value {
    let out = Command::new("python3")
        .arg(root().join("envoy/oci.py"))
        .arg("--wasm")
        .arg(wasm)
        .arg("--out")
        .arg(dir.join("oci"))
        .arg("--tar")
        .arg(dir.join("image.tar"))
        .args(["--tag", "test", "--json"])
        .output()
        .expect("run python3 envoy/oci.py");
    assert!(
        out.status.success(),
        "oci.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oci.py --json prints JSON")
}

/// Reads a blob by digest and checks that its content has that digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let data = fs::read(layout.join("blobs/sha256").join(hex)).expect("blob present");
    assert_eq!(
        hex_sha256(&data),
        hex,
        "blob content does not match its digest"
    );
    data
}

/// The regular files of a ustar/pax tar: (name, content). PAX extended headers are skipped.
fn tar_files(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&header[..name_end]).into_owned();
        let size_field = String::from_utf8_lossy(&header[124..136]);
        let size =
            usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
                .expect("octal size");
        let typeflag = header[156];
        let content = tar[at + 512..at + 512 + size].to_vec();
        if typeflag == b'0' || typeflag == 0 {
            files.push((name, content));
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    files
}

#[test]
fn oci_layout_is_a_compat_wasm_image_with_the_module() {
    let dir = root().join(format!("target/oci-test-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("test dir");
    // A small valid module header plus a custom section: the packaging does not care what is inside.
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend_from_slice(&[0x00, 0x09, 0x04, b't', b'e', b's', b't', 1, 2, 3, 4]);
    let wasm = dir.join("plugin-under-test.wasm");
    fs::write(&wasm, &module).expect("write module");

    let report = package(&wasm, &dir);
    let layout = dir.join("oci");

    let oci_layout: Value =
        serde_json::from_slice(&fs::read(layout.join("oci-layout")).expect("oci-layout")).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");

    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index.json")).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1);
    let desc = &manifests[0];
    assert_eq!(
        desc["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        desc["annotations"]["org.opencontainers.image.ref.name"],
        "test"
    );
    let manifest_digest = desc["digest"].as_str().expect("manifest digest");
    assert_eq!(report["manifest_digest"], manifest_digest);
    let manifest_bytes = blob(&layout, manifest_digest);
    assert_eq!(desc["size"], manifest_bytes.len());

    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config_bytes = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(manifest["config"]["size"], config_bytes.len());

    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "compat variant: exactly one layer");
    let layer = &layers[0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_digest = layer["digest"].as_str().unwrap();
    assert_eq!(report["layer_digest"], layer_digest);
    let layer_bytes = blob(&layout, layer_digest);
    assert_eq!(layer["size"], layer_bytes.len());

    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&layer_bytes[..])
        .read_to_end(&mut tar)
        .expect("layer is gzip");
    let files = tar_files(&tar);
    assert_eq!(files.len(), 1, "one file in the layer");
    assert_eq!(files[0].0, "plugin.wasm");
    assert_eq!(
        files[0].1, module,
        "plugin.wasm is the module byte for byte"
    );

    // The config's diff_id is the digest of the uncompressed layer.
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", hex_sha256(&tar))
    );
    assert_eq!(report["module_sha256"], hex_sha256(&module));

    // The tarball holds the same layout.
    let archive = fs::read(dir.join("image.tar")).expect("tarball");
    let entries = tar_files(&archive);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"oci-layout") && names.contains(&"index.json"));
    let hex = manifest_digest.trim_start_matches("sha256:");
    assert!(names.contains(&format!("blobs/sha256/{hex}").as_str()));

    // Reproducible: the same module gives the same manifest digest.
    let again = package(&wasm, &dir.join("again"));
    assert_eq!(again["manifest_digest"], report["manifest_digest"]);

    let _ = fs::remove_dir_all(&dir);
}
