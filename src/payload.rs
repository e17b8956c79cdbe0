//! A JSON object from a token (its JWS header or its claims), read once into an index of its
//! top-level members; a member's value is decoded only when it is asked for.
//!
//! Why not a `serde_json::Map`: before the signature is checked only a handful of claims are
//! read (`iss`, `aud`, `exp`, `nbf`, `iat`, the tenant), and a forged token never gets further.
//! Building the whole map — a `String` for every key and string, a tree node for every member —
//! was the larger part of reading a token, and every forged or refused token paid for it.
//!
//! Strict as [`crate::strict_json`]: the text must be one JSON object, and no object at any depth
//! may repeat a key (two `iss` members are read differently by different parsers).

use std::ops::Range;

use serde_json::{Map, Value};

use crate::strict_json::{self, Key};

/// One top-level member: its name and where its value's text lies.
#[derive(Clone, Debug)]
struct Member {
    name: Name,
    value: Range<usize>,
}

#[derive(Clone, Debug)]
enum Name {
    /// Where the name lies in the text (the usual case: no escapes).
    At(Range<usize>),
    /// A name that had escapes, unescaped.
    Unescaped(Box<str>),
}

/// A JSON object read into an index of its members.
#[derive(Clone, Debug)]
pub struct Payload {
    json: String,
    members: Vec<Member>,
}

/// Not a strict JSON object.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAnObject;

impl Payload {
    /// Reads `bytes` as one JSON object whose keys are unique at every depth.
    pub fn parse(bytes: Vec<u8>) -> Result<Payload, NotAnObject> {
        let json = String::from_utf8(bytes).map_err(|_| NotAnObject)?;
        let members = index(&json).ok_or(NotAnObject)?;
        Ok(Payload { json, members })
    }

    /// The value of the member `name`, decoded.
    pub fn get(&self, name: &str) -> Option<Value> {
        let text = self.raw(name)?;
        serde_json::from_slice(text.as_bytes()).ok()
    }

    /// Whether the object has a member `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    /// The whole object, decoded (tests and tools; the gate reads members one by one).
    pub fn to_map(&self) -> Map<String, Value> {
        self.members
            .iter()
            .filter_map(|member| {
                let name = self.name(member)?;
                let text = self.json.get(member.value.clone())?;
                let value = serde_json::from_slice(text.as_bytes()).ok()?;
                Some((name.to_string(), value))
            })
            .collect()
    }

    fn raw(&self, name: &str) -> Option<&str> {
        let member = self
            .members
            .iter()
            .find(|member| self.name(member) == Some(name))?;
        self.json.get(member.value.clone())
    }

    fn name<'p>(&'p self, member: &'p Member) -> Option<&'p str> {
        member_name(&self.json, member)
    }
}

fn member_name<'p>(json: &'p str, member: &'p Member) -> Option<&'p str> {
    match &member.name {
        Name::At(at) => json.get(at.clone()),
        Name::Unescaped(name) => Some(name),
    }
}

