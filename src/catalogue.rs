//! Model catalogues filtered per caller: a model server's listing (OpenAI `GET /v1/models`, the
//! v2 repository index `POST /v2/repository/index` of Triton and MLServer, KServe v1
//! `GET /v1/models`) with only the entries a predicate keeps — the gate keeps the models the
//! caller's rules allow on the route that serves them, so a model a caller sees is a model it may
//! call, and the reverse.
//!
//! The listing is read as strictly as a request body's model (see `crate::model`): strict JSON, no
//! repeated key at any depth, no second key that case-folds to a key the filter reads (a client
//! reading `Data` or `ID` would otherwise see what the filter never looked at). Anything else is
//! refused, never passed on unfiltered. Everything but the dropped entries is passed on as the
//! model server wrote it, byte for byte.
//!
//! The listing is not rebuilt as a `serde_json::Value`: once serde_json has read it as strict JSON
//! (`has_unique_keys`), a scan finds where the list and its entries lie, and the kept entries are
//! copied: ~1 KB less .wasm than a tree and its serializer, and no allocation per entry.

use std::ops::Range;

use crate::decision::Reason;
use crate::model::folds_to;
use crate::payload::{self, string_end};
use crate::policy::ListingFormat;
use crate::strict_json::{self, has_unique_keys};

/// The listing `body` with only the models `keep` keeps, as JSON; or why it cannot be filtered
/// (always [`Reason::ListingUnreadable`]).
pub fn filter(
    body: &[u8],
    format: ListingFormat,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<u8>, Reason> {
    let text = std::str::from_utf8(body).map_err(|_| Reason::ListingUnreadable)?;
    if !has_unique_keys(text) {
        return Err(Reason::ListingUnreadable);
    }
    filtered(text, format, keep).ok_or(Reason::ListingUnreadable)
}

/// [`filter`] of a text known to be one strict JSON value: from here on only boundaries are
/// looked for, and every name read is unescaped by serde_json.
fn filtered(text: &str, format: ListingFormat, keep: &dyn Fn(&str) -> bool) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let start = ws(bytes, 0);
    let whole = start..value_end(bytes, start)?;
    let list = match format {
        ListingFormat::OpenAi => field(text, whole, "data")?,
        ListingFormat::Triton => whole,
        ListingFormat::KServeV1 => field(text, whole, "models")?,
    };
    if bytes.get(list.start) != Some(&b'[') {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(bytes.get(..=list.start)?);
    let mut at = ws(bytes, list.start + 1);
    let mut kept = false;
    if bytes.get(at) != Some(&b']') {
        loop {
            let entry = at..value_end(bytes, at)?;
            let name = match format {
                ListingFormat::OpenAi => field(text, entry.clone(), "id")?,
                ListingFormat::Triton => field(text, entry.clone(), "name")?,
                ListingFormat::KServeV1 => entry.clone(),
            };
            // Only a string names a model: anything else makes the listing unreadable.
            let name = strict_json::key(text.get(name)?)?;
            at = ws(bytes, entry.end);
            if keep(name.as_str()) {
                if kept {
                    out.push(b',');
                }
                out.extend_from_slice(bytes.get(entry)?);
                kept = true;
            }
            if bytes.get(at) != Some(&b',') {
                break;
            }
            at = ws(bytes, at + 1);
        }
    }
    // The list's closing bracket and whatever follows it.
    out.extend_from_slice(bytes.get(list.end - 1..)?);
    Some(out)
}

/// Past any whitespace at `at`. Not inlined: the scan here is not the hot path `Payload` is.
#[inline(never)]
fn ws(bytes: &[u8], at: usize) -> usize {
    payload::skip_whitespace(bytes, at)
}

/// Where the value of the member `name` lies, when `value` is an object that has it and in which
/// no other key case-folds to it.
fn field(text: &str, value: Range<usize>, name: &str) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    if bytes.get(value.start) != Some(&b'{') {
        return None;
    }
    let mut found = None;
    let mut at = ws(bytes, value.start + 1);
    while bytes.get(at) == Some(&b'"') {
        let key_end = string_end(bytes, at)?.0;
        // Unescaped, as a client reads it (borrowed when it has no escapes).
        let key = strict_json::key(text.get(at..key_end)?)?;
        let key = key.as_str();
        // Past the colon.
        let value_at = ws(bytes, ws(bytes, key_end) + 1);
        let value_end = value_end(bytes, value_at)?;
        if key == name {
            found = Some(value_at..value_end);
        } else if folds_to(key, name) {
            return None;
        }
        at = ws(bytes, value_end);
        if bytes.get(at) != Some(&b',') {
            break;
        }
        at = ws(bytes, at + 1);
    }
    found
}

/// Just past the value that starts at `at`, in text that is strict JSON: a string to its closing
/// quote, an object or array to its closing bracket, anything else to the next delimiter.
fn value_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match bytes.get(at) {
            Some(b'"') => {
                at = string_end(bytes, at)?.0;
                if depth == 0 {
                    return Some(at);
                }
                continue;
            }
            Some(b'{' | b'[') => depth += 1,
            Some(b'}' | b']') if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') if depth == 0 => {
                return Some(at);
            }
            None => return None,
            _ => {}
        }
        at += 1;
    }
}

#[cfg(test)]
mod tests;
