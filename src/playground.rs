//! The policy playground's entry point: mlgate's core, built for the browser with wasm-bindgen
//! (`--features playground`, `wasm32-unknown-unknown`; `make playground`), decides one request
//! and explains the decision. Nothing leaves the browser: there is no host, no network, no clock
//! of its own.
//!
//! It runs the pipeline the filter runs: the policy compiled by [`crate::config`] (its errors
//! name their field), a [`Gate`] deciding the request's head and then its body, the decision's
//! trace written as the filter logs it and expanded by [`crate::trace::render`]. What differs is
//! the host's part: signatures are checked by the RustCrypto crates (the filter in Envoy gives RS*
//! and ES* to BoringSSL), and remote key sets are not fetched.
//!
//! Claims are signed as `mlgate-harness check` signs them: RS256 with the repository's published
//! test key `rsa-b`, every provider's key set replaced by the test key set, `iat`/`nbf`/`exp`
//! added when absent. A pasted token is verified with the keys the policy holds inline, or with a
//! key set the user gives for the providers whose keys are remote.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs8::DecodePrivateKey as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use signature::{SignatureEncoding as _, Signer as _};

use crate::config::{self, ConfigError};
use crate::crypto::Backend;
use crate::gate::{Disposition, Gate, RequestHead, Step, Verdict};

/// The test key claims are signed with: the harness's `rsa-b`, public by being in the repository
/// (test-harness/keys/README.md). Its public half is in [`TEST_JWKS`].
const TEST_KEY_PEM: &str = include_str!("../test-harness/keys/rsa-b.pem");
const TEST_KEY_ID: &str = "rsa-b";
const TEST_JWKS: &str = include_str!("../test-harness/keys/test-jwks.json");

/// The realistic claim sets the harness signs (`token.fixture` in a case file), by name; their
/// times are relative to 0.
const FIXTURES: &[(&str, &str)] = &[
    (
        "entra-v1-user",
        include_str!("../test-harness/fixtures/claims/entra-v1-user.json"),
    ),
    (
        "entra-v2-user",
        include_str!("../test-harness/fixtures/claims/entra-v2-user.json"),
    ),
    (
        "entra-v2-app-managed-identity",
        include_str!("../test-harness/fixtures/claims/entra-v2-app-managed-identity.json"),
    ),
    (
        "entra-v2-guest-other-tenant",
        include_str!("../test-harness/fixtures/claims/entra-v2-guest-other-tenant.json"),
    ),
    (
        "entra-v2-user-groups-overage",
        include_str!("../test-harness/fixtures/claims/entra-v2-user-groups-overage.json"),
    ),
    (
        "google-id",
        include_str!("../test-harness/fixtures/claims/google-id.json"),
    ),
    (
        "keycloak-access",
        include_str!("../test-harness/fixtures/claims/keycloak-access.json"),
    ),
    (
        "okta-access",
        include_str!("../test-harness/fixtures/claims/okta-access.json"),
    ),
];

/// Lifetime given to signed claims without `exp`, as `check` gives it.
const SIGNED_TTL_SECONDS: i64 = 3600;

/// What the page asks: one request, and the token it carries.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Input {
    pub request: PlaygroundRequest,
    /// A token as it would arrive (never echoed back).
    #[serde(default)]
    pub token: Option<String>,
    /// Claims to sign with the test key instead.
    #[serde(default)]
    pub claims: Option<Map<String, Value>>,
    /// A key set (JWKS) for the providers whose keys the policy fetches, with a pasted token.
    #[serde(default)]
    pub keys: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PlaygroundRequest {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    #[serde(default = "default_host")]
    pub host: String,
    /// In order; a name given twice is a header sent twice.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: Option<String>,
}

fn default_method() -> String {
    "GET".into()
}

fn default_host() -> String {
    "ml.contoso.example".into()
}

