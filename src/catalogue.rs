//! Model catalogues filtered per caller: a model server's listing (OpenAI `GET /v1/models`, the
//! v2 repository index `POST /v2/repository/index` of Triton and MLServer, KServe v1
//! `GET /v1/models`) with only the entries a predicate keeps — the gate keeps the models the
//! caller's rules allow on the route that serves them, so a model a caller sees is a model it may
//! call, and the reverse.
//!
//! The listing is read as strictly as a request body's model (see `crate::model`): strict JSON, no
//! repeated key at any depth, no second key that case-folds to a key the filter reads (a client
//! reading `Data` or `ID` would otherwise see what the filter never looked at). Anything else is
//! refused, never passed on unfiltered. Every other field of the listing and of its entries is
//! kept.

use serde_json::{Map, Value};

use crate::decision::Reason;
use crate::model::folds_to;
use crate::policy::ListingFormat;
use crate::strict_json::has_unique_keys;

/// The listing `body` with only the models `keep` keeps, as JSON; or why it cannot be filtered
/// (always [`Reason::ListingUnreadable`]).
pub fn filter(
    body: &[u8],
    format: ListingFormat,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<u8>, Reason> {
    const UNREADABLE: Reason = Reason::ListingUnreadable;
    let text = std::str::from_utf8(body).map_err(|_| UNREADABLE)?;
    if !has_unique_keys(text) {
        return Err(UNREADABLE);
    }
    // `from_slice`, as everywhere else: a second reader type would duplicate serde_json's parser.
    let mut listing: Value = serde_json::from_slice(body).map_err(|_| UNREADABLE)?;
    let entries = match format {
        ListingFormat::OpenAi => field(&mut listing, "data"),
        ListingFormat::Triton => Some(&mut listing),
        ListingFormat::KServeV1 => field(&mut listing, "models"),
    };
    let Some(Value::Array(entries)) = entries else {
        return Err(UNREADABLE);
    };
    let mut unreadable = false;
    entries.retain_mut(|entry| {
        let name = match format {
            ListingFormat::OpenAi => field(entry, "id"),
            ListingFormat::Triton => field(entry, "name"),
            ListingFormat::KServeV1 => Some(entry),
        };
        match name {
            Some(Value::String(name)) => keep(name),
            _ => {
                unreadable = true;
                false
            }
        }
    });
    if unreadable {
        return Err(UNREADABLE);
    }
    serde_json::to_vec(&listing).map_err(|_| UNREADABLE)
}

/// The object's field `name`, when `value` is an object in which no other key case-folds to it.
fn field<'v>(value: &'v mut Value, name: &str) -> Option<&'v mut Value> {
    let object: &mut Map<String, Value> = value.as_object_mut()?;
    if object.keys().any(|key| key != name && folds_to(key, name)) {
        return None;
    }
    object.get_mut(name)
}

#[cfg(test)]
mod tests;
