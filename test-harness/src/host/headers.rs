//! Header maps as Envoy keeps them: an ordered list of (name, value) pairs, names stored lower-case and
//! compared case-insensitively, repeated names allowed. Also the ABI's serialized map format.

use super::abi::Status;

/// An ordered header map (request/response headers or trailers, call headers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// An empty map.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// A map from pairs; names are lower-cased.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut h = Headers::new();
        for (k, v) in pairs {
            h.add(k.as_ref(), v.as_ref());
        }
        h
    }

    /// The first value of `name` (what `proxy_get_header_map_value` returns when the name is repeated,
    /// as Envoy does).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a value (`proxy_add_header_map_value`).
    pub fn add(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Sets `name` to one value (`proxy_replace_header_map_value`): the first occurrence keeps its place,
    /// the others are removed; an absent name is appended.
    pub fn replace(&mut self, name: &str, value: &str) {
        let lower = name.to_ascii_lowercase();
        match self.0.iter().position(|(k, _)| *k == lower) {
            Some(first) => {
                let mut index = 0;
                self.0.retain(|(k, _)| {
                    let keep = *k != lower || index == first;
                    index += 1;
                    keep
                });
                if let Some(entry) = self.0.get_mut(first) {
                    entry.1 = value.to_string();
                }
            }
            None => self.0.push((lower, value.to_string())),
        }
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// The pairs in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Iterates over (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of pairs (what the stream callbacks receive as `num_headers`).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Names that start with `prefix` (case-insensitive), e.g. every `x-mlgate-` header.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<&str> {
        let prefix = prefix.to_ascii_lowercase();
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// The ABI encoding: count (u32 LE), then (name length, value length) u32 LE pairs, then each name and
    /// value followed by a NUL.
    pub(crate) fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            4 + self
                .0
                .iter()
                .map(|(k, v)| k.len() + v.len() + 10)
                .sum::<usize>(),
        );
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in &self.0 {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    /// Parses the ABI encoding (an empty buffer is an empty map). Names are lower-cased.
    pub(crate) fn deserialize(bytes: &[u8]) -> Result<Headers, Status> {
        let mut headers = Headers::new();
        if bytes.is_empty() {
            return Ok(headers);
        }
        let u32_at = |at: usize| -> Result<usize, Status> {
            let slice = bytes.get(at..at + 4).ok_or(Status::ParseFailure)?;
            let arr: [u8; 4] = slice.try_into().map_err(|_| Status::ParseFailure)?;
            Ok(u32::from_le_bytes(arr) as usize)
        };
        let count = u32_at(0)?;
        let mut data = 4usize
            .checked_add(count.checked_mul(8).ok_or(Status::ParseFailure)?)
            .ok_or(Status::ParseFailure)?;
        for i in 0..count {
            let name_len = u32_at(4 + i * 8)?;
            let value_len = u32_at(8 + i * 8)?;
            let name = bytes
                .get(data..data + name_len)
                .ok_or(Status::ParseFailure)?;
            data += name_len + 1;
            let value = bytes
                .get(data..data + value_len)
                .ok_or(Status::ParseFailure)?;
            data += value_len + 1;
            headers.add(
                &String::from_utf8_lossy(name),
                &String::from_utf8_lossy(value),
            );
        }
        Ok(headers)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers::from_pairs(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_stored_lower_case() {
        let mut h = Headers::new();
        h.add("X-Foo", "1");
        assert_eq!(h.get("x-foo"), Some("1"));
        assert_eq!(h.get("X-FOO"), Some("1"));
        assert_eq!(h.pairs()[0].0, "x-foo");
    }

    #[test]
    fn replace_keeps_the_first_position_and_drops_repeats() {
        let mut h = Headers::from_pairs([("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")]);
        h.replace("A", "9");
        assert_eq!(h, Headers::from_pairs([("a", "9"), ("b", "2"), ("c", "4")]));
        h.replace("d", "5");
        assert_eq!(h.get("d"), Some("5"));
    }

    #[test]
    fn get_returns_the_first_of_repeated_values_and_get_all_all_of_them() {
        let h = Headers::from_pairs([("a", "1"), ("a", "2")]);
        assert_eq!(h.get("a"), Some("1"));
        assert_eq!(h.get_all("a"), ["1", "2"]);
    }

    #[test]
    fn serialization_round_trips() {
        let h = Headers::from_pairs([(":path", "/x"), ("empty", ""), ("k", "välue")]);
        assert_eq!(Headers::deserialize(&h.serialize()), Ok(h));
        assert_eq!(Headers::deserialize(&[]), Ok(Headers::new()));
        assert_eq!(
            Headers::deserialize(&[5, 0, 0, 0, 1]),
            Err(Status::ParseFailure)
        );
    }
}
