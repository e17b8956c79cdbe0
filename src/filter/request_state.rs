//! Where a request is in its life: deciding, held for keys, held for its body, decided.

use super::headers::HeaderMap;
use super::listing::PendingListing;
use crate::gate::{Headers, Pending};

/// What a request is waiting for.
#[derive(Default)]
pub enum Phase {
    #[default]
    Deciding,
    /// Paused at the headers until keys arrive; the headers are kept to decide again.
    WaitingForKeys {
        headers: HeaderMap,
        /// The headers ended the request (no body, no trailers).
        end_of_stream: bool,
        /// A host that hands over the body while the headers are held (Envoy with
        /// `allow_on_headers_stop_iteration`) delivered some of it: held, not yet judged.
        body_seen: bool,
        /// ... and all of it (its last data frame, or the trailers).
        body_ended: bool,
    },
    /// Held whole, headers included, until the model in the body is judged (a host that hands
    /// the body over while the headers are held: see `crate::body_hold`).
    HoldingForBody {
        pending: Box<Pending>,
        headers: HeaderMap,
        /// The headers the request goes upstream with if it is let go headers first.
        headers_first: Headers,
    },
    /// Headers forwarded; the body is held until the model in it is judged.
    WaitingForBody(Box<Pending>),
    Decided,
}

#[derive(Default)]
pub struct RequestState {
    pub phase: Phase,
    /// The response is a model listing to filter for the caller.
    pub listing: Option<PendingListing>,
}
