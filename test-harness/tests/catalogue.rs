//! Through the real mlgate.wasm: model catalogues (`list_models`) filtered per caller — the model
//! server's listing reaches each caller with only the models its rules let it call on the route
//! the listing names, whatever the framing of the response; a listing that cannot be filtered is
//! never passed on.

mod common;

use common::*;
use mlgate_harness::host::{Harness, HarnessBuilder, Outcome, UpstreamResponse};
use serde_json::{json, Value};

const OPENAI_LISTING: &str = r#"{"object":"list","data":[{"id":"gpt-4o","object":"model","owned_by":"demo"},{"id":"gpt-4o-mini","object":"model","owned_by":"demo"},{"id":"llama-3-8b","object":"model","owned_by":"demo"}]}"#;
const REPOSITORY_INDEX: &str = r#"[{"name":"finance-risk","version":"1","state":"READY"},{"name":"iris","version":"1","state":"READY"}]"#;

/// The shared Entra configuration with OpenAI's listing (sorted by `chat`'s rules) and the v2
/// repository index (by `infer`'s).
fn listing_config() -> Value {
    let mut config = entra_config();
    let routes = config["routes"].as_array_mut().unwrap();
    routes.push(
        json!({"name": "models", "match": {"path": "/v1/models", "methods": ["GET"]},
        "list_models": {"format": "openai", "for_route": "chat"}}),
    );
    routes.push(
        json!({"name": "index", "match": {"path": "/v2/repository/index", "methods": ["POST"]},
        "list_models": {"format": "triton", "for_route": "infer", "max_bytes": 4096}}),
    );
    config
}

fn configured(builder: HarnessBuilder, config: Value) -> Harness {
    builder.load().unwrap().configure(config).unwrap()
}

fn contractor(h: &Harness) -> String {
    user_token(h, |c| c["groups"] = json!([CONTRACTORS]))
}

fn list(h: &Harness, token: &str, response: UpstreamResponse) -> Outcome {
    h.request()
        .path("/v1/models")
        .header("accept-encoding", "gzip, br")
        .bearer(token)
        .answered_with(response)
        .send()
        .unwrap()
}

fn index(h: &Harness, token: &str, response: UpstreamResponse) -> Outcome {
    h.request()
        .method("POST")
        .path("/v2/repository/index")
        .bearer(token)
        .answered_with(response)
        .send()
        .unwrap()
}

