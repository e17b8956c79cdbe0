//! Token verification: shape, header, issuer → provider, registered claims, then the signature.
//!
//! Everything cheap is checked before the signature (size and shape were checked by `token`;
//! here `alg`, `crit`, issuer, tenant, `exp`/`nbf`/`iat`, audience, `kid`), so garbage never
//! reaches the expensive step. No token is ever accepted without a verified signature: the
//! claims are only *trusted* once [`verify`] returns `Ok`. The steps are types:
//! [`dangerous::peek`] gives an [`Unverified`] token, [`check_claims`] a [`Checked`] one, and only
//! [`Checked::verify_signature`] a [`Verified`] one.

use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::crypto::Backend;
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

/// A token whose signature verified and whose registered claims hold. Made only by
/// [`Checked::verify_signature`]; its fields are private, so no other code can make one:
///
/// ```compile_fail
/// let forged = mlgate::verify::Verified { claims: todo!(), exp: None };
/// ```
#[derive(Debug)]
pub struct Verified {
    claims: Payload,
    exp: Option<i64>,
}

impl Verified {
    /// The claims, now trusted.
    pub fn claims(&self) -> &Payload {
        &self.claims
    }

    /// The token's `exp`, when it has one.
    pub fn exp(&self) -> Option<i64> {
        self.exp
    }
}

/// A token whose registered claims hold under one provider's rules but whose signature is not
/// yet checked: what [`check_claims`] returns and [`Checked::verify_signature`] consumes. Only
/// [`check_claims`] makes one; an unverified token's claims cannot be reached from outside:
///
/// ```compile_fail
/// fn trust(token: mlgate::verify::dangerous::Unverified<'_>) {
///     let _claims = token.claims;
/// }
/// ```
#[derive(Debug)]
pub struct Checked<'t> {
    token: Unverified<'t>,
    exp: Option<i64>,
}

impl Checked<'_> {
    /// The header's `alg`.
    pub fn alg(&self) -> Algorithm {
        self.token.alg
    }

    /// The header's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.token.kid.as_deref()
    }

    /// The token's `exp`, when it has one.
    pub fn exp(&self) -> Option<i64> {
        self.exp
    }
}

pub mod dangerous;

use dangerous::Unverified;

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

/// Checks everything but the signature, against the rules of the provider the token's issuer
/// selected.
pub fn check_claims<'t>(
    token: Unverified<'t>,
    rules: &TokenRules,
    now: i64,
) -> Result<Checked<'t>, Reason> {
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
    Ok(Checked { token, exp })
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
    token: Unverified<'_>,
    rules: &TokenRules,
    keys: &KeySet,
    backend: &Backend,
    now: i64,
) -> Result<Verified, Reason> {
    check_claims(token, rules, now)?.verify_signature(rules, keys, backend)
}

impl Checked<'_> {
    /// The signature step: the claims already hold ([`check_claims`] made this value); a key of
    /// `keys` that fits must verify the signature under `backend`.
    pub fn verify_signature(
        self,
        rules: &TokenRules,
        keys: &KeySet,
        backend: &Backend,
    ) -> Result<Verified, Reason> {
        let Checked { token, exp } = self;
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
            let signing_input = token.signing_input.as_bytes();
            if backend.verify(token.alg, &key.decoding, signing_input, &token.signature) {
                // Signed, so now worth the check of its nested objects (see `Payload::parse`).
                let header_ok = !token.header_nested
                    || dangerous::header_nested_keys_unique(token.signing_input);
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
            let peeked = dangerous::peek_remembering(token, &mut last).unwrap();
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
        dangerous::peek_remembering(&good, &mut last).unwrap();
        for _ in 0..2 {
            assert_eq!(
                dangerous::peek_remembering(&unsigned, &mut last).map(|p| p.alg),
                Err(Reason::UnsupportedAlgorithm)
            );
            assert_eq!(
                dangerous::peek_remembering(&critical, &mut last).map(|p| p.alg),
                Err(Reason::UnsupportedCriticalHeader)
            );
        }
        let again = dangerous::peek_remembering(&good, &mut last).unwrap();
        assert_eq!(again.kid.as_deref(), Some("k1"));
    }
}
