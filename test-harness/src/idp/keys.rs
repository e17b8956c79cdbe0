//! Signing keys: an RSA key with its JWK and stable `kid`, the ring of current and retired keys, and what
//! the IdP does with it (serve the JWKS, sign with the current key, rotate with a grace period).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::server::IdpState;
use crate::mint::TestKey;

/// Base64url without padding, as JWKs and JWTs write bytes.
pub(super) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA signing key with its public JWK; signing goes through [`crate::mint::TestKey`].
pub struct SigningKey {
    kid: String,
    key: TestKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh RSA 2048 key.
    pub fn generate() -> Result<SigningKey> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).context("generate RSA key")?;
        Self::from_rsa(&key)
    }

    /// An RSA private key in PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<SigningKey> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| anyhow!("not an RSA private key in PEM (PKCS#8 or PKCS#1): {e}"))?;
        Self::from_rsa(&key)
    }

    fn from_rsa(key: &RsaPrivateKey) -> Result<SigningKey> {
        let pem = key.to_pkcs8_pem(LineEnding::LF).context("encode RSA key")?;
        let n = b64(&key.n().to_bytes_be());
        let e = b64(&key.e().to_bytes_be());
        // RFC 7638 thumbprint: a stable kid for a given key.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = b64(&Sha256::digest(canonical.as_bytes()))
            .chars()
            .take(16)
            .collect::<String>();
        let jwk = json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e });
        let key = TestKey::from_pem(&pem, &kid)?;
        Ok(SigningKey { kid, key, jwk })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty`, `use`, `alg`, `kid`, `n`, `e`).
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs claims with RS256; the header is `{"alg":"RS256","typ":"JWT","kid":<kid>}`.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        self.key.try_sign(claims, Algorithm::RS256)
    }
}

/// A key of the ring.
pub(super) struct KeyEntry {
    pub(super) key: Arc<SigningKey>,
    /// Once retired, when it leaves the JWKS.
    pub(super) retire_at: Option<Instant>,
}

/// The IdP's signing keys: the current one, and retired ones until their grace period ends.
pub(super) struct KeyRing {
    /// Oldest first; the last one signs.
    pub(super) keys: Vec<KeyEntry>,
}

impl KeyRing {
    fn current(&self) -> Option<Arc<SigningKey>> {
        self.keys.last().map(|k| Arc::clone(&k.key))
    }

    fn prune(&mut self, now: Instant) {
        self.keys
            .retain(|k| k.retire_at.is_none_or(|deadline| deadline > now));
    }
}

impl IdpState {
    pub(super) fn jwks(&self) -> Value {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.prune(Instant::now());
        // Newest first, as IdPs list the current key first.
        let keys: Vec<Value> = ring
            .keys
            .iter()
            .rev()
            .map(|k| k.key.public_jwk().clone())
            .collect();
        json!({ "keys": keys })
    }

    pub(super) fn current_key(&self) -> Result<Arc<SigningKey>> {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current()
            .ok_or_else(|| anyhow!("no signing key"))
    }

    pub(super) fn rotate(&self, grace: Option<Duration>) -> Result<(String, String)> {
        let fresh = Arc::new(SigningKey::generate()?);
        let grace = grace.unwrap_or(self.grace);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let previous = ring
            .current()
            .map(|k| k.kid().to_string())
            .unwrap_or_default();
        for entry in ring.keys.iter_mut() {
            if entry.retire_at.is_none() {
                entry.retire_at = Some(now + grace);
            }
        }
        ring.prune(now);
        ring.keys.push(KeyEntry {
            key: Arc::clone(&fresh),
            retire_at: None,
        });
        if self.log {
            println!(
                "idp: rotated signing key: {previous} -> {} ({previous} stays in the JWKS for {}s)",
                fresh.kid(),
                grace.as_secs()
            );
        }
        Ok((fresh.kid().to_string(), previous))
    }
}
