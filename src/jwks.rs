//! Key sets: parse a JWKS once into ready-to-use verification keys, and select the keys that may
//! verify a given token.
//!
//! A key is only ever offered for an algorithm its type fits (RSA for RS*/PS*, P-256 for ES256,
//! P-384 for ES384, Ed25519 for EdDSA, a shared secret for HS*), and only if its own `use` and
//! `alg` (when present) agree. Keys named in a token's header (`jwk`, `jku`, `x5u`, `x5c`) are
//! never consulted: keys come from the configuration or the provider's published set only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The curve or type of a key, which decides the algorithms it may verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl KeyFamily {
    /// The family a token's `alg` needs (`None` for an algorithm mlgate does not know).
    pub fn for_algorithm(alg: Algorithm) -> Option<KeyFamily> {
        Some(match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::ES256 => KeyFamily::EcP256,
            Algorithm::ES384 => KeyFamily::EcP384,
            Algorithm::EdDSA => KeyFamily::Ed25519,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => KeyFamily::Hmac,
            _ => return None,
        })
    }
}

/// One verification key, decoded once when its set loads.
#[derive(Clone)]
pub struct Key {
    pub kid: Option<String>,
    pub family: KeyFamily,
    /// The JWK's own `alg`, when it names one: then only that algorithm may use the key.
    pub alg: Option<Algorithm>,
    /// Entra's per-key `issuer` (multi-tenant apps): the key may only verify tokens from it.
    /// `{tenantid}` in it stands for the token's tenant.
    pub issuer: Option<String>,
    pub decoding: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        KeyFamily::for_algorithm(alg) == Some(self.family) && self.alg.is_none_or(|own| own == alg)
    }

    /// A shared-secret key (HS*), for providers configured with `shared_secret`.
    pub fn shared_secret(secret: &[u8]) -> Key {
        Key {
            kid: None,
            family: KeyFamily::Hmac,
            alg: None,
            issuer: None,
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// A provider's current keys.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Key>,
}

/// Which keys may verify a token.
#[derive(Debug)]
pub enum Selection<'a> {
    /// Try these, in order.
    Candidates(Vec<&'a Key>),
    /// The token names a `kid` this set does not have (a refetch may help).
    UnknownKid,
    /// No key of the set fits the token's algorithm (a refetch will not help).
    NoFittingKey,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a token with this `kid` (if any) and `alg`.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection<'_> {
        let candidates: Vec<&Key> = match kid {
            Some(kid) => {
                let named: Vec<&Key> = self
                    .keys
                    .iter()
                    .filter(|key| key.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    return Selection::UnknownKid;
                }
                named.into_iter().filter(|key| key.fits(alg)).collect()
            }
            None => self.keys.iter().filter(|key| key.fits(alg)).collect(),
        };
        if candidates.is_empty() {
            Selection::NoFittingKey
        } else {
            Selection::Candidates(candidates)
        }
    }
}

/// Why a JWK could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksError {
    /// `keys[3].n`-style location inside the JWKS document.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// How to treat a key that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// Configuration: every key must be usable.
    Strict,
    /// Published by an IdP: skip what cannot be used (other `use`, unknown `kty`), keep the rest.
    Lenient,
}

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Parses a JWKS document (`{"keys": [...]}`).
pub fn parse_jwks(doc: &Value, strictness: Strictness) -> Result<KeySet, JwksError> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwksError {
            path: "keys".into(),
            message: "a JWKS needs a \"keys\" array".into(),
        })?;
    let mut set = KeySet::default();
    for (index, jwk) in keys.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(Some(key)) => set.keys.push(key),
            Ok(None) if strictness == Strictness::Lenient => {}
            Ok(None) => {
                return Err(JwksError {
                    path: format!("keys[{index}].use"),
                    message: "the key is not a signature key (use/key_ops)".into(),
                })
            }
            Err((_, _)) if strictness == Strictness::Lenient => {}
            Err((field, message)) => {
                return Err(JwksError {
                    path: format!("keys[{index}]{field}"),
                    message,
                })
            }
        }
    }
    if set.is_empty() {
        return Err(JwksError {
            path: "keys".into(),
            message: "no usable signature key".into(),
        });
    }
    Ok(set)
}

type JwkError = (String, String);

fn field_err(field: &str, message: impl Into<String>) -> JwkError {
    (format!(".{field}"), message.into())
}

