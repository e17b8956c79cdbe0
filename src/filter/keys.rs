//! Remote key sets on the host: dispatching fetches, sharing the result with the other worker
//! VMs, and waking the requests that waited for keys.
//!
//! The schedule itself (when, what, backoff, staleness) is the core's `keyring::RemoteKeys`.
//! Here: one fetch per proxy — a CAS lock in shared data elects the VM that fetches, and the
//! fetched JWKS is published in shared data for the others to adopt on their next tick.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::time::Duration;

use hashbrown::HashMap;

use super::hostcalls::{self, BufferType};
use super::http::{self, RequestState};
use super::root::Shared;
use crate::jwks::{self, Strictness};
use crate::keyring::{FetchRequest, Progress, RemoteKeys};

/// Largest JWKS or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A request paused until its provider's keys arrive.
pub struct Waiter {
    pub context_id: u32,
    pub provider: usize,
    pub since: i64,
    pub state: Rc<RefCell<RequestState>>,
}

#[derive(Default)]
pub struct Fetcher {
    remotes: RefCell<Vec<Option<RemoteKeys>>>,
    /// Callout token → provider.
    calls: RefCell<HashMap<u32, usize>>,
    waiters: RefCell<Vec<Waiter>>,
    /// Shared-data CAS of the key set last adopted or published, per provider.
    seen: RefCell<Vec<u32>>,
    /// Shared-data key names per provider: (key set, lock).
    names: Vec<(String, String)>,
    /// This VM's identity in the fetch lock.
    nonce: String,
}

impl Fetcher {
    pub fn new(remotes: Vec<Option<RemoteKeys>>, provider_names: &[String]) -> Fetcher {
        let names = remotes
            .iter()
            .zip(provider_names)
            .map(|(remote, name)| {
                let target = remote
                    .as_ref()
                    .map(|r| format!("{:?}", r.config.target))
                    .unwrap_or_default();
                // Not for security: only to keep two configurations' key sets apart.
                let tag = fnv1a(target.as_bytes());
                (
                    format!("mlgate.jwks.{name}.{tag:016x}"),
                    format!("mlgate.jwks-lock.{name}.{tag:016x}"),
                )
            })
            .collect();
        let nonce = format!("{:016x}", RandomState::new().hash_one(provider_names.len()));
        Fetcher {
            seen: RefCell::new(vec![0; remotes.len()]),
            remotes: RefCell::new(remotes),
            calls: RefCell::new(HashMap::new()),
            waiters: RefCell::new(Vec::new()),
            names,
            nonce,
        }
    }

    pub fn has_remote(&self) -> bool {
        self.remotes.borrow().iter().any(Option::is_some)
    }

    fn provider_count(&self) -> usize {
        self.remotes.borrow().len()
    }

    pub fn add_waiter(&self, waiter: Waiter) {
        self.waiters.borrow_mut().push(waiter);
    }

    pub fn remove_waiter(&self, context_id: u32) {
        self.waiters
            .borrow_mut()
            .retain(|w| w.context_id != context_id);
    }
}

/// FNV-1a, 64 bit.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A request needs keys of `provider`: may it wait? Marks a fetch as wanted when one is allowed;
/// the root context dispatches it on its next tick (at most a second away).
///
/// Why not dispatch here: the SDK's dispatcher routes every `on_http_call_response` by token to
/// the context that was active (in the SDK's own bookkeeping) when the call was registered, and
/// `proxy_set_effective_context` does not change that. A call made from a request's callback
/// would be answered to that request (whose `on_http_call_response` does nothing, and which may
/// be gone by then), leaving the fetch in flight forever. Calls made from root callbacks
/// (configure, tick, call response) are answered to the root.
pub fn request_keys(
    shared: &Shared,
    provider: usize,
    unknown_kid: bool,
    now: i64,
    _current: u32,
) -> bool {
    let mut remotes = shared.fetcher.remotes.borrow_mut();
    let Some(Some(remote)) = remotes.get_mut(provider) else {
        return false;
    };
    let joining = remote.in_flight() || remote.refetch_pending();
    let wait = if unknown_kid {
        remote.want_unknown_kid(now)
    } else {
        remote.cold_start_possible(now)
    };
    // Counted once per refetch, not per request that waits for it.
    if wait && unknown_kid && !joining && remote.refetch_pending() {
        shared.metrics.unknown_kid_refetch();
    }
    wait
}

/// How long a VM's claim to fetch lasts.
#[derive(Clone, Copy)]
pub enum Claim {
    /// At configure: one second. In Envoy the main thread's VMs are configured before the cluster
    /// manager is up and their first fetch never lands; a short claim lets a worker take over at
    /// its next tick instead of waiting out a whole fetch timeout.
    Configure,
    /// From ticks: the fetch timeout plus a second.
    Tick,
}

