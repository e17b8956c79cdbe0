//! Token verification: shape, header, issuer → provider, registered claims, then the signature.
//!
//! Everything cheap is checked before the signature (size and shape were checked by `token`;
//! here `alg`, `crit`, issuer, tenant, `exp`/`nbf`/`iat`, audience, `kid`), so garbage never
//! reaches the expensive step. No token is ever accepted without a verified signature: the
//! claims are only *trusted* once [`verify`] returns `Ok`.

use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::decision::Reason;
use crate::jwks::{KeySet, Selection};
use crate::payload::Payload;

/// Latest accepted NumericDate: 9999-12-31T23:59:59Z. Larger values are treated as malformed.
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// Keys tried for one token without `kid`; bounds the work a kid-less token can cause.
pub const MAX_KEYS_TRIED: usize = 4;

/// One accepted issuer: exact, or a template with one `{tenant}` placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerPattern {
    Exact(String),
    Tenant { prefix: String, suffix: String },
}

impl IssuerPattern {
    /// `None` when `iss` does not fit; `Some(None)` for an exact match; `Some(Some(tenant))` for a
    /// template match, with the tenant taken from the issuer.
    pub fn matches<'i>(&self, iss: &'i str) -> Option<Option<&'i str>> {
        match self {
            IssuerPattern::Exact(exact) => (exact == iss).then_some(None),
            IssuerPattern::Tenant { prefix, suffix } => {
                let tenant = iss
                    .strip_prefix(prefix.as_str())?
                    .strip_suffix(suffix.as_str())?;
                let plausible = !tenant.is_empty()
                    && tenant
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                plausible.then_some(Some(tenant))
            }
        }
    }
}

/// Which tenants a provider accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tenants {
    /// No tenant restriction was configured (single-tenant exact issuers).
    Unrestricted,
    /// `["*"]`, written explicitly.
    Any,
    List(Vec<String>),
}

/// The token rules of one provider, compiled from its configuration.
#[derive(Clone, Debug)]
pub struct TokenRules {
    pub issuers: Vec<IssuerPattern>,
    pub tenants: Tenants,
    /// The claim that names the tenant (`tid` for Entra).
    pub tenant_claim: String,
    /// `None`: any audience (explicitly configured).
    pub audiences: Option<Vec<String>>,
    pub algorithms: Vec<Algorithm>,
    pub require_exp: bool,
    pub max_lifetime_seconds: Option<i64>,
    pub clock_skew_seconds: i64,
    /// OpenID Connect ID tokens (`nonce`, `at_hash` or `c_hash` present) are accepted as
    /// credentials; off by default, since an ID token says who signed in to a client, not that
    /// the API may be called.
    pub accept_id_tokens: bool,
}

/// A token whose signature verified and whose registered claims hold.
#[derive(Debug)]
pub struct Verified {
    pub claims: Payload,
    pub exp: Option<i64>,
}

/// Looking inside a token before it is verified. Quarantined here, as jsonwebtoken quarantines
/// its `dangerous` decoding: nothing read by [`peek`] may be trusted until [`verify`] succeeds.
pub mod unverified {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::Algorithm;
    use serde_json::Value;

    use crate::decision::Reason;
    use crate::payload::Payload;

