//! Signature checks: one signature over one message with one key. This module decides nothing
//! about tokens, and it implements no cryptography: every check is made by BoringSSL (the host's
//! verifier, Envoy's `verify_signature` foreign function) or by a maintained RustCrypto crate.
//!
//! A [`Backend`] says which does what. The adapter probes the host once when it starts and hands
//! the gate a backend; the core never calls the host itself. RS* and ES* go to the host when it
//! has one (BoringSSL checks RSA ~16× faster than pure-Rust RSA inside the VM); PS*, EdDSA and
//! HS* always run in Rust (Envoy's function knows neither PSS padding nor Ed25519). ES384 has no
//! Rust fallback in the default build: the `p384` crate costs ~130 KB of `.wasm`, which every
//! Envoy worker compiles, for a check Envoy's BoringSSL does. The `portable` feature adds it, for
//! proxy-wasm hosts without `verify_signature`; without either, a policy that accepts ES384 is
//! refused when it loads ([`Backend::verifies`]).

use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use rsa::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use signature::Verifier as _;

/// One signature check for a host's verifier (Envoy's `verify_signature` foreign function):
/// PKCS#1 v1.5 or ECDSA (DER signature) over `text` with a SubjectPublicKeyInfo key.
pub struct HostCheck<'a> {
    /// `sha256`, `sha384` or `sha512`.
    pub hash: &'static str,
    pub spki_der: &'a [u8],
    pub signature: &'a [u8],
    pub text: &'a [u8],
}

/// A host verifier: `Some(valid)`, or `None` when the host could not judge (the Rust backend
/// then does, where it can).
pub type HostVerifier = fn(&HostCheck<'_>) -> Option<bool>;

/// Where each algorithm's signatures are checked. Chosen once, when the filter starts, and
/// passed to what verifies (no global state: two gates in one process may differ).
#[derive(Clone, Copy)]
pub struct Backend {
    host: Option<HostVerifier>,
    /// The host was seen to check P-384 signatures correctly.
    host_es384: bool,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Backend {
    /// RustCrypto only: a host without a signature function (and native tests).
    pub const RUST: Backend = Backend {
        host: None,
        host_es384: false,
    };

    /// RS* and ES256 to `verifier` (falling back to Rust when it cannot judge), ES384 too when
    /// `es384` (the host was seen to verify P-384).
    pub fn with_host(verifier: HostVerifier, es384: bool) -> Backend {
        Backend {
            host: Some(verifier),
            host_es384: es384,
        }
    }

    /// Whether this backend can check `alg` at all. Asked when a policy loads: a provider that
    /// lists an algorithm no backend can check is refused there, not at its first token.
    pub fn verifies(&self, alg: Algorithm) -> bool {
        match alg {
            Algorithm::ES384 => self.host_es384 || cfg!(feature = "portable"),
            other => crate::jwks::KeyFamily::for_algorithm(other).is_some(),
        }
    }

    /// Who checks a signature of `alg`, for a decision's trace: the host's verifier (which hands
    /// back to RustCrypto a key it cannot judge) or RustCrypto in the VM.
    pub fn checker(&self, alg: Algorithm) -> &'static str {
        let host = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::ES256 => {
                self.host.is_some()
            }
            Algorithm::ES384 => self.host_es384,
            _ => false,
        };
        if host {
            "host"
        } else {
            "rust_crypto"
        }
    }

    /// Whether the host checks any signatures.
    pub fn uses_host(&self) -> bool {
        self.host.is_some()
    }

    /// Which backend checks what, for the start-up log line.
    pub fn name(&self) -> &'static str {
        match (self.host.is_some(), self.host_es384) {
            (true, true) => "host (RS*, ES256, ES384) + rust_crypto (PS*, EdDSA, HS*)",
            (true, false) if cfg!(feature = "portable") => {
                "host (RS*, ES256) + rust_crypto (PS*, ES384, EdDSA, HS*)"
            }
            (true, false) => "host (RS*, ES256) + rust_crypto (PS*, EdDSA, HS*); no ES384",
            (false, _) if cfg!(feature = "portable") => "rust_crypto",
            (false, _) => "rust_crypto; no ES384",
        }
    }

    /// Whether `signature` over `message` verifies with `key` under `alg`. Anything malformed (a
    /// key of the wrong kind, a signature of the wrong length) is a failed verification.
    pub fn verify(
        &self,
        alg: Algorithm,
        key: &DecodingKey,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let Ok(key_bytes) = key.try_get_as_bytes() else {
            return false;
        };
        match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                if !matches!(key.kind(), DecodingKeyKind::SecretOrDer(_)) {
                    return false;
                }
                let check = HostCheck {
                    hash: rsa_hash(alg),
                    spki_der: key_bytes,
                    signature,
                    text: message,
                };
                self.ask_host(&check)
                    .unwrap_or_else(|| rsa_in_rust(alg, key_bytes, message, signature))
            }
            Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => {
                rsa_in_rust(alg, key_bytes, message, signature)
            }
            Algorithm::ES256 => {
                // JWS carries r‖s; from_slice refuses r or s of 0 or ≥ n (CVE-2022-21449's
                // forgeries) before anything reaches a verifier.
                let Ok(parsed) = p256::ecdsa::Signature::from_slice(signature) else {
                    return false;
                };
                let der = parsed.to_der();
                let check = HostCheck {
                    hash: "sha256",
                    spki_der: key_bytes,
                    signature: der.as_bytes(),
                    text: message,
                };
                self.ask_host(&check).unwrap_or_else(|| {
                    p256::ecdsa::VerifyingKey::from_public_key_der(key_bytes)
                        .is_ok_and(|key| key.verify(message, &parsed).is_ok())
                })
            }
            Algorithm::ES384 => {
                let Some(der) = es384::signature_to_der(signature) else {
                    return false;
                };
                let check = HostCheck {
                    hash: "sha384",
                    spki_der: key_bytes,
                    signature: &der,
                    text: message,
                };
                let host = if self.host_es384 {
                    self.ask_host(&check)
                } else {
                    None
                };
                host.unwrap_or_else(|| es384::verify_in_rust(key_bytes, message, signature))
            }
            Algorithm::EdDSA => {
                let Ok(bytes) = <&[u8; 32]>::try_from(key_bytes) else {
                    return false;
                };
                let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
                    return false;
                };
                ed25519_dalek::VerifyingKey::from_bytes(bytes)
                    .is_ok_and(|key| key.verify_strict(message, &signature).is_ok())
            }
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                hmac_matches(alg, key_bytes, message, signature)
            }
            _ => false,
        }
    }

    fn ask_host(&self, check: &HostCheck<'_>) -> Option<bool> {
        (self.host?)(check)
    }
}

