//! Looking inside a token before it is verified, quarantined as jsonwebtoken quarantines its
//! `dangerous` decoding: nothing read here may be trusted. [`Unverified`] has no public fields and
//! no way out but [`super::check_claims`], whose result only the signature step turns into a
//! [`super::Verified`] token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::decision::Reason;
use crate::payload::Payload;

/// The parts of a compact JWS, decoded but NOT verified. Its fields are private to
/// [`crate::verify`]: outside it, a token can be read but never turned into a verified one.
///
/// ```
/// let token = mlgate::verify::dangerous::peek("eyJhbGciOiJSUzI1NiJ9.e30.AA").unwrap();
/// assert_eq!(token.alg(), jsonwebtoken::Algorithm::RS256);
/// ```
#[derive(Debug)]
pub struct Unverified<'t> {
    pub(super) alg: Algorithm,
    pub(super) kid: Option<String>,
    /// The header has objects or arrays, whose keys are checked once the signature holds.
    pub(super) header_nested: bool,
    /// The claims, indexed; each decoded when a check or the identity reads it.
    pub(super) claims: Payload,
    /// The `iss` claim, decoded once: provider selection and every issuer check read it.
    pub(super) iss: Option<Value>,
    /// `header.payload`, the bytes the signature covers.
    pub(super) signing_input: &'t str,
    pub(super) signature: Vec<u8>,
}

impl Unverified<'_> {
    /// The header's `alg`.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The header's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `iss` claim, if it is a string.
    pub fn issuer(&self) -> Result<&str, Reason> {
        match &self.iss {
            Some(Value::String(iss)) => Ok(iss),
            None => Err(Reason::UnknownIssuer),
            Some(_) => Err(Reason::MalformedToken),
        }
    }
}

/// What a token presents to the checks, as it claims it (nothing here is trusted): for a
/// decision's trace, which shows the values each check compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presented {
    pub alg: Option<Algorithm>,
    pub kid: Option<String>,
    pub iss: Option<String>,
    pub tenant: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iat: Option<i64>,
}

/// [`Presented`] for `token`, without its tenant: the claim that names it is the provider's
/// ([`string_claim`] reads it once the provider is known).
pub fn presented(token: &Unverified<'_>) -> Presented {
    // A loop rather than a collect: the iterator adapters would be compiled once more for this.
    let mut aud = Vec::new();
    match token.claims.get("aud") {
        Some(Value::String(one)) => aud.push(one),
        Some(Value::Array(auds)) => {
            for a in auds {
                if let Value::String(a) = a {
                    aud.push(a);
                }
            }
        }
        _ => {}
    }
    let date = |name: &str| super::numeric_date(&token.claims, name).ok().flatten();
    Presented {
        alg: Some(token.alg),
        kid: token.kid.clone(),
        iss: token.issuer().ok().map(str::to_string),
        tenant: None,
        aud,
        exp: date("exp"),
        nbf: date("nbf"),
        iat: date("iat"),
    }
}

/// The claim `name` of `token` when it is a string.
pub fn string_claim(token: &Unverified<'_>, name: &str) -> Option<String> {
    match token.claims.get(name) {
        Some(Value::String(value)) => Some(value),
        _ => None,
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
        Some(seen) if crate::bytes::same_bytes(seen.segment.as_bytes(), header_b64.as_bytes()) => {
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
pub(super) fn header_nested_keys_unique(signing_input: &str) -> bool {
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
