//! The trace, natively: one behaviour per test.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{json, Value};

use crate::gate::{Gate, RequestHead, Step, Verdict};
use crate::testing::*;

fn explaining(mut config: Value) -> Gate {
    config["explain"] = json!(true);
    let policy = crate::config::compile(config.to_string().as_bytes(), &envoy_backend()).unwrap();
    Gate::new(policy, envoy_backend())
}

fn decide(gate: &Gate, method: &str, path: &str, headers: &[(&str, &str)]) -> Verdict {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |name: &str| headers.get(name).map(|v| Cow::Borrowed(v.as_str()));
    let names = |wanted: &dyn Fn(&str) -> bool| headers.keys().any(|name| wanted(name));
    let step = gate.decide(
        &RequestHead {
            method,
            path,
            host: "ml.example.com",
            header: &lookup,
            any_header_name: &names,
        },
        NOW,
        false,
    );
    match step {
        Step::Done(verdict) => verdict,
        other => panic!("unexpected {other:?}"),
    }
}

/// The trace of a `POST /score` with this token, parsed.
fn score(token: &str) -> Value {
    let gate = explaining(entra_config());
    let auth = format!("Bearer {token}");
    let verdict = decide(
        &gate,
        "POST",
        "/score",
        &[
            ("authorization", &auth),
            ("azureml-model-deployment", "blue"),
        ],
    );
    trace(&gate, &verdict)
}

/// The trace the filter would log, expanded against the gate's policy, parsed.
fn trace(gate: &Gate, verdict: &Verdict) -> Value {
    let line = gate.explain(verdict).expect("a trace");
    let json = super::render(&gate.policy, &line).unwrap_or_else(|e| panic!("{e}: {line}"));
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn check<'t>(trace: &'t Value, name: &str) -> &'t Value {
    trace["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {trace}"))
}

#[test]
fn a_policy_without_explain_records_no_trace() {
    let policy =
        crate::config::compile(entra_config().to_string().as_bytes(), &envoy_backend()).unwrap();
    let gate = Gate::new(policy, envoy_backend());
    let auth = format!("Bearer {}", good_token());
    let verdict = decide(&gate, "POST", "/score", &[("authorization", &auth)]);
    assert!(verdict.trace.is_none());
    assert_eq!(gate.explain(&verdict), None);
}

#[test]
fn explain_must_be_a_boolean() {
    let mut config = entra_config();
    config["explain"] = json!("yes");
    let error = crate::config::compile(config.to_string().as_bytes(), &envoy_backend())
        .expect_err("a string is refused");
    assert_eq!(error.path, "explain", "{error}");
}

#[test]
fn a_route_that_did_not_match_says_which_part_missed() {
    let gate = explaining(entra_config());
    let verdict = decide(&gate, "GET", "/score", &[]);
    let trace = trace(&gate, &verdict);
    let routes = trace["routes"].as_array().unwrap();
    assert_eq!(routes[0], json!({"route": "health", "match": "path"}));
    assert_eq!(routes[1], json!({"route": "score", "match": "method"}));
    assert_eq!(routes[2], json!({"route": "infer", "match": "path"}));
    assert_eq!(trace["unmatched"], "deny");
    assert_eq!(trace["decision"]["reason"], "no_matching_route");
    assert_eq!(trace["decision"]["status"], 403);
}

#[test]
fn routes_after_the_matching_one_are_not_tried() {
    let gate = explaining(entra_config());
    let verdict = decide(&gate, "GET", "/healthz", &[]);
    let trace = trace(&gate, &verdict);
    assert_eq!(
        trace["routes"],
        json!([{"route": "health", "match": "matched"}])
    );
    assert_eq!(trace["anonymous"], true);
    assert_eq!(trace["decision"]["decision"], "passed");
    assert_eq!(trace["decision"]["forwarded"], true);
}