/// The model names the client received.
fn listed(outcome: &Outcome) -> Vec<String> {
    let response = outcome
        .response()
        .unwrap_or_else(|| panic!("no response reached the client: {outcome}"));
    let value: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {:?}",
            String::from_utf8_lossy(&response.body)
        )
    });
    let entries = value
        .get("data")
        .unwrap_or(&value)
        .as_array()
        .unwrap()
        .clone();
    entries
        .iter()
        .map(|e| {
            e.get("id")
                .or(e.get("name"))
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A chat completion with an allowed model: its body arrives while its headers are held, which
/// tells the filter the host hands bodies over then.
fn teach_body_hold(h: &Harness) {
    let chat = h
        .request()
        .method("POST")
        .path("/v1/chat/completions")
        .bearer(&user_token(h, |_| {}))
        .json(&json!({"model": "llama-3-8b", "messages": []}))
        .send()
        .unwrap();
    assert!(chat.is_forwarded(), "{chat}");
}

#[test]
fn each_caller_sees_only_the_models_its_rules_let_it_call() {
    let h = configured(Harness::builder(), listing_config());
    let alice = list(
        &h,
        &user_token(&h, |_| {}),
        UpstreamResponse::json(200, OPENAI_LISTING),
    );
    assert_eq!(listed(&alice), ["gpt-4o-mini", "llama-3-8b"]);
    let contractor = list(
        &h,
        &contractor(&h),
        UpstreamResponse::json(200, OPENAI_LISTING),
    );
    assert_eq!(listed(&contractor), Vec::<String>::new());
}

#[test]
fn every_other_field_of_the_listing_is_kept() {
    let h = configured(Harness::builder(), listing_config());
    let alice = list(
        &h,
        &user_token(&h, |_| {}),
        UpstreamResponse::json(200, OPENAI_LISTING),
    );
    let body: Value = serde_json::from_slice(&alice.response().unwrap().body).unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(
        body["data"][0],
        json!({"id":"gpt-4o-mini","object":"model","owned_by":"demo"})
    );
}

#[test]
fn a_repository_index_hides_the_models_a_deny_rule_refuses() {
    let h = configured(Harness::builder(), listing_config());
    let alice = index(
        &h,
        &user_token(&h, |_| {}),
        UpstreamResponse::json(200, REPOSITORY_INDEX),
    );
    assert_eq!(listed(&alice), ["finance-risk", "iris"]);
    let contractor = index(
        &h,
        &contractor(&h),
        UpstreamResponse::json(200, REPOSITORY_INDEX),
    );
    assert_eq!(listed(&contractor), ["iris"]);
}

#[test]
fn the_listing_is_asked_for_without_a_content_encoding() {
    let h = configured(Harness::builder(), listing_config());
    let alice = list(
        &h,
        &user_token(&h, |_| {}),
        UpstreamResponse::json(200, OPENAI_LISTING),
    );
    assert_eq!(alice.forwarded_header("accept-encoding"), Some("identity"));
}

#[test]
fn an_encoded_listing_is_replaced_by_a_502() {
    let h = configured(Harness::builder(), listing_config());
    let gzipped = UpstreamResponse::json(200, OPENAI_LISTING).header("content-encoding", "gzip");
    let refused = list(&h, &user_token(&h, |_| {}), gzipped);
    assert_eq!(refused.status(), Some(502), "{refused}");
    assert_eq!(verdict(&refused), "listing_unreadable");
}

#[test]
fn an_unreadable_listing_is_replaced_by_a_502() {
    let h = configured(Harness::builder(), listing_config());
    teach_body_hold(&h);
    for body in [
        "not json",
        r#"[{"id":"gpt-4o-mini"}]"#,
        r#"{"data":[{"id":"gpt-4o-mini"}],"Data":[{"id":"gpt-4o"}]}"#,
        r#"{"data":[{"id":"gpt-4o-mini"},{"id":"gpt-4o","id":"gpt-4o-mini"}]}"#,
    ] {
        let refused = list(
            &h,
            &user_token(&h, |_| {}),
            UpstreamResponse::json(200, body),
        );
        assert_eq!(refused.status(), Some(502), "{body}: {refused}");
        assert_eq!(verdict(&refused), "listing_unreadable", "{body}");
    }
}

#[test]
fn a_listing_over_its_bound_is_replaced_by_a_502() {
    let h = configured(Harness::builder(), listing_config());
    teach_body_hold(&h);
    let entries: Vec<Value> = (0..300)
        .map(|i| json!({"name": format!("model-{i}")}))
        .collect();
    let large = serde_json::to_string(&entries).unwrap();
    let refused = index(
        &h,
        &user_token(&h, |_| {}),
        UpstreamResponse::json(200, &large),
    );
    assert_eq!(refused.status(), Some(502), "{refused}");
    assert_eq!(verdict(&refused), "listing_too_large");
}

#[test]
fn an_error_from_the_model_server_goes_as_it_is() {
    let h = configured(Harness::builder(), listing_config());
    let error = r#"{"error":{"message":"upstream down"}}"#;
    let outcome = list(
        &h,
        &user_token(&h, |_| {}),
        UpstreamResponse::json(503, error),
    );
    let response = outcome.response().unwrap();
    assert_eq!(response.status(), Some(503));
    assert_eq!(response.body, error.as_bytes());
}

#[test]
fn a_caller_refused_on_the_listing_route_gets_a_403_and_nothing_goes_upstream() {
    let mut config = listing_config();
    config["routes"][4]["allow"] = json!([{"groups": ["ml-scientists"]}]);
    let h = configured(Harness::builder(), config);
    let refused = list(
        &h,
        &contractor(&h),
        UpstreamResponse::json(200, OPENAI_LISTING),
    );
    assert_eq!(verdict(&refused), "no_rule_matched");
    assert!(!refused.reached_upstream(), "{refused}");
}

#[test]
fn in_dry_run_mode_the_listing_is_not_filtered() {
    let mut config = listing_config();
    config["mode"] = json!("dry_run");
    let h = configured(Harness::builder(), config);
    let contractor = list(
        &h,
        &contractor(&h),
        UpstreamResponse::json(200, OPENAI_LISTING),
    );
    assert_eq!(listed(&contractor), ["gpt-4o", "gpt-4o-mini", "llama-3-8b"]);
}

#[test]
fn where_the_host_holds_headers_for_bodies_the_listing_carries_its_filtered_length() {
    let h = configured(Harness::builder(), listing_config());
    teach_body_hold(&h);
    let alice = list(
        &h,
        &user_token(&h, |_| {}),
        UpstreamResponse::json(200, OPENAI_LISTING),
    );
    let response = alice.response().unwrap();
    assert_eq!(listed(&alice), ["gpt-4o-mini", "llama-3-8b"]);
    assert_eq!(
        response.headers.get("content-length"),
        Some(response.body.len().to_string().as_str())
    );
}

#[test]
fn before_the_host_is_known_to_hold_headers_the_listing_goes_without_a_stale_length() {
    for builder in [
        Harness::builder(),
        Harness::builder().no_body_while_headers_held(),
    ] {
        let h = configured(builder, listing_config());
        let alice = list(
            &h,
            &user_token(&h, |_| {}),
            UpstreamResponse::json(200, OPENAI_LISTING),
        );
        assert_eq!(listed(&alice), ["gpt-4o-mini", "llama-3-8b"]);
        assert_eq!(
            alice.response().unwrap().headers.get("content-length"),
            None
        );
    }
}

#[test]
fn a_listing_in_many_frames_or_ended_by_trailers_is_filtered_whole() {
    let h = configured(Harness::builder(), listing_config());
    teach_body_hold(&h);
    let frames: Vec<&[u8]> = OPENAI_LISTING.as_bytes().chunks(7).collect();
    let framed = UpstreamResponse::status(200)
        .header("content-type", "application/json")
        .body_frames(frames.clone());
    let alice = list(&h, &user_token(&h, |_| {}), framed);
    assert_eq!(listed(&alice), ["gpt-4o-mini", "llama-3-8b"]);
    let with_trailers = UpstreamResponse::status(200)
        .header("content-type", "application/json")
        .body_frames(frames)
        .trailer("x-checksum", "0");
    let alice = list(&h, &user_token(&h, |_| {}), with_trailers);
    assert_eq!(listed(&alice), ["gpt-4o-mini", "llama-3-8b"]);
}

#[test]
fn a_listing_refused_after_its_headers_went_downstream_resets_the_stream() {
    let h = configured(
        Harness::builder().no_body_while_headers_held(),
        listing_config(),
    );
    let refused = list(
        &h,
        &user_token(&h, |_| {}),
        UpstreamResponse::json(200, "not json"),
    );
    assert!(matches!(refused, Outcome::Reset { .. }), "{refused}");
}

#[test]
fn a_route_that_is_not_a_listing_passes_its_response_untouched() {
    let h = configured(Harness::builder(), listing_config());
    let answer = r#"{"predictions":[1]}"#;
    let outcome = h
        .request()
        .method("POST")
        .path("/v2/models/iris/infer")
        .header("accept-encoding", "gzip")
        .bearer(&user_token(&h, |_| {}))
        .answered_with(UpstreamResponse::json(200, answer).header("content-encoding", "identity"))
        .send()
        .unwrap();
    assert_eq!(outcome.forwarded_header("accept-encoding"), Some("gzip"));
    assert_eq!(outcome.response().unwrap().body, answer.as_bytes());
    assert_eq!(
        outcome.response().unwrap().headers.get("content-length"),
        Some(answer.len().to_string().as_str())
    );
}
