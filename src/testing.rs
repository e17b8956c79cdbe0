//! Test support for the core's native tests: tokens minted at test time from the repository's
//! test keys (`test-harness/keys/`), one named function per token shape (the `tokens` section,
//! as Envoy's jwt_authn tests keep `kGoodToken`, `ExpiredToken`, … in one `test_common.h`), and
//! a base configuration to vary.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const NOW: i64 = 1_800_000_000;
pub const TENANT: &str = "4b2f3c1e-8a6d-4f0e-9c3b-2a1d5e7f9a10";
pub const OTHER_TENANT: &str = "e1d2c3b4-a5f6-4e7d-8c9b-0a1f2e3d4c5b";
pub const ML_SCIENTISTS: &str = "6a1f2b3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c";
pub const CONTRACTORS: &str = "b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d6e";

/// Each asymmetric algorithm with a test key that signs it.
pub const EVERY_ASYMMETRIC_KEY: [(&str, Algorithm); 9] = [
    ("rsa-a", Algorithm::RS256),
    ("rsa-b", Algorithm::RS384),
    ("rsa-b", Algorithm::RS512),
    ("rsa-b", Algorithm::PS256),
    ("rsa-b", Algorithm::PS384),
    ("rsa-b", Algorithm::PS512),
    ("ec-p256", Algorithm::ES256),
    ("ec-p384", Algorithm::ES384),
    ("ed25519", Algorithm::EdDSA),
];

pub fn key_pem(kid: &str) -> &'static str {
    match kid {
        "rsa-a" => include_str!("../test-harness/keys/rsa-a.pem"),
        "rsa-b" => include_str!("../test-harness/keys/rsa-b.pem"),
        "ec-p256" => include_str!("../test-harness/keys/ec-p256.pem"),
        "ec-p384" => include_str!("../test-harness/keys/ec-p384.pem"),
        "ed25519" => include_str!("../test-harness/keys/ed25519.pem"),
        other => panic!("no test key {other}"),
    }
}

pub fn test_jwks() -> Value {
    serde_json::from_str(include_str!("../test-harness/keys/test-jwks.json")).unwrap()
}

fn encoding_key(kid: &str, alg: Algorithm) -> EncodingKey {
    let pem = key_pem(kid).as_bytes();
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(pem).unwrap(),
    }
}

/// Signs `claims` with the test key `kid`, naming it in the header.
pub fn sign(kid: &str, alg: Algorithm, claims: &Value) -> String {
    sign_naming(kid, kid, alg, claims)
}

/// Signs `claims` with the test key `key`, naming `kid` in the header (which need not be `key`).
fn sign_naming(kid: &str, key: &str, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &encoding_key(key, alg)).unwrap()
}

/// Signs without a `kid` in the header.
pub fn sign_without_kid(kid: &str, alg: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &encoding_key(kid, alg)).unwrap()
}

/// An Entra v2 user token's claims, valid at [`NOW`].
pub fn entra_user() -> Value {
    json!({
        "aud": "api://ml-scoring",
        "iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
        "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
        "azp": "0c9a7e55-3f7d-4b1c-a2a4-6d2e9b1f0c33",
        "groups": [ML_SCIENTISTS],
        "oid": "8f1d2c3b-4a5e-4f6d-9a8b-7c6d5e4f3a2b",
        "scp": "Scoring.Invoke Models.Read",
        "sub": "kF3n2m1l0k9j8h7g6f5e4d3c2b1a0ZyXwVuTsRqPo",
        "tid": TENANT,
        "ver": "2.0"
    })
}

// --- Tokens: one function per shape ------------------------------------------------------------
//
// Each is `entra_user()` with its difference written out, signed with `rsa-a` (RS256, published in
// the test JWKS) unless its name says otherwise.

/// `entra_user()` changed by `change`, signed as [`good_token`] is: for a test whose subject is
/// that one change.
pub fn user_token(change: impl FnOnce(&mut Value)) -> String {
    let mut claims = entra_user();
    change(&mut claims);
    sign("rsa-a", Algorithm::RS256, &claims)
}

