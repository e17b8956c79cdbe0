//! HTTP context: reads the request, asks the gate, carries out the verdict.
//!
//! Two waits are possible: for keys (the request is paused at its headers until the
//! provider's key set arrives, then decided again from the root context), and for the body of
//! a route whose model is in the JSON body (Envoy never hands a filter the body while its
//! headers are held, so the identity headers go upstream first and the body is held until the
//! model is judged).
//!
//! The body's end is wherever the request ends: the last data frame, or the trailers (HTTP/2,
//! chunked HTTP/1.1), which may follow the data or come instead of it. Every callback is
//! handled in every phase, so no framing lets a body go upstream unjudged.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::headers::{self, HeaderHost, HeaderMap, HostRefused};
use super::hostcalls::{self, BufferType, LogLevel, MapType};
use super::listing;
use super::request_state::{Phase, RequestState};
use super::shared::Shared;
use crate::gate::{self, Pending, Step, Verdict};

pub struct Request {
    shared: Option<Rc<Shared>>,
    state: Rc<RefCell<RequestState>>,
    context_id: u32,
}

impl Request {
    pub fn new(shared: Option<Rc<Shared>>, context_id: u32) -> Request {
        Request {
            shared,
            state: Rc::new(RefCell::new(RequestState::default())),
            context_id,
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // A client that hung up while its request waited for keys.
        if let Some(shared) = &self.shared {
            shared.release(self.context_id);
        }
    }
}

// Neither `on_done` nor `on_log`: the build drops their exports, so Envoy does not enter the VM for
// them (Makefile, `UNEXPORTED`). Implementing either means taking it off that list.
impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return internal_error("not configured");
        };
        let headers = match hostcalls::get_headers(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(_) => return internal_error("cannot read request headers"),
        };
        let now = shared.start();
        #[cfg(feature = "bench-replay")]
        if let Some(first) = super::replay::recorded() {
            return replay(&shared, &first, &headers);
        }
        let step = decide(&shared, &headers, now, true);
        #[cfg(feature = "bench-replay")]
        super::replay::remember(&step);
        match step {
            Step::NeedKeys { provider, refetch } => {
                if refetch {
                    shared.metrics.unknown_kid_refetch();
                }
                shared.metrics.paused_for_keys();
                self.state.borrow_mut().phase = Phase::WaitingForKeys {
                    headers,
                    end_of_stream,
                    body_seen: false,
                    body_ended: false,
                };
                shared.hold_for_keys(self.context_id, provider, now, self.state.clone());
                Action::Pause
            }
            step => {
                let held = Held {
                    context_id: self.context_id,
                    state: &self.state,
                    now,
                };
                apply_headers_step(&shared, held, step, &headers, end_of_stream)
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let phase = std::mem::take(&mut self.state.borrow_mut().phase);
        match phase {
            Phase::HoldingForBody {
                pending,
                headers,
                headers_first,
            } => {
                shared.body_arrived_while_held();
                shared.start();
                if body_size <= shared.gate.max_body_bytes() && !end_of_stream {
                    self.state.borrow_mut().phase = Phase::HoldingForBody {
                        pending,
                        headers,
                        headers_first,
                    };
                    return Action::Pause;
                }
                shared.held_for_body.borrow_mut().remove(&self.context_id);
                self.state.borrow_mut().phase = Phase::Decided;
                let verdict = if body_size > shared.gate.max_body_bytes() {
                    Ok(shared.gate.decide_with_body(*pending, None))
                } else {
                    judge_body(&shared, *pending, body_size)
                };
                match verdict {
                    Ok(verdict) => carry_out(&shared, verdict, &headers, &self.state),
                    Err(action) => action,
                }
            }
            Phase::WaitingForBody(pending) => {
                shared.start();
                if body_size > shared.gate.max_body_bytes() {
                    let verdict = shared.gate.decide_with_body(*pending, None);
                    return finish_body(&shared, verdict);
                }
                if !end_of_stream {
                    self.state.borrow_mut().phase = Phase::WaitingForBody(pending);
                    return Action::Pause;
                }
                judge_buffered_body(&shared, *pending, body_size)
            }
            Phase::WaitingForKeys {
                headers,
                end_of_stream: headers_ended,
                body_ended,
                ..
            } => {
                shared.body_arrived_while_held();
                self.state.borrow_mut().phase = Phase::WaitingForKeys {
                    headers,
                    end_of_stream: headers_ended,
                    body_seen: true,
                    body_ended: body_ended || end_of_stream,
                };
                Action::Pause
            }
            other => {
                self.state.borrow_mut().phase = other;
                Action::Continue
            }
        }
    }

    /// Trailers end the request: a body held for its model is judged now, as it would be on
    /// its last data frame; a request waiting for keys stays held.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let phase = std::mem::take(&mut self.state.borrow_mut().phase);
        match phase {
            Phase::HoldingForBody {
                pending, headers, ..
            } => {
                shared.body_arrived_while_held();
                shared.start();
                shared.held_for_body.borrow_mut().remove(&self.context_id);
                self.state.borrow_mut().phase = Phase::Decided;
                match judge_body(&shared, *pending, shared.gate.max_body_bytes() + 1) {
                    Ok(verdict) => carry_out(&shared, verdict, &headers, &self.state),
                    Err(action) => action,
                }
            }
            Phase::WaitingForBody(pending) => {
                shared.start();
                // Whatever data frames came were held (Pause buffers them): the whole body.
                judge_buffered_body(&shared, *pending, shared.gate.max_body_bytes() + 1)
            }
            Phase::WaitingForKeys {
                headers,
                end_of_stream,
                body_seen,
                ..
            } => {
                shared.body_arrived_while_held();
                self.state.borrow_mut().phase = Phase::WaitingForKeys {
                    headers,
                    end_of_stream,
                    body_seen,
                    body_ended: true,
                };
                Action::Pause
            }
            other => {
                self.state.borrow_mut().phase = other;
                Action::Continue
            }
        }
    }

    /// A model listing's response is filtered for the caller (`list_models` routes).
    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match &self.shared {
            Some(shared) => listing::on_headers(shared, &self.state, end_of_stream),
            None => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &self.shared {
            Some(shared) => listing::on_body(shared, &self.state, body_size, end_of_stream),
            None => Action::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match &self.shared {
            Some(shared) => listing::on_trailers(shared, &self.state),
            None => Action::Continue,
        }
    }
}