/// Decides `input` (JSON, [`Input`]) under `policy` (the policy's JSON text) at `now` (Unix
/// seconds) and returns JSON: `{"ok": true, "decision": …, "trace": …, "notes": […]}`, or
/// `{"ok": false, "error": {"field", "message"}}` when the policy is refused (the field named as
/// the filter names it when Envoy loads the policy) or the input is not understood.
pub fn evaluate(policy: &str, input: &str, now: i64) -> String {
    let result = match run(policy, input, now) {
        Ok(value) => value,
        Err(error) => {
            json!({"ok": false, "error": {"field": error.path, "message": error.message}})
        }
    };
    result.to_string()
}

/// The claims a case file's token stands for (`fixture` and `claims` as in `filters/README.md`,
/// times like `"now-60"` resolved at `now`), for the page to show and edit before signing.
pub fn case_claims(fixture: Option<&str>, overrides: &str, now: i64) -> String {
    let result = build_case_claims(fixture, overrides, now).map_or_else(
        |error| json!({"ok": false, "error": {"field": error.path, "message": error.message}}),
        |claims| json!({"ok": true, "claims": claims}),
    );
    result.to_string()
}

/// The fixture names [`case_claims`] knows.
pub fn fixture_names() -> Vec<&'static str> {
    FIXTURES.iter().map(|(name, _)| *name).collect()
}

fn input_error(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

fn run(policy_text: &str, input: &str, now: i64) -> Result<Value, ConfigError> {
    let input: Input = serde_json::from_str(input)
        .map_err(|e| input_error("(input)", format!("the playground's request: {e}")))?;
    let backend = Backend::RUST;
    let no_environment = |_: &str| None;
    // The policy as the filter would load it, so that a refusal names the field as Envoy's log
    // would; then with the trace asked for, and the playground's keys.
    config::compile_with(policy_text.as_bytes(), &backend, &no_environment)?;
    let mut policy: Value = serde_json::from_str(policy_text)
        .map_err(|e| input_error("(root)", format!("not JSON: {e}")))?;
    let mut notes = Vec::new();
    let token = match (&input.token, &input.claims) {
        (Some(_), Some(_)) => {
            return Err(input_error("(input)", "give a token or claims, not both"));
        }
        (None, Some(claims)) => {
            trust_test_keys(&mut policy);
            notes.push(format!(
                "claims signed in the browser with the test key {TEST_KEY_ID:?} (RS256); every provider's key set was replaced by the test keys, as `mlgate-harness check` does (iat/nbf/exp added when absent)"
            ));
            Some(sign(claims.clone(), now)?)
        }
        (Some(token), None) => {
            if let Some(keys) = &input.keys {
                let replaced = use_keys_for_remote_sets(&mut policy, keys);
                if replaced > 0 {
                    notes.push(format!(
                        "the key set given was used for {replaced} provider(s) whose keys the policy fetches"
                    ));
                }
            } else if has_remote_keys(&policy) {
                notes.push("the policy fetches some providers' keys, which the playground does not do: give their key set (JWKS) to verify such a provider's tokens".into());
            }
            Some(token.trim().to_string())
        }
        (None, None) => None,
    };
    if let Some(object) = policy.as_object_mut() {
        object.insert("explain".into(), Value::Bool(true));
    }
    let compiled = config::compile_with(policy.to_string().as_bytes(), &backend, &no_environment)?;
    let gate = Gate::new(compiled, backend);
    let request = &input.request;
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .filter(|(name, _)| !name.is_empty())
        .collect();
    if let Some(token) = &token {
        if headers.iter().any(|(name, _)| name == "authorization") {
            notes.push("an authorization header was given: the token was not added".into());
        } else {
            headers.push(("authorization".into(), format!("Bearer {token}")));
        }
    }
    if request.body.is_some() && !headers.iter().any(|(name, _)| name == "content-type") {
        headers.push(("content-type".into(), "application/json".into()));
    }
    let verdict = decide(&gate, request, &headers, now);
    let Some(line) = gate.explain(&verdict) else {
        return Err(input_error("(trace)", "the decision has no trace"));
    };
    let trace = crate::trace::render(&gate.policy, &line)
        .map_err(|e| input_error("(trace)", e))
        .and_then(|text| {
            serde_json::from_str::<Value>(&text).map_err(|e| input_error("(trace)", e.to_string()))
        })?;
    if verdict.listing.is_some() {
        notes.push("the response is a model listing: the filter would show this caller only the models it may call".into());
    }
    Ok(json!({
        "ok": true,
        "decision": describe(&verdict, &gate),
        "trace": trace,
        "notes": notes,
    }))
}

/// The head, then the body when the route's model is in it, as the filter hands them to the
/// gate: a header's name in any case, a header sent twice read as its values joined by `,`.
fn decide(
    gate: &Gate,
    request: &PlaygroundRequest,
    headers: &[(String, String)],
    now: i64,
) -> Verdict {
    let lookup = |name: &str| -> Option<Cow<'_, str>> {
        let mut values = headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        let first = values.next()?;
        let mut joined = Cow::Borrowed(first.as_str());
        for value in values {
            let text = joined.to_mut();
            text.push(',');
            text.push_str(value);
        }
        Some(joined)
    };
    let names = |wanted: &dyn Fn(&str) -> bool| headers.iter().any(|(name, _)| wanted(name));
    let head = RequestHead {
        method: &request.method,
        path: &request.path,
        host: &request.host,
        header: &lookup,
        any_header_name: &names,
    };
    // The playground cannot wait for keys: a provider without them refuses.
    match gate.decide(&head, now, false) {
        Step::Done(verdict) => verdict,
        Step::NeedBody { pending, .. } => {
            let body = request.body.as_deref().unwrap_or("").as_bytes();
            let body = (body.len() <= gate.max_body_bytes()).then_some(body);
            gate.decide_with_body(*pending, body)
        }
        Step::NeedKeys { .. } => unreachable_keys(gate),
    }
}

