//! Quotas per caller and model through a real Envoy 1.40: envoy/demo.yaml's `local_ratelimit`
//! filter, after mlgate, keyed by the headers mlgate writes (x-mlgate-route, x-mlgate-principal,
//! x-mlgate-model, x-mlgate-max-tokens). The demo quotas: alice × llama-3-8b on the chat route, 3
//! requests a minute; alice × gpt-4o-mini on the chat route, 1000 declared completion tokens a
//! minute. Each test starts its own Envoy, so its buckets start full. They refill gradually (one
//! request every 20 s, one token every 60 ms): a test asserts an exact `x-ratelimit-remaining` only
//! right after a full bucket's first use, and otherwise only what seconds of refill cannot change.

mod e2e_fixture;

use e2e_fixture::{bearer, send, Answer, Stack};
use serde_json::{json, Value};

const QUOTA: u64 = 3;
const TOKEN_BUDGET: u64 = 1000;

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn chat_as(stack: &Stack, persona: &str, body: &Value) -> Answer {
    let url = stack.envoy.url("/v1/chat/completions");
    send("POST", &url, &[bearer(&stack.token(persona))], Some(body))
}

fn assert_quota_refusal(answer: &Answer, limit: &str) {
    assert_eq!(answer.status, 429, "{}", answer.raw);
    assert_eq!(answer.body["error"], "too_many_requests", "{}", answer.raw);
    assert_eq!(answer.body["reason"], "quota_exceeded", "{}", answer.raw);
    assert_eq!(answer.body["route"], "chat", "{}", answer.raw);
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{:?}",
        answer.headers
    );
    assert_eq!(
        answer.header("x-ratelimit-limit"),
        Some(limit),
        "{:?}",
        answer.headers
    );
    assert!(
        answer.header("x-ratelimit-remaining").is_some()
            && answer.header("x-ratelimit-reset").is_some(),
        "{:?}",
        answer.headers
    );
}

/// The chat route also lets ml-scientists (carl) use llama-*, so a second caller shares the model.
fn carl_may_chat(config: &mut Value) {
    let routes = config["routes"].as_array_mut().expect("routes");
    let chat = routes
        .iter_mut()
        .find(|r| r["name"] == "chat")
        .expect("filters/demo.json has a chat route");
    chat["allow"]
        .as_array_mut()
        .expect("chat allow rules")
        .push(json!({"groups": ["ml-scientists"], "models": ["llama-*"]}));
}

#[test]
fn the_caller_over_its_quota_gets_429_with_ratelimit_headers() {
    let Some(stack) = Stack::start("quota-over", 1) else {
        return;
    };
    for n in 1..=QUOTA {
        let answer = chat_as(&stack, "alice", &chat_body("llama-3-8b"));
        assert_eq!(answer.status, 200, "request {n}: {}", answer.raw);
        assert_eq!(answer.header("x-ratelimit-limit"), Some("3"), "request {n}");
        let remaining = (QUOTA - n).to_string();
        assert_eq!(
            answer.header("x-ratelimit-remaining"),
            Some(remaining.as_str()),
            "request {n}"
        );
    }
    let over = chat_as(&stack, "alice", &chat_body("llama-3-8b"));
    assert_quota_refusal(&over, "3");
    assert_eq!(over.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(
        stack.backend.requests_seen(),
        QUOTA,
        "the 429 went upstream"
    );
    // The same caller on another model has no quota.
    let other_model = chat_as(&stack, "alice", &chat_body("gpt-4o-mini"));
    assert_eq!(other_model.status, 200, "{}", other_model.raw);
}

#[test]
fn another_caller_on_the_same_model_is_not_limited() {
    let Some(stack) = Stack::start_with("quota-other-caller", 1, carl_may_chat) else {
        return;
    };
    for _ in 0..QUOTA {
        assert_eq!(
            chat_as(&stack, "alice", &chat_body("llama-3-8b")).status,
            200
        );
    }
    assert_quota_refusal(&chat_as(&stack, "alice", &chat_body("llama-3-8b")), "3");
    // Same model, same route, same minute: carl's requests are his own.
    for n in 0..=QUOTA {
        let answer = chat_as(&stack, "carl", &chat_body("llama-3-8b"));
        assert_eq!(answer.status, 200, "carl's request {n}: {}", answer.raw);
        assert_eq!(answer.body["identity"]["x-mlgate-model"], "llama-3-8b");
        assert_eq!(
            answer.header("x-ratelimit-limit"),
            None,
            "carl has no quota: {:?}",
            answer.headers
        );
    }
}

#[test]
fn requests_mlgate_refuses_spend_no_quota() {
    let Some(stack) = Stack::start("quota-refused", 1) else {
        return;
    };
    let url = stack.envoy.url("/v1/chat/completions");
    let alice = mlgate_harness::idp::persona("alice").unwrap().oid;
    // Client-sent copies of the headers the quota is keyed by, naming alice × llama-3-8b.
    let forged = [
        ("x-mlgate-route".to_string(), "chat".to_string()),
        ("x-mlgate-principal".to_string(), alice.to_string()),
        ("x-mlgate-model".to_string(), "llama-3-8b".to_string()),
    ];
    let body = chat_body("llama-3-8b");
    for _ in 0..=QUOTA {
        // No token: mlgate answers 401 before the quota filter.
        let answer = send("POST", &url, &forged, Some(&body));
        assert_eq!(answer.status, 401, "{}", answer.raw);
        // Alice's token, but a body mlgate cannot read as the model server would: 415.
        let mut headers = forged.to_vec();
        headers.push(bearer(&stack.token("alice")));
        headers.push(("content-type".to_string(), "text/plain".to_string()));
        let answer = send_text(&url, &headers, &body.to_string());
        assert_eq!(answer.0, 415, "{}", answer.1);
    }
    // Alice's quota is whole.
    for n in 1..=QUOTA {
        let answer = chat_as(&stack, "alice", &chat_body("llama-3-8b"));
        assert_eq!(answer.status, 200, "request {n}: {}", answer.raw);
    }
    assert_quota_refusal(&chat_as(&stack, "alice", &chat_body("llama-3-8b")), "3");
}

/// A POST with a body sent as it is (`send` always labels a body application/json).
fn send_text(url: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
    let mut builder = ureq::http::Request::builder().method("POST").uri(url);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder.body(body.as_bytes().to_vec()).expect("request");
    match e2e_fixture::agent().run(request) {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (
                status,
                resp.into_body().read_to_string().unwrap_or_default(),
            )
        }
        Err(e) => (0, format!("(no answer: {e})")),
    }
}

