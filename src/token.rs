//! Where a token comes from: an `Authorization`-style header with a scheme, a bare header,
//! a query parameter or a cookie.
//!
//! Extraction decides only "which bytes are the token". It never parses them, and it refuses
//! ambiguity: two tokens on one request (from two sources, or twice from one) are refused, as is
//! a token over the size limit — both before anything looks inside. Two tokens in one value (a
//! client's `a,b`, or repeated headers the proxy joined with `,`) are found here and refused by the
//! gate before verification ([`FoundToken::is_joined`]): a cache hit skips that scan, since no
//! verified token holds a `,`.

use std::borrow::Cow;

use crate::bytes;
use crate::decision::Reason;

/// One place a token may be carried. Header names are stored lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// `name: <scheme> <token>`; the scheme compares case-insensitively.
    HeaderWithScheme { name: String, scheme: String },
    /// `name: <token>`.
    Header { name: String },
    /// `?name=<token>`.
    Query { name: String },
    /// `Cookie: name=<token>`.
    Cookie { name: String },
}

/// A request header by lower-case name: borrowed from the request where possible (repeated
/// headers come back joined by `,`, as HTTP allows).
pub type HeaderLookup<'a> = dyn Fn(&str) -> Option<Cow<'a, str>> + 'a;

/// A token found on a request, with the index of the source (in the policy's source list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundToken<'a> {
    pub token: Cow<'a, str>,
    pub source: usize,
}

impl FoundToken<'_> {
    /// Whether the value holds two tokens joined by `,` (`multiple_tokens`). No JWT holds a `,`
    /// (base64url and dots), so a token equal to a verified one is not joined: the gate asks only
    /// on a cache miss, which spares a cache hit a scan of the whole token.
    pub fn is_joined(&self) -> bool {
        bytes::contains_byte(self.token.as_bytes(), b',')
    }
}

/// Looks in every source. `header` returns the value of a request header by lower-case name
/// (Envoy joins repeated headers with `,`, which this treats as two tokens); `query` is the part
/// of the path after `?`, if any.
pub fn extract<'a>(
    sources: &[TokenSource],
    header: &HeaderLookup<'a>,
    query: Option<&'a str>,
    max_bytes: usize,
) -> Result<Option<FoundToken<'a>>, Reason> {
    let mut found: Option<FoundToken<'a>> = None;
    let mut take = |token: Cow<'a, str>, source: usize| {
        if found.is_some() {
            return Err(Reason::MultipleTokens);
        }
        found = Some(FoundToken { token, source });
        Ok(())
    };
    for (index, source) in sources.iter().enumerate() {
        match source {
            TokenSource::HeaderWithScheme { name, scheme } => {
                if let Some(token) = header(name).and_then(|value| strip_scheme(value, scheme)) {
                    take(token, index)?;
                }
            }
            TokenSource::Header { name } => {
                if let Some(token) = header(name).and_then(|value| non_empty(trim(value))) {
                    take(token, index)?;
                }
            }
            TokenSource::Query { name } => {
                let pairs = query.into_iter().flat_map(|query| query.split('&'));
                for pair in pairs {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if key == name && !value.is_empty() {
                        take(Cow::Borrowed(value), index)?;
                    }
                }
            }
            TokenSource::Cookie { name } => {
                let Some(cookies) = header("cookie") else {
                    continue;
                };
                for pair in cookies.split(';') {
                    let Some((key, value)) = pair.trim().split_once('=') else {
                        continue;
                    };
                    if key == name && !value.is_empty() {
                        take(Cow::Owned(value.to_string()), index)?;
                    }
                }
            }
        }
    }
    match found {
        Some(found) if found.token.len() > max_bytes => Err(Reason::TokenTooLarge),
        other => Ok(other),
    }
}

/// `value` without surrounding whitespace, borrowed when it was.
fn trim(value: Cow<'_, str>) -> Cow<'_, str> {
    match value {
        Cow::Borrowed(value) => Cow::Borrowed(value.trim()),
        Cow::Owned(value) => Cow::Owned(value.trim().to_string()),
    }
}

fn non_empty(value: Cow<'_, str>) -> Option<Cow<'_, str>> {
    (!value.is_empty()).then_some(value)
}

/// `Bearer abc` → `abc` for scheme `Bearer` (any case). A value with another scheme is not a
/// token for this source: `Basic …` on `Authorization` is simply no bearer token.
fn strip_scheme<'a>(value: Cow<'a, str>, scheme: &str) -> Option<Cow<'a, str>> {
    match value {
        Cow::Borrowed(value) => strip_scheme_str(value, scheme).map(Cow::Borrowed),
        Cow::Owned(value) => strip_scheme_str(&value, scheme).map(|t| Cow::Owned(t.to_string())),
    }
}

