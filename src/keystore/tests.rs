//! The key store: which requests may wait, who is woken, which set is in use.

use serde_json::json;

use super::*;
use crate::testing::{entra_config, envoy_backend, test_jwks};

const NOW: i64 = 1_000_000;
const REMOTE: usize = 1;
const INLINE: usize = 0;

/// Provider 0 with inline keys, provider 1 fetching its JWKS (5 s timeout, 300 s between
/// forced refetches, 1 h refresh, 1 day stale).
fn store() -> KeyStore {
    let mut config = entra_config();
    config["providers"].as_array_mut().unwrap().push(json!({
        "name": "remote",
        "issuer": "https://idp.example",
        "audiences": ["api://ml-scoring"],
        "jwks": {"uri": "https://idp.example/keys", "cluster": "idp"}
    }));
    let policy = crate::config::compile(config.to_string().as_bytes(), &envoy_backend()).unwrap();
    KeyStore::new(&policy)
}

fn jwks_body() -> Vec<u8> {
    test_jwks().to_string().into_bytes()
}

/// Provider 1's first fetch, answered with the test JWKS.
fn loaded() -> KeyStore {
    let mut store = store();
    store.start_fetch(REMOTE, NOW, |_| true).unwrap();
    let progress = store.on_response(REMOTE, NOW, Some(200), &jwks_body());
    assert_eq!(progress, Some(Progress::Loaded));
    store
}

#[test]
fn inline_keys_are_in_use_from_the_start_and_never_wait() {
    let mut store = store();
    assert!(store.current(INLINE).is_some());
    assert_eq!(store.may_wait(INLINE, false, NOW), Wait::No);
    assert_eq!(store.may_wait(INLINE, true, NOW), Wait::No);
}

#[test]
fn a_request_may_wait_for_a_remote_providers_first_keys() {
    let mut store = store();
    assert!(store.current(REMOTE).is_none());
    assert_eq!(
        store.may_wait(REMOTE, false, NOW),
        Wait::Yes { refetch: false }
    );
}

#[test]
fn no_request_waits_while_a_failed_fetch_backs_off() {
    let mut store = store();
    store.start_fetch(REMOTE, NOW, |_| true).unwrap();
    store.on_response(REMOTE, NOW, None, b"");
    assert_eq!(store.may_wait(REMOTE, false, NOW), Wait::No);
    assert_eq!(
        store.may_wait(REMOTE, false, NOW + 1),
        Wait::Yes { refetch: false }
    );
}

#[test]
fn a_loaded_set_is_in_use_and_changes_the_generation() {
    let store = loaded();
    assert_eq!(store.current(REMOTE).map(|k| k.len()), Some(5));
    assert_eq!(store.generation(REMOTE), 1);
    assert_eq!(store.generation(INLINE), 0);
}

#[test]
fn an_unknown_kid_starts_one_refetch_and_others_join_it() {
    let mut store = loaded();
    let later = NOW + 301;
    assert_eq!(
        store.may_wait(REMOTE, true, later),
        Wait::Yes { refetch: true }
    );
    assert_eq!(
        store.may_wait(REMOTE, true, later),
        Wait::Yes { refetch: false }
    );
    assert!(store.start_fetch(REMOTE, later, |_| true).is_some());
    assert_eq!(
        store.may_wait(REMOTE, true, later),
        Wait::Yes { refetch: false }
    );
}

#[test]
fn unknown_kids_cannot_force_refetches_inside_the_minimum_interval() {
    let mut store = loaded();
    assert_eq!(store.may_wait(REMOTE, true, NOW + 299), Wait::No);
}

#[test]
fn waiters_are_woken_by_provider_and_forgotten_when_gone() {
    let mut store = store();
    store.wait(7, REMOTE, NOW);
    store.wait(8, REMOTE, NOW);
    store.wait(9, INLINE, NOW);
    store.forget(8);
    assert_eq!(store.take_waiting(REMOTE), vec![7]);
    assert_eq!(store.take_waiting(REMOTE), Vec::<u32>::new());
    assert_eq!(store.take_waiting(INLINE), vec![9]);
}

#[test]
fn waiters_past_two_fetch_timeouts_are_woken_with_their_providers_other_waiters() {
    let mut store = store();
    store.wait(1, REMOTE, NOW);
    store.wait(2, REMOTE, NOW + 10);
    // 2 × 5 s timeout + 3 s.
    assert!(store.take_overdue(NOW + 13).is_empty());
    assert_eq!(store.take_overdue(NOW + 14), vec![1, 2]);
}

#[test]
fn a_vm_that_loses_the_fetch_lock_waits_for_the_winners_result() {
    let mut store = store();
    assert!(store.start_fetch(REMOTE, NOW, |_| false).is_none());
    // Requests may still wait: the other VM's result is coming.
    assert_eq!(
        store.may_wait(REMOTE, false, NOW),
        Wait::Yes { refetch: false }
    );
    assert!(
        store.start_fetch(REMOTE, NOW, |_| true).is_none(),
        "deferred a second"
    );
    assert!(store.start_fetch(REMOTE, NOW + 1, |_| true).is_some());
}

#[test]
fn a_set_another_vm_fetched_is_adopted_once() {
    let mut store = store();
    let set = crate::jwks::parse_jwks(&test_jwks(), crate::jwks::Strictness::Lenient).unwrap();
    assert!(store.adopt(REMOTE, set.clone(), NOW - 5, NOW));
    assert!(store.current(REMOTE).is_some());
    assert!(
        !store.adopt(REMOTE, set, NOW - 10, NOW),
        "an older set is ignored"
    );
}

#[test]
fn a_set_past_its_staleness_bound_is_withdrawn_once() {
    let mut store = loaded();
    let stale = NOW + 3600 + 86400 + 1;
    assert!(store.withdraw_stale(stale - 1).is_empty());
    assert_eq!(store.withdraw_stale(stale), vec![REMOTE]);
    assert!(store.current(REMOTE).is_none());
    assert_eq!(store.generation(REMOTE), 2);
    assert!(store.withdraw_stale(stale + 1).is_empty());
}