#[test]
fn a_header_condition_that_missed_is_named_by_its_index() {
    let mut config = entra_config();
    config["routes"][0]["match"]["headers"] =
        json!([{"name": "x-a", "present": true}, {"name": "x-b", "exact": "1"}]);
    let gate = explaining(config);
    let verdict = decide(&gate, "GET", "/healthz", &[("x-a", "yes"), ("x-b", "2")]);
    let trace = trace(&gate, &verdict);
    assert_eq!(trace["routes"][0]["match"], "headers[1]");
}

#[test]
fn the_logged_line_never_holds_the_token() {
    let gate = explaining(entra_config());
    let token = good_token();
    let auth = format!("Bearer {token}");
    let verdict = decide(&gate, "POST", "/score", &[("authorization", &auth)]);
    let line = gate.explain(&verdict).unwrap();
    for part in token.split('.') {
        assert!(!line.contains(part), "a token segment in {line}");
    }
}

#[test]
fn the_token_source_and_fingerprint_are_shown_but_never_the_token() {
    let token = good_token();
    let trace = score(&token);
    let text = trace.to_string();
    for part in token.split('.') {
        assert!(!text.contains(part), "a token segment in {text}");
    }
    assert_eq!(trace["token"]["found"], true);
    assert_eq!(trace["token"]["header"], "authorization");
    assert_eq!(trace["token"]["scheme"], "Bearer");
    assert_eq!(
        trace["token"]["sha256"],
        crate::audit::token_fingerprint(&token)
    );
}

#[test]
fn a_token_in_the_query_string_is_not_in_the_traced_path() {
    let mut config = entra_config();
    config["providers"][0]["token_from"] =
        json!([{"header": "authorization", "scheme": "Bearer"}, {"query": "access_token"}]);
    let gate = explaining(config);
    let token = good_token();
    let path = format!("/score?access_token={token}");
    let verdict = decide(&gate, "POST", &path, &[]);
    let trace = trace(&gate, &verdict);
    assert_eq!(trace["request"]["path"], "/score");
    assert_eq!(trace["token"]["query"], "access_token");
    assert!(!trace.to_string().contains(&token));
}

#[test]
fn a_missing_token_is_shown() {
    let gate = explaining(entra_config());
    let verdict = decide(&gate, "POST", "/score", &[]);
    let trace = trace(&gate, &verdict);
    assert_eq!(trace["token"], json!({"found": false}));
    assert_eq!(trace["decision"]["reason"], "missing_token");
    assert_eq!(trace["decision"]["status"], 401);
}

#[test]
fn a_verified_token_shows_every_check_passed_with_its_values() {
    let trace = score(&good_token());
    assert_eq!(trace["provider"], "entra");
    assert_eq!(trace["cache"], "miss");
    let checks = trace["checks"].as_array().unwrap();
    assert!(
        checks.iter().all(|c| c["result"] == "ok"),
        "{}",
        trace["checks"]
    );
    assert_eq!(check(&trace, "alg")["value"], "RS256");
    assert_eq!(
        check(&trace, "audience")["accepted"],
        json!(["api://ml-scoring"])
    );
    assert_eq!(check(&trace, "tenant")["value"], TENANT);
    assert_eq!(check(&trace, "exp")["now"], NOW);
    assert_eq!(check(&trace, "exp")["skew"], 60);
    assert_eq!(check(&trace, "signature")["backend"], "host");
}

#[test]
fn an_expired_token_fails_the_exp_check_and_later_checks_are_not_reached() {
    let trace = score(&expired_token());
    assert_eq!(check(&trace, "alg")["result"], "ok");
    assert_eq!(check(&trace, "issuer")["result"], "ok");
    assert_eq!(check(&trace, "exp")["result"], "token_expired");
    assert!(check(&trace, "exp")["value"].as_i64().unwrap() < NOW);
    assert_eq!(check(&trace, "audience")["result"], "not_reached");
    assert_eq!(check(&trace, "signature")["result"], "not_reached");
    assert_eq!(trace["decision"]["reason"], "token_expired");
    assert!(trace.get("identity").is_none());
}

#[test]
fn a_wrong_audience_shows_the_audience_compared() {
    let trace = score(&wrong_audience_token());
    let audience = check(&trace, "audience");
    assert_eq!(audience["result"], "audience_mismatch");
    assert_eq!(audience["accepted"], json!(["api://ml-scoring"]));
    assert_ne!(audience["value"], json!(["api://ml-scoring"]));
}

