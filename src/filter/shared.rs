//! What every request of a VM shares: the gate, the metrics, the host side of remote keys, and
//! the requests held until their keys arrive.

use std::cell::RefCell;
use std::rc::Rc;

use hashbrown::HashMap;

use super::keys::{Fetcher, KeyIo};
use super::metrics::Metrics;
use super::request_state::RequestState;
use crate::gate::Gate;

pub struct Shared {
    pub gate: Gate,
    pub metrics: Metrics,
    pub fetcher: Fetcher,
    pub root_id: u32,
    /// The state of each request the key store holds, by context id: what the root context
    /// resumes when the store wakes it.
    pub held: RefCell<HashMap<u32, Rc<RefCell<RequestState>>>>,
}

impl Shared {
    /// What the key I/O (`keys`) works with.
    pub fn key_io(&self) -> KeyIo<'_> {
        KeyIo {
            gate: &self.gate,
            metrics: &self.metrics,
            fetcher: &self.fetcher,
        }
    }

    /// Holds request `context_id` until its provider's keys arrive (or will not).
    pub fn hold_for_keys(
        &self,
        context_id: u32,
        provider: usize,
        now: i64,
        state: Rc<RefCell<RequestState>>,
    ) {
        self.gate
            .with_keys(|store| store.wait(context_id, provider, now));
        self.held.borrow_mut().insert(context_id, state);
    }

    /// The request is gone (the client hung up): nothing to resume.
    pub fn release(&self, context_id: u32) {
        if self.held.borrow_mut().remove(&context_id).is_some() {
            self.gate.with_keys(|store| store.forget(context_id));
        }
    }

    /// The state of a woken request, no longer held.
    pub fn take_held(&self, context_id: u32) -> Option<Rc<RefCell<RequestState>>> {
        self.held.borrow_mut().remove(&context_id)
    }
}