/// [`Gate::decide`] without `may_wait` never asks for keys; should it, the request is refused
/// as when keys are missing, never let through.
fn unreachable_keys(gate: &Gate) -> Verdict {
    let reply = crate::decision::local_reply(
        crate::decision::Reason::KeysUnavailable,
        &gate.policy.realm,
        None,
        None,
    );
    Verdict {
        action: Disposition::Reply(reply),
        audit: crate::audit::Audit::new(crate::audit::Decision::Denied),
        listing: None,
        trace: None,
    }
}

/// What the filter does with the request: forward it with these headers, or answer it.
fn describe(verdict: &Verdict, gate: &Gate) -> Value {
    let audit = &verdict.audit;
    let rule = audit.rule.map(|rule| {
        let mut text = String::new();
        rule.write(&mut text);
        text
    });
    match &verdict.action {
        Disposition::Forward(headers) => {
            let forward = &gate.policy.forward;
            let added: Vec<Value> = headers
                .iter()
                .map(|(name, value)| json!([name, value]))
                .collect();
            json!({
                "forwarded": true,
                "status": 200,
                "reason": audit.reason,
                "rule": rule,
                "route": audit.route.as_deref(),
                "model": audit.model,
                "dry_run": gate.policy.mode == crate::policy::Mode::DryRun,
                "headers_added": added,
                "headers_removed": {
                    "prefix": forward.prefix,
                    "authorization": forward.strip_authorization,
                },
            })
        }
        Disposition::Reply(reply) => {
            let headers: Vec<Value> = reply
                .headers
                .iter()
                .map(|(name, value)| json!([name, value]))
                .collect();
            json!({
                "forwarded": false,
                "status": reply.status,
                "reason": audit.reason,
                "rule": rule,
                "route": audit.route.as_deref(),
                "model": audit.model,
                "headers": headers,
                "body": reply.body,
            })
        }
    }
}

/// Every provider's key set becomes the test key set, inline (as `check` rewrites a policy).
fn trust_test_keys(policy: &mut Value) {
    let Ok(test_keys) = serde_json::from_str::<Value>(TEST_JWKS) else {
        return;
    };
    for jwks in key_sets(policy) {
        if ["inline", "uri", "discovery"]
            .iter()
            .any(|k| jwks.contains_key(*k))
        {
            jwks.clear();
            jwks.insert("inline".into(), test_keys.clone());
        }
    }
}

