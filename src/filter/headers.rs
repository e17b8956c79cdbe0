//! Request headers on the adapter's side of the gate: the host's header map decoded once, and
//! the rewrite a forwarded request gets (client-sent identity headers out, verified ones in).
//!
//! Host-independent and compiled natively, so it is unit-tested with a recording host
//! ([`HeaderHost`]); in the VM the host is the proxy-wasm one (`hostcalls`).

use std::borrow::Cow;

use crate::policy::Forward;

/// A header map as the host serialised it, kept as one string (names and values side by side)
/// with spans into it: no string per header, and UTF-8 checked once.
#[derive(Clone)]
pub struct HeaderMap {
    text: String,
    pairs: Vec<(Span, Span)>,
}

/// `start..end` in [`HeaderMap::text`].
type Span = (usize, usize);

impl HeaderMap {
    /// Decodes the ABI's map serialisation: u32 count, count × (u32 name size, u32 value size),
    /// then each name and value followed by a NUL. Malformed input yields what could be read; a
    /// name or value that is not UTF-8 is kept lossily.
    pub fn decode(mut bytes: Vec<u8>) -> HeaderMap {
        let read_u32 = |bytes: &[u8], at: usize| -> Option<usize> {
            let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
            Some(u32::from_le_bytes(raw) as usize)
        };
        let count = read_u32(&bytes, 0).unwrap_or(0);
        let mut pairs = Vec::with_capacity(count.min(64));
        let sizes_end = 4usize.saturating_add(count.saturating_mul(8));
        let mut cursor = sizes_end;
        let mut span = |size: usize, len: usize| -> Option<Span> {
            let start = cursor;
            let end = start.checked_add(size)?;
            (end <= len).then_some(())?;
            cursor = end.saturating_add(1);
            Some((start, end))
        };
        for index in 0..count {
            let sizes = 4 + index * 8;
            let (Some(name_size), Some(value_size)) =
                (read_u32(&bytes, sizes), read_u32(&bytes, sizes + 4))
            else {
                break;
            };
            let (Some(name), Some(value)) =
                (span(name_size, bytes.len()), span(value_size, bytes.len()))
            else {
                break;
            };
            pairs.push((name, value));
        }
        // The sizes are binary; with them zeroed the whole buffer is text (NUL separators are
        // UTF-8), so it becomes the map's string without a copy. Only a map with a header that
        // is not UTF-8 is rebuilt, lossily.
        let text_start = sizes_end.min(bytes.len());
        if let Some(sizes) = bytes.get_mut(..text_start) {
            sizes.fill(0);
        }
        if crate::bytes::is_ascii(&bytes) {
            // SAFETY: every byte is ASCII (checked just above), and ASCII is UTF-8. Unchecked
            // because this runs on every request and the ASCII scan already read every byte.
            #[allow(unsafe_code)]
            let text = unsafe { String::from_utf8_unchecked(bytes) };
            return HeaderMap { text, pairs };
        }
        match String::from_utf8(bytes) {
            Ok(text) => HeaderMap { text, pairs },
            Err(error) => Self::lossy(error.as_bytes(), &pairs),
        }
    }

    fn lossy(bytes: &[u8], raw_pairs: &[(Span, Span)]) -> HeaderMap {
        let mut map = HeaderMap {
            text: String::with_capacity(bytes.len()),
            pairs: Vec::with_capacity(raw_pairs.len()),
        };
        let push = |map: &mut HeaderMap, (start, end): Span| -> Span {
            let raw = bytes.get(start..end).unwrap_or_default();
            let from = map.text.len();
            map.text.push_str(&String::from_utf8_lossy(raw));
            (from, map.text.len())
        };
        for (name, value) in raw_pairs {
            let name = push(&mut map, *name);
            let value = push(&mut map, *value);
            map.pairs.push((name, value));
        }
        map
    }

    fn str(&self, (start, end): Span) -> &str {
        self.text.get(start..end).unwrap_or_default()
    }

    /// A name as bytes, for comparing: no UTF-8 boundary checks for the names that do not match.
    fn name_bytes(&self, (start, end): Span) -> &[u8] {
        self.text.as_bytes().get(start..end).unwrap_or_default()
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .map(|(name, value)| (self.str(*name), self.str(*value)))
    }

    /// The headers' names, in order (repeated ones repeated).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(name, _)| self.str(*name))
    }

    /// Whether the name at `span` is `wanted` (lower-case), in any case. The length is compared
    /// first, from the span alone: most names differ in it, and this runs for every header on
    /// every lookup.
    fn is_named(&self, span: Span, wanted: &[u8]) -> bool {
        span.1.wrapping_sub(span.0) == wanted.len()
            && crate::bytes::same_ignoring_ascii_case(self.name_bytes(span), wanted)
    }

    /// A header's value, borrowed; repeated headers are joined with `,` as HTTP allows.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        // A plain loop: an iterator chain here cost every lookup a closure call per header.
        let wanted = name.as_bytes();
        let mut found: Option<Cow<'_, str>> = None;
        for (header, value) in &self.pairs {
            if !self.is_named(*header, wanted) {
                continue;
            }
            let value = self.str(*value);
            found = Some(match found {
                None => Cow::Borrowed(value),
                Some(before) => {
                    let mut joined = before.into_owned();
                    joined.push(',');
                    joined.push_str(value);
                    Cow::Owned(joined)
                }
            });
        }
        found
    }

    /// The first value of a header (pseudo-headers are never repeated).
    pub fn first(&self, name: &str) -> &str {
        let wanted = name.as_bytes();
        self.pairs
            .iter()
            .find(|(n, _)| {
                n.1.wrapping_sub(n.0) == wanted.len()
                    && crate::bytes::same_bytes(self.name_bytes(*n), wanted)
            })
            .map_or("", |(_, v)| self.str(*v))
    }
}

/// What the rewrite asks of the host for one request's headers.
pub trait HeaderHost {
    fn remove_header(&mut self, name: &str) -> Result<(), HostRefused>;
    fn add_header(&mut self, name: &str, value: &str) -> Result<(), HostRefused>;
}

/// The host refused a header change: the request must not go on (fail closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRefused(pub &'static str);

/// Whether a client-sent header name is under the identity prefix, in any case, and with `_`
/// for `-` too: CGI/WSGI servers read `x_mlgate_principal` as `X-Mlgate-Principal`.
pub fn spoofs_identity(name: &str, prefix: &str) -> bool {
    name.get(..prefix.len()).is_some_and(|head| {
        head.bytes()
            .zip(prefix.bytes())
            .all(|(h, p)| h.to_ascii_lowercase() == p || (h == b'_' && p == b'-'))
    })
}

/// Removes client-sent identity headers (and `authorization` when configured), then adds the
/// verified ones. The first host refusal stops it.
pub fn rewrite<'a>(
    host: &mut impl HeaderHost,
    forward: &Forward,
    request: &HeaderMap,
    add: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), HostRefused> {
    let prefix = forward.prefix.as_str();
    for name in request.names() {
        let strip = spoofs_identity(name, prefix)
            || (forward.strip_authorization
                && crate::bytes::same_ignoring_ascii_case(name.as_bytes(), b"authorization"));
        if strip {
            host.remove_header(name)
                .map_err(|_| HostRefused("cannot strip identity headers"))?;
        }
    }
    // Every forwarded name starts with the prefix (the configuration insists), so any client
    // copy is gone by now: adding is enough, and cheaper for the host than replacing.
    for (name, value) in add {
        host.add_header(name, value)
            .map_err(|_| HostRefused("cannot set identity headers"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