/// `Ok(None)`: a well-formed key that is not for signatures.
// Out of line, like config's `Compiler` steps: one function per key keeps V8's compile memory low.
#[inline(never)]
fn parse_jwk(jwk: &Value) -> Result<Option<Key>, JwkError> {
    let object = jwk
        .as_object()
        .ok_or_else(|| (String::new(), "a JWK must be an object".to_string()))?;
    let text = |field: &str| -> Result<Option<&str>, JwkError> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(field_err(field, "must be a string")),
        }
    };
    let required = |field: &str| -> Result<&str, JwkError> {
        text(field)?.ok_or_else(|| field_err(field, "is required for this key type"))
    };
    if let Some(usage) = text("use")? {
        if usage != "sig" {
            return Ok(None);
        }
    }
    if let Some(ops) = object.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Ok(None);
        }
    }
    let kid = text("kid")?.map(str::to_string);
    let alg = match text("alg")? {
        None => None,
        Some(name) => Some(
            name.parse::<Algorithm>()
                .map_err(|_| field_err("alg", format!("unsupported algorithm {name:?}")))?,
        ),
    };
    let issuer = text("issuer")?.map(str::to_string);
    let kty = required("kty")?;
    let (family, decoding) = match kty {
        "RSA" => {
            let (n_bytes, e_bytes) = match (text("n")?, text("e")?) {
                (Some(n), Some(e)) => (
                    decode_b64(n).map_err(|m| field_err("n", m))?,
                    decode_b64(e).map_err(|m| field_err("e", m))?,
                ),
                // Some IdPs publish keys as certificates only.
                _ => rsa_components_from_x5c(object.get("x5c")).map_err(|m| field_err("x5c", m))?,
            };
            let bits = significant_bits(&n_bytes);
            if bits < MIN_RSA_BITS {
                return Err(field_err(
                    "n",
                    format!("RSA modulus of {bits} bits is below the minimum of {MIN_RSA_BITS}"),
                ));
            }
            let exponent_ok = e_bytes.len() <= 8
                && e_bytes.last().is_some_and(|last| last & 1 == 1)
                && significant_bits(&e_bytes) > 1;
            if !exponent_ok {
                return Err(field_err("e", "not a valid RSA public exponent"));
            }
            (
                KeyFamily::Rsa,
                rsa_spki(&n_bytes, &e_bytes).map_err(|m| field_err("n", m))?,
            )
        }
        "EC" => {
            let (family, size) = match required("crv")? {
                "P-256" => (KeyFamily::EcP256, 32),
                "P-384" => (KeyFamily::EcP384, 48),
                other => return Err(field_err("crv", format!("unsupported curve {other:?}"))),
            };
            let x = decode_b64(required("x")?).map_err(|m| field_err("x", m))?;
            let y = decode_b64(required("y")?).map_err(|m| field_err("y", m))?;
            if x.len() != size || y.len() != size {
                return Err(field_err("x", format!("coordinates must be {size} bytes")));
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let decoding = ec_spki(family, &point)
                .ok_or_else(|| field_err("x", "the point is not on the curve"))?;
            (family, decoding)
        }
        "OKP" => {
            match required("crv")? {
                "Ed25519" => {}
                other => return Err(field_err("crv", format!("unsupported curve {other:?}"))),
            }
            let x = decode_b64(required("x")?).map_err(|m| field_err("x", m))?;
            if x.len() != 32 {
                return Err(field_err("x", "an Ed25519 key is 32 bytes"));
            }
            if !crate::crypto::ed25519_key_is_valid(&x) {
                return Err(field_err("x", "not a valid Ed25519 public key"));
            }
            (KeyFamily::Ed25519, DecodingKey::from_ed_der(&x))
        }
        "oct" => {
            return Err(field_err(
                "kty",
                "symmetric keys do not belong in a JWKS; use the provider's shared_secret",
            ))
        }
        other => return Err(field_err("kty", format!("unsupported key type {other:?}"))),
    };
    let key = Key {
        kid,
        family,
        alg,
        issuer,
        decoding,
    };
    if let Some(alg) = alg {
        if !key.fits(alg) {
            return Err(field_err(
                "alg",
                format!("{alg:?} does not fit a key of type {kty}"),
            ));
        }
    }
    Ok(Some(key))
}

