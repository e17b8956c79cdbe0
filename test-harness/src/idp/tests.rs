//! The IdP's unit tests: tokens verify against the JWKS, the endpoints answer, rotation keeps the old key.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use super::keys::{KeyEntry, KeyRing, SigningKey};
use super::personas::{persona, Caller, AUDIENCE, PERSONAS};
use super::server::IdpState;
use super::tokens::{now_secs, MintOptions};
use crate::http_server::{split_target, ReceivedRequest, Response};

fn get(idp: &IdpState, path_and_query: &str, method: &str) -> Response {
    let (path, query) = split_target(path_and_query);
    idp.handle(&ReceivedRequest {
        method: method.to_string(),
        path,
        query,
        headers: Vec::new(),
        body: Vec::new(),
    })
}

fn state() -> IdpState {
    let s = IdpState {
        issuer: OnceLock::new(),
        ring: Mutex::new(KeyRing {
            keys: vec![KeyEntry {
                key: Arc::new(SigningKey::generate().unwrap()),
                retire_at: None,
            }],
        }),
        grace: Duration::from_secs(600),
        log: false,
        keys_down_until: Mutex::new(None),
    };
    s.issuer.set("http://127.0.0.1:9400".to_string()).unwrap();
    s
}

fn verify(jwks: &Value, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("kid in jwks");
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[AUDIENCE]);
    v.set_issuer(&["http://127.0.0.1:9400"]);
    decode::<Value>(token, &key, &v).unwrap().claims
}

#[test]
fn personas_are_entra_shaped_and_verify() {
    let s = state();
    let jwks = s.jwks();
    for p in PERSONAS {
        let t = s.mint(p.name, &MintOptions::default()).unwrap().token;
        let c = verify(&jwks, &t);
        assert_eq!(c["ver"], "2.0");
        assert_eq!(c["tid"], p.tenant);
        assert_eq!(c["oid"], p.oid);
        assert_eq!(c["aud"], AUDIENCE);
        match p.caller {
            Caller::App => {
                assert_eq!(c["idtyp"], "app");
                assert!(c.get("scp").is_none());
                assert_eq!(c["roles"], json!(["Scoring.Invoke"]));
            }
            Caller::User => assert!(c["scp"].is_string()),
        }
        if p.groups_overage {
            assert!(c.get("groups").is_none());
            assert_eq!(c["_claim_names"]["groups"], "src1");
        }
    }
    assert!(persona("contractor").is_some());
}

#[test]
fn token_endpoint_and_discovery() {
    let s = state();
    let r = get(
        &s,
        "/token?persona=bob&expires_in=-600&aud=api%3A%2F%2Fother",
        "GET",
    );
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let token = v["access_token"].as_str().unwrap();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["aud"], "api://other");
    assert!(payload["exp"].as_i64().unwrap() < now_secs());
    let raw = get(&s, "/token?persona=alice&format=raw", "GET");
    assert_eq!(raw.content_type, "text/plain; charset=utf-8");
    assert_eq!(String::from_utf8(raw.body).unwrap().matches('.').count(), 2);
    assert_eq!(get(&s, "/token?persona=nobody", "GET").status, 400);
    assert_eq!(get(&s, "/token", "GET").status, 400);
    let d: Value =
        serde_json::from_slice(&get(&s, "/.well-known/openid-configuration", "GET").body).unwrap();
    assert_eq!(d["issuer"], "http://127.0.0.1:9400");
    assert_eq!(d["jwks_uri"], "http://127.0.0.1:9400/jwks");
    assert_eq!(get(&s, "/personas", "GET").status, 200);
}

#[test]
fn rotation_keeps_previous_key_for_grace() {
    let s = state();
    let old = s.mint("alice", &MintOptions::default()).unwrap();
    let r = get(&s, "/admin/rotate", "POST");
    assert_eq!(r.status, 200);
    let jwks = s.jwks();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let new = s.mint("alice", &MintOptions::default()).unwrap();
    assert_ne!(old.kid, new.kid);
    assert_eq!(jwks["keys"][0]["kid"], new.kid.as_str());
    verify(&jwks, &old.token);
    verify(&jwks, &new.token);
    // Grace 0: the previous key leaves at once.
    s.rotate(Some(Duration::ZERO)).unwrap();
    assert_eq!(s.jwks()["keys"].as_array().unwrap().len(), 2);
    assert_eq!(get(&s, "/admin/rotate", "GET").status, 405);
}

#[test]
fn pem_key_gives_stable_kid() {
    let pem = include_str!("../../keys/rsa-a.pem");
    let a = SigningKey::from_pem(pem).unwrap();
    let b = SigningKey::from_pem(pem).unwrap();
    assert_eq!(a.kid(), b.kid());
    assert_eq!(a.kid().len(), 16);
}

#[test]
fn key_set_outage_answers_503_until_it_ends_while_tokens_are_still_issued() {
    let s = state();
    let r = get(&s, "/admin/outage?seconds=30", "POST");
    assert_eq!(r.status, 200);
    for path in ["/jwks", "/keys", "/discovery/v2.0/keys"] {
        assert_eq!(get(&s, path, "GET").status, 503, "{path}");
    }
    assert_eq!(
        get(&s, "/token?persona=alice&format=raw", "GET").status,
        200
    );
    assert_eq!(
        get(&s, "/.well-known/openid-configuration", "GET").status,
        200
    );
    assert_eq!(get(&s, "/admin/outage?seconds=0", "POST").status, 200);
    assert_eq!(get(&s, "/jwks", "GET").status, 200);
    assert_eq!(get(&s, "/admin/outage?seconds=x", "POST").status, 400);
    assert_eq!(get(&s, "/admin/outage", "GET").status, 405);
}
