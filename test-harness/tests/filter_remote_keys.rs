//! Remote key sets through the real mlgate.wasm (issue 5): JWKS URI and OIDC discovery fetched with
//! `proxy_http_call`, cold start, outages with stale keys, backoff, unknown-`kid` refetch and its rate limit,
//! rotation, one fetch per proxy across VMs, Entra per-key issuers, `x5c`-only keys, metrics, and clients that
//! hang up while paused. The clock, ticks and callouts are all under the test's control: nothing sleeps.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use mlgate_harness::host::{Harness, HttpCall, Outcome, SharedData};
use mlgate_harness::mint::{self, TestKey};
use serde_json::{json, Value};

/// Start of every test's clock (unix seconds).
const T0: u64 = 1_800_000_000;
const KEYS_PATH: &str = "/keys";

fn keys_uri() -> Value {
    json!({"uri": "https://idp.example/keys", "cluster": "idp"})
}

/// The Entra-shaped configuration of `common`, with `jwks` replaced.
fn config_with(jwks: Value) -> Value {
    let mut config = entra_config();
    config["providers"][0]["jwks"] = jwks;
    config
}

fn load(config: &Value) -> Harness {
    Harness::builder()
        .time(T0)
        .load()
        .expect("load mlgate.wasm")
        .configure(config.clone())
        .expect("configuration accepted")
}

fn load_shared(config: &Value, shared: &SharedData) -> Harness {
    Harness::builder()
        .time(T0)
        .shared(shared.clone())
        .load()
        .expect("load mlgate.wasm")
        .configure(config.clone())
        .expect("configuration accepted")
}

/// The one pending callout (panics, with the logs, if there is not exactly one).
fn the_call(h: &Harness) -> HttpCall {
    let calls = h.pending_calls();
    assert_eq!(calls.len(), 1, "pending calls: {calls:?}\n{}", h.log_text());
    calls.into_iter().next().unwrap()
}

fn answer(h: &Harness, jwks: &Value) {
    let call = the_call(h);
    h.respond_call(
        call.token,
        200,
        &[("content-type", "application/json")],
        jwks.to_string(),
    )
    .unwrap();
}

fn jwks_of(keys: &[TestKey]) -> Value {
    json!({"keys": keys.iter().map(TestKey::public_jwk).collect::<Vec<_>>()})
}

/// Alice's token signed by `key` (its own `kid`).
fn token_by(h: &Harness, key: &TestKey) -> String {
    key.sign(&user_claims(h), Algorithm::RS256)
}

/// Alice's token signed by rsa-a under `kid`.
fn token_with_kid(h: &Harness, kid: &str) -> String {
    TestKey::rsa_a().sign_with_header(
        &json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        &user_claims(h),
    )
}

/// A way for a fetch to fail, given its call token.
type FailCall = dyn Fn(&Harness, u32);

fn metric(h: &Harness, name: &str) -> i64 {
    h.metric(name).unwrap_or(0)
}

fn now_outcome(h: &Harness, out: &Outcome) -> Outcome {
    h.outcome(out.context_id()).expect("known request")
}

/// Moves the clock by `seconds` and fires a tick.
fn tick_after(h: &Harness, seconds: u64) {
    h.advance(Duration::from_secs(seconds));
    assert!(h.tick().unwrap(), "the filter set a tick period");
}

/// A harness whose first fetch (dispatched by configure) loaded `jwks`.
fn loaded(config: &Value, jwks: &Value) -> Harness {
    let h = load(config);
    answer(&h, jwks);
    h
}

#[test]
fn configure_dispatches_the_first_fetch_and_a_cold_request_waits_for_it() {
    let h = load(&config_with(keys_uri()));
    assert_eq!(h.tick_period(), Some(Duration::from_secs(1)));
    let call = the_call(&h);
    assert_eq!(call.cluster, "idp");
    assert_eq!(
        (call.method(), call.authority(), call.path()),
        (Some("GET"), Some("idp.example"), Some(KEYS_PATH))
    );
    assert_eq!(call.timeout, Duration::from_secs(5));

    let out = score(&h, &user_token(&h, |_| {}));
    assert!(out.is_paused(), "{out}");
    assert_eq!(
        h.pending_calls().len(),
        1,
        "no second fetch for a waiting request"
    );
    assert_eq!(metric(&h, "mlgate.jwks.paused_requests"), 1);

    answer(&h, &mint::test_jwks());
    let done = now_outcome(&h, &out);
    assert!(done.is_forwarded(), "{done}\n{}", h.log_text());
    assert_eq!(done.forwarded_header("x-mlgate-principal"), Some(ALICE));
    assert_eq!(metric(&h, "mlgate.jwks.fetch_ok"), 1);
    assert_eq!(metric(&h, "mlgate.jwks.fetch_failed"), 0);
    assert_eq!(metric(&h, "provider=.=entra;.;mlgate.jwks_keys"), 5);
    // Keys in place: no pause.
    assert!(score(&h, &user_token(&h, |_| {})).is_forwarded());
    assert_eq!(metric(&h, "mlgate.jwks.paused_requests"), 1);
    assert!(h.pending_calls().is_empty());
}

