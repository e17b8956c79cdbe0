//! Driving the module: calling its callbacks the way Envoy does. One call with its trap and timeout
//! handling; starting the VM; (re)configuring; a request's lifecycle (headers, then body and trailers as
//! far as the filter lets them go, pause and resume, `proxy_on_log`/`done`/`delete` at the end); callout
//! answers; queue notifications; ticks. [`Harness`](super::Harness) holds an [`Inner`] and asks it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use wasmtime::{Instance, Store, WasmParams, WasmResults};

use super::abi::ACTION_CONTINUE;
use super::error::HostError;
use super::headers::Headers;
use super::outcome::{LogEntry, Outcome};
use super::request::RequestSpec;
use super::state::{CallResponse, HostState, NextCallback, Stream};

/// The id of the root context of every harness.
pub const ROOT_CONTEXT_ID: u32 = 1;

/// The VM behind a [`Harness`](super::Harness): its store and instance, and the host's bookkeeping of
/// contexts.
pub(super) struct Inner {
    pub(super) store: Store<HostState>,
    instance: Instance,
    poisoned: Option<String>,
    next_context_id: u32,
    completed: BTreeMap<u32, Outcome>,
    /// The properties each finished request set (`proxy_set_property`: Envoy's filter state).
    completed_properties: BTreeMap<u32, HashMap<String, Vec<u8>>>,
    timeout_ticks: u64,
    body_while_headers_held: bool,
}

/// Which of a request's callbacks returned: a pause at the headers holds the body back, a pause later
/// holds what was buffered so far.
#[derive(PartialEq)]
enum Phase {
    Headers,
    Body,
}

impl Inner {
    /// A VM just instantiated, before any callback.
    pub(super) fn new(
        store: Store<HostState>,
        instance: Instance,
        timeout_ticks: u64,
        body_while_headers_held: bool,
    ) -> Inner {
        Inner {
            store,
            instance,
            poisoned: None,
            next_context_id: ROOT_CONTEXT_ID + 1,
            completed: BTreeMap::new(),
            completed_properties: BTreeMap::new(),
            timeout_ticks,
            body_while_headers_held,
        }
    }

    /// Starts the VM: `_initialize` (or `_start`), `proxy_on_context_create(root, 0)`,
    /// `proxy_on_vm_start(root, vm_config_size)` (the order of proxy-wasm-cpp-host).
    pub(super) fn start_vm(&mut self, vm_config_len: u32) -> Result<(), HostError> {
        let root = ROOT_CONTEXT_ID;
        if self.has_export("_initialize") {
            self.call::<(), ()>("_initialize", root, ())?;
        } else if self.has_export("_start") {
            self.call::<(), ()>("_start", root, ())?;
        }
        self.call::<(u32, u32), ()>("proxy_on_context_create", root, (root, 0))?;
        if self.call::<(u32, u32), u32>("proxy_on_vm_start", root, (root, vm_config_len))?
            == Some(0)
        {
            return Err(HostError::VmStartRefused {
                logs: self.store.data().logs.clone(),
            });
        }
        self.settle()
    }

    /// `proxy_on_configure` on the root context with `config` as the plugin configuration.
    pub(super) fn configure(&mut self, config: Vec<u8>) -> Result<(), HostError> {
        let len = config.len() as u32;
        self.store.data_mut().plugin_config = config;
        let root = ROOT_CONTEXT_ID;
        let accepted = self.call::<(u32, u32), u32>("proxy_on_configure", root, (root, len))?;
        self.settle()?;
        if accepted == Some(0) {
            return Err(HostError::ConfigureRefused {
                logs: self.store.data().logs.clone(),
            });
        }
        Ok(())
    }

