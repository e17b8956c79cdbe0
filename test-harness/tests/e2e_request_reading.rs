//! How mlgate reads a request, through a real Envoy: bodies that end with HTTP/2 trailers or in
//! HTTP/1.1 chunks, and model headers that are missing, repeated or spelled another way. Envoy's
//! codecs and filter manager decide which callbacks the filter gets; these tests are the proof
//! that the decision is the same whichever arrive. HTTP/2 requests go through `nghttp` (Debian's
//! `nghttp2-client`, installed by `make tools`), the only client here that sends request trailers.

mod e2e_fixture;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use e2e_fixture::{bearer, in_ci, send, Answer, Stack};
use serde_json::{json, Value};

/// Status and JSON body of an HTTP/2 (prior knowledge) POST sent by `nghttp`, with trailers.
fn h2_post(url: &str, token: &str, body: &str, trailers: &[&str]) -> Option<(u16, Value)> {
    let dir = std::env::temp_dir().join(format!("mlgate-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join(format!("body-{}.json", body.len()));
    std::fs::write(&file, body).ok()?;
    let mut cmd = Command::new("nghttp");
    cmd.arg("-v")
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .arg("-H")
        .arg("content-type: application/json")
        .arg("-d")
        .arg(&file)
        .args(["-t", "10"]);
    for trailer in trailers {
        cmd.arg("--trailer").arg(trailer);
    }
    let output = match cmd.arg(url).output() {
        Ok(output) => output,
        Err(error) if !in_ci() => {
            eprintln!("\n!!!!!!!! nghttp not found ({error}): SKIPPING (make tools) !!!!!!!!\n");
            return None;
        }
        Err(error) => panic!("nghttp is required in CI (make tools): {error}"),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let status = text
        .lines()
        .find_map(|line| line.split(":status: ").nth(1))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no :status from nghttp:\n{text}"));
    Some((status, first_json_object(&text)))
}

/// The first JSON object in `text` (a response body among nghttp's frame log, or after an
/// HTTP/1.1 chunk size).
fn first_json_object(text: &str) -> Value {
    text.match_indices('{')
        .find_map(|(at, _)| {
            serde_json::Deserializer::from_str(&text[at..])
                .into_iter::<Value>()
                .next()
                .and_then(Result::ok)
        })
        .unwrap_or(Value::Null)
}

/// Who answered: mlgate (a reason) or the backend (an identity echo).
fn who(status: u16, body: &Value) -> String {
    match body["reason"].as_str() {
        Some(reason) => format!("mlgate {status} {reason}"),
        None if body.get("identity").is_some() => format!("backend {status}"),
        None => format!("? {status} {body}"),
    }
}

#[test]
fn http2_trailers_do_not_skip_the_body_model_decision_through_envoy() {
    let Some(stack) = Stack::start("h2-trailers", 1) else {
        return;
    };
    let alice = stack.token("alice");
    let url = stack.envoy.url("/v1/chat/completions");
    let refused = json!({"model": "gpt-4o", "messages": []}).to_string();
    let allowed = json!({"model": "gpt-4o-mini", "messages": []}).to_string();
    for trailers in [&[][..], &["x-checksum: c0ffee"][..]] {
        let Some((status, body)) = h2_post(&url, &alice, &refused, trailers) else {
            return;
        };
        assert_eq!(
            who(status, &body),
            "mlgate 403 model_not_allowed",
            "trailers {trailers:?}"
        );
        let (status, body) = h2_post(&url, &alice, &allowed, trailers).unwrap();
        assert_eq!(who(status, &body), "backend 200", "trailers {trailers:?}");
        assert_eq!(body["model"], "gpt-4o-mini");
    }
    // The audit record of the trailered refusal reached Envoy's log.
    let log = stack.envoy.log();
    assert!(
        log.contains("\"reason\":\"model_not_allowed\"") && log.contains("\"model\":\"gpt-4o\""),
        "no audit line for the refusal:\n{}",
        stack.envoy.log_tail()
    );
}

/// An HTTP/1.1 chunked body ends with its last chunk whether or not trailers follow (Envoy's
/// HTTP/1 codec drops request trailers unless `enable_trailers` is set).
#[test]
fn http1_chunked_bodies_with_trailers_are_judged_through_envoy() {
    let Some(stack) = Stack::start("h1-chunked", 1) else {
        return;
    };
    let alice = stack.token("alice");
    let port = stack.envoy.listen;
    let chunked = |model: &str| {
        let body = json!({"model": model, "messages": []}).to_string();
        let (head, tail) = body.split_at(7);
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: ml.contoso.example\r\n\
             Authorization: Bearer {alice}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {:x}\r\n{head}\r\n{:x}\r\n{tail}\r\n0\r\nx-checksum: c0ffee\r\n\r\n",
            head.len(),
            tail.len()
        );
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to Envoy");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let status: u16 = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        who(status, &first_json_object(body))
    };
    assert_eq!(chunked("gpt-4o"), "mlgate 403 model_not_allowed");
    assert_eq!(chunked("gpt-4o-mini"), "backend 200");
}

fn score(stack: &Stack, persona: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![bearer(&stack.token(persona))];
    all.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    send(
        "POST",
        &stack.envoy.url("/score"),
        &all,
        Some(&json!({"data": [[0.1, 0.2]]})),
    )
}

fn answered(answer: &Answer) -> String {
    who(answer.status, &answer.body)
}

/// Carl is a contractor (kept off `finance-*`) and an ML scientist (may score).
#[test]
fn a_repeated_or_missing_model_header_is_refused_through_envoy() {
    let Some(stack) = Stack::start("model-header", 1) else {
        return;
    };
    let deployment = "azureml-model-deployment";
    // Two headers: Envoy hands the filter both; an upstream taking the last would serve finance.
    let a = score(
        &stack,
        "carl",
        &[(deployment, "public-demo"), (deployment, "finance-risk")],
    );
    assert_eq!(answered(&a), "mlgate 400 model_ambiguous", "{}", a.raw);
    let a = score(&stack, "carl", &[(deployment, "public-demo,finance-risk")]);
    assert_eq!(answered(&a), "mlgate 400 model_ambiguous", "{}", a.raw);
    // Envoy passes a header with underscores by default; a CGI-style server reads it as the same.
    let a = score(
        &stack,
        "carl",
        &[
            (deployment, "public-demo"),
            ("azureml_model_deployment", "finance-risk"),
        ],
    );
    assert_eq!(answered(&a), "mlgate 400 model_ambiguous", "{}", a.raw);
    // No header: Azure ML would route by its traffic split, possibly to finance.
    let a = score(&stack, "carl", &[]);
    assert_eq!(answered(&a), "mlgate 400 model_missing", "{}", a.raw);
    // One value: judged, and exactly that value reaches the upstream.
    let a = score(
        &stack,
        "carl",
        &[("Azureml-Model-Deployment", "public-demo")],
    );
    assert_eq!(answered(&a), "backend 200", "{}", a.raw);
    assert_eq!(a.body["deployment"], "public-demo");
    assert_eq!(a.body["identity"]["x-mlgate-model"], "public-demo");
    let a = score(&stack, "carl", &[(deployment, "finance-risk")]);
    assert_eq!(answered(&a), "mlgate 403 denied_by_rule", "{}", a.raw);
}

/// A request that waits for keys (a token with a kid the proxy has not fetched yet) with its body
/// and trailers held by Envoy meanwhile: judged for its model once the keys land. And one that
/// ended with its headers: no body to wait for, so no model.
#[test]
fn requests_that_wait_for_keys_are_judged_for_their_model_through_envoy() {
    let Some(stack) = Stack::start("keys-wait", 1) else {
        return;
    };
    let url = stack.envoy.url("/v1/chat/completions");
    // Past min_refresh_interval_seconds (5 s in filters/demo.json) since the start-up fetch, so a
    // token with a new kid refetches at once.
    let warm = h2_post(
        &url,
        &stack.token("alice"),
        r#"{"model":"gpt-4o-mini"}"#,
        &[],
    );
    let Some((status, _)) = warm else {
        return;
    };
    assert_eq!(status, 200, "{}", stack.envoy.log_tail());
    std::thread::sleep(Duration::from_secs(6));
    stack
        .idp
        .rotate(Some(Duration::ZERO))
        .expect("rotate the IdP's key");
    let refused = json!({"model": "gpt-4o", "messages": []}).to_string();
    let (status, body) = h2_post(
        &url,
        &stack.token("alice"),
        &refused,
        &["x-checksum: c0ffee"],
    )
    .unwrap();
    assert_eq!(
        who(status, &body),
        "mlgate 403 model_not_allowed",
        "{}",
        stack.envoy.log_tail()
    );
    assert!(
        stack.envoy.log().contains("key(s) loaded"),
        "{}",
        stack.envoy.log_tail()
    );
    std::thread::sleep(Duration::from_secs(6));
    stack
        .idp
        .rotate(Some(Duration::ZERO))
        .expect("rotate the IdP's key");
    let empty = send(
        "POST",
        &url,
        &[
            bearer(&stack.token("alice")),
            ("content-type".into(), "application/json".into()),
        ],
        None,
    );
    assert_eq!(
        (empty.status, empty.body["reason"].as_str()),
        (400, Some("model_missing")),
        "{}",
        empty.raw
    );
}