    /// The parts of a compact JWS, decoded but NOT verified.
    #[derive(Debug)]
    pub struct Unverified<'t> {
        pub alg: Algorithm,
        pub kid: Option<String>,
        /// The header has objects or arrays, whose keys are checked once the signature holds.
        pub header_nested: bool,
        /// The claims, indexed; each decoded when a check or the identity reads it.
        pub claims: Payload,
        /// The `iss` claim, decoded once: provider selection and every issuer check read it.
        pub iss: Option<Value>,
        /// `header.payload`, the bytes the signature covers.
        pub signing_input: &'t str,
        pub signature: Vec<u8>,
    }

    impl Unverified<'_> {
        /// The `iss` claim, if it is a string.
        pub fn issuer(&self) -> Result<&str, Reason> {
            match &self.iss {
                Some(Value::String(iss)) => Ok(iss),
                None => Err(Reason::UnknownIssuer),
                Some(_) => Err(Reason::MalformedToken),
            }
        }
    }

    /// Splits and decodes a compact JWS. Refuses anything that is not exactly three non-empty,
    /// canonical base64url segments; header and payload must be JSON objects without duplicate
    /// keys; `alg` must name an algorithm mlgate implements (never `none`); `crit` is refused
    /// because mlgate implements no JWS extension (RFC 7515 §4.1.11).
    /// (Characters outside base64url fail the segments' decoding.)
    pub fn peek(token: &str) -> Result<Unverified<'_>, Reason> {
        peek_remembering(token, &mut None)
    }

    /// The last JWS header segment that was read and what it said. An issuer puts the same header
    /// on every token it signs with one key (`alg`, `kid`, `typ`), so a gate that keeps this
    /// decodes and parses a header once per key rather than once per token.
    #[derive(Debug)]
    pub struct LastHeader {
        segment: Box<str>,
        alg: Algorithm,
        kid: Option<String>,
        nested: bool,
    }

    /// [`peek`], reusing `last` when the token's header segment is the same text, and keeping
    /// this token's header in it otherwise. Only a header that was accepted is kept.
    pub fn peek_remembering<'t>(
        token: &'t str,
        last: &mut Option<LastHeader>,
    ) -> Result<Unverified<'t>, Reason> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::MalformedToken);
        };
        let (alg, kid, header_nested) = match last {
            Some(seen)
                if crate::bytes::same_bytes(seen.segment.as_bytes(), header_b64.as_bytes()) =>
            {
                (seen.alg, seen.kid.clone(), seen.nested)
            }
            _ => {
                let (alg, kid, nested) = read_header(header_b64)?;
                *last = Some(LastHeader {
                    segment: header_b64.into(),
                    alg,
                    kid: kid.clone(),
                    nested,
                });
                (alg, kid, nested)
            }
        };
        // After `alg`, so that an unsigned `alg: none` token is named for what it is.
        if signature_b64.is_empty() {
            return Err(Reason::MalformedToken);
        }
        let claims = decode_object(payload_b64)?;
        let iss = claims.get("iss");
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| Reason::MalformedToken)?;
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = token
            .get(..signing_input_len)
            .ok_or(Reason::MalformedToken)?;
        Ok(Unverified {
            alg,
            kid,
            header_nested,
            claims,
            iss,
            signing_input,
            signature,
        })
    }

    /// `alg` and `kid` of a JWS header segment, and whether it has objects or arrays in it.
    fn read_header(segment: &str) -> Result<(Algorithm, Option<String>, bool), Reason> {
        let header = decode_object(segment)?;
        let alg = match header.get("alg") {
            Some(Value::String(name)) => parse_alg(&name)?,
            None => return Err(Reason::MalformedToken),
            Some(_) => return Err(Reason::UnsupportedAlgorithm),
        };
        if header.contains("crit") {
            return Err(Reason::UnsupportedCriticalHeader);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(Reason::MalformedToken),
        };
        Ok((alg, kid, header.has_nested_values()))
    }

    /// Whether the header segment of `signing_input` repeats no key in its nested objects:
    /// checked once the signature holds, as the payload's are (see `Payload::parse`).
    pub(crate) fn header_nested_keys_unique(signing_input: &str) -> bool {
        let segment = signing_input.split('.').next().unwrap_or_default();
        decode_object(segment).is_ok_and(|header| header.nested_keys_unique())
    }

    fn decode_object(segment: &str) -> Result<Payload, Reason> {
        let bytes = URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| Reason::MalformedToken)?;
        Payload::parse(bytes).map_err(|_| Reason::MalformedToken)
    }

    /// Only the exact registered names; `none`, `None`, `NONE`, `""`, `HS256 ` … are refused.
    fn parse_alg(name: &str) -> Result<Algorithm, Reason> {
        name.parse::<Algorithm>()
            .map_err(|_| Reason::UnsupportedAlgorithm)
    }
}

/// Which issuer pattern of which provider accepts `iss`; exact matches win over templates.
pub fn select_provider<'r, I>(providers: I, iss: &str) -> Option<usize>
where
    I: Iterator<Item = &'r TokenRules> + Clone,
{
    let exact = providers.clone().position(|rules| {
        rules
            .issuers
            .iter()
            .any(|p| matches!(p, IssuerPattern::Exact(_)) && p.matches(iss).is_some())
    });
    exact.or_else(|| {
        providers
            .clone()
            .position(|rules| rules.issuers.iter().any(|p| p.matches(iss).is_some()))
    })
}

/// Checks everything but the signature. Returns the token's `exp`.
pub fn check_claims(
    token: &unverified::Unverified<'_>,
    rules: &TokenRules,
    now: i64,
) -> Result<Option<i64>, Reason> {
    if !rules.algorithms.contains(&token.alg) {
        return Err(Reason::UnsupportedAlgorithm);
    }
    check_issuer_and_tenant(&token.claims, rules, token.issuer()?)?;
    let exp = check_times(&token.claims, rules, now)?;
    check_audience(&token.claims, rules)?;
    let id_token = ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|claim| token.claims.contains(claim));
    if id_token && !rules.accept_id_tokens {
        return Err(Reason::IdTokenNotAccepted);
    }
    Ok(exp)
}