/// The digest of an RSA algorithm (RS* and PS*), by the host's name for it.
fn rsa_hash(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => "sha256",
        Algorithm::RS384 | Algorithm::PS384 => "sha384",
        _ => "sha512",
    }
}

/// The `rsa` crate's check of a signature with an SPKI key: PKCS#1 v1.5 (RS*) or PSS (PS*).
fn rsa_in_rust(alg: Algorithm, spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
    use rsa::{Pkcs1v15Sign, Pss};
    let Ok(public) = rsa::RsaPublicKey::from_public_key_der(spki) else {
        return false;
    };
    let result = match alg {
        Algorithm::RS256 => public.verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(message),
            signature,
        ),
        Algorithm::RS384 => public.verify(
            Pkcs1v15Sign::new::<Sha384>(),
            &Sha384::digest(message),
            signature,
        ),
        Algorithm::RS512 => public.verify(
            Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(message),
            signature,
        ),
        Algorithm::PS256 => {
            public.verify(Pss::new::<Sha256>(), &Sha256::digest(message), signature)
        }
        Algorithm::PS384 => {
            public.verify(Pss::new::<Sha384>(), &Sha384::digest(message), signature)
        }
        Algorithm::PS512 => {
            public.verify(Pss::new::<Sha512>(), &Sha512::digest(message), signature)
        }
        _ => return false,
    };
    result.is_ok()
}

/// The `hmac` crate's constant-time comparison of a MAC.
fn hmac_matches(alg: Algorithm, secret: &[u8], message: &[u8], tag: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let verified = match alg {
        Algorithm::HS256 => Hmac::<Sha256>::new_from_slice(secret)
            .map(|mac| mac.chain_update(message).verify_slice(tag).is_ok()),
        Algorithm::HS384 => Hmac::<Sha384>::new_from_slice(secret)
            .map(|mac| mac.chain_update(message).verify_slice(tag).is_ok()),
        Algorithm::HS512 => Hmac::<Sha512>::new_from_slice(secret)
            .map(|mac| mac.chain_update(message).verify_slice(tag).is_ok()),
        _ => Ok(false),
    };
    verified.unwrap_or(false)
}