/// A body-model route paused at its headers: Envoy buffers the body; it reaches the filter after the
/// resume, and the model in it is judged then.
#[test]
fn the_root_ticks_every_10_ms_while_a_request_waits_for_keys_and_every_second_after() {
    let h = loaded(&config_with(keys_uri()), &jwks_of(&[TestKey::rsa_a()]));
    assert_eq!(h.tick_period(), Some(Duration::from_secs(1)));
    // A new kid after the minimum interval: the request waits, and the refetch goes out at the
    // next tick, which is 10 ms away instead of a second.
    h.advance(Duration::from_secs(301));
    let new_kid = score(&h, &token_by(&h, &TestKey::rsa_b()));
    assert!(new_kid.is_paused(), "{new_kid}");
    assert_eq!(h.tick_period(), Some(Duration::from_millis(10)));
    assert!(h.pending_calls().is_empty(), "dispatched by the tick");
    h.tick().unwrap();
    assert_eq!(the_call(&h).path(), Some(KEYS_PATH));
    assert_eq!(h.tick_period(), Some(Duration::from_millis(10)));
    answer(&h, &jwks_of(&[TestKey::rsa_a(), TestKey::rsa_b()]));
    assert!(now_outcome(&h, &new_kid).is_forwarded());
    assert_eq!(h.tick_period(), Some(Duration::from_secs(1)));
}

#[test]
fn a_cold_request_with_a_body_gets_its_body_judged_after_the_keys_land() {
    let h = load(&config_with(keys_uri()));
    let chat = |model: &str| {
        h.request()
            .method("POST")
            .path("/v1/chat/completions")
            .host("ml.contoso.example")
            .header("authorization", &mint::bearer(&user_token(&h, |_| {})))
            .json(&json!({"model": model}))
            .send()
            .unwrap()
    };
    let allowed = chat("gpt-4o-mini");
    let refused = chat("gpt-4o");
    assert!(allowed.is_paused() && refused.is_paused());
    answer(&h, &mint::test_jwks());
    let allowed = now_outcome(&h, &allowed);
    assert!(allowed.is_forwarded(), "{allowed}");
    assert_eq!(allowed.body_json()["model"], "gpt-4o-mini");
    assert_eq!(allowed.forwarded_header("x-mlgate-principal"), Some(ALICE));
    let refused = now_outcome(&h, &refused);
    assert_eq!(verdict(&refused), "model_not_allowed", "{refused}");
}

#[test]
fn a_cold_start_fetch_that_fails_answers_503_keys_unavailable_with_retry_after() {
    let h = load(&config_with(keys_uri()));
    let out = score(&h, &user_token(&h, |_| {}));
    assert!(out.is_paused());
    h.fail_call(the_call(&h).token).unwrap();
    let done = now_outcome(&h, &out);
    assert_eq!(done.status(), Some(503), "{done}");
    assert_eq!(done.reason().as_deref(), Some("keys_unavailable"));
    assert!(done.response_header("retry-after").is_some(), "{done}");
    assert_eq!(metric(&h, "mlgate.jwks.fetch_failed"), 1);
    // In backoff with no keys: refused at once, not paused.
    let next = score(&h, &user_token(&h, |_| {}));
    assert_eq!(verdict(&next), "keys_unavailable", "{next}");
    assert!(next.response_header("retry-after").is_some());
}

#[test]
fn an_error_status_at_cold_start_is_a_failed_fetch_too() {
    let h = load(&config_with(keys_uri()));
    let out = score(&h, &user_token(&h, |_| {}));
    h.respond_call(the_call(&h).token, 500, &[], "oops")
        .unwrap();
    assert_eq!(verdict(&now_outcome(&h, &out)), "keys_unavailable");
}