/// `n` and `e` of the RSA key in the first certificate of a JWK's `x5c` (standard base64 DER).
fn rsa_components_from_x5c(x5c: Option<&Value>) -> Result<(Vec<u8>, Vec<u8>), String> {
    use base64::engine::general_purpose::STANDARD;
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let first = x5c
        .and_then(Value::as_array)
        .and_then(|chain| chain.first())
        .and_then(Value::as_str)
        .ok_or("an RSA key needs n and e, or an x5c certificate chain")?;
    let certificate = STANDARD
        .decode(first)
        .map_err(|_| "x5c[0] is not base64".to_string())?;
    let spki = spki_of_certificate(&certificate).ok_or("x5c[0] is not an X.509 certificate")?;
    let key = rsa::RsaPublicKey::from_public_key_der(&spki)
        .map_err(|_| "the certificate's key is not RSA".to_string())?;
    Ok((key.n().to_bytes_be(), key.e().to_bytes_be()))
}

/// The DER SubjectPublicKeyInfo of an X.509 certificate. Walked with the `der` crate rather
/// than a full X.509 parser: mlgate needs one field and trusts the certificate no further (the
/// JWKS itself came from the IdP over TLS), and a full parser would add size to every `.wasm`.
fn spki_of_certificate(certificate: &[u8]) -> Option<Vec<u8>> {
    use der::{asn1::AnyRef, Decode as _, Encode as _, SliceReader, Tag, Tagged as _};
    let mut top = SliceReader::new(certificate).ok()?;
    let cert = AnyRef::decode(&mut top).ok()?;
    let mut cert_fields = SliceReader::new(cert.value()).ok()?;
    let tbs = AnyRef::decode(&mut cert_fields).ok()?;
    let mut fields = SliceReader::new(tbs.value()).ok()?;
    // version [0] EXPLICIT is optional; then serialNumber, signature, issuer, validity, subject.
    let first = AnyRef::decode(&mut fields).ok()?;
    let skip = if matches!(first.tag(), Tag::ContextSpecific { .. }) {
        5
    } else {
        4
    };
    for _ in 0..skip {
        AnyRef::decode(&mut fields).ok()?;
    }
    let spki = AnyRef::decode(&mut fields).ok()?;
    if spki.tag() != Tag::Sequence {
        return None;
    }
    spki.to_der().ok()
}

/// Keys are held as SubjectPublicKeyInfo DER, converted once when the set loads: the form both
/// Envoy's host verifier and the pure-Rust fallback read.
fn rsa_spki(n: &[u8], e: &[u8]) -> Result<DecodingKey, String> {
    use rsa::pkcs8::EncodePublicKey as _;
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(n),
        rsa::BigUint::from_bytes_be(e),
    )
    .map_err(|e| format!("not a usable RSA key: {e}"))?;
    let der = key
        .to_public_key_der()
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    Ok(DecodingKey::from_rsa_der(der.as_bytes()))
}

fn ec_spki(family: KeyFamily, point: &[u8]) -> Option<DecodingKey> {
    use p256::pkcs8::EncodePublicKey as _;
    let der = match family {
        KeyFamily::EcP256 => p256::PublicKey::from_sec1_bytes(point)
            .ok()?
            .to_public_key_der()
            .ok()?
            .into_vec(),
        // Whether the point is on the curve: checked here by the `portable` build, by the host's
        // verifier (which refuses such a key) in the default one.
        KeyFamily::EcP384 => crate::crypto::p384_spki_der(point)?,
        _ => return None,
    };
    Some(DecodingKey::from_ec_der(&der))
}

fn decode_b64(text: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| "not base64url (no padding)".to_string())
}

