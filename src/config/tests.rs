//! Configuration: every file in filters/ compiles; every mistake is refused with its field path.

use super::*;
use crate::policy::ModelFrom;
use crate::testing::{entra_config, test_jwks, TENANT};
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

/// The configuration compiled for Envoy's backend (the host verifies ES384).
fn compile(bytes: &[u8]) -> Result<Policy, ConfigError> {
    super::compile(bytes, &crate::testing::envoy_backend())
}

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
    assert!(policy.decision_duration_histogram);
}

#[test]
fn the_decision_duration_histogram_can_be_switched_off_and_only_by_a_boolean() {
    let mut config = entra_config();
    config["decision_duration_histogram"] = json!(false);
    assert!(!compile_value(&config).unwrap().decision_duration_histogram);
    config["decision_duration_histogram"] = json!("off");
    assert_refused(config, "decision_duration_histogram", "boolean");
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
fn es384_is_refused_where_no_backend_checks_it() {
    let mut config = entra_config();
    config["providers"][0]["algorithms"] = json!(["RS256", "ES384"]);
    let bytes = config.to_string();
    let no_p384_host = crate::crypto::Backend::with_host(crate::testing::reference_host, false);
    for backend in [crate::crypto::Backend::RUST, no_p384_host] {
        let result = super::compile(bytes.as_bytes(), &backend);
        if cfg!(feature = "portable") {
            assert!(result.is_ok(), "the portable build checks ES384 itself");
        } else {
            let error = result.unwrap_err();
            assert_eq!(error.path, "providers[0].algorithms[1]");
            assert!(error.message.contains("make build-portable"), "{error}");
        }
    }
    assert!(super::compile(bytes.as_bytes(), &crate::testing::envoy_backend()).is_ok());
}

#[test]
fn a_forwarded_claim_outside_the_prefix_is_refused() {
    let mut config = entra_config();
    config["forward"] = json!({"claims": {"email": "x-email"}});
    assert_refused(config, "forward.claims.email", "must start with the prefix");
}

#[test]
fn a_forwarded_claim_on_a_header_already_forwarded_is_refused() {
    let mut config = entra_config();
    config["forward"] = json!({"claims": {"upn": "x-mlgate-principal"}});
    assert_refused(config, "forward.claims.upn", "already forwarded");
    let mut twice = entra_config();
    twice["forward"] = json!({"claims": {"email": "x-mlgate-mail", "upn": "x-mlgate-mail"}});
    assert_refused(twice, "forward.claims.upn", "already forwarded");
}

#[test]
fn a_forwarded_claim_header_must_be_a_header_name() {
    let mut config = entra_config();
    config["forward"] = json!({"claims": {"email": "x-mlgate-e mail"}});
    assert_refused(config, "forward.claims.email", "not a valid header name");
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

/// An HS256 provider whose `shared_secret` is `secret` (a JSON value: inline text or `{"env": …}`).
fn hmac_config(secret: Value) -> Value {
    let mut config = entra_config();
    let provider = config["providers"][0].as_object_mut().unwrap();
    provider.remove("jwks");
    provider.insert("algorithms".into(), json!(["HS256"]));
    provider.insert("shared_secret".into(), secret);
    config
}

/// A secret of 48 bytes, base64url: long enough, and unlike anything else in a configuration.
const ENV_SECRET: &str = "ZW52LXNlY3JldC1mb3ItbWxnYXRlLXRlc3RzLTAxMjM0NTY3ODlhYmNkZWZnaGlq";

fn compile_with_env(value: &Value, vars: &[(&str, &str)]) -> Result<Policy, ConfigError> {
    let env = |name: &str| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    };
    super::compile_with(
        value.to_string().as_bytes(),
        &crate::testing::envoy_backend(),
        &env,
    )
}

/// Refused at `path` with `fragment` in the message, and the value of no variable in the error.
fn assert_env_refused(value: Value, vars: &[(&str, &str)], path: &str, fragment: &str) {
    let error = match compile_with_env(&value, vars) {
        Ok(_) => panic!("configuration was accepted: {value}"),
        Err(error) => error,
    };
    assert_eq!(error.path, path, "{error}");
    assert!(error.message.contains(fragment), "{error}");
    for (_, secret) in vars.iter().filter(|(_, v)| !v.trim().is_empty()) {
        assert!(
            !error.to_string().contains(secret.trim()),
            "the error echoes the secret: {error}"
        );
    }
}

#[test]
fn hmac_secret_from_the_vm_environment_compiles() {
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET"}));
    let policy = compile_with_env(&config, &[("MLGATE_HS_SECRET", ENV_SECRET)]).unwrap();
    let keys = policy.providers[0].initial_keys.as_ref().unwrap();
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].family, crate::jwks::KeyFamily::Hmac);
}

