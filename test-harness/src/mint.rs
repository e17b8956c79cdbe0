//! Token minting for tests, case files and demos: the test keys in `test-harness/keys/`, realistic claim
//! fixtures, and the `mlgate-harness token` subcommand.
//!
//! This module never touches wasmtime, so the demo tools use it too. It decides nothing about validity:
//! it signs whatever it is given, including headers and payloads that a correct filter must refuse.
//! The keys are public (they are in the repository): a JWKS containing them must never be deployed.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

const RSA_A: &str = include_str!("../keys/rsa-a.pem");
const RSA_B: &str = include_str!("../keys/rsa-b.pem");
const EC_P256: &str = include_str!("../keys/ec-p256.pem");
const EC_P384: &str = include_str!("../keys/ec-p384.pem");
const ED25519: &str = include_str!("../keys/ed25519.pem");
const TEST_JWKS: &str = include_str!("../keys/test-jwks.json");

/// Claim shapes from real identity providers (copied from the shared fixtures; times are relative to 0).
const FIXTURES: &[(&str, &str)] = &[
    (
        "entra-v1-user",
        include_str!("../fixtures/claims/entra-v1-user.json"),
    ),
    (
        "entra-v2-user",
        include_str!("../fixtures/claims/entra-v2-user.json"),
    ),
    (
        "entra-v2-app-managed-identity",
        include_str!("../fixtures/claims/entra-v2-app-managed-identity.json"),
    ),
    (
        "entra-v2-user-groups-overage",
        include_str!("../fixtures/claims/entra-v2-user-groups-overage.json"),
    ),
    (
        "entra-v2-guest-other-tenant",
        include_str!("../fixtures/claims/entra-v2-guest-other-tenant.json"),
    ),
    (
        "okta-access",
        include_str!("../fixtures/claims/okta-access.json"),
    ),
    (
        "keycloak-access",
        include_str!("../fixtures/claims/keycloak-access.json"),
    ),
    (
        "google-id",
        include_str!("../fixtures/claims/google-id.json"),
    ),
];

/// The kind of a private key, which decides the algorithms it can sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA (RS256/384/512, PS256/384/512).
    Rsa,
    /// EC on P-256 (ES256).
    EcP256,
    /// EC on P-384 (ES384).
    EcP384,
    /// Ed25519 (EdDSA).
    Ed25519,
}

impl KeyKind {
    /// The algorithm a token signed with this kind of key uses unless told otherwise.
    pub fn default_alg(self) -> Algorithm {
        match self {
            KeyKind::Rsa => Algorithm::RS256,
            KeyKind::EcP256 => Algorithm::ES256,
            KeyKind::EcP384 => Algorithm::ES384,
            KeyKind::Ed25519 => Algorithm::EdDSA,
        }
    }
}

/// A private signing key with its `kid`.
#[derive(Clone)]
pub struct TestKey {
    kid: String,
    kind: KeyKind,
    key: EncodingKey,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .finish()
    }
}

impl TestKey {
    /// `keys/rsa-a.pem`, RSA 2048, kid `rsa-a` (its JWK says `alg: RS256`).
    pub fn rsa_a() -> Self {
        Self::builtin(RSA_A, "rsa-a", KeyKind::Rsa)
    }
    /// `keys/rsa-b.pem`, RSA 2048, kid `rsa-b`.
    pub fn rsa_b() -> Self {
        Self::builtin(RSA_B, "rsa-b", KeyKind::Rsa)
    }
    /// `keys/ec-p256.pem`, kid `ec-p256`.
    pub fn ec_p256() -> Self {
        Self::builtin(EC_P256, "ec-p256", KeyKind::EcP256)
    }
    /// `keys/ec-p384.pem`, kid `ec-p384`.
    pub fn ec_p384() -> Self {
        Self::builtin(EC_P384, "ec-p384", KeyKind::EcP384)
    }
    /// `keys/ed25519.pem`, kid `ed25519`.
    pub fn ed25519() -> Self {
        Self::builtin(ED25519, "ed25519", KeyKind::Ed25519)
    }