fn significant_bits(bytes: &[u8]) -> usize {
    let mut iter = bytes.iter().skip_while(|b| **b == 0);
    match iter.next() {
        None => 0,
        Some(first) => (8 - first.leading_zeros() as usize) + 8 * iter.count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn test_jwks() -> Value {
        serde_json::from_str(include_str!("../test-harness/keys/test-jwks.json")).unwrap()
    }

    #[test]
    fn test_jwks_parses_every_key() {
        let set = parse_jwks(&test_jwks(), Strictness::Strict).unwrap();
        assert_eq!(set.len(), 5);
    }

    #[test]
    fn selects_by_kid_and_algorithm() {
        let set = parse_jwks(&test_jwks(), Strictness::Strict).unwrap();
        match set.select(Some("rsa-b"), Algorithm::RS256) {
            Selection::Candidates(keys) => {
                assert_eq!(keys.len(), 1);
                assert_eq!(keys[0].kid.as_deref(), Some("rsa-b"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_kid_is_reported_as_such() {
        let set = parse_jwks(&test_jwks(), Strictness::Strict).unwrap();
        assert!(matches!(
            set.select(Some("nope"), Algorithm::RS256),
            Selection::UnknownKid
        ));
    }

    #[test]
    fn rsa_key_never_offered_for_hmac_or_ec() {
        let set = parse_jwks(&test_jwks(), Strictness::Strict).unwrap();
        assert!(matches!(
            set.select(Some("rsa-a"), Algorithm::HS256),
            Selection::NoFittingKey
        ));
        assert!(matches!(
            set.select(Some("rsa-a"), Algorithm::ES256),
            Selection::NoFittingKey
        ));
    }

    #[test]
    fn key_alg_restricts_algorithm() {
        // rsa-a is published with "alg": "RS256"; it must not verify PS256.
        let set = parse_jwks(&test_jwks(), Strictness::Strict).unwrap();
        assert!(matches!(
            set.select(Some("rsa-a"), Algorithm::PS256),
            Selection::NoFittingKey
        ));
    }

    #[test]
    fn without_kid_every_fitting_key_is_a_candidate() {
        let set = parse_jwks(&test_jwks(), Strictness::Strict).unwrap();
        match set.select(None, Algorithm::RS256) {
            Selection::Candidates(keys) => assert_eq!(keys.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strict_refuses_encryption_key_with_its_index() {
        let mut doc = test_jwks();
        doc["keys"][1]["use"] = json!("enc");
        let err = parse_jwks(&doc, Strictness::Strict).unwrap_err();
        assert_eq!(err.path, "keys[1].use");
    }

    #[test]
    fn lenient_skips_what_it_cannot_use() {
        let mut doc = test_jwks();
        doc["keys"][1]["use"] = json!("enc");
        doc["keys"][2]["kty"] = json!("XYZ");
        let set = parse_jwks(&doc, Strictness::Lenient).unwrap();
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn short_rsa_modulus_is_refused() {
        let doc = json!({"keys": [{"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xff; 128]), "e": "AQAB"}]});
        let err = parse_jwks(&doc, Strictness::Strict).unwrap_err();
        assert_eq!(err.path, "keys[0].n");
        assert!(err.message.contains("1024 bits"));
    }

    #[test]
    fn ec_point_off_curve_is_refused() {
        let doc = json!({"keys": [{"kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])}]});
        let err = parse_jwks(&doc, Strictness::Strict).unwrap_err();
        assert_eq!(err.path, "keys[0].x");
    }

    #[test]
    #[cfg(feature = "portable")]
    fn ec_p384_point_off_curve_is_refused() {
        let doc = json!({"keys": [{"kty": "EC", "crv": "P-384",
            "x": URL_SAFE_NO_PAD.encode([1u8; 48]), "y": URL_SAFE_NO_PAD.encode([2u8; 48])}]});
        let err = parse_jwks(&doc, Strictness::Strict).unwrap_err();
        assert_eq!(err.path, "keys[0].x");
    }

    #[test]
    fn symmetric_key_in_jwks_is_refused() {
        let doc = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        let err = parse_jwks(&doc, Strictness::Strict).unwrap_err();
        assert_eq!(err.path, "keys[0].kty");
    }

    #[test]
    fn empty_set_is_refused() {
        let err = parse_jwks(&json!({"keys": []}), Strictness::Lenient).unwrap_err();
        assert_eq!(err.path, "keys");
    }
}

#[cfg(test)]
mod x5c_tests {
    use super::*;
    use serde_json::json;

    /// A self-signed certificate for the test key rsa-a (openssl req -x509 -key rsa-a.pem).
    const CERT: &str = include_str!("testdata/rsa-a-cert.b64");

    #[test]
    fn rsa_key_given_only_as_x5c_is_usable() {
        let doc = json!({"keys": [{"kty": "RSA", "use": "sig", "kid": "cert-only", "x5c": [CERT.trim()]}]});
        let set = parse_jwks(&doc, Strictness::Strict).unwrap();
        let expected = parse_jwks(&crate::testing::test_jwks(), Strictness::Strict).unwrap();
        assert_eq!(
            set.keys[0].decoding.try_get_as_bytes().unwrap(),
            expected.keys[0].decoding.try_get_as_bytes().unwrap(),
            "the certificate's key is rsa-a"
        );
    }

    #[test]
    fn garbage_x5c_is_refused() {
        let doc = json!({"keys": [{"kty": "RSA", "x5c": ["bm90IGEgY2VydA=="]}]});
        let err = parse_jwks(&doc, Strictness::Strict).unwrap_err();
        assert_eq!(err.path, "keys[0].x5c");
    }
}