#[test]
fn hmac_secret_from_the_environment_ignores_a_trailing_newline() {
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET"}));
    let value = format!("{ENV_SECRET}\n");
    assert!(compile_with_env(&config, &[("MLGATE_HS_SECRET", &value)]).is_ok());
}

#[test]
fn missing_environment_variable_is_refused_naming_it() {
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET"}));
    assert_env_refused(
        config,
        &[("OTHER", ENV_SECRET)],
        "providers[0].shared_secret.env",
        "the VM has no environment variable \"MLGATE_HS_SECRET\"",
    );
}

#[test]
fn without_an_environment_an_env_secret_is_refused() {
    // `compile` (no environment) is what every caller but the filter's root context uses.
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET"}));
    assert_refused(
        config,
        "providers[0].shared_secret.env",
        "no environment variable",
    );
}

#[test]
fn empty_environment_variable_is_refused() {
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET"}));
    assert_env_refused(
        config,
        &[("MLGATE_HS_SECRET", " \n")],
        "providers[0].shared_secret.env",
        "is empty",
    );
}

#[test]
fn short_secret_from_the_environment_is_refused_without_echoing_it() {
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET"}));
    assert_env_refused(
        config,
        &[("MLGATE_HS_SECRET", "c2hvcnQtc2VjcmV0LXZhbHVl")],
        "providers[0].shared_secret.env",
        "at least 32",
    );
}

#[test]
fn secret_from_the_environment_must_be_base64_and_is_not_echoed() {
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET"}));
    assert_env_refused(
        config,
        &[(
            "MLGATE_HS_SECRET",
            "not base64: a raw passphrase of forty-one b",
        )],
        "providers[0].shared_secret.env",
        "must be base64",
    );
}

#[test]
fn inline_secret_that_is_not_base64_is_not_echoed() {
    let secret = "not base64: a raw passphrase of forty-one b";
    let error = error_of(hmac_config(json!(secret)));
    assert_eq!(error.path, "providers[0].shared_secret", "{error}");
    assert!(!error.to_string().contains(secret), "{error}");
}

#[test]
fn env_secret_name_must_be_a_variable_name() {
    let config = hmac_config(json!({"env": "MLGATE HS=SECRET"}));
    assert_refused(
        config,
        "providers[0].shared_secret.env",
        "name of an environment variable",
    );
}

#[test]
fn env_secret_object_takes_no_other_member() {
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET", "value": "x"}));
    assert_refused(config, "providers[0].shared_secret.value", "unknown field");
}

#[test]
fn env_secret_object_names_its_variable_once() {
    let config = hmac_config(json!({"env": "MLGATE_HS_SECRET"}))
        .to_string()
        .replace(r#"{"env":"MLGATE_HS_SECRET"}"#, r#"{"env":"A","env":"B"}"#);
    let error = match compile(config.as_bytes()) {
        Ok(_) => panic!("configuration was accepted: {config}"),
        Err(error) => error,
    };
    assert_eq!(error.path, "providers[0].shared_secret", "{error}");
    assert!(error.message.contains("duplicate field `env`"), "{error}");
}

#[test]
fn env_secret_object_without_env_is_refused() {
    let config = hmac_config(json!({}));
    assert_refused(config, "providers[0].shared_secret", "missing field `env`");
}

#[test]
fn env_secret_name_must_be_a_string() {
    let config = hmac_config(json!({"env": 7}));
    assert_refused(
        config,
        "providers[0].shared_secret.env",
        "expected a string",
    );
}

#[test]
fn boolean_shared_secret_is_refused() {
    let config = hmac_config(json!(true));
    assert_refused(config, "providers[0].shared_secret", "{\"env\"");
}

#[test]
fn shared_secret_of_another_type_is_refused() {
    let config = hmac_config(json!(42));
    assert_refused(config, "providers[0].shared_secret", "{\"env\"");
}

#[test]
fn debug_output_never_shows_a_secret() {
    let inline = hmac_config(json!(ENV_SECRET));
    let parsed: schema::Config = serde_json::from_value(inline.clone()).unwrap();
    let policy = compile_value(&inline).unwrap();
    let from_env = hmac_config(json!({"env": "MLGATE_HS_SECRET"}));
    let policy_from_env = compile_with_env(&from_env, &[("MLGATE_HS_SECRET", ENV_SECRET)]).unwrap();
    let raw = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ENV_SECRET,
        )
        .unwrap(),
    )
    .unwrap();
    for debug in [
        format!("{parsed:?}"),
        format!("{policy:?}"),
        format!("{policy_from_env:?}"),
    ] {
        assert!(
            debug.contains("providers"),
            "not a Debug of the config: {debug}"
        );
        assert!(!debug.contains(ENV_SECRET), "{debug}");
        assert!(!debug.contains(&raw), "{debug}");
    }
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