/// The members of the object `json`, or `None` when it is not a strict JSON object.
///
/// The boundaries are found by hand because serde cannot report where a value lies without
/// serde_json's `raw_value` feature, which costs ~20 KB of .wasm (a second instance of its parser).
/// The scan only finds boundaries — strings with their escapes, brackets by depth, scalars up to
/// the next delimiter — and serde_json then reads every name and every value, so everything this
/// accepts is valid JSON: a wrong boundary fails that reading instead of changing a value.
fn index(json: &str) -> Option<Vec<Member>> {
    let bytes = json.as_bytes();
    let mut members: Vec<Member> = Vec::with_capacity(24);
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            let name_at = at..string_end(bytes, at)?;
            at = skip_whitespace(bytes, name_at.end);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at = skip_whitespace(bytes, at + 1);
            let value_at = at..value_end(bytes, at)?;
            at = skip_whitespace(bytes, value_at.end);

            let quoted_name = json.get(name_at.clone())?;
            let name = match plain_string(quoted_name) {
                Some(plain) => Key::Borrowed(plain),
                None => strict_json::key(quoted_name)?,
            };
            if members
                .iter()
                .any(|seen| member_name(json, seen) == Some(name.as_str()))
            {
                return None;
            }
            let value = json.get(value_at.clone())?;
            let obviously_valid =
                plain_string(value).is_some() || matches!(value, "true" | "false" | "null");
            if !obviously_valid && !strict_json::has_unique_keys(value) {
                return None;
            }
            let name = match name {
                // Borrowed only without escapes: the name is the text between the quotes.
                Key::Borrowed(_) => Name::At(name_at.start + 1..name_at.end - 1),
                Key::Owned(unescaped) => Name::Unescaped(unescaped.into()),
            };
            members.push(Member {
                name,
                value: value_at,
            });

            match bytes.get(at) {
                Some(b',') => at = skip_whitespace(bytes, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_whitespace(bytes, at) == bytes.len()).then_some(members)
}

/// The text of a quoted JSON string that needs no unescaping (the usual claim name or value),
/// read without serde: no escapes, no control characters. `None` for anything else.
fn plain_string(quoted: &str) -> Option<&str> {
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    inner
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\')
        .then_some(inner)
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Just past the closing quote of the string that opens at `at`.
fn string_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    loop {
        match bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// Just past the value that starts at `at`.
fn value_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            loop {
                match bytes.get(at)? {
                    b'"' => {
                        at = string_end(bytes, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let start = at;
            while !matches!(
                bytes.get(at),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                at += 1;
            }
            (at > start).then_some(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Payload, NotAnObject> {
        Payload::parse(text.as_bytes().to_vec())
    }

    #[test]
    fn a_member_is_decoded_when_asked_for() {
        let payload = parse(r#"{"iss":"https://idp","exp":1700000000,"aud":["a","b"]}"#).unwrap();
        assert_eq!(payload.get("iss"), Some(json!("https://idp")));
        assert_eq!(payload.get("exp"), Some(json!(1700000000)));
        assert_eq!(payload.get("aud"), Some(json!(["a", "b"])));
    }

    #[test]
    fn an_absent_member_is_none() {
        let payload = parse(r#"{"iss":"x"}"#).unwrap();
        assert_eq!(payload.get("sub"), None);
        assert!(!payload.contains("sub"));
        assert!(payload.contains("iss"));
    }

    #[test]
    fn a_null_member_is_present() {
        let payload = parse(r#"{"kid":null}"#).unwrap();
        assert_eq!(payload.get("kid"), Some(Value::Null));
    }

    #[test]
    fn an_escaped_name_is_found_by_its_unescaped_name() {
        let payload = parse(r#"{"\u0069ss":"x","https:\/\/example.com\/groups":["g"]}"#).unwrap();
        assert_eq!(payload.get("iss"), Some(json!("x")));
        assert_eq!(
            payload.get("https://example.com/groups"),
            Some(json!(["g"]))
        );
    }

    #[test]
    fn a_repeated_top_level_name_is_refused() {
        assert_eq!(parse(r#"{"iss":"a","iss":"b"}"#).unwrap_err(), NotAnObject);
    }

    #[test]
    fn a_name_repeated_through_an_escape_is_refused() {
        assert_eq!(
            parse(r#"{"iss":"a","\u0069ss":"b"}"#).unwrap_err(),
            NotAnObject
        );
    }

    #[test]
    fn a_repeated_name_nested_at_any_depth_is_refused() {
        assert!(parse(r#"{"x":{"k":1,"k":2}}"#).is_err());
        assert!(parse(r#"{"x":[[{"a":{"k":1,"k":2}}]]}"#).is_err());
    }

    #[test]
    fn anything_but_one_object_is_refused() {
        for text in [
            "[]",
            "1",
            "\"s\"",
            "null",
            "{",
            r#"{"a":1} x"#,
            r#"{"a":1}{}"#,
            "",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn brackets_quotes_and_escapes_inside_strings_do_not_end_a_value() {
        let text = r#"{"a":["]}\"{",{"b":"}"}],"c":"x\\","d":"\"}"}"#;
        let payload = parse(text).unwrap();
        assert_eq!(payload.get("a"), Some(json!(["]}\"{", {"b": "}"}])));
        assert_eq!(payload.get("c"), Some(json!("x\\")));
        assert_eq!(payload.get("d"), Some(json!("\"}")));
    }

    #[test]
    fn whitespace_around_every_token_is_allowed() {
        let text = " \t\r\n{ \"a\" :\n1 , \"b\":[ 1 , 2 ] ,\"c\" : true }\n ";
        let payload = parse(text).unwrap();
        assert_eq!(payload.get("a"), Some(json!(1)));
        assert_eq!(payload.get("b"), Some(json!([1, 2])));
        assert_eq!(payload.get("c"), Some(json!(true)));
    }

    #[test]
    fn an_empty_object_has_no_members() {
        assert_eq!(parse(" { } ").unwrap().to_map(), Map::new());
    }

    #[test]
    fn malformed_members_are_refused() {
        for text in [
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{,}"#,
            r#"{"a":tru}"#,
            r#"{"a":[1,}"#,
            r#"{"a":[1}]}"#,
            r#"{"a":01}"#,
            r#"{"a":1 2}"#,
            r#"{a:1}"#,
            r#"{"a":"x}"#,
            r#"{"a":"\x"}"#,
            r#"{"a\":1}"#,
            r#"{"a":1}}"#,
            r#"{"a":{"b":1}"#,
            "{\"a\":\"tab\there\"}",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn invalid_utf8_is_refused() {
        assert!(Payload::parse(b"{\"a\":\"\xff\"}".to_vec()).is_err());
    }

    #[test]
    fn the_whole_object_decodes_as_serde_json_reads_it() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":{"d":"e"},"f":"\u00e9"}"#;
        let payload = parse(text).unwrap();
        let expected: Map<String, Value> = serde_json::from_str(text).unwrap();
        assert_eq!(payload.to_map(), expected);
    }

    #[test]
    fn absurd_depth_is_refused_without_overflowing() {
        let deep = format!("{{\"a\":{}}}", "[".repeat(100_000));
        assert!(parse(&deep).is_err());
    }
}
