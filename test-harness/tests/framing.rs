//! Property, through the real mlgate.wasm: a decision never depends on how the request is framed.
//! The same request — body split into any data frames, ended by its last frame or by trailers,
//! with unrelated headers repeated — gets the same verdict, the same audit record and, when
//! forwarded, the same bytes upstream as when it is sent in one piece.

mod common;

use common::*;
use mlgate_harness::host::{Harness, Outcome};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

/// Deny rules that name models on the header and body routes, and a small body limit.
fn guarded_config() -> Value {
    let mut config = entra_config();
    config["max_body_bytes"] = json!(4096);
    config["routes"][1]["deny"] = json!([{"groups": ["contractors"], "models": ["finance-*"]}]);
    config["routes"][1]["allow"] = json!([{"groups": ["ml-scientists"]}]);
    config["routes"][3]["deny"] = json!([{"groups": ["contractors"], "models": ["gpt-4o"]}]);
    config["routes"][3]["allow"] = json!([{"groups": ["ml-scientists"]}]);
    config
}

/// Bodies that every reading of the model must agree on.
fn bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        r#"{"model":"gpt-4o","messages":[]}"#,
        r#"{"messages":[],"model":"gpt-4o"}"#,
        r#"{"messages":[]}"#,
        r#"{"model":"gpt-4o-mini","Model":"gpt-4o"}"#,
        r#"{"model":"gpt-4o-mini","model":"gpt-4o"}"#,
        r#"{"mod\u0065l":"gpt-4o"}"#,
        r#"{"model":"gpt-4o","temperature":NaN}"#,
        r#"{"model":"gpt-4o"} {"model":"gpt-4o-mini"}"#,
        r#"{"model":null}"#,
        "",
        "  \n",
        "\u{feff}{\"model\":\"gpt-4o\"}",
        r#"{"model":"gpt-4o-mini","note":"\u00e9\u6771\ud83d\ude00"}"#,
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .collect();
    // Multi-byte UTF-8 that frames may split in the middle of a character.
    bodies.push(
        format!(
            "{{\"model\":\"gpt-4o-mini\",\"note\":\"{}\"}}",
            "東京".repeat(50)
        )
        .into_bytes(),
    );
    // Over the 4096-byte limit.
    bodies.push(
        format!(
            "{{\"model\":\"gpt-4o-mini\",\"pad\":\"{}\"}}",
            "x".repeat(5000)
        )
        .into_bytes(),
    );
    bodies.push(b"\xff\xfe{}".to_vec());
    bodies
}

/// What the client and the upstream see, and what the audit says.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Forwarded {
        body: Vec<u8>,
        decision: String,
    },
    Refused {
        status: Option<u32>,
        reason: Option<String>,
    },
    Paused,
}

fn seen(out: &Outcome) -> Seen {
    if out.is_forwarded() {
        let audit: Vec<String> = out
            .logs_containing("mlgate audit ")
            .iter()
            .map(|l| l.message.clone())
            .collect();
        Seen::Forwarded {
            body: out.body().to_vec(),
            decision: audit.join("\n"),
        }
    } else if out.is_responded() {
        Seen::Refused {
            status: out.status(),
            reason: out.reason(),
        }
    } else {
        Seen::Paused
    }
}

/// Cuts `body` at the given points (taken modulo its length, sorted, repeated ones kept: an
/// empty data frame is a frame too).
fn frames(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for point in points {
        out.push(body[start..point].to_vec());
        start = point;
    }
    out.push(body[start..].to_vec());
    out
}

fn chat_request<'h>(
    h: &'h Harness,
    token: &str,
    repeat_unrelated: bool,
) -> mlgate_harness::host::RequestBuilder<'h> {
    let mut r = h
        .request()
        .method("POST")
        .path("/v1/chat/completions")
        .host("ml.contoso.example")
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .bearer(token);
    if repeat_unrelated {
        r = r
            .header("accept", "text/event-stream")
            .header("x-trace", "a")
            .header("x-trace", "b");
    }
    r
}

#[test]
fn a_body_model_decision_does_not_depend_on_framing() {
    let h = harness(&guarded_config());
    let tokens = [
        user_token(&h, |_| {}),
        user_token(&h, |c| c["groups"] = json!([ML_SCIENTISTS, CONTRACTORS])),
    ];
    let bodies = bodies();
    let strategy = (
        0..bodies.len(),
        0..tokens.len(),
        proptest::collection::vec(any::<usize>(), 0..8),
        any::<bool>(),
        any::<bool>(),
    );
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(body, token, cuts, trailers, repeat)| {
            let body = &bodies[body];
            let token = &tokens[token];
            let whole = chat_request(&h, token, false).body(body).send().unwrap();
            let mut framed = chat_request(&h, token, repeat).body_frames(frames(body, &cuts));
            if trailers {
                framed = framed.trailer("x-checksum", "c0ffee");
            }
            let framed = framed.send().unwrap();
            prop_assert_ne!(seen(&whole), Seen::Paused);
            prop_assert_eq!(
                seen(&whole),
                seen(&framed),
                "body {:?} in frames {:?}, trailers {}, repeated headers {}",
                String::from_utf8_lossy(body),
                cuts,
                trailers,
                repeat
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_header_model_decision_does_not_depend_on_repetition_or_spelling() {
    let h = harness(&guarded_config());
    let token = user_token(&h, |c| c["groups"] = json!([ML_SCIENTISTS, CONTRACTORS]));
    let values = ["public-demo", "finance-risk", "blue", "", "a,b"];
    let names = [
        "azureml-model-deployment",
        "azureml_model_deployment",
        "azureml-model_deployment",
    ];
    let strategy = proptest::collection::vec((0..names.len(), 0..values.len()), 0..4);
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |headers| {
            let mut r = h.request().method("POST").path("/score").bearer(&token);
            for (name, value) in &headers {
                r = r.header(names[*name], values[*value]);
            }
            let out = r.send().unwrap();
            let expected = match headers.as_slice() {
                [] => "model_missing",
                [(0, value)] => match values[*value] {
                    "" => "model_missing",
                    "a,b" => "model_ambiguous",
                    "finance-risk" => "denied_by_rule",
                    _ => "forwarded",
                },
                // Repeated, or another spelling beside it or instead of it (a model mlgate
                // would not read but a CGI-style server would): never one reading.
                _ => "model_ambiguous",
            };
            prop_assert_eq!(verdict(&out), expected, "headers {:?}", headers);
            Ok(())
        })
        .unwrap();
}
