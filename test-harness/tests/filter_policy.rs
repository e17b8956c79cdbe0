//! Through the real mlgate.wasm: route matching, rules, models, identity headers, dry-run,
//! groups overage and nested claims.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use mlgate_harness::host::Outcome;
use mlgate_harness::mint::{self, TestKey};
use serde_json::{json, Value};

fn send(h: &mlgate_harness::host::Harness, method: &str, path: &str, token: &str) -> Outcome {
    h.request()
        .method(method)
        .path(path)
        .host("ml.contoso.example")
        .bearer(token)
        .send()
        .unwrap()
}

#[test]
fn anonymous_route_needs_no_token() {
    let h = harness(&entra_config());
    let out = h.request().method("GET").path("/healthz").send().unwrap();
    assert!(out.is_forwarded(), "{out}");
    assert_eq!(out.forwarded_header("x-mlgate-route"), Some("health"));
    assert_eq!(out.forwarded_header("x-mlgate-principal"), None);
}

#[test]
fn unmatched_request_is_403_without_challenge() {
    let h = harness(&entra_config());
    let out = send(&h, "GET", "/admin", &user_token(&h, |_| {}));
    assert_eq!(out.status(), Some(403));
    assert_eq!(out.reason().as_deref(), Some("no_matching_route"));
    assert_eq!(out.response_header("www-authenticate"), None);
}

#[test]
fn unmatched_allow_passes_but_still_strips_identity_headers() {
    let mut config = entra_config();
    config["unmatched"] = json!("allow");
    let h = harness(&config);
    let out = h
        .request()
        .method("GET")
        .path("/other")
        .header("x-mlgate-principal", "admin")
        .send()
        .unwrap();
    assert!(out.is_forwarded());
    assert_eq!(out.forwarded_header("x-mlgate-principal"), None);
}

#[test]
fn method_must_match() {
    let h = harness(&entra_config());
    assert_eq!(
        verdict(&send(&h, "GET", "/score", &user_token(&h, |_| {}))),
        "no_matching_route"
    );
}

#[test]
fn host_patterns_exact_and_wildcard() {
    let mut config = entra_config();
    config["routes"] = json!([
        {"name": "prod", "match": {"hosts": ["ml.contoso.example"], "path": "/score"}, "allow": [{"groups": ["ml-scientists"]}]},
        {"name": "any-sub", "match": {"hosts": ["*.lab.contoso.example"], "path": "/score"}, "allow": [{"groups": ["contractors"]}]}
    ]);
    let h = harness(&config);
    let token = user_token(&h, |_| {});
    let on = |host: &str| {
        h.request()
            .method("POST")
            .path("/score")
            .host(host)
            .bearer(&token)
            .send()
            .unwrap()
    };
    assert_eq!(
        on("ML.Contoso.example:443").forwarded_header("x-mlgate-route"),
        Some("prod")
    );
    assert_eq!(verdict(&on("gpu1.lab.contoso.example")), "no_rule_matched");
    assert_eq!(verdict(&on("lab.contoso.example")), "no_matching_route");
    assert_eq!(verdict(&on("ml.contoso.example.evil")), "no_matching_route");
}

#[test]
fn header_match_present_absent_exact() {
    let mut config = entra_config();
    config["routes"] = json!([
        {"name": "canary", "match": {"path": "/score", "headers": [{"name": "x-canary", "exact": "1"}]}, "allow": [{"groups": ["contractors"]}]},
        {"name": "score", "match": {"path": "/score", "headers": [{"name": "x-debug", "present": false}]}, "allow": [{"groups": ["ml-scientists"]}]}
    ]);
    let h = harness(&config);
    let token = user_token(&h, |_| {});
    let base = || h.request().method("POST").path("/score").bearer(&token);
    assert_eq!(
        verdict(&base().header("x-canary", "1").send().unwrap()),
        "no_rule_matched"
    );
    assert!(base()
        .header("x-canary", "2")
        .send()
        .unwrap()
        .is_forwarded());
    assert_eq!(
        verdict(&base().header("x-debug", "on").send().unwrap()),
        "no_matching_route"
    );
}

#[test]
fn path_template_extracts_model_for_rules_and_headers() {
    let h = harness(&entra_config());
    let out = send(
        &h,
        "POST",
        "/v2/models/resnet-50/infer",
        &user_token(&h, |_| {}),
    );
    assert_eq!(
        out.forwarded_header("x-mlgate-model"),
        Some("resnet-50"),
        "{out}"
    );
    assert_eq!(out.forwarded_header("x-mlgate-route"), Some("infer"));
}

