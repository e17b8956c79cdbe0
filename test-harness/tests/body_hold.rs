//! Through the real mlgate.wasm: a `json_body` route's request is held whole — headers included —
//! until its model is read, on a host that hands the body over while the headers are held (Envoy
//! with `allow_on_headers_stop_iteration`); a refused model then leaves no trace upstream. On a host
//! that does not, the filter finds out and lets such requests go headers first.

mod common;

use std::time::Duration;

use common::*;
use mlgate_harness::host::{Harness, HarnessBuilder, Outcome};
use serde_json::json;

fn configured(builder: HarnessBuilder) -> Harness {
    builder.load().unwrap().configure(entra_config()).unwrap()
}

fn chat(h: &Harness, model: &str) -> Outcome {
    h.request()
        .method("POST")
        .path("/v1/chat/completions")
        .bearer(&user_token(h, |_| {}))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .unwrap()
}

/// Lets a paused request go after the wait for a body that did not come.
fn after_the_wait(h: &Harness, paused: &Outcome) -> Outcome {
    h.advance(Duration::from_secs(3));
    h.tick().unwrap();
    h.outcome(paused.context_id()).unwrap()
}

#[test]
fn a_refused_body_model_leaves_no_trace_upstream() {
    let h = configured(Harness::builder());
    let refused = chat(&h, "gpt-4o");
    assert_eq!(verdict(&refused), "model_not_allowed");
    assert!(!refused.reached_upstream(), "{refused}");
}

#[test]
fn an_allowed_body_model_goes_upstream_whole_with_the_model_and_identity_headers() {
    let h = configured(Harness::builder());
    let allowed = chat(&h, "llama-3-8b");
    assert!(allowed.is_forwarded(), "{allowed}");
    assert_eq!(
        allowed.forwarded_header("x-mlgate-model"),
        Some("llama-3-8b")
    );
    assert_eq!(allowed.forwarded_header("x-mlgate-principal"), Some(ALICE));
    assert!(allowed.body_text().contains("llama-3-8b"));
}

#[test]
fn the_first_body_while_held_is_logged_once_and_in_the_gauge() {
    let h = configured(Harness::builder());
    assert_eq!(h.metric("mlgate.body.hold_headers"), Some(0));
    chat(&h, "llama-3-8b");
    chat(&h, "gpt-4o");
    assert_eq!(h.logs_containing("hands over request bodies").len(), 1);
    assert_eq!(h.metric("mlgate.body.hold_headers"), Some(1));
}

#[test]
fn trailers_end_a_request_held_whole() {
    let h = configured(Harness::builder());
    let out = h
        .request()
        .method("POST")
        .path("/v1/chat/completions")
        .bearer(&user_token(&h, |_| {}))
        .json(&json!({"model": "gpt-4o", "messages": []}))
        .trailer("x-checksum", "1")
        .send()
        .unwrap();
    assert_eq!(verdict(&out), "model_not_allowed");
    assert!(!out.reached_upstream(), "{out}");
}

#[test]
fn a_spoofed_identity_header_never_reaches_upstream_from_a_request_held_whole() {
    let h = configured(Harness::builder());
    let out = h
        .request()
        .method("POST")
        .path("/v1/chat/completions")
        .bearer(&user_token(&h, |_| {}))
        .header("x-mlgate-model", "gpt-4o")
        .header("x_mlgate_principal", "mallory")
        .json(&json!({"model": "llama-3-8b", "messages": []}))
        .send()
        .unwrap();
    assert_eq!(out.forwarded_header("x-mlgate-model"), Some("llama-3-8b"));
    assert_eq!(out.forwarded_header("x_mlgate_principal"), None);
    assert_eq!(out.forwarded_header("x-mlgate-principal"), Some(ALICE));
}

#[test]
fn without_bodies_while_held_a_request_goes_headers_first_after_the_wait() {
    let h = configured(Harness::builder().no_body_while_headers_held());
    let paused = chat(&h, "llama-3-8b");
    assert!(paused.is_paused(), "{paused}");
    h.tick().unwrap();
    assert!(
        h.outcome(paused.context_id()).unwrap().is_paused(),
        "not before the wait"
    );
    let done = after_the_wait(&h, &paused);
    assert!(done.is_forwarded(), "{done}");
    assert_eq!(done.forwarded_header("x-mlgate-principal"), Some(ALICE));
    assert_eq!(
        done.forwarded_header("x-mlgate-model"),
        None,
        "the headers went first"
    );
}

#[test]
fn without_bodies_while_held_a_refused_model_is_still_refused_after_the_headers_went() {
    let h = configured(Harness::builder().no_body_while_headers_held());
    let paused = chat(&h, "gpt-4o");
    let done = after_the_wait(&h, &paused);
    assert_eq!(verdict(&done), "model_not_allowed");
    assert!(done.reached_upstream(), "the headers had gone: {done}");
}

#[test]
fn after_three_waits_in_vain_requests_go_headers_first_at_once() {
    let h = configured(Harness::builder().no_body_while_headers_held());
    for _ in 0..3 {
        let paused = chat(&h, "llama-3-8b");
        assert!(paused.is_paused(), "{paused}");
        assert!(after_the_wait(&h, &paused).is_forwarded());
    }
    assert_eq!(
        h.logs_containing("does not hand over request bodies").len(),
        1
    );
    assert_eq!(h.metric("mlgate.body.hold_headers"), Some(2));
    let at_once = chat(&h, "llama-3-8b");
    assert!(at_once.is_forwarded(), "{at_once}");
    assert_eq!(verdict(&chat(&h, "gpt-4o")), "model_not_allowed");
}

#[test]
fn a_client_that_hangs_up_while_held_is_forgotten() {
    let h = configured(Harness::builder().no_body_while_headers_held());
    let paused = chat(&h, "llama-3-8b");
    h.disconnect(paused.context_id()).unwrap();
    h.advance(Duration::from_secs(3));
    h.tick().unwrap();
    assert!(h.pending_requests().is_empty());
    assert!(
        chat(&h, "llama-3-8b").is_paused(),
        "still probing: the hang-up was no strike"
    );
}
