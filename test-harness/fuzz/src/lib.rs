//! Shared setup for the fuzz targets: the configuration the harness suites use (Entra, the test
//! keys inline, score/infer/chat/health routes plus prefix, host and header routes) and a
//! request runner around `mlgate::gate::Gate`. Invariants the targets check live here too.

use mlgate::crypto::Backend;
use mlgate::gate::{Disposition, Gate, RequestHead, Step};
use serde_json::{json, Value};

/// The clock the seed tokens were minted for (`tests/properties.rs` writes the seeds).
pub const NOW: i64 = 1_800_000_000;
pub const TENANT: &str = "4b2f3c1e-8a6d-4f0e-9c3b-2a1d5e7f9a10";

pub fn config() -> Value {
    let jwks: Value =
        serde_json::from_str(include_str!("../../keys/test-jwks.json")).expect("test JWKS");
    json!({
        "providers": [{
            "name": "entra",
            "issuer": format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            "audiences": ["api://ml-scoring"],
            "algorithms": ["RS256", "PS256", "ES256", "ES384", "EdDSA"],
            "jwks": {"inline": jwks},
            "group_names": {"6a1f2b3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c": "ml-scientists",
                            "b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d6e": "contractors"},
            "token_from": [{"header": "authorization", "scheme": "Bearer"}, {"query": "access_token"}, {"cookie": "session"}]
        }, {
            "name": "partners",
            // v1 issuers only: a template that also matches the entra provider's issuer is refused
            // (a token must map to exactly one provider).
            "issuer": ["https://sts.windows.net/{tenant}/"],
            "tenants": ["e1d2c3b4-a5f6-4e7d-8c9b-0a1f2e3d4c5b"],
            "audiences": ["api://ml-scoring"],
            "jwks": {"inline": jwks}
        }],
        "routes": [
            {"name": "health", "match": {"path": "/healthz"}, "auth": "anonymous"},
            {"name": "score", "match": {"path": "/score", "methods": ["POST"]},
             "model_from": {"header": "azureml-model-deployment"},
             "allow": [{"groups": ["ml-scientists"]}, {"roles": ["Scoring.Invoke"], "caller": "app"}]},
            {"name": "infer", "match": {"path_template": "/v2/models/{model}/infer", "methods": ["POST"]},
             "deny": [{"groups": ["contractors"], "models": ["finance-*"]}],
             "allow": [{"groups": ["ml-scientists", "contractors"]}]},
            {"name": "predict", "match": {"path_template": "/v1/models/{model}:predict", "hosts": ["*.lab.contoso.example"]},
             "allow": [{"claims": {"department": ["research", "ml"]}}]},
            {"name": "chat", "match": {"path": "/v1/chat/completions", "methods": ["POST"]},
             "model_from": {"json_body": "model"},
             "allow": [{"groups": ["ml-scientists"], "models": ["gpt-4o-mini", "llama-*"]}]},
            {"name": "admin", "match": {"path_prefix": "/admin", "headers": [{"name": "x-canary", "present": false}]},
             "providers": ["entra"], "allow": [{"all_groups": ["ml-scientists", "contractors"]}]}
        ]
    })
}

pub fn gate() -> Gate {
    Gate::new(policy(), Backend::RUST)
}

/// The configuration, compiled for the Rust backend (ES384 by the portable build's `p384`).
pub fn policy() -> mlgate::policy::Policy {
    mlgate::config::compile(config().to_string().as_bytes(), &Backend::RUST)
        .expect("config compiles")
}

/// Runs one request (headers by lower-case name) and checks what the gate promises whatever
/// the input: forwarded identity headers are under the prefix and carry no control characters;
/// a request refused for its path is the only kind whose path may be ambiguous.
pub fn run(
    gate: &Gate,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, String)],
) -> Option<Vec<(String, String)>> {
    let lookup = |name: &str| {
        let mut values = headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next()?.to_string();
        Some(std::borrow::Cow::Owned(
            values.fold(first, |acc, v| acc + "," + v),
        ))
    };
    let names = |wanted: &dyn Fn(&str) -> bool| headers.iter().any(|(name, _)| wanted(name));
    let step = gate.decide(
        &RequestHead {
            method,
            path,
            host,
            header: &lookup,
            any_header_name: &names,
        },
        NOW,
        false,
    );
    let (forwarded, reason) = match step {
        Step::Done(verdict) => match verdict.action {
            Disposition::Forward(headers) => (Some(headers.to_vec()), None),
            Disposition::Reply(reply) => {
                let body: Value = serde_json::from_str(&reply.body).expect("reply body is JSON");
                (None, body["reason"].as_str().map(str::to_string))
            }
        },
        Step::NeedBody { headers, pending } => {
            let _ = gate.decide_with_body(*pending, Some(br#"{"model":"llama-3"}"#));
            (Some(headers.to_vec()), None)
        }
        Step::NeedKeys { .. } => panic!("inline keys never need fetching"),
    };
    if reason.as_deref() != Some("invalid_path") {
        let p = path.split_once('?').map_or(path, |(p, _)| p);
        assert!(p.starts_with('/'), "{path:?} reached matching");
        // No empty segment reaches matching, the bare path "//" included.
        assert!(!p.contains("//"), "{path:?} reached matching");
        assert!(
            !p.contains("/./") && !p.contains("/../"),
            "{path:?} reached matching"
        );
        assert!(
            !p.bytes()
                .any(|b| matches!(b, b'%' | b';' | b'\\' | b'#') || b <= 0x20 || b >= 0x7f),
            "{path:?} reached matching"
        );
    }
    if let Some(headers) = &forwarded {
        for (name, value) in headers {
            assert!(name.starts_with("x-mlgate-"), "{name}");
            assert!(!value.chars().any(char::is_control), "{name}: {value:?}");
        }
    }
    forwarded
}
