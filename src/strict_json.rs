//! Duplicate object keys in untrusted token JSON: serde_json has no option to refuse them (the
//! last one wins), and a token whose `iss` or `aud` appears twice is read differently by
//! different parsers — the classic way to smuggle a claim past one validator and into another.
//! [`crate::payload`] refuses a repeated top-level name itself and asks [`has_unique_keys`] about
//! every nested object. Depth stays bounded by serde_json's recursion limit.

use hashbrown::HashSet;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Whether `json` is one JSON value that repeats no object key at any depth. Allocates only for
/// keys with escapes: the token payload's values are checked with this, not rebuilt.
pub fn has_unique_keys(json: &str) -> bool {
    let mut deserializer = serde_json::Deserializer::from_slice(json.as_bytes());
    UniqueKeys.deserialize(&mut deserializer).is_ok() && deserializer.end().is_ok()
}

/// The object key written as the JSON string `quoted`, or `None` when it is not exactly one.
pub fn key(quoted: &str) -> Option<Key<'_>> {
    let mut deserializer = serde_json::Deserializer::from_slice(quoted.as_bytes());
    let key = KeySeed.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(key)
}

struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(UniqueKeys)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let mut keys = SeenKeys::default();
        while let Some(key) = access.next_key_seed(KeySeed)? {
            if !keys.insert(key) {
                return Err(de::Error::custom("duplicate key"));
            }
            access.next_value_seed(UniqueKeys)?;
        }
        Ok(())
    }
}

/// The keys of one object seen so far: a short list scanned in place (no allocation for keys
/// without escapes), then a hash set once the object is large, so an object of thousands of
/// distinct keys costs linear time, not a comparison per pair.
#[derive(Default)]
pub struct SeenKeys<'de> {
    few: Vec<Key<'de>>,
    many: Option<HashSet<String>>,
}

impl<'de> SeenKeys<'de> {
    /// Objects up to this many keys are scanned: cheaper than hashing for a token's claims.
    const SCAN_LIMIT: usize = 16;

    /// False when `key` was seen before.
    pub fn insert(&mut self, key: Key<'de>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key.as_str().to_string());
        }
        if self.few.iter().any(|seen| seen.as_str() == key.as_str()) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > Self::SCAN_LIMIT {
            self.many = Some(self.few.drain(..).map(|k| k.as_str().to_string()).collect());
        }
        true
    }
}

/// An object key, borrowed from the JSON text unless it had escapes.
pub enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }
}

/// Reads an object key without copying it when it can.
pub struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_keys_accepts_any_json_without_repeats() {
        assert!(has_unique_keys(
            r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}]}"#
        ));
    }

    #[test]
    fn unique_keys_finds_a_top_level_duplicate() {
        assert!(!has_unique_keys(r#"{"iss":"a","iss":"b"}"#));
    }

    #[test]
    fn unique_keys_accepts_repeated_keys_in_sibling_objects() {
        assert!(has_unique_keys(r#"[{"k":1},{"k":2,"j":{"k":3}}]"#));
    }

    #[test]
    fn unique_keys_finds_a_duplicate_nested_in_an_array() {
        assert!(!has_unique_keys(r#"[1,{"a":{"k":1,"k":2}}]"#));
    }

    #[test]
    fn unique_keys_sees_an_escaped_key_as_its_unescaped_name() {
        assert!(!has_unique_keys(r#"{"a":{"iss":1,"\u0069ss":2}}"#));
    }

    #[test]
    fn unique_keys_checks_a_wide_object_in_linear_time() {
        let mut json = String::from("{");
        for i in 0..20_000 {
            json.push_str(&format!("\"k{i}\":0,"));
        }
        json.push_str("\"last\":0}");
        assert!(has_unique_keys(&json));
        json.insert_str(1, "\"k19999\":1,");
        assert!(!has_unique_keys(&json));
    }

    #[test]
    fn unique_keys_survives_absurd_depth() {
        let deep = "[".repeat(100_000);
        assert!(!has_unique_keys(&deep));
    }
}