#[test]
fn refresh_failures_keep_the_last_good_set_until_the_staleness_bound() {
    let h = loaded(&config_with(keys_uri()), &mint::test_jwks());
    tick_after(&h, 3599);
    assert!(
        h.pending_calls().is_empty(),
        "no refresh before refresh_seconds"
    );
    tick_after(&h, 1);
    // Every kind of failed refresh: status, timeout/reset, garbage, a JWKS with no usable key.
    let failures: [&FailCall; 4] = [
        &|h, token| h.respond_call(token, 500, &[], "").unwrap(),
        &|h, token| h.fail_call(token).unwrap(),
        &|h, token| {
            h.respond_call(token, 200, &[], "<html>maintenance</html>")
                .unwrap()
        },
        &|h, token| {
            let unusable = json!({"keys": [{"kty": "oct", "kid": "x", "k": "c2VjcmV0"}]});
            h.respond_call(token, 200, &[], unusable.to_string())
                .unwrap()
        },
    ];
    for (i, fail) in failures.iter().enumerate() {
        if i > 0 {
            // Backoff 1, 2, 4 s: the next attempt comes once it is due.
            tick_after(&h, 1 << (i - 1));
        }
        fail(&h, the_call(&h).token);
        let out = score(&h, &user_token(&h, |_| {}));
        assert!(out.is_forwarded(), "failure {i}: {out}\n{}", h.log_text());
    }
    assert_eq!(metric(&h, "mlgate.jwks.fetch_failed"), 4);
    assert_eq!(
        metric(&h, "provider=.=entra;.;mlgate.jwks_keys"),
        5,
        "the gauge keeps the last good set"
    );
    assert!(!h
        .logs_containing("keeping the last good key set")
        .is_empty());

    // Past refresh + max_stale (3600 + 86400 s after the fetch) the set is withdrawn.
    h.set_time(T0 + 3600 + 86400 - 1);
    h.tick().unwrap();
    h.pending_calls()
        .iter()
        .for_each(|c| h.fail_call(c.token).unwrap());
    assert!(
        score(&h, &user_token(&h, |_| {})).is_forwarded(),
        "still within the bound"
    );
    h.set_time(T0 + 3600 + 86400 + 1);
    h.tick().unwrap();
    for call in h.pending_calls() {
        h.fail_call(call.token).unwrap();
    }
    let out = score(&h, &user_token(&h, |_| {}));
    let out = if out.is_paused() {
        // A refresh may be under way: fail it too.
        h.pending_calls()
            .iter()
            .for_each(|c| h.fail_call(c.token).unwrap());
        now_outcome(&h, &out)
    } else {
        out
    };
    assert_eq!(out.status(), Some(503), "{out}\n{}", h.log_text());
    assert_eq!(out.reason().as_deref(), Some("keys_unavailable"));
}

#[test]
fn failed_fetches_back_off_exponentially_up_to_300_seconds() {
    let h = load(&config_with(keys_uri()));
    let mut attempts = Vec::new();
    let mut t = 0;
    while t <= 1200 {
        for call in h.pending_calls() {
            attempts.push(t);
            h.respond_call(call.token, 503, &[], "").unwrap();
        }
        tick_after(&h, 1);
        t += 1;
    }
    let gaps: Vec<u64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        gaps,
        [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300],
        "attempts at {attempts:?}"
    );
    assert_eq!(
        metric(&h, "mlgate.jwks.fetch_failed"),
        attempts.len() as i64
    );
}

