//! A JSON object from a token (its JWS header or its claims), read once into an index of its
//! top-level members; a member's value is decoded only when it is asked for.
//!
//! Why not a `serde_json::Map`: before the signature is checked only a handful of claims are
//! read (`iss`, `aud`, `exp`, `nbf`, `iat`, the tenant), and a forged token never gets further.
//! Building the whole map — a `String` for every key and string, a tree node for every member —
//! was the larger part of reading a token, and every forged or refused token paid for it.
//!
//! Strict as [`crate::strict_json`]: the text must be one JSON object of at most [`MAX_MEMBERS`]
//! members, none repeated, and no object at any depth may repeat a key (two `iss` members are read
//! differently by different parsers). The top level is checked when the object is read; a
//! member's nested objects when the member is decoded, and all of them by
//! [`Payload::nested_keys_unique`], which the verifier calls once the signature holds: a forged
//! token pays for scanning its nested objects, never for checking them.

use std::ops::Range;

use serde_json::{Map, Value};

use crate::bytes;
use crate::strict_json::{self, Key};

/// The most members one object may have: far more than any identity provider puts in a token
/// (Entra's have a few dozen), and a bound on what an unsigned token can make the index do.
pub const MAX_MEMBERS: usize = 256;

/// One top-level member: its name and where its value's text lies.
#[derive(Clone, Debug)]
struct Member {
    name: Name,
    /// [`NameKey`] of the name.
    key: NameKey,
    value: Range<usize>,
    kind: Kind,
}

/// What the scan learnt of a value: the common kinds are known valid and decoded without serde.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A string without escapes or control characters.
    PlainString,
    /// `-?(0|[1-9][0-9]*)`.
    Integer,
    /// `true`, `false`, `null`.
    Literal,
    /// An array of plain strings (`groups`, `roles`, `aud`): no object in it, so no key to
    /// repeat, and decoded without serde.
    PlainStringArray,
    /// Anything else: read by serde.
    Other,
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
        self.decode(self.member(name)?)
    }

    /// The JSON text of the member `name`, when it decodes (so that it is valid JSON).
    pub fn raw(&self, name: &str) -> Option<&str> {
        let member = self.member(name)?;
        self.decode(member)?;
        self.json.get(member.value.clone())
    }

    /// Whether the object has a member `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.member(name).is_some()
    }

    /// Whether any member is an object or an array other than a list of plain strings.
    pub fn has_nested_values(&self) -> bool {
        self.members.iter().any(|member| {
            member.kind == Kind::Other
                && matches!(
                    self.json.as_bytes().get(member.value.start),
                    Some(b'{' | b'[')
                )
        })
    }

    /// Whether no object nested in a member repeats a key (and every such member is valid JSON).
    /// [`Payload::parse`] checks the top level only, so that a forged token's nested objects cost
    /// a scan for their boundaries, not a check of their keys: the verifier calls this once the
    /// signature holds, before any claim is trusted, and a member read before that is checked
    /// when it is decoded.
    pub fn nested_keys_unique(&self) -> bool {
        self.members.iter().all(|member| {
            member.kind != Kind::Other
                || self
                    .json
                    .get(member.value.clone())
                    .is_some_and(strict_json::has_unique_keys)
        })
    }

    /// The whole object, decoded (tests and tools; the gate reads members one by one).
    pub fn to_map(&self) -> Map<String, Value> {
        self.members
            .iter()
            .filter_map(|member| {
                let name = member_name(&self.json, &member.name)?;
                Some((name.to_string(), self.decode(member)?))
            })
            .collect()
    }

    fn member(&self, name: &str) -> Option<&Member> {
        let key = NameKey::of(name.as_bytes());
        self.members
            .iter()
            .find(|member| is_named(&self.json, member, key, name))
    }

    fn decode(&self, member: &Member) -> Option<Value> {
        let text = self.json.get(member.value.clone())?;
        let fast = match member.kind {
            Kind::PlainString => text.get(1..text.len() - 1).map(Value::from),
            Kind::Integer => text.parse::<i64>().ok().map(Value::from),
            Kind::PlainStringArray => Some(Value::Array(plain_strings(text))),
            Kind::Literal | Kind::Other => None,
        };
        // Integers beyond i64 and everything else as serde_json reads them, once its nested
        // objects are known to repeat no key (serde_json would keep the last of two).
        fast.or_else(|| {
            if member.kind == Kind::Other && !strict_json::has_unique_keys(text) {
                return None;
            }
            serde_json::from_slice(text.as_bytes()).ok()
        })
    }
}