#[test]
fn path_template_with_suffix_segment() {
    let mut config = entra_config();
    config["routes"] = json!([
        {"name": "predict", "match": {"path_template": "/v1/models/{model}:predict"}, "allow": [{"groups": ["ml-scientists"], "models": ["fraud*"]}]}
    ]);
    let h = harness(&config);
    let token = user_token(&h, |_| {});
    assert_eq!(
        send(&h, "POST", "/v1/models/fraud-v2:predict", &token).forwarded_header("x-mlgate-model"),
        Some("fraud-v2")
    );
    assert_eq!(
        verdict(&send(&h, "POST", "/v1/models/churn:predict", &token)),
        "model_not_allowed"
    );
    assert_eq!(
        verdict(&send(&h, "POST", "/v1/models/fraud:explain", &token)),
        "no_matching_route"
    );
}

#[test]
fn query_string_does_not_affect_path_matching() {
    let h = harness(&entra_config());
    let out = send(
        &h,
        "POST",
        "/v2/models/resnet/infer?debug=/admin",
        &user_token(&h, |_| {}),
    );
    assert!(out.is_forwarded(), "{out}");
}

#[test]
fn deny_rule_wins_over_allow_rule() {
    let h = harness(&entra_config());
    let contractor = user_token(&h, |c| c["groups"] = json!([CONTRACTORS]));
    let out = send(&h, "POST", "/v2/models/finance-forecast/infer", &contractor);
    assert_eq!(out.status(), Some(403));
    assert_eq!(out.reason().as_deref(), Some("denied_by_rule"));
    assert_eq!(
        out.response_header("www-authenticate"),
        Some("Bearer realm=\"mlgate\", error=\"insufficient_scope\", error_description=\"denied_by_rule\"")
    );
    assert!(send(&h, "POST", "/v2/models/resnet/infer", &contractor).is_forwarded());
}

#[test]
fn no_allow_rule_matched_is_403() {
    let h = harness(&entra_config());
    let out = send(
        &h,
        "POST",
        "/v2/models/resnet/infer",
        &user_token(&h, |c| c["groups"] = json!([])),
    );
    assert_eq!(out.status(), Some(403));
    assert_eq!(out.reason().as_deref(), Some("no_rule_matched"));
}

#[test]
fn model_from_header_azure_ml_deployment() {
    let h = harness(&entra_config());
    let out = h
        .request()
        .method("POST")
        .path("/score")
        .bearer(&user_token(&h, |_| {}))
        .header("azureml-model-deployment", "blue")
        .send()
        .unwrap();
    assert_eq!(out.forwarded_header("x-mlgate-model"), Some("blue"));
}

#[test]
fn model_from_json_body_openai_compatible() {
    let h = harness(&entra_config());
    let token = user_token(&h, |_| {});
    let chat = |model: &str| {
        h.request()
            .method("POST")
            .path("/v1/chat/completions")
            .bearer(&token)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .unwrap()
    };
    let allowed = chat("llama-3-8b");
    assert!(allowed.is_forwarded(), "{allowed}");
    // The request is held whole (Envoy with allow_on_headers_stop_iteration) until the model is
    // read, so the body's model is announced in a header too.
    assert_eq!(
        allowed.forwarded_header("x-mlgate-model"),
        Some("llama-3-8b")
    );
    assert_eq!(allowed.forwarded_header("x-mlgate-principal"), Some(ALICE));
    assert_eq!(
        allowed.body(),
        br#"{"messages":[{"content":"hi","role":"user"}],"model":"llama-3-8b"}"#
    );
    assert_eq!(verdict(&chat("gpt-4o")), "model_not_allowed");
}

#[test]
fn json_body_over_limit_is_413() {
    let mut config = entra_config();
    config["max_body_bytes"] = json!(64);
    let h = harness(&config);
    let out = h
        .request()
        .method("POST")
        .path("/v1/chat/completions")
        .bearer(&user_token(&h, |_| {}))
        .json(&json!({"model": "llama-3", "messages": [{"content": "x".repeat(200)}]}))
        .send()
        .unwrap();
    assert_eq!(out.status(), Some(413), "{out}");
    assert_eq!(out.reason().as_deref(), Some("body_too_large"));
}

#[test]
fn app_only_caller_from_managed_identity_fixture() {
    let h = harness(&entra_config());
    let claims = mint::claims_fixture_at("entra-v2-app-managed-identity", h.now_unix());
    let token = TestKey::rsa_a().sign(&claims, Algorithm::RS256);
    let out = score(&h, &token);
    assert_eq!(
        out.forwarded_header("x-mlgate-caller"),
        Some("app"),
        "{out}"
    );
    assert_eq!(
        out.forwarded_header("x-mlgate-roles"),
        Some("Scoring.Invoke")
    );
    assert_eq!(
        out.forwarded_header("x-mlgate-app"),
        Some("5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9")
    );
}

