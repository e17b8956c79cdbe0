//! Where a token comes from: an `Authorization`-style header with a scheme, a bare header,
//! a query parameter or a cookie.
//!
//! Extraction decides only "which bytes are the token". It never parses them, and it refuses
//! ambiguity: two tokens on one request (from two sources, or twice from one) are refused, as is
//! a token over the size limit — both before anything looks inside.

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

/// A token found on a request, with the index of the source (in the policy's source list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundToken {
    pub token: String,
    pub source: usize,
}

/// Looks in every source. `header` returns the value of a request header by lower-case name
/// (Envoy joins repeated headers with `,`, which this treats as two tokens); `query` is the part
/// of the path after `?`, if any.
pub fn extract(
    sources: &[TokenSource],
    header: &dyn Fn(&str) -> Option<String>,
    query: Option<&str>,
    max_bytes: usize,
) -> Result<Option<FoundToken>, Reason> {
    let mut found: Option<FoundToken> = None;
    for (index, source) in sources.iter().enumerate() {
        for token in candidates(source, header, query) {
            if found.is_some() {
                return Err(Reason::MultipleTokens);
            }
            found = Some(FoundToken {
                token,
                source: index,
            });
        }
    }
    match found {
        Some(found) if found.token.len() > max_bytes => Err(Reason::TokenTooLarge),
        Some(found) if found.token.contains(',') => Err(Reason::MultipleTokens),
        other => Ok(other),
    }
}

fn candidates(
    source: &TokenSource,
    header: &dyn Fn(&str) -> Option<String>,
    query: Option<&str>,
) -> Vec<String> {
    match source {
        TokenSource::HeaderWithScheme { name, scheme } => header(name)
            .and_then(|value| strip_scheme(&value, scheme).map(str::to_string))
            .into_iter()
            .collect(),
        TokenSource::Header { name } => header(name)
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
            .into_iter()
            .collect(),
        TokenSource::Query { name } => query
            .map(|query| {
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                    .filter(|(key, value)| key == name && !value.is_empty())
                    .map(|(_, value)| value.to_string())
                    .collect()
            })
            .unwrap_or_default(),
        TokenSource::Cookie { name } => header("cookie")
            .map(|cookies| {
                cookies
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .filter(|(key, value)| key == name && !value.is_empty())
                    .map(|(_, value)| value.to_string())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// `Bearer abc` → `abc` for scheme `Bearer` (any case). A value with another scheme is not a
/// token for this source: `Basic …` on `Authorization` is simply no bearer token.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let value = value.trim();
    let head = value.get(..scheme.len())?;
    if !head.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = value.get(scheme.len()..)?;
    let token = rest.strip_prefix(' ')?.trim_start_matches(' ');
    if token.is_empty() {
        None
    } else {
        Some(token)
    }
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
    ) -> Result<Option<FoundToken>, Reason> {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        extract(sources, &|name| map.get(name).cloned(), query, 100)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc"] {
            let found = run(&[bearer()], &[("authorization", value)], None).unwrap();
            assert_eq!(found.unwrap().token, "abc");
        }
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
    fn joined_repeated_header_is_multiple_tokens() {
        let result = run(&[bearer()], &[("authorization", "Bearer a,Bearer b")], None);
        assert_eq!(result, Err(Reason::MultipleTokens));
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