/// Whether an Ed25519 public key is a valid curve point (the `ed25519-dalek` crate's check).
pub fn ed25519_key_is_valid(key: &[u8]) -> bool {
    <&[u8; 32]>::try_from(key)
        .is_ok_and(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_ok())
}

/// ES384 with the `p384` crate: the portable build, for hosts without `verify_signature`.
#[cfg(feature = "portable")]
mod es384 {
    use p384::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
    use signature::Verifier as _;

    /// JWS r‖s as the DER `ECDSA-Sig-Value` the host reads; `None` for r or s of 0 or ≥ n.
    pub fn signature_to_der(signature: &[u8]) -> Option<Vec<u8>> {
        let parsed = p384::ecdsa::Signature::from_slice(signature).ok()?;
        Some(parsed.to_der().as_bytes().to_vec())
    }

    pub fn verify_in_rust(spki: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let (Ok(key), Ok(signature)) = (
            p384::ecdsa::VerifyingKey::from_public_key_der(spki),
            p384::ecdsa::Signature::from_slice(signature),
        ) else {
            return false;
        };
        key.verify(message, &signature).is_ok()
    }

    /// The SPKI of an uncompressed SEC1 point, which `p384` checks is on the curve.
    pub fn spki_der(point: &[u8]) -> Option<Vec<u8>> {
        let key = p384::PublicKey::from_sec1_bytes(point).ok()?;
        Some(key.to_public_key_der().ok()?.into_vec())
    }
}

/// ES384 in the default build: the host verifies; this only shapes what it is given.
#[cfg(not(feature = "portable"))]
mod es384 {
    use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, SequenceOf, UintRef};
    use der::Encode as _;
    use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

    /// The order n of P-384's base point (SEC 2 v2 §2.5.1), big-endian. Compared with, never
    /// computed with: r and s outside 1..n are refused before the host sees them, as the `p256`
    /// crate refuses them for ES256 (BoringSSL refuses them too).
    const ORDER: [u8; 48] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37,
        0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc,
        0xc5, 0x29, 0x73,
    ];

    /// `id-ecPublicKey` (RFC 5480 §2.1.1) and the named curve `secp384r1` (RFC 5480 §2.1.1.1).
    const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

    /// JWS r‖s as the DER `ECDSA-Sig-Value` the host reads (encoded by the `der` crate);
    /// `None` for a signature of the wrong length, or r or s of 0 or ≥ n.
    pub fn signature_to_der(signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != 2 * ORDER.len() {
            return None;
        }
        let (r, s) = signature.split_at(ORDER.len());
        let in_range = |half: &[u8]| half.iter().any(|b| *b != 0) && half < &ORDER[..];
        if !in_range(r) || !in_range(s) {
            return None;
        }
        // SEQUENCE OF INTEGER encodes exactly as `ECDSA-Sig-Value ::= SEQUENCE { r, s }`.
        let mut value = SequenceOf::<UintRef<'_>, 2>::new();
        value.add(UintRef::new(r).ok()?).ok()?;
        value.add(UintRef::new(s).ok()?).ok()?;
        value.to_der().ok()
    }

    /// No P-384 arithmetic in this build: a host that could not judge means no verification.
    pub fn verify_in_rust(_spki: &[u8], _message: &[u8], _signature: &[u8]) -> bool {
        false
    }

    /// The SPKI of an uncompressed SEC1 point (encoded by the `spki` crate). Whether the point is
    /// on the curve is checked by the host when it reads the key: a key it cannot read makes
    /// every signature fail ([`verify_in_rust`]).
    pub fn spki_der(point: &[u8]) -> Option<Vec<u8>> {
        if point.len() != 1 + 2 * ORDER.len() || point.first() != Some(&0x04) {
            return None;
        }
        let curve = AnyRef::from(&SECP384R1);
        let info = SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid: ID_EC_PUBLIC_KEY,
                parameters: Some(curve),
            },
            subject_public_key: BitStringRef::from_bytes(point).ok()?,
        };
        info.to_der().ok()
    }
}

/// The SubjectPublicKeyInfo of a P-384 point, as the host's verifier reads it; `None` when the
/// point is not one (off the curve, in the portable build).
pub fn p384_spki_der(point: &[u8]) -> Option<Vec<u8>> {
    es384::spki_der(point)
}

#[cfg(test)]
mod tests;
