//! Through the real mlgate.wasm: the request is read the way the model server will read it, or
//! refused. One test per way a request could get past the model rules: trailers, a model that is
//! missing, repeated, spelled twice or unreadable, the caller type, claim equality, a quadratic
//! duplicate-key check before the signature, and fractional NumericDates.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use mlgate_harness::host::{Harness, Outcome};
use mlgate_harness::mint::TestKey;
use serde_json::{json, Value};

/// A deny rule that names models on every model route: Azure ML's `/score` (deployment in a
/// header), KServe's infer (model in the path), OpenAI's chat (model in the body).
fn guarded_config() -> Value {
    let mut config = entra_config();
    config["routes"][1]["deny"] = json!([{"groups": ["contractors"], "models": ["finance-*"]}]);
    config["routes"][1]["allow"] = json!([{"groups": ["ml-scientists"]}]);
    config["routes"][3]["deny"] = json!([{"groups": ["contractors"], "models": ["gpt-4o"]}]);
    config["routes"][3]["allow"] = json!([{"groups": ["ml-scientists"]}]);
    config
}

/// Alice, who is in ml-scientists and also a contractor: every deny rule above applies to her.
fn contractor_scientist(h: &Harness) -> String {
    user_token(h, |c| c["groups"] = json!([ML_SCIENTISTS, CONTRACTORS]))
}

fn chat<'h>(h: &'h Harness, token: &str) -> mlgate_harness::host::RequestBuilder<'h> {
    h.request()
        .method("POST")
        .path("/v1/chat/completions")
        .host("ml.contoso.example")
        .header("content-type", "application/json")
        .bearer(token)
}

fn audit_lines(out: &Outcome) -> Vec<Value> {
    out.logs_containing("mlgate audit ")
        .iter()
        .filter_map(|l| l.message.strip_prefix("mlgate audit "))
        .map(|json| serde_json::from_str(json).expect("audit line is JSON"))
        .collect()
}

// --- 1. Trailers --------------------------------------------------------------------------

#[test]
fn trailers_do_not_skip_the_body_model_decision() {
    let h = harness(&entra_config());
    let t = user_token(&h, |_| {});
    let refused = chat(&h, &t)
        .body(json!({"model": "gpt-4o", "messages": []}).to_string())
        .trailer("x-checksum", "abc")
        .send()
        .unwrap();
    assert_eq!(refused.status(), Some(403), "{refused}");
    assert_eq!(refused.reason().as_deref(), Some("model_not_allowed"));
    let audit = audit_lines(&refused);
    assert_eq!(audit.len(), 1, "{refused}");
    assert_eq!(audit[0]["reason"], "model_not_allowed");
    assert_eq!(audit[0]["model"], "gpt-4o");

    let body = json!({"model": "gpt-4o-mini", "messages": []}).to_string();
    let allowed = chat(&h, &t)
        .body(&body)
        .trailer("x-checksum", "abc")
        .send()
        .unwrap();
    assert!(allowed.is_forwarded(), "{allowed}");
    assert_eq!(allowed.body(), body.as_bytes());
    assert_eq!(audit_lines(&allowed)[0]["decision"], "allowed");
}

#[test]
fn trailers_without_data_frames_end_an_empty_body() {
    let h = harness(&entra_config());
    let t = user_token(&h, |_| {});
    let out = chat(&h, &t).trailer("x-checksum", "abc").send().unwrap();
    assert_eq!(out.status(), Some(400), "{out}");
    assert_eq!(out.reason().as_deref(), Some("model_missing"));
}

/// Remote keys at `idp`, none fetched yet: the first request waits for them.
fn waiting_for_keys(h_config: &mut Value) {
    h_config["providers"][0]["jwks"] = json!({"uri": "https://idp.example/keys", "cluster": "idp"});
}

fn answer_keys(h: &Harness) {
    let calls = h.pending_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let jwks = json!({"keys": [TestKey::rsa_a().public_jwk()]});
    h.respond_call(
        calls[0].token,
        200,
        &[("content-type", "application/json")],
        jwks.to_string(),
    )
    .unwrap();
}