/// Starts a fetch for `provider` if one is due and this VM wins the lock. Root callbacks only
/// (see `request_keys`).
fn ensure_fetch(shared: &Shared, provider: usize, now: i64, claim: Claim) {
    let request = {
        let mut remotes = shared.fetcher.remotes.borrow_mut();
        let Some(Some(remote)) = remotes.get_mut(provider) else {
            return;
        };
        if !remote.due(now) {
            return;
        }
        let hold = match claim {
            Claim::Configure => 1,
            Claim::Tick => i64::from(remote.config.timeout_ms.div_ceil(1000)) + 1,
        };
        if !acquire_lock(shared, provider, now, hold) {
            // Another VM is fetching; its result arrives through shared data.
            remote.defer(now, 1);
            return;
        }
        remote.start(now)
    };
    dispatch(shared, provider, &request, now);
}

fn dispatch(shared: &Shared, provider: usize, request: &FetchRequest, now: i64) {
    let headers = vec![
        (":method", "GET"),
        (":path", request.url.path.as_str()),
        (":authority", request.url.authority.as_str()),
        (":scheme", request.url.scheme.as_str()),
        ("accept", "application/json"),
        ("user-agent", "mlgate"),
    ];
    // Through the SDK, not `hostcalls::http_call`: the SDK's dispatcher must know the token, or
    // it panics ("invalid token_id") when the answer arrives.
    let result = proxy_wasm::hostcalls::dispatch_http_call(
        &request.cluster,
        headers,
        None,
        vec![],
        Duration::from_millis(u64::from(request.timeout_ms)),
    );
    match result {
        Ok(token) => {
            shared.fetcher.calls.borrow_mut().insert(token, provider);
        }
        Err(error) => {
            let message = format!("cluster {:?}: host status {error:?}", request.cluster);
            let progress = match shared.fetcher.remotes.borrow_mut().get_mut(provider) {
                Some(Some(remote)) => remote.dispatch_failed(now, &message),
                _ => return,
            };
            finish(shared, provider, progress, now, &[]);
        }
    }
}

/// The root context's `on_http_call_response`.
pub fn on_response(shared: &Shared, token: u32, num_headers: usize, body_size: usize, now: i64) {
    let Some(provider) = shared.fetcher.calls.borrow_mut().remove(&token) else {
        return;
    };
    let status = if num_headers == 0 {
        None
    } else {
        hostcalls::call_response_status()
    };
    let body = if body_size > MAX_DOCUMENT_BYTES {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).unwrap_or_default()
    };
    let progress = match shared.fetcher.remotes.borrow_mut().get_mut(provider) {
        Some(Some(remote)) => remote.on_response(now, status, &body),
        _ => return,
    };
    finish(shared, provider, progress, now, &body);
}

fn finish(shared: &Shared, provider: usize, progress: Progress, now: i64, body: &[u8]) {
    let name = provider_name(shared, provider);
    match progress {
        Progress::Next(request) => dispatch(shared, provider, &request, now),
        Progress::Loaded => {
            let keys = with_remote(shared, provider, |r| r.keys(now).cloned()).flatten();
            let count = keys.as_ref().map_or(0, |k| k.len());
            shared.gate.set_keys(provider, keys);
            shared.metrics.fetch_ok(provider, count);
            publish(shared, provider, now, body);
            release_lock(shared, provider);
            log::info!("mlgate: provider {name}: {count} key(s) loaded");
            wake(shared, provider);
        }
        Progress::Failed(why) => {
            shared.metrics.fetch_failed();
            release_lock(shared, provider);
            let (stale, next) =
                with_remote(shared, provider, |r| (r.ever_loaded(), r.next_attempt_at()))
                    .unwrap_or((false, now));
            log::warn!(
                "mlgate: provider {name}: key fetch failed: {why}; {}; next attempt in {} s",
                if stale {
                    "keeping the last good key set"
                } else {
                    "no keys yet"
                },
                next - now
            );
            wake(shared, provider);
        }
    }
}

fn with_remote<T>(shared: &Shared, provider: usize, f: impl FnOnce(&RemoteKeys) -> T) -> Option<T> {
    shared
        .fetcher
        .remotes
        .borrow()
        .get(provider)
        .and_then(Option::as_ref)
        .map(f)
}

fn provider_name(shared: &Shared, provider: usize) -> String {
    shared
        .gate
        .policy
        .providers
        .get(provider)
        .map_or_else(String::new, |p| p.name.clone())
}

/// Publishes a fetched JWKS for the other VMs: `<fetched_at>\n<jwks>`.
fn publish(shared: &Shared, provider: usize, now: i64, body: &[u8]) {
    let Some((key, _)) = shared.fetcher.names.get(provider) else {
        return;
    };
    let mut value = format!("{now}\n").into_bytes();
    value.extend_from_slice(body);
    if hostcalls::set_shared_data(key, &value, 0).is_ok() {
        if let Ok(Some((_, cas))) = hostcalls::get_shared_data(key) {
            if let Some(seen) = shared.fetcher.seen.borrow_mut().get_mut(provider) {
                *seen = cas;
            }
        }
    }
}

