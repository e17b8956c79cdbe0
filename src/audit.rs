//! The audit record of one decision, and metric names.
//!
//! A record names the caller (principal, tenant, app), the route, the rule, the model and the
//! reason. It never holds a token: only the first 16 hex digits of the token's SHA-256, and its
//! `jti`. Its JSON ([`Audit::json`]) is built once per request: the adapter hands it to the host as
//! filter state (for the access log) and, when the policy's `audit` level says so, logs it.

use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::claims::Identity;
use crate::decision::Reason;

/// What became of the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A valid token satisfied the route's rules.
    Allowed,
    /// The route is anonymous, or unmatched requests are let through.
    Passed,
    /// Refused.
    Denied,
    /// Dry-run: would have been refused, was let through.
    WouldDeny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Passed => "passed",
            Decision::Denied => "denied",
            Decision::WouldDeny => "would_deny",
        }
    }
}

/// The record of one decision. Built on every request, rendered only when logged: it shares the
/// route's name and the caller's identity rather than copying them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    pub decision: Decision,
    pub reason: Option<&'static str>,
    pub route: Option<Rc<str>>,
    pub provider: Option<Rc<str>>,
    /// The verified caller: principal, tenant, app and `jti` come from here.
    pub identity: Option<Rc<Identity>>,
    pub model: Option<String>,
    /// The rule that decided: `allow[i]` or `deny[i]` of the route.
    pub rule: Option<RuleRef>,
    pub token_sha256: Option<Rc<str>>,
    /// Whether the token's identity came from the verified-token cache (`None`: no token was
    /// looked up).
    pub token_cached: Option<bool>,
    pub request_id: Option<String>,
    /// `provider`, the identity's fields and `token_sha256` as [`Audit::json`] writes them,
    /// written once per verified token ([`CallerRecord`]); `None` writes them field by field.
    pub caller_record: Option<CallerRecord>,
}

/// The fields of a record that name a verified caller (`provider`, `principal`, `tenant`, `app`,
/// then `token_sha256`, `jti`: `model` sits between), rendered once per verification. A cache hit
/// then writes them with two copies instead of escaping six values: the record is written for
/// every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerRecord {
    text: Rc<str>,
    /// Where the fields after `model` start.
    model_at: usize,
}

impl CallerRecord {
    pub fn new(
        provider: Option<&str>,
        identity: &Identity,
        token_sha256: Option<&str>,
    ) -> CallerRecord {
        let mut text = String::with_capacity(256);
        caller_before_model(&mut text, provider, Some(identity));
        let model_at = text.len();
        caller_after_model(&mut text, token_sha256, Some(identity));
        CallerRecord {
            text: text.into(),
            model_at,
        }
    }

    fn before_model(&self) -> &str {
        self.text.get(..self.model_at).unwrap_or_default()
    }

    fn after_model(&self) -> &str {
        self.text.get(self.model_at..).unwrap_or_default()
    }
}

/// A route's rule, by list and index, as the configuration names it (`routes[n].allow[i]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleRef {
    Allow(usize),
    Deny(usize),
}

impl RuleRef {
    pub(crate) fn write(self, out: &mut String) {
        let (list, index) = match self {
            RuleRef::Allow(i) => ("allow[", i),
            RuleRef::Deny(i) => ("deny[", i),
        };
        out.push_str(list);
        push_decimal(out, index as u64);
        out.push(']');
    }
}

impl Audit {
    pub fn new(decision: Decision) -> Audit {
        Audit {
            decision,
            reason: None,
            route: None,
            provider: None,
            identity: None,
            model: None,
            rule: None,
            token_sha256: None,
            token_cached: None,
            request_id: None,
            caller_record: None,
        }
    }

    pub fn with_reason(mut self, reason: Reason) -> Audit {
        self.reason = Some(reason.as_str());
        self
    }

    pub fn principal(&self) -> Option<&str> {
        self.identity.as_ref()?.principal.as_deref()
    }

    /// One log line: `mlgate audit {json}`.
    pub fn line(&self) -> String {
        format!("mlgate audit {}", self.json())
    }

    /// The record as one JSON object (what [`Audit::line`] logs); absent fields are left out.
    /// Written by hand, once per request: serde_json's serializer cost more than the rest of a
    /// cache hit.
    pub fn json(&self) -> String {
        let identity = self.identity.as_deref();
        let mut out = String::with_capacity(384);
        out.push_str("{\"decision\":\"");
        out.push_str(self.decision.as_str());
        out.push('"');
        let text = [("reason", self.reason), ("route", self.route.as_deref())];
        for (key, value) in text {
            field(&mut out, key, value);
        }
        if let Some(rule) = self.rule {
            out.push_str(",\"rule\":\"");
            rule.write(&mut out);
            out.push('"');
        }
        match &self.caller_record {
            Some(record) => {
                out.push_str(record.before_model());
                field(&mut out, "model", self.model.as_deref());
                out.push_str(record.after_model());
            }
            None => {
                caller_before_model(&mut out, self.provider.as_deref(), identity);
                field(&mut out, "model", self.model.as_deref());
                caller_after_model(&mut out, self.token_sha256.as_deref(), identity);
            }
        }
        if let Some(cached) = self.token_cached {
            out.push_str(if cached {
                ",\"token_cached\":true"
            } else {
                ",\"token_cached\":false"
            });
        }
        field(&mut out, "request_id", self.request_id.as_deref());
        out.push('}');
        out
    }
}

