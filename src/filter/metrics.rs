//! Counters and gauges, defined once per VM at configure time and shared by every request.

use hashbrown::HashMap;

use super::hostcalls;
use crate::audit::{metrics as names, Decision};
use crate::decision::Reason;

#[derive(Default)]
pub struct Metrics {
    outcomes: HashMap<&'static str, u32>,
    reasons: HashMap<&'static str, u32>,
    fetch_ok: Option<u32>,
    fetch_failed: Option<u32>,
    unknown_kid_refetch: Option<u32>,
    paused_for_keys: Option<u32>,
    body_hold: Option<u32>,
    /// Keys loaded, per provider index.
    keys: Vec<Option<u32>>,
}

impl Metrics {
    /// Defines every metric. A host that refuses a definition just loses that metric.
    pub fn define(provider_names: &[String], host_crypto: bool) -> Metrics {
        let mut metrics = Metrics::default();
        for (outcome, name) in [
            (Decision::Allowed, names::ALLOWED),
            (Decision::Passed, names::PASSED),
            (Decision::Denied, names::DENIED),
            (Decision::WouldDeny, names::WOULD_DENY),
        ] {
            if let Ok(id) = hostcalls::define_counter(name) {
                metrics.outcomes.insert(outcome.as_str(), id);
            }
        }
        for reason in Reason::ALL {
            if let Ok(id) = hostcalls::define_counter(&names::reason(reason)) {
                metrics.reasons.insert(reason.as_str(), id);
            }
        }
        metrics.fetch_ok = hostcalls::define_counter(names::JWKS_FETCH_OK).ok();
        metrics.fetch_failed = hostcalls::define_counter(names::JWKS_FETCH_FAILED).ok();
        metrics.unknown_kid_refetch =
            hostcalls::define_counter(names::JWKS_UNKNOWN_KID_REFETCH).ok();
        metrics.paused_for_keys = hostcalls::define_counter(names::PAUSED_FOR_KEYS).ok();
        metrics.body_hold = hostcalls::define_gauge(names::BODY_HOLD).ok();
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

    pub fn record(&self, outcome: Decision, reason: Option<&str>) {
        if let Some(id) = self.outcomes.get(outcome.as_str()) {
            hostcalls::increment(*id);
        }
        if let Some(id) = reason.and_then(|r| self.reasons.get(r)) {
            hostcalls::increment(*id);
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