// ---------------------------------------------------------------------------------------------
// Parse errors name the exact field (src/json_path.rs turns serde_json's position into the path)
// ---------------------------------------------------------------------------------------------

/// The refusal of a configuration given as text.
fn refused_text(text: &str) -> ConfigError {
    match compile(text.as_bytes()) {
        Ok(_) => panic!("configuration was accepted: {text}"),
        Err(error) => error,
    }
}

fn assert_error(error: ConfigError, path: &str, message: &str) {
    assert_eq!(
        (error.path.as_str(), error.message.as_str()),
        (path, message)
    );
}

/// `entra_config()` with a second provider (`providers[1]`, another issuer).
fn two_providers() -> Value {
    let mut config = entra_config();
    let mut second = config["providers"][0].clone();
    second["name"] = json!("other");
    second["issuer"] = json!("https://other.example/");
    config["providers"].as_array_mut().unwrap().push(second);
    config
}

#[test]
fn unknown_field_names_the_key() {
    let mut config = entra_config();
    config["routes"][0]["match"]["methodz"] = json!(["GET"]);
    let error = error_of(config);
    assert_eq!(error.path, "routes[0].match.methodz");
    assert!(
        error
            .message
            .starts_with("unknown field `methodz`, expected one of `hosts`, `methods`"),
        "{error}"
    );
}

#[test]
fn unknown_field_is_named_across_whitespace_and_newlines() {
    let text = entra_config().to_string().replacen(
        "\"routes\":[",
        "\"routes\" :\n [ {\"nom\"\n : 1}, ",
        1,
    );
    let error = refused_text(&text);
    assert_eq!(error.path, "routes[0].nom", "{error}");
}

#[test]
fn escaped_unknown_key_is_named_decoded() {
    let text = entra_config().to_string().replacen(
        "\"path\":\"/healthz\"",
        "\"path\":\"/healthz\",\"method\\u007a\":[]",
        1,
    );
    let error = refused_text(&text);
    assert_eq!(error.path, "routes[0].match.methodz", "{error}");
}

#[test]
fn string_of_the_wrong_type_names_the_field() {
    let mut config = two_providers();
    config["providers"][1]["audiences"] = json!("x");
    assert_error(
        error_of(config),
        "providers[1].audiences",
        "invalid type: string \"x\", expected a sequence",
    );
}

#[test]
fn number_of_the_wrong_type_names_the_field() {
    let mut config = entra_config();
    config["routes"][1]["name"] = json!(5);
    assert_error(
        error_of(config),
        "routes[1].name",
        "invalid type: integer `5`, expected a string",
    );
}

#[test]
fn literal_of_the_wrong_type_names_the_field() {
    let mut config = entra_config();
    config["providers"][0]["require_exp"] = json!(null);
    assert_error(
        error_of(config),
        "providers[0].require_exp",
        "invalid type: null, expected a boolean",
    );
}

#[test]
fn object_of_the_wrong_type_names_the_field() {
    let mut config = entra_config();
    config["providers"][0]["audiences"] = json!({"api://ml-scoring": true});
    assert_error(
        error_of(config),
        "providers[0].audiences",
        "invalid type: map, expected a sequence",
    );
}

#[test]
fn array_of_the_wrong_type_names_the_field() {
    let mut config = entra_config();
    config["realm"] = json!(["mlgate"]);
    assert_error(
        error_of(config),
        "realm",
        "invalid type: sequence, expected a string",
    );
}

#[test]
fn wrong_typed_element_names_its_index() {
    let mut config = entra_config();
    config["providers"][0]["audiences"] = json!(["api://ml-scoring", {}]);
    assert_error(
        error_of(config),
        "providers[0].audiences[1]",
        "invalid type: map, expected a string",
    );
}

#[test]
fn nested_arrays_of_objects_name_every_index() {
    let mut config = entra_config();
    config["routes"][1]["allow"][0]["groups"] = json!("ml-scientists");
    assert_error(
        error_of(config),
        "routes[1].allow[0].groups",
        "invalid type: string \"ml-scientists\", expected a sequence",
    );
}