/// The record's caller fields before `model`: one writer for [`CallerRecord`] and [`Audit::json`].
fn caller_before_model(out: &mut String, provider: Option<&str>, identity: Option<&Identity>) {
    field(out, "provider", provider);
    field(
        out,
        "principal",
        identity.and_then(|i| i.principal.as_deref()),
    );
    field(out, "tenant", identity.and_then(|i| i.tenant.as_deref()));
    field(out, "app", identity.and_then(|i| i.app.as_deref()));
}

/// The record's caller fields after `model`.
fn caller_after_model(out: &mut String, token_sha256: Option<&str>, identity: Option<&Identity>) {
    field(out, "token_sha256", token_sha256);
    field(out, "jti", identity.and_then(|i| i.jti.as_deref()));
}

/// `,"key":"value"` with the value escaped as a JSON string; nothing when absent.
fn field(out: &mut String, key: &str, value: Option<&str>) {
    let Some(value) = value else {
        return;
    };
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    push_string(out, value);
}

/// `value` as a JSON string, quotes included.
pub(crate) fn push_string(out: &mut String, value: &str) {
    out.push('"');
    // Eight bytes at a time: a decision's record is written for every request.
    if crate::bytes::json_string_stop(value.as_bytes(), 0) == value.len() {
        out.push_str(value);
        out.push('"');
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let byte = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX.get(byte >> 4).copied().unwrap_or(b'0')));
                out.push(char::from(HEX.get(byte & 15).copied().unwrap_or(b'0')));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub(crate) fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        if let Some(slot) = digits.get_mut(len) {
            *slot = b'0' + (n % 10) as u8;
        }
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for digit in digits.iter().take(len).rev() {
        out.push(char::from(*digit));
    }
}

/// The first 16 hex digits of SHA-256(token): enough to correlate log lines, useless to replay.
pub fn token_fingerprint(token: &str) -> String {
    fingerprint(&Sha256::digest(token.as_bytes()).into())
}

/// [`token_fingerprint`] from an already computed digest.
pub fn fingerprint(digest: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(16);
    for byte in digest.iter().take(8) {
        let _infallible = write!(out, "{byte:02x}");
    }
    out
}

/// Metric names. Envoy files wasm metrics under its `wasmcustom.` namespace; its Prometheus output
/// (`/stats/prometheus`) drops that namespace and, for these, its usual `envoy_` prefix. A tagged
/// metric's name starts with `<tag>=.=<value>;.;` pairs, Istio's convention for its own wasm
/// metrics: Istio's `extraStatTags` and four plain `stats_tags` regexes in Envoy turn each pair into
/// a label (envoy/README.md, "Metrics"), so `decision=.=denied;.;reason=.=no_rule_matched;.;
/// route=.=score;.;provider=.=entra;.;mlgate.requests_total` becomes `mlgate_requests_total{
/// decision="denied",reason="no_rule_matched",route="score",provider="entra"}`. Every value is
/// bounded: a decision, a reason, a route or provider name from the configuration, never a
/// principal or a model.
pub mod metrics {
    /// Counter per (decision, reason, route, provider); see [`requests`].
    pub const REQUESTS: &str = "mlgate.requests_total";
    /// Counters: tokens whose identity came from the verified-token cache, and tokens verified.
    pub const TOKEN_CACHE_HITS: &str = "mlgate.token_cache_hits_total";
    pub const TOKEN_CACHE_MISSES: &str = "mlgate.token_cache_misses_total";
    /// Histogram: microseconds the deciding callback took, from its start to the verdict.
    pub const DECISION_US: &str = "mlgate.decision_duration_us";
    pub const JWKS_FETCH_OK: &str = "mlgate.jwks.fetch_ok";
    pub const JWKS_FETCH_FAILED: &str = "mlgate.jwks.fetch_failed";
    pub const JWKS_UNKNOWN_KID_REFETCH: &str = "mlgate.jwks.unknown_kid_refetch";
    pub const PAUSED_FOR_KEYS: &str = "mlgate.jwks.paused_requests";
    /// Gauge: 1 when RS*/ES* signatures are checked by the host (Envoy's BoringSSL).
    pub const HOST_CRYPTO: &str = "mlgate.crypto.host";
    /// 0: not known yet; 1: bodies are judged while the headers are held; 2: headers go first.
    pub const BODY_HOLD: &str = "mlgate.body.hold_headers";
    /// A tag's value when the request has none (no reason, no route matched, no provider known).
    pub const NONE: &str = "none";