/// Reads the body held so far (at most `size` bytes are asked for) and judges its model; the
/// headers already went upstream, so an allow lets the body follow.
fn judge_buffered_body(shared: &Shared, pending: Pending, size: usize) -> Action {
    match judge_body(shared, pending, size) {
        Ok(verdict) => finish_body(shared, verdict),
        Err(action) => action,
    }
}

fn judge_body(shared: &Shared, pending: Pending, size: usize) -> Result<Verdict, Action> {
    let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
        .map_err(|_| internal_error("cannot read request body"))?;
    Ok(if body.len() > shared.gate.max_body_bytes() {
        shared.gate.decide_with_body(pending, None)
    } else {
        shared.gate.decide_with_body(pending, Some(&body))
    })
}

fn decide(shared: &Shared, headers: &HeaderMap, now: i64, may_wait: bool) -> Step {
    let lookup = |name: &str| headers.get(name);
    let any_name = |wanted: &dyn Fn(&str) -> bool| headers.names().any(wanted);
    shared.gate.decide(
        &gate::RequestHead {
            method: headers.first(":method"),
            path: headers.first(":path"),
            host: headers.first(":authority"),
            header: &lookup,
            any_header_name: &any_name,
        },
        now,
        may_wait,
    )
}

/// The request a decision is carried out for.
#[derive(Clone, Copy)]
struct Held<'a> {
    context_id: u32,
    state: &'a Rc<RefCell<RequestState>>,
    now: i64,
}

