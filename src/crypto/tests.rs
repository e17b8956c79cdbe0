//! Which backend checks which signature, and what never reaches the host.

use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};

use super::*;
use crate::testing::{envoy_backend, reference_host};

fn key(kid: &str) -> DecodingKey {
    let doc = crate::testing::test_jwks();
    let set = crate::jwks::parse_jwks(&doc, crate::jwks::Strictness::Strict).unwrap();
    let key = set.keys.iter().find(|k| k.kid.as_deref() == Some(kid));
    key.unwrap().decoding.clone()
}

/// `(signing input, signature)` of a token signed by the test key `kid`.
fn signed(alg: Algorithm, kid: &str) -> (Vec<u8>, Vec<u8>) {
    let token = crate::testing::sign(kid, alg, &serde_json::json!({"a": 1}));
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    (input.as_bytes().to_vec(), sig)
}

fn tampered(mut signature: Vec<u8>) -> Vec<u8> {
    signature[10] ^= 1;
    signature
}

#[test]
fn host_answer_is_final_when_it_has_one() {
    let (msg, sig) = signed(Algorithm::RS256, "rsa-a");
    let yes = Backend::with_host(|_| Some(true), true);
    assert!(yes.verify(Algorithm::RS256, &key("rsa-a"), &msg, &[0; 256]));
    let no = Backend::with_host(|_| Some(false), true);
    assert!(!no.verify(Algorithm::RS256, &key("rsa-a"), &msg, &sig));
}

#[test]
fn host_without_an_answer_falls_back_to_rust() {
    let (msg, sig) = signed(Algorithm::RS256, "rsa-a");
    let unsure = Backend::with_host(|_| None, true);
    assert!(unsure.verify(Algorithm::RS256, &key("rsa-a"), &msg, &sig));
    assert!(!unsure.verify(Algorithm::RS256, &key("rsa-a"), &msg, &tampered(sig)));
}

#[test]
fn every_algorithm_verifies_with_the_envoy_backend_and_refuses_a_tampered_signature() {
    let cases = crate::testing::EVERY_ASYMMETRIC_KEY;
    for (kid, alg) in cases {
        let (msg, sig) = signed(alg, kid);
        assert!(
            envoy_backend().verify(alg, &key(kid), &msg, &sig),
            "{alg:?}"
        );
        assert!(
            !envoy_backend().verify(alg, &key(kid), &msg, &tampered(sig)),
            "{alg:?}"
        );
    }
}

#[test]
fn pss_never_goes_to_the_host() {
    // Envoy's function knows only PKCS#1 v1.5 padding: a host saying "no" must not matter.
    let (msg, sig) = signed(Algorithm::PS256, "rsa-b");
    let refusing = Backend::with_host(|_| Some(false), true);
    assert!(refusing.verify(Algorithm::PS256, &key("rsa-b"), &msg, &sig));
}

#[test]
fn hmac_checks_the_shared_secret() {
    let secret = DecodingKey::from_secret(b"a shared secret of thirty-two bytes!");
    let tag = {
        use hmac::{Hmac, Mac};
        let mac = Hmac::<sha2::Sha256>::new_from_slice(b"a shared secret of thirty-two bytes!");
        mac.unwrap()
            .chain_update(b"msg")
            .finalize()
            .into_bytes()
            .to_vec()
    };
    assert!(Backend::RUST.verify(Algorithm::HS256, &secret, b"msg", &tag));
    assert!(!Backend::RUST.verify(Algorithm::HS256, &secret, b"msg", &tampered(tag)));
}

static ES256_HOST_CALLS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn ecdsa_zero_signature_never_reaches_the_host() {
    let counting = Backend::with_host(
        |_| {
            ES256_HOST_CALLS.fetch_add(1, Ordering::SeqCst);
            Some(true)
        },
        true,
    );
    assert!(!counting.verify(Algorithm::ES256, &key("ec-p256"), b"msg", &[0; 64]));
    assert_eq!(ES256_HOST_CALLS.load(Ordering::SeqCst), 0);
}