#[test]
fn string_or_list_field_names_the_wrong_element() {
    let mut config = entra_config();
    config["providers"][0]["issuer"] = json!(["https://issuer.example/", 1]);
    assert_error(
        error_of(config),
        "providers[0].issuer[1]",
        "invalid type: integer `1`, expected a string",
    );
}

#[test]
fn bool_or_string_field_that_ends_its_object_names_the_field() {
    let mut config = entra_config();
    config["forward"] = json!({"principal": 5});
    assert_error(
        error_of(config),
        "forward.principal",
        "invalid type: integer `5`, expected true, false or a header name",
    );
}

#[test]
fn number_too_large_for_the_field_names_it() {
    let mut config = entra_config();
    config["providers"][0]["jwks"]["timeout_ms"] = json!(4_294_967_296_u64);
    assert_error(
        error_of(config),
        "providers[0].jwks.timeout_ms",
        "invalid value: integer `4294967296`, expected u32",
    );
}

#[test]
fn negative_size_names_the_field() {
    let mut config = entra_config();
    config["max_token_bytes"] = json!(-1);
    assert_error(
        error_of(config),
        "max_token_bytes",
        "invalid value: integer `-1`, expected usize",
    );
}

#[test]
fn number_beyond_json_range_names_the_field() {
    let mut config = entra_config();
    config["cache_entries"] = json!(12345);
    let text = config.to_string().replacen("12345", "1e400", 1);
    assert_error(refused_text(&text), "cache_entries", "number out of range");
}

#[test]
fn missing_field_names_the_object_that_lacks_it() {
    let mut config = entra_config();
    config["providers"][0]
        .as_object_mut()
        .unwrap()
        .remove("issuer");
    assert_error(error_of(config), "providers[0]", "missing field `issuer`");
}

#[test]
fn missing_field_of_an_empty_object_names_it() {
    let mut config = entra_config();
    config["routes"][1]["match"]["headers"] = json!([{}]);
    assert_error(
        error_of(config),
        "routes[1].match.headers[0]",
        "missing field `name`",
    );
}

#[test]
fn missing_top_level_field_is_at_the_root() {
    let mut config = entra_config();
    config.as_object_mut().unwrap().remove("routes");
    assert_error(error_of(config), "(root)", "missing field `routes`");
}

#[test]
fn duplicate_field_names_the_object() {
    let text = entra_config().to_string().replacen(
        "\"name\":\"health\"",
        "\"name\":\"health\",\"name\":\"again\"",
        1,
    );
    assert_error(refused_text(&text), "routes[0]", "duplicate field `name`");
}

#[test]
fn unknown_enum_variant_names_the_field() {
    let mut config = entra_config();
    config["routes"][1]["allow"][1]["caller"] = json!("robot");
    assert_error(
        error_of(config),
        "routes[1].allow[1].caller",
        "unknown variant `robot`, expected `user` or `app`",
    );
}

#[test]
fn enum_given_as_an_object_names_the_field() {
    let mut config = entra_config();
    config["unmatched"] = json!({"maybe": null});
    assert_error(
        error_of(config),
        "unmatched",
        "unknown variant `maybe`, expected `deny` or `allow`",
    );
}

#[test]
fn enum_given_as_an_array_names_the_field() {
    let mut config = entra_config();
    config["audit"] = json!(["all"]);
    assert_error(error_of(config), "audit", "expected value");
}

#[test]
fn trailing_characters_are_at_the_root() {
    let text = format!("{} x", entra_config());
    assert_error(refused_text(&text), "(root)", "trailing characters");
}

#[test]
fn truncated_list_names_the_list() {
    assert_error(
        refused_text("{\"providers\": [\n"),
        "providers",
        "EOF while parsing a list",
    );
}

#[test]
fn truncation_after_a_comma_in_a_list_names_the_list() {
    assert_error(
        refused_text("{\"providers\": [{\"name\": \"a\", \"issuer\": \"b\"}, "),
        "providers",
        "EOF while parsing a value",
    );
}

#[test]
fn truncated_object_names_the_object() {
    assert_error(
        refused_text("{\"providers\": [{\"name\": \"a\""),
        "providers[0]",
        "EOF while parsing an object",
    );
}

#[test]
fn truncated_value_names_its_field() {
    assert_error(
        refused_text("{\"realm\": \"mlg"),
        "realm",
        "EOF while parsing a string",
    );
}

#[test]
fn missing_comma_names_the_object() {
    assert_error(
        refused_text("{\"routes\": [{\"name\": \"a\" \"match\": {}}]}"),
        "routes[0]",
        "expected `,` or `}`",
    );
}

