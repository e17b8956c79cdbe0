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

/// What a trace records of a token in the VM: the header's `alg` and `kid`, and the JSON text of
/// the claims the checks read (`iss`, `aud`, `exp`, `nbf`, `iat` as one object; the provider's
/// tenant claim once the provider is known). [`Seen::presented`] reads them, natively, as the
/// checks would: decoding them in the VM would cost module for what only an explanation shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub alg: Algorithm,
    pub kid: Option<String>,
    /// A JSON object.
    pub claims: String,
    /// The tenant claim's JSON text.
    pub tenant: Option<String>,
}

/// [`Seen`] for `token`, without its tenant ([`raw_claim`] reads it once the provider is known).
pub fn seen(token: &Unverified<'_>) -> Seen {
    let mut claims = String::new();
    for name in ["iss", "aud", "exp", "nbf", "iat"] {
        push_member(&mut claims, name, token.claims.raw(name));
    }
    claims.push_str(if claims.is_empty() { "{}" } else { "}" });
    Seen {
        alg: token.alg,
        kid: token.kid.clone(),
        claims,
        tenant: None,
    }
}

/// `"name":raw` after `{` or `,`. Not inlined: the loop above would be unrolled with a copy each.
#[inline(never)]
fn push_member(out: &mut String, name: &str, raw: Option<&str>) {
    if let Some(raw) = raw {
        out.push_str(if out.is_empty() { "{\"" } else { ",\"" });
        out.push_str(name);
        out.push_str("\":");
        out.push_str(raw);
    }
}

/// The JSON text of the claim `name` of `token`, when it has one.
pub fn raw_claim(token: &Unverified<'_>, name: &str) -> Option<String> {
    token.claims.raw(name).map(str::to_string)
}

impl Seen {
    /// The values as the checks read them.
    pub fn presented(&self) -> Presented {
        let claims = Payload::parse(self.claims.clone().into_bytes()).ok();
        let get = |name: &str| claims.as_ref().and_then(|c| c.get(name));
        let string = |value: Option<Value>| match value {
            Some(Value::String(value)) => Some(value),
            _ => None,
        };
        let mut aud = Vec::new();
        match get("aud") {
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
        let date = |name: &str| {
            claims
                .as_ref()
                .and_then(|c| super::numeric_date(c, name).ok().flatten())
        };
        let tenant = self
            .tenant
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok());
        Presented {
            alg: Some(self.alg),
            kid: self.kid.clone(),
            iss: string(get("iss")),
            tenant: string(tenant),
            aud,
            exp: date("exp"),
            nbf: date("nbf"),
            iat: date("iat"),
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