fn strip_scheme_str<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    // By bytes: the scheme and its separator are ASCII, and this runs on every request (`str`'s
    // `char`-wise trims cost a cache hit more than the rest of extraction). Only ASCII whitespace
    // surrounds a token: anything else stays in it and fails verification.
    let value = value.trim_ascii();
    let head = value.as_bytes().get(..scheme.len())?;
    if !bytes::same_ignoring_ascii_case(head, scheme.as_bytes()) {
        return None;
    }
    let after_scheme = value.as_bytes().get(scheme.len()..)?;
    let spaces = after_scheme.iter().take_while(|&&b| b == b' ').count();
    if spaces == 0 {
        return None;
    }
    value
        .get(scheme.len() + spaces..)
        .filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn bearer() -> TokenSource {
        TokenSource::HeaderWithScheme {
            name: "authorization".into(),
            scheme: "Bearer".into(),
        }
    }

    fn run(
        sources: &[TokenSource],
        headers: &[(&str, &str)],
        query: Option<&str>,
    ) -> Result<Option<FoundToken<'static>>, Reason> {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let found = extract(
            sources,
            &|name| map.get(name).map(|v| Cow::Borrowed(v.as_str())),
            query,
            100,
        )?;
        Ok(found.map(|found| FoundToken {
            token: Cow::Owned(found.token.into_owned()),
            source: found.source,
        }))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc"] {
            let found = run(&[bearer()], &[("authorization", value)], None).unwrap();
            assert_eq!(found.unwrap().token, "abc");
        }
    }

    #[test]
    fn only_ascii_whitespace_is_trimmed_around_a_bearer_token() {
        let found = run(&[bearer()], &[("authorization", " Bearer  abc\t")], None).unwrap();
        assert_eq!(found.unwrap().token, "abc");
        // A non-ASCII space stays in the token, which then fails to parse: never silently cut.
        let found = run(&[bearer()], &[("authorization", "Bearer abc\u{a0}")], None).unwrap();
        assert_eq!(found.unwrap().token, "abc\u{a0}");
    }

    #[test]
    fn other_scheme_is_no_token() {
        assert_eq!(
            run(&[bearer()], &[("authorization", "Basic abc")], None),
            Ok(None)
        );
        assert_eq!(
            run(&[bearer()], &[("authorization", "Bearerabc")], None),
            Ok(None)
        );
        assert_eq!(
            run(&[bearer()], &[("authorization", "Bearer ")], None),
            Ok(None)
        );
    }

    #[test]
    fn bare_header_takes_whole_value() {
        let source = TokenSource::Header {
            name: "x-ml-token".into(),
        };
        let found = run(&[source], &[("x-ml-token", "abc")], None).unwrap();
        assert_eq!(found.unwrap().token, "abc");
    }

    #[test]
    fn query_parameter_is_found() {
        let source = TokenSource::Query {
            name: "access_token".into(),
        };
        let found = run(&[source], &[], Some("a=1&access_token=abc")).unwrap();
        assert_eq!(found.unwrap().token, "abc");
    }

    #[test]
    fn repeated_query_parameter_is_multiple_tokens() {
        let source = TokenSource::Query {
            name: "access_token".into(),
        };
        let result = run(&[source], &[], Some("access_token=a&access_token=b"));
        assert_eq!(result, Err(Reason::MultipleTokens));
    }

    #[test]
    fn cookie_is_found_among_others() {
        let source = TokenSource::Cookie {
            name: "session".into(),
        };
        let found = run(&[source], &[("cookie", "a=1; session=abc; b=2")], None).unwrap();
        assert_eq!(found.unwrap().token, "abc");
    }

    #[test]
    fn token_in_header_and_query_is_multiple_tokens() {
        let sources = [
            bearer(),
            TokenSource::Query {
                name: "access_token".into(),
            },
        ];
        let result = run(
            &sources,
            &[("authorization", "Bearer a")],
            Some("access_token=a"),
        );
        assert_eq!(result, Err(Reason::MultipleTokens));
    }

    #[test]
    fn joined_repeated_header_is_found_as_one_joined_value() {
        let result = run(&[bearer()], &[("authorization", "Bearer a,Bearer b")], None);
        let found = result.ok().flatten();
        assert_eq!(found.as_ref().map(|f| f.token.as_ref()), Some("a,Bearer b"));
        assert!(found.is_some_and(|f| f.is_joined()));
    }

    #[test]
    fn a_single_token_is_not_joined() {
        let result = run(&[bearer()], &[("authorization", "Bearer a.b.c")], None);
        assert!(result.ok().flatten().is_some_and(|f| !f.is_joined()));
    }

    #[test]
    fn oversized_token_is_refused_unparsed() {
        let big = format!("Bearer {}", "a".repeat(101));
        assert_eq!(
            run(&[bearer()], &[("authorization", &big)], None),
            Err(Reason::TokenTooLarge)
        );
    }

    #[test]
    fn no_source_present_is_no_token() {
        assert_eq!(run(&[bearer()], &[], None), Ok(None));
    }
}
