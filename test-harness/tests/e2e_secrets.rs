//! End-to-end through a real Envoy: an HS256 provider whose shared secret is a variable of the
//! VM's environment (`vm_config.environment_variables`), not policy text. Envoy's V8 runtime hands
//! the variables to the module through WASI `environ_get`, which Rust's `std::env` reads.
//!
//! The demo IdP signs RS256; these tests turn its `demo-idp` provider into an HS256 one and sign
//! the IdP's own claims with the shared secret.

mod e2e_fixture;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use e2e_fixture::{bearer, demo_config, prerequisites, root, send, Envoy, Stack};
use mlgate_harness::idp::{Idp, IdpOptions};
use serde_json::{json, Value};

/// The raw HMAC secret; the VM sees it base64url-encoded, as the inline form is written.
const SECRET: &[u8] = b"e2e-env-secret:0123456789abcdef0123456789abcdef";

/// The variable the policy names.
const VARIABLE: &str = "MLGATE_HS_SECRET";

/// envoy/demo.yaml with `environment_variables` in the wasm `vm_config`: `key_values` when
/// given, `host_env_keys` otherwise.
fn template(key_values: Option<&str>, host_env_keys: &[&str]) -> String {
    let demo = std::fs::read_to_string(root().join("envoy/demo.yaml")).expect("envoy/demo.yaml");
    let anchor = "                  runtime: envoy.wasm.runtime.v8\n";
    assert!(demo.contains(anchor), "envoy/demo.yaml has no V8 vm_config");
    let mut block = String::from("                  environment_variables:\n");
    if let Some(value) = key_values {
        block.push_str(&format!(
            "                    key_values:\n                      {VARIABLE}: \"{value}\"\n"
        ));
    }
    if !host_env_keys.is_empty() {
        block.push_str(&format!(
            "                    host_env_keys: {}\n",
            json!(host_env_keys)
        ));
    }
    demo.replace(anchor, &format!("{anchor}{block}"))
}

/// The demo policy with `demo-idp` verifying HS256 against the secret in `VARIABLE`.
fn hs256_from_env(config: &mut Value) {
    hs256_from(config, VARIABLE);
}

fn hs256_from(config: &mut Value, variable: &str) {
    let provider = config["providers"]
        .as_array_mut()
        .expect("providers")
        .iter_mut()
        .find(|p| p["name"] == "demo-idp")
        .expect("demo-idp provider")
        .as_object_mut()
        .expect("provider object");
    provider.remove("jwks");
    provider.insert("algorithms".into(), json!(["HS256"]));
    provider.insert("shared_secret".into(), json!({"env": variable}));
}

/// The IdP's token for `persona`, signed again with HS256 and `secret`.
fn resign(stack: &Stack, persona: &str, secret: &[u8]) -> String {
    let token = stack.token(persona);
    let payload = token.split('.').nth(1).expect("a JWS payload");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
            .expect("JSON claims");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign HS256")
}

fn score(stack: &Stack, token: &str) -> e2e_fixture::Answer {
    send(
        "POST",
        &stack.envoy.url("/score"),
        &[
            bearer(token),
            ("azureml-model-deployment".into(), "fraud-detector".into()),
        ],
        Some(&json!({"input_data": {"data": [[1]]}})),
    )
}

#[test]
fn hs256_token_verifies_with_a_secret_from_vm_config_key_values() {
    let encoded = URL_SAFE_NO_PAD.encode(SECRET);
    let template = template(Some(&encoded), &[]);
    let Some(stack) = Stack::start_from(&template, "secret-env", 1, hs256_from_env) else {
        return;
    };
    let answer = score(&stack, &resign(&stack, "alice", SECRET));
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert!(answer.body.get("identity").is_some(), "{}", answer.raw);
}

#[test]
fn hs256_token_with_another_secret_is_refused_through_envoy() {
    let encoded = URL_SAFE_NO_PAD.encode(SECRET);
    let template = template(Some(&encoded), &[]);
    let Some(stack) = Stack::start_from(&template, "secret-env-wrong", 1, hs256_from_env) else {
        return;
    };
    let answer = score(
        &stack,
        &resign(
            &stack,
            "alice",
            b"not the secret, but just as long: 0123456789abcdef",
        ),
    );
    assert_eq!(answer.status, 401, "{}", answer.raw);
    assert_eq!(answer.body["reason"], "bad_signature", "{}", answer.raw);
}