/// The given key set replaces every key set the policy fetches; returns how many it replaced.
fn use_keys_for_remote_sets(policy: &mut Value, keys: &Value) -> usize {
    let mut replaced = 0;
    for jwks in key_sets(policy) {
        if jwks.contains_key("uri") || jwks.contains_key("discovery") {
            jwks.clear();
            jwks.insert("inline".into(), keys.clone());
            replaced += 1;
        }
    }
    replaced
}

fn has_remote_keys(policy: &Value) -> bool {
    policy["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["jwks"].get("uri").is_some() || p["jwks"].get("discovery").is_some())
}

fn key_sets(policy: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    policy
        .get_mut("providers")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|provider| provider.get_mut("jwks").and_then(Value::as_object_mut))
}

/// `header.payload.signature`, RS256 with the test key.
fn sign(mut claims: Map<String, Value>, now: i64) -> Result<String, ConfigError> {
    for (name, value) in [
        ("iat", now),
        ("nbf", now),
        ("exp", now.saturating_add(SIGNED_TTL_SECONDS)),
    ] {
        claims.entry(name).or_insert(Value::from(value));
    }
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": TEST_KEY_ID});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
    );
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(TEST_KEY_PEM)
        .map_err(|e| input_error("(claims)", format!("the test key: {e}")))?;
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
    let signature = signer
        .try_sign(signing_input.as_bytes())
        .map_err(|e| input_error("(claims)", format!("signing: {e}")))?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

fn build_case_claims(
    fixture: Option<&str>,
    overrides: &str,
    now: i64,
) -> Result<Map<String, Value>, ConfigError> {
    let mut claims = match fixture {
        None | Some("") => Map::new(),
        Some(name) => {
            let text = FIXTURES
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, text)| *text)
                .ok_or_else(|| {
                    input_error(
                        "token.fixture",
                        format!("unknown fixture {name:?} (known: {:?})", fixture_names()),
                    )
                })?;
            let mut claims: Map<String, Value> = serde_json::from_str(text)
                .map_err(|e| input_error("token.fixture", e.to_string()))?;
            for field in ["iat", "nbf", "exp", "auth_time"] {
                if let Some(offset) = claims.get(field).and_then(Value::as_i64) {
                    claims.insert(field.into(), Value::from(now.saturating_add(offset)));
                }
            }
            claims
        }
    };
    let overrides: Option<Map<String, Value>> = serde_json::from_str(overrides)
        .map_err(|e| input_error("token.claims", format!("not a JSON object: {e}")))?;
    for (name, value) in overrides.into_iter().flatten() {
        if value.is_null() {
            claims.remove(&name);
        } else {
            claims.insert(name, resolve_time(value, now));
        }
    }
    Ok(claims)
}

/// `"now"`, `"now+N"`, `"now-N"` → Unix seconds; anything else is kept (as `check` reads it).
fn resolve_time(value: Value, now: i64) -> Value {
    let Some(rest) = value.as_str().and_then(|text| text.strip_prefix("now")) else {
        return value;
    };
    let offset = if rest.is_empty() {
        Some(0)
    } else if let Some(n) = rest.strip_prefix('+') {
        n.parse::<i64>().ok()
    } else {
        rest.strip_prefix('-')
            .and_then(|n| n.parse::<i64>().ok())
            .map(|n| -n)
    };
    offset.map_or(value, |offset| Value::from(now.saturating_add(offset)))
}

/// The page's calls, as JavaScript sees them (`target/playground/pkg/mlgate.js`).
#[cfg(target_arch = "wasm32")]
mod bindings {
    use wasm_bindgen::prelude::wasm_bindgen;

    /// Whole seconds of the page's clock (JavaScript numbers are floats).
    fn seconds(now: f64) -> i64 {
        if now.is_finite() {
            now as i64
        } else {
            0
        }
    }

    #[wasm_bindgen]
    pub fn evaluate(policy: &str, input: &str, now: f64) -> String {
        super::evaluate(policy, input, seconds(now))
    }

    #[wasm_bindgen]
    pub fn case_claims(fixture: Option<String>, overrides: &str, now: f64) -> String {
        super::case_claims(fixture.as_deref(), overrides, seconds(now))
    }

    #[wasm_bindgen]
    pub fn fixture_names() -> Vec<String> {
        super::fixture_names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests;
