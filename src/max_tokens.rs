//! The completion-token limit an OpenAI-style request body declares (`max_tokens`, or its newer
//! name `max_completion_tokens`), forwarded as a header (`forward.max_tokens`) so that Envoy's
//! rate-limit filters can charge an LLM-token budget by it (`hits_addend` from the header); mlgate
//! counts nothing itself.
//!
//! A budget is only as strong as the reading of the number: a body the model server reads as a
//! larger limit than the one charged gets tokens for free. So the number is taken only when there
//! is one way to read it — a JSON integer literal (no fraction, no exponent, no string) from 1 to
//! [`BOUND`], in a strict JSON object with no repeated top-level key and no other
//! key that case-folds to either name (Go's `encoding/json` would read it) — and anything else is
//! refused. When both names are given, the larger is charged: servers differ in which one wins.
//! `null` or no such key declares nothing: the server's own default applies, which the budget
//! cannot know, so nothing is charged (envoy/README.md says how to cover such requests).

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::model::folds_to;
use crate::strict_json::{KeySeed, SeenKeys};

/// The body keys that declare the limit.
pub const FIELDS: [&str; 2] = ["max_tokens", "max_completion_tokens"];

/// The largest limit forwarded: Envoy's own bound on a `hits_addend` read from a header. Envoy
/// ignores a larger one — the request would be charged nothing — so mlgate refuses it instead.
/// The smallest is 1: model servers refuse 0 (vLLM: "at least 1"), and Envoy 1.40's
/// `local_ratelimit` answers a `hits_addend` of 0 with 429 whatever the bucket holds.
pub const BOUND: u64 = 1_000_000_000;

/// Why a body's limit cannot be charged as the model server will read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxTokensError {
    /// Not strict JSON, not an object, or a limit that is not an integer in `1..=BOUND`.
    Unreadable,
    /// A repeated top-level key, or another spelling of a limit's name.
    Ambiguous,
}

/// The limit the body declares: `Ok(None)` when it declares none (no key, `null`, or an empty
/// body).
pub fn from_json_body(body: &[u8]) -> Result<Option<u64>, MaxTokensError> {
    if body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(None);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let read = TopLevel
        .deserialize(&mut deserializer)
        .map_err(|_| MaxTokensError::Unreadable)?;
    deserializer.end().map_err(|_| MaxTokensError::Unreadable)?;
    if read.ambiguous {
        return Err(MaxTokensError::Ambiguous);
    }
    let mut declared = None;
    for value in read.values.into_iter().flatten() {
        let limit = match value {
            Value::Null => continue,
            Value::Number(n) => n
                .as_u64()
                .filter(|n| (1..=BOUND).contains(n))
                .ok_or(MaxTokensError::Unreadable)?,
            _ => return Err(MaxTokensError::Unreadable),
        };
        declared = Some(declared.map_or(limit, |other: u64| other.max(limit)));
    }
    Ok(declared)
}

struct TopLevelRead {
    /// The values of [`FIELDS`], in order.
    values: [Option<Value>; 2],
    ambiguous: bool,
}

struct TopLevel;

impl<'de> DeserializeSeed<'de> for TopLevel {
    type Value = TopLevelRead;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TopLevelRead, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel {
    type Value = TopLevelRead;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<TopLevelRead, A::Error> {
        let mut read = TopLevelRead {
            values: [None, None],
            ambiguous: false,
        };
        let mut seen = SeenKeys::default();
        while let Some(key) = access.next_key_seed(KeySeed)? {
            let name = key.as_str();
            let slot = FIELDS.iter().position(|field| *field == name);
            if slot.is_none() && FIELDS.iter().any(|field| folds_to(name, field)) {
                read.ambiguous = true;
            }
            seen.push(key);
            match slot.and_then(|at| read.values.get_mut(at)) {
                Some(value) => *value = Some(access.next_value::<Value>()?),
                None => {
                    access.next_value::<IgnoredAny>()?;
                }
            }
        }
        read.ambiguous |= seen.any_repeated();
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Option<u64>, MaxTokensError> {
        from_json_body(text.as_bytes())
    }

    #[test]
    fn an_integer_limit_is_read() {
        assert_eq!(read(r#"{"model":"m","max_tokens":256}"#), Ok(Some(256)));
        assert_eq!(read(r#"{"max_completion_tokens":1}"#), Ok(Some(1)));
        assert_eq!(read(r#"{"max_tokens":1000000000}"#), Ok(Some(BOUND)));
    }

    #[test]
    fn an_escaped_key_is_read_as_the_server_reads_it() {
        assert_eq!(read(r#"{"max_tok\u0065ns":7}"#), Ok(Some(7)));
    }

    #[test]
    fn both_names_charge_the_larger() {
        assert_eq!(
            read(r#"{"max_tokens":10,"max_completion_tokens":300}"#),
            Ok(Some(300))
        );
        assert_eq!(
            read(r#"{"max_completion_tokens":5,"max_tokens":40}"#),
            Ok(Some(40))
        );
        assert_eq!(
            read(r#"{"max_completion_tokens":null,"max_tokens":40}"#),
            Ok(Some(40))
        );
    }

    #[test]
    fn no_limit_or_null_declares_none() {
        assert_eq!(read(r#"{"model":"m","messages":[]}"#), Ok(None));
        assert_eq!(read(r#"{"max_tokens":null}"#), Ok(None));
        assert_eq!(read(""), Ok(None));
        assert_eq!(read(" \n"), Ok(None));
        // Only top-level keys declare: a nested one is the content of something else.
        assert_eq!(read(r#"{"options":{"max_tokens":5}}"#), Ok(None));
    }

    #[test]
    fn a_limit_that_is_not_a_bounded_integer_literal_is_unreadable() {
        for text in [
            r#"{"max_tokens":"256"}"#,
            r#"{"max_tokens":256.0}"#,
            r#"{"max_tokens":2.56e2}"#,
            r#"{"max_tokens":-1}"#,
            r#"{"max_tokens":0}"#,
            r#"{"max_tokens":1000000001}"#,
            r#"{"max_tokens":18446744073709551616}"#,
            r#"{"max_tokens":true}"#,
            r#"{"max_tokens":[256]}"#,
            r#"{"max_completion_tokens":{"n":1}}"#,
        ] {
            assert_eq!(read(text), Err(MaxTokensError::Unreadable), "{text}");
        }
    }

    #[test]
    fn a_body_that_is_not_one_strict_json_object_is_unreadable() {
        for text in [
            r#"["max_tokens",5]"#,
            r#"{"max_tokens":5} trailing"#,
            r#"{"max_tokens":5,"t":NaN}"#,
            "\u{feff}{\"max_tokens\":5}",
            "{\"max_tokens\":5",
        ] {
            assert_eq!(read(text), Err(MaxTokensError::Unreadable), "{text:?}");
        }
    }

    #[test]
    fn a_repeated_key_or_another_spelling_is_ambiguous() {
        for text in [
            r#"{"max_tokens":5,"max_tokens":5000}"#,
            r#"{"max_tokens":5,"max_tok\u0065ns":5000}"#,
            r#"{"max_tokens":5,"Max_Tokens":5000}"#,
            r#"{"MAX_COMPLETION_TOKENS":5000}"#,
            r#"{"model":"a","model":"b","max_tokens":5}"#,
        ] {
            assert_eq!(read(text), Err(MaxTokensError::Ambiguous), "{text}");
        }
    }
}