/// Carries out a decision taken while the request headers are still held.
fn apply_headers_step(
    shared: &Shared,
    held: Held<'_>,
    step: Step,
    request_headers: &HeaderMap,
    end_of_stream: bool,
) -> Action {
    let state = held.state;
    match step {
        Step::Done(verdict) => {
            state.borrow_mut().phase = Phase::Decided;
            carry_out(shared, verdict, request_headers, state)
        }
        Step::NeedBody { pending, .. } if end_of_stream => {
            state.borrow_mut().phase = Phase::Decided;
            let verdict = shared.gate.decide_with_body(*pending, Some(&[]));
            carry_out(shared, verdict, request_headers, state)
        }
        Step::NeedBody { pending, headers } if shared.body_hold.get().holds_headers() => {
            // Held whole until the model is read: a refusal then leaves no trace upstream.
            state.borrow_mut().phase = Phase::HoldingForBody {
                pending,
                headers: request_headers.clone(),
                headers_first: headers,
            };
            shared
                .held_for_body
                .borrow_mut()
                .insert(held.context_id, (held.now, state.clone()));
            Action::Pause
        }
        Step::NeedBody { pending, headers } => {
            if let Err(action) = rewrite_headers(shared, request_headers, &headers) {
                return action;
            }
            state.borrow_mut().phase = Phase::WaitingForBody(pending);
            Action::Continue
        }
        Step::NeedKeys { .. } => internal_error("keys requested twice"),
    }
}

/// Called from the root context, with this request's context made effective, once the keys it
/// waited for arrived (or will not): decide again and let the request go on or answer it.
pub fn resume_after_keys(shared: &Shared, state: &Rc<RefCell<RequestState>>, context_id: u32) {
    let phase = std::mem::take(&mut state.borrow_mut().phase);
    let Phase::WaitingForKeys {
        headers,
        end_of_stream,
        body_seen,
        body_ended,
    } = phase
    else {
        state.borrow_mut().phase = phase;
        return;
    };
    let now = shared.start();
    let step = decide(shared, &headers, now, false);
    let action = match step {
        // The host already handed over the whole body while the headers were held: judge it
        // now, before anything goes upstream.
        Step::NeedBody { pending, .. } if body_seen && body_ended => {
            state.borrow_mut().phase = Phase::Decided;
            match judge_body(shared, *pending, shared.gate.max_body_bytes() + 1) {
                Ok(verdict) => carry_out(shared, verdict, &headers, state),
                Err(action) => action,
            }
        }
        // Otherwise the body (if any) is buffered by Envoy and delivered after the resume; a
        // request that ended with its headers has no body to wait for.
        step => {
            let held = Held {
                context_id,
                state,
                now,
            };
            apply_headers_step(shared, held, step, &headers, end_of_stream)
        }
    };
    if let Action::Continue = action {
        if hostcalls::resume_request().is_err() {
            log::error!("mlgate: could not resume a request after its keys arrived");
        }
    }
}

/// Called from the root context, with this request's context made effective: the request was
/// held at its headers for a body that has not come (a host that delivers no body while the
/// headers are held). It goes upstream headers first, with the caller's identity; its body is
/// held and judged when it comes, as on such hosts always.
pub fn let_go_headers_first(shared: &Shared, state: &Rc<RefCell<RequestState>>) {
    let phase = std::mem::take(&mut state.borrow_mut().phase);
    let Phase::HoldingForBody {
        pending,
        headers,
        headers_first,
    } = phase
    else {
        state.borrow_mut().phase = phase;
        return;
    };
    shared.body_hold_timed_out();
    if rewrite_headers(shared, &headers, &headers_first).is_err() {
        return;
    }
    state.borrow_mut().phase = Phase::WaitingForBody(pending);
    if hostcalls::resume_request().is_err() {
        log::error!("mlgate: could not resume a request held for its body");
    }
}

/// Counts the decision and hands its record to the host, before the verdict is carried out:
/// as filter state `wasm.mlgate` (one JSON object, for the access log, which Envoy writes when the
/// stream ends) and, when the policy's `audit` level says so, as a log line.
fn record(shared: &Shared, verdict: &Verdict) {
    let audit = &verdict.audit;
    shared.metrics.record(audit, shared.started.get());
    let json = audit.json();
    if hostcalls::set_property("mlgate", json.as_bytes()).is_err() {
        log::warn!("mlgate: the host refused the decision's filter state");
    }
    if shared.gate.logs(audit) {
        // The audit trail straight to the host: the `log` facade would format it once more.
        hostcalls::log(LogLevel::Info, &format!("mlgate audit {json}"));
    }
    if let Some(trace) = shared.gate.explain(verdict) {
        hostcalls::log(LogLevel::Info, &format!("mlgate trace {trace}"));
    }
}