#[test]
fn missing_colon_names_the_object() {
    assert_error(
        refused_text("{\"routes\": [{\"name\" \"a\"}]}"),
        "routes[0]",
        "expected `:`",
    );
}

#[test]
fn errors_in_pretty_printed_files_name_the_field() {
    let text = include_str!("../../filters/kserve.json").replacen(
        "\"caller\": \"app\"",
        "\"caller\": \"robot\"",
        1,
    );
    let error = refused_text(&text);
    assert_eq!(error.path, "routes[3].allow[1].caller", "{error}");
    assert!(!error.message.contains(" at line "), "{error}");
}

// --- Differential: the same paths serde_path_to_error gives, for many malformed configs -------

/// How the filter named errors before json_path: serde_path_to_error around the same
/// deserializer (kept as a dev-dependency for exactly this comparison).
fn compile_with_path_to_error(bytes: &[u8]) -> Result<Policy, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return err("(root)", "the configuration is empty");
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let config: Config = match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(config) => config,
        Err(error) => {
            let path = error.path().to_string();
            let path = if path == "." { "(root)".into() } else { path };
            return err(path, json_path::error_message(error.inner()));
        }
    };
    if let Err(error) = deserializer.end() {
        return err("(root)", json_path::error_message(&error));
    }
    Compiler::new(&crate::testing::envoy_backend(), &|_| None).compile(config)
}

/// serde_path_to_error's path, where json_path names the object instead of its unknown next key
/// (`?`: a syntax error while looking for a key, which json_path reports at the object).
fn expected_path(reference: &str) -> String {
    let path = reference
        .split('.')
        .filter(|segment| *segment != "?")
        .collect::<Vec<_>>()
        .join(".");
    let path = path.strip_suffix('?').unwrap_or(&path).to_string();
    if path.is_empty() {
        "(root)".into()
    } else {
        path
    }
}

/// A JSON value's byte range in a text, its kind, and its members' or elements' ranges (for an
/// object member: from the key's opening quote to the end of the value).
struct Node {
    start: usize,
    end: usize,
    object: bool,
    children: Vec<(usize, usize)>,
}

/// Every value in a well-formed JSON text, outermost first.
fn nodes(text: &[u8]) -> Vec<Node> {
    struct Parser<'a> {
        text: &'a [u8],
        at: usize,
        out: Vec<Node>,
    }
    impl Parser<'_> {
        fn skip_whitespace(&mut self) {
            while matches!(self.text.get(self.at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
                self.at += 1;
            }
        }
        fn string(&mut self) {
            self.at += 1;
            while self.text[self.at] != b'"' {
                self.at += if self.text[self.at] == b'\\' { 2 } else { 1 };
            }
            self.at += 1;
        }
        fn value(&mut self) {
            self.skip_whitespace();
            let slot = self.out.len();
            let start = self.at;
            let open = self.text[self.at];
            self.out.push(Node {
                start,
                end: 0,
                object: open == b'{',
                children: Vec::new(),
            });
            let mut children = Vec::new();
            match open {
                b'{' | b'[' => {
                    let close = if open == b'{' { b'}' } else { b']' };
                    self.at += 1;
                    self.skip_whitespace();
                    if self.text[self.at] == close {
                        self.at += 1;
                    } else {
                        loop {
                            self.skip_whitespace();
                            let child = self.at;
                            if open == b'{' {
                                self.string();
                                self.skip_whitespace();
                                assert_eq!(self.text[self.at], b':');
                                self.at += 1;
                            }
                            self.value();
                            children.push((child, self.at));
                            self.skip_whitespace();
                            let separator = self.text[self.at];
                            self.at += 1;
                            if separator == close {
                                break;
                            }
                            assert_eq!(separator, b',');
                        }
                    }
                }
                b'"' => self.string(),
                _ => {
                    while !matches!(
                        self.text.get(self.at),
                        None | Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                    ) {
                        self.at += 1;
                    }
                }
            }
            self.out[slot].end = self.at;
            self.out[slot].children = children;
        }
    }
    let mut parser = Parser {
        text,
        at: 0,
        out: Vec::new(),
    };
    parser.value();
    parser.out
}

/// The text without whitespace outside strings.
fn minified(text: &str) -> String {
    let mut out = String::new();
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            (in_string, escaped) = match (escaped, c) {
                (true, _) => (true, false),
                (false, '\\') => (true, true),
                (false, '"') => (false, false),
                _ => (true, false),
            };
        } else if !c.is_ascii_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

fn splice(text: &str, start: usize, end: usize, with: &str) -> String {
    format!("{}{with}{}", &text[..start], &text[end..])
}

