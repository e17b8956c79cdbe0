//! Decisions and the one place where a reason becomes a wire response.
//!
//! Every refusal carries a [`Reason`]: a stable snake_case code used alike in the response body,
//! `WWW-Authenticate`, the audit log and metric names. This module never sees a token.

use std::borrow::Cow;
use std::fmt;

/// Why a request was refused (or, in dry-run mode, would have been).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingToken,
    MultipleTokens,
    TokenTooLarge,
    MalformedToken,
    UnsupportedAlgorithm,
    UnsupportedCriticalHeader,
    UnknownIssuer,
    TokenSourceNotAllowed,
    UnknownKey,
    BadSignature,
    MissingExpiry,
    TokenExpired,
    TokenNotYetValid,
    TokenIssuedInFuture,
    TokenLifetimeTooLong,
    AudienceMismatch,
    TenantNotAllowed,
    GroupsOverage,
    NoMatchingRoute,
    DeniedByRule,
    NoRuleMatched,
    ModelNotAllowed,
    KeysUnavailable,
    BodyTooLarge,
    InvalidPath,
    IdTokenNotAccepted,
    ModelMissing,
    ModelUnreadable,
    ModelAmbiguous,
    UnsupportedMediaType,
    /// A model listing (`list_models`) the model server sent that mlgate cannot filter: not the
    /// format's JSON, ambiguous, or content-encoded. Never passed on unfiltered.
    ListingUnreadable,
    /// A model listing larger than its route's `list_models.max_bytes`.
    ListingTooLarge,
    MaxTokensInvalid,
}

/// How a reason is answered on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// 401 without an error code (RFC 6750 §3.1: no credentials were offered).
    NoCredentials,
    /// 401 `invalid_request`.
    InvalidRequest,
    /// 401 `invalid_token`.
    InvalidToken,
    /// 403 `insufficient_scope`.
    Insufficient,
    /// 403 without `WWW-Authenticate`: not about the token at all.
    Forbidden,
    /// 413.
    TooLarge,
    /// 400: the request itself cannot be judged safely.
    BadRequest,
    /// 415: a body mlgate cannot read the way the model server would (content type or encoding).
    UnsupportedMedia,
    /// 503 with `Retry-After`.
    Unavailable,
    /// 502: the model server's answer cannot be passed on safely.
    BadGateway,
}