#[test]
fn an_unknown_kid_refetches_once_and_the_refetch_is_rate_limited() {
    let h = loaded(&config_with(keys_uri()), &jwks_of(&[TestKey::rsa_a()]));
    // Right after a fetch, an unknown kid cannot force another (min_refresh_interval_seconds 300).
    let forged = score(&h, &token_with_kid(&h, "forged-1"));
    assert_eq!(verdict(&forged), "unknown_key", "{forged}");
    h.tick().unwrap();
    assert!(h.pending_calls().is_empty());
    assert_eq!(metric(&h, "mlgate.jwks.unknown_kid_refetch"), 0);

    tick_after(&h, 301);
    let new_kid = score(&h, &token_by(&h, &TestKey::rsa_b()));
    assert!(new_kid.is_paused(), "{new_kid}");
    let again = score(&h, &token_by(&h, &TestKey::rsa_b()));
    assert!(again.is_paused(), "a second request joins the refetch");
    h.tick().unwrap();
    let call = the_call(&h);
    assert_eq!(call.path(), Some(KEYS_PATH));
    assert_eq!(metric(&h, "mlgate.jwks.unknown_kid_refetch"), 1);
    answer(&h, &jwks_of(&[TestKey::rsa_a(), TestKey::rsa_b()]));
    for out in [&new_kid, &again] {
        let done = now_outcome(&h, out);
        assert!(done.is_forwarded(), "{done}\n{}", h.log_text());
    }

    // Another unknown kid within the minimum interval: refused at once, no call.
    tick_after(&h, 10);
    let forged = score(&h, &token_with_kid(&h, "forged-2"));
    assert_eq!(verdict(&forged), "unknown_key", "{forged}");
    h.tick().unwrap();
    assert!(h.pending_calls().is_empty());
    assert_eq!(metric(&h, "mlgate.jwks.unknown_kid_refetch"), 1);

    // After the interval, a refetch that still lacks the kid: 401 unknown_key.
    tick_after(&h, 300);
    let forged = score(&h, &token_with_kid(&h, "forged-3"));
    assert!(forged.is_paused(), "{forged}");
    h.tick().unwrap();
    answer(&h, &jwks_of(&[TestKey::rsa_a(), TestKey::rsa_b()]));
    let done = now_outcome(&h, &forged);
    assert_eq!(done.status(), Some(401), "{done}");
    assert_eq!(verdict(&done), "unknown_key");
    assert_eq!(metric(&h, "mlgate.jwks.unknown_kid_refetch"), 2);
    assert_eq!(metric(&h, "mlgate.jwks.paused_requests"), 3);
}

#[test]
fn rotation_adds_the_new_kid_and_drops_the_old_one() {
    let h = loaded(&config_with(keys_uri()), &jwks_of(&[TestKey::rsa_a()]));
    assert!(score(&h, &token_by(&h, &TestKey::rsa_a())).is_forwarded());
    tick_after(&h, 301);
    let rotated = score(&h, &token_by(&h, &TestKey::rsa_b()));
    assert!(rotated.is_paused());
    h.tick().unwrap();
    answer(&h, &jwks_of(&[TestKey::rsa_b()]));
    assert!(now_outcome(&h, &rotated).is_forwarded());
    assert_eq!(metric(&h, "provider=.=entra;.;mlgate.jwks_keys"), 1);
    let old = score(&h, &token_by(&h, &TestKey::rsa_a()));
    assert_eq!(verdict(&old), "unknown_key", "{old}");
    // The scheduled refresh also picks up a rotation (here: back to rsa-a).
    tick_after(&h, 3600);
    answer(&h, &jwks_of(&[TestKey::rsa_a()]));
    assert!(score(&h, &token_by(&h, &TestKey::rsa_a())).is_forwarded());
    assert_eq!(
        verdict(&score(&h, &token_by(&h, &TestKey::rsa_b()))),
        "unknown_key"
    );
}

#[test]
fn two_vms_on_one_shared_store_fetch_once_and_the_second_adopts_the_set() {
    let shared = SharedData::new();
    let config = config_with(keys_uri());
    let first = load_shared(&config, &shared);
    let second = load_shared(&config, &shared);
    assert_eq!(first.pending_calls().len(), 1);
    assert!(
        second.pending_calls().is_empty(),
        "the lock elects one fetcher"
    );
    // A cold request on the VM that does not fetch waits for the other's result.
    let waiting = score(&second, &user_token(&second, |_| {}));
    assert!(waiting.is_paused(), "{waiting}\n{}", second.log_text());
    answer(&first, &mint::test_jwks());
    assert!(score(&first, &user_token(&first, |_| {})).is_forwarded());
    tick_after(&second, 1);
    assert!(second.pending_calls().is_empty());
    let done = now_outcome(&second, &waiting);
    assert!(done.is_forwarded(), "{done}\n{}", second.log_text());
    assert!(score(&second, &user_token(&second, |_| {})).is_forwarded());
    assert_eq!(
        second.metric("mlgate.jwks.fetch_ok"),
        Some(1),
        "one fetch per proxy"
    );
    // The next refresh is again one call for both.
    first.advance(Duration::from_secs(3600));
    second.advance(Duration::from_secs(3601));
    second.tick().unwrap();
    first.tick().unwrap();
    let calls = first.pending_calls().len() + second.pending_calls().len();
    assert_eq!(calls, 1, "one refresh call between the two VMs");
}