#[test]
fn a_body_less_request_that_waited_for_keys_is_judged_for_its_model() {
    let mut config = entra_config();
    waiting_for_keys(&mut config);
    let h = harness(&config);
    let t = user_token(&h, |_| {});
    let out = chat(&h, &t).send().unwrap();
    assert!(out.is_paused(), "{out}");
    answer_keys(&h);
    let out = h.outcome(out.context_id()).unwrap();
    assert_eq!(out.status(), Some(400), "{out}");
    assert_eq!(out.reason().as_deref(), Some("model_missing"));
}

#[test]
fn a_body_with_trailers_that_waited_for_keys_is_judged_for_its_model() {
    let mut config = entra_config();
    waiting_for_keys(&mut config);
    let h = harness(&config);
    let t = user_token(&h, |_| {});
    let out = chat(&h, &t)
        .body_frames([&br#"{"model":"gpt"#[..], br#"-4o","messages":[]}"#])
        .trailer("x-checksum", "abc")
        .send()
        .unwrap();
    assert!(out.is_paused(), "{out}");
    answer_keys(&h);
    let out = h.outcome(out.context_id()).unwrap();
    assert_eq!(out.status(), Some(403), "{out}");
    assert_eq!(out.reason().as_deref(), Some("model_not_allowed"));
}

/// Envoy with `allow_on_headers_stop_iteration`: the body and trailers arrive while the request
/// waits for keys. They are held, never released, and judged once the keys land.
#[test]
fn a_body_and_trailers_that_arrive_while_waiting_for_keys_are_held_and_judged() {
    let mut config = entra_config();
    waiting_for_keys(&mut config);
    let h = Harness::builder()
        .body_while_headers_held()
        .load()
        .unwrap()
        .configure(config)
        .unwrap();
    let t = user_token(&h, |_| {});
    let send = |model: &str, trailers: bool| {
        let body = json!({"model": model, "messages": []}).to_string();
        let (head, tail) = body.split_at(9);
        let mut r = chat(&h, &t).body_frames([head, tail]);
        if trailers {
            r = r.trailer("x-checksum", "abc");
        }
        let out = r.send().unwrap();
        assert!(out.is_paused(), "{out}");
        out
    };
    let refused = send("gpt-4o", true);
    let allowed = send("gpt-4o-mini", true);
    let refused_at_end = send("gpt-4o", false);
    assert!(h.pending_requests().len() == 3);
    answer_keys(&h);
    for waiting in [&refused, &refused_at_end] {
        let out = h.outcome(waiting.context_id()).unwrap();
        assert_eq!(out.status(), Some(403), "{out}");
        assert_eq!(out.reason().as_deref(), Some("model_not_allowed"));
    }
    let out = h.outcome(allowed.context_id()).unwrap();
    assert!(out.is_forwarded(), "{out}");
    assert_eq!(out.body_json()["model"], "gpt-4o-mini");
    assert_eq!(out.forwarded_header("x-mlgate-principal"), Some(ALICE));
    assert_eq!(out.forwarded_header("x-mlgate-model"), Some("gpt-4o-mini"));
}

// --- 2. A model that cannot be read ---------------------------------------------------------

#[test]
fn a_missing_model_header_does_not_dodge_a_models_deny_rule() {
    let h = harness(&guarded_config());
    let t = contractor_scientist(&h);
    let out = score(&h, &t);
    assert_eq!(out.status(), Some(400), "{out}");
    assert_eq!(out.reason().as_deref(), Some("model_missing"));
    assert_eq!(out.response_header("www-authenticate"), None);
    assert_eq!(out.body_json()["error"], "bad_request");
    // A scientist who is no contractor still needs to name the deployment: the rules look at it.
    let plain = user_token(&h, |_| {});
    assert_eq!(verdict(&score(&h, &plain)), "model_missing");
}

#[test]
fn allow_missing_model_lets_a_default_deployment_through_where_no_deny_rule_names_models() {
    let mut config = entra_config();
    config["routes"][1]["allow_missing_model"] = json!(true);
    config["routes"][1]["allow"] = json!([{"groups": ["ml-scientists"], "models": ["blue", "*"]}]);
    let h = harness(&config);
    let t = user_token(&h, |_| {});
    // "*" matches a named model; a request without one is judged as naming none.
    assert_eq!(verdict(&score(&h, &t)), "model_not_allowed");
    config["routes"][1]["allow"] = json!([{"groups": ["ml-scientists"]}, {"models": ["blue"]}]);
    let h = harness(&config);
    assert_eq!(verdict(&score(&h, &user_token(&h, |_| {}))), "forwarded");
}

#[test]
fn a_body_serde_refuses_but_a_model_server_accepts_never_reads_as_no_model() {
    let h = harness(&guarded_config());
    let t = contractor_scientist(&h);
    let deep = format!(
        "{{\"model\":\"gpt-4o\",\"messages\":{}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("nesting deeper than serde's limit", deep.into_bytes()),
        ("a BOM", b"\xef\xbb\xbf{\"model\":\"gpt-4o\"}".to_vec()),
        ("NaN", br#"{"model":"gpt-4o","temperature":NaN}"#.to_vec()),
        (
            "1e400",
            br#"{"model":"gpt-4o","temperature":1e400}"#.to_vec(),
        ),
        (
            "a lone surrogate",
            br#"{"model":"gpt-4o","user":"\ud800"}"#.to_vec(),
        ),
        (
            "a lone surrogate in the model",
            br#"{"model":"gpt-4o\ud800"}"#.to_vec(),
        ),
    ];
    for (what, body) in bodies {
        let out = chat(&h, &t).body(&body).send().unwrap();
        assert!(
            matches!(
                verdict(&out).as_str(),
                "denied_by_rule" | "model_unreadable"
            ),
            "{what}: {out}"
        );
    }
}

#[test]
fn a_body_in_another_media_type_or_encoding_is_refused_before_it_is_read() {
    let h = harness(&guarded_config());
    let t = contractor_scientist(&h);
    let body = br#"{"model":"gpt-4o"}"#;
    let send = |content_type: Option<&str>, encoding: Option<&str>| {
        let mut r = h
            .request()
            .method("POST")
            .path("/v1/chat/completions")
            .bearer(&t)
            .body(body);
        if let Some(content_type) = content_type {
            r = r.header("content-type", content_type);
        }
        if let Some(encoding) = encoding {
            r = r.header("content-encoding", encoding);
        }
        r.send().unwrap()
    };
    for (content_type, encoding) in [
        (Some("application/json"), Some("gzip")),
        (Some("text/plain"), None),
        (None, None),
        (Some("application/json; charset=utf-16"), None),
    ] {
        let out = send(content_type, encoding);
        assert_eq!(
            out.status(),
            Some(415),
            "{content_type:?} {encoding:?}: {out}"
        );
        assert_eq!(out.reason().as_deref(), Some("unsupported_media_type"));
    }
    let out = send(Some("application/json; charset=utf-8"), Some("identity"));
    assert_eq!(verdict(&out), "denied_by_rule");
}

// --- 3. A repeated model header ------------------------------------------------------------

#[test]
fn a_repeated_model_header_is_refused() {
    let h = harness(&guarded_config());
    let t = contractor_scientist(&h);
    let repeated = h
        .request()
        .method("POST")
        .path("/score")
        .bearer(&t)
        .header("azureml-model-deployment", "public-demo")
        .header("azureml-model-deployment", "finance-risk")
        .send()
        .unwrap();
    assert_eq!(repeated.status(), Some(400), "{repeated}");
    assert_eq!(repeated.reason().as_deref(), Some("model_ambiguous"));
    for (name, value) in [
        ("azureml-model-deployment", "public-demo,finance-risk"),
        ("azureml_model_deployment", "finance-risk"),
    ] {
        let out = h
            .request()
            .method("POST")
            .path("/score")
            .bearer(&t)
            .header("azureml-model-deployment", "public-demo")
            .header(name, value)
            .send()
            .unwrap();
        assert_eq!(verdict(&out), "model_ambiguous", "{name}: {value}");
    }
    // One value: the upstream receives exactly the value that was judged.
    let one = h
        .request()
        .method("POST")
        .path("/score")
        .bearer(&t)
        .header("azureml-model-deployment", "public-demo")
        .send()
        .unwrap();
    assert!(one.is_forwarded(), "{one}");
    let forwarded = one.forwarded_headers().unwrap();
    assert_eq!(
        forwarded.get_all("azureml-model-deployment"),
        vec!["public-demo"]
    );
    assert_eq!(one.forwarded_header("x-mlgate-model"), Some("public-demo"));
}

// --- 4. Body key spelling --------------------------------------------------------------------

#[test]
fn body_key_spelling_cannot_name_a_second_model() {
    let h = harness(&guarded_config());
    let t = contractor_scientist(&h);
    for body in [
        r#"{"model":"gpt-4o-mini","Model":"gpt-4o"}"#,
        r#"{"model":"gpt-4o-mini","MODEL":"gpt-4o"}"#,
        r#"{"model":"gpt-4o-mini","model":"gpt-4o"}"#,
        r#"{"model":"gpt-4o-mini","mod\u0065l":"gpt-4o"}"#,
        r#"{"Model":"gpt-4o"}"#,
    ] {
        let out = chat(&h, &t).body(body).send().unwrap();
        assert_eq!(out.status(), Some(400), "{body}: {out}");
        assert_eq!(out.reason().as_deref(), Some("model_ambiguous"), "{body}");
    }
    let out = chat(&h, &t)
        .body(r#"{"model":"gpt-4o-mini"}"#)
        .send()
        .unwrap();
    assert!(out.is_forwarded(), "{out}");
}

// --- 5. Caller type --------------------------------------------------------------------------

#[test]
fn a_user_token_with_app_roles_is_not_an_app_caller() {
    let h = harness(&entra_config());
    // An Entra v2 ID token of a user assigned the API's app role: roles, no scp, no idtyp,
    // and the app's client ID as audience (accepted here as the API's audience).
    let id_token = user_token(&h, |c| {
        c["roles"] = json!(["Scoring.Invoke"]);
        c["groups"] = json!([]);
        c.as_object_mut().unwrap().remove("scp");
    });
    let out = h
        .request()
        .method("POST")
        .path("/score")
        .bearer(&id_token)
        .header("azureml-model-deployment", "blue")
        .send()
        .unwrap();
    assert_eq!(verdict(&out), "no_rule_matched", "{out}");
    let app = user_token(&h, |c| {
        c["roles"] = json!(["Scoring.Invoke"]);
        c["groups"] = json!([]);
        c["idtyp"] = json!("app");
        c.as_object_mut().unwrap().remove("scp");
    });
    let out = h
        .request()
        .method("POST")
        .path("/score")
        .bearer(&app)
        .header("azureml-model-deployment", "blue")
        .send()
        .unwrap();
    assert!(out.is_forwarded(), "{out}");
    assert_eq!(out.forwarded_header("x-mlgate-caller"), Some("app"));
}

#[test]
fn an_id_token_is_not_an_access_token() {
    let h = harness(&entra_config());
    for claim in ["nonce", "at_hash", "c_hash"] {
        let t = user_token(&h, |c| c[claim] = json!("x1"));
        let out = score(&h, &t);
        assert_eq!(out.status(), Some(401), "{claim}: {out}");
        assert_eq!(out.reason().as_deref(), Some("id_token_not_accepted"));
    }
}

// --- 6. Claim equality -----------------------------------------------------------------------

#[test]
fn a_claims_condition_does_not_match_a_word_inside_a_claim() {
    let mut config = entra_config();
    config["routes"][1]["allow"] = json!([{"claims": {"department": "finance"}}]);
    let h = harness(&config);
    let sales = user_token(&h, |c| c["department"] = json!("Sales finance"));
    assert_eq!(verdict(&score(&h, &sales)), "no_rule_matched");
    let finance = user_token(&h, |c| c["department"] = json!("finance"));
    assert_eq!(verdict(&score(&h, &finance)), "forwarded");
    let listed = user_token(&h, |c| c["department"] = json!(["sales", "finance"]));
    assert_eq!(verdict(&score(&h, &listed)), "forwarded");
}

// --- 7. Cost of many claims before the signature -------------------------------------------

/// wasm operators the filter runs for one refused request with `token`.
fn operators_for(token: &str) -> u64 {
    let h = Harness::builder()
        .count_wasm_operators()
        .load()
        .unwrap()
        .configure(entra_config())
        .unwrap();
    let before = h.wasm_operators().unwrap();
    let out = score(&h, token);
    assert_eq!(out.status(), Some(401), "{out}");
    h.wasm_operators().unwrap() - before
}

/// How a forged token fills its payload.
#[derive(Clone, Copy)]
enum Filling {
    /// Nothing added: a token of the usual size.
    Nothing,
    /// One long string claim.
    LongClaim,
    /// Short distinct claims at the top level.
    TopLevelClaims,
    /// 200 short claims at the top level, the rest in one nested object.
    NestedClaims,
}

/// A token with a broken signature (refused after its claims are read), its payload filled to
/// about `payload_bytes`.
fn forged(h: &Harness, filling: Filling, payload_bytes: usize) -> String {
    let mut claims = user_claims(h);
    let mut nested = serde_json::Map::new();
    let mut i = 0;
    while claims.to_string().len() + Value::Object(nested.clone()).to_string().len() < payload_bytes
    {
        match filling {
            Filling::Nothing => break,
            Filling::LongClaim => {
                claims["pad"] = json!("p".repeat(payload_bytes - claims.to_string().len()));
                break;
            }
            Filling::TopLevelClaims => claims[format!("k{i}")] = json!(0),
            Filling::NestedClaims if i < 200 => claims[format!("k{i}")] = json!(0),
            Filling::NestedClaims => {
                nested.insert(format!("k{i}"), json!(0));
            }
        }
        i += 1;
    }
    if !nested.is_empty() {
        claims["ext"] = Value::Object(nested);
    }
    let signed = TestKey::rsa_a().sign(&claims, Algorithm::RS256);
    let (head, _) = signed.rsplit_once('.').unwrap();
    format!("{head}.{}", "A".repeat(342))
}

#[test]
fn thousands_of_distinct_claims_cost_no_more_than_one_long_claim_before_the_signature() {
    let h = harness(&entra_config());
    // 11 KiB of payload, a 16 KiB token once encoded: ~1,700 distinct keys.
    let long = operators_for(&forged(&h, Filling::LongClaim, 11_500));
    let top = operators_for(&forged(&h, Filling::TopLevelClaims, 11_500));
    let nested = operators_for(&forged(&h, Filling::NestedClaims, 11_500));
    let normal = operators_for(&forged(&h, Filling::Nothing, 0));
    eprintln!(
        "wasm operators per forged token: {top} top-level claims, {nested} nested claims, \
         {long} one long claim, {normal} normal"
    );
    for (what, operators) in [("top-level", top), ("nested", nested)] {
        let ratio = operators as f64 / long as f64;
        assert!(
            ratio < 1.5,
            "{operators} operators for many {what} claims vs {long} for one long claim ({ratio:.1}x)"
        );
    }
}

// --- 8. Fractional NumericDates --------------------------------------------------------------

#[test]
fn fractional_numeric_dates_are_accepted() {
    let h = harness(&entra_config());
    let now = h.now_unix() as f64;
    let t = user_token(&h, |c| {
        c["exp"] = json!(now + 3600.5);
        c["nbf"] = json!(now - 60.25);
        c["iat"] = json!(now - 60.25);
    });
    let out = score(&h, &t);
    assert!(out.is_forwarded(), "{out}");
    for bad in [json!(-1.5), json!("1800000000"), json!(1e300)] {
        let t = user_token(&h, |c| c["exp"] = bad.clone());
        assert_eq!(verdict(&score(&h, &t)), "malformed_token", "{bad}");
    }
}
