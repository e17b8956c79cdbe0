//! `make bench`'s chain `mlgate-replay` (feature `bench-replay`, never in a module to deploy): after
//! the first forwarded request, every request makes the host calls that decision made — the header
//! map read (and its decoding), the clock, the counters, the filter state, the header rewrite —
//! without deciding. Its cost against native `jwt_authn` is the best any code of mlgate's could reach
//! with the same host calls: the bound `make bench` reports for target (a).

use std::cell::RefCell;
use std::rc::Rc;

use crate::audit::Audit;
use crate::gate::{Disposition, Headers, Step};

/// What the first forwarded decision did: its record (the counters it incremented), the record as
/// JSON (the filter state) and the headers it forwarded.
pub struct Replay {
    pub audit: Audit,
    pub json: String,
    pub forward: Headers,
}

thread_local! {
    // A VM runs one thread; the first forwarded decision of this VM.
    static FIRST: RefCell<Option<Rc<Replay>>> = const { RefCell::new(None) };
}

/// The decision to replay, once one was forwarded.
pub fn recorded() -> Option<Rc<Replay>> {
    FIRST.with(|first| first.borrow().clone())
}

/// Keeps `step` to replay if it is the first decision that forwards its request.
pub fn remember(step: &Step) {
    let Step::Done(verdict) = step else {
        return;
    };
    let Disposition::Forward(forward) = &verdict.action else {
        return;
    };
    FIRST.with(|first| {
        first.borrow_mut().get_or_insert_with(|| {
            Rc::new(Replay {
                audit: verdict.audit.clone(),
                json: verdict.audit.json(),
                forward: forward.clone(),
            })
        });
    });
}
