//! The signature backend, behind jsonwebtoken's `CryptoProvider`.
//!
//! mlgate installs its own provider instead of relying on jsonwebtoken's crate features, so the
//! backend can be swapped without touching the verification logic: RS*/ES* go to the host's
//! verifier (Envoy's `verify_signature` foreign function) once the adapter installs one, everything
//! else (and everything on hosts without it) to the pure-Rust RustCrypto crates. The provider only
//! verifies — signing and the private-key utilities answer with an error — which keeps every
//! signing implementation out of
//! the `.wasm` (jsonwebtoken's bundled RustCrypto provider links its signers, ~150 KB, even when
//! only its verifier is referenced). This module decides nothing about tokens: it checks one
//! signature over one message.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use sha2::{Sha256, Sha384, Sha512};
use signature::Verifier;
use std::sync::OnceLock;

use rsa::pkcs8::DecodePublicKey as _;

use crate::p384_verify::PublicKey as PublicKey384;

/// One signature check for a host's verifier (Envoy's `verify_signature` foreign function):
/// PKCS#1 v1.5 or ECDSA (DER signature) over `text` with a SubjectPublicKeyInfo key.
pub struct HostCheck<'a> {
    /// `sha256`, `sha384` or `sha512`.
    pub hash: &'static str,
    pub spki_der: &'a [u8],
    pub signature: &'a [u8],
    pub text: &'a [u8],
}

/// A host verifier: `Some(valid)`, or `None` when the host could not judge (the pure-Rust
/// backend then does). Installed by the adapter; the core never calls the host itself.
pub type HostVerifier = fn(&HostCheck<'_>) -> Option<bool>;

static HOST_VERIFIER: OnceLock<HostVerifier> = OnceLock::new();

/// Routes RS256/384/512 and ES256/384 to `verifier` from now on (PS* and EdDSA stay pure Rust:
/// Envoy's function only does PKCS#1 v1.5 padding and no Ed25519).
pub fn use_host_verifier(verifier: HostVerifier) {
    let _already = HOST_VERIFIER.set(verifier);
}

/// Which backend checks RS*/ES* signatures.
pub fn backend() -> &'static str {
    if HOST_VERIFIER.get().is_some() {
        "host (RS*, ES*) + rust_crypto (PS*, EdDSA, HS*)"
    } else {
        "rust_crypto"
    }
}

pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
    verifier_factory,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        rsa_pub_components_from_public_key: |_| Err(ErrorKind::InvalidAlgorithm.into()),
        ec_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
        ed_pub_components_from_private_key: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
        compute_digest: |_, _| Err(ErrorKind::InvalidAlgorithm.into()),
    },
};

/// Makes [`PROVIDER`] jsonwebtoken's process default. Idempotent: a second call (a reconfigure
/// in the same VM) keeps the one already installed, which is the same provider.
pub fn install() {
    let _already_installed = PROVIDER.install_default();
}

/// Whether `signature` over `message` verifies with `key` under `alg`. Any backend error
/// (a malformed key, a signature of the wrong length) is a failed verification.
pub fn verify(alg: Algorithm, key: &DecodingKey, message: &[u8], signature: &[u8]) -> bool {
    if let Some(host) = HOST_VERIFIER.get().filter(|_| is_pkcs1(alg)) {
        // RS* straight to the host, without building a boxed verifier and copying the key and
        // signature first: every cold token takes this path in Envoy.
        let DecodingKeyKind::SecretOrDer(spki) = key.kind() else {
            return false;
        };
        let check = HostCheck {
            hash: rsa_hash(alg),
            spki_der: spki,
            signature,
            text: message,
        };
        return match host(&check) {
            Some(valid) => valid,
            None => rsa_in_rust(alg, spki, message, signature).is_ok(),
        };
    }
    match (PROVIDER.verifier_factory)(&alg, key) {
        Ok(verifier) => verifier.verify(message, &signature.to_vec()).is_ok(),
        Err(_) => false,
    }
}

fn is_pkcs1(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
}

/// The digest of an RSA algorithm (RS* and PS*), by the host's name for it.
fn rsa_hash(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 | Algorithm::PS256 => "sha256",
        Algorithm::RS384 | Algorithm::PS384 => "sha384",
        _ => "sha512",
    }
}

/// The pure-Rust RSA check of an SPKI key.
fn rsa_in_rust(
    alg: Algorithm,
    spki: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), signature::Error> {
    let public =
        rsa::RsaPublicKey::from_public_key_der(spki).map_err(|_| signature::Error::new())?;
    RsaVerifier { alg, public }.verify(message, &signature.to_vec())
}

