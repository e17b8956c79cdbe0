//! Counters, defined once per VM at configure time and shared by every request of the VM.

use hashbrown::HashMap;

use super::hostcalls;
use crate::audit::{metrics as names, Outcome};
use crate::decision::Reason;

#[derive(Default)]
pub struct Metrics {
    outcomes: HashMap<&'static str, u32>,
    reasons: HashMap<&'static str, u32>,
}

impl Metrics {
    /// Defines every counter. A host that refuses a definition just loses that counter.
    pub fn define() -> Metrics {
        let mut metrics = Metrics::default();
        for (outcome, name) in [
            (Outcome::Allowed, names::ALLOWED),
            (Outcome::Passed, names::PASSED),
            (Outcome::Denied, names::DENIED),
            (Outcome::WouldDeny, names::WOULD_DENY),
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
        metrics
    }

    pub fn record(&self, outcome: Outcome, reason: Option<&str>) {
        if let Some(id) = self.outcomes.get(outcome.as_str()) {
            hostcalls::increment(*id);
        }
        if let Some(id) = reason.and_then(|r| self.reasons.get(r)) {
            hostcalls::increment(*id);
        }
    }
}