    /// A new request in a new context: `proxy_on_context_create`, `proxy_on_request_headers`, then the body
    /// and trailers as far as the filter lets them go. Its outcome so far (`Paused` while the filter holds it).
    pub(super) fn send(&mut self, spec: RequestSpec) -> Result<Outcome, HostError> {
        self.check_usable()?;
        let ctx = self.next_context_id;
        self.next_context_id += 1;
        let RequestSpec {
            headers,
            body,
            trailers,
            properties,
            response,
        } = spec;
        let n_headers = headers.len() as u32;
        let chunks: VecDeque<Vec<u8>> = body.unwrap_or_default().into();
        let has_body = !chunks.is_empty();
        let end_after_headers = !has_body && trailers.is_empty();
        let next = if has_body {
            NextCallback::Body
        } else if !trailers.is_empty() {
            NextCallback::Trailers
        } else {
            NextCallback::End
        };
        let stream = Stream {
            request_headers: headers,
            pending_body: chunks,
            request_trailers: trailers,
            next,
            properties,
            upstream_response: response,
            ..Stream::default()
        };
        self.store.data_mut().streams.insert(ctx, stream);
        let root = ROOT_CONTEXT_ID;
        self.call::<(u32, u32), ()>("proxy_on_context_create", ctx, (ctx, root))?;
        self.request_phase(
            ctx,
            "proxy_on_request_headers",
            (ctx, n_headers, end_after_headers as u32),
            Phase::Headers,
        )?;
        self.drive(ctx)?;
        self.settle()?;
        Ok(self.outcome(ctx).unwrap_or(Outcome::Paused {
            context_id: ctx,
            logs: Vec::new(),
        }))
    }

    /// A downstream reset of request `context_id`: it finishes (`proxy_on_log`, `done`, `delete`) as `Reset`.
    pub(super) fn disconnect(&mut self, context_id: u32) -> Result<(), HostError> {
        self.check_usable()?;
        let Some(s) = self.store.data_mut().streams.get_mut(&context_id) else {
            return Err(HostError::Abi(format!(
                "disconnect: request {context_id} is not in flight"
            )));
        };
        s.reset = true;
        s.finished = true;
        s.paused = false;
        self.settle()
    }

    /// `proxy_on_tick` on the root context if the filter set a tick period; whether it fired.
    pub(super) fn tick(&mut self) -> Result<bool, HostError> {
        if self.store.data().tick_period.is_none() {
            return Ok(false);
        }
        let root = ROOT_CONTEXT_ID;
        self.call::<u32, ()>("proxy_on_tick", root, root)?;
        self.settle()?;
        Ok(true)
    }

    fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    fn check_usable(&self) -> Result<(), HostError> {
        match &self.poisoned {
            Some(why) => Err(HostError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    /// Calls export `name` in context `context_id`; `None` if the module does not export it (every
    /// callback is optional). A trap poisons the VM.
    /// Notes the operators executed so far, when marking (see `imports::mark`).
    fn mark_operators(&mut self, what: impl FnOnce() -> String) {
        if self.store.data().operator_marks.is_none() {
            return;
        }
        let Ok(fuel) = self.store.get_fuel() else {
            return;
        };
        if let Some(marks) = self.store.data_mut().operator_marks.as_mut() {
            marks.push((u64::MAX - fuel, what()));
        }
    }

    fn call<P: WasmParams, Rt: WasmResults>(
        &mut self,
        name: &str,
        context_id: u32,
        params: P,
    ) -> Result<Option<Rt>, HostError> {
        self.check_usable()?;
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let typed = func
            .typed::<P, Rt>(&self.store)
            .map_err(|e| HostError::Abi(format!("{name}: {e}")))?;
        self.store.data_mut().effective = context_id;
        self.store.set_epoch_deadline(self.timeout_ticks);
        self.mark_operators(|| format!("enter {name}"));
        let result = typed.call(&mut self.store, params);
        self.mark_operators(|| format!("leave {name}"));
        self.store.data_mut().effective = ROOT_CONTEXT_ID;
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let timed_out = matches!(
                    e.downcast_ref::<wasmtime::Trap>(),
                    Some(wasmtime::Trap::Interrupt)
                );
                let message = if timed_out {
                    format!("the callback ran out of time: {e:?}")
                } else {
                    format!("{e:?}")
                };
                self.poisoned = Some(format!("{name} (context {context_id}) trapped: {e}"));
                Err(HostError::Trap {
                    callback: name.into(),
                    context_id,
                    message,
                    logs: self.store.data().logs.clone(),
                })
            }
        }
    }

    /// Runs one of a request's own callbacks and applies its action.
    fn request_phase<P: WasmParams>(
        &mut self,
        ctx: u32,
        name: &str,
        params: P,
        phase: Phase,
    ) -> Result<(), HostError> {
        self.store.data_mut().in_request_callback = Some(ctx);
        let result = self.call::<P, u32>(name, ctx, params);
        self.store.data_mut().in_request_callback = None;
        let action = result?.unwrap_or(ACTION_CONTINUE);
        let Some(s) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(());
        };
        if s.finished {
            return Ok(());
        }
        let go = action == ACTION_CONTINUE || std::mem::take(&mut s.continue_requested);
        if go {
            s.held = false;
            s.held_at_headers = false;
            if s.forwarded_headers.is_none() {
                s.forwarded_headers = Some(s.request_headers.clone());
            }
            if phase == Phase::Body {
                s.forward_held_body();
            }
        } else {
            s.held = true;
            s.held_at_headers = phase == Phase::Headers;
        }
        Ok(())
    }