/// Whether the backend accepts `key` for `alg` at all (used at load time to refuse bad keys).
pub fn key_is_usable(alg: Algorithm, key: &DecodingKey) -> bool {
    (PROVIDER.verifier_factory)(&alg, key).is_ok()
}

fn invalid_key() -> Error {
    ErrorKind::InvalidKeyFormat.into()
}

fn verifier_factory(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let alg = *alg;
    let verifier: Box<dyn JwtVerifier> = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let DecodingKeyKind::SecretOrDer(spki) = key.kind() else {
                return Err(invalid_key());
            };
            match HOST_VERIFIER.get() {
                Some(host) if is_pkcs1(alg) => Box::new(HostVerifierFor {
                    alg,
                    hash: rsa_hash(alg),
                    spki: spki.clone(),
                    host: *host,
                    ecdsa: false,
                }),
                _ => {
                    let public =
                        rsa::RsaPublicKey::from_public_key_der(spki).map_err(|_| invalid_key())?;
                    Box::new(RsaVerifier { alg, public })
                }
            }
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let spki = key.try_get_as_bytes()?;
            let es256 = alg == Algorithm::ES256;
            match HOST_VERIFIER.get() {
                Some(host) => Box::new(HostVerifierFor {
                    alg,
                    hash: if es256 { "sha256" } else { "sha384" },
                    spki: spki.to_vec(),
                    host: *host,
                    ecdsa: true,
                }),
                None if es256 => Box::new(Es256Verifier(
                    p256::ecdsa::VerifyingKey::from_public_key_der(spki)
                        .map_err(|_| invalid_key())?,
                )),
                None => Box::new(Es384Verifier(
                    PublicKey384::from_spki_der(spki).ok_or_else(invalid_key)?,
                )),
            }
        }
        Algorithm::EdDSA => {
            let bytes: &[u8; 32] = key
                .try_get_as_bytes()?
                .try_into()
                .map_err(|_| invalid_key())?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| invalid_key())?;
            Box::new(EdDsaVerifier(key))
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Box::new(HmacVerifier {
            alg,
            secret: key.try_get_as_bytes()?.to_vec(),
        }),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(verifier)
}

/// RS*/ES* through the host, falling back to the pure-Rust check when the host cannot judge.
struct HostVerifierFor {
    alg: Algorithm,
    hash: &'static str,
    spki: Vec<u8>,
    host: HostVerifier,
    ecdsa: bool,
}

impl Verifier<Vec<u8>> for HostVerifierFor {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        // JWS ECDSA signatures are r‖s; the host wants DER. Both conversions also refuse r or s
        // of 0 or ≥ n (CVE-2022-21449) before anything reaches the host.
        let der;
        let signature_for_host: &[u8] = if !self.ecdsa {
            signature
        } else if self.alg == Algorithm::ES256 {
            der = p256::ecdsa::Signature::from_slice(signature)?
                .to_der()
                .as_bytes()
                .to_vec();
            &der
        } else {
            der = crate::p384_verify::signature_to_der(signature)
                .ok_or_else(signature::Error::new)?;
            &der
        };
        let check = HostCheck {
            hash: self.hash,
            spki_der: &self.spki,
            signature: signature_for_host,
            text: msg,
        };
        match (self.host)(&check) {
            Some(true) => Ok(()),
            Some(false) => Err(signature::Error::new()),
            None => self.verify_in_rust(msg, signature),
        }
    }
}

impl HostVerifierFor {
    fn verify_in_rust(&self, msg: &[u8], signature: &[u8]) -> Result<(), signature::Error> {
        let invalid = |_| signature::Error::new();
        match self.alg {
            Algorithm::ES256 => Es256Verifier(
                p256::ecdsa::VerifyingKey::from_public_key_der(&self.spki).map_err(invalid)?,
            )
            .verify(msg, &signature.to_vec()),
            Algorithm::ES384 => Es384Verifier(
                PublicKey384::from_spki_der(&self.spki).ok_or_else(signature::Error::new)?,
            )
            .verify(msg, &signature.to_vec()),
            alg => rsa_in_rust(alg, &self.spki, msg, signature),
        }
    }
}