/// A name's length and first seven bytes in one word. Names whose keys differ differ; names
/// shorter than eight bytes (nearly every registered claim) are equal exactly when their keys are.
/// A token's claims are looked up by name a score of times, each a scan of a dozen members: one
/// word comparison per member instead of a length check and a byte comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NameKey(u64);

impl NameKey {
    fn of(name: &[u8]) -> NameKey {
        let mut word = [0u8; 8];
        let prefix = name.get(..7).unwrap_or(name);
        if let Some(slots) = word.get_mut(..prefix.len()) {
            slots.copy_from_slice(prefix);
        }
        word[7] = u8::try_from(name.len()).unwrap_or(u8::MAX);
        NameKey(u64::from_le_bytes(word))
    }

    /// Whether equal keys mean equal names.
    fn is_whole(name: &[u8]) -> bool {
        name.len() < 8
    }
}

/// Whether `member` is named `wanted`, whose key is `key`. Inlined: a call per member scanned
/// cost more than the comparison.
#[inline(always)]
fn is_named(json: &str, member: &Member, key: NameKey, wanted: &str) -> bool {
    member.key == key
        && (NameKey::is_whole(wanted.as_bytes())
            || member_name(json, &member.name)
                .is_some_and(|name| bytes::same_bytes(name.as_bytes(), wanted.as_bytes())))
}

fn member_name<'p>(json: &'p str, name: &'p Name) -> Option<&'p str> {
    match name {
        Name::At(at) => json.get(at.clone()),
        Name::Unescaped(name) => Some(name),
    }
}

