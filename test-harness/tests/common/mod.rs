//! Shared setup for the filter behaviour suites: an Entra-shaped configuration, tokens minted from
//! the test keys at the harness's own clock, and a harness configured with them.
#![allow(dead_code)]

use jsonwebtoken::Algorithm;
use mlgate_harness::host::{Harness, Outcome};
use mlgate_harness::mint::{self, TestKey};
use serde_json::{json, Value};

pub const TENANT: &str = "4b2f3c1e-8a6d-4f0e-9c3b-2a1d5e7f9a10";
pub const OTHER_TENANT: &str = "e1d2c3b4-a5f6-4e7d-8c9b-0a1f2e3d4c5b";
pub const ML_SCIENTISTS: &str = "6a1f2b3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c";
pub const CONTRACTORS: &str = "b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d6e";
pub const ALICE: &str = "8f1d2c3b-4a5e-4f6d-9a8b-7c6d5e4f3a2b";

pub fn entra_issuer() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/v2.0")
}

/// Single-tenant Entra, Azure ML score, KServe infer, OpenAI chat.
pub fn entra_config() -> Value {
    json!({
        "providers": [{
            "name": "entra",
            "issuer": entra_issuer(),
            "audiences": ["api://ml-scoring"],
            "jwks": {"inline": mint::test_jwks()},
            "group_names": {ML_SCIENTISTS: "ml-scientists", CONTRACTORS: "contractors"}
        }],
        "routes": [
            {"name": "health", "match": {"path": "/healthz"}, "auth": "anonymous"},
            {"name": "score", "match": {"path": "/score", "methods": ["POST"]},
             "model_from": {"header": "azureml-model-deployment"},
             "allow": [{"groups": ["ml-scientists"]}, {"roles": ["Scoring.Invoke"], "caller": "app"}]},
            {"name": "infer", "match": {"path_template": "/v2/models/{model}/infer", "methods": ["POST"]},
             "deny": [{"groups": ["contractors"], "models": ["finance-*"]}],
             "allow": [{"groups": ["ml-scientists", "contractors"]}]},
            {"name": "chat", "match": {"path": "/v1/chat/completions", "methods": ["POST"]},
             "model_from": {"json_body": "model"},
             "allow": [{"groups": ["ml-scientists"], "models": ["gpt-4o-mini", "llama-*"]}]}
        ]
    })
}

pub fn harness(config: &Value) -> Harness {
    Harness::load()
        .expect("load mlgate.wasm")
        .configure(config.clone())
        .expect("configuration accepted")
}

/// An Entra v2 user (Alice, ml-scientists) valid at the harness's clock.
pub fn user_claims(h: &Harness) -> Value {
    let now = h.now_unix() as i64;
    json!({
        "aud": "api://ml-scoring",
        "iss": entra_issuer(),
        "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
        "azp": "0c9a7e55-3f7d-4b1c-a2a4-6d2e9b1f0c33",
        "groups": [ML_SCIENTISTS],
        "oid": ALICE,
        "scp": "Scoring.Invoke Models.Read",
        "sub": "kF3n2m1l0k9j8h7g6f5e4d3c2b1a0ZyXwVuTsRqPo",
        "tid": TENANT,
        "ver": "2.0"
    })
}

/// Alice's token, after `mutate` changed her claims; RS256 with rsa-a.
pub fn user_token(h: &Harness, mutate: impl FnOnce(&mut Value)) -> String {
    let mut claims = user_claims(h);
    mutate(&mut claims);
    TestKey::rsa_a().sign(&claims, Algorithm::RS256)
}

/// POST /score as Alice with `token`.
pub fn score(h: &Harness, token: &str) -> Outcome {
    h.request()
        .method("POST")
        .path("/score")
        .host("ml.contoso.example")
        .header("authorization", &mint::bearer(token))
        .send()
        .expect("request ran")
}

/// The reason of a local reply, or "forwarded".
pub fn verdict(outcome: &Outcome) -> String {
    if outcome.is_forwarded() {
        "forwarded".into()
    } else {
        outcome
            .reason()
            .unwrap_or_else(|| format!("no reason: {outcome}"))
    }
}