impl Reason {
    /// Every reason, for metric definition and tests.
    pub const ALL: [Reason; 33] = [
        Reason::MissingToken,
        Reason::MultipleTokens,
        Reason::TokenTooLarge,
        Reason::MalformedToken,
        Reason::UnsupportedAlgorithm,
        Reason::UnsupportedCriticalHeader,
        Reason::UnknownIssuer,
        Reason::TokenSourceNotAllowed,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::MissingExpiry,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::TokenIssuedInFuture,
        Reason::TokenLifetimeTooLong,
        Reason::AudienceMismatch,
        Reason::TenantNotAllowed,
        Reason::GroupsOverage,
        Reason::NoMatchingRoute,
        Reason::DeniedByRule,
        Reason::NoRuleMatched,
        Reason::ModelNotAllowed,
        Reason::KeysUnavailable,
        Reason::BodyTooLarge,
        Reason::InvalidPath,
        Reason::IdTokenNotAccepted,
        Reason::ModelMissing,
        Reason::ModelUnreadable,
        Reason::ModelAmbiguous,
        Reason::UnsupportedMediaType,
        Reason::ListingUnreadable,
        Reason::ListingTooLarge,
        Reason::MaxTokensInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::MultipleTokens => "multiple_tokens",
            Reason::TokenTooLarge => "token_too_large",
            Reason::MalformedToken => "malformed_token",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::UnsupportedCriticalHeader => "unsupported_critical_header",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::TokenSourceNotAllowed => "token_source_not_allowed",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::MissingExpiry => "missing_expiry",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenIssuedInFuture => "token_issued_in_future",
            Reason::TokenLifetimeTooLong => "token_lifetime_too_long",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::TenantNotAllowed => "tenant_not_allowed",
            Reason::GroupsOverage => "groups_overage",
            Reason::NoMatchingRoute => "no_matching_route",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::NoRuleMatched => "no_rule_matched",
            Reason::ModelNotAllowed => "model_not_allowed",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::BodyTooLarge => "body_too_large",
            Reason::InvalidPath => "invalid_path",
            Reason::IdTokenNotAccepted => "id_token_not_accepted",
            Reason::ModelMissing => "model_missing",
            Reason::ModelUnreadable => "model_unreadable",
            Reason::ModelAmbiguous => "model_ambiguous",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::ListingUnreadable => "listing_unreadable",
            Reason::ListingTooLarge => "listing_too_large",
            Reason::MaxTokensInvalid => "max_tokens_invalid",
        }
    }

    fn kind(self) -> Kind {
        match self {
            Reason::MissingToken => Kind::NoCredentials,
            Reason::MultipleTokens => Kind::InvalidRequest,
            Reason::GroupsOverage
            | Reason::DeniedByRule
            | Reason::NoRuleMatched
            | Reason::ModelNotAllowed => Kind::Insufficient,
            Reason::NoMatchingRoute => Kind::Forbidden,
            Reason::BodyTooLarge => Kind::TooLarge,
            Reason::InvalidPath
            | Reason::ModelMissing
            | Reason::ModelUnreadable
            | Reason::ModelAmbiguous
            | Reason::MaxTokensInvalid => Kind::BadRequest,
            Reason::UnsupportedMediaType => Kind::UnsupportedMedia,
            Reason::KeysUnavailable => Kind::Unavailable,
            Reason::ListingUnreadable | Reason::ListingTooLarge => Kind::BadGateway,
            _ => Kind::InvalidToken,
        }
    }

    /// The HTTP status this reason is answered with.
    pub fn status(self) -> u16 {
        match self.kind() {
            Kind::NoCredentials | Kind::InvalidRequest | Kind::InvalidToken => 401,
            Kind::Insufficient | Kind::Forbidden => 403,
            Kind::TooLarge => 413,
            Kind::BadRequest => 400,
            Kind::UnsupportedMedia => 415,
            Kind::Unavailable => 503,
            Kind::BadGateway => 502,
        }
    }

    /// True for reasons that say the token itself is not acceptable (as opposed to the policy).
    pub fn is_token_problem(self) -> bool {
        matches!(
            self.kind(),
            Kind::NoCredentials | Kind::InvalidRequest | Kind::InvalidToken
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A response the filter sends itself instead of forwarding the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: String,
}

/// Seconds a client is asked to wait when keys are not available yet.
pub const RETRY_AFTER_SECONDS: u32 = 5;

/// Builds the response for a refusal: status, RFC 6750 `WWW-Authenticate`, JSON body.
pub fn local_reply(
    reason: Reason,
    realm: &str,
    route: Option<&str>,
    request_id: Option<&str>,
) -> LocalReply {
    let mut headers = Vec::with_capacity(3);
    let (error, challenge) = match reason.kind() {
        Kind::NoCredentials => ("unauthorized", Some(challenge(realm, None))),
        Kind::InvalidRequest => (
            "unauthorized",
            Some(challenge(realm, Some(("invalid_request", reason)))),
        ),
        Kind::InvalidToken => (
            "unauthorized",
            Some(challenge(realm, Some(("invalid_token", reason)))),
        ),
        Kind::Insufficient => (
            "forbidden",
            Some(challenge(realm, Some(("insufficient_scope", reason)))),
        ),
        Kind::Forbidden => ("forbidden", None),
        Kind::TooLarge => ("payload_too_large", None),
        Kind::BadRequest => ("bad_request", None),
        Kind::UnsupportedMedia => ("unsupported_media_type", None),
        Kind::Unavailable => ("unavailable", None),
        Kind::BadGateway => ("bad_gateway", None),
    };
    if let Some(value) = challenge {
        headers.push(("www-authenticate", Cow::Owned(value)));
    }
    if reason.kind() == Kind::Unavailable {
        headers.push(("retry-after", Cow::Owned(RETRY_AFTER_SECONDS.to_string())));
    }
    headers.push(("content-type", Cow::Borrowed("application/json")));
    headers.push(("cache-control", Cow::Borrowed("no-store")));
    LocalReply {
        status: reason.status(),
        headers,
        body: reply_body(error, reason, route, request_id),
    }
}

/// `{"error":…,"reason":…,"request_id":…,"route":…}`, written out: every refused request builds
/// one, and serde_json's serializer cost more than the rest of the refusal inside the VM. `error`
/// and the reason are snake_case constants; the request id and route name are copied as they are
/// when nothing in them needs escaping, and escaped by serde_json otherwise.
fn reply_body(
    error: &str,
    reason: Reason,
    route: Option<&str>,
    request_id: Option<&str>,
) -> String {
    let mut body = String::with_capacity(96);
    body.push_str("{\"error\":\"");
    body.push_str(error);
    body.push_str("\",\"reason\":\"");
    body.push_str(reason.as_str());
    body.push_str("\",\"request_id\":");
    push_json_string(&mut body, request_id);
    body.push_str(",\"route\":");
    push_json_string(&mut body, route);
    body.push('}');
    body
}

fn push_json_string(out: &mut String, value: Option<&str>) {
    let Some(value) = value else {
        out.push_str("null");
        return;
    };
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(value);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
    }
}