/// Values of other types, out-of-range numbers and odd shapes, put in place of every value.
const REPLACEMENTS: [&str; 16] = [
    "null",
    "true",
    "0",
    "-1",
    "1.5",
    "4294967296",
    "1e400",
    "\"x\"",
    "[]",
    "[\"x\"]",
    "[1]",
    "[{}]",
    "{}",
    "{\"zz\": 1}",
    "{\"x\": null}",
    "[[null]]",
];

/// Malformed variants of `text`: every value replaced by each of [`REPLACEMENTS`]; every member
/// deleted, duplicated, and its separator dropped; an unknown key first and last in every
/// object; extra characters after the document.
fn mutations(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for node in nodes(text.as_bytes()) {
        for replacement in REPLACEMENTS {
            out.push(splice(text, node.start, node.end, replacement));
        }
        let children = &node.children;
        for (i, &(start, end)) in children.iter().enumerate() {
            // Delete the member or element, with one separator.
            out.push(match (children.get(i + 1), i.checked_sub(1)) {
                (Some(&(next, _)), _) => splice(text, start, next, ""),
                (None, Some(previous)) => splice(text, children[previous].1, end, ""),
                (None, None) => splice(text, start, end, ""),
            });
            // Duplicate it.
            out.push(splice(text, end, end, &format!(", {}", &text[start..end])));
            // Drop the separator before it.
            if i > 0 {
                let previous_end = children[i - 1].1;
                out.push(splice(text, previous_end, start, " "));
            }
        }
        if node.object {
            let unknown = "\"zz_unknown\": 1";
            let first = if children.is_empty() {
                unknown.to_string()
            } else {
                format!("{unknown}, ")
            };
            out.push(splice(text, node.start + 1, node.start + 1, &first));
            if let Some(&(_, last)) = children.last() {
                out.push(splice(text, last, last, &format!(", {unknown}")));
            }
        }
    }
    out.push(format!("{text} x"));
    out.push(format!("{text}{{}}"));
    out
}

/// Compares json_path's refusal with serde_path_to_error's for each text; returns how many
/// were refused by the parser (not by the compiler) and the mismatches.
fn compare_with_path_to_error(texts: &[String]) -> (usize, Vec<String>) {
    let mut parse_errors = 0;
    let mut mismatches = Vec::new();
    for text in texts {
        let ours = compile(text.as_bytes()).err();
        let reference = compile_with_path_to_error(text.as_bytes()).err();
        let parse_error = serde_json::from_slice::<Config>(text.as_bytes()).is_err();
        parse_errors += usize::from(parse_error);
        let expected = reference.map(|e| ConfigError {
            path: expected_path(&e.path),
            message: e.message,
        });
        if ours != expected {
            mismatches.push(format!("ours {ours:?}\nexpected {expected:?}\nin {text}\n"));
        }
    }
    (parse_errors, mismatches)
}

fn shipped_configs() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/filters");
    let mut configs: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path.display().to_string(), text)
        })
        .collect();
    configs.sort();
    assert!(configs.len() >= 6, "{configs:?}");
    configs
}

fn assert_same_paths_as_path_to_error(texts: &[String], minimum_parse_errors: usize) {
    let (parse_errors, mismatches) = compare_with_path_to_error(texts);
    assert!(
        mismatches.is_empty(),
        "{} of {} paths differ from serde_path_to_error's, e.g.\n{}",
        mismatches.len(),
        texts.len(),
        mismatches.iter().take(5).cloned().collect::<String>()
    );
    assert!(
        parse_errors >= minimum_parse_errors,
        "only {parse_errors} parse errors in {} variants",
        texts.len()
    );
}

/// Property: for every malformed variant of every config in filters/ (pretty, as shipped), the
/// path is serde_path_to_error's.
#[test]
fn malformed_shipped_configs_get_the_paths_path_to_error_gives() {
    for (name, text) in shipped_configs() {
        let variants = mutations(&text);
        assert!(variants.len() > 500, "{name}: {}", variants.len());
        assert_same_paths_as_path_to_error(&variants, variants.len() / 2);
    }
}

/// The same, minified: positions then fall right after values and keys, with no whitespace.
#[test]
fn malformed_minified_configs_get_the_paths_path_to_error_gives() {
    for (_, text) in shipped_configs() {
        let variants = mutations(&minified(&text));
        assert_same_paths_as_path_to_error(&variants, variants.len() / 2);
    }
}