/// A valid user token: an ml-scientist of [`TENANT`] with delegated scopes.
pub fn good_token() -> String {
    user_token(|_| {})
}

/// An hour's token that expired 61 s ago: one second past the default 60 s clock skew.
pub fn expired_token() -> String {
    user_token(|c| {
        c["iat"] = json!(NOW - 3661);
        c["nbf"] = json!(NOW - 3661);
        c["exp"] = json!(NOW - 61);
    })
}

/// Valid only from two minutes from now (`nbf`): past the default 60 s clock skew.
pub fn not_yet_valid_token() -> String {
    user_token(|c| c["nbf"] = json!(NOW + 120))
}

/// Issued two minutes from now (`iat`): past the default 60 s clock skew.
pub fn issued_in_future_token() -> String {
    user_token(|c| c["iat"] = json!(NOW + 120))
}

/// No `exp`: a token that never expires.
pub fn no_exp_token() -> String {
    user_token(|c| {
        c.as_object_mut().unwrap().remove("exp");
    })
}

/// Issued for another API.
pub fn wrong_audience_token() -> String {
    user_token(|c| c["aud"] = json!("api://other"))
}

/// Issued by an issuer no provider names.
pub fn unknown_issuer_token() -> String {
    user_token(|c| c["iss"] = json!("https://evil.example/v2.0"))
}

/// A user of another tenant calling the same (multi-tenant) app: `iss` and `tid` both name
/// [`OTHER_TENANT`].
pub fn other_tenant_token() -> String {
    user_token(|c| {
        c["iss"] = json!(format!(
            "https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
        ));
        c["tid"] = json!(OTHER_TENANT);
    })
}

/// A user in the contractors group only.
pub fn contractor_token() -> String {
    user_token(|c| c["groups"] = json!([CONTRACTORS]))
}

/// A user who is both an ml-scientist and a contractor.
pub fn contractor_scientist_token() -> String {
    user_token(|c| c["groups"] = json!([ML_SCIENTISTS, CONTRACTORS]))
}

/// A user in no group.
pub fn no_groups_token() -> String {
    user_token(|c| c["groups"] = json!([]))
}

/// Entra app-only (client credentials; here a managed identity): `idtyp: app`, an app role, no
/// `scp` and no groups; `oid` and `sub` are the service principal's, `azp` its client id.
pub fn app_only_token() -> String {
    user_token(|c| {
        let claims = c.as_object_mut().unwrap();
        claims.remove("scp");
        claims.remove("groups");
        c["idtyp"] = json!("app");
        c["roles"] = json!(["Scoring.Invoke"]);
        c["oid"] = json!("9d8c7b6a-5f4e-4d3c-b2a1-0f9e8d7c6b5a");
        c["sub"] = json!("9d8c7b6a-5f4e-4d3c-b2a1-0f9e8d7c6b5a");
        c["azp"] = json!("5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9");
    })
}

/// A user in more groups than Entra lists (over 200 in a JWT): `groups` replaced by a pointer
/// to Microsoft Graph.
pub fn groups_overage_token() -> String {
    user_token(|c| {
        c.as_object_mut().unwrap().remove("groups");
        c["_claim_names"] = json!({"groups": "src1"});
        c["_claim_sources"] = json!({"src1": {"endpoint": format!(
            "https://graph.windows.net/{TENANT}/users/8f1d2c3b-4a5e-4f6d-9a8b-7c6d5e4f3a2b/getMemberObjects"
        )}});
    })
}

/// No `kid` in the header; signed by `rsa-b`, which the test JWKS publishes.
pub fn no_kid_token() -> String {
    sign_without_kid("rsa-b", Algorithm::RS256, &entra_user())
}

/// Names a `kid` the test JWKS does not publish (signed by `rsa-a`): rotated in after the keys
/// were fetched, or made up.
pub fn unknown_kid_token() -> String {
    sign_naming("unpublished", "rsa-a", Algorithm::RS256, &entra_user())
}