/// `Bearer realm="…"[, error="…", error_description="…"]`, written out rather than through
/// `format!`: every refused request builds one.
fn challenge(realm: &str, error: Option<(&str, Reason)>) -> String {
    let mut value = String::with_capacity(96);
    value.push_str("Bearer realm=\"");
    value.push_str(realm);
    value.push('"');
    if let Some((error, reason)) = error {
        value.push_str(", error=\"");
        value.push_str(error);
        value.push_str("\", error_description=\"");
        value.push_str(reason.as_str());
        value.push('"');
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            let code = reason.as_str();
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(seen.insert(code), "duplicate {code}");
        }
    }

    #[test]
    fn missing_token_challenge_has_no_error_code() {
        let reply = local_reply(Reason::MissingToken, "mlgate", Some("score"), None);
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.headers[0],
            ("www-authenticate", "Bearer realm=\"mlgate\"".into())
        );
    }

    #[test]
    fn invalid_token_challenge_names_the_reason() {
        let reply = local_reply(Reason::TokenExpired, "mlgate", None, None);
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.headers[0].1,
            "Bearer realm=\"mlgate\", error=\"invalid_token\", error_description=\"token_expired\""
        );
    }

    #[test]
    fn rule_denial_is_403_insufficient_scope() {
        let reply = local_reply(Reason::DeniedByRule, "mlgate", Some("infer"), Some("r-1"));
        assert_eq!(reply.status, 403);
        assert!(reply.headers[0].1.contains("error=\"insufficient_scope\""));
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["reason"], "denied_by_rule");
        assert_eq!(body["route"], "infer");
        assert_eq!(body["request_id"], "r-1");
    }

    #[test]
    fn no_matching_route_has_no_challenge() {
        let reply = local_reply(Reason::NoMatchingRoute, "mlgate", None, None);
        assert_eq!(reply.status, 403);
        assert!(reply
            .headers
            .iter()
            .all(|(name, _)| *name != "www-authenticate"));
    }

    #[test]
    fn keys_unavailable_is_503_with_retry_after() {
        let reply = local_reply(Reason::KeysUnavailable, "mlgate", None, None);
        assert_eq!(reply.status, 503);
        assert!(reply.headers.iter().any(|(name, _)| *name == "retry-after"));
    }

    #[test]
    fn body_is_valid_json_even_with_quotes_in_route_and_request_id() {
        let reply = local_reply(Reason::NoRuleMatched, "mlgate", Some("a\"b"), Some("x\\y"));
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["route"], "a\"b");
    }

    #[test]
    fn body_is_what_serde_json_writes_for_the_same_fields() {
        let awkward = [
            None,
            Some(""),
            Some("r-1"),
            Some("ünïcode ✓"),
            Some("tab\there"),
            Some("nul\u{0}"),
            Some("quote\"back\\slash"),
            Some("del\u{7f}"),
        ];
        for request_id in awkward {
            for route in awkward {
                let reply = local_reply(Reason::DeniedByRule, "mlgate", route, request_id);
                let expected = serde_json::json!({
                    "error": "forbidden",
                    "reason": "denied_by_rule",
                    "request_id": request_id,
                    "route": route,
                });
                assert_eq!(reply.body, expected.to_string(), "{request_id:?} {route:?}");
            }
        }
    }
}