#[test]
fn a_bad_signature_is_the_failing_check_with_its_kid() {
    let trace = score(&tampered_token());
    assert_eq!(check(&trace, "audience")["result"], "ok");
    assert_eq!(check(&trace, "signature")["result"], "bad_signature");
    assert!(check(&trace, "kid")["value"].is_string());
}

#[test]
fn an_unknown_issuer_names_the_issuer_and_no_provider() {
    let trace = score(&unknown_issuer_token());
    assert!(trace["issuer"].is_string(), "{trace}");
    assert_eq!(trace["provider_refused"], "unknown_issuer");
    assert!(trace.get("provider").is_none());
    assert!(trace.get("checks").is_none());
}

#[test]
fn the_identity_shows_group_names_with_the_ids_they_were_mapped_from() {
    let trace = score(&good_token());
    let identity = &trace["identity"];
    assert!(identity["principal"].is_string());
    assert_eq!(identity["tenant"], TENANT);
    assert_eq!(identity["caller"], "user");
    assert!(
        identity["groups"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "ml-scientists", "id": ML_SCIENTISTS})),
        "{identity}"
    );
}

#[test]
fn the_deciding_rule_is_marked_and_each_condition_has_its_result() {
    let trace = score(&good_token());
    let rules = trace["rules"].as_array().unwrap();
    assert_eq!(rules[0]["rule"], "allow[0]");
    assert_eq!(rules[0]["matched"], true);
    assert_eq!(rules[0]["decided"], true);
    assert_eq!(
        rules[0]["conditions"],
        json!([{"groups": ["ml-scientists"], "ok": true}])
    );
    assert!(rules[1].get("decided").is_none());
    assert_eq!(trace["decision"]["rule"], "allow[0]");
    assert_eq!(
        trace["model"],
        json!({"header": "azureml-model-deployment", "value": "blue"})
    );
}

#[test]
fn a_rule_s_failing_condition_is_shown() {
    let trace = score(&no_groups_token());
    let rules = trace["rules"].as_array().unwrap();
    assert_eq!(
        rules[0]["conditions"],
        json!([{"groups": ["ml-scientists"], "ok": false}])
    );
    assert_eq!(rules[0]["matched"], false);
    assert!(rules.iter().all(|r| r.get("decided").is_none()));
    assert_eq!(trace["decision"]["reason"], "no_rule_matched");
}

#[test]
fn a_deny_rule_that_decides_shows_its_model_condition() {
    let gate = explaining(entra_config());
    let auth = format!("Bearer {}", contractor_token());
    let verdict = decide(
        &gate,
        "POST",
        "/v2/models/finance-forecast/infer",
        &[("authorization", &auth)],
    );
    let trace = trace(&gate, &verdict);
    let deny = &trace["rules"][0];
    assert_eq!(deny["rule"], "deny[0]");
    assert_eq!(deny["decided"], true);
    assert_eq!(
        deny["conditions"],
        json!([{"groups": ["contractors"], "ok": true}, {"models": ["finance-*"], "ok": true}])
    );
    assert_eq!(trace["model"]["from"], "path");
    assert_eq!(trace["decision"]["reason"], "denied_by_rule");
}