impl JwtVerifier for HostVerifierFor {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

struct RsaVerifier {
    alg: Algorithm,
    public: rsa::RsaPublicKey,
}

impl Verifier<Vec<u8>> for RsaVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        use rsa::{Pkcs1v15Sign, Pss};
        use sha2::Digest;
        let result = match self.alg {
            Algorithm::RS256 => self.public.verify(
                Pkcs1v15Sign::new::<Sha256>(),
                &Sha256::digest(msg),
                signature,
            ),
            Algorithm::RS384 => self.public.verify(
                Pkcs1v15Sign::new::<Sha384>(),
                &Sha384::digest(msg),
                signature,
            ),
            Algorithm::RS512 => self.public.verify(
                Pkcs1v15Sign::new::<Sha512>(),
                &Sha512::digest(msg),
                signature,
            ),
            Algorithm::PS256 => {
                self.public
                    .verify(Pss::new::<Sha256>(), &Sha256::digest(msg), signature)
            }
            Algorithm::PS384 => {
                self.public
                    .verify(Pss::new::<Sha384>(), &Sha384::digest(msg), signature)
            }
            Algorithm::PS512 => {
                self.public
                    .verify(Pss::new::<Sha512>(), &Sha512::digest(msg), signature)
            }
            _ => return Err(signature::Error::new()),
        };
        result.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

struct Es256Verifier(p256::ecdsa::VerifyingKey);

impl Verifier<Vec<u8>> for Es256Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        // JWS carries r‖s; from_slice refuses r or s of 0 or ≥ n (CVE-2022-21449's forgeries).
        let signature = p256::ecdsa::Signature::from_slice(signature)?;
        self.0.verify(msg, &signature)
    }
}

impl JwtVerifier for Es256Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES256
    }
}

/// ES384 in pure Rust on mlgate's own P-384 verifier ([`crate::p384_verify`] says why not the
/// `p384` crate); it refuses r or s of 0 or ≥ n as `Es256Verifier` does.
struct Es384Verifier(PublicKey384);

impl Verifier<Vec<u8>> for Es384Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        if crate::p384_verify::verify(&self.0, msg, signature) {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for Es384Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::ES384
    }
}

struct EdDsaVerifier(ed25519_dalek::VerifyingKey);

impl Verifier<Vec<u8>> for EdDsaVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let signature = ed25519_dalek::Signature::from_slice(signature)?;
        self.0.verify_strict(msg, &signature)
    }
}

impl JwtVerifier for EdDsaVerifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct HmacVerifier {
    alg: Algorithm,
    secret: Vec<u8>,
}