fn acquire_lock(shared: &Shared, provider: usize, now: i64, hold_seconds: i64) -> bool {
    let Some((_, lock)) = shared.fetcher.names.get(provider) else {
        return false;
    };
    let (current, cas) = match hostcalls::get_shared_data(lock) {
        Ok(Some((value, cas))) => (String::from_utf8_lossy(&value).into_owned(), cas),
        Ok(None) => (String::new(), 0),
        // No shared data on this host: every VM fetches for itself.
        Err(_) => return true,
    };
    if let Some((owner, expires)) = current.split_once(' ') {
        let held = expires.parse::<i64>().is_ok_and(|expires| expires > now);
        if held && owner != shared.fetcher.nonce {
            return false;
        }
    }
    // Bounded, so that a VM whose fetch never answers holds the others up for `hold_seconds` only
    // (see `Claim`).
    let expires = now + hold_seconds;
    let value = format!("{} {expires}", shared.fetcher.nonce);
    hostcalls::set_shared_data(lock, value.as_bytes(), cas).unwrap_or(true)
}

fn release_lock(shared: &Shared, provider: usize) {
    let Some((_, lock)) = shared.fetcher.names.get(provider) else {
        return;
    };
    if let Ok(Some((value, cas))) = hostcalls::get_shared_data(lock) {
        if String::from_utf8_lossy(&value).starts_with(&shared.fetcher.nonce) {
            let _ = hostcalls::set_shared_data(lock, b"", cas);
        }
    }
}

/// The root context's tick: adopt key sets other VMs published, withdraw sets past their
/// staleness bound, start due refreshes, and answer requests that waited too long.
pub fn on_tick(shared: &Shared, now: i64, claim: Claim) {
    for provider in 0..shared.fetcher.provider_count() {
        if with_remote(shared, provider, |_| ()).is_none() {
            continue;
        }
        adopt_shared(shared, provider, now);
        let current = with_remote(shared, provider, |r| r.keys(now).cloned()).flatten();
        if current.is_none() && shared.gate.keys(provider).is_some() {
            log::warn!(
                    "mlgate: provider {}: key set is older than max_stale_seconds; refusing tokens until a refresh succeeds",
                    provider_name(shared, provider)
                );
            shared.gate.set_keys(provider, None);
        }
        ensure_fetch(shared, provider, now, claim);
    }
    let overdue: Vec<usize> = {
        let remotes = shared.fetcher.remotes.borrow();
        shared
            .fetcher
            .waiters
            .borrow()
            .iter()
            .filter(|w| {
                let limit = remotes
                    .get(w.provider)
                    .and_then(Option::as_ref)
                    // Long enough for the lock holder's attempt and then our own.
                    .map_or(5, |r| 2 * i64::from(r.config.timeout_ms.div_ceil(1000)) + 3);
                now - w.since > limit
            })
            .map(|w| w.provider)
            .collect()
    };
    for provider in overdue {
        wake(shared, provider);
    }
}

fn adopt_shared(shared: &Shared, provider: usize, now: i64) {
    let Some((key, _)) = shared.fetcher.names.get(provider) else {
        return;
    };
    let Ok(Some((value, cas))) = hostcalls::get_shared_data(key) else {
        return;
    };
    let seen = shared
        .fetcher
        .seen
        .borrow()
        .get(provider)
        .copied()
        .unwrap_or(0);
    if cas == seen || value.is_empty() {
        return;
    }
    if let Some(slot) = shared.fetcher.seen.borrow_mut().get_mut(provider) {
        *slot = cas;
    }
    let Some(newline) = value.iter().position(|b| *b == b'\n') else {
        return;
    };
    let (head, rest) = value.split_at(newline);
    let Some(fetched_at) = std::str::from_utf8(head)
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return;
    };
    let Some(document) = rest
        .get(1..)
        .and_then(|body| serde_json::from_slice(body).ok())
    else {
        return;
    };
    let Ok(set) = jwks::parse_jwks(&document, Strictness::Lenient) else {
        return;
    };
    let keys = {
        let mut remotes = shared.fetcher.remotes.borrow_mut();
        let Some(Some(remote)) = remotes.get_mut(provider) else {
            return;
        };
        remote.adopt(set, fetched_at, now);
        remote.keys(now).cloned()
    };
    let count = keys.as_ref().map_or(0, |k| k.len());
    shared.gate.set_keys(provider, keys);
    shared.metrics.keys_loaded(provider, count);
    wake(shared, provider);
}

/// Decides again, for every request waiting on `provider`, now that keys arrived or will not.
fn wake(shared: &Shared, provider: usize) {
    let waiting: Vec<Waiter> = {
        let mut waiters = shared.fetcher.waiters.borrow_mut();
        let (mine, others): (Vec<Waiter>, Vec<Waiter>) =
            waiters.drain(..).partition(|w| w.provider == provider);
        *waiters = others;
        mine
    };
    if waiting.is_empty() {
        return;
    }
    for waiter in waiting {
        if hostcalls::set_effective_context(waiter.context_id).is_ok() {
            http::resume_after_keys(shared, &waiter.state, waiter.context_id);
        }
    }
    let _ = hostcalls::set_effective_context(shared.root_id);
}