#[test]
fn a_model_from_the_body_is_traced_through_the_body_step() {
    let gate = explaining(entra_config());
    let auth = format!("Bearer {}", good_token());
    let lookup_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let headers: HashMap<String, String> = lookup_headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = |name: &str| headers.get(name).map(|v| Cow::Borrowed(v.as_str()));
    let step = gate.decide(
        &RequestHead {
            method: "POST",
            path: "/v1/chat/completions",
            host: "ml.example.com",
            header: &lookup,
            any_header_name: &|_| false,
        },
        NOW,
        false,
    );
    let Step::NeedBody { pending, .. } = step else {
        panic!("{step:?}")
    };
    let verdict = gate.decide_with_body(*pending, Some(br#"{"model":"gpt-4o"}"#));
    let trace = trace(&gate, &verdict);
    assert_eq!(trace["routes"][3]["match"], "matched");
    assert_eq!(
        trace["model"],
        json!({"json_body": "model", "value": "gpt-4o"})
    );
    assert_eq!(
        trace["rules"][0]["conditions"][1],
        json!({"models": ["gpt-4o-mini", "llama-*"], "ok": false})
    );
    assert_eq!(trace["decision"]["reason"], "model_not_allowed");
}

#[test]
fn a_dry_run_refusal_is_traced_as_would_deny_and_forwarded() {
    let mut config = entra_config();
    config["mode"] = json!("dry_run");
    let gate = explaining(config);
    let verdict = decide(&gate, "POST", "/score", &[]);
    let trace = trace(&gate, &verdict);
    assert_eq!(trace["decision"]["decision"], "would_deny");
    assert_eq!(trace["decision"]["forwarded"], true);
    assert_eq!(trace["decision"]["reason"], "missing_token");
}

#[test]
fn a_cached_identity_says_so_and_runs_no_checks() {
    let gate = explaining(entra_config());
    let auth = format!("Bearer {}", good_token());
    let headers = [("authorization", auth.as_str())];
    // A token enters the cache on its second use; the third comes from it.
    for _ in 0..2 {
        decide(&gate, "POST", "/score", &headers);
    }
    let verdict = decide(&gate, "POST", "/score", &headers);
    let trace = trace(&gate, &verdict);
    assert_eq!(trace["cache"], "hit", "{trace}");
    assert!(trace.get("checks").is_none());
    assert_eq!(trace["provider"], "entra");
    assert_eq!(trace["decision"]["decision"], "allowed");
}

#[test]
fn route_miss_agrees_with_matches_on_every_shipped_policy_route() {
    use crate::policy::RequestParts;
    let empty = |_: &str| None;
    let requests = [
        ("GET", "/healthz"),
        ("POST", "/score"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v2/models/m/infer"),
        ("GET", "/v1/models"),
        ("POST", "/v1/models/m:predict"),
        ("GET", "/nowhere"),
    ];
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/filters")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let env = |_: &str| Some("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA".to_string());
        let policy = crate::config::compile_with(&bytes, &envoy_backend(), &env).unwrap();
        for route in &policy.routes {
            for (method, p) in requests {
                let parts = RequestParts {
                    method,
                    path: p,
                    host: "ml.contoso.example",
                    header: &empty,
                };
                assert_eq!(
                    route.matcher.matches(&parts).is_some(),
                    route.matcher.miss(&parts).is_none(),
                    "{}: {} {method} {p}",
                    path.display(),
                    route.name
                );
            }
        }
    }
}

#[test]
fn a_rule_matches_exactly_when_every_traced_condition_holds() {
    let policy =
        crate::config::compile(entra_config().to_string().as_bytes(), &envoy_backend()).unwrap();
    let identities = [
        good_token(),
        contractor_token(),
        no_groups_token(),
        app_only_token(),
    ]
    .map(|token| {
        let peeked = crate::verify::dangerous::peek(&token).unwrap();
        let rules = &policy.providers[0];
        let checked = crate::verify::check_claims(peeked, &rules.rules, NOW).unwrap();
        let keys = rules.initial_keys.as_ref().unwrap();
        let verified = checked
            .verify_signature(&rules.rules, keys, &envoy_backend())
            .unwrap();
        crate::claims::identity(
            0,
            verified.claims(),
            &rules.claims,
            &rules.group_names,
            &policy.extra_claims,
        )
    });
    for route in &policy.routes {
        for rule in route.deny.iter().chain(&route.allow) {
            for identity in &identities {
                for model in [None, Some("finance-x"), Some("gpt-4o-mini"), Some("blue")] {
                    let mut all = true;
                    super::for_each_condition(&policy, rule, identity, model, &mut |_, _, ok| {
                        all &= ok
                    });
                    assert_eq!(all, rule.matches(identity, model), "{}", route.name);
                }
            }
        }
    }
}