/// Names `rsa-a` but is signed by `rsa-b`.
pub fn wrong_key_token() -> String {
    sign_naming("rsa-a", "rsa-b", Algorithm::RS256, &entra_user())
}

/// [`good_token`]'s header and signature around other claims: the user added to the
/// contractors group.
pub fn tampered_token() -> String {
    let good = good_token();
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut claims = entra_user();
    claims["groups"] = json!([ML_SCIENTISTS, CONTRACTORS]);
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        claims.to_string(),
    );
    parts[1] = &payload;
    parts.join(".")
}

/// HS256 keyed with `rsa-a`'s PEM text: the algorithm-confusion attack (with the published public
/// key in the wild) on a verifier that lets the token choose the algorithm.
pub fn rsa_pem_as_hmac_secret_token() -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &entra_user(),
        &EncodingKey::from_secret(key_pem("rsa-a").as_bytes()),
    )
    .unwrap()
}

/// A single-tenant Entra configuration with score, infer and chat routes.
pub fn entra_config() -> Value {
    json!({
        "providers": [{
            "name": "entra",
            "issuer": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "audiences": ["api://ml-scoring"],
            "jwks": {"inline": test_jwks()},
            "group_names": {ML_SCIENTISTS: "ml-scientists", CONTRACTORS: "contractors"}
        }],
        "routes": [
            {"name": "health", "match": {"path": "/healthz"}, "auth": "anonymous"},
            {"name": "score", "match": {"path_prefix": "/score", "methods": ["POST"]},
             "model_from": {"header": "azureml-model-deployment"},
             "allow": [{"groups": ["ml-scientists"]}, {"roles": ["Scoring.Invoke"]}]},
            {"name": "infer", "match": {"path_template": "/v2/models/{model}/infer"},
             "deny": [{"groups": ["contractors"], "models": ["finance-*"]}],
             "allow": [{"groups": ["ml-scientists", "contractors"]}]},
            {"name": "chat", "match": {"path": "/v1/chat/completions"},
             "model_from": {"json_body": "model"},
             "allow": [{"groups": ["ml-scientists"], "models": ["gpt-4o-mini", "llama-*"]}]}
        ]
    })
}

/// A stand-in for Envoy's `verify_signature` (BoringSSL) in native tests, on the RustCrypto
/// crates: PKCS#1 v1.5 with RSA keys, ECDSA with a DER signature with P-256 and P-384 keys.
/// `None` (cannot judge) for any other key, as Envoy's answers with an error.
pub fn reference_host(check: &crate::crypto::HostCheck<'_>) -> Option<bool> {
    use p256::pkcs8::DecodePublicKey as _;
    use sha2::Digest as _;
    use signature::Verifier as _;
    if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(check.spki_der) {
        let signature = p256::ecdsa::Signature::from_der(check.signature).ok()?;
        return Some(key.verify(check.text, &signature).is_ok());
    }
    if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(check.spki_der) {
        let signature = p384::ecdsa::Signature::from_der(check.signature).ok()?;
        return Some(key.verify(check.text, &signature).is_ok());
    }
    let key = rsa::RsaPublicKey::from_public_key_der(check.spki_der).ok()?;
    let (scheme, digest) = match check.hash {
        "sha256" => (
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            sha2::Sha256::digest(check.text).to_vec(),
        ),
        "sha384" => (
            rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            sha2::Sha384::digest(check.text).to_vec(),
        ),
        _ => (
            rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            sha2::Sha512::digest(check.text).to_vec(),
        ),
    };
    Some(key.verify(scheme, &digest, check.signature).is_ok())
}

/// The backend Envoy gives the filter: the host for RS*, ES256 and ES384 ([`reference_host`]).
pub fn envoy_backend() -> crate::crypto::Backend {
    crate::crypto::Backend::with_host(reference_host, true)
}