    /// Delivers the request callbacks still owed to `ctx`, as far as the filter lets them go: nothing while
    /// its headers are held (Envoy's `StopAllIterationAndWatermark`: the body is buffered), the body and
    /// trailers once it resumes, then the request goes upstream unless a later callback holds it.
    fn drive(&mut self, ctx: u32) -> Result<(), HostError> {
        loop {
            let Some(s) = self.store.data_mut().streams.get_mut(&ctx) else {
                return Ok(());
            };
            if s.finished {
                return Ok(());
            }
            if s.held && std::mem::take(&mut s.resume_requested) {
                // Frames that arrived while the headers were held were buffered by the host.
                s.coalesce_body = s.held_at_headers;
                s.held = false;
                s.held_at_headers = false;
                s.paused = false;
                if s.forwarded_headers.is_none() {
                    s.forwarded_headers = Some(s.request_headers.clone());
                }
                if s.next == NextCallback::End {
                    s.forward_held_body();
                }
            }
            if s.held_at_headers && !self.body_while_headers_held {
                s.paused = true;
                return Ok(());
            }
            let n_trailers = s.request_trailers.len() as u32;
            match s.next {
                NextCallback::Body => {
                    let mut frame = s.pending_body.pop_front().unwrap_or_default();
                    if std::mem::take(&mut s.coalesce_body) {
                        while let Some(more) = s.pending_body.pop_front() {
                            frame.extend(more);
                        }
                    }
                    // Envoy hands the filter the whole buffered body, its size in the callback.
                    s.request_body.extend(frame);
                    let last = s.pending_body.is_empty();
                    s.next = if !last {
                        NextCallback::Body
                    } else if n_trailers > 0 {
                        NextCallback::Trailers
                    } else {
                        NextCallback::End
                    };
                    let eos = (last && n_trailers == 0) as u32;
                    let body_len = s.request_body.len() as u32;
                    self.request_phase(
                        ctx,
                        "proxy_on_request_body",
                        (ctx, body_len, eos),
                        Phase::Body,
                    )?;
                }
                NextCallback::Trailers => {
                    s.next = NextCallback::End;
                    self.request_phase(
                        ctx,
                        "proxy_on_request_trailers",
                        (ctx, n_trailers),
                        Phase::Body,
                    )?;
                }
                NextCallback::End => {
                    if s.held {
                        s.paused = true;
                        return Ok(());
                    }
                    s.forward_rest();
                    return self.respond(ctx);
                }
            }
        }
    }

