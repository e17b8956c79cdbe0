//! Through the real mlgate.wasm: token sources, algorithms, registered claims, issuers, and the
//! 401 responses each failure produces.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use mlgate_harness::mint::{self, TestKey};
use serde_json::json;

#[test]
fn valid_rs256_token_is_forwarded_with_identity() {
    let h = harness(&entra_config());
    let out = score(&h, &user_token(&h, |_| {}));
    assert!(out.is_forwarded(), "{out}");
    assert_eq!(out.forwarded_header("x-mlgate-principal"), Some(ALICE));
    assert_eq!(out.forwarded_header("x-mlgate-tenant"), Some(TENANT));
    assert_eq!(
        out.forwarded_header("x-mlgate-groups"),
        Some("ml-scientists")
    );
    assert_eq!(out.forwarded_header("x-mlgate-route"), Some("score"));
}

#[test]
fn every_algorithm_verifies_through_the_wasm() {
    let mut config = entra_config();
    config["providers"][0]["algorithms"] =
        json!(["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]);
    let h = harness(&config);
    let cases = [
        (TestKey::rsa_a(), Algorithm::RS256),
        (TestKey::rsa_b(), Algorithm::RS384),
        (TestKey::rsa_b(), Algorithm::RS512),
        (TestKey::rsa_b(), Algorithm::PS256),
        (TestKey::rsa_b(), Algorithm::PS384),
        (TestKey::rsa_b(), Algorithm::PS512),
        (TestKey::ec_p256(), Algorithm::ES256),
        (TestKey::ec_p384(), Algorithm::ES384),
        (TestKey::ed25519(), Algorithm::EdDSA),
    ];
    for (key, alg) in cases {
        let token = key.sign(&user_claims(&h), alg);
        assert_eq!(verdict(&score(&h, &token)), "forwarded", "{alg:?}");
    }
}

#[test]
fn hs256_provider_with_shared_secret_verifies() {
    let secret = "0123456789abcdef0123456789abcdef-mlgate";
    let mut config = entra_config();
    let provider = config["providers"][0].as_object_mut().unwrap();
    provider.remove("jwks");
    provider.insert("algorithms".into(), json!(["HS256"]));
    provider.insert("shared_secret".into(), json!(base64_url(secret.as_bytes())));
    let h = harness(&config);
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &user_claims(&h),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_eq!(verdict(&score(&h, &token)), "forwarded");
    let wrong = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &user_claims(&h),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret of enough length 1234567"),
    )
    .unwrap();
    assert_eq!(verdict(&score(&h, &wrong)), "bad_signature");
}

/// The raw HMAC secret of the environment tests, and the provider that reads it from the VM's
/// environment variable `MLGATE_HS_SECRET` (base64url, as an inline secret is written).
const ENV_SECRET: &[u8] = b"env-secret:0123456789abcdef0123456789abcdef";

fn env_secret_harness() -> mlgate_harness::host::Harness {
    let mut config = entra_config();
    let provider = config["providers"][0].as_object_mut().unwrap();
    provider.remove("jwks");
    provider.insert("algorithms".into(), json!(["HS256"]));
    provider.insert("shared_secret".into(), json!({"env": "MLGATE_HS_SECRET"}));
    mlgate_harness::host::Harness::builder()
        .env("MLGATE_HS_SECRET", &base64_url(ENV_SECRET))
        .load()
        .unwrap()
        .configure(config)
        .expect("configuration accepted")
}

fn hs256(h: &mlgate_harness::host::Harness, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &user_claims(h),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[test]
fn hs256_secret_from_the_vm_environment_verifies() {
    let h = env_secret_harness();
    assert_eq!(verdict(&score(&h, &hs256(&h, ENV_SECRET))), "forwarded");
}

#[test]
fn hs256_token_with_another_secret_than_the_environment_s_is_refused() {
    let h = env_secret_harness();
    let wrong = hs256(&h, b"another secret of enough length 1234567");
    assert_eq!(verdict(&score(&h, &wrong)), "bad_signature");
}

#[test]
fn secret_from_the_environment_appears_in_no_log_line() {
    let h = env_secret_harness();
    score(&h, &hs256(&h, ENV_SECRET));
    score(&h, &hs256(&h, b"another secret of enough length 1234567"));
    let logs = h.log_text();
    assert!(logs.contains("mlgate: configured"), "{logs}");
    let encoded = base64_url(ENV_SECRET);
    let raw = String::from_utf8_lossy(ENV_SECRET);
    for line in h.logs() {
        assert!(!line.message.contains(&encoded), "{}", line.message);
        assert!(!line.message.contains(&*raw), "{}", line.message);
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn algorithm_outside_provider_list_is_unsupported_algorithm() {
    let h = harness(&entra_config());
    let token = TestKey::ec_p256().sign(&user_claims(&h), Algorithm::ES256);
    assert_eq!(verdict(&score(&h, &token)), "unsupported_algorithm");
}

#[test]
fn missing_token_gets_bare_bearer_challenge() {
    let h = harness(&entra_config());
    let out = h.request().method("POST").path("/score").send().unwrap();
    assert_eq!(out.status(), Some(401));
    assert_eq!(
        out.response_header("www-authenticate"),
        Some("Bearer realm=\"mlgate\"")
    );
    assert_eq!(out.reason().as_deref(), Some("missing_token"));
    assert_eq!(out.body_json()["route"], "score");
}

#[test]
fn invalid_token_gets_rfc6750_invalid_token_challenge() {
    let h = harness(&entra_config());
    let out = score(&h, &user_token(&h, |c| c["exp"] = json!(1)));
    assert_eq!(out.status(), Some(401));
    assert_eq!(
        out.response_header("www-authenticate"),
        Some(
            "Bearer realm=\"mlgate\", error=\"invalid_token\", error_description=\"token_expired\""
        )
    );
    assert_eq!(
        out.response_header("content-type"),
        Some("application/json")
    );
    assert_eq!(out.body_json()["error"], "unauthorized");
}

#[test]
fn each_token_reason_code_is_reachable() {
    let h = harness(&entra_config());
    let now = h.now_unix() as i64;
    let cases: Vec<(&str, String)> = vec![
        (
            "token_expired",
            user_token(&h, |c| c["exp"] = json!(now - 120)),
        ),
        (
            "token_not_yet_valid",
            user_token(&h, |c| c["nbf"] = json!(now + 600)),
        ),
        (
            "token_issued_in_future",
            user_token(&h, |c| c["iat"] = json!(now + 600)),
        ),
        (
            "missing_expiry",
            user_token(&h, |c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "audience_mismatch",
            user_token(&h, |c| c["aud"] = json!("api://other")),
        ),
        (
            "unknown_issuer",
            user_token(&h, |c| c["iss"] = json!("https://evil.example/")),
        ),
        ("malformed_token", "not-a-jwt".to_string()),
        (
            "malformed_token",
            user_token(&h, |c| c["exp"] = json!("tomorrow")),
        ),
        ("unknown_key", {
            let header = json!({"alg": "RS256", "kid": "no-such-key"});
            TestKey::rsa_a().sign_with_header(&header, &user_claims(&h))
        }),
        ("bad_signature", {
            let header = json!({"alg": "RS256", "kid": "rsa-a"});
            TestKey::rsa_b().sign_with_header(&header, &user_claims(&h))
        }),
        (
            "unsupported_algorithm",
            mint::unsigned_token(&json!({"alg": "none"}), &user_claims(&h)),
        ),
        ("unsupported_critical_header", {
            let header = json!({"alg": "RS256", "kid": "rsa-a", "crit": ["exp"], "exp": 1});
            TestKey::rsa_a().sign_with_header(&header, &user_claims(&h))
        }),
    ];
    for (reason, token) in cases {
        let out = score(&h, &token);
        assert_eq!(out.status(), Some(401), "{reason}: {out}");
        assert_eq!(out.reason().as_deref(), Some(reason), "{out}");
    }
}

#[test]
fn lifetime_limit_refuses_long_lived_tokens() {
    let mut config = entra_config();
    config["providers"][0]["max_lifetime_seconds"] = json!(900);
    let h = harness(&config);
    assert_eq!(
        verdict(&score(&h, &user_token(&h, |_| {}))),
        "token_lifetime_too_long"
    );
}

#[test]
fn clock_skew_is_configurable() {
    let mut config = entra_config();
    config["providers"][0]["clock_skew_seconds"] = json!(0);
    let h = harness(&config);
    let now = h.now_unix() as i64;
    assert_eq!(
        verdict(&score(&h, &user_token(&h, |c| c["exp"] = json!(now - 1)))),
        "token_expired"
    );
    let h60 = harness(&entra_config());
    let now = h60.now_unix() as i64;
    assert_eq!(
        verdict(&score(
            &h60,
            &user_token(&h60, |c| c["exp"] = json!(now - 1))
        )),
        "forwarded"
    );
}

#[test]
fn token_expires_as_the_clock_moves() {
    let h = harness(&entra_config());
    let token = user_token(&h, |_| {});
    assert_eq!(verdict(&score(&h, &token)), "forwarded");
    h.advance(std::time::Duration::from_secs(3600 + 61));
    assert_eq!(verdict(&score(&h, &token)), "token_expired");
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let h = harness(&entra_config());
    let token = user_token(&h, |_| {});
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let out = h
            .request()
            .method("POST")
            .path("/score")
            .header("authorization", &format!("{scheme} {token}"))
            .send()
            .unwrap();
        assert!(out.is_forwarded(), "{scheme}: {out}");
    }
}

#[test]
fn token_from_custom_header_query_and_cookie() {
    let mut config = entra_config();
    config["providers"][0]["token_from"] = json!([
        {"header": "x-ml-token"},
        {"query": "access_token"},
        {"cookie": "ml_session"}
    ]);
    let h = harness(&config);
    let token = user_token(&h, |_| {});
    let by_header = h
        .request()
        .method("POST")
        .path("/score")
        .header("x-ml-token", &token)
        .send()
        .unwrap();
    assert!(by_header.is_forwarded(), "{by_header}");
    let by_query = h
        .request()
        .method("POST")
        .path(&format!("/score?access_token={token}"))
        .send()
        .unwrap();
    assert!(by_query.is_forwarded(), "{by_query}");
    let by_cookie = h
        .request()
        .method("POST")
        .path("/score")
        .header("cookie", &format!("theme=dark; ml_session={token}"))
        .send()
        .unwrap();
    assert!(by_cookie.is_forwarded(), "{by_cookie}");
}

#[test]
fn bearer_header_is_ignored_when_not_configured() {
    let mut config = entra_config();
    config["providers"][0]["token_from"] = json!([{"header": "x-ml-token"}]);
    let h = harness(&config);
    assert_eq!(
        verdict(&score(&h, &user_token(&h, |_| {}))),
        "missing_token"
    );
}

#[test]
fn two_tokens_on_one_request_are_refused() {
    let mut config = entra_config();
    config["providers"][0]["token_from"] =
        json!([{"header": "authorization", "scheme": "Bearer"}, {"query": "access_token"}]);
    let h = harness(&config);
    let token = user_token(&h, |_| {});
    let out = h
        .request()
        .method("POST")
        .path(&format!("/score?access_token={token}"))
        .bearer(&token)
        .send()
        .unwrap();
    assert_eq!(out.status(), Some(401));
    assert_eq!(out.reason().as_deref(), Some("multiple_tokens"));
    assert!(out
        .response_header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_request\""));
}

#[test]
fn repeated_authorization_header_is_multiple_tokens() {
    let h = harness(&entra_config());
    let token = user_token(&h, |_| {});
    let out = h
        .request()
        .method("POST")
        .path("/score")
        .header("authorization", &mint::bearer(&token))
        .header("authorization", &mint::bearer(&token))
        .send()
        .unwrap();
    assert_eq!(out.reason().as_deref(), Some("multiple_tokens"), "{out}");
}

#[test]
fn oversized_token_is_refused_without_parsing() {
    let mut config = entra_config();
    config["max_token_bytes"] = json!(1024);
    let h = harness(&config);
    let token = user_token(&h, |c| c["padding"] = json!("x".repeat(2000)));
    assert_eq!(verdict(&score(&h, &token)), "token_too_large");
}

#[test]
fn entra_v1_issuer_and_multi_tenant_template() {
    let mut config = entra_config();
    config["providers"][0]["issuer"] = json!([
        "https://login.microsoftonline.com/{tenant}/v2.0",
        "https://sts.windows.net/{tenant}/"
    ]);
    config["providers"][0]["tenants"] = json!([TENANT, OTHER_TENANT]);
    let h = harness(&config);
    let v1 = user_token(&h, |c| {
        c["iss"] = json!(format!("https://sts.windows.net/{TENANT}/"))
    });
    assert_eq!(verdict(&score(&h, &v1)), "forwarded");
    let partner = user_token(&h, |c| {
        c["iss"] = json!(format!(
            "https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"
        ));
        c["tid"] = json!(OTHER_TENANT);
    });
    let out = score(&h, &partner);
    assert_eq!(
        out.forwarded_header("x-mlgate-tenant"),
        Some(OTHER_TENANT),
        "{out}"
    );
    let mismatched = user_token(&h, |c| c["tid"] = json!(OTHER_TENANT));
    assert_eq!(verdict(&score(&h, &mismatched)), "tenant_not_allowed");
    let unlisted = "0a0a0a0a-0000-4000-8000-000000000000";
    let stranger = user_token(&h, |c| {
        c["iss"] = json!(format!("https://login.microsoftonline.com/{unlisted}/v2.0"));
        c["tid"] = json!(unlisted);
    });
    assert_eq!(verdict(&score(&h, &stranger)), "tenant_not_allowed");
}

#[test]
fn token_without_kid_is_tried_against_keys_of_its_type() {
    let h = harness(&entra_config());
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let token = TestKey::rsa_b().sign_with_header(&header, &user_claims(&h));
    assert_eq!(verdict(&score(&h, &token)), "forwarded");
}

#[test]
fn audit_log_names_the_caller_but_never_the_token() {
    let h = harness(&entra_config());
    let token = user_token(&h, |_| {});
    let out = score(&h, &token);
    let text = h.log_text();
    assert!(text.contains("mlgate audit"), "{text}");
    assert!(text.contains(ALICE));
    assert!(!text.contains(&token));
    for part in token.split('.') {
        assert!(!text.contains(part), "a token segment leaked into the logs");
    }
    assert!(out.is_forwarded());
}
