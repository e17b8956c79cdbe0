//! End-to-end through a real Envoy running envoy/demo.yaml: mlgate's decisions in Envoy's JSON
//! access log (filter state `wasm.mlgate`, `%RESPONSE_CODE_DETAILS%` = `mlgate_<reason>`) and its
//! metrics as labelled series in `/stats/prometheus` (the `stats_tags` of envoy/demo.yaml).
//!
//! One Envoy worker (`--concurrency 1`): the token cache is per worker, and a repeated token must
//! meet the cache that saw it.

mod e2e_fixture;

use std::time::{Duration, Instant};

use e2e_fixture::{agent, bearer, send, Stack};
use mlgate_harness::idp::MintOptions;
use serde_json::{json, Value};

/// The access-log lines (JSON objects) whose `path` is `path`, waiting up to 5 s for `count`:
/// Envoy writes a line when its stream ends, to a file it flushes every 100 ms (the fixture's
/// `--file-flush-interval-msec`).
fn log_lines(stack: &Stack, path: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<Value> = stack
            .envoy
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["path"] == path)
            .collect();
        if lines.len() >= count || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The single access-log line of `path`, and its `mlgate` field parsed.
fn decision(stack: &Stack, path: &str) -> (Value, Value) {
    let lines = log_lines(stack, path, 1);
    assert_eq!(
        lines.len(),
        1,
        "access-log lines for {path}: {lines:?}\n{}",
        stack.envoy.log_tail()
    );
    let line = lines[0].clone();
    let record = line["mlgate"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| panic!("no mlgate decision in {line}"));
    (line, record)
}

fn prometheus(stack: &Stack) -> String {
    let url = format!("http://127.0.0.1:{}/stats/prometheus", stack.envoy.admin);
    agent()
        .get(&url)
        .call()
        .ok()
        .and_then(|r| r.into_body().read_to_string().ok())
        .unwrap_or_default()
}

/// The value of the Prometheus sample named `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let all = labels
            .iter()
            .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
        all.then(|| value.trim().parse().ok()).flatten()
    })
}

fn infer_body() -> Value {
    json!({"id": "e2e", "inputs": [{"name": "input-0", "shape": [1, 1], "datatype": "FP32", "data": [0.1]}]})
}

#[test]
fn access_log_names_each_decision_and_its_reason() {
    let Some(stack) = Stack::start("access-log", 1) else {
        return;
    };
    let alice = stack.token("alice");
    let bob = stack.token("bob");
    let expired = stack
        .idp
        .mint(
            "alice",
            &MintOptions {
                expires_in: Some(-3600),
                ..Default::default()
            },
        )
        .expect("mint")
        .token;

    let allowed = send(
        "POST",
        &stack.envoy.url("/v2/models/fraud-detector/infer"),
        &[bearer(&alice)],
        Some(&infer_body()),
    );
    assert_eq!(allowed.status, 200, "{}", allowed.raw);
    let refused = send(
        "POST",
        &stack.envoy.url("/score"),
        &[
            bearer(&bob),
            ("azureml-model-deployment".into(), "fraud-detector".into()),
        ],
        Some(&json!({})),
    );
    assert_eq!(refused.status, 403, "{}", refused.raw);
    let unauthenticated = send(
        "POST",
        &stack.envoy.url("/v2/models/churn-predictor/infer"),
        &[bearer(&expired)],
        Some(&infer_body()),
    );
    assert_eq!(unauthenticated.status, 401, "{}", unauthenticated.raw);

    let (line, record) = decision(&stack, "/v2/models/fraud-detector/infer");
    assert_eq!(line["status"], 200);
    assert_eq!(line["response_code_details"], "via_upstream");
    assert_eq!(record["decision"], "allowed");
    assert_eq!(record["route"], "infer");
    assert_eq!(record["rule"], "allow[0]");
    assert_eq!(record["model"], "fraud-detector");
    assert_eq!(record["provider"], "demo-idp");
    assert!(record["principal"].is_string(), "{record}");
    assert_eq!(record["token_sha256"].as_str().map(str::len), Some(16));

    let (line, record) = decision(&stack, "/score");
    assert_eq!(line["status"], 403);
    assert_eq!(line["response_code_details"], "mlgate_no_rule_matched");
    assert_eq!(record["decision"], "denied");
    assert_eq!(record["reason"], "no_rule_matched");
    assert_eq!(record["route"], "score");
    assert_eq!(line["request_id"], refused.body["request_id"]);

    let (line, record) = decision(&stack, "/v2/models/churn-predictor/infer");
    assert_eq!(line["status"], 401);
    assert_eq!(line["response_code_details"], "mlgate_token_expired");
    assert_eq!(record["decision"], "denied");
    assert_eq!(record["reason"], "token_expired");
    assert_eq!(record["token_sha256"].as_str().map(str::len), Some(16));

    // No token in the access log (nor anywhere else in Envoy's output).
    let log = stack.envoy.log();
    for token in [&alice, &bob, &expired] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token is in Envoy's output");
    }
}

#[test]
fn prometheus_labels_request_counters_and_has_the_latency_histogram() {
    let Some(stack) = Stack::start("prometheus", 1) else {
        return;
    };
    let bob = stack.token("bob");
    let refused = send(
        "POST",
        &stack.envoy.url("/score"),
        &[
            bearer(&bob),
            ("azureml-model-deployment".into(), "fraud-detector".into()),
        ],
        Some(&json!({})),
    );
    assert_eq!(refused.status, 403, "{}", refused.raw);
    let labels = [
        ("decision", "denied"),
        ("reason", "no_rule_matched"),
        ("route", "score"),
        ("provider", "demo-idp"),
    ];
    // A histogram's samples reach /stats/prometheus at Envoy's stats flush (every 5 s by default).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut text = prometheus(&stack);
    while !sample(&text, "mlgate_decision_duration_us_count", &[]).is_some_and(|n| n >= 1.0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(250));
        text = prometheus(&stack);
    }
    assert_eq!(
        sample(&text, "mlgate_requests_total", &labels),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "mlgate_decision_duration_us_count", &[]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[test]
fn prometheus_counts_a_token_cache_hit_for_a_repeated_token() {
    let Some(stack) = Stack::start("token-cache", 1) else {
        return;
    };
    let alice = stack.token("alice");
    // A token enters the cache on its second verification; the third request is a hit.
    for _ in 0..3 {
        let answer = send(
            "POST",
            &stack.envoy.url("/v2/models/fraud-detector/infer"),
            &[bearer(&alice)],
            Some(&infer_body()),
        );
        assert_eq!(answer.status, 200, "{}", answer.raw);
    }
    let text = prometheus(&stack);
    assert_eq!(
        sample(&text, "mlgate_token_cache_hits_total", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "mlgate_token_cache_misses_total", &[]),
        Some(2.0),
        "{text}"
    );
}
