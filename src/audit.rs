//! The audit record of one decision, and metric names.
//!
//! A record names the caller (principal, tenant, app), the route, the model and the reason. It
//! never holds a token: only the first 16 hex digits of the token's SHA-256, and its `jti`.

use std::rc::Rc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::claims::Identity;
use crate::decision::Reason;

/// What became of the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
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
    pub token_sha256: Option<String>,
    pub request_id: Option<String>,
}

/// The logged form of an [`Audit`].
#[derive(Serialize)]
struct Line<'a> {
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    principal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_sha256: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
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
            token_sha256: None,
            request_id: None,
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
        let identity = self.identity.as_deref();
        let line = Line {
            decision: self.decision,
            reason: self.reason,
            route: self.route.as_deref(),
            provider: self.provider.as_deref(),
            principal: identity.and_then(|i| i.principal.as_deref()),
            tenant: identity.and_then(|i| i.tenant.as_deref()),
            app: identity.and_then(|i| i.app.as_deref()),
            model: self.model.as_deref(),
            token_sha256: self.token_sha256.as_deref(),
            jti: identity.and_then(|i| i.jti.as_deref()),
            request_id: self.request_id.as_deref(),
        };
        match serde_json::to_string(&line) {
            Ok(json) => format!("mlgate audit {json}"),
            Err(_) => format!(
                "mlgate audit {{\"decision\":\"{}\"}}",
                self.decision.as_str()
            ),
        }
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

/// Counter names, as Envoy's admin `/stats` shows them: Envoy files wasm metrics under an internal
/// `wasmcustom.` scope and leaves that scope out of its stats output.
pub mod metrics {
    pub const ALLOWED: &str = "mlgate.requests.allowed";
    pub const PASSED: &str = "mlgate.requests.passed";
    pub const DENIED: &str = "mlgate.requests.denied";
    pub const WOULD_DENY: &str = "mlgate.requests.would_deny";
    pub const JWKS_FETCH_OK: &str = "mlgate.jwks.fetch_ok";
    pub const JWKS_FETCH_FAILED: &str = "mlgate.jwks.fetch_failed";
    pub const JWKS_UNKNOWN_KID_REFETCH: &str = "mlgate.jwks.unknown_kid_refetch";
    pub const PAUSED_FOR_KEYS: &str = "mlgate.jwks.paused_requests";
    /// Gauge: 1 when RS*/ES* signatures are checked by the host (Envoy's BoringSSL).
    pub const HOST_CRYPTO: &str = "mlgate.crypto.host";
    /// 0: not known yet; 1: bodies are judged while the headers are held; 2: headers go first.
    pub const BODY_HOLD: &str = "mlgate.body.hold_headers";

    /// Gauge: keys currently loaded for a provider.
    pub fn keys_loaded(provider: &str) -> String {
        format!("mlgate.jwks.keys.{provider}")
    }

    /// `mlgate.reason.<reason>`.
    pub fn reason(reason: crate::decision::Reason) -> String {
        format!("mlgate.reason.{}", reason.as_str())
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
}
