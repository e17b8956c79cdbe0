//! Envoy's `verify_signature` foreign function as mlgate's host verifier: BoringSSL checks
//! RS*/ES* signatures ~16× faster than pure-Rust RSA inside the VM.
//!
//! The argument is the protobuf `envoy.source.extensions.common.wasm.VerifySignatureArguments
//! { string hash_function = 1; bytes public_key = 2; bytes signature = 3; bytes text = 4; }`,
//! the result `VerifySignatureResult { bool result = 1; string error = 2; }`. Encoded by hand:
//! two flat messages of length-delimited fields and one bool, where a protobuf crate would add
//! code generation and size for nothing. A result with an error string means the host could
//! not judge (a key it cannot read): the pure-Rust backend decides then.

use super::hostcalls;
use crate::crypto::{Backend, HostCheck};

const FUNCTION: &str = "verify_signature";

/// Known-good signatures over `PROBE_TEXT` by the repository's test keys
/// (test-harness/keys/): RS256 by `rsa-a`, ES384 (DER, as the host reads it) by `ec-p384`;
/// `*-spki.der` are their public keys.
const PROBE_TEXT: &[u8] = b"mlgate host crypto probe";
const PROBE_RSA_SPKI: &[u8] = include_bytes!("probe/rsa-a-spki.der");
const PROBE_RSA_SIGNATURE: &[u8] = include_bytes!("probe/rsa-a-rs256.sig");
const PROBE_P384_SPKI: &[u8] = include_bytes!("probe/ec-p384-spki.der");
const PROBE_P384_SIGNATURE: &[u8] = include_bytes!("probe/ec-p384-es384.sig");

/// Asks the host, once when the filter configures, with a signature that must verify and one
/// that must not, for RSA and for P-384: the backend uses the host only for what it got right.
pub fn probe() -> Backend {
    let rsa = judges_correctly("sha256", PROBE_RSA_SPKI, PROBE_RSA_SIGNATURE);
    if !rsa {
        return Backend::RUST;
    }
    let p384 = judges_correctly("sha384", PROBE_P384_SPKI, PROBE_P384_SIGNATURE);
    Backend::with_host(verify, p384)
}

fn judges_correctly(hash: &'static str, spki_der: &[u8], signature: &[u8]) -> bool {
    let good = HostCheck {
        hash,
        spki_der,
        signature,
        text: PROBE_TEXT,
    };
    let bad = HostCheck {
        text: b"mlgate host crypto probe, altered",
        ..good
    };
    let answers = (verify(&good), verify(&bad));
    let correct = answers == (Some(true), Some(false));
    if !correct {
        log::info!(
            "mlgate: host verify_signature not used for {hash} (probe answered {answers:?})"
        );
    }
    correct
}

/// The [`crate::crypto::HostVerifier`].
pub fn verify(check: &HostCheck<'_>) -> Option<bool> {
    // Sized for the whole message: a buffer that grows reallocates and copies the token's text.
    let mut args = Vec::with_capacity(
        4 * FIELD_OVERHEAD
            + check.hash.len()
            + check.spki_der.len()
            + check.signature.len()
            + check.text.len(),
    );
    field(&mut args, 1, check.hash.as_bytes());
    field(&mut args, 2, check.spki_der);
    field(&mut args, 3, check.signature);
    field(&mut args, 4, check.text);
    let result = match hostcalls::call_foreign_function(FUNCTION, &args) {
        Ok(Some(result)) => result,
        Ok(None) => return None,
        Err(error) => {
            log::info!("mlgate: verify_signature: host status {}", error.0);
            return None;
        }
    };
    let (valid, error) = parse_result(&result)?;
    // Envoy reports a signature that does not verify as an error too; only other errors (a key
    // it cannot read, an unknown hash) mean it could not judge.
    if error.starts_with(b"Failed to verify digest") {
        return Some(false);
    }
    if !error.is_empty() {
        log::warn!(
            "mlgate: host verify_signature could not judge ({}); using rust_crypto",
            String::from_utf8_lossy(error)
        );
        return None;
    }
    Some(valid)
}

/// The most a length-delimited field adds to its bytes: its tag and a 32-bit length as a varint.
const FIELD_OVERHEAD: usize = 1 + 5;

/// A length-delimited field (wire type 2).
fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push((number << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// `(result, error)`; unknown fields are skipped, malformed input is `None`. The error stays
/// bytes: every forged token gets one back, and only an unexpected one is ever printed.
fn parse_result(bytes: &[u8]) -> Option<(bool, &[u8])> {
    let (mut valid, mut error): (bool, &[u8]) = (false, &[]);
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at)?;
        match (key >> 3, key & 7) {
            (1, 0) => valid = read_varint(bytes, &mut at)? != 0,
            (2, 2) => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                error = bytes.get(at..at.checked_add(len)?)?;
                at += len;
            }
            (_, 0) => {
                read_varint(bytes, &mut at)?;
            }
            (_, 2) => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                at = at.checked_add(len)?;
            }
            _ => return None,
        }
    }
    Some((valid, error))
}
