//! Remote key sets on the host: dispatching the key store's fetches, sharing their results with
//! the other worker VMs, and telling the root context which waiting requests to resume.
//!
//! What to fetch and when, which set is in use and which requests may wait are the core's
//! `keystore::KeyStore` (owned by the gate). Here: I/O only — the callouts, and one fetch per
//! proxy: a CAS lock in shared data elects the VM that fetches, and the fetched JWKS is
//! published in shared data for the others to adopt on their next tick.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use super::hostcalls::{self, BufferType};
use super::metrics::Metrics;
use crate::gate::Gate;
use crate::jwks::{self, Strictness};
use crate::keyring::{FetchRequest, Progress};

/// Largest JWKS or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// The host side of remote keys: callouts in flight and the shared-data names and versions.
pub struct Fetcher {
    /// Callout token and provider: at most one callout per provider is in flight, so a list
    /// (a hash table of its own would cost ~2 KB of .wasm).
    calls: RefCell<Vec<(u32, usize)>>,
    /// Shared-data CAS of the key set last adopted or published, per provider.
    seen: RefCell<Vec<u32>>,
    /// Shared-data key names per provider: (key set, lock); `None` for providers without
    /// remote keys.
    names: Vec<Option<(String, String)>>,
    /// This VM's identity in the fetch lock.
    nonce: String,
}

impl Fetcher {
    /// `targets`: per provider, where its remote keys come from (`None`: not remote), which keeps
    /// two configurations' shared key sets apart.
    pub fn new(targets: &[Option<String>], provider_names: &[String]) -> Fetcher {
        let names = targets
            .iter()
            .zip(provider_names)
            .map(|(target, name)| {
                // Not for security: only to keep two configurations' key sets apart.
                let tag = fnv1a(target.as_ref()?.as_bytes());
                Some((
                    format!("mlgate.jwks.{name}.{tag:016x}"),
                    format!("mlgate.jwks-lock.{name}.{tag:016x}"),
                ))
            })
            .collect();
        let nonce = format!("{:016x}", RandomState::new().hash_one(provider_names.len()));
        Fetcher {
            calls: RefCell::new(Vec::new()),
            seen: RefCell::new(vec![0; targets.len()]),
            names,
            nonce,
        }
    }

    fn key_name(&self, provider: usize) -> Option<&str> {
        Some(self.names.get(provider)?.as_ref()?.0.as_str())
    }

    fn lock_name(&self, provider: usize) -> Option<&str> {
        Some(self.names.get(provider)?.as_ref()?.1.as_str())
    }
}

/// What the key I/O uses of the VM's shared state (the adapter's `Shared` lends it).
pub struct KeyIo<'a> {
    pub gate: &'a Gate,
    pub metrics: &'a Metrics,
    pub fetcher: &'a Fetcher,
}

/// FNV-1a, 64 bit.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How long a VM's claim to fetch lasts.
#[derive(Clone, Copy)]
pub enum LockHold {
    /// At configure: one second. In Envoy the main thread's VMs are configured before the cluster
    /// manager is up and their first fetch never lands; a short hold lets a worker take over at
    /// its next tick instead of waiting out a whole fetch timeout.
    Configure,
    /// From ticks: the fetch timeout plus a second.
    Tick,
}

/// Requests to resume, by context id: their provider's keys arrived, or will not.
pub type Woken = Vec<u32>;

/// The root context's tick (and its configure): adopt key sets other VMs published, withdraw
/// sets past their staleness bound, start due fetches, and name the requests that waited too
/// long.
///
/// Fetches start from root callbacks only: the SDK's dispatcher routes every
/// `on_http_call_response` by token to the context that was active (in the SDK's own
/// bookkeeping) when the call was registered, and `proxy_set_effective_context` does not change
/// that. A call made from a request's callback would be answered to that request (which may be
/// gone by then), leaving the fetch in flight forever. A request that needs keys waits for the
/// next tick, at most a second away.
pub fn on_tick(io: &KeyIo<'_>, now: i64, hold: LockHold) -> Woken {
    let mut woken = Woken::new();
    for provider in 0..io.fetcher.names.len() {
        if io.fetcher.names.get(provider).is_none_or(Option::is_none) {
            continue;
        }
        woken.extend(adopt_shared(io, provider, now));
        start_fetch(io, provider, now, hold, &mut woken);
    }
    for provider in io.gate.with_keys(|store| store.withdraw_stale(now)) {
        log::warn!(
            "mlgate: provider {}: key set is older than max_stale_seconds; refusing tokens until a refresh succeeds",
            provider_name(io, provider)
        );
    }
    woken.extend(io.gate.with_keys(|store| store.take_overdue(now)));
    woken
}

/// Starts `provider`'s fetch if the store says one is due and this VM wins the lock.
fn start_fetch(io: &KeyIo<'_>, provider: usize, now: i64, hold: LockHold, woken: &mut Woken) {
    let request = io.gate.with_keys(|store| {
        store.start_fetch(provider, now, |remote| {
            let seconds = match hold {
                LockHold::Configure => 1,
                LockHold::Tick => i64::from(remote.config.timeout_ms.div_ceil(1000)) + 1,
            };
            acquire_lock(io, provider, now, seconds)
        })
    });
    if let Some(request) = request {
        dispatch(io, provider, &request, now, woken);
    }
}

fn dispatch(io: &KeyIo<'_>, provider: usize, request: &FetchRequest, now: i64, woken: &mut Woken) {
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
            io.fetcher.calls.borrow_mut().push((token, provider));
        }
        Err(error) => {
            let message = format!("cluster {:?}: host status {error:?}", request.cluster);
            let progress = io
                .gate
                .with_keys(|store| store.dispatch_failed(provider, now, &message));
            if let Some(progress) = progress {
                finish(io, provider, progress, now, &[], woken);
            }
        }
    }
}