#[test]
fn ecdsa_goes_to_the_host_as_der() {
    let (msg, sig) = signed(Algorithm::ES256, "ec-p256");
    // reference_host reads only DER signatures: an r‖s one would not verify.
    let der_only = Backend::with_host(reference_host, false);
    assert!(der_only.verify(Algorithm::ES256, &key("ec-p256"), &msg, &sig));
}

#[test]
fn es384_goes_to_the_host_as_der() {
    let (msg, sig) = signed(Algorithm::ES384, "ec-p384");
    assert!(envoy_backend().verify(Algorithm::ES384, &key("ec-p384"), &msg, &sig));
}

static ES384_HOST_CALLS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn es384_out_of_range_signature_never_reaches_the_host() {
    let (msg, sig) = signed(Algorithm::ES384, "ec-p384");
    let answering_yes = Backend::with_host(
        |_| {
            ES384_HOST_CALLS.fetch_add(1, Ordering::SeqCst);
            Some(true)
        },
        true,
    );
    let mut high_r = sig.clone();
    high_r[..48].fill(0xff);
    let mut zero_s = sig.clone();
    zero_s[48..].fill(0);
    for forged in [vec![0; 96], high_r, zero_s, sig[..95].to_vec()] {
        assert!(!answering_yes.verify(Algorithm::ES384, &key("ec-p384"), &msg, &forged));
    }
    assert_eq!(ES384_HOST_CALLS.load(Ordering::SeqCst), 0);
}

#[test]
fn es384_signature_one_below_the_order_reaches_the_host() {
    // The largest valid s (n − 1) must not be refused by the range check.
    let (msg, sig) = signed(Algorithm::ES384, "ec-p384");
    let mut s_max = sig.clone();
    let n_minus_1 = hex_order_minus_one();
    s_max[48..].copy_from_slice(&n_minus_1);
    let asked = Backend::with_host(|_| Some(true), true);
    assert!(asked.verify(Algorithm::ES384, &key("ec-p384"), &msg, &s_max));
}

fn hex_order_minus_one() -> [u8; 48] {
    let hex = "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52972";
    let mut out = [0u8; 48];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn es384_is_not_sent_to_a_host_not_seen_to_verify_p384() {
    let (msg, sig) = signed(Algorithm::ES384, "ec-p384");
    let no_p384 = Backend::with_host(|_| Some(true), false);
    let forged = tampered(sig.clone());
    // The host would say yes to anything; it is not asked. The Rust check (portable build only)
    // decides, or nothing does.
    assert!(!no_p384.verify(Algorithm::ES384, &key("ec-p384"), &msg, &forged));
    assert_eq!(
        no_p384.verify(Algorithm::ES384, &key("ec-p384"), &msg, &sig),
        cfg!(feature = "portable")
    );
}

#[test]
fn es384_is_verifiable_only_with_a_p384_host_or_the_portable_build() {
    assert_eq!(
        Backend::RUST.verifies(Algorithm::ES384),
        cfg!(feature = "portable")
    );
    assert_eq!(
        Backend::with_host(reference_host, false).verifies(Algorithm::ES384),
        cfg!(feature = "portable")
    );
    assert!(envoy_backend().verifies(Algorithm::ES384));
    for alg in [
        Algorithm::RS256,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::HS384,
    ] {
        assert!(Backend::RUST.verifies(alg), "{alg:?}");
    }
}

#[test]
fn p384_spki_is_the_p384_crates_encoding() {
    use p384::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
    let ours = key("ec-p384").try_get_as_bytes().unwrap().to_vec();
    let theirs = p384::PublicKey::from_public_key_der(&ours)
        .unwrap()
        .to_public_key_der()
        .unwrap();
    assert_eq!(ours, theirs.as_bytes());
}

#[test]
fn es384_der_signature_is_the_p384_crates_encoding() {
    let (_, sig) = signed(Algorithm::ES384, "ec-p384");
    let ours = es384::signature_to_der(&sig).unwrap();
    let theirs = p384::ecdsa::Signature::from_slice(&sig).unwrap().to_der();
    assert_eq!(ours, theirs.as_bytes());
}

#[test]
fn ed25519_key_validity_is_checked() {
    assert!(!ed25519_key_is_valid(&[0u8; 31]));
    let ed = key("ed25519");
    assert!(ed25519_key_is_valid(ed.try_get_as_bytes().unwrap()));
}