    /// Every built-in test key.
    pub fn all() -> Vec<TestKey> {
        vec![
            Self::rsa_a(),
            Self::rsa_b(),
            Self::ec_p256(),
            Self::ec_p384(),
            Self::ed25519(),
        ]
    }

    /// A built-in key by kid (`rsa-a`, `rsa-b`, `ec-p256`, `ec-p384`, `ed25519`).
    pub fn by_kid(kid: &str) -> Option<TestKey> {
        Self::all().into_iter().find(|k| k.kid == kid)
    }

    #[allow(clippy::expect_used)] // the embedded keys are part of the build; a bad one is a repository bug
    fn builtin(pem: &str, kid: &str, kind: KeyKind) -> Self {
        Self::from_pem(pem, kid)
            .expect("embedded test key parses")
            .with_kind_checked(kind)
    }

    fn with_kind_checked(self, kind: KeyKind) -> Self {
        debug_assert_eq!(
            self.kind, kind,
            "embedded key {} has an unexpected type",
            self.kid
        );
        self
    }

    /// Parses a PKCS#8 (or PKCS#1 / SEC1) PEM private key: RSA, EC P-256/P-384 or Ed25519.
    pub fn from_pem(pem: &str, kid: &str) -> anyhow::Result<Self> {
        let bytes = pem.as_bytes();
        let (key, kind) = if let Ok(key) = EncodingKey::from_rsa_pem(bytes) {
            (key, KeyKind::Rsa)
        } else if let Ok(key) = EncodingKey::from_ec_pem(bytes) {
            // The curve decides the algorithm: a P-384 key cannot sign ES256.
            let kind = if jsonwebtoken::crypto::sign(b"probe", &key, Algorithm::ES256).is_ok() {
                KeyKind::EcP256
            } else {
                KeyKind::EcP384
            };
            (key, kind)
        } else if let Ok(key) = EncodingKey::from_ed_pem(bytes) {
            (key, KeyKind::Ed25519)
        } else {
            bail!("not an RSA, EC (P-256/P-384) or Ed25519 private key in PEM form");
        };
        Ok(TestKey {
            kid: kid.to_string(),
            kind,
            key,
        })
    }

    /// The key's `kid`, set in the header of every token it signs with [`TestKey::sign`].
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// What kind of key this is.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The algorithm [`TestKey::sign_default`] uses.
    pub fn default_alg(&self) -> Algorithm {
        self.kind.default_alg()
    }

    /// Signs `claims` with `alg`; the header is `{"alg": alg, "typ": "JWT", "kid": kid}`.
    /// Panics if the key cannot sign with `alg` (a test bug): use [`TestKey::try_sign`] to handle it.
    #[allow(clippy::expect_used)]
    pub fn sign(&self, claims: &Value, alg: Algorithm) -> String {
        self.try_sign(claims, alg).expect("signing a test token")
    }

    /// [`TestKey::sign`] with the key's default algorithm (RS256, ES256, ES384 or EdDSA).
    pub fn sign_default(&self, claims: &Value) -> String {
        self.sign(claims, self.default_alg())
    }

    /// Signs `claims` with `alg`, or says why the key cannot.
    pub fn try_sign(&self, claims: &Value, alg: Algorithm) -> anyhow::Result<String> {
        let header = serde_json::json!({ "alg": alg_name(alg), "typ": "JWT", "kid": self.kid });
        self.try_sign_segments(&b64_json(&header)?, &b64_json(claims)?, alg)
    }