/// The root context's `on_http_call_response`.
pub fn on_response(
    io: &KeyIo<'_>,
    token: u32,
    num_headers: usize,
    body_size: usize,
    now: i64,
) -> Woken {
    let mut woken = Woken::new();
    let provider = {
        let mut calls = io.fetcher.calls.borrow_mut();
        let at = calls.iter().position(|&(call, _)| call == token);
        at.map(|at| calls.swap_remove(at).1)
    };
    let Some(provider) = provider else {
        return woken;
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
    let progress = io
        .gate
        .with_keys(|store| store.on_response(provider, now, status, &body));
    if let Some(progress) = progress {
        finish(io, provider, progress, now, &body, &mut woken);
    }
    woken
}

fn finish(
    io: &KeyIo<'_>,
    provider: usize,
    progress: Progress,
    now: i64,
    body: &[u8],
    woken: &mut Woken,
) {
    let name = provider_name(io, provider);
    match progress {
        Progress::Next(request) => dispatch(io, provider, &request, now, woken),
        Progress::Loaded => {
            let count = io.gate.keys(provider).map_or(0, |k| k.len());
            io.metrics.fetch_ok(provider, count);
            publish(io, provider, now, body);
            release_lock(io, provider);
            log::info!("mlgate: provider {name}: {count} key(s) loaded");
            woken.extend(io.gate.with_keys(|store| store.take_waiting(provider)));
        }
        Progress::Failed(why) => {
            io.metrics.fetch_failed();
            release_lock(io, provider);
            let (stale, next) = io.gate.with_keys(|store| {
                store
                    .remote(provider)
                    .map_or((false, now), |r| (r.ever_loaded(), r.next_attempt_at()))
            });
            log::warn!(
                "mlgate: provider {name}: key fetch failed: {why}; {}; next attempt in {} s",
                if stale {
                    "keeping the last good key set"
                } else {
                    "no keys yet"
                },
                next - now
            );
            woken.extend(io.gate.with_keys(|store| store.take_waiting(provider)));
        }
    }
}

fn provider_name(io: &KeyIo<'_>, provider: usize) -> String {
    io.gate
        .policy
        .providers
        .get(provider)
        .map_or_else(String::new, |p| p.name.clone())
}

/// Publishes a fetched JWKS for the other VMs: `<fetched_at>\n<jwks>`.
fn publish(io: &KeyIo<'_>, provider: usize, now: i64, body: &[u8]) {
    let Some(key) = io.fetcher.key_name(provider) else {
        return;
    };
    let mut value = format!("{now}\n").into_bytes();
    value.extend_from_slice(body);
    if hostcalls::set_shared_data(key, &value, 0).is_ok() {
        if let Ok(Some((_, cas))) = hostcalls::get_shared_data(key) {
            if let Some(seen) = io.fetcher.seen.borrow_mut().get_mut(provider) {
                *seen = cas;
            }
        }
    }
}

fn acquire_lock(io: &KeyIo<'_>, provider: usize, now: i64, hold_seconds: i64) -> bool {
    let Some(lock) = io.fetcher.lock_name(provider) else {
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
        if held && owner != io.fetcher.nonce {
            return false;
        }
    }
    // Bounded, so that a VM whose fetch never answers holds the others up for `hold_seconds` only
    // (see `LockHold`).
    let expires = now + hold_seconds;
    let value = format!("{} {expires}", io.fetcher.nonce);
    hostcalls::set_shared_data(lock, value.as_bytes(), cas).unwrap_or(true)
}

fn release_lock(io: &KeyIo<'_>, provider: usize) {
    let Some(lock) = io.fetcher.lock_name(provider) else {
        return;
    };
    if let Ok(Some((value, cas))) = hostcalls::get_shared_data(lock) {
        if String::from_utf8_lossy(&value).starts_with(&io.fetcher.nonce) {
            let _ = hostcalls::set_shared_data(lock, b"", cas);
        }
    }
}

/// Adopts the key set another VM published for `provider`, if it is new to this VM.
fn adopt_shared(io: &KeyIo<'_>, provider: usize, now: i64) -> Woken {
    let Some(key) = io.fetcher.key_name(provider) else {
        return Woken::new();
    };
    let Ok(Some((value, cas))) = hostcalls::get_shared_data(key) else {
        return Woken::new();
    };
    let seen = io.fetcher.seen.borrow().get(provider).copied().unwrap_or(0);
    if cas == seen || value.is_empty() {
        return Woken::new();
    }
    if let Some(slot) = io.fetcher.seen.borrow_mut().get_mut(provider) {
        *slot = cas;
    }
    let Some((fetched_at, set)) = read_published(&value) else {
        return Woken::new();
    };
    let changed = io
        .gate
        .with_keys(|store| store.adopt(provider, set, fetched_at, now));
    if !changed {
        return Woken::new();
    }
    let count = io.gate.keys(provider).map_or(0, |k| k.len());
    io.metrics.keys_loaded(provider, count);
    io.gate.with_keys(|store| store.take_waiting(provider))
}

/// `<fetched_at>\n<jwks>`, as [`publish`] writes it.
fn read_published(value: &[u8]) -> Option<(i64, jwks::KeySet)> {
    let newline = value.iter().position(|b| *b == b'\n')?;
    let (head, rest) = value.split_at(newline);
    let fetched_at = std::str::from_utf8(head).ok()?.parse::<i64>().ok()?;
    let document = serde_json::from_slice(rest.get(1..)?).ok()?;
    jwks::parse_jwks(&document, Strictness::Lenient)
        .ok()
        .map(|set| (fetched_at, set))
}
