//! Attacks through a real Envoy (issue 7): path confusion (what Envoy's `normalize_path`,
//! `merge_slashes` and `path_with_escaped_slashes_action: REJECT_REQUEST` in envoy/demo.yaml do
//! before mlgate runs, and what mlgate refuses itself), repeated `Authorization` headers, and
//! spoofed identity headers in dry-run mode and on unmatched-allow requests. The table in
//! envoy/README.md ("Path normalization") is this file's first test.

mod e2e_fixture;

use e2e_fixture::{bearer, send, Answer, Stack};
use mlgate_harness::idp;
use serde_json::{json, Value};

/// Who answered: mlgate (a JSON body with a reason), the backend (an identity echo), or Envoy
/// itself (anything else, e.g. its plain-text 400 for an escaped slash).
fn who(answer: &Answer) -> String {
    if let Some(reason) = answer.body["reason"].as_str() {
        format!("mlgate {} {reason}", answer.status)
    } else if answer.body.get("identity").is_some() {
        format!("backend {}", answer.status)
    } else if answer.status == 0 {
        "client refused to send it".to_string()
    } else {
        format!("envoy {}", answer.status)
    }
}

/// Carl (a contractor) may infer on any model but `finance-*`. Each path below tries to reach
/// finance-risk; the expected answer says which layer stops it.
#[test]
fn path_confusion_through_envoy() {
    let Some(stack) = Stack::start("attack-paths", 1) else {
        return;
    };
    let carl = stack.token("carl");
    let body = json!({"inputs": []});
    let cases: &[(&str, &str)] = &[
        // Envoy normalises (RFC 3986 dot segments, merged slashes); mlgate judges the result.
        ("/v2/models/finance-risk/infer", "mlgate 403 denied_by_rule"),
        (
            "/v2/models/fraud-detector/../finance-risk/infer",
            "mlgate 403 denied_by_rule",
        ),
        (
            "/v2/models/./finance-risk/infer",
            "mlgate 403 denied_by_rule",
        ),
        (
            "/v2/models//finance-risk/infer",
            "mlgate 403 denied_by_rule",
        ),
        (
            "//v2/models/finance-risk/infer",
            "mlgate 403 denied_by_rule",
        ),
        (
            "/v2/models/fraud-detector/%2e%2e/finance-risk/infer",
            "mlgate 403 denied_by_rule",
        ),
        (
            "/v2/models/fraud-detector/%2E%2E/finance-risk/infer",
            "mlgate 403 denied_by_rule",
        ),
        (
            "/v2/models/fraud-detector\\..\\finance-risk/infer",
            "mlgate 403 denied_by_rule",
        ),
        // Envoy rejects escaped slashes outright (path_with_escaped_slashes_action).
        ("/v2/models/finance-risk%2Finfer", "envoy 400"),
        ("/v2/models/finance-risk%2finfer", "envoy 400"),
        (
            "/v2/models/fraud-detector%2F..%2Ffinance-risk/infer",
            "envoy 400",
        ),
        (
            "/v2/models/fraud-detector%5C..%5Cfinance-risk/infer",
            "envoy 400",
        ),
        // Envoy decodes percent-encoded unreserved characters (%66 is `f`)…
        (
            "/v2/models/%66inance-risk/infer",
            "mlgate 403 denied_by_rule",
        ),
        // …but only once, and leaves `;` alone: mlgate refuses what it cannot match safely.
        (
            "/v2/models/%2566inance-risk/infer",
            "mlgate 400 invalid_path",
        ),
        (
            "/v2/models/finance-risk;v=1/infer",
            "mlgate 400 invalid_path",
        ),
        ("/v2/models/finance-risk/infer;", "mlgate 400 invalid_path"),
        // Matching is case-sensitive; the query string never takes part in it.
        (
            "/V2/models/finance-risk/infer",
            "mlgate 403 no_matching_route",
        ),
        (
            "/v2/models/finance-risk/INFER",
            "mlgate 403 no_matching_route",
        ),
        (
            "/v2/models/finance-risk/infer?/../../fraud-detector/infer",
            "mlgate 403 denied_by_rule",
        ),
        (
            "/v2/models/fraud-detector/infer?model=finance-risk",
            "backend 200",
        ),
    ];
    let mut table = Vec::new();
    let mut errors = Vec::new();
    for (path, want) in cases {
        let answer = send(
            "POST",
            &stack.envoy.url(path),
            &[bearer(&carl)],
            Some(&body),
        );
        let got = who(&answer);
        table.push(format!("| `{path}` | {got} |"));
        if got != *want {
            errors.push(format!(
                "POST {path}: {got} (expected {want}): {}",
                answer.raw.trim()
            ));
        }
        if answer.status == 200 && path.contains("finance") && !path.contains("?model=") {
            errors.push(format!(
                "POST {path} reached the backend as carl: {}",
                answer.raw
            ));
        }
    }
    eprintln!("{}", table.join("\n"));
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Dot segments that leave the route: Envoy resolves them first, so the filter judges the
/// path the upstream will serve (`/score/../admin` is `/admin`, which no route matches).
#[test]
fn dot_segments_are_judged_after_envoy_resolves_them() {
    let Some(stack) = Stack::start("attack-dots", 1) else {
        return;
    };
    let alice = stack.token("alice");
    let a = send(
        "GET",
        &stack.envoy.url("/score/../admin"),
        &[bearer(&alice)],
        None,
    );
    assert_eq!(who(&a), "mlgate 403 no_matching_route", "{}", a.raw);
    // /healthz/../score is /score: it needs alice's token like any /score request.
    let headers = |token: Option<&str>| {
        let mut h = vec![(
            "azureml-model-deployment".to_string(),
            "fraud-detector".to_string(),
        )];
        if let Some(t) = token {
            h.push(bearer(t));
        }
        h
    };
    let body = json!({"input_data": {"data": [[1]]}});
    let a = send(
        "POST",
        &stack.envoy.url("/healthz/../score"),
        &headers(None),
        Some(&body),
    );
    assert_eq!(who(&a), "mlgate 401 missing_token", "{}", a.raw);
    let a = send(
        "POST",
        &stack.envoy.url("/healthz/../score"),
        &headers(Some(&alice)),
        Some(&body),
    );
    assert_eq!(who(&a), "backend 200", "{}", a.raw);
    assert_eq!(a.body["identity"]["x-mlgate-route"], "score");
    // A query string that looks like a path changes nothing: /healthz stays anonymous.
    let a = send("GET", &stack.envoy.url("/healthz?/../score"), &[], None);
    assert_eq!(who(&a), "backend 200", "{}", a.raw);
    assert_eq!(a.body["identity"]["x-mlgate-route"], "health");
    assert!(a.body["identity"].get("x-mlgate-principal").is_none());
}

/// Two `Authorization` headers are refused, whichever token comes first and when both are the same.
/// Envoy 1.40 keeps `authorization` as an inline header and joins a repeat into one value
/// (`Bearer a,Bearer b`) before any filter reads it, in the header map and in a single-header read
/// alike: the filter sees what a joining proxy would send (the last case below).
#[test]
fn multiple_authorization_headers_through_envoy() {
    let Some(stack) = Stack::start("attack-authz", 1) else {
        return;
    };
    let alice = stack.token("alice");
    let bob = stack.token("bob");
    let url = stack.envoy.url("/v2/models/fraud-detector/infer");
    let body = json!({"inputs": []});
    for (first, second) in [(&alice, &alice), (&bob, &alice), (&alice, &bob)] {
        let a = send("POST", &url, &[bearer(first), bearer(second)], Some(&body));
        assert_eq!(who(&a), "mlgate 401 multiple_tokens", "{}", a.raw);
        assert!(
            a.www_authenticate
                .as_deref()
                .unwrap_or_default()
                .contains("invalid_request"),
            "{:?}",
            a.www_authenticate
        );
    }
    // One header with two credentials, as a joining proxy would send it.
    let joined = (
        "authorization".to_string(),
        format!("Bearer {bob}, Bearer {alice}"),
    );
    let a = send("POST", &url, &[joined], Some(&body));
    assert_eq!(who(&a), "mlgate 401 multiple_tokens", "{}", a.raw);
    // And alice alone still works.
    let a = send("POST", &url, &[bearer(&alice)], Some(&body));
    assert_eq!(who(&a), "backend 200", "{}", a.raw);
}

fn spoofed(extra: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = [
        "x-mlgate-principal",
        "X-MLGATE-GROUPS",
        "X-Mlgate-Route",
        "x-MlGaTe-TeNaNt",
        "x-mlgate-dry-run",
        "x-mlgate-anything",
    ]
    .iter()
    .map(|name| (name.to_string(), "spoofed".to_string()))
    .collect();
    headers.extend(extra);
    headers
}

fn assert_not_spoofed(what: &str, answer: &Answer) -> Value {
    let identity = answer.body["identity"].clone();
    assert!(
        identity.is_object(),
        "{what}: no echo from the backend: {}",
        answer.raw
    );
    for (name, value) in identity.as_object().unwrap() {
        assert!(
            !value.to_string().contains("spoofed"),
            "{what}: {name} = {value} reached the backend"
        );
    }
    identity
}

/// Dry-run lets refused requests through: the filter's verdict header is the only
/// `x-mlgate-dry-run` the upstream sees, and spoofed identity never rides along.
#[test]
fn spoofed_identity_headers_in_dry_run_through_envoy() {
    let Some(stack) = Stack::start_with("attack-dryrun", 1, |c| c["mode"] = json!("dry_run"))
    else {
        return;
    };
    let bob = stack.token("bob");
    let score = |headers: Vec<(String, String)>| {
        let mut h = spoofed(headers);
        h.push(("azureml-model-deployment".into(), "fraud-detector".into()));
        send(
            "POST",
            &stack.envoy.url("/score"),
            &h,
            Some(&json!({"input_data": {}})),
        )
    };
    // Bob may not score: would be refused, goes through with the verdict.
    let a = score(vec![bearer(&bob)]);
    let identity = assert_not_spoofed("bob in dry-run", &a);
    assert_eq!(identity["x-mlgate-dry-run"], "no_rule_matched", "{}", a.raw);
    assert_eq!(
        identity["x-mlgate-principal"],
        idp::persona("bob").unwrap().oid
    );
    // No token at all.
    let a = score(vec![]);
    let identity = assert_not_spoofed("anonymous in dry-run", &a);
    assert_eq!(identity["x-mlgate-dry-run"], "missing_token", "{}", a.raw);
    assert!(identity.get("x-mlgate-principal").is_none());
    // An ambiguous path is let through in dry-run too, flagged.
    let a = send(
        "GET",
        &stack.envoy.url("/v2/models/fraud-detector;x=1"),
        &spoofed(vec![bearer(&bob)]),
        None,
    );
    let identity = assert_not_spoofed("bad path in dry-run", &a);
    assert_eq!(identity["x-mlgate-dry-run"], "invalid_path", "{}", a.raw);
}

/// `unmatched: allow` lets unrouted requests through without identity, and strips spoofed
/// identity from them.
#[test]
fn spoofed_identity_headers_on_unmatched_allow_through_envoy() {
    let Some(stack) = Stack::start_with("attack-unmatched", 1, |c| c["unmatched"] = json!("allow"))
    else {
        return;
    };
    let alice = stack.token("alice");
    for path in ["/elsewhere", "/SCORE", "/v2/models"] {
        let a = send(
            "GET",
            &stack.envoy.url(path),
            &spoofed(vec![bearer(&alice)]),
            None,
        );
        let identity = assert_not_spoofed(path, &a);
        let names: Vec<&String> = identity
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("x-mlgate-"))
            .collect();
        assert!(names.is_empty(), "{path}: {names:?} reached the backend");
    }
}

