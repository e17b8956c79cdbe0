//! Through a real Envoy 1.40 with filters/demo.json: `GET /v1/models` (the demo backend lists six
//! models) reaches each persona with only the models it may call on `/v1/chat/completions` — a
//! model a caller sees is a model it may call, and the reverse — with a `content-length` that is
//! the filtered body's once Envoy is known to hand mlgate bodies while it holds headers.

mod e2e_fixture;

use e2e_fixture::{agent, bearer, send, Stack};
use mlgate_harness::backend::MODELS;
use serde_json::{json, Value};

/// The listing as the client receives it: its `content-length` header, its model ids.
fn list(stack: &Stack, persona: &str) -> (Option<String>, Vec<String>) {
    let request = ureq::http::Request::builder()
        .method("GET")
        .uri(stack.envoy.url("/v1/models"))
        .header("authorization", format!("Bearer {}", stack.token(persona)))
        .header("accept-encoding", "gzip")
        .body(())
        .expect("request");
    let response = agent().run(request).expect("an answer");
    assert_eq!(response.status().as_u16(), 200, "{persona}");
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let raw = response.into_body().read_to_string().expect("a body");
    if let Some(length) = &length {
        assert_eq!(length, &raw.len().to_string(), "{persona}: {raw}");
    }
    let listing: Value = serde_json::from_str(&raw).expect("a JSON listing");
    assert_eq!(listing["object"], "list", "{raw}");
    let ids = listing["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_string())
        .collect();
    (length, ids)
}

fn chat_status(stack: &Stack, persona: &str, model: &str) -> u16 {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let headers = [bearer(&stack.token(persona))];
    send(
        "POST",
        &stack.envoy.url("/v1/chat/completions"),
        &headers,
        Some(&body),
    )
    .status
}

#[test]
fn each_persona_lists_exactly_the_chat_models_it_may_call() {
    let Some(stack) = Stack::start("catalogue", 1) else {
        return;
    };
    let mut seen = Vec::new();
    for persona in ["alice", "bob", "carl", "scorer"] {
        let (_, listed) = list(&stack, persona);
        for model in MODELS {
            let status = chat_status(&stack, persona, model);
            let shown = listed.iter().any(|m| m == model);
            assert_eq!(
                shown,
                status == 200,
                "{persona} × {model}: listed {shown}, chat answered {status}"
            );
        }
        seen.push((persona, listed));
    }
    assert_eq!(seen[0].1, ["gpt-4o-mini", "llama-3-8b"], "alice");
    assert!(seen[1].1.is_empty(), "bob: {:?}", seen[1].1);
}

#[test]
fn a_filtered_listing_carries_its_own_length_once_envoy_holds_headers_for_bodies() {
    let Some(stack) = Stack::start("catalogue-length", 1) else {
        return;
    };
    // Before any body has come while headers were held, the listing goes without a length.
    let (before, listed) = list(&stack, "alice");
    assert_eq!(before, None);
    assert_eq!(listed, ["gpt-4o-mini", "llama-3-8b"]);
    assert_eq!(chat_status(&stack, "alice", "gpt-4o-mini"), 200);
    let (after, listed) = list(&stack, "alice");
    assert!(
        after.is_some(),
        "no content-length after the body hold was seen"
    );
    assert_eq!(listed, ["gpt-4o-mini", "llama-3-8b"]);
}
