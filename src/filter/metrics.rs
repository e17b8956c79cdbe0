//! Counters and gauges, defined once per VM at configure time and shared by every request.

use std::cell::RefCell;

use hashbrown::HashMap;

use super::hostcalls;
use crate::audit::{metrics as names, Audit};

/// A `mlgate.requests_total` series: (decision, reason, route, provider), each by the address of
/// the string the audit record shares with the gate — `&'static` reasons, and route and provider
/// names the gate allocated once and keeps as long as these metrics (both live in `Shared`) — so
/// a request costs one small hash, and no string is formatted once its series is defined.
type SeriesKey = (u8, usize, usize, usize);

#[derive(Default)]
pub struct Metrics {
    /// Counter ids by series, defined on first use (`None`: the host refused the definition).
    requests: RefCell<HashMap<SeriesKey, Option<u32>>>,
    cache_hits: Option<u32>,
    cache_misses: Option<u32>,
    decision_us: Option<u32>,
    fetch_ok: Option<u32>,
    fetch_failed: Option<u32>,
    unknown_kid_refetch: Option<u32>,
    paused_for_keys: Option<u32>,
    body_hold: Option<u32>,
    /// Keys loaded, per provider index.
    keys: Vec<Option<u32>>,
}

fn address(s: Option<&str>) -> usize {
    s.map_or(0, |s| s.as_ptr() as usize)
}

impl Metrics {
    /// Defines every metric but the per-series request counters. A host that refuses a
    /// definition just loses that metric.
    /// `decision_histogram`: the policy's `decision_duration_histogram` (off: the histogram is
    /// not defined, and no decision reads the clock for it).
    pub fn define(
        provider_names: &[String],
        host_crypto: bool,
        decision_histogram: bool,
    ) -> Metrics {
        let mut metrics = Metrics {
            cache_hits: hostcalls::define_counter(names::TOKEN_CACHE_HITS).ok(),
            cache_misses: hostcalls::define_counter(names::TOKEN_CACHE_MISSES).ok(),
            decision_us: decision_histogram
                .then(|| hostcalls::define_histogram(names::DECISION_US).ok())
                .flatten(),
            fetch_ok: hostcalls::define_counter(names::JWKS_FETCH_OK).ok(),
            fetch_failed: hostcalls::define_counter(names::JWKS_FETCH_FAILED).ok(),
            unknown_kid_refetch: hostcalls::define_counter(names::JWKS_UNKNOWN_KID_REFETCH).ok(),
            paused_for_keys: hostcalls::define_counter(names::PAUSED_FOR_KEYS).ok(),
            body_hold: hostcalls::define_gauge(names::BODY_HOLD).ok(),
            ..Metrics::default()
        };
        if let Ok(id) = hostcalls::define_gauge(names::HOST_CRYPTO) {
            hostcalls::record(id, u64::from(host_crypto));
        }
        metrics.keys = provider_names
            .iter()
            .map(|name| hostcalls::define_gauge(&names::keys_loaded(name)).ok())
            .collect();
        metrics
    }

    /// Which path `json_body` routes take (see `crate::body_hold`).
    pub fn body_hold(&self, hold: crate::body_hold::BodyHold) {
        if let Some(id) = self.body_hold {
            hostcalls::record(id, hold.gauge());
        }
    }

    /// Counts a decision in its series and the token cache's answer, and, when the histogram is
    /// on, records how long the deciding callback took since it started (`started_nanos`, host
    /// clock).
    pub fn record(&self, audit: &Audit, started_nanos: u64) {
        let route = audit.route.as_deref();
        let provider = audit.provider.as_deref();
        let key = (
            audit.decision as u8,
            address(audit.reason),
            address(route),
            address(provider),
        );
        let id = *self.requests.borrow_mut().entry(key).or_insert_with(|| {
            hostcalls::define_counter(&names::requests(
                audit.decision,
                audit.reason,
                route,
                provider,
            ))
            .ok()
        });
        if let Some(id) = id {
            hostcalls::increment(id);
        }
        let cache = match audit.token_cached {
            Some(true) => self.cache_hits,
            Some(false) => self.cache_misses,
            None => None,
        };
        if let Some(id) = cache {
            hostcalls::increment(id);
        }
        if let Some(id) = self.decision_us {
            let micros = hostcalls::now_nanos().saturating_sub(started_nanos) / 1000;
            hostcalls::record(id, micros);
        }
    }

    pub fn fetch_ok(&self, provider: usize, keys: usize) {
        if let Some(id) = self.fetch_ok {
            hostcalls::increment(id);
        }
        self.keys_loaded(provider, keys);
    }

    pub fn keys_loaded(&self, provider: usize, keys: usize) {
        if let Some(Some(id)) = self.keys.get(provider) {
            hostcalls::record(*id, keys as u64);
        }
    }

    pub fn fetch_failed(&self) {
        if let Some(id) = self.fetch_failed {
            hostcalls::increment(id);
        }
    }

    pub fn unknown_kid_refetch(&self) {
        if let Some(id) = self.unknown_kid_refetch {
            hostcalls::increment(id);
        }
    }

    pub fn paused_for_keys(&self) {
        if let Some(id) = self.paused_for_keys {
            hostcalls::increment(id);
        }
    }
}