/// In Envoy the main thread's VM is configured before the cluster manager is up: its first fetch
/// never lands. Its claim to fetch lasts one second, so a worker fetches at its next tick instead of
/// waiting out the fetch timeout.
#[test]
fn a_configure_time_fetch_that_never_answers_holds_other_vms_up_for_one_second_only() {
    let shared = SharedData::new();
    let config = config_with(keys_uri());
    let main_thread = load_shared(&config, &shared);
    let worker = load_shared(&config, &shared);
    assert_eq!(main_thread.pending_calls().len(), 1);
    assert!(
        worker.pending_calls().is_empty(),
        "the claim is the main thread's"
    );
    let waiting = score(&worker, &user_token(&worker, |_| {}));
    assert!(waiting.is_paused(), "{waiting}");

    // The main thread's call is never answered. One second on, the worker fetches itself.
    tick_after(&worker, 1);
    assert_eq!(worker.pending_calls().len(), 1, "{}", worker.log_text());
    answer(&worker, &mint::test_jwks());
    let done = now_outcome(&worker, &waiting);
    assert!(done.is_forwarded(), "{done}\n{}", worker.log_text());
}

fn discovery_answer(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize"),
        "jwks_uri": format!("https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"),
        "id_token_signing_alg_values_supported": ["RS256"]
    })
}

#[test]
fn oidc_discovery_finds_the_jwks_uri_then_the_keys() {
    let h = load(&config_with(json!({"discovery": true, "cluster": "entra"})));
    let discovery = the_call(&h);
    assert_eq!(discovery.cluster, "entra");
    assert_eq!(discovery.authority(), Some("login.microsoftonline.com"));
    assert_eq!(
        discovery.path().map(str::to_string),
        Some(format!("/{TENANT}/v2.0/.well-known/openid-configuration"))
    );
    let out = score(&h, &user_token(&h, |_| {}));
    assert!(out.is_paused());
    h.respond_call(
        discovery.token,
        200,
        &[],
        discovery_answer(&entra_issuer()).to_string(),
    )
    .unwrap();
    let keys = the_call(&h);
    assert_eq!(
        keys.path().map(str::to_string),
        Some(format!("/{TENANT}/discovery/v2.0/keys"))
    );
    assert!(h.outcome(out.context_id()).unwrap().is_paused());
    answer(&h, &mint::test_jwks());
    assert!(now_outcome(&h, &out).is_forwarded());
    // The scheduled refresh goes straight to the learned jwks_uri.
    tick_after(&h, 3600);
    assert_eq!(
        the_call(&h).path().map(str::to_string),
        keys.path().map(str::to_string)
    );
}

#[test]
fn an_explicit_discovery_url_is_fetched_as_given() {
    let url = format!(
        "https://login.microsoftonline.com/{TENANT}/v2.0/.well-known/openid-configuration?appid=x"
    );
    let h = load(&config_with(json!({"discovery": url, "cluster": "entra"})));
    assert_eq!(
        the_call(&h).path().map(str::to_string),
        Some(format!(
            "/{TENANT}/v2.0/.well-known/openid-configuration?appid=x"
        ))
    );
}

#[test]
fn a_discovery_document_naming_another_issuer_fails_the_fetch() {
    let h = load(&config_with(json!({"discovery": true, "cluster": "entra"})));
    let out = score(&h, &user_token(&h, |_| {}));
    let discovery = the_call(&h);
    h.respond_call(
        discovery.token,
        200,
        &[],
        discovery_answer("https://evil.example/v2.0").to_string(),
    )
    .unwrap();
    assert!(
        h.pending_calls().is_empty(),
        "the jwks_uri of a wrong issuer is never fetched"
    );
    assert_eq!(metric(&h, "mlgate.jwks.fetch_failed"), 1);
    assert_eq!(verdict(&now_outcome(&h, &out)), "keys_unavailable");
    assert!(
        !h.logs_containing("discovery names issuer").is_empty(),
        "{}",
        h.log_text()
    );
}