fn gpt_with_max_tokens(max_tokens: Value) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "messages": []})
}

#[test]
fn a_request_over_the_llm_token_budget_gets_429() {
    let Some(stack) = Stack::start("token-budget", 1) else {
        return;
    };
    let first = chat_as(&stack, "alice", &gpt_with_max_tokens(json!(600)));
    assert_eq!(first.status, 200, "{}", first.raw);
    assert_eq!(first.body["identity"]["x-mlgate-max-tokens"], "600");
    assert_eq!(first.header("x-ratelimit-limit"), Some("1000"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("400"));
    // 600 more would pass the budget (12 s of refill away): refused, and nothing is spent.
    let over = chat_as(&stack, "alice", &gpt_with_max_tokens(json!(600)));
    assert_quota_refusal(&over, "1000");
    let left = remaining(&over);
    assert!((400..600).contains(&left), "{:?}", over.headers);
    let rest = chat_as(
        &stack,
        "alice",
        &gpt_with_max_tokens(json!(TOKEN_BUDGET - 600)),
    );
    assert_eq!(rest.status, 200, "{}", rest.raw);
    assert!(remaining(&rest) < 200, "{:?}", rest.headers);
    assert_eq!(stack.backend.requests_seen(), 2, "the 429 went upstream");
}

fn remaining(answer: &Answer) -> u64 {
    answer
        .header("x-ratelimit-remaining")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no x-ratelimit-remaining: {:?}", answer.headers))
}

#[test]
fn a_max_tokens_the_server_could_read_otherwise_is_refused_and_not_charged() {
    let Some(stack) = Stack::start("token-budget-unreadable", 1) else {
        return;
    };
    for max_tokens in [
        json!("1000"),
        json!(1000.0),
        json!(-1),
        json!(0),
        json!(1_000_000_001u64),
    ] {
        let answer = chat_as(&stack, "alice", &gpt_with_max_tokens(max_tokens.clone()));
        assert_eq!(
            (answer.status, answer.body["reason"].as_str()),
            (400, Some("max_tokens_invalid")),
            "max_tokens {max_tokens}: {}",
            answer.raw
        );
    }
    assert_eq!(stack.backend.requests_seen(), 0);
    // The whole budget in one request: only a full bucket allows it.
    let whole = chat_as(&stack, "alice", &gpt_with_max_tokens(json!(TOKEN_BUDGET)));
    assert_eq!(whole.status, 200, "{}", whole.raw);
    assert_eq!(whole.header("x-ratelimit-remaining"), Some("0"));
}

#[test]
fn a_client_sent_max_tokens_header_is_replaced_by_the_body_s() {
    let Some(stack) = Stack::start("token-budget-forged", 1) else {
        return;
    };
    let url = stack.envoy.url("/v1/chat/completions");
    let headers = [
        bearer(&stack.token("alice")),
        ("x-mlgate-max-tokens".to_string(), "1".to_string()),
    ];
    let answer = send(
        "POST",
        &url,
        &headers,
        Some(&gpt_with_max_tokens(json!(900))),
    );
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(answer.body["identity"]["x-mlgate-max-tokens"], "900");
    assert_eq!(answer.header("x-ratelimit-remaining"), Some("100"));
}

/// Why envoy/demo.yaml holds json_body requests whole: without `allow_on_headers_stop_iteration`
/// the headers pass the rate-limit filter before mlgate has read the body's model, so the
/// descriptor lacks `model` and a per-model quota on such a route never applies.
#[test]
fn without_the_body_hold_a_per_model_quota_on_a_json_body_route_is_not_applied() {
    let template = std::fs::read_to_string(e2e_fixture::root().join("envoy/demo.yaml")).unwrap();
    assert!(template.contains("allow_on_headers_stop_iteration: true"));
    let without = template.replace(
        "allow_on_headers_stop_iteration: true",
        "allow_on_headers_stop_iteration: false",
    );
    let Some(stack) = Stack::start_from(&without, "quota-no-body-hold", 1, |_| {}) else {
        return;
    };
    for n in 0..=QUOTA {
        let answer = chat_as(&stack, "alice", &chat_body("llama-3-8b"));
        assert_eq!(answer.status, 200, "request {n}: {}", answer.raw);
        assert_eq!(answer.header("x-ratelimit-limit"), None, "request {n}");
    }
}