    /// Signs `claims` under an arbitrary header, exactly as given (no `kid` is added). The signing algorithm
    /// is the header's `alg` when it names one this key can use, otherwise the key's default: so
    /// `{"alg": "none"}` or `{"alg": "HS256"}` headers still get a (wrong-algorithm) signature, as an attacker's would.
    #[allow(clippy::expect_used)]
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.try_sign_with_header(header, claims)
            .expect("signing a test token")
    }

    /// [`TestKey::sign_with_header`], returning an error instead of panicking.
    pub fn try_sign_with_header(&self, header: &Value, claims: &Value) -> anyhow::Result<String> {
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(|name| name.parse::<Algorithm>().ok())
            .filter(|alg| self.can_sign(*alg))
            .unwrap_or_else(|| self.default_alg());
        let header_b64 = b64_json(header)?;
        let payload_b64 = b64_json(claims)?;
        self.try_sign_segments(&header_b64, &payload_b64, alg)
    }

    /// Signs the raw segments `header_b64.payload_b64` (which need not be valid base64 or JSON) with `alg`,
    /// for tests of malformed tokens that still carry a genuine signature.
    #[allow(clippy::expect_used)]
    pub fn sign_segments(&self, header_b64: &str, payload_b64: &str, alg: Algorithm) -> String {
        self.try_sign_segments(header_b64, payload_b64, alg)
            .expect("signing a test token")
    }

    /// [`TestKey::sign_segments`], returning an error instead of panicking.
    pub fn try_sign_segments(
        &self,
        header_b64: &str,
        payload_b64: &str,
        alg: Algorithm,
    ) -> anyhow::Result<String> {
        if !self.can_sign(alg) {
            bail!(
                "key {} ({:?}) cannot sign {}",
                self.kid,
                self.kind,
                alg_name(alg)
            );
        }
        let message = format!("{header_b64}.{payload_b64}");
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, alg)
            .with_context(|| format!("signing with key {} and {}", self.kid, alg_name(alg)))?;
        Ok(format!("{message}.{signature}"))
    }

    /// Whether this key can produce signatures for `alg`.
    pub fn can_sign(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self.kind, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::EcP256, ES256)
                | (KeyKind::EcP384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }

    /// The public half as a JWK, from `keys/test-jwks.json` (None for a key loaded from a file whose kid is not there).
    pub fn try_public_jwk(&self) -> Option<Value> {
        test_jwks()["keys"]
            .as_array()?
            .iter()
            .find(|k| k["kid"].as_str() == Some(self.kid.as_str()))
            .cloned()
    }

    /// The public half as a JWK. Panics for a key that is not one of the built-in test keys.
    #[allow(clippy::expect_used)]
    pub fn public_jwk(&self) -> Value {
        self.try_public_jwk()
            .expect("the key's kid is in keys/test-jwks.json")
    }

    /// A JWKS holding only this key's public JWK.
    pub fn jwks(&self) -> Value {
        serde_json::json!({ "keys": [self.public_jwk()] })
    }
}

/// The JWKS with the public half of every built-in test key (`keys/test-jwks.json`).
#[allow(clippy::expect_used)]
pub fn test_jwks() -> Value {
    serde_json::from_str(TEST_JWKS).expect("keys/test-jwks.json is JSON")
}

/// `Bearer <token>`, the value of an `Authorization` header.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A token with `alg: none` semantics: `header.payload.` with an empty signature.
pub fn unsigned_token(header: &Value, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{p}.")
}

/// Base64url (no padding) of a JSON value's compact text.
pub fn b64_json(value: &Value) -> anyhow::Result<String> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(value)?))
}

/// The names of the claim fixtures ([`claims_fixture`]).
pub fn claims_fixture_names() -> Vec<&'static str> {
    FIXTURES.iter().map(|(name, _)| *name).collect()
}

/// A realistic claim set by name (`entra-v2-user`, `okta-access`, … see [`claims_fixture_names`]), with
/// `iat`/`nbf`/`exp`/`auth_time` still relative to 0. Use [`claims_fixture_at`] to sign it.
/// Panics on an unknown name, listing the known ones.
#[allow(clippy::panic, clippy::expect_used)]
pub fn claims_fixture(name: &str) -> Value {
    let name = name.trim_end_matches(".json");
    let Some((_, text)) = FIXTURES.iter().find(|(n, _)| *n == name) else {
        panic!(
            "no claims fixture {name:?}; known: {:?}",
            claims_fixture_names()
        );
    };
    serde_json::from_str(text).expect("claims fixture is JSON")
}

/// [`claims_fixture`] with its relative times rewritten to absolute ones around `now` (unix seconds).
pub fn claims_fixture_at(name: &str, now: u64) -> Value {
    relative_times_at(claims_fixture(name), now)
}