impl Verifier<Vec<u8>> for HmacVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        use hmac::{Hmac, Mac};
        // verify_slice compares in constant time.
        let ok = match self.alg {
            Algorithm::HS256 => Hmac::<Sha256>::new_from_slice(&self.secret)
                .map(|mac| mac.chain_update(msg).verify_slice(signature).is_ok()),
            Algorithm::HS384 => Hmac::<Sha384>::new_from_slice(&self.secret)
                .map(|mac| mac.chain_update(msg).verify_slice(signature).is_ok()),
            Algorithm::HS512 => Hmac::<Sha512>::new_from_slice(&self.secret)
                .map(|mac| mac.chain_update(msg).verify_slice(signature).is_ok()),
            _ => Ok(false),
        };
        if ok.unwrap_or(false) {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for HmacVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn rsa_key() -> DecodingKey {
        let doc = crate::testing::test_jwks();
        let set = crate::jwks::parse_jwks(&doc, crate::jwks::Strictness::Strict).unwrap();
        set.keys[0].decoding.clone()
    }

    fn spki(key: &DecodingKey) -> Vec<u8> {
        key.try_get_as_bytes().unwrap().to_vec()
    }

    fn signed(alg: Algorithm, kid: &str) -> (Vec<u8>, Vec<u8>) {
        let token = crate::testing::sign(kid, alg, &serde_json::json!({"a": 1}));
        let (input, sig) = token.rsplit_once('.').unwrap();
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        (input.as_bytes().to_vec(), sig)
    }

    fn host_verifier(host: HostVerifier, alg: Algorithm, spki: Vec<u8>) -> HostVerifierFor {
        HostVerifierFor {
            alg,
            hash: "sha256",
            spki,
            host,
            ecdsa: matches!(alg, Algorithm::ES256 | Algorithm::ES384),
        }
    }

    #[test]
    fn host_answer_is_final_when_it_has_one() {
        let (msg, sig) = signed(Algorithm::RS256, "rsa-a");
        let yes = host_verifier(|_| Some(true), Algorithm::RS256, spki(&rsa_key()));
        assert!(yes.verify(&msg, &vec![0; 256]).is_ok());
        let no = host_verifier(|_| Some(false), Algorithm::RS256, spki(&rsa_key()));
        assert!(no.verify(&msg, &sig).is_err());
    }

    #[test]
    fn host_without_an_answer_falls_back_to_rust() {
        let (msg, sig) = signed(Algorithm::RS256, "rsa-a");
        let unsure = host_verifier(|_| None, Algorithm::RS256, spki(&rsa_key()));
        assert!(unsure.verify(&msg, &sig).is_ok());
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(unsure.verify(&msg, &bad).is_err());
    }

    static HOST_CALLS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn ecdsa_zero_signature_never_reaches_the_host() {
        let doc = crate::testing::test_jwks();
        let set = crate::jwks::parse_jwks(&doc, crate::jwks::Strictness::Strict).unwrap();
        let ec = set
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some("ec-p256"))
            .unwrap();
        let counting = host_verifier(
            |_| {
                HOST_CALLS.fetch_add(1, Ordering::SeqCst);
                Some(true)
            },
            Algorithm::ES256,
            spki(&ec.decoding),
        );
        assert!(counting.verify(b"msg", &vec![0; 64]).is_err());
        assert_eq!(HOST_CALLS.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn ecdsa_goes_to_the_host_as_der() {
        let doc = crate::testing::test_jwks();
        let set = crate::jwks::parse_jwks(&doc, crate::jwks::Strictness::Strict).unwrap();
        let ec = set
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some("ec-p256"))
            .unwrap();
        let (msg, sig) = signed(Algorithm::ES256, "ec-p256");
        // The fake host checks the DER form with the RustCrypto verifier.
        let der_checking = host_verifier(
            |check| {
                let key = p256::ecdsa::VerifyingKey::from_public_key_der(check.spki_der).ok()?;
                let sig = p256::ecdsa::Signature::from_der(check.signature).ok()?;
                Some(key.verify(check.text, &sig).is_ok())
            },
            Algorithm::ES256,
            spki(&ec.decoding),
        );
        assert!(der_checking.verify(&msg, &sig).is_ok());
    }

    fn ec_p384_spki() -> Vec<u8> {
        let doc = crate::testing::test_jwks();
        let set = crate::jwks::parse_jwks(&doc, crate::jwks::Strictness::Strict).unwrap();
        let ec = set
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some("ec-p384"))
            .unwrap();
        spki(&ec.decoding)
    }

    #[test]
    fn es384_goes_to_the_host_as_der() {
        let (msg, sig) = signed(Algorithm::ES384, "ec-p384");
        // The fake host checks the DER form and the SPKI with the p384 crate (a dev-dependency).
        let der_checking = host_verifier(
            |check| {
                let key = p384::ecdsa::VerifyingKey::from_public_key_der(check.spki_der).ok()?;
                let sig = p384::ecdsa::Signature::from_der(check.signature).ok()?;
                Some(key.verify(check.text, &sig).is_ok())
            },
            Algorithm::ES384,
            ec_p384_spki(),
        );
        assert!(der_checking.verify(&msg, &sig).is_ok());
    }

    #[test]
    fn es384_out_of_range_signature_never_reaches_the_host() {
        let (msg, sig) = signed(Algorithm::ES384, "ec-p384");
        let mut high_r = sig.clone();
        high_r[..48].fill(0xff);
        let answering_yes = host_verifier(|_| Some(true), Algorithm::ES384, ec_p384_spki());
        assert!(answering_yes.verify(&msg, &vec![0; 96]).is_err());
        assert!(answering_yes.verify(&msg, &high_r).is_err());
        assert!(answering_yes.verify(&msg, &sig[..95].to_vec()).is_err());
    }

    #[test]
    fn es384_host_without_an_answer_falls_back_to_rust() {
        let (msg, sig) = signed(Algorithm::ES384, "ec-p384");
        let unsure = host_verifier(|_| None, Algorithm::ES384, ec_p384_spki());
        assert!(unsure.verify(&msg, &sig).is_ok());
        let mut bad = sig.clone();
        bad[10] ^= 1;
        assert!(unsure.verify(&msg, &bad).is_err());
    }

    #[test]
    fn es384_verifies_in_rust_without_a_host() {
        let (msg, sig) = signed(Algorithm::ES384, "ec-p384");
        let key = DecodingKey::from_ec_der(&ec_p384_spki());
        assert!(verify(Algorithm::ES384, &key, &msg, &sig));
        assert!(!verify(Algorithm::ES384, &key, b"another message", &sig));
    }

    #[test]
    fn es384_key_that_is_not_p384_spki_is_unusable() {
        let p256_key = {
            let doc = crate::testing::test_jwks();
            let set = crate::jwks::parse_jwks(&doc, crate::jwks::Strictness::Strict).unwrap();
            let ec = set
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some("ec-p256"));
            ec.unwrap().decoding.clone()
        };
        assert!(!key_is_usable(Algorithm::ES384, &p256_key));
        assert!(key_is_usable(
            Algorithm::ES384,
            &DecodingKey::from_ec_der(&ec_p384_spki())
        ));
    }
}
