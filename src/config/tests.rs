//! Configuration: every file in filters/ compiles; every mistake is refused with its field path.

use super::*;
use crate::testing::{entra_config, test_jwks, TENANT};
use serde_json::json;

fn compile_value(value: &Value) -> Result<Policy, ConfigError> {
    compile(value.to_string().as_bytes())
}

fn error_of(value: Value) -> ConfigError {
    match compile_value(&value) {
        Ok(_) => panic!("configuration was accepted: {value}"),
        Err(error) => error,
    }
}

fn assert_refused(value: Value, path: &str, fragment: &str) {
    let error = error_of(value);
    assert_eq!(error.path, path, "{error}");
    assert!(error.message.contains(fragment), "{error}");
}

#[test]
fn every_shipped_filter_config_compiles() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/filters");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let bytes = std::fs::read(&path).unwrap();
            if let Err(error) = compile(&bytes) {
                panic!("{}: {error}", path.display());
            }
            count += 1;
        }
    }
    assert!(
        count >= 6,
        "expected at least 6 configs in filters/, found {count}"
    );
}

#[test]
fn base_config_compiles_with_defaults() {
    let policy = compile_value(&entra_config()).unwrap();
    assert_eq!(policy.providers[0].rules.algorithms, vec![Algorithm::RS256]);
    assert_eq!(policy.providers[0].rules.clock_skew_seconds, 60);
    assert_eq!(policy.max_token_bytes, 16384);
    assert_eq!(policy.unmatched, Unmatched::Deny);
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(
        policy.forward.principal.as_deref(),
        Some("x-mlgate-principal")
    );
    assert_eq!(policy.routes[2].model_from, Some(ModelFrom::PathParam(0)));
}

#[test]
fn empty_configuration_is_refused() {
    assert_eq!(compile(b"  ").unwrap_err().path, "(root)");
}

#[test]
fn syntax_error_is_refused() {
    assert!(compile(b"{\"providers\": [").is_err());
}

#[test]
fn misspelled_group_name_names_the_rule_and_the_map() {
    let mut config = entra_config();
    config["routes"][2]["allow"][0]["groups"] = json!(["ml-scientsts"]);
    assert_refused(
        config,
        "routes[2].allow[0].groups",
        "unknown group name \"ml-scientsts\" (not in providers[0].group_names)",
    );
}

#[test]
fn unknown_field_is_refused_with_its_path() {
    let mut config = entra_config();
    config["routes"][1]["allow"][0]["groupz"] = json!(["x"]);
    let error = error_of(config);
    assert!(error.path.starts_with("routes[1].allow[0]"), "{error}");
    assert!(error.message.contains("groupz"), "{error}");
}

#[test]
fn provider_without_audiences_is_refused() {
    let mut config = entra_config();
    config["providers"][0]
        .as_object_mut()
        .unwrap()
        .remove("audiences");
    assert_refused(config, "providers[0].audiences", "allow_any_audience");
}

#[test]
fn allow_any_audience_must_be_explicit_and_alone() {
    let mut config = entra_config();
    config["providers"][0]
        .as_object_mut()
        .unwrap()
        .remove("audiences");
    config["providers"][0]["allow_any_audience"] = json!(true);
    assert!(compile_value(&config).unwrap().providers[0]
        .rules
        .audiences
        .is_none());
    config["providers"][0]["audiences"] = json!(["a"]);
    assert_refused(config, "providers[0].allow_any_audience", "contradicts");
}

#[test]
fn empty_algorithms_is_refused() {
    let mut config = entra_config();
    config["providers"][0]["algorithms"] = json!([]);
    assert_refused(config, "providers[0].algorithms", "must not be empty");
}

#[test]
fn none_algorithm_is_refused() {
    let mut config = entra_config();
    config["providers"][0]["algorithms"] = json!(["RS256", "none"]);
    assert_refused(config, "providers[0].algorithms[1]", "never accepted");
}

#[test]
fn hmac_with_public_keys_is_refused() {
    let mut config = entra_config();
    config["providers"][0]["algorithms"] = json!(["RS256", "HS256"]);
    assert_refused(config, "providers[0].algorithms", "shared_secret");
}

#[test]
fn short_hmac_secret_is_refused() {
    let mut config = entra_config();
    let provider = config["providers"][0].as_object_mut().unwrap();
    provider.remove("jwks");
    provider.insert("algorithms".into(), json!(["HS256"]));
    provider.insert("shared_secret".into(), json!("c2hvcnQtc2VjcmV0"));
    assert_refused(config, "providers[0].shared_secret", "at least 32");
}

#[test]
fn secret_and_jwks_together_are_refused() {
    let mut config = entra_config();
    config["providers"][0]["shared_secret"] = json!("a".repeat(64));
    assert_refused(config, "providers[0].shared_secret", "never both");
}

#[test]
fn templated_issuer_needs_tenants() {
    let mut config = entra_config();
    config["providers"][0]["issuer"] = json!("https://login.microsoftonline.com/{tenant}/v2.0");
    assert_refused(config.clone(), "providers[0].tenants", "required");
    config["providers"][0]["tenants"] = json!([TENANT]);
    assert!(compile_value(&config).is_ok());
}

#[test]
fn two_providers_with_the_same_issuer_are_refused() {
    let mut config = entra_config();
    let mut second = config["providers"][0].clone();
    second["name"] = json!("entra-2");
    config["providers"].as_array_mut().unwrap().push(second);
    assert_refused(
        config,
        "providers[1].issuer",
        "already accepted by providers[0]",
    );
}