/// Every prefix of every config in filters/: EOF inside strings, numbers, keys, lists, objects.
#[test]
fn truncated_shipped_configs_get_the_paths_path_to_error_gives() {
    for (_, text) in shipped_configs() {
        for text in [minified(&text), text] {
            let prefixes: Vec<String> = (1..text.len())
                .filter(|end| text.is_char_boundary(*end))
                .map(|end| text[..end].to_string())
                .collect();
            assert_same_paths_as_path_to_error(&prefixes, prefixes.len() - 1);
        }
    }
}

/// Syntax errors the mutations above do not make: bad escapes, control characters, bad
/// literals and numbers, non-string keys, nesting past serde_json's recursion limit.
#[test]
fn syntax_errors_get_the_paths_path_to_error_gives() {
    let base = minified(include_str!("../../filters/google.json"));
    let deep = format!("\"keys\":{}1{},\"x\":[", "[".repeat(200), "]".repeat(200));
    let cases: Vec<(&str, &str)> = vec![
        ("\"chat\"", "\"ch\\qat\""),
        ("\"chat\"", "\"ch\\u12\""),
        ("\"chat\"", "\"ch\\ud800\""),
        ("\"chat\"", "\"ch\u{1}at\""),
        ("\"name\":\"chat\"", "\"na\\qme\":\"chat\""),
        ("\"name\":\"chat\"", "\"na\u{1}me\":\"chat\""),
        ("\"name\":\"chat\"", "1:\"chat\""),
        ("\"name\":\"chat\"", "\"name\"::\"chat\""),
        ("\"name\":\"chat\"", "\"name\":nul"),
        ("\"name\":\"chat\"", "\"name\":tru,"),
        ("\"name\":\"chat\"", "\"name\":-"),
        ("\"name\":\"chat\"", "\"name\":01"),
        ("\"name\":\"chat\"", "\"name\":1.e5"),
        ("\"name\":\"chat\"", "\"name\":\u{a0}\"chat\""),
        ("\"keys\":[", "\"keys\":[,"),
        ("\"keys\":[", &deep),
        ("\"methods\":[\"POST\"]", "\"methods\":[\"POST\",]"),
        ("\"methods\":[\"POST\"]", "\"methods\":[\"POST\" \"GET\"]"),
        ("\"methods\":[\"POST\"]", "\"methods\":[\"POST\"}"),
        ("\"unmatched\":\"deny\"", "\"unmatched\":\"deny\","),
        (
            "\"unmatched\":\"deny\"",
            "\"unmatched\":{\"deny\":null,\"x\":1}",
        ),
        ("\"unmatched\":\"deny\"", "\"unmatched\":{\"deny\":1}"),
        ("\"unmatched\":\"deny\"", "\"unmatched\":{\"deny\":null"),
        ("{\"providers\"", "\u{feff}{\"providers\""),
    ];
    let texts: Vec<String> = cases
        .iter()
        .map(|(from, to)| {
            assert!(base.contains(from), "{from}");
            base.replacen(from, to, 1)
        })
        .collect();
    let (parse_errors, mismatches) = compare_with_path_to_error(&texts);
    assert_eq!(parse_errors, texts.len());
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn allow_missing_model_with_a_models_deny_rule_is_refused() {
    let mut config = entra_config();
    config["routes"][2]["allow_missing_model"] = json!(true);
    assert_refused(
        config,
        "routes[2].allow_missing_model",
        "deny[0] names models",
    );
}

#[test]
fn allow_missing_model_on_a_route_without_a_model_is_refused() {
    let mut config = entra_config();
    config["routes"][0]["auth"] = json!("required");
    config["routes"][0]["allow_missing_model"] = json!(true);
    assert_refused(
        config,
        "routes[0].allow_missing_model",
        "the route has no model",
    );
}

#[test]
fn a_caller_condition_needs_a_provider_that_says_its_caller_type() {
    let mut config = entra_config();
    config["providers"][0]["issuer"] = json!("https://sso.contoso.example/realms/ml");
    config["routes"][1]["allow"] = json!([{"caller": "app"}]);
    assert_refused(
        config.clone(),
        "routes[1].allow[0].caller",
        "set providers[0].caller_type",
    );
    config["providers"][0]["caller_type"] =
        json!({"claim": {"path": "azp_type", "app": ["service"], "user": ["human"]}});
    assert!(compile_value(&config).is_ok());
}

#[test]
fn a_caller_type_claim_needs_values() {
    let mut config = entra_config();
    config["providers"][0]["caller_type"] = json!({"claim": {"path": "gty"}});
    assert_refused(
        config.clone(),
        "providers[0].caller_type.claim",
        "name the claim's values",
    );
    config["providers"][0]["caller_type"] =
        json!({"claim": {"path": "gty", "app": ["x"], "user": ["x"]}});
    assert_refused(
        config.clone(),
        "providers[0].caller_type.claim.user",
        "listed for app",
    );
    config["providers"][0]["caller_type"] = json!("okta");
    assert_refused(config, "providers[0].caller_type", "unknown variant");
}

fn with_listing(list_models: Value) -> Value {
    let mut config = entra_config();
    config["routes"].as_array_mut().unwrap().push(
        json!({"name": "models", "match": {"path": "/v1/models"}, "list_models": list_models}),
    );
    config
}

#[test]
fn a_listing_route_is_sorted_by_the_rules_of_the_route_it_names() {
    let policy = compile_value(&with_listing(
        json!({"format": "openai", "for_route": "chat"}),
    ))
    .unwrap();
    let listing = policy.routes[4].list_models.clone().unwrap();
    assert_eq!(listing.for_route, 3);
    assert_eq!(listing.format, crate::policy::ListingFormat::OpenAi);
    assert_eq!(listing.max_bytes, 1024 * 1024);
}

#[test]
fn a_listing_for_an_unknown_route_is_refused_naming_the_field() {
    assert_refused(
        with_listing(json!({"format": "openai", "for_route": "chta"})),
        "routes[4].list_models.for_route",
        "no route named \"chta\"",
    );
}

#[test]
fn a_listing_for_a_route_without_a_model_is_refused() {
    assert_refused(
        with_listing(json!({"format": "openai", "for_route": "health"})),
        "routes[4].list_models.for_route",
        "anonymous",
    );
    let mut config = with_listing(json!({"format": "openai", "for_route": "modelless"}));
    config["routes"].as_array_mut().unwrap().push(
        json!({"name": "modelless", "match": {"path": "/x"}, "allow": [{"groups": ["ml-scientists"]}]}),
    );
    assert_refused(config, "routes[4].list_models.for_route", "names no model");
}

#[test]
fn a_listing_route_that_names_a_model_or_is_anonymous_is_refused() {
    let mut config = entra_config();
    config["routes"][3]["list_models"] = json!({"format": "openai", "for_route": "infer"});
    assert_refused(config, "routes[3].list_models", "names no model");
    let mut config = entra_config();
    config["routes"][0]["list_models"] = json!({"format": "openai", "for_route": "chat"});
    assert_refused(config, "routes[0].list_models", "anonymous");
}

#[test]
fn a_listing_with_an_unknown_format_or_bad_bound_is_refused() {
    assert_refused(
        with_listing(json!({"format": "openapi", "for_route": "chat"})),
        "routes[4].list_models.format",
        "\"openapi\" is not one of",
    );
    assert_refused(
        with_listing(json!({"format": "kserve_v1", "for_route": "chat", "max_bytes": 0})),
        "routes[4].list_models.max_bytes",
        "between",
    );
}

#[test]
fn forwarding_max_tokens_is_off_unless_asked_for() {
    let compiled = |forward: Value| {
        let mut config = entra_config();
        config["forward"] = forward;
        super::compile(
            config.to_string().as_bytes(),
            &crate::testing::envoy_backend(),
        )
        .unwrap()
        .forward
        .max_tokens
    };
    assert_eq!(compiled(json!({})), None);
    assert_eq!(compiled(json!({"max_tokens": false})), None);
    assert_eq!(
        compiled(json!({"max_tokens": true})).as_deref(),
        Some("x-mlgate-max-tokens")
    );
    assert_eq!(
        compiled(json!({"max_tokens": "X-MLGate-Budget"})).as_deref(),
        Some("x-mlgate-budget")
    );
}

#[test]
fn a_max_tokens_header_outside_the_prefix_or_already_forwarded_is_refused() {
    let mut outside = entra_config();
    outside["forward"] = json!({"max_tokens": "x-max-tokens"});
    assert_refused(outside, "forward.max_tokens", "must start with the prefix");
    let mut taken = entra_config();
    taken["forward"] = json!({"max_tokens": "x-mlgate-model"});
    assert_refused(taken, "forward.max_tokens", "already forwarded");
    let mut claim = entra_config();
    claim["forward"] = json!({"max_tokens": true, "claims": {"upn": "x-mlgate-max-tokens"}});
    assert_refused(claim, "forward.claims.upn", "already forwarded");
}

#[test]
fn max_tokens_without_a_json_body_route_is_refused() {
    let mut config = entra_config();
    config["forward"] = json!({"max_tokens": true});
    config["routes"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["model_from"]["json_body"].is_null());
    assert_refused(config, "forward.max_tokens", "model_from.json_body");
}
