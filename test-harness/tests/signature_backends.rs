//! Through the real modules: who checks which signature. The default module leaves ES384 to the
//! host's `verify_signature` (Envoy's BoringSSL) and refuses, at configure time, a policy that
//! accepts ES384 on a host that cannot check it; the portable module (`make build-portable`,
//! `target/mlgate-portable.wasm`) checks ES384 with the `p384` crate on hosts without it.

mod common;

use std::path::PathBuf;

use common::*;
use jsonwebtoken::Algorithm;
use mlgate_harness::host::host_crypto::{self, VerifySignatureArguments, VerifySignatureResult};
use mlgate_harness::host::{wasm_path, Harness, HarnessBuilder};
use mlgate_harness::mint::TestKey;
use serde_json::{json, Value};

/// The portable module: `$MLGATE_PORTABLE_WASM`, else `target/mlgate-portable.wasm`.
fn portable_wasm() -> PathBuf {
    let path = std::env::var_os("MLGATE_PORTABLE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            mlgate_harness::host::workspace_root().join("target/mlgate-portable.wasm")
        });
    assert!(
        path.is_file(),
        "{} is missing: run `make build-portable`",
        path.display()
    );
    path
}

/// The portable module's budget (README, "800 KB"): it carries the `p384` arithmetic the default
/// module leaves to the host, and every worker of a host still compiles all of it.
#[test]
fn the_portable_module_fits_its_800_kb_budget() {
    const BUDGET: u64 = 800 * 1024;
    let size = std::fs::metadata(portable_wasm()).unwrap().len();
    assert!(
        size <= BUDGET,
        "the portable module is {size} bytes (at most {BUDGET})"
    );
}

/// Whether a WebAssembly runtime without SIMD could load the module (wasmtime's validator with the
/// proposal off).
fn loads_without_simd(bytes: &[u8]) -> bool {
    let mut config = wasmtime::Config::new();
    config.wasm_relaxed_simd(false).wasm_simd(false);
    let engine = wasmtime::Engine::new(&config).unwrap();
    wasmtime::Module::validate(&engine, bytes).is_ok()
}

/// The portable module is for other proxy-wasm hosts, whose runtimes may lack WebAssembly SIMD
/// (the Envoy module uses it: `.cargo/config.toml`); `make build-portable` builds it without.
#[test]
fn the_portable_module_loads_on_a_runtime_without_simd() {
    let bytes = std::fs::read(portable_wasm()).unwrap();
    assert!(loads_without_simd(&bytes));
}

/// The check above can fail: the Envoy module, built with SIMD, does not load without it.
#[test]
fn the_envoy_module_needs_simd_and_a_runtime_without_it_refuses_it() {
    let bytes = std::fs::read(wasm_path().unwrap()).unwrap();
    assert!(!loads_without_simd(&bytes));
}

fn with_es384() -> Value {
    let mut config = entra_config();
    config["providers"][0]["algorithms"] = json!(["RS256", "ES384"]);
    config
}

/// Envoy's function, minus P-384: what a host whose crypto library has no such curve answers
/// ("could not judge", as Envoy does for a key it cannot read).
fn verify_signature_without_p384(
    arguments: &[u8],
) -> Result<Vec<u8>, mlgate_harness::host::Status> {
    let secp384r1 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let args = VerifySignatureArguments::decode(arguments);
    let p384_key = args.is_some_and(|a| {
        a.public_key
            .windows(secp384r1.len())
            .any(|w| w == secp384r1)
    });
    if p384_key {
        let result = VerifySignatureResult {
            result: false,
            error: "Failed to initialize digest verify.".into(),
        };
        return Ok(result.encode());
    }
    host_crypto::verify_signature(arguments)
}

fn configure(builder: HarnessBuilder, config: &Value) -> Result<Harness, String> {
    builder
        .load()
        .unwrap()
        .configure(config.clone())
        .map_err(|e| e.to_string())
}

fn es384_token(h: &Harness) -> String {
    TestKey::ec_p384().sign(&user_claims(h), Algorithm::ES384)
}