    /// `decision=.=<d>;.;reason=.=<r>;.;route=.=<route>;.;provider=.=<p>;.;mlgate.requests_total`:
    /// every tag always present, so every series has the same labels.
    pub fn requests(
        decision: super::Decision,
        reason: Option<&str>,
        route: Option<&str>,
        provider: Option<&str>,
    ) -> String {
        format!(
            "decision=.={};.;reason=.={};.;route=.={};.;provider=.={};.;{REQUESTS}",
            decision.as_str(),
            tag(reason),
            tag(route),
            tag(provider)
        )
    }

    /// Gauge: keys currently loaded for a provider (`provider=.=<p>;.;mlgate.jwks_keys`).
    pub fn keys_loaded(provider: &str) -> String {
        format!("provider=.={};.;mlgate.jwks_keys", tag(Some(provider)))
    }

    /// A tag value that cannot end its pair early or break a label: anything outside
    /// `[A-Za-z0-9_-]` in a route or provider name becomes `_`.
    pub fn tag(value: Option<&str>) -> String {
        match value {
            Some(v) if !v.is_empty() => v
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
            _ => NONE.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_16_hex_digits_and_not_the_token() {
        let fp = token_fingerprint("header.payload.signature");
        assert_eq!(fp.len(), 16);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(!"header.payload.signature".contains(&fp));
    }

    #[test]
    fn line_is_json_after_prefix() {
        let mut audit = Audit::new(Decision::Denied).with_reason(Reason::TokenExpired);
        audit.route = Some("score".into());
        let line = audit.line();
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix("mlgate audit ").unwrap()).unwrap();
        assert_eq!(json["decision"], "denied");
        assert_eq!(json["reason"], "token_expired");
        assert_eq!(json["route"], "score");
        assert!(json.get("principal").is_none());
    }

    #[test]
    fn json_escapes_quotes_backslashes_and_control_characters() {
        let mut audit = Audit::new(Decision::Denied);
        audit.request_id = Some("a\"b\\c\nd\u{1}é".into());
        let json: serde_json::Value = serde_json::from_str(&audit.json()).unwrap();
        assert_eq!(json["request_id"], "a\"b\\c\nd\u{1}é");
    }

    /// A record of a verified caller, with awkward values in every field.
    fn caller_audit() -> (Audit, Identity) {
        let identity = Identity {
            provider: 0,
            principal: Some("p\"1\\\u{1}é".into()),
            tenant: Some("tenant-1".into()),
            app: None,
            caller: crate::claims::Caller::User,
            groups: vec![],
            roles: vec![],
            scopes: vec![],
            groups_overage: false,
            jti: Some("jti\n2".into()),
            extra: vec![],
        };
        let mut audit = Audit::new(Decision::Allowed);
        audit.route = Some("score".into());
        audit.provider = Some("entra\"x".into());
        audit.identity = Some(Rc::new(identity.clone()));
        audit.token_sha256 = Some("0123456789abcdef".into());
        audit.token_cached = Some(true);
        audit.request_id = Some("req-1".into());
        (audit, identity)
    }

    #[test]
    fn a_record_with_the_caller_prerendered_is_byte_for_byte_the_one_written_field_by_field() {
        for model in [None, Some("gpt-4o"), Some("m\"odel")] {
            for fingerprint in [None, Some("0123456789abcdef")] {
                let (mut audit, identity) = caller_audit();
                audit.model = model.map(str::to_string);
                audit.token_sha256 = fingerprint.map(Rc::from);
                let by_field = audit.json();
                audit.caller_record = Some(CallerRecord::new(
                    audit.provider.as_deref(),
                    &identity,
                    fingerprint,
                ));
                assert_eq!(
                    audit.json(),
                    by_field,
                    "model {model:?}, fingerprint {fingerprint:?}"
                );
                let parsed: serde_json::Value = serde_json::from_str(&by_field).unwrap();
                assert_eq!(parsed["principal"], "p\"1\\\u{1}é");
            }
        }
    }

    #[test]
    fn rule_index_is_written_in_decimal() {
        let mut audit = Audit::new(Decision::Allowed);
        audit.rule = Some(RuleRef::Deny(120));
        let json: serde_json::Value = serde_json::from_str(&audit.json()).unwrap();
        assert_eq!(json["rule"], "deny[120]");
    }

    #[test]
    fn rule_is_named_by_list_and_index() {
        let mut audit = Audit::new(Decision::Allowed);
        audit.rule = Some(RuleRef::Allow(2));
        let json: serde_json::Value = serde_json::from_str(&audit.json()).unwrap();
        assert_eq!(json["rule"], "allow[2]");
    }

    #[test]
    fn requests_metric_has_every_tag_and_sanitised_values() {
        let name = metrics::requests(
            Decision::Denied,
            Some("no_rule_matched"),
            Some("v1.chat"),
            None,
        );
        assert_eq!(
            name,
            "decision=.=denied;.;reason=.=no_rule_matched;.;route=.=v1_chat;.;provider=.=none;.;mlgate.requests_total"
        );
    }
}