#[test]
fn entra_per_key_issuer_limits_a_key_to_its_tenants() {
    let mut config = config_with(keys_uri());
    config["providers"][0]["issuer"] = json!("https://login.microsoftonline.com/{tenant}/v2.0");
    config["providers"][0]["tenants"] = json!([TENANT, OTHER_TENANT]);
    let mut templated = TestKey::rsa_a().public_jwk();
    templated["issuer"] = json!("https://login.microsoftonline.com/{tenantid}/v2.0");
    let mut concrete = TestKey::rsa_b().public_jwk();
    concrete["issuer"] = json!(format!("https://login.microsoftonline.com/{TENANT}/v2.0"));
    let h = loaded(&config, &json!({"keys": [templated, concrete]}));
    let from = |tenant: &str, key: TestKey| {
        let mut claims = user_claims(&h);
        claims["tid"] = json!(tenant);
        claims["iss"] = json!(format!("https://login.microsoftonline.com/{tenant}/v2.0"));
        score(&h, &key.sign(&claims, Algorithm::RS256))
    };
    // The templated key serves every tenant, each with its own tid substituted.
    assert_eq!(verdict(&from(TENANT, TestKey::rsa_a())), "forwarded");
    assert_eq!(verdict(&from(OTHER_TENANT, TestKey::rsa_a())), "forwarded");
    // The concrete key serves only its tenant.
    assert_eq!(verdict(&from(TENANT, TestKey::rsa_b())), "forwarded");
    let foreign = from(OTHER_TENANT, TestKey::rsa_b());
    assert_eq!(foreign.status(), Some(401), "{foreign}");
    assert_ne!(verdict(&foreign), "forwarded");
}

/// A JWK with only an X.509 chain (`x5c`, no `n`/`e`), as some IdPs publish. The certificate is a
/// self-signed one for rsa-a (test-harness/keys/rsa-a.x5c.b64).
#[test]
fn a_key_published_only_as_x5c_verifies() {
    let cert = include_str!("../keys/rsa-a.x5c.b64").trim();
    let jwks = json!({"keys": [{"kty": "RSA", "use": "sig", "kid": "rsa-a-x5c", "x5c": [cert]}]});
    let h = loaded(&config_with(keys_uri()), &jwks);
    assert_eq!(
        metric(&h, "provider=.=entra;.;mlgate.jwks_keys"),
        1,
        "the x5c-only key was not loaded:\n{}",
        h.log_text()
    );
    let out = score(&h, &token_with_kid(&h, "rsa-a-x5c"));
    assert!(out.is_forwarded(), "{out}\n{}", h.log_text());
    let wrong = TestKey::rsa_b().sign_with_header(
        &json!({"alg": "RS256", "kid": "rsa-a-x5c"}),
        &user_claims(&h),
    );
    assert_eq!(verdict(&score(&h, &wrong)), "bad_signature");
}

#[test]
fn a_client_that_hangs_up_while_paused_is_dropped_and_nothing_breaks() {
    let h = load(&config_with(keys_uri()));
    let gone = score(&h, &user_token(&h, |_| {}));
    let stays = score(&h, &user_token(&h, |_| {}));
    assert!(gone.is_paused() && stays.is_paused());
    h.disconnect(gone.context_id()).unwrap();
    assert!(matches!(now_outcome(&h, &gone), Outcome::Reset { .. }));
    assert_eq!(h.pending_requests().len(), 1);
    // The fetch belongs to the root context: it survives the request and still loads the keys.
    answer(&h, &mint::test_jwks());
    assert!(now_outcome(&h, &stays).is_forwarded());
    assert!(matches!(now_outcome(&h, &gone), Outcome::Reset { .. }));
    assert!(h.logs_containing("panic").is_empty(), "{}", h.log_text());
    // Hang up while waiting on an unknown-kid refetch, then let the waiter timeout pass.
    tick_after(&h, 301);
    let gone = score(&h, &token_with_kid(&h, "new-kid"));
    assert!(gone.is_paused());
    h.disconnect(gone.context_id()).unwrap();
    tick_after(&h, 30);
    h.pending_calls()
        .iter()
        .for_each(|c| h.fail_call(c.token).unwrap());
    tick_after(&h, 30);
    assert!(score(&h, &user_token(&h, |_| {})).is_forwarded());
}

#[test]
fn a_request_paused_past_the_fetch_timeout_is_answered_by_a_tick() {
    let h = load(&config_with(keys_uri()));
    let out = score(&h, &user_token(&h, |_| {}));
    assert!(out.is_paused());
    // The callout never answers (Envoy would time it out; here the test holds it). Requests wait up
    // to 2 × timeout + 3 s (the lock holder's attempt, then this VM's own).
    for _ in 0..12 {
        tick_after(&h, 1);
    }
    assert!(now_outcome(&h, &out).is_paused());
    for _ in 0..2 {
        tick_after(&h, 1);
    }
    let done = now_outcome(&h, &out);
    assert_eq!(
        verdict(&done),
        "keys_unavailable",
        "{done}\n{}",
        h.log_text()
    );
}