fn check_issuer_and_tenant(claims: &Payload, rules: &TokenRules, iss: &str) -> Result<(), Reason> {
    let issuer_tenant = rules
        .issuers
        .iter()
        .find_map(|pattern| pattern.matches(iss))
        .ok_or(Reason::UnknownIssuer)?;
    let claimed_tenant = match claims.get(&rules.tenant_claim) {
        None => None,
        Some(Value::String(tid)) => Some(tid),
        Some(_) => return Err(Reason::MalformedToken),
    };
    let claimed_tenant = claimed_tenant.as_deref();
    if let Some(from_issuer) = issuer_tenant {
        // Entra: the tenant in a templated issuer must be the token's own tenant, or a token
        // from tenant A could claim to be issued by tenant B's issuer.
        if claimed_tenant != Some(from_issuer) {
            return Err(Reason::TenantNotAllowed);
        }
    } else if let (Some(from_issuer), Some(tid)) = (entra_issuer_tenant(iss), claimed_tenant) {
        // The same binding for an exact Entra issuer (single-tenant apps): a token whose `tid`
        // names another tenant than its `iss` is refused, never forwarded with that `tid`.
        if tid != from_issuer {
            return Err(Reason::TenantNotAllowed);
        }
    }
    match &rules.tenants {
        Tenants::Unrestricted | Tenants::Any => Ok(()),
        Tenants::List(allowed) => match claimed_tenant {
            Some(tid) if allowed.iter().any(|t| t == tid) => Ok(()),
            _ => Err(Reason::TenantNotAllowed),
        },
    }
}

/// Where Microsoft Entra ID's issuers begin: the public cloud (v2 and v1 forms) and the national
/// clouds.
pub const ENTRA_ISSUER_HOSTS: &[&str] = &[
    "https://login.microsoftonline.com/",
    "https://sts.windows.net/",
    "https://login.microsoftonline.us/",
    "https://login.partner.microsoftonline.cn/",
    "https://sts.chinacloudapi.cn/",
];

/// The tenant an Entra issuer names (`https://login.microsoftonline.com/<tenant>/v2.0`,
/// `https://sts.windows.net/<tenant>/`, and the national clouds' hosts); `None` for any other.
fn entra_issuer_tenant(iss: &str) -> Option<&str> {
    let rest = ENTRA_ISSUER_HOSTS
        .iter()
        .find_map(|host| iss.strip_prefix(host))?;
    let tenant = rest.split('/').next()?;
    (!tenant.is_empty()).then_some(tenant)
}

/// A NumericDate claim: absent, or a number of seconds in `0..=MAX_NUMERIC_DATE`. RFC 7519 §2
/// allows fractions (`1700000000.5`), and Envoy's jwt_authn takes them: a fraction is floored.
/// Strings, negatives, `null`, values past year 9999 and numbers serde_json cannot read as a
/// finite value (`1e400`) are malformed, never treated as an absent claim.
fn numeric_date(claims: &Payload, name: &str) -> Result<Option<i64>, Reason> {
    match claims.get(name) {
        None if claims.contains(name) => Err(Reason::MalformedToken),
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(v), _) if (0..=MAX_NUMERIC_DATE).contains(&v) => Ok(Some(v)),
            (None, Some(v)) if n.is_f64() && v.is_finite() && v.is_sign_positive() => {
                let floored = v.floor();
                // Checked against the bound as a float first: the cast is then exact.
                if floored <= MAX_NUMERIC_DATE as f64 {
                    Ok(Some(floored as i64))
                } else {
                    Err(Reason::MalformedToken)
                }
            }
            _ => Err(Reason::MalformedToken),
        },
        Some(_) => Err(Reason::MalformedToken),
    }
}

fn check_times(claims: &Payload, rules: &TokenRules, now: i64) -> Result<Option<i64>, Reason> {
    let skew = rules.clock_skew_seconds;
    let exp = numeric_date(claims, "exp")?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    match exp {
        None if rules.require_exp => return Err(Reason::MissingExpiry),
        Some(exp) if now >= exp.saturating_add(skew) => return Err(Reason::TokenExpired),
        _ => {}
    }
    if let Some(nbf) = nbf {
        if now.saturating_add(skew) < nbf {
            return Err(Reason::TokenNotYetValid);
        }
    }
    if let Some(iat) = iat {
        if iat > now.saturating_add(skew) {
            return Err(Reason::TokenIssuedInFuture);
        }
    }
    if let Some(max) = rules.max_lifetime_seconds {
        let start = iat.or(nbf);
        match (exp, start) {
            (Some(exp), Some(start)) if exp.saturating_sub(start) <= max => {}
            _ => return Err(Reason::TokenLifetimeTooLong),
        }
    }
    Ok(exp)
}

