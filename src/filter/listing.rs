//! The response of a model listing route (`list_models`): the model server's catalogue, filtered
//! for the caller by the gate before it goes downstream.
//!
//! The request asked for `accept-encoding: identity`; a listing that comes back encoded anyway,
//! larger than the route's bound, or not readable is replaced by a 502, never passed on
//! unfiltered. Where the host hands a filter the body while it holds the response headers (Envoy
//! with `allow_on_headers_stop_iteration`, known once a request body has arrived that way: see
//! `crate::body_hold`) the headers wait for the filtered body and carry its `content-length`, and
//! a refusal is a clean 502. Elsewhere the headers go first without `content-length` (the length
//! is not known yet) and a refusal resets the stream.

use std::cell::RefCell;

use proxy_wasm::types::Action;

use super::hostcalls::{self, BufferType, MapType};
use super::request_state::RequestState;
use super::shared::Shared;
use crate::body_hold::BodyHold;
use crate::decision::Reason;
use crate::gate::Listing;

/// A listing on its way back.
pub struct PendingListing {
    listing: Box<Listing>,
    /// The response headers are held until the filtered body is ready.
    headers_held: bool,
}

/// The request goes upstream asking for an unencoded listing; its response will be filtered.
pub fn expect(state: &RefCell<RequestState>, listing: Box<Listing>) -> Result<(), &'static str> {
    hostcalls::remove_header(MapType::HttpRequestHeaders, "accept-encoding")
        .and_then(|()| {
            hostcalls::add_header(MapType::HttpRequestHeaders, "accept-encoding", "identity")
        })
        .map_err(|_| "cannot ask for an unencoded listing")?;
    state.borrow_mut().listing = Some(PendingListing {
        listing,
        headers_held: false,
    });
    Ok(())
}

pub fn on_headers(shared: &Shared, state: &RefCell<RequestState>, end_of_stream: bool) -> Action {
    let mut state = state.borrow_mut();
    let Some(pending) = state.listing.as_mut() else {
        return Action::Continue;
    };
    let Ok(headers) = hostcalls::get_headers(MapType::HttpResponseHeaders) else {
        return refuse(shared, &pending.listing, Reason::ListingUnreadable);
    };
    let status = headers.first(":status");
    if !status.starts_with('2') {
        // An error from the model server lists nothing: it goes as it is.
        state.listing = None;
        return Action::Continue;
    }
    let encoded = headers
        .get("content-encoding")
        .is_some_and(|coding| !coding.eq_ignore_ascii_case("identity"));
    if status != "200" || encoded {
        return refuse(shared, &pending.listing, Reason::ListingUnreadable);
    }
    if end_of_stream {
        return match shared.gate.filter_listing(&pending.listing, &[]) {
            Ok(_) => Action::Continue,
            Err(reason) => refuse(shared, &pending.listing, reason),
        };
    }
    if shared.body_hold.get() == BodyHold::Honoured {
        pending.headers_held = true;
        return Action::Pause;
    }
    if hostcalls::remove_header(MapType::HttpResponseHeaders, "content-length").is_err() {
        return refuse(shared, &pending.listing, Reason::ListingUnreadable);
    }
    Action::Continue
}

pub fn on_body(
    shared: &Shared,
    state: &RefCell<RequestState>,
    body_size: usize,
    end_of_stream: bool,
) -> Action {
    let mut state = state.borrow_mut();
    let Some(pending) = state.listing.as_ref() else {
        return Action::Continue;
    };
    if body_size > pending.listing.max_bytes() {
        return refuse(shared, &pending.listing, Reason::ListingTooLarge);
    }
    if !end_of_stream {
        return Action::Pause;
    }
    let action = finish(shared, pending, body_size);
    state.listing = None;
    action
}

/// Trailers end the response: the listing held so far is the whole of it.
pub fn on_trailers(shared: &Shared, state: &RefCell<RequestState>) -> Action {
    let mut state = state.borrow_mut();
    let Some(pending) = state.listing.as_ref() else {
        return Action::Continue;
    };
    let action = finish(
        shared,
        pending,
        pending.listing.max_bytes().saturating_add(1),
    );
    state.listing = None;
    action
}

/// Filters the whole listing (at most `size` bytes are asked for) in place.
fn finish(shared: &Shared, pending: &PendingListing, size: usize) -> Action {
    let Ok(body) = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size) else {
        return refuse(shared, &pending.listing, Reason::ListingUnreadable);
    };
    let filtered = match shared.gate.filter_listing(&pending.listing, &body) {
        Ok(filtered) => filtered,
        Err(reason) => return refuse(shared, &pending.listing, reason),
    };
    let replaced = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body.len(), &filtered)
        .and_then(|()| {
            if !pending.headers_held {
                return Ok(());
            }
            let length = filtered.len().to_string();
            hostcalls::remove_header(MapType::HttpResponseHeaders, "content-length")?;
            hostcalls::add_header(MapType::HttpResponseHeaders, "content-length", &length)
        });
    if replaced.is_err() {
        return refuse(shared, &pending.listing, Reason::ListingUnreadable);
    }
    Action::Continue
}

/// Replaces the listing by a 502 naming `reason` (after its headers went downstream, Envoy can
/// only reset the stream).
fn refuse(shared: &Shared, listing: &Listing, reason: Reason) -> Action {
    log::warn!("mlgate: a model listing from the model server was refused: {reason}");
    let reply = shared.gate.listing_refused(listing, reason);
    super::http::send_reply(&reply, Some(reason.as_str()))
}
