//! Remote key sets: when to fetch, what to fetch (OIDC discovery, then the JWKS), what to keep
//! when a fetch fails, and how often an unknown `kid` may force a refetch.
//!
//! Pure state machine, one per remote provider per VM: the adapter asks it what to do and reports
//! what happened (`start`, `on_response`, `adopt`). It never performs I/O. The rules follow
//! Entra ID's guidance: refresh on a period (default 1 h); on an unknown `kid` refetch at most once
//! per minimum interval (default 5 min) so forged `kid`s cannot make the proxy hammer the IdP;
//! keep the last good set when a refresh fails, for a bounded time (default 24 h); back off
//! exponentially between failed attempts.

use std::rc::Rc;

use serde_json::Value;

use crate::jwks::{self, KeySet, Strictness};

/// Where a remote provider's keys come from, compiled from its `jwks` configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteJwks {
    /// Envoy cluster the requests go through.
    pub cluster: String,
    pub target: FetchTarget,
    pub timeout_ms: u32,
    pub refresh_seconds: i64,
    pub min_refresh_interval_seconds: i64,
    pub max_stale_seconds: i64,
    /// For discovery: the issuer the document must name (exact issuers only).
    pub expected_issuer: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchTarget {
    Jwks(Url),
    Discovery(Url),
}

/// An absolute http(s) URL split the way a proxy-wasm callout needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("{text:?} is not an absolute URL"))?;
        if scheme != "https" && scheme != "http" {
            return Err(format!("{text:?}: only http and https URLs can be fetched"));
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, "/"),
        };
        let valid_authority = !authority.is_empty()
            && authority
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        if !valid_authority {
            return Err(format!("{text:?}: bad host"));
        }
        if path.contains('#') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{text:?}: bad path"));
        }
        Ok(Url {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// One HTTP GET the adapter should dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub cluster: String,
    pub url: Url,
    pub timeout_ms: u32,
}

/// Why the current key set is being fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Discovery,
    Jwks,
}

/// What came of a response.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Discovery answered: fetch the JWKS next.
    Next(FetchRequest),
    /// A new key set is in place.
    Loaded,
    /// The attempt failed; the last good set (if any) stays.
    Failed(String),
}

/// Fetch state of one remote provider.
#[derive(Debug)]
pub struct RemoteKeys {
    pub config: RemoteJwks,
    keys: Option<Rc<KeySet>>,
    /// When the current set was fetched (by this VM or another).
    fetched_at: Option<i64>,
    /// From discovery; kept once learned.
    jwks_url: Option<Url>,
    in_flight: Option<(Stage, i64)>,
    failures: u32,
    next_attempt_at: i64,
    last_forced_at: Option<i64>,
    /// Another VM holds the fetch lock: its result will arrive through shared data.
    peer_fetching: bool,
    /// An unknown `kid` asked for a refetch that has not started yet (the root dispatches it).
    forced_pending: bool,
}

/// Longest pause between attempts after failures.
pub const MAX_BACKOFF_SECONDS: i64 = 300;

impl RemoteKeys {
    pub fn new(config: RemoteJwks) -> RemoteKeys {
        let jwks_url = match &config.target {
            FetchTarget::Jwks(url) => Some(url.clone()),
            FetchTarget::Discovery(_) => None,
        };
        RemoteKeys {
            config,
            keys: None,
            fetched_at: None,
            jwks_url,
            in_flight: None,
            failures: 0,
            next_attempt_at: 0,
            last_forced_at: None,
            peer_fetching: false,
            forced_pending: false,
        }
    }

    /// The usable key set: `None` before the first load, or once the last good set is older than
    /// `max_stale_seconds` without a successful refresh.
    pub fn keys(&self, now: i64) -> Option<&Rc<KeySet>> {
        let fetched_at = self.fetched_at?;
        let stale_after = self.config.refresh_seconds + self.config.max_stale_seconds;
        if now.saturating_sub(fetched_at) > stale_after {
            return None;
        }
        self.keys.as_ref()
    }

    pub fn ever_loaded(&self) -> bool {
        self.keys.is_some()
    }

