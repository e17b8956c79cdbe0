//! Through the real mlgate.wasm: what each decision leaves for the access log and the metrics —
//! the filter state `mlgate` (Envoy's `wasm.mlgate`), the local reply's details, and the tagged
//! request counters, token-cache counters and decision-latency histogram.

mod common;

use common::*;
use mlgate_harness::host::{Harness, MetricKind, Outcome};
use mlgate_harness::mint;
use serde_json::{json, Value};

/// The decision record the request left as filter state.
fn record(h: &Harness, out: &Outcome) -> Value {
    let bytes = h
        .request_property(out.context_id(), &["mlgate"])
        .unwrap_or_else(|| panic!("no filter state mlgate: {out}"));
    serde_json::from_slice(&bytes).expect("the filter state is JSON")
}

fn requests_counter(decision: &str, reason: &str, route: &str, provider: &str) -> String {
    format!(
        "decision=.={decision};.;reason=.={reason};.;route=.={route};.;provider=.={provider};.;mlgate.requests_total"
    )
}

#[test]
fn allowed_request_records_route_rule_caller_and_token_fingerprint() {
    let h = harness(&entra_config());
    let token = user_token(&h, |c| c["jti"] = json!("jti-1"));
    let out = score(&h, &token);
    assert!(out.is_forwarded(), "{out}");
    let r = record(&h, &out);
    assert_eq!(r["decision"], "allowed");
    assert_eq!(r["route"], "score");
    assert_eq!(r["rule"], "allow[0]");
    assert_eq!(r["provider"], "entra");
    assert_eq!(r["principal"], ALICE);
    assert_eq!(r["tenant"], TENANT);
    assert_eq!(r["jti"], "jti-1");
    assert_eq!(r["token_cached"], false);
    let fingerprint = r["token_sha256"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16);
    assert!(r.get("reason").is_none(), "{r}");
}

#[test]
fn audit_off_leaves_the_token_fingerprint_out() {
    let mut config = entra_config();
    config["audit"] = json!("off");
    let h = harness(&config);
    let out = score(&h, &user_token(&h, |_| {}));
    let r = record(&h, &out);
    assert_eq!(r["decision"], "allowed");
    assert!(r.get("token_sha256").is_none(), "{r}");
}

#[test]
fn filter_state_never_holds_the_token() {
    let h = harness(&entra_config());
    let token = user_token(&h, |_| {});
    let out = score(&h, &token);
    let state =
        String::from_utf8(h.request_property(out.context_id(), &["mlgate"]).unwrap()).unwrap();
    for part in token.split('.') {
        assert!(
            !state.contains(part),
            "a token segment is in the filter state"
        );
    }
}

#[test]
fn refused_request_records_reason_and_names_it_in_the_reply_details() {
    let h = harness(&entra_config());
    let token = user_token(&h, |c| c["groups"] = json!([CONTRACTORS]));
    let out = score(&h, &token);
    assert_eq!(out.status(), Some(403), "{out}");
    assert_eq!(out.details(), Some("mlgate_no_rule_matched"));
    let r = record(&h, &out);
    assert_eq!(r["decision"], "denied");
    assert_eq!(r["reason"], "no_rule_matched");
    assert_eq!(r["route"], "score");
    assert_eq!(r["principal"], ALICE);
}

#[test]
fn deny_rule_is_named_in_the_record() {
    let h = harness(&entra_config());
    let token = user_token(&h, |c| c["groups"] = json!([CONTRACTORS]));
    let out = h
        .request()
        .method("POST")
        .path("/v2/models/finance-risk/infer")
        .header("authorization", &mint::bearer(&token))
        .send()
        .unwrap();
    assert_eq!(out.details(), Some("mlgate_denied_by_rule"));
    let r = record(&h, &out);
    assert_eq!(r["rule"], "deny[0]");
    assert_eq!(r["model"], "finance-risk");
}

#[test]
fn model_refused_in_the_body_is_recorded_with_its_reason() {
    let h = harness(&entra_config());
    let out = h
        .request()
        .method("POST")
        .path("/v1/chat/completions")
        .bearer(&user_token(&h, |_| {}))
        .json(&json!({"model": "gpt-4-turbo", "messages": []}))
        .send()
        .unwrap();
    assert_eq!(out.status(), Some(403), "{out}");
    assert_eq!(out.details(), Some("mlgate_model_not_allowed"));
    let r = record(&h, &out);
    assert_eq!(r["reason"], "model_not_allowed");
    assert_eq!(r["route"], "chat");
    assert_eq!(r["model"], "gpt-4-turbo");
}