/// A header value that is not UTF-8 (HTTP's obs-text, which Envoy passes on) reaches the filter
/// as bytes: the request is still judged, and a spoofed identity header spelled that way is still
/// stripped (the demo backend cannot read such a value: had it been forwarded, the answer would
/// be Envoy's 503). Sent over a raw socket: HTTP client libraries will not send such bytes.
#[test]
fn non_utf8_header_values_through_envoy() {
    use std::io::{Read, Write};
    let Some(stack) = Stack::start("attack-obs-text", 1) else {
        return;
    };
    let alice = stack.token("alice");
    let url = stack.envoy.url("/v2/models/fraud-detector/infer");
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let body = br#"{"inputs":[]}"#;
    let mut request = Vec::new();
    request.extend_from_slice(b"POST /v2/models/fraud-detector/infer HTTP/1.1\r\n");
    request.extend_from_slice(format!("host: {authority}\r\n").as_bytes());
    request.extend_from_slice(format!("authorization: Bearer {alice}\r\n").as_bytes());
    request.extend_from_slice(b"x-mlgate-principal: spoofed caf\xe9 \xff\xfe\r\n");
    request.extend_from_slice(b"content-type: application/json\r\n");
    request.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    request.extend_from_slice(b"connection: close\r\n\r\n");
    request.extend_from_slice(body);
    let mut socket = std::net::TcpStream::connect(&authority).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    socket.write_all(&request).unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("spoofed"), "{answer}");
    let oid = idp::persona("alice").unwrap().oid;
    assert!(answer.contains(oid), "alice's oid not forwarded: {answer}");
}
