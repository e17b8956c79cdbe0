//! The playground's entry point, natively: one behaviour per test. The same code runs in the
//! browser (test-harness/playground/browser_test.py drives it through the page).

use std::path::Path;

use serde_json::{json, Value};

use super::*;

const NOW: i64 = 1_790_000_000;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn policy(name: &str) -> String {
    std::fs::read_to_string(root().join("filters").join(format!("{name}.json"))).unwrap()
}

fn run_json(policy: &str, input: &Value) -> Value {
    serde_json::from_str(&evaluate(policy, &input.to_string(), NOW)).unwrap()
}

/// The request and signed claims of a case-file case, as the page builds them.
fn case_input(case: &Value) -> Value {
    let request = &case["request"];
    let mut headers = Vec::new();
    for (name, values) in request["headers"].as_object().into_iter().flatten() {
        match values {
            Value::Array(values) => {
                headers.extend(values.iter().map(|v| json!([name, v])));
            }
            value => headers.push(json!([name, value])),
        }
    }
    let body = match &request["body"] {
        Value::Null => Value::Null,
        Value::String(text) => Value::String(text.clone()),
        other => Value::String(other.to_string()),
    };
    let mut input = json!({
        "request": {
            "method": request["method"].as_str().unwrap_or("GET"),
            "path": request["path"],
            "host": request["host"].as_str().unwrap_or("ml.contoso.example"),
            "headers": headers,
            "body": body,
        }
    });
    if let Some(token) = case["token"].as_object() {
        let overrides = token.get("claims").cloned().unwrap_or(json!({}));
        let built: Value = serde_json::from_str(&case_claims(
            token.get("fixture").and_then(Value::as_str),
            &overrides.to_string(),
            NOW,
        ))
        .unwrap();
        assert_eq!(built["ok"], true, "{built}");
        input["claims"] = built["claims"].clone();
    }
    input
}

fn entra_user_claims() -> Value {
    let built: Value =
        serde_json::from_str(&case_claims(Some("entra-v2-user"), "{}", NOW)).unwrap();
    built["claims"].clone()
}

fn score(deployment: &str, claims: Value) -> Value {
    json!({
        "request": {"method": "POST", "path": "/score",
                    "headers": [["azureml-model-deployment", deployment]]},
        "claims": claims,
    })
}

