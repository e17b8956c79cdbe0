//! What every request of a VM shares: the gate, the metrics, the host side of remote keys, and
//! the requests held until their keys arrive.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use hashbrown::HashMap;

use super::keys::{Fetcher, KeyIo};
use super::metrics::Metrics;
use super::request_state::RequestState;
use crate::body_hold::BodyHold;
use crate::gate::Gate;

/// How often the root context looks at remote key sets and held bodies.
pub const TICK_MILLISECONDS: u32 = 1000;
/// How often while a request waits for keys: its fetch goes out (or the set another VM fetched is
/// adopted) within this rather than at the next one-second tick. A fetch is dispatched from the
/// root context, whose callouts outlive any one request, so it waits for a tick.
pub const WAITING_TICK_MILLISECONDS: u32 = 10;

/// A request's state, shared between its context and the root context that may resume it.
pub type StateRef = Rc<RefCell<RequestState>>;

pub struct Shared {
    pub gate: Gate,
    pub metrics: Metrics,
    pub fetcher: Fetcher,
    pub root_id: u32,
    /// The state of each request the key store holds, by context id: what the root context
    /// resumes when the store wakes it.
    pub held: RefCell<HashMap<u32, StateRef>>,
    /// Whether the host hands over the body while the headers are held.
    pub body_hold: Cell<BodyHold>,
    /// Requests held at their headers for their body, by context id: since when, and their state
    /// (the root context lets them go headers first if the body does not come).
    pub held_for_body: RefCell<HashMap<u32, (i64, StateRef)>>,
    /// When the callback now running started (host nanoseconds): the decision-latency histogram
    /// measures from there to the verdict. One VM runs one callback at a time.
    pub started: Cell<u64>,
    /// Whether the root ticks at `WAITING_TICK_MILLISECONDS` (requests wait for keys).
    pub waiting_tick: Cell<bool>,
}

impl Shared {
    /// Marks the start of a callback that may decide; returns the host time in Unix seconds.
    pub fn start(&self) -> i64 {
        let nanos = super::hostcalls::now_nanos();
        self.started.set(nanos);
        i64::try_from(nanos / 1_000_000_000).unwrap_or(0)
    }

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
        self.tick_for_waiters();
    }

    /// Ticks fast while any request waits for keys, every second otherwise. The period is the
    /// root context's whichever context sets it.
    pub fn tick_for_waiters(&self) {
        let waiting = !self.held.borrow().is_empty();
        if waiting != self.waiting_tick.get() {
            let period = if waiting {
                WAITING_TICK_MILLISECONDS
            } else {
                TICK_MILLISECONDS
            };
            if super::hostcalls::set_tick_period(period).is_ok() {
                self.waiting_tick.set(waiting);
            }
        }
    }

    /// The request is gone (the client hung up): nothing to resume.
    pub fn release(&self, context_id: u32) {
        // Runs as every request ends, and almost every time both maps are empty: asking
        // `is_empty` first spares each end two hashes.
        if self.held.borrow().is_empty() && self.held_for_body.borrow().is_empty() {
            return;
        }
        if self.held.borrow_mut().remove(&context_id).is_some() {
            self.gate.with_keys(|store| store.forget(context_id));
            self.tick_for_waiters();
        }
        self.held_for_body.borrow_mut().remove(&context_id);
    }

    /// A body (or trailers) arrived while the headers were held: the host hands bodies over.
    pub fn body_arrived_while_held(&self) {
        let mut hold = self.body_hold.get();
        if hold.body_arrived() {
            log::info!("mlgate: the host hands over request bodies while the headers are held: json_body routes are judged before anything goes upstream");
            self.metrics.body_hold(hold);
        }
        self.body_hold.set(hold);
    }

    /// A request held for its body got none in time and went headers first.
    pub fn body_hold_timed_out(&self) {
        let mut hold = self.body_hold.get();
        if hold.timed_out() {
            log::warn!("mlgate: the host does not hand over request bodies while the headers are held (set allow_on_headers_stop_iteration: true on the wasm filter's PluginConfig, Envoy >= 1.35): json_body routes send the headers upstream first and hold the body until its model is judged");
            self.metrics.body_hold(hold);
        }
        self.body_hold.set(hold);
    }

    /// The state of a woken request, no longer held.
    pub fn take_held(&self, context_id: u32) -> Option<Rc<RefCell<RequestState>>> {
        self.held.borrow_mut().remove(&context_id)
    }
}
