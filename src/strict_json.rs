//! Duplicate object keys in untrusted token JSON: serde_json has no option to refuse them (the
//! last one wins), and a token whose `iss` or `aud` appears twice is read differently by
//! different parsers — the classic way to smuggle a claim past one validator and into another.
//! [`crate::payload`] refuses a repeated top-level name itself and asks [`has_unique_keys`] about
//! every nested object. Depth stays bounded by serde_json's recursion limit.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as _;
use std::fmt;

/// Whether `json` is one JSON value that repeats no object key at any depth. Allocates only for
/// keys with escapes: the token payload's values are checked with this, not rebuilt.
pub fn has_unique_keys(json: &str) -> bool {
    let mut deserializer = serde_json::Deserializer::from_slice(json.as_bytes());
    UniqueKeys.deserialize(&mut deserializer).is_ok() && deserializer.end().is_ok()
}

/// Whether `json` is one JSON value, read without recursion and without keeping any key.
pub fn is_json(json: &str) -> bool {
    let mut deserializer = serde_json::Deserializer::from_slice(json.as_bytes());
    serde::de::IgnoredAny::deserialize(&mut deserializer).is_ok() && deserializer.end().is_ok()
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
            keys.push(key);
            access.next_value_seed(UniqueKeys)?;
        }
        if keys.any_repeated() {
            return Err(de::Error::custom("duplicate key"));
        }
        Ok(())
    }
}

/// The keys of one object, collected to be checked for a repeat once the object is read: by a
/// scan while the object is small (a token's claims: no allocation, no sorting), by sorting the
/// keys once it is large, so thousands of distinct keys cost `n log n` comparisons, not one per
/// pair. Sorting, not hashing: in the .wasm a sort of borrowed names is several times cheaper
/// per key than hashing them into a set.
#[derive(Default)]
pub struct SeenKeys<'de> {
    keys: Vec<Key<'de>>,
}

impl<'de> SeenKeys<'de> {
    pub fn push(&mut self, key: Key<'de>) {
        self.keys.push(key);
    }

    /// Whether any key was pushed twice.
    pub fn any_repeated(&self) -> bool {
        any_repeated(self.keys.iter().map(Key::as_str))
    }
}

/// Up to this many names are checked for a repeat pair by pair.
pub const SCAN_LIMIT: usize = 16;

/// Whether `names` repeats a name: pair by pair for a few, sorted for many.
pub fn any_repeated<'n>(names: impl ExactSizeIterator<Item = &'n str> + Clone) -> bool {
    if names.len() <= SCAN_LIMIT {
        let mut rest = names;
        while let Some(name) = rest.next() {
            if rest.clone().any(|other| other == name) {
                return true;
            }
        }
        return false;
    }
    let mut sorted: Vec<&str> = names.collect();
    sorted.sort_unstable();
    sorted
        .windows(2)
        .any(|pair| matches!(pair, [a, b] if a == b))
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