    pub fn fetched_at(&self) -> Option<i64> {
        self.fetched_at
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether an unknown `kid` asked for a refetch that has not started yet.
    pub fn refetch_pending(&self) -> bool {
        self.forced_pending
    }

    /// Whether a fetch should start now.
    pub fn due(&self, now: i64) -> bool {
        self.in_flight.is_none() && now >= self.next_attempt_at
    }

    /// When the next attempt is planned.
    pub fn next_attempt_at(&self) -> i64 {
        self.next_attempt_at
    }

    /// A token named a `kid` the set does not have: refetch now, unless that was done less than
    /// the minimum interval ago. Returns whether a refetch is (or already was) under way for it.
    pub fn want_unknown_kid(&mut self, now: i64) -> bool {
        if self.in_flight.is_some() || self.peer_fetching || self.forced_pending {
            return true;
        }
        let recently = self
            .last_forced_at
            .is_some_and(|at| now.saturating_sub(at) < self.config.min_refresh_interval_seconds);
        let fetched_recently = self
            .fetched_at
            .is_some_and(|at| now.saturating_sub(at) < self.config.min_refresh_interval_seconds);
        if recently || fetched_recently {
            return false;
        }
        self.last_forced_at = Some(now);
        self.next_attempt_at = now;
        self.forced_pending = true;
        true
    }

    /// A request needs keys that were never loaded: is there any hope soon? (a fetch under way,
    /// or one allowed to start now).
    pub fn cold_start_possible(&self, now: i64) -> bool {
        self.in_flight.is_some() || self.peer_fetching || now >= self.next_attempt_at
    }

    /// Starts the next fetch (the caller dispatches it and reports back with `on_response`).
    pub fn start(&mut self, now: i64) -> FetchRequest {
        let (stage, url) = match (&self.jwks_url, &self.config.target) {
            (Some(url), _) => (Stage::Jwks, url.clone()),
            (None, FetchTarget::Discovery(url)) => (Stage::Discovery, url.clone()),
            (None, FetchTarget::Jwks(url)) => (Stage::Jwks, url.clone()),
        };
        self.in_flight = Some((stage, now));
        self.peer_fetching = false;
        self.forced_pending = false;
        FetchRequest {
            cluster: self.config.cluster.clone(),
            url,
            timeout_ms: self.config.timeout_ms,
        }
    }

    /// The dispatch itself failed (unknown cluster, …): count it as a failed attempt.
    pub fn dispatch_failed(&mut self, now: i64, why: &str) -> Progress {
        self.fail(now, format!("could not dispatch: {why}"))
    }

    /// Reports the response to the fetch started last: `status` is `None` when the call failed
    /// or timed out.
    pub fn on_response(&mut self, now: i64, status: Option<u16>, body: &[u8]) -> Progress {
        let Some((stage, _)) = self.in_flight.take() else {
            return Progress::Failed("unexpected response".into());
        };
        match status {
            Some(200) => {}
            Some(code) => return self.fail(now, format!("HTTP {code}")),
            None => return self.fail(now, "no response (timeout or connection failure)".into()),
        }
        let Ok(document) = serde_json::from_slice::<Value>(body) else {
            return self.fail(now, "the body is not JSON".into());
        };
        match stage {
            Stage::Discovery => match self.read_discovery(&document) {
                Ok(url) => {
                    self.jwks_url = Some(url.clone());
                    self.in_flight = Some((Stage::Jwks, now));
                    Progress::Next(FetchRequest {
                        cluster: self.config.cluster.clone(),
                        url,
                        timeout_ms: self.config.timeout_ms,
                    })
                }
                Err(message) => self.fail(now, message),
            },
            Stage::Jwks => match jwks::parse_jwks(&document, Strictness::Lenient) {
                Ok(set) => {
                    self.install(set, now);
                    Progress::Loaded
                }
                Err(error) => self.fail(now, format!("unusable JWKS: {error}")),
            },
        }
    }

    /// Takes a key set another VM fetched (shared data).
    pub fn adopt(&mut self, set: KeySet, fetched_at: i64, now: i64) {
        if self.fetched_at.is_some_and(|mine| mine >= fetched_at) {
            return;
        }
        self.install(set, fetched_at);
        // The other VM fetched it: plan our next refresh from its fetch time.
        self.next_attempt_at = fetched_at + self.config.refresh_seconds;
        if self.next_attempt_at < now {
            self.next_attempt_at = now;
        }
    }

    /// Another VM holds the fetch lock: try again after `seconds` (it will share its result).
    pub fn defer(&mut self, now: i64, seconds: i64) {
        self.peer_fetching = true;
        self.next_attempt_at = self.next_attempt_at.max(now + seconds);
    }

    fn install(&mut self, set: KeySet, fetched_at: i64) {
        self.keys = Some(Rc::new(set));
        self.fetched_at = Some(fetched_at);
        self.failures = 0;
        self.peer_fetching = false;
        self.forced_pending = false;
        self.next_attempt_at = fetched_at + self.config.refresh_seconds;
    }

    fn fail(&mut self, now: i64, message: String) -> Progress {
        self.in_flight = None;
        self.forced_pending = false;
        self.failures = self.failures.saturating_add(1);
        let exponent = self.failures.saturating_sub(1).min(16);
        let backoff = (1i64 << exponent).min(MAX_BACKOFF_SECONDS);
        self.next_attempt_at = now + backoff;
        Progress::Failed(message)
    }

    fn read_discovery(&self, document: &Value) -> Result<Url, String> {
        if let Some(expected) = &self.config.expected_issuer {
            let issuer = document.get("issuer").and_then(Value::as_str);
            if issuer != Some(expected.as_str()) {
                return Err(format!(
                    "discovery names issuer {issuer:?}, expected {expected:?} (OpenID Connect Discovery §4.3)"
                ));
            }
        }
        let uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("discovery document has no jwks_uri")?;
        let url = Url::parse(uri)?;
        if url.scheme != "https" && self.config_scheme() == "https" {
            return Err("jwks_uri downgrades https to http".into());
        }
        Ok(url)
    }

    fn config_scheme(&self) -> &str {
        match &self.config.target {
            FetchTarget::Jwks(url) | FetchTarget::Discovery(url) => &url.scheme,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(target: FetchTarget) -> RemoteJwks {
        RemoteJwks {
            cluster: "idp".into(),
            target,
            timeout_ms: 5000,
            refresh_seconds: 3600,
            min_refresh_interval_seconds: 300,
            max_stale_seconds: 86400,
            expected_issuer: Some("https://idp.example".into()),
        }
    }

    fn jwks_remote() -> RemoteKeys {
        RemoteKeys::new(config(FetchTarget::Jwks(
            Url::parse("https://idp.example/keys").unwrap(),
        )))
    }

    fn jwks_body() -> Vec<u8> {
        include_bytes!("../test-harness/keys/test-jwks.json").to_vec()
    }

    #[test]
    fn url_is_split_for_a_callout() {
        let url =
            Url::parse("https://login.microsoftonline.com/t/discovery/v2.0/keys?x=1").unwrap();
        assert_eq!(url.authority, "login.microsoftonline.com");
        assert_eq!(url.path, "/t/discovery/v2.0/keys?x=1");
        assert_eq!(Url::parse("http://127.0.0.1:9400").unwrap().path, "/");
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("/relative").is_err());
    }

    #[test]
    fn cold_start_is_due_immediately_and_loads() {
        let mut remote = jwks_remote();
        assert!(remote.due(1000));
        let request = remote.start(1000);
        assert_eq!(request.url.path, "/keys");
        assert!(!remote.due(1000));
        assert_eq!(
            remote.on_response(1001, Some(200), &jwks_body()),
            Progress::Loaded
        );
        assert_eq!(remote.keys(1001).unwrap().len(), 5);
        assert_eq!(remote.next_attempt_at(), 1001 + 3600);
    }

    #[test]
    fn refresh_failure_keeps_last_good_set_and_backs_off() {
        let mut remote = jwks_remote();
        remote.start(0);
        remote.on_response(0, Some(200), &jwks_body());
        remote.start(3600);
        assert!(matches!(
            remote.on_response(3600, Some(500), b""),
            Progress::Failed(_)
        ));
        assert!(remote.keys(3600).is_some());
        assert_eq!(remote.next_attempt_at(), 3601);
        remote.start(3601);
        remote.on_response(3601, None, b"");
        assert_eq!(remote.next_attempt_at(), 3603);
        remote.start(3603);
        remote.on_response(3603, Some(200), b"<html>");
        assert_eq!(remote.next_attempt_at(), 3607);
        remote.start(3607);
        remote.on_response(3607, Some(200), br#"{"keys":[]}"#);
        assert_eq!(remote.next_attempt_at(), 3615);
        assert_eq!(remote.failures(), 4);
    }

    #[test]
    fn backoff_is_capped() {
        let mut remote = jwks_remote();
        for _ in 0..30 {
            let now = remote.next_attempt_at();
            remote.start(now);
            remote.on_response(now, Some(503), b"");
        }
        let last = remote.next_attempt_at();
        remote.start(last);
        remote.on_response(last, Some(503), b"");
        assert_eq!(remote.next_attempt_at() - last, MAX_BACKOFF_SECONDS);
    }

    #[test]
    fn a_peer_fetching_lets_requests_wait() {
        let mut remote = jwks_remote();
        remote.defer(0, 1);
        assert!(!remote.due(0));
        assert!(remote.cold_start_possible(0), "the peer's set will arrive");
        assert!(remote.want_unknown_kid(0));
        let body: Value = serde_json::from_slice(&jwks_body()).unwrap();
        remote.adopt(jwks::parse_jwks(&body, Strictness::Lenient).unwrap(), 0, 1);
        assert!(!remote.cold_start_possible(1));
    }

    #[test]
    fn stale_set_expires_after_bound() {
        let mut remote = jwks_remote();
        remote.start(0);
        remote.on_response(0, Some(200), &jwks_body());
        assert!(remote.keys(3600 + 86400).is_some());
        assert!(remote.keys(3600 + 86400 + 1).is_none());
        assert!(remote.ever_loaded());
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let mut remote = jwks_remote();
        remote.start(0);
        remote.on_response(0, Some(200), &jwks_body());
        // Just fetched: a forged kid cannot force another fetch.
        assert!(!remote.want_unknown_kid(10));
        assert!(remote.want_unknown_kid(400));
        assert!(
            remote.want_unknown_kid(400),
            "joins the refetch not yet started"
        );
        assert!(remote.due(400));
        remote.start(400);
        assert!(remote.want_unknown_kid(401), "joins the fetch under way");
        remote.on_response(401, Some(200), &jwks_body());
        assert!(!remote.want_unknown_kid(500));
        assert!(!remote.want_unknown_kid(650));
        assert!(remote.want_unknown_kid(701));
    }

    #[test]
    fn discovery_then_jwks() {
        let mut remote = RemoteKeys::new(config(FetchTarget::Discovery(
            Url::parse("https://idp.example/.well-known/openid-configuration").unwrap(),
        )));
        let first = remote.start(0);
        assert_eq!(first.url.path, "/.well-known/openid-configuration");
        let doc = br#"{"issuer":"https://idp.example","jwks_uri":"https://idp.example/jwks"}"#;
        let Progress::Next(next) = remote.on_response(0, Some(200), doc) else {
            panic!()
        };
        assert_eq!(next.url.path, "/jwks");
        assert_eq!(
            remote.on_response(1, Some(200), &jwks_body()),
            Progress::Loaded
        );
        // The jwks_uri is remembered: the next refresh goes straight to it.
        assert_eq!(remote.start(3601).url.path, "/jwks");
    }

    #[test]
    fn discovery_for_another_issuer_is_refused() {
        let mut remote = RemoteKeys::new(config(FetchTarget::Discovery(
            Url::parse("https://idp.example/.well-known/openid-configuration").unwrap(),
        )));
        remote.start(0);
        let doc = br#"{"issuer":"https://evil.example","jwks_uri":"https://evil.example/jwks"}"#;
        assert!(
            matches!(remote.on_response(0, Some(200), doc), Progress::Failed(m) if m.contains("issuer"))
        );
    }

    #[test]
    fn adopting_a_newer_shared_set_plans_from_its_fetch_time() {
        let mut remote = jwks_remote();
        let set = jwks::parse_jwks(
            &serde_json::from_slice(&jwks_body()).unwrap(),
            Strictness::Lenient,
        )
        .unwrap();
        remote.adopt(set.clone(), 100, 150);
        assert_eq!(remote.fetched_at(), Some(100));
        assert_eq!(remote.next_attempt_at(), 3700);
        remote.adopt(set, 50, 150);
        assert_eq!(remote.fetched_at(), Some(100), "an older set is ignored");
    }
}