/// Carries out a verdict while the request headers are still held.
fn carry_out(
    shared: &Shared,
    verdict: Verdict,
    request_headers: &HeaderMap,
    state: &RefCell<RequestState>,
) -> Action {
    record(shared, &verdict);
    match verdict.action {
        gate::Disposition::Forward(forward) => {
            if let Err(action) = rewrite_headers(shared, request_headers, &forward) {
                return action;
            }
            match verdict.listing {
                Some(listing) => match listing::expect(state, listing) {
                    Ok(()) => Action::Continue,
                    Err(what) => internal_error(what),
                },
                None => Action::Continue,
            }
        }
        gate::Disposition::Reply(reply) => send_reply(&reply, verdict.audit.reason),
    }
}

/// Carries out the verdict on a body whose headers already went upstream: allow lets the
/// held body follow; a refusal answers the client, and Envoy resets the upstream request.
fn finish_body(shared: &Shared, verdict: Verdict) -> Action {
    record(shared, &verdict);
    match verdict.action {
        gate::Disposition::Forward(_) => Action::Continue,
        gate::Disposition::Reply(reply) => send_reply(&reply, verdict.audit.reason),
    }
}

/// The request's headers on the host, for [`headers::rewrite`].
struct RequestHeaders;

impl HeaderHost for RequestHeaders {
    fn remove_header(&mut self, name: &str) -> Result<(), HostRefused> {
        hostcalls::remove_header(MapType::HttpRequestHeaders, name)
            .map_err(|_| HostRefused("remove_header"))
    }

    fn add_header(&mut self, name: &str, value: &str) -> Result<(), HostRefused> {
        hostcalls::add_header(MapType::HttpRequestHeaders, name, value)
            .map_err(|_| HostRefused("add_header"))
    }
}

/// Removes client-sent identity headers, adds the verified ones; any host error fails closed.
fn rewrite_headers(
    shared: &Shared,
    request_headers: &HeaderMap,
    forward_headers: &gate::Headers,
) -> Result<(), Action> {
    let forward = &shared.gate.policy.forward;
    headers::rewrite(
        &mut RequestHeaders,
        forward,
        request_headers,
        forward_headers.iter(),
    )
    .map_err(|HostRefused(what)| internal_error(what))
}

/// Answers with a refusal; Envoy's `%RESPONSE_CODE_DETAILS%` becomes `mlgate_<reason>`.
pub(super) fn send_reply(reply: &crate::decision::LocalReply, reason: Option<&str>) -> Action {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_ref()))
        .collect();
    let details = format!("mlgate_{}", reason.unwrap_or("refused"));
    if let Err(error) = hostcalls::send_local_response(
        u32::from(reply.status),
        &details,
        &headers,
        reply.body.as_bytes(),
    ) {
        hostcalls::log(
            LogLevel::Critical,
            &format!(
                "mlgate: could not send the {} reply: {error:?}",
                reply.status
            ),
        );
    }
    Action::Pause
}

/// `make bench`'s `mlgate-replay`: the host calls of the first forwarded decision, without deciding.
#[cfg(feature = "bench-replay")]
fn replay(shared: &Shared, first: &super::replay::Replay, request_headers: &HeaderMap) -> Action {
    shared.metrics.record(&first.audit, shared.started.get());
    if hostcalls::set_property("mlgate", first.json.as_bytes()).is_err() {
        return internal_error("the host refused the decision's filter state");
    }
    match rewrite_headers(shared, request_headers, &first.forward) {
        Ok(()) => Action::Continue,
        Err(action) => action,
    }
}

/// Fail closed when the host itself misbehaves.
fn internal_error(what: &str) -> Action {
    log::error!("mlgate: internal error: {what}");
    let body = br#"{"error":"internal","reason":"internal_error"}"#;
    let _ignored = hostcalls::send_local_response(
        500,
        "mlgate_internal_error",
        &[("content-type", "application/json")],
        body,
    );
    Action::Pause
}