#[test]
fn delegated_user_with_role_is_not_an_app_caller() {
    let h = harness(&entra_config());
    let token = user_token(&h, |c| {
        c["groups"] = json!([]);
        c["roles"] = json!(["Scoring.Invoke"]);
    });
    assert_eq!(verdict(&score(&h, &token)), "no_rule_matched");
}

#[test]
fn groups_overage_is_denied_by_default_and_ignorable() {
    let overage = |h: &mlgate_harness::host::Harness| {
        let claims = mint::claims_fixture_at("entra-v2-user-groups-overage", h.now_unix());
        TestKey::rsa_a().sign(&claims, Algorithm::RS256)
    };
    let h = harness(&entra_config());
    let out = score(&h, &overage(&h));
    assert_eq!(out.status(), Some(403));
    assert_eq!(out.reason().as_deref(), Some("groups_overage"));
    let mut config = entra_config();
    config["providers"][0]["on_groups_overage"] = json!("ignore");
    let h = harness(&config);
    assert_eq!(verdict(&score(&h, &overage(&h))), "no_rule_matched");
}

#[test]
fn space_separated_and_nested_claims_feed_rules() {
    let mut config = entra_config();
    config["providers"][0]["claims"] = json!({
        "roles": ["realm_access.roles", "resource_access.ml-gateway.roles"],
        "scopes": "scope"
    });
    config["routes"] = json!([
        {"name": "infer", "match": {"path_template": "/v2/models/{model}/infer"},
         "allow": [{"roles": ["infer"], "scopes": ["ml:invoke"]}]}
    ]);
    let h = harness(&config);
    let token = user_token(&h, |c| {
        c["realm_access"] = json!({"roles": ["offline_access"]});
        c["resource_access"] = json!({"ml-gateway": {"roles": ["infer"]}});
        c["scope"] = json!("openid ml:invoke");
    });
    let out = send(&h, "POST", "/v2/models/m/infer", &token);
    assert!(out.is_forwarded(), "{out}");
    assert_eq!(
        out.forwarded_header("x-mlgate-roles"),
        Some("offline_access,infer")
    );
    assert_eq!(
        out.forwarded_header("x-mlgate-scopes"),
        Some("openid,ml:invoke")
    );
}

#[test]
fn rule_conditions_all_must_hold() {
    let mut config = entra_config();
    config["routes"] = json!([
        {"name": "score", "match": {"path": "/score"},
         "allow": [{"groups": ["ml-scientists"], "scopes": ["Scoring.Invoke"], "tenants": [TENANT],
                    "principals": [ALICE], "apps": ["0c9a7e55-3f7d-4b1c-a2a4-6d2e9b1f0c33"], "caller": "user",
                    "claims": {"ver": "2.0"}}]}
    ]);
    let h = harness(&config);
    assert!(score(&h, &user_token(&h, |_| {})).is_forwarded());
    type Mutation = Box<dyn Fn(&mut Value)>;
    let variants: Vec<Mutation> = vec![
        Box::new(|c| c["groups"] = json!([])),
        Box::new(|c| c["scp"] = json!("Models.Read")),
        Box::new(|c| c["oid"] = json!("someone-else")),
        Box::new(|c| c["azp"] = json!("another-app")),
        Box::new(|c| c["ver"] = json!("1.0")),
        Box::new(|c| c["idtyp"] = json!("app")),
    ];
    for mutate in variants {
        assert_eq!(
            verdict(&score(&h, &user_token(&h, |c| mutate(c)))),
            "no_rule_matched"
        );
    }
}

#[test]
fn all_groups_requires_every_group() {
    let mut config = entra_config();
    config["routes"] = json!([
        {"name": "score", "match": {"path": "/score"}, "allow": [{"all_groups": ["ml-scientists", "contractors"]}]}
    ]);
    let h = harness(&config);
    assert_eq!(
        verdict(&score(&h, &user_token(&h, |_| {}))),
        "no_rule_matched"
    );
    let both = user_token(&h, |c| c["groups"] = json!([ML_SCIENTISTS, CONTRACTORS]));
    assert!(score(&h, &both).is_forwarded());
}