#[test]
fn secret_from_the_environment_appears_nowhere_in_envoy_s_output() {
    let encoded = URL_SAFE_NO_PAD.encode(SECRET);
    let template = template(Some(&encoded), &[]);
    let Some(stack) = Stack::start_from(&template, "secret-env-log", 1, hs256_from_env) else {
        return;
    };
    // An allowed call and a refused one, both logged (Envoy's log and its access log).
    assert_eq!(score(&stack, &resign(&stack, "alice", SECRET)).status, 200);
    assert_eq!(
        score(&stack, &resign(&stack, "alice", b"x".repeat(40).as_slice())).status,
        401
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = stack.envoy.log();
    assert!(
        log.contains("mlgate: configured"),
        "{}",
        stack.envoy.log_tail()
    );
    assert!(!log.contains(&encoded), "the secret is in Envoy's log");
    assert!(
        !log.contains(&*String::from_utf8_lossy(SECRET)),
        "the raw secret is in Envoy's log"
    );
}

#[test]
fn hs256_token_verifies_with_a_secret_from_envoy_s_own_environment() {
    // host_env_keys: Envoy passes its own variable on, so the secret is in no Envoy configuration.
    // The variable is set in this test process before Envoy starts, which inherits it (Rust's
    // Command reads the environment under std's lock; no other test here sets one).
    let host_variable = "MLGATE_E2E_HS_SECRET_FROM_HOST";
    let template = template(None, &[host_variable]);
    let encoded = URL_SAFE_NO_PAD.encode(SECRET);
    std::env::set_var(host_variable, &encoded);
    let Some(stack) = Stack::start_from(&template, "secret-host-env", 1, |config| {
        hs256_from(config, host_variable)
    }) else {
        return;
    };
    let answer = score(&stack, &resign(&stack, "alice", SECRET));
    assert_eq!(answer.status, 200, "{}", answer.raw);
}

#[test]
fn a_secret_from_envoy_s_own_environment_is_not_in_its_config_dump() {
    // With key_values the value is Envoy configuration, which /config_dump shows; with
    // host_env_keys only the variable's name is.
    let host_variable = "MLGATE_E2E_HS_SECRET_NOT_DUMPED";
    let template = template(None, &[host_variable]);
    let encoded = URL_SAFE_NO_PAD.encode(SECRET);
    std::env::set_var(host_variable, &encoded);
    let Some(stack) = Stack::start_from(&template, "secret-host-dump", 1, |config| {
        hs256_from(config, host_variable)
    }) else {
        return;
    };
    let dump = admin(&stack, "/config_dump");
    assert!(dump.contains(host_variable), "not the config dump: {dump}");
    assert!(!dump.contains(&encoded), "the secret is in /config_dump");
}

fn admin(stack: &Stack, path: &str) -> String {
    let url = format!("http://127.0.0.1:{}{path}", stack.envoy.admin);
    e2e_fixture::agent()
        .get(&url)
        .call()
        .expect("admin answers")
        .into_body()
        .read_to_string()
        .expect("admin body")
}

/// A policy naming a variable the VM does not have: mlgate refuses it at configure with the
/// field's path, so Envoy refuses the filter and does not start.
#[test]
fn missing_environment_variable_stops_envoy_naming_the_field() {
    let Some((envoy_bin, wasm)) = prerequisites() else {
        return;
    };
    let idp = Idp::start(IdpOptions::default()).expect("start demo IdP");
    let mut config = demo_config(&idp);
    hs256_from_env(&mut config);
    let template = template(Some(&URL_SAFE_NO_PAD.encode(SECRET)), &[])
        .replace(&format!("{VARIABLE}: "), "MLGATE_SOME_OTHER_VARIABLE: ");
    let mut envoy = Envoy::spawn_from(
        &template,
        "secret-env-missing",
        &envoy_bin,
        &wasm,
        &config,
        9,
        idp.port(),
        1,
    );
    match envoy.wait_ready() {
        Ok(()) => panic!(
            "Envoy became ready without the secret's variable\n{}",
            envoy.log_tail()
        ),
        Err(e) => assert!(
            e.contains("exited"),
            "Envoy neither refused nor got ready: {e}"
        ),
    }
    let log = envoy.log();
    assert!(
        log.contains(&format!(
            "mlgate: invalid configuration: providers[0].shared_secret.env: the VM has no environment variable \"{VARIABLE}\""
        )),
        "{}",
        envoy.log_tail()
    );
    assert!(
        !log.contains(&URL_SAFE_NO_PAD.encode(SECRET)),
        "another variable's value is in Envoy's log"
    );
}
