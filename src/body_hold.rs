//! Whether the host hands a filter the request body while the filter holds the headers.
//!
//! Envoy does with `allow_on_headers_stop_iteration: true` on the wasm `PluginConfig` (Envoy ≥ 1.35):
//! a `json_body` route's request is then held whole until its model is read, and a refused model
//! never reaches the model server — not even its headers. Without the flag Envoy delivers no body
//! until the headers continue, so a request held at its headers would wait forever; and nothing
//! tells a filter which Envoy it has. So the filter finds out: the first body that arrives while
//! headers are held proves the host honours the flag, for good; a held request whose body has not
//! arrived after [`WAIT_SECONDS`] is let go the other way (headers first, body held and judged), and
//! after [`STRIKES`] such requests in a row, with no body ever seen while held, the VM stops holding
//! headers for bodies.

/// How long a request is held at its headers for a body that has not come, while it is not yet
/// known whether the host delivers bodies then. Longer than the second curl waits for
/// `100 Continue` before it sends a body anyway.
pub const WAIT_SECONDS: i64 = 2;

/// Held requests in a row whose body never came before the VM concludes the host does not hand
/// bodies over while headers are held (one could be a slow client).
pub const STRIKES: u8 = 3;

/// What this VM knows about its host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyHold {
    /// Not known yet.
    #[default]
    Unknown,
    /// Not known yet; `timeouts` held requests in a row got no body in time.
    Probing { timeouts: u8 },
    /// A body arrived while the headers were held: bodies are judged before anything goes upstream.
    Honoured,
    /// The host never delivered a body while headers were held: headers go first, the body is held.
    NotHonoured,
}

impl BodyHold {
    /// Whether a request that waits for its body should be held at its headers.
    pub fn holds_headers(self) -> bool {
        self != BodyHold::NotHonoured
    }

    /// A body arrived while the headers were held. `true` when this is news (log it once).
    pub fn body_arrived(&mut self) -> bool {
        let news = *self != BodyHold::Honoured;
        *self = BodyHold::Honoured;
        news
    }

    /// Whether a request held since `since` has waited too long for a body that has not come.
    /// Never, once the host is known to deliver bodies: then the body is the client's to send.
    pub fn overdue(self, since: i64, now: i64) -> bool {
        self != BodyHold::Honoured && now.saturating_sub(since) >= WAIT_SECONDS
    }

    /// A held request got no body in time and was let go headers first. `true` when the VM now
    /// concludes the host does not deliver bodies while headers are held (log it once).
    pub fn timed_out(&mut self) -> bool {
        match *self {
            BodyHold::Unknown | BodyHold::Probing { .. } => {
                let timeouts = match *self {
                    BodyHold::Probing { timeouts } => timeouts.saturating_add(1),
                    _ => 1,
                };
                *self = if timeouts >= STRIKES {
                    BodyHold::NotHonoured
                } else {
                    BodyHold::Probing { timeouts }
                };
                *self == BodyHold::NotHonoured
            }
            BodyHold::Honoured | BodyHold::NotHonoured => false,
        }
    }

    /// The gauge value: 0 not known yet, 1 bodies judged before the headers go, 2 headers first.
    pub fn gauge(self) -> u64 {
        match self {
            BodyHold::Unknown | BodyHold::Probing { .. } => 0,
            BodyHold::Honoured => 1,
            BodyHold::NotHonoured => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_held_until_the_host_is_known_not_to_deliver_bodies() {
        let mut hold = BodyHold::default();
        assert!(hold.holds_headers());
        assert!(!hold.timed_out());
        assert!(!hold.timed_out());
        assert!(hold.holds_headers());
        assert!(hold.timed_out(), "the third strike decides");
        assert!(!hold.holds_headers());
        assert!(!hold.timed_out(), "said once");
    }

    #[test]
    fn one_body_while_held_proves_the_host_for_good() {
        let mut hold = BodyHold::Probing { timeouts: 2 };
        assert!(hold.body_arrived());
        assert!(!hold.body_arrived(), "said once");
        assert!(!hold.timed_out());
        assert_eq!(hold, BodyHold::Honoured);
        assert!(hold.holds_headers());
    }

    #[test]
    fn a_held_request_is_overdue_only_while_the_host_is_not_known() {
        assert!(!BodyHold::Unknown.overdue(100, 101));
        assert!(BodyHold::Unknown.overdue(100, 102));
        assert!(BodyHold::Probing { timeouts: 1 }.overdue(100, 102));
        assert!(!BodyHold::Honoured.overdue(100, 1000));
    }

    #[test]
    fn the_gauge_says_which_path_is_active() {
        assert_eq!(BodyHold::Unknown.gauge(), 0);
        assert_eq!(BodyHold::Honoured.gauge(), 1);
        assert_eq!(BodyHold::NotHonoured.gauge(), 2);
    }
}