    /// The upstream answers a forwarded request (if the test gave a response): response headers, body
    /// frames and trailers as far as the filter lets them go, as Envoy delivers them — while the filter
    /// holds the response headers the body is delivered only where the host does that for request
    /// bodies too (`allow_on_headers_stop_iteration`); a body callback that pauses buffers the body.
    fn respond(&mut self, ctx: u32) -> Result<(), HostError> {
        let Some(s) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(());
        };
        let Some(spec) = s.upstream_response.take() else {
            return Ok(());
        };
        let mut headers = Headers::new();
        headers.add(":status", &spec.status.to_string());
        for (name, value) in &spec.headers {
            headers.add(name, value);
        }
        let n_headers = headers.len() as u32;
        s.response_headers = headers;
        s.response_trailers = Headers::from_pairs(spec.trailers);
        let n_trailers = s.response_trailers.len() as u32;
        let mut frames: VecDeque<Vec<u8>> = spec.body.into();
        let eos = frames.is_empty() && n_trailers == 0;
        let mut sent_body = Vec::new();
        let go = self.response_phase(
            ctx,
            "proxy_on_response_headers",
            (ctx, n_headers, eos as u32),
        )?;
        let Some(go) = go else { return Ok(()) };
        if !go && !self.body_while_headers_held && !eos {
            // Envoy without the flag buffers the body until the headers continue: nothing comes.
            return Ok(());
        }
        while let Some(frame) = frames.pop_front() {
            let Some(s) = self.store.data_mut().streams.get_mut(&ctx) else {
                return Ok(());
            };
            s.response_body.extend(frame);
            let size = s.response_body.len() as u32;
            let last = frames.is_empty() && n_trailers == 0;
            let go =
                self.response_phase(ctx, "proxy_on_response_body", (ctx, size, last as u32))?;
            let Some(go) = go else { return Ok(()) };
            if go {
                if let Some(s) = self.store.data_mut().streams.get_mut(&ctx) {
                    sent_body.extend(std::mem::take(&mut s.response_body));
                }
            }
        }
        if n_trailers > 0 {
            let go = self.response_phase(ctx, "proxy_on_response_trailers", (ctx, n_trailers))?;
            let Some(go) = go else { return Ok(()) };
            if go {
                if let Some(s) = self.store.data_mut().streams.get_mut(&ctx) {
                    sent_body.extend(std::mem::take(&mut s.response_body));
                }
            }
        }
        let Some(s) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(());
        };
        if !s.response_body.is_empty() {
            // The filter still holds part of the body: the response never completes.
            s.downstream_response = None;
            return Ok(());
        }
        if let Some(started) = s.downstream_response.take() {
            s.downstream_response = Some(super::outcome::Response {
                headers: started.headers,
                body: sent_body,
                trailers: s.response_trailers.clone(),
            });
        }
        Ok(())
    }

    /// Runs one of a request's response callbacks: `Some(true)` when it let the response go on (the
    /// headers go downstream, as they are now, the first time), `Some(false)` when it held it, `None`
    /// when it answered locally (after the headers went downstream Envoy can only reset the stream).
    fn response_phase<P: WasmParams>(
        &mut self,
        ctx: u32,
        name: &str,
        params: P,
    ) -> Result<Option<bool>, HostError> {
        self.store.data_mut().in_request_callback = Some(ctx);
        let result = self.call::<P, u32>(name, ctx, params);
        self.store.data_mut().in_request_callback = None;
        let action = result?.unwrap_or(ACTION_CONTINUE);
        let Some(s) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(None);
        };
        if s.local_response.is_some() || s.reset {
            if s.response_started {
                s.local_response = None;
                s.reset = true;
            }
            return Ok(None);
        }
        let go = action == ACTION_CONTINUE || std::mem::take(&mut s.continue_requested);
        if go && !s.response_started {
            s.response_started = true;
            s.downstream_response = Some(super::outcome::Response {
                headers: s.response_headers.clone(),
                body: Vec::new(),
                trailers: Headers::new(),
            });
        }
        Ok(Some(go))
    }

    /// Answers callout `token` with `response` and `status` (what `proxy_get_status` reports):
    /// `proxy_on_http_call_response` on the root context.
    pub(super) fn deliver_call(
        &mut self,
        token: u32,
        response: CallResponse,
        status: (u32, String),
    ) -> Result<(), HostError> {
        self.check_usable()?;
        self.store
            .data_mut()
            .calls
            .remove(&token)
            .ok_or(HostError::UnknownCall(token))?;
        let counts = (
            response.headers.len() as u32,
            response.body.len() as u32,
            response.trailers.len() as u32,
        );
        let state = self.store.data_mut();
        state.call_response = Some(response);
        state.status = status;
        // Envoy's calls belong to the root context, whichever context was effective at dispatch.
        let ctx = ROOT_CONTEXT_ID;
        let params = (ctx, token, counts.0, counts.1, counts.2);
        let result =
            self.call::<(u32, u32, u32, u32, u32), ()>("proxy_on_http_call_response", ctx, params);
        self.store.data_mut().call_response = None;
        result?;
        self.settle()
    }

    /// After a callback: delivers queue notifications and finishes requests that were forwarded, answered
    /// or reset (`proxy_on_log`, `proxy_on_done`, `proxy_on_delete`), until nothing changes.
    pub(super) fn settle(&mut self) -> Result<(), HostError> {
        for _ in 0..1000 {
            let resumed: Vec<u32> = self
                .store
                .data()
                .streams
                .iter()
                .filter(|(_, s)| s.resume_requested && !s.finished)
                .map(|(id, _)| *id)
                .collect();
            for ctx in &resumed {
                self.drive(*ctx)?;
            }
            let ready = self.take_ready_queues();
            let finished: Vec<u32> = self
                .store
                .data()
                .streams
                .iter()
                .filter(|(_, s)| s.finished)
                .map(|(id, _)| *id)
                .collect();
            if ready.is_empty() && finished.is_empty() && resumed.is_empty() {
                return Ok(());
            }
            for (queue, ctx) in ready {
                self.call::<(u32, u32), ()>("proxy_on_queue_ready", ctx, (ctx, queue))?;
            }
            for ctx in finished {
                self.finalize(ctx)?;
            }
        }
        Err(HostError::Load(
            "the filter keeps itself busy: 1000 rounds of queue notifications without rest".into(),
        ))
    }

    fn take_ready_queues(&mut self) -> Vec<(u32, u32)> {
        let state = self.store.data();
        let (uid, root) = (state.uid, state.root_id);
        let live: Vec<u32> = state.streams.keys().copied().collect();
        let mut store = state.shared.lock();
        let mut ready = Vec::new();
        for (i, q) in store.queues.iter_mut().enumerate() {
            if q.ready && q.owner.0 == uid {
                q.ready = false;
                let ctx = if live.contains(&q.owner.1) {
                    q.owner.1
                } else {
                    root
                };
                ready.push((i as u32 + 1, ctx));
            }
        }
        ready
    }

    fn finalize(&mut self, ctx: u32) -> Result<(), HostError> {
        self.call::<u32, ()>("proxy_on_log", ctx, ctx)?;
        self.call::<u32, u32>("proxy_on_done", ctx, ctx)?;
        self.call::<u32, ()>("proxy_on_delete", ctx, ctx)?;
        let state = self.store.data_mut();
        // Callouts stay: in Envoy they belong to the root context, not to the request.
        let Some(stream) = state.streams.remove(&ctx) else {
            return Ok(());
        };
        let logs: Vec<LogEntry> = state
            .logs
            .iter()
            .filter(|l| l.context_id == ctx)
            .cloned()
            .collect();
        let outcome = if let Some(r) = stream.local_response {
            Outcome::Responded {
                context_id: ctx,
                status: r.status,
                headers: r.headers,
                body: r.body,
                details: r.details,
                upstream_headers: stream.forwarded_headers,
                logs,
            }
        } else if stream.reset {
            Outcome::Reset {
                context_id: ctx,
                logs,
            }
        } else {
            Outcome::Forwarded {
                context_id: ctx,
                request_headers: stream.forwarded_headers.unwrap_or(stream.request_headers),
                body: stream.forwarded_body.unwrap_or(stream.request_body),
                response: stream.downstream_response,
                logs,
            }
        };
        self.completed.insert(ctx, outcome);
        self.completed_properties.insert(ctx, stream.properties);
        Ok(())
    }

    /// Property `path` (segments joined by NUL) that request `ctx` set, finished or not.
    pub(super) fn request_property(&self, ctx: u32, path: &str) -> Option<Vec<u8>> {
        match self.completed_properties.get(&ctx) {
            Some(properties) => properties.get(path).cloned(),
            None => self
                .store
                .data()
                .streams
                .get(&ctx)?
                .properties
                .get(path)
                .cloned(),
        }
    }

    /// The outcome of request `ctx`: final once it finished, else `Paused`; `None` if there was no such request.
    pub(super) fn outcome(&self, ctx: u32) -> Option<Outcome> {
        if let Some(done) = self.completed.get(&ctx) {
            return Some(done.clone());
        }
        let state = self.store.data();
        state.streams.get(&ctx)?;
        let logs = state
            .logs
            .iter()
            .filter(|l| l.context_id == ctx)
            .cloned()
            .collect();
        Some(Outcome::Paused {
            context_id: ctx,
            logs,
        })
    }
}