/// Rewrites the numeric `iat`, `nbf`, `exp` and `auth_time` of a claim set written relative to 0 (e.g. `exp: 3600`)
/// to `now + offset`. Other claims are left alone.
pub fn relative_times_at(mut claims: Value, now: u64) -> Value {
    if let Some(obj) = claims.as_object_mut() {
        for field in ["iat", "nbf", "exp", "auth_time"] {
            if let Some(offset) = obj.get(field).and_then(Value::as_i64) {
                let t = now as i64 + offset;
                obj.insert(field.to_string(), Value::from(t));
            }
        }
    }
    claims
}

/// Sets `iat` and `nbf` to `now` and `exp` to `now + ttl` where they are absent.
pub fn fill_times(mut claims: Value, now: u64, ttl: u64) -> Value {
    if let Some(obj) = claims.as_object_mut() {
        obj.entry("iat").or_insert(Value::from(now));
        obj.entry("nbf").or_insert(Value::from(now));
        obj.entry("exp").or_insert(Value::from(now + ttl));
    }
    claims
}

/// Seconds since the unix epoch, from the system clock.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The JOSE name of an algorithm (`RS256`, `EdDSA`, …).
pub fn alg_name(alg: Algorithm) -> String {
    // Algorithm serialises as its JOSE name.
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{alg:?}"))
}

const TOKEN_HELP: &str = "usage: mlgate-harness token --key FILE --claims JSON|@FILE [options]

Mints a signed JWT and prints it on stdout. The keys in test-harness/keys/ are public test keys:
never trust them anywhere.

options:
  --key FILE        PEM private key (PKCS#8, PKCS#1 or SEC1): RSA, EC P-256, EC P-384 or Ed25519.
                    A built-in test key may be named by kid instead: rsa-a, rsa-b, ec-p256, ec-p384, ed25519.
  --claims JSON     the claims as a JSON object, or @FILE to read them from a file. A claim set from
                    test-harness/fixtures/claims/ may be named as fixture:NAME (e.g. fixture:entra-v2-user);
                    its relative times are made absolute around now.
  --alg ALG         RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA (default: from the key type)
  --kid KID         the header's kid (default: the key file's stem, e.g. rsa-a)
  --ttl SECONDS     lifetime used for exp when the claims have none (default 3600)
  -h, --help        this text

iat and nbf are set to now and exp to now + ttl when the claims do not have them.

example:
  mlgate-harness token --key test-harness/keys/rsa-a.pem \\
      --claims '{\"iss\":\"https://idp.example\",\"aud\":\"api://ml\",\"sub\":\"alice\",\"groups\":[\"ml-scientists\"]}'
";

/// `mlgate-harness token …`: see `TOKEN_HELP`.
pub fn cli(args: &[String]) -> anyhow::Result<ExitCode> {
    let mut key_arg = None;
    let mut claims_arg = None;
    let mut alg_arg = None;
    let mut kid_arg = None;
    let mut ttl: u64 = 3600;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{flag} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{TOKEN_HELP}");
                return Ok(ExitCode::SUCCESS);
            }
            "--key" => key_arg = Some(value("--key")?),
            "--claims" => claims_arg = Some(value("--claims")?),
            "--alg" => alg_arg = Some(value("--alg")?),
            "--kid" => kid_arg = Some(value("--kid")?),
            "--ttl" => {
                ttl = value("--ttl")?
                    .parse()
                    .context("--ttl must be a number of seconds")?
            }
            other => bail!("unknown option {other:?}\n{TOKEN_HELP}"),
        }
    }
    let key_arg = key_arg.ok_or_else(|| anyhow!("--key is required\n{TOKEN_HELP}"))?;
    let claims_arg = claims_arg.ok_or_else(|| anyhow!("--claims is required\n{TOKEN_HELP}"))?;
    let token = mint_token(
        &key_arg,
        &claims_arg,
        alg_arg.as_deref(),
        kid_arg.as_deref(),
        ttl,
        now_unix(),
    )?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// The work of the `token` subcommand, with the clock as a parameter.
