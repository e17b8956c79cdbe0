//! Through a real Envoy 1.40: with `allow_on_headers_stop_iteration: true` (envoy/demo.yaml) a chat
//! request is held whole until mlgate has read the model in its body, so a refused model never
//! reaches the model server — the demo backend counts every request whose headers arrive, and sees
//! none. Without the flag, mlgate finds out after a short wait and lets such requests go headers
//! first, with the caller's identity but not the model (whether the backend then sees the headers of
//! a refused request depends on how fast Envoy's upstream connection is: the refusal resets it).

mod e2e_fixture;

use std::fs;

use e2e_fixture::{bearer, root, send, Stack};
use serde_json::json;

fn alice_oid() -> &'static str {
    mlgate_harness::idp::persona("alice").unwrap().oid
}

fn chat(stack: &Stack, model: &str) -> e2e_fixture::Answer {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let url = stack.envoy.url("/v1/chat/completions");
    send("POST", &url, &[bearer(&stack.token("alice"))], Some(&body))
}

fn assert_refused_model(answer: &e2e_fixture::Answer) {
    assert_eq!(answer.status, 403, "{}", answer.raw);
    assert_eq!(answer.body["reason"], "model_not_allowed", "{}", answer.raw);
}

#[test]
fn a_refused_body_model_never_reaches_the_backend() {
    let Some(stack) = Stack::start("body-hold", 1) else {
        return;
    };
    let refused = chat(&stack, "gpt-4-turbo");
    assert_refused_model(&refused);
    assert_eq!(
        stack.backend.requests_seen(),
        0,
        "the backend saw the refused request"
    );

    let allowed = chat(&stack, "gpt-4o-mini");
    assert_eq!(allowed.status, 200, "{}", allowed.raw);
    assert_eq!(stack.backend.requests_seen(), 1);
    let identity = &allowed.body["identity"];
    assert_eq!(identity["x-mlgate-model"], "gpt-4o-mini", "{}", allowed.raw);
    assert_eq!(
        identity["x-mlgate-principal"],
        alice_oid(),
        "{}",
        allowed.raw
    );
    assert!(
        stack
            .envoy
            .log()
            .contains("hands over request bodies while the headers are held"),
        "{}",
        stack.envoy.log_tail()
    );
}

#[test]
fn without_the_flag_requests_go_headers_first_and_are_still_judged() {
    let template = fs::read_to_string(root().join("envoy/demo.yaml")).unwrap();
    assert!(template.contains("allow_on_headers_stop_iteration: true"));
    let without = template.replace(
        "allow_on_headers_stop_iteration: true",
        "allow_on_headers_stop_iteration: false",
    );
    let Some(stack) = Stack::start_from(&without, "no-body-hold", 1, |_| {}) else {
        return;
    };
    let refused = chat(&stack, "gpt-4-turbo");
    assert_refused_model(&refused);

    let allowed = chat(&stack, "gpt-4o-mini");
    assert_eq!(allowed.status, 200, "{}", allowed.raw);
    let identity = &allowed.body["identity"];
    assert_eq!(
        identity["x-mlgate-principal"],
        alice_oid(),
        "{}",
        allowed.raw
    );
    // The headers went upstream before the body's model was read.
    assert_eq!(identity.get("x-mlgate-model"), None, "{}", allowed.raw);
    assert!(
        !stack.envoy.log().contains("hands over request bodies"),
        "{}",
        stack.envoy.log_tail()
    );
}