#[test]
fn duplicate_provider_names_are_refused() {
    let mut config = entra_config();
    let mut second = config["providers"][0].clone();
    second["issuer"] = json!("https://other.example/");
    config["providers"].as_array_mut().unwrap().push(second);
    assert_refused(config, "providers[1].name", "duplicate provider name");
}

#[test]
fn jwks_key_error_names_the_key() {
    let mut config = entra_config();
    let mut jwks = test_jwks();
    jwks["keys"][3]["crv"] = json!("P-521");
    config["providers"][0]["jwks"]["inline"] = jwks;
    assert_refused(
        config,
        "providers[0].jwks.inline.keys[3].crv",
        "unsupported curve",
    );
}

#[test]
fn jwks_without_a_key_for_the_algorithms_is_refused() {
    let mut config = entra_config();
    config["providers"][0]["jwks"]["inline"] = json!({"keys": [test_jwks()["keys"][2].clone()]});
    assert_refused(config, "providers[0].jwks.inline", "no key fits");
}

#[test]
fn anonymous_model_route_needs_explicit_permission() {
    let mut config = entra_config();
    config["routes"].as_array_mut().unwrap().push(json!(
        {"name": "open", "match": {"path_template": "/v2/models/{model}/ready"}, "auth": "anonymous"}
    ));
    assert_refused(config.clone(), "routes[4].auth", "allow_anonymous_models");
    config["routes"][4]["allow_anonymous_models"] = json!(true);
    assert!(compile_value(&config).is_ok());
}

#[test]
fn anonymous_route_with_rules_is_refused() {
    let mut config = entra_config();
    config["routes"][0]["allow"] = json!([{"roles": ["x"]}]);
    assert_refused(config, "routes[0].auth", "cannot have allow or deny");
}

#[test]
fn rule_without_conditions_is_refused() {
    let mut config = entra_config();
    config["routes"][1]["allow"] = json!([{}]);
    assert_refused(config, "routes[1].allow[0]", "at least one condition");
}

#[test]
fn models_condition_without_model_source_is_refused() {
    let mut config = entra_config();
    config["routes"][1]
        .as_object_mut()
        .unwrap()
        .remove("model_from");
    config["routes"][1]["allow"] = json!([{"roles": ["r"], "models": ["m"]}]);
    assert_refused(config, "routes[1].allow[0].models", "no model");
}

#[test]
fn two_path_kinds_are_refused() {
    let mut config = entra_config();
    config["routes"][0]["match"]["path_prefix"] = json!("/x");
    assert_refused(config, "routes[0].match", "at most one");
}

#[test]
fn bad_template_is_refused() {
    let mut config = entra_config();
    config["routes"][2]["match"]["path_template"] = json!("/v2/models/{model/infer");
    assert_refused(config, "routes[2].match.path_template", "brace");
}

#[test]
fn model_from_unknown_path_param_is_refused() {
    let mut config = entra_config();
    config["routes"][2]["model_from"] = json!({"path_param": "name"});
    assert_refused(config, "routes[2].model_from.path_param", "no {name}");
}

#[test]
fn unknown_route_provider_is_refused() {
    let mut config = entra_config();
    config["routes"][1]["providers"] = json!(["okta"]);
    assert_refused(
        config,
        "routes[1].providers[0]",
        "unknown provider \"okta\"",
    );
}

#[test]
fn duplicate_route_names_are_refused() {
    let mut config = entra_config();
    config["routes"][1]["name"] = json!("health");
    assert_refused(config, "routes[1].name", "duplicate route name");
}

#[test]
fn lower_case_method_is_refused() {
    let mut config = entra_config();
    config["routes"][1]["match"]["methods"] = json!(["post"]);
    assert_refused(config, "routes[1].match.methods[0]", "upper-case");
}

#[test]
fn unnormalised_path_is_refused() {
    let mut config = entra_config();
    config["routes"][0]["match"]["path"] = json!("/a/../healthz");
    assert_refused(config, "routes[0].match.path", "normalised");
}

#[test]
fn forward_header_outside_prefix_is_refused() {
    let mut config = entra_config();
    config["forward"] = json!({"principal": "x-user"});
    assert_refused(config, "forward.principal", "must start with the prefix");
}

#[test]
fn bad_prefix_is_refused() {
    let mut config = entra_config();
    config["forward"] = json!({"prefix": "X-Identity"});
    assert_refused(config, "forward.prefix", "ending in '-'");
}

#[test]
fn token_source_needs_exactly_one_place() {
    let mut config = entra_config();
    config["providers"][0]["token_from"] = json!([{"header": "a", "query": "b"}]);
    assert_refused(config, "providers[0].token_from[0]", "exactly one");
}

#[test]
fn scheme_without_header_is_refused() {
    let mut config = entra_config();
    config["providers"][0]["token_from"] = json!([{"query": "t", "scheme": "Bearer"}]);
    assert_refused(
        config,
        "providers[0].token_from[0].scheme",
        "only goes with header",
    );
}

#[test]
fn bad_enum_value_is_refused_with_path() {
    let mut config = entra_config();
    config["mode"] = json!("permissive");
    let error = error_of(config);
    assert_eq!(error.path, "mode", "{error}");
}

#[test]
fn realm_with_quote_is_refused() {
    let mut config = entra_config();
    config["realm"] = json!("a\"b");
    assert_refused(config, "realm", "quotes");
}

#[test]
fn token_sources_are_shared_between_providers() {
    let mut config = entra_config();
    let mut second = config["providers"][0].clone();
    second["name"] = json!("other");
    second["issuer"] = json!("https://other.example/");
    config["providers"].as_array_mut().unwrap().push(second);
    let policy = compile_value(&config).unwrap();
    assert_eq!(policy.sources.len(), 1);
    assert_eq!(policy.providers[1].sources, vec![0]);
}
