//! The signature backend, behind jsonwebtoken's `CryptoProvider`.
//!
//! mlgate installs its own provider instead of relying on jsonwebtoken's crate features, so the
//! backend can be swapped without touching the verification logic: today every algorithm goes to
//! the pure-Rust RustCrypto crates; a host-accelerated path (Envoy's `verify_signature` foreign
//! function) plugs in at [`verifier_factory`]. The provider only verifies — signing and the
//! private-key utilities answer with an error — which keeps every signing implementation out of
//! the `.wasm` (jsonwebtoken's bundled RustCrypto provider links its signers, ~150 KB, even when
//! only its verifier is referenced). This module decides nothing about tokens: it checks one
//! signature over one message.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use sha2::{Sha256, Sha384, Sha512};
use signature::Verifier;

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
    match (PROVIDER.verifier_factory)(&alg, key) {
        Ok(verifier) => verifier.verify(message, &signature.to_vec()).is_ok(),
        Err(_) => false,
    }
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
            let DecodingKeyKind::RsaModulusExponent { n, e } = key.kind() else {
                return Err(invalid_key());
            };
            let public = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(n),
                rsa::BigUint::from_bytes_be(e),
            )
            .map_err(|_| invalid_key())?;
            Box::new(RsaVerifier { alg, public })
        }
        Algorithm::ES256 => {
            let bytes = key.try_get_as_bytes()?;
            let key =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| invalid_key())?;
            Box::new(Es256Verifier(key))
        }
        Algorithm::ES384 => {
            let bytes = key.try_get_as_bytes()?;
            let key =
                p384::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map_err(|_| invalid_key())?;
            Box::new(Es384Verifier(key))
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

struct Es384Verifier(p384::ecdsa::VerifyingKey);

impl Verifier<Vec<u8>> for Es384Verifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let signature = p384::ecdsa::Signature::from_slice(signature)?;
        self.0.verify(msg, &signature)
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
