//! The signature backend, behind jsonwebtoken's `CryptoProvider`.
//!
//! mlgate installs its own provider instead of relying on crate features, so the backend can be
//! swapped without touching the verification logic: today every algorithm goes to the pure-Rust
//! RustCrypto backend; a host-accelerated path (Envoy's `verify_signature` foreign function) plugs
//! in here. This module decides nothing about tokens: it checks one signature over one message.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::{Algorithm, DecodingKey};

/// mlgate's provider: RustCrypto for signing (tests and tools only) and verification.
pub static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: RUST_CRYPTO.signer_factory,
    verifier_factory,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: RUST_CRYPTO
            .key_utils
            .rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key: RUST_CRYPTO
            .key_utils
            .rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key: RUST_CRYPTO
            .key_utils
            .ec_pub_components_from_private_key,
        ed_pub_components_from_private_key: RUST_CRYPTO
            .key_utils
            .ed_pub_components_from_private_key,
        compute_digest: RUST_CRYPTO.key_utils.compute_digest,
    },
};

use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as RUST_CRYPTO;

fn verifier_factory(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    (RUST_CRYPTO.verifier_factory)(alg, key)
}

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