#[test]
fn expired_token_is_a_401_with_its_reason_in_details_and_a_fingerprint() {
    let h = harness(&entra_config());
    let now = h.now_unix() as i64;
    let token = user_token(&h, |c| {
        c["iat"] = json!(now - 7200);
        c["nbf"] = json!(now - 7200);
        c["exp"] = json!(now - 3600);
    });
    let out = score(&h, &token);
    assert_eq!(out.status(), Some(401), "{out}");
    assert_eq!(out.details(), Some("mlgate_token_expired"));
    let r = record(&h, &out);
    assert_eq!(r["decision"], "denied");
    assert_eq!(r["reason"], "token_expired");
    assert_eq!(r["token_sha256"].as_str().map(str::len), Some(16));
    assert!(r.get("principal").is_none(), "{r}");
}

#[test]
fn missing_token_is_recorded_without_a_fingerprint() {
    let h = harness(&entra_config());
    let out = h.request().method("POST").path("/score").send().unwrap();
    assert_eq!(out.details(), Some("mlgate_missing_token"));
    let r = record(&h, &out);
    assert_eq!(r["reason"], "missing_token");
    assert!(r.get("token_sha256").is_none(), "{r}");
    assert!(r.get("token_cached").is_none(), "{r}");
}

#[test]
fn dry_run_records_would_deny_on_the_forwarded_request() {
    let mut config = entra_config();
    config["mode"] = json!("dry_run");
    let h = harness(&config);
    let token = user_token(&h, |c| c["groups"] = json!([CONTRACTORS]));
    let out = score(&h, &token);
    assert!(out.is_forwarded(), "{out}");
    let r = record(&h, &out);
    assert_eq!(r["decision"], "would_deny");
    assert_eq!(r["reason"], "no_rule_matched");
}

#[test]
fn anonymous_route_records_passed() {
    let h = harness(&entra_config());
    let out = h.request().method("GET").path("/healthz").send().unwrap();
    assert!(out.is_forwarded(), "{out}");
    let r = record(&h, &out);
    assert_eq!(r["decision"], "passed");
    assert_eq!(r["route"], "health");
}

#[test]
fn requests_are_counted_per_decision_reason_route_and_provider() {
    let h = harness(&entra_config());
    score(&h, &user_token(&h, |_| {}));
    score(&h, &user_token(&h, |c| c["aud"] = json!("x")));
    score(&h, &user_token(&h, |c| c["aud"] = json!("x")));
    h.request().method("GET").path("/nowhere").send().unwrap();
    assert_eq!(
        h.metric(&requests_counter("allowed", "none", "score", "entra")),
        Some(1)
    );
    assert_eq!(
        h.metric(&requests_counter(
            "denied",
            "audience_mismatch",
            "score",
            "none"
        )),
        Some(2)
    );
    assert_eq!(
        h.metric(&requests_counter(
            "denied",
            "no_matching_route",
            "none",
            "none"
        )),
        Some(1)
    );
}

#[test]
fn request_counters_are_defined_only_for_combinations_seen() {
    let h = harness(&entra_config());
    score(&h, &user_token(&h, |_| {}));
    let defined: Vec<String> = h
        .metrics()
        .into_keys()
        .filter(|name| name.ends_with(";.;mlgate.requests_total"))
        .collect();
    assert_eq!(
        defined,
        [requests_counter("allowed", "none", "score", "entra")]
    );
}

#[test]
fn token_cache_counts_a_hit_for_a_token_verified_twice_before() {
    let h = harness(&entra_config());
    let token = user_token(&h, |_| {});
    // Cached on its second verification (the doorkeeper), served from the cache on the third.
    for _ in 0..3 {
        score(&h, &token);
    }
    assert_eq!(h.metric("mlgate.token_cache_misses_total"), Some(2));
    assert_eq!(h.metric("mlgate.token_cache_hits_total"), Some(1));
    let out = score(&h, &token);
    assert_eq!(record(&h, &out)["token_cached"], true);
}

#[test]
fn a_policy_without_the_decision_histogram_defines_and_records_none() {
    let mut config = entra_config();
    config["decision_duration_histogram"] = json!(false);
    let h = harness(&config);
    score(&h, &user_token(&h, |_| {}));
    let metrics = h.metrics();
    assert!(!metrics.contains_key("mlgate.decision_duration_us"));
    let allowed = requests_counter("allowed", "none", "score", "entra");
    assert_eq!(h.metric(&allowed), Some(1), "{:?}", metrics.keys());
}

#[test]
fn decision_latency_is_one_histogram_sample_per_decision() {
    let h = harness(&entra_config());
    score(&h, &user_token(&h, |_| {}));
    h.request().method("GET").path("/healthz").send().unwrap();
    let metrics = h.metrics();
    let histogram = &metrics["mlgate.decision_duration_us"];
    assert_eq!(histogram.kind, MetricKind::Histogram);
    assert_eq!(histogram.samples.len(), 2);
}