#[test]
fn every_case_of_every_shipped_case_file_is_decided_as_its_case_expects() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("filters/cases")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(policy_name) = name.strip_suffix(".cases.json") else {
            continue;
        };
        let policy = policy(policy_name);
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for case in file["cases"].as_array().unwrap() {
            let label = format!("{name}: {}", case["name"]);
            let result = run_json(&policy, &case_input(case));
            assert_eq!(result["ok"], true, "{label}: {result}");
            let decision = &result["decision"];
            let expect = &case["expect"];
            assert_eq!(decision["status"], expect["status"], "{label}: {decision}");
            if let Some(reason) = expect["reason"].as_str() {
                assert_eq!(decision["reason"], reason, "{label}: {decision}");
            }
            let added = decision["headers_added"].as_array();
            let header = |wanted: &str| {
                added
                    .into_iter()
                    .flatten()
                    .find(|pair| pair[0] == wanted)
                    .map(|pair| pair[1].clone())
            };
            for (name, value) in expect["forwarded"].as_object().into_iter().flatten() {
                assert_eq!(header(name).as_ref(), Some(value), "{label}: {name}");
            }
            for name in expect["absent"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                let removed =
                    name == "authorization" && decision["headers_removed"]["authorization"] == true;
                assert!(header(name).is_none() || removed, "{label}: {name}");
                if name == "authorization" {
                    assert!(removed, "{label}: authorization is stripped");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 78, "only {checked} cases");
}

#[test]
fn a_refused_policy_names_its_field() {
    let broken = policy("entra-azureml").replacen("\"enforce\"", "\"enforced\"", 1);
    let result = run_json(&broken, &json!({"request": {"path": "/"}}));
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"]["field"], "mode");
    assert!(result["error"]["message"]
        .as_str()
        .unwrap()
        .contains("enforced"));
}

#[test]
fn an_unknown_group_name_in_a_rule_is_named_by_its_field() {
    // The rule's group (the second mention; the first names the group's id).
    let text = policy("entra-azureml");
    let rule = text.rfind("\"ml-scientists\"").unwrap();
    let broken = format!("{}\"ml-scientist\"{}", &text[..rule], &text[rule + 15..]);
    let result = run_json(&broken, &json!({"request": {"path": "/"}}));
    assert_eq!(
        result["error"]["field"], "routes[2].allow[0].groups",
        "{result}"
    );
    assert!(result["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ml-scientist"));
}

#[test]
fn signed_claims_are_verified_by_the_core_with_the_test_key() {
    let result = run_json(
        &policy("entra-azureml"),
        &score("blue", entra_user_claims()),
    );
    assert_eq!(result["decision"]["status"], 200, "{result}");
    let checks = result["trace"]["checks"].as_array().unwrap();
    let signature = checks.iter().find(|c| c["check"] == "signature").unwrap();
    assert_eq!(signature["result"], "ok");
    assert_eq!(signature["backend"], "rust_crypto");
    assert!(result["notes"][0].as_str().unwrap().contains("rsa-b"));
}

#[test]
fn the_deciding_rule_is_named_in_the_decision_and_marked_in_the_trace() {
    let mut claims = entra_user_claims();
    claims["groups"] = json!(["b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d6e"]);
    let result = run_json(&policy("entra-azureml"), &score("finance-risk", claims));
    assert_eq!(result["decision"]["status"], 403);
    assert_eq!(result["decision"]["rule"], "deny[0]");
    let rules = result["trace"]["rules"].as_array().unwrap();
    let deciding: Vec<_> = rules.iter().filter(|r| r["decided"] == true).collect();
    assert_eq!(deciding.len(), 1);
    assert_eq!(deciding[0]["rule"], "deny[0]");
}

#[test]
fn a_forged_signature_is_refused_401_with_an_rfc6750_challenge() {
    let mut claims = entra_user_claims();
    claims["exp"] = json!(NOW + 600);
    let signed = sign(claims.as_object().unwrap().clone(), NOW).unwrap();
    let (rest, _) = signed.rsplit_once('.').unwrap();
    let forged = format!("{rest}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]));
    let mut policy: Value = serde_json::from_str(&policy("entra-azureml")).unwrap();
    trust_test_keys(&mut policy);
    let input = json!({
        "request": {"method": "POST", "path": "/score",
                    "headers": [["azureml-model-deployment", "blue"]]},
        "token": forged,
    });
    let result = run_json(&policy.to_string(), &input);
    assert_eq!(result["decision"]["status"], 401, "{result}");
    assert_eq!(result["decision"]["reason"], "bad_signature");
    let challenge = result["decision"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "www-authenticate")
        .unwrap();
    assert!(challenge[1].as_str().unwrap().starts_with("Bearer realm="));
}

#[test]
fn a_pasted_token_is_never_in_the_result() {
    let token = sign(entra_user_claims().as_object().unwrap().clone(), NOW).unwrap();
    let mut policy: Value = serde_json::from_str(&policy("entra-azureml")).unwrap();
    trust_test_keys(&mut policy);
    let input = json!({"request": {"method": "POST", "path": "/score",
                       "headers": [["azureml-model-deployment", "blue"]]},
                       "token": token});
    let text = evaluate(&policy.to_string(), &input.to_string(), NOW);
    assert!(text.contains("\"status\":200"), "{text}");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!text.contains(signature));
    assert!(!text.contains(&token[..40]));
}

#[test]
fn a_token_for_keys_the_policy_fetches_is_refused_keys_unavailable_without_a_key_set() {
    let token = sign(entra_user_claims().as_object().unwrap().clone(), NOW).unwrap();
    let mut policy: Value = serde_json::from_str(&policy("entra-azureml")).unwrap();
    policy["providers"][0]["jwks"] = json!({"uri": "https://login.microsoftonline.com/common/discovery/v2.0/keys", "cluster": "entra"});
    let input = json!({"request": {"method": "POST", "path": "/score",
                       "headers": [["azureml-model-deployment", "blue"]]},
                       "token": token});
    let result = run_json(&policy.to_string(), &input);
    assert_eq!(result["decision"]["status"], 503, "{result}");
    assert_eq!(result["decision"]["reason"], "keys_unavailable");
    assert!(result["notes"][0].as_str().unwrap().contains("key set"));
}

#[test]
fn a_token_for_keys_the_policy_fetches_is_verified_with_the_key_set_given() {
    let token = sign(entra_user_claims().as_object().unwrap().clone(), NOW).unwrap();
    let mut policy: Value = serde_json::from_str(&policy("entra-azureml")).unwrap();
    policy["providers"][0]["jwks"] = json!({"uri": "https://login.microsoftonline.com/common/discovery/v2.0/keys", "cluster": "entra"});
    let keys: Value = serde_json::from_str(TEST_JWKS).unwrap();
    let input = json!({"request": {"method": "POST", "path": "/score",
                       "headers": [["azureml-model-deployment", "blue"]]},
                       "token": token, "keys": keys});
    let result = run_json(&policy.to_string(), &input);
    assert_eq!(result["decision"]["status"], 200, "{result}");
}

#[test]
fn a_model_header_sent_twice_is_read_as_the_filter_reads_it() {
    let input = json!({
        "request": {"method": "POST", "path": "/score",
                    "headers": [["azureml-model-deployment", "blue"],
                                ["Azureml-Model-Deployment", "finance-risk"]]},
        "claims": entra_user_claims(),
    });
    let result = run_json(&policy("entra-azureml"), &input);
    assert_eq!(result["decision"]["status"], 400, "{result}");
}

#[test]
fn a_case_token_resolves_fixture_times_and_relative_overrides_at_now() {
    let built: Value = serde_json::from_str(&case_claims(
        Some("entra-v2-user"),
        r#"{"exp": "now-60", "groups": null}"#,
        NOW,
    ))
    .unwrap();
    let claims = &built["claims"];
    assert_eq!(claims["exp"], NOW - 60);
    assert_eq!(claims["iat"], NOW);
    assert!(claims.get("groups").is_none());
}

#[test]
fn an_unknown_fixture_is_refused_with_the_known_ones() {
    let built: Value = serde_json::from_str(&case_claims(Some("nobody"), "{}", NOW)).unwrap();
    assert_eq!(built["ok"], false);
    assert_eq!(built["error"]["field"], "token.fixture");
    assert!(built["error"]["message"]
        .as_str()
        .unwrap()
        .contains("entra-v2-user"));
}

#[test]
fn input_the_playground_does_not_understand_is_refused_not_guessed() {
    let result = run_json(
        &policy("entra-azureml"),
        &json!({"request": {"path": "/", "verb": "GET"}}),
    );
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"]["field"], "(input)");
    let both = json!({"request": {"path": "/"}, "token": "x", "claims": {}});
    assert_eq!(run_json(&policy("entra-azureml"), &both)["ok"], false);
}