pub fn mint_token(
    key_arg: &str,
    claims_arg: &str,
    alg: Option<&str>,
    kid: Option<&str>,
    ttl: u64,
    now: u64,
) -> anyhow::Result<String> {
    let key = load_key(key_arg, kid)?;
    let claims = if let Some(name) = claims_arg.strip_prefix("fixture:") {
        if !claims_fixture_names().contains(&name) {
            bail!(
                "no claims fixture {name:?}; known: {:?}",
                claims_fixture_names()
            );
        }
        claims_fixture_at(name, now)
    } else if let Some(path) = claims_arg.strip_prefix('@') {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading claims from {path}"))?;
        serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?
    } else {
        serde_json::from_str(claims_arg).context("--claims is not JSON")?
    };
    if !claims.is_object() {
        bail!("the claims must be a JSON object");
    }
    let claims = fill_times(claims, now, ttl);
    let alg = match alg {
        Some(name) => name
            .parse::<Algorithm>()
            .map_err(|_| anyhow!("unknown algorithm {name:?}"))?,
        None => key.default_alg(),
    };
    key.try_sign(&claims, alg)
}

fn load_key(key_arg: &str, kid: Option<&str>) -> anyhow::Result<TestKey> {
    if let Some(builtin) = TestKey::by_kid(key_arg) {
        return Ok(match kid {
            Some(kid) => TestKey {
                kid: kid.to_string(),
                ..builtin
            },
            None => builtin,
        });
    }
    let path = std::path::Path::new(key_arg);
    let pem = std::fs::read_to_string(path).with_context(|| format!("reading key {key_arg}"))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("key");
    TestKey::from_pem(&pem, kid.unwrap_or(stem)).with_context(|| format!("key {key_arg}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    fn decoding_key(key: &TestKey) -> DecodingKey {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.public_jwk()).unwrap();
        DecodingKey::from_jwk(&jwk).unwrap()
    }

    fn verify(token: &str, key: &TestKey, alg: Algorithm) -> Value {
        let mut validation = Validation::new(alg);
        validation.validate_aud = false;
        decode::<Value>(token, &decoding_key(key), &validation)
            .unwrap()
            .claims
    }

    fn claims() -> Value {
        serde_json::json!({ "sub": "alice", "exp": now_unix() + 600 })
    }

    #[test]
    fn every_builtin_key_signs_tokens_its_public_jwk_verifies() {
        for key in TestKey::all() {
            let token = key.sign_default(&claims());
            assert_eq!(
                verify(&token, &key, key.default_alg())["sub"],
                "alice",
                "key {}",
                key.kid()
            );
            assert_eq!(
                decode_header(&token).unwrap().kid.as_deref(),
                Some(key.kid())
            );
        }
    }

    #[test]
    fn rsa_keys_sign_every_rsa_algorithm() {
        use Algorithm::*;
        for alg in [RS256, RS384, RS512, PS256, PS384, PS512] {
            let token = TestKey::rsa_b().sign(&claims(), alg);
            assert_eq!(verify(&token, &TestKey::rsa_b(), alg)["sub"], "alice");
        }
    }

    #[test]
    fn key_kinds_are_detected_from_the_pem() {
        assert_eq!(TestKey::rsa_a().kind(), KeyKind::Rsa);
        assert_eq!(TestKey::ec_p256().kind(), KeyKind::EcP256);
        assert_eq!(TestKey::ec_p384().kind(), KeyKind::EcP384);
        assert_eq!(TestKey::ed25519().kind(), KeyKind::Ed25519);
        assert!(TestKey::from_pem("not a key", "x").is_err());
    }

    #[test]
    fn a_key_refuses_an_algorithm_of_another_family() {
        assert!(TestKey::ec_p256()
            .try_sign(&claims(), Algorithm::RS256)
            .is_err());
        assert!(TestKey::ec_p384()
            .try_sign(&claims(), Algorithm::ES256)
            .is_err());
    }

    #[test]
    fn tokens_signed_by_one_key_do_not_verify_with_another() {
        let token = TestKey::rsa_a().sign(&claims(), Algorithm::RS256);
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        assert!(decode::<Value>(&token, &decoding_key(&TestKey::rsa_b()), &validation).is_err());
    }

    #[test]
    fn sign_with_header_keeps_the_header_exactly() {
        let header = serde_json::json!({ "alg": "RS256", "kid": "forged", "crit": ["exp"] });
        let token = TestKey::rsa_a().sign_with_header(&header, &claims());
        let first = token.split('.').next().unwrap();
        let decoded: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(first).unwrap()).unwrap();
        assert_eq!(decoded, header);
        // The signature is genuine, so only the header decides the outcome.
        let message = token.rsplit_once('.').unwrap();
        assert!(jsonwebtoken::crypto::verify(
            message.1,
            message.0.as_bytes(),
            &decoding_key(&TestKey::rsa_a()),
            Algorithm::RS256
        )
        .unwrap());
    }

    #[test]
    fn sign_with_header_falls_back_to_the_key_algorithm_for_alg_none() {
        let header = serde_json::json!({ "alg": "none" });
        let token = TestKey::ec_p256().sign_with_header(&header, &claims());
        assert_eq!(token.split('.').count(), 3);
        assert!(!token.ends_with('.'));
        assert!(unsigned_token(&header, &claims()).ends_with('.'));
    }

    #[test]
    fn raw_segments_are_signed_as_given() {
        let token = TestKey::rsa_a().sign_segments("not-json", "%%%", Algorithm::RS256);
        assert!(token.starts_with("not-json.%%%."));
    }

    #[test]
    fn public_jwks_carry_the_kids_of_the_key_files() {
        let jwks = test_jwks();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["rsa-a", "rsa-b", "ec-p256", "ec-p384", "ed25519"]);
        assert_eq!(TestKey::ed25519().jwks()["keys"][0]["kid"], "ed25519");
    }

    #[test]
    fn every_fixture_loads_and_gets_absolute_times() {
        assert_eq!(claims_fixture_names().len(), 8);
        for name in claims_fixture_names() {
            let c = claims_fixture_at(name, 1_000_000);
            assert_eq!(c["iat"], 1_000_000, "{name}");
            assert_eq!(c["exp"], 1_003_600, "{name}");
            assert!(c["iss"].is_string(), "{name}");
        }
        assert_eq!(claims_fixture("entra-v2-user.json")["ver"], "2.0");
    }

    #[test]
    fn fill_times_only_fills_what_is_absent() {
        let c = fill_times(serde_json::json!({ "exp": 5 }), 100, 60);
        assert_eq!(c, serde_json::json!({ "exp": 5, "iat": 100, "nbf": 100 }));
        let c = fill_times(serde_json::json!({}), 100, 60);
        assert_eq!(c["exp"], 160);
    }

    #[test]
    fn the_token_command_mints_from_a_key_file_with_its_stem_as_kid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/ec-p384.pem");
        let token = mint_token(path, r#"{"sub":"bob"}"#, None, None, 60, now_unix()).unwrap();
        let header = decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("ec-p384"));
        assert_eq!(header.alg, Algorithm::ES384);
        let c = verify(&token, &TestKey::ec_p384(), Algorithm::ES384);
        assert_eq!(c["exp"].as_u64().unwrap(), c["iat"].as_u64().unwrap() + 60);
    }

    #[test]
    fn the_token_command_takes_kid_alg_and_fixtures() {
        let token = mint_token(
            "rsa-a",
            "fixture:okta-access",
            Some("PS384"),
            Some("other"),
            60,
            1000,
        )
        .unwrap();
        let header = decode_header(&token).unwrap();
        assert_eq!(
            (header.kid.as_deref(), header.alg),
            (Some("other"), Algorithm::PS384)
        );
        assert!(mint_token("rsa-a", "fixture:nope", None, None, 60, 1000).is_err());
        assert!(mint_token("rsa-a", "[1]", None, None, 60, 1000).is_err());
        assert!(mint_token("ec-p256", "{}", Some("RS256"), None, 60, 1000).is_err());
    }
}