fn check_audience(claims: &Payload, rules: &TokenRules) -> Result<(), Reason> {
    let Some(accepted) = &rules.audiences else {
        return Ok(());
    };
    let found = match claims.get("aud") {
        None => false,
        Some(Value::String(aud)) => accepted.contains(&aud),
        Some(Value::Array(auds)) => {
            let mut any = false;
            for aud in &auds {
                let aud = aud.as_str().ok_or(Reason::MalformedToken)?;
                any |= accepted.iter().any(|a| a == aud);
            }
            any
        }
        Some(_) => return Err(Reason::MalformedToken),
    };
    if found {
        Ok(())
    } else {
        Err(Reason::AudienceMismatch)
    }
}

/// Full verification of a peeked token against one provider's rules and key set.
pub fn verify(
    token: unverified::Unverified<'_>,
    rules: &TokenRules,
    keys: &KeySet,
    now: i64,
) -> Result<Verified, Reason> {
    let exp = check_claims(&token, rules, now)?;
    verify_signature(token, rules, keys, exp)
}

/// The signature step of [`verify`], for a token whose claims [`check_claims`] already passed
/// (returning `exp`): the gate checks claims before it looks for keys.
pub fn verify_signature(
    token: unverified::Unverified<'_>,
    rules: &TokenRules,
    keys: &KeySet,
    exp: Option<i64>,
) -> Result<Verified, Reason> {
    let candidates = match keys.select(token.kid.as_deref(), token.alg) {
        Selection::Candidates(candidates) => candidates,
        Selection::UnknownKid | Selection::NoFittingKey => return Err(Reason::UnknownKey),
    };
    let iss = token.issuer()?;
    // Decoded only if a key names its issuer (Entra): claims are decoded when read.
    let mut tenant: Option<Option<String>> = None;
    let mut tried = 0;
    for key in candidates {
        if let Some(key_issuer) = &key.issuer {
            // Entra's per-key issuer: a key published for one issuer verifies only its tokens.
            let tenant =
                tenant.get_or_insert_with(|| match token.claims.get(&rules.tenant_claim) {
                    Some(Value::String(tid)) => Some(tid),
                    _ => None,
                });
            let expected = match tenant.as_deref() {
                Some(tid) => key_issuer.replace("{tenantid}", tid),
                None => key_issuer.clone(),
            };
            if expected != iss {
                continue;
            }
        }
        if tried == MAX_KEYS_TRIED {
            break;
        }
        tried += 1;
        if crate::crypto::verify(
            token.alg,
            &key.decoding,
            token.signing_input.as_bytes(),
            &token.signature,
        ) {
            // Signed, so now worth the check of its nested objects (see `Payload::parse`).
            let header_ok =
                !token.header_nested || unverified::header_nested_keys_unique(token.signing_input);
            if !header_ok || !token.claims.nested_keys_unique() {
                return Err(Reason::MalformedToken);
            }
            return Ok(Verified {
                claims: token.claims,
                exp,
            });
        }
    }
    if tried == 0 {
        return Err(Reason::UnknownKey);
    }
    Err(Reason::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TENANT: &str = "4b2f3c1e-8a6d-4f0e-9c3b-2a1d5e7f9a10";
    const OTHER: &str = "e1d2c3b4-a5f6-4e7d-8c9b-0a1f2e3d4c5b";

    fn rules(issuer: &str) -> TokenRules {
        TokenRules {
            issuers: vec![IssuerPattern::Exact(issuer.to_string())],
            tenants: Tenants::Unrestricted,
            tenant_claim: "tid".into(),
            audiences: None,
            algorithms: vec![Algorithm::RS256],
            require_exp: false,
            max_lifetime_seconds: None,
            clock_skew_seconds: 60,
            accept_id_tokens: false,
        }
    }

    fn check(issuer: &str, claims: Value) -> Result<(), Reason> {
        let iss = claims["iss"].as_str().unwrap().to_string();
        let claims = Payload::parse(claims.to_string().into_bytes()).unwrap();
        check_issuer_and_tenant(&claims, &rules(issuer), &iss)
    }

    fn times(claims: Value) -> Result<Option<i64>, Reason> {
        let payload = Payload::parse(claims.to_string().into_bytes()).unwrap();
        check_times(&payload, &rules("https://idp"), 1_700_000_000)
    }

    #[test]
    fn fractional_numeric_dates_are_floored() {
        assert_eq!(
            times(json!({"exp": 1_700_000_100.75})),
            Ok(Some(1_700_000_100))
        );
        assert_eq!(times(json!({"exp": 1.7000001e9})), Ok(Some(1_700_000_100)));
        let raw = Payload::parse(br#"{"exp":1700000100.5,"nbf":1699999999.9,"iat":1e9}"#.to_vec())
            .unwrap();
        assert_eq!(
            check_times(&raw, &rules("https://idp"), 1_700_000_000),
            Ok(Some(1_700_000_100))
        );
    }

    #[test]
    fn numeric_dates_that_are_not_finite_non_negative_numbers_are_malformed() {
        for text in [
            r#"{"exp":"1700000100"}"#,
            r#"{"exp":-1.5}"#,
            r#"{"exp":-1}"#,
            r#"{"exp":1e400}"#,
            r#"{"nbf":1e400}"#,
            r#"{"exp":1e300}"#,
            r#"{"exp":null}"#,
            r#"{"exp":-0.0}"#,
            r#"{"exp":253402300800.5}"#,
        ] {
            // A number serde_json cannot read makes the whole payload unreadable (malformed).
            let Ok(payload) = Payload::parse(text.as_bytes().to_vec()) else {
                assert!(text.contains("e400"), "{text}");
                continue;
            };
            assert_eq!(
                check_times(&payload, &rules("https://idp"), 1_700_000_000),
                Err(Reason::MalformedToken),
                "{text}"
            );
        }
    }

    #[test]
    fn exact_entra_issuer_binds_its_tenant_to_tid() {
        for issuer in [
            format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            format!("https://sts.windows.net/{TENANT}/"),
        ] {
            assert_eq!(
                check(&issuer, json!({"iss": issuer, "tid": TENANT})),
                Ok(())
            );
            assert_eq!(
                check(&issuer, json!({"iss": issuer, "tid": OTHER})),
                Err(Reason::TenantNotAllowed)
            );
            // No tid: nothing to contradict (and no tenant is forwarded).
            assert_eq!(check(&issuer, json!({"iss": issuer})), Ok(()));
        }
    }

    #[test]
    fn exact_non_entra_issuer_does_not_look_at_tid() {
        let issuer = "https://dev-1.okta.com/oauth2/default";
        assert_eq!(check(issuer, json!({"iss": issuer, "tid": OTHER})), Ok(()));
        assert_eq!(
            entra_issuer_tenant("https://login.microsoftonline.com/"),
            None
        );
        assert_eq!(
            entra_issuer_tenant("https://login.microsoftonline.com/t/v2.0"),
            Some("t")
        );
    }

    fn compact(header: Value, claims: Value) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn a_remembered_header_is_reused_only_for_the_same_segment() {
        let mut last = None;
        let first = compact(json!({"alg": "RS256", "kid": "k1"}), json!({"iss": "a"}));
        let same = compact(json!({"alg": "RS256", "kid": "k1"}), json!({"iss": "b"}));
        let other = compact(json!({"alg": "RS384", "kid": "k2"}), json!({"iss": "c"}));
        for (token, alg, kid, iss) in [
            (&first, Algorithm::RS256, "k1", "a"),
            (&same, Algorithm::RS256, "k1", "b"),
            (&other, Algorithm::RS384, "k2", "c"),
            (&first, Algorithm::RS256, "k1", "a"),
        ] {
            let peeked = unverified::peek_remembering(token, &mut last).unwrap();
            assert_eq!(
                (peeked.alg, peeked.kid.as_deref(), peeked.issuer()),
                (alg, Some(kid), Ok(iss))
            );
        }
    }

    #[test]
    fn a_refused_header_is_refused_every_time_and_not_remembered() {
        let mut last = None;
        let good = compact(json!({"alg": "RS256", "kid": "k1"}), json!({"iss": "a"}));
        let unsigned = compact(json!({"alg": "none"}), json!({"iss": "a"}));
        let critical = compact(json!({"alg": "RS256", "crit": ["x"]}), json!({"iss": "a"}));
        unverified::peek_remembering(&good, &mut last).unwrap();
        for _ in 0..2 {
            assert_eq!(
                unverified::peek_remembering(&unsigned, &mut last).map(|p| p.alg),
                Err(Reason::UnsupportedAlgorithm)
            );
            assert_eq!(
                unverified::peek_remembering(&critical, &mut last).map(|p| p.alg),
                Err(Reason::UnsupportedCriticalHeader)
            );
        }
        let again = unverified::peek_remembering(&good, &mut last).unwrap();
        assert_eq!(again.kid.as_deref(), Some("k1"));
    }
}