#[test]
fn client_sent_identity_headers_never_reach_upstream() {
    let h = harness(&entra_config());
    let out = h
        .request()
        .method("POST")
        .path("/score")
        .bearer(&user_token(&h, |_| {}))
        .header("x-mlgate-principal", "admin")
        .header("X-MLGATE-GROUPS", "admins")
        .header("X-Mlgate-Whatever", "1")
        .header("x-mlgate-dry-run", "allow")
        .send()
        .unwrap();
    let headers = out.forwarded_headers().expect("forwarded");
    assert_eq!(headers.get_all("x-mlgate-principal"), vec![ALICE]);
    assert_eq!(headers.get_all("x-mlgate-groups"), vec!["ml-scientists"]);
    assert!(headers.get("x-mlgate-whatever").is_none());
    assert!(headers.get("x-mlgate-dry-run").is_none());
}

#[test]
fn spoofed_headers_are_stripped_on_anonymous_routes_too() {
    let h = harness(&entra_config());
    let out = h
        .request()
        .method("GET")
        .path("/healthz")
        .header("x-mlgate-principal", "admin")
        .send()
        .unwrap();
    assert_eq!(out.forwarded_header("x-mlgate-principal"), None);
}

#[test]
fn authorization_is_stripped_when_configured() {
    let mut config = entra_config();
    config["forward"] =
        json!({"strip_authorization": true, "scopes": false, "principal": "x-mlgate-user"});
    let h = harness(&config);
    let out = score(&h, &user_token(&h, |_| {}));
    assert_eq!(out.forwarded_header("authorization"), None);
    assert_eq!(out.forwarded_header("x-mlgate-scopes"), None);
    assert_eq!(out.forwarded_header("x-mlgate-user"), Some(ALICE));
    let kept = harness(&entra_config());
    assert!(score(&kept, &user_token(&kept, |_| {}))
        .forwarded_header("authorization")
        .is_some());
}

#[test]
fn dry_run_lets_refusals_through_with_the_would_be_reason() {
    let mut config = entra_config();
    config["mode"] = json!("dry_run");
    let h = harness(&config);
    let out = h
        .request()
        .method("POST")
        .path("/score")
        .header("x-mlgate-principal", "admin")
        .send()
        .unwrap();
    assert!(out.is_forwarded(), "{out}");
    assert_eq!(
        out.forwarded_header("x-mlgate-dry-run"),
        Some("missing_token")
    );
    assert_eq!(out.forwarded_header("x-mlgate-principal"), None);
    let denied = send(
        &h,
        "POST",
        "/v2/models/finance-x/infer",
        &user_token(&h, |c| c["groups"] = json!([CONTRACTORS])),
    );
    assert_eq!(
        denied.forwarded_header("x-mlgate-dry-run"),
        Some("denied_by_rule")
    );
    let allowed = score(&h, &user_token(&h, |_| {}));
    assert_eq!(allowed.forwarded_header("x-mlgate-dry-run"), Some("allow"));
    assert!(h.log_text().contains("would_deny"));
    let would_deny: i64 = h
        .metrics()
        .iter()
        .filter(|(name, _)| name.starts_with("decision=.=would_deny;.;"))
        .map(|(_, m)| m.value)
        .sum();
    assert_eq!(would_deny, 2);
}

#[test]
fn request_id_is_echoed_in_the_refusal_body() {
    let h = harness(&entra_config());
    let out = h
        .request()
        .method("POST")
        .path("/score")
        .request_id("req-42")
        .send()
        .unwrap();
    assert_eq!(out.body_json()["request_id"], "req-42");
}

#[test]
fn concurrent_requests_on_one_vm_are_independent() {
    let h = harness(&entra_config());
    let good = user_token(&h, |_| {});
    let bad = user_token(&h, |c| c["aud"] = json!("x"));
    for i in 0..20 {
        let token = if i % 2 == 0 { &good } else { &bad };
        let out = score(&h, token);
        assert_eq!(out.is_forwarded(), i % 2 == 0);
    }
}

#[test]
fn configured_claims_reach_the_upstream_and_client_copies_never_do() {
    let mut config = entra_config();
    config["forward"] = json!({"claims": {"email": "x-mlgate-email"}});
    let h = harness(&config);
    let send = |token: &str| {
        h.request()
            .method("POST")
            .path("/score")
            .bearer(token)
            .header("azureml-model-deployment", "blue")
            .header("X-Mlgate-Email", "mallory@evil.example")
            .send()
            .unwrap()
    };
    let with_email = send(&user_token(&h, |c| {
        c["email"] = json!("alice@contoso.example")
    }));
    assert_eq!(
        with_email.forwarded_header("x-mlgate-email"),
        Some("alice@contoso.example")
    );
    let without = send(&user_token(&h, |_| {}));
    assert!(without.is_forwarded(), "{without}");
    assert_eq!(without.forwarded_header("x-mlgate-email"), None);
}