#[test]
fn default_module_verifies_es384_with_the_hosts_verifier() {
    let h = configure(Harness::builder(), &with_es384()).unwrap();
    assert!(
        h.log_text()
            .contains("signature backend host (RS*, ES256, ES384)"),
        "{}",
        h.log_text()
    );
    assert_eq!(verdict(&score(&h, &es384_token(&h))), "forwarded");
}

#[test]
fn default_module_refuses_es384_at_configure_without_host_crypto() {
    let error = configure(Harness::builder().without_host_crypto(), &with_es384()).unwrap_err();
    assert!(
        error.contains("invalid configuration: providers[0].algorithms[1]: ES384 signatures cannot be checked on this host"),
        "{error}"
    );
    assert!(error.contains("make build-portable"), "{error}");
}

#[test]
fn default_module_refuses_es384_at_configure_when_the_host_cannot_verify_p384() {
    let builder = Harness::builder()
        .without_host_crypto()
        .foreign_function(host_crypto::VERIFY_SIGNATURE, verify_signature_without_p384);
    let error = configure(builder, &with_es384()).unwrap_err();
    assert!(error.contains("providers[0].algorithms[1]"), "{error}");
}

#[test]
fn default_module_without_host_crypto_still_verifies_rsa_in_rust() {
    let h = configure(Harness::builder().without_host_crypto(), &entra_config()).unwrap();
    assert!(
        h.log_text()
            .contains("signature backend rust_crypto; no ES384"),
        "{}",
        h.log_text()
    );
    assert_eq!(verdict(&score(&h, &user_token(&h, |_| {}))), "forwarded");
    let forged = user_token(&h, |c| c["oid"] = json!("someone-else"));
    let (signed, _) = user_token(&h, |_| {})
        .rsplit_once('.')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap();
    let (_, other_signature) = forged.rsplit_once('.').unwrap();
    let spliced = format!("{signed}.{other_signature}");
    assert_eq!(verdict(&score(&h, &spliced)), "bad_signature");
}

#[test]
fn portable_module_verifies_es384_without_host_crypto() {
    let builder = Harness::builder()
        .wasm(portable_wasm())
        .without_host_crypto();
    let h = configure(builder, &with_es384()).unwrap();
    assert!(
        h.log_text().contains("signature backend rust_crypto"),
        "{}",
        h.log_text()
    );
    let token = es384_token(&h);
    assert_eq!(verdict(&score(&h, &token)), "forwarded");
    let mut tampered = token.into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(verdict(&score(&h, &tampered)), "bad_signature");
}

#[test]
fn portable_module_refuses_a_p384_key_off_the_curve_at_configure() {
    let mut config = with_es384();
    config["providers"][0]["jwks"] = json!({"inline": {"keys": [{
        "kty": "EC", "crv": "P-384", "kid": "off-curve",
        "x": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB",
        "y": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIC"
    }]}});
    let builder = Harness::builder()
        .wasm(portable_wasm())
        .without_host_crypto();
    let error = configure(builder, &config).unwrap_err();
    assert!(error.contains("providers[0].jwks"), "{error}");
    assert!(error.contains("not on the curve"), "{error}");
}

#[test]
fn default_module_never_accepts_a_token_for_a_p384_key_off_the_curve() {
    // The default module cannot check the point itself; the host refuses to read such a key, and
    // with no Rust fallback for ES384 the signature does not verify.
    let mut config = with_es384();
    let mut keys = mlgate_harness::mint::test_jwks();
    keys["keys"].as_array_mut().unwrap().push(json!({
        "kty": "EC", "crv": "P-384", "kid": "off-curve", "alg": "ES384",
        "x": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB",
        "y": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIC"
    }));
    config["providers"][0]["jwks"] = json!({"inline": keys});
    let h = configure(Harness::builder(), &config).unwrap();
    let claims = user_claims(&h);
    let signer = TestKey::from_pem(include_str!("../keys/ec-p384.pem"), "off-curve").unwrap();
    let token = signer.sign(&claims, Algorithm::ES384);
    assert_eq!(verdict(&score(&h, &token)), "bad_signature");
}