/// The members of the object `json`, or `None` when it is not a strict JSON object.
///
/// The boundaries are found by hand because serde cannot report where a value lies without
/// serde_json's `raw_value` feature, which costs ~20 KB of .wasm (a second instance of its parser).
/// The scan only finds boundaries — strings with their escapes, brackets by depth, scalars up to
/// the next delimiter — and recognises what is plainly valid (strings without escapes or control
/// characters, integers, `true`/`false`/`null`); serde_json reads every other name and scalar
/// now, and every object or array when it is decoded or checked (`nested_keys_unique`), so
/// nothing invalid is ever read as a value: a wrong boundary fails that reading instead of
/// changing a value.
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
            let (name_end, plain_name) = string_end(bytes, at)?;
            let name_at = at..name_end;
            at = skip_whitespace(bytes, name_end);
            if bytes.get(at) != Some(&b':') {
                return None;
            }
            at = skip_whitespace(bytes, at + 1);
            let (value_end, kind) = value_end(bytes, at)?;
            let value_at = at..value_end;
            at = skip_whitespace(bytes, value_end);

            // Borrowed only without escapes: the name is the text between the quotes.
            let inner = name_at.start + 1..name_at.end - 1;
            let name = if plain_name {
                Name::At(inner)
            } else {
                match strict_json::key(json.get(name_at)?)? {
                    Key::Borrowed(_) => Name::At(inner),
                    Key::Owned(unescaped) => Name::Unescaped(unescaped.into()),
                }
            };
            let new_name = member_name(json, &name)?;
            let key = NameKey::of(new_name.as_bytes());
            // A repeat among the dozen-odd claims of a real token is found by a scan as each
            // name is read; a larger object is checked once, sorted, when it is complete.
            if members.len() < strict_json::SCAN_LIMIT
                && members
                    .iter()
                    .any(|seen| is_named(json, seen, key, new_name))
            {
                return None;
            }
            if members.len() == MAX_MEMBERS {
                return None;
            }
            // A scalar must be valid JSON now. An object or array is only scanned for its end
            // here: its syntax and its keys are checked when it is decoded, or by
            // `nested_keys_unique` once the signature holds — an unsigned token's nested
            // objects cost a forgery nothing but that scan.
            let nested = matches!(bytes.get(value_at.start), Some(b'{' | b'['));
            if kind == Kind::Other && !nested && !strict_json::is_json(json.get(value_at.clone())?)
            {
                return None;
            }
            members.push(Member {
                name,
                key,
                value: value_at,
                kind,
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
    if members.len() > strict_json::SCAN_LIMIT
        && strict_json::any_repeated(
            members
                .iter()
                .map(|m| member_name(json, &m.name).unwrap_or_default()),
        )
    {
        return None;
    }
    (skip_whitespace(bytes, at) == bytes.len()).then_some(members)
}

pub(crate) fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Just past the closing quote of the string that opens at `at`, and whether the string is
/// plain: no escapes and no control characters, so its text is valid JSON and its own value.
pub(crate) fn string_end(bytes: &[u8], mut at: usize) -> Option<(usize, bool)> {
    at += 1;
    let mut plain = true;
    loop {
        at = bytes::json_string_stop(bytes, at);
        match *bytes.get(at)? {
            b'"' => return Some((at + 1, plain)),
            b'\\' => {
                plain = false;
                at += 2;
            }
            _control => {
                plain = false;
                at += 1;
            }
        }
    }
}

/// Just past the value that starts at `at`, and what kind of value it is.
fn value_end(bytes: &[u8], mut at: usize) -> Option<(usize, Kind)> {
    match bytes.get(at)? {
        b'"' => {
            let (end, plain) = string_end(bytes, at)?;
            Some((
                end,
                if plain {
                    Kind::PlainString
                } else {
                    Kind::Other
                },
            ))
        }
        b'{' | b'[' => {
            if let Some(end) = plain_string_array_end(bytes, at) {
                return Some((end, Kind::PlainStringArray));
            }
            let mut depth = 0usize;
            loop {
                match bytes.get(at)? {
                    b'"' => {
                        at = string_end(bytes, at)?.0;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some((at + 1, Kind::Other));
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
            let text = bytes.get(start..at)?;
            let kind = match text {
                [] => return None,
                b"true" | b"false" | b"null" => Kind::Literal,
                _ if is_plain_integer(text) => Kind::Integer,
                _ => Kind::Other,
            };
            Some((at, kind))
        }
    }
}

/// Just past the array that opens at `at` if it holds nothing but plain strings (see
/// [`string_end`]); `None` for any other array.
fn plain_string_array_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'[') {
        return None;
    }
    let mut at = skip_whitespace(bytes, at + 1);
    if bytes.get(at) == Some(&b']') {
        return Some(at + 1);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let (end, plain) = string_end(bytes, at)?;
        if !plain {
            return None;
        }
        at = skip_whitespace(bytes, end);
        match bytes.get(at)? {
            b',' => at = skip_whitespace(bytes, at + 1),
            b']' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// The strings of an array that [`plain_string_array_end`] accepted: each is the text between
/// a pair of quotes, since a plain string holds no quote.
fn plain_strings(text: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut rest = text;
    while let Some((_, opened)) = rest.split_once('"') {
        let Some((item, after)) = opened.split_once('"') else {
            break;
        };
        items.push(Value::from(item));
        rest = after;
    }
    items
}

/// JSON's integer grammar, `-?(0|[1-9][0-9]*)`, but not `-0` (serde_json reads that as the
/// float -0.0): the NumericDates, read without serde.
fn is_plain_integer(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    match digits {
        [b'0'] => text.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
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
    fn long_names_sharing_their_length_and_first_seven_bytes_are_told_apart() {
        let payload =
            parse(r#"{"https://a.example/groups":["a"],"https://b.example/groups":["b"]}"#)
                .unwrap();
        assert_eq!(payload.get("https://a.example/groups"), Some(json!(["a"])));
        assert_eq!(payload.get("https://b.example/groups"), Some(json!(["b"])));
        assert_eq!(payload.get("https://c.example/groups"), None);
        let (long_a, long_b) = ("x".repeat(299) + "a", "x".repeat(299) + "b");
        let text = format!(r#"{{"{long_a}":1,"{long_b}":2}}"#);
        let payload = parse(&text).unwrap();
        assert_eq!(payload.get(&long_a), Some(json!(1)));
        assert_eq!(payload.get(&long_b), Some(json!(2)));
        assert_eq!(payload.get(&"x".repeat(300)), None);
        let repeated = format!(r#"{{"{long_a}":1,"{long_a}":2}}"#);
        assert_eq!(parse(&repeated).unwrap_err(), NotAnObject);
    }

    #[test]
    fn short_names_differing_only_in_length_or_a_nul_are_told_apart() {
        let payload = parse(r#"{"a":1,"a\u0000":2,"ab":3}"#).unwrap();
        assert_eq!(payload.get("a"), Some(json!(1)));
        assert_eq!(payload.get("a\0"), Some(json!(2)));
        assert_eq!(payload.get("ab"), Some(json!(3)));
        assert_eq!(payload.get(""), None);
    }

    #[test]
    fn a_repeated_top_level_name_is_refused() {
        assert_eq!(parse(r#"{"iss":"a","iss":"b"}"#).unwrap_err(), NotAnObject);
    }

    #[test]
    fn hundreds_of_distinct_names_are_indexed_and_a_late_repeat_is_refused() {
        let mut text = String::from("{");
        for i in 0..MAX_MEMBERS - 2 {
            text.push_str(&format!("\"c{i}\":{i},"));
        }
        text.push_str("\"iss\":\"x\"}");
        let payload = parse(&text).unwrap();
        assert_eq!(payload.get("c253"), Some(Value::from(253)));
        text.insert_str(text.len() - 1, ",\"c7\":0");
        assert!(parse(&text).is_err());
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
        for text in [r#"{"x":{"k":1,"k":2}}"#, r#"{"x":[[{"a":{"k":1,"k":2}}]]}"#] {
            let payload = parse(text).unwrap();
            assert!(!payload.nested_keys_unique(), "{text}");
            assert_eq!(payload.get("x"), None, "{text}");
        }
        assert!(parse(r#"{"x":{"k":1},"y":[{"k":2}]}"#)
            .unwrap()
            .nested_keys_unique());
    }

    #[test]
    fn more_members_than_any_token_has_are_refused() {
        let members = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("\"c{i}\":0")).collect();
            format!("{{{}}}", list.join(","))
        };
        assert!(parse(&members(MAX_MEMBERS)).is_ok());
        assert!(parse(&members(MAX_MEMBERS + 1)).is_err());
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
    fn numbers_decode_as_serde_json_reads_them() {
        for number in [
            "0",
            "-0",
            "7",
            "-7",
            "1795690283",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "1e3",
            "-0.0",
        ] {
            let text = format!(r#"{{"n":{number}}}"#);
            let expected: Map<String, Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(
                parse(&text).unwrap().get("n").as_ref(),
                expected.get("n"),
                "{number}"
            );
        }
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
    fn arrays_decode_as_serde_json_reads_them() {
        for array in [
            r#"[]"#,
            r#"[ ]"#,
            r#"[""]"#,
            r#"["ml-scientists","llm-users"]"#,
            r#"[ "a" , "b" ,"c"]"#,
            r#"["ünï ✓", "x"]"#,
            r#"["esc\"aped", "b"]"#,
            r#"["a", 1, null, true]"#,
            r#"[["a"], "b"]"#,
            r#"[{"k": "v"}, "b"]"#,
            r#"["a", "a"]"#,
        ] {
            let payload = parse(&format!(r#"{{"groups":{array}}}"#)).unwrap();
            let expected: Value = serde_json::from_str(array).unwrap();
            assert_eq!(payload.get("groups"), Some(expected), "{array}");
        }
    }

    /// Refused at parse when the scan sees it, else when read: never decoded, never "valid".
    fn assert_never_read(text: &str) {
        match parse(text) {
            Err(NotAnObject) => {}
            Ok(payload) => {
                assert_eq!(payload.get("groups"), None, "{text}");
                assert!(!payload.nested_keys_unique(), "{text}");
            }
        }
    }

    #[test]
    fn malformed_arrays_are_refused() {
        for array in [
            r#"["a",]"#,
            r#"[,"a"]"#,
            r#"["a" "b"]"#,
            r#"["a"}"#,
            r#"["a""#,
            r#"["#,
        ] {
            assert_never_read(&format!(r#"{{"groups":{array}}}"#));
        }
    }

    #[test]
    fn an_object_is_never_read_as_an_array() {
        assert_never_read(r#"{"groups":{"a","b"]}"#);
        assert_eq!(
            parse(r#"{"groups":{"a":"b"}}"#).unwrap().get("groups"),
            Some(json!({"a": "b"}))
        );
    }

    #[test]
    fn absurd_depth_is_refused_without_overflowing() {
        let deep = format!("{{\"a\":{}}}", "[".repeat(100_000));
        assert!(parse(&deep).is_err());
    }
}
