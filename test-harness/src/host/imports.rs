//! Every `env.proxy_*` hostcall of ABI 0.2.1 that the proxy-wasm Rust SDK 0.2.5 imports, acting on the
//! per-Store [`HostState`]. Each hostcall is a small function returning `Result<(), Fault>`; the linker
//! glue turns that into the status code the guest sees (or a trap).
//!
//! Semantics follow Envoy where the spec leaves room: header names are lower-cased, a repeated header's
//! value is its first one, `proxy_http_call` needs `:method`, `:path` and `:authority`, shared data CAS 0
//! is unconditional. gRPC calls answer `Unimplemented` (mlgate does not use gRPC).

use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::abi::{
    self, finish, read, read_string, return_bytes, stream, write_u32, write_u64, Fault, LogLevel,
    Status,
};
use super::headers::Headers;
use super::outcome::{HttpCall, LogOrigin};
use super::shared::MetricKind;
use super::state::{HostState, LocalResponse};

type Cx<'a> = Caller<'a, HostState>;
type R = wasmtime::Result<u32>;

/// Notes the WebAssembly operators executed so far as the module calls `hostcall`, when the
/// harness marks them ([`HostState::operator_marks`], a metered store): `mlgate-harness bench
/// --segments` prints the operators between host calls.
fn mark(c: &mut Cx, hostcall: &'static str) {
    if c.data().operator_marks.is_none() {
        return;
    }
    let Ok(fuel) = c.get_fuel() else {
        return;
    };
    if let Some(marks) = c.data_mut().operator_marks.as_mut() {
        marks.push((u64::MAX - fuel, hostcall.to_string()));
    }
}

/// Defines every `env.proxy_*` import on `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let env = "env";
    linker.func_wrap(env, "proxy_log", |mut c: Cx, l: u32, p: u32, n: u32| -> R {
        mark(&mut c, "proxy_log");
        finish(log(&mut c, l, p, n))
    })?;
    linker.func_wrap(env, "proxy_get_log_level", |mut c: Cx, out: u32| -> R {
        mark(&mut c, "proxy_get_log_level");
        let level = c.data().log_level.to_abi();
        finish(write_u32(&mut c, out, level))
    })?;
    linker.func_wrap(
        env,
        "proxy_get_current_time_nanoseconds",
        |mut c: Cx, out: u32| -> R {
            mark(&mut c, "proxy_get_current_time_nanoseconds");
            let now = c.data().now_nanos();
            finish(write_u64(&mut c, out, now))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_tick_period_milliseconds",
        |mut c: Cx, ms: u32| -> R {
            mark(&mut c, "proxy_set_tick_period_milliseconds");
            c.data_mut().tick_period = (ms > 0).then(|| Duration::from_millis(ms.into()));
            finish(Ok(()))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_buffer_bytes",
        |mut c: Cx, t: u32, s: u32, m: u32, po: u32, so: u32| -> R {
            mark(&mut c, "proxy_get_buffer_bytes");
            finish(get_buffer_bytes(&mut c, t, s, m, po, so))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_buffer_bytes",
        |mut c: Cx, t: u32, s: u32, n: u32, p: u32, l: u32| -> R {
            mark(&mut c, "proxy_set_buffer_bytes");
            finish(set_buffer_bytes(&mut c, t, s, n, p, l))
        },
    )?;
    add_header_map_calls(linker)?;
    linker.func_wrap(
        env,
        "proxy_get_property",
        |mut c: Cx, p: u32, l: u32, po: u32, so: u32| -> R {
            mark(&mut c, "proxy_get_property");
            finish(get_property(&mut c, p, l, po, so))
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_property",
        |mut c: Cx, p: u32, l: u32, vp: u32, vl: u32| -> R {
            mark(&mut c, "proxy_set_property");
            finish(set_property(&mut c, p, l, vp, vl))
        },
    )?;
    add_shared_calls(linker)?;
    add_stream_calls(linker)?;
    add_grpc_calls(linker)?;
    add_metric_calls(linker)?;
    linker.func_wrap(
        env,
        "proxy_get_status",
        |mut c: Cx, code: u32, po: u32, so: u32| -> R {
            mark(&mut c, "proxy_get_status");
            let (status, message) = c.data().status.clone();
            finish(
                write_u32(&mut c, code, status)
                    .and_then(|()| return_bytes(&mut c, message.as_bytes(), po, so)),
            )
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_effective_context",
        |mut c: Cx, id: u32| -> R {
            mark(&mut c, "proxy_set_effective_context");
            let state = c.data_mut();
            if id == state.root_id || state.streams.contains_key(&id) {
                state.effective = id;
                finish(Ok(()))
            } else {
                finish(Err(Status::BadArgument.into()))
            }
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_call_foreign_function",
        |mut c: Cx, np: u32, nl: u32, ap: u32, al: u32, po: u32, so: u32| -> R {
            mark(&mut c, "proxy_call_foreign_function");
            finish(call_foreign_function(&mut c, np, nl, ap, al, po, so))
        },
    )?;
    linker.func_wrap(env, "proxy_done", |mut c: Cx| -> R {
        mark(&mut c, "proxy_done");
        c.data_mut().done_called = true;
        finish(Ok(()))
    })?;
    Ok(())
}

fn log(c: &mut Cx, level: u32, ptr: u32, len: u32) -> Result<(), Fault> {
    let level = LogLevel::from_abi(level).ok_or(Status::BadArgument)?;
    let message = read_string(c, ptr, len)?;
    c.data_mut().log(level, LogOrigin::Proxy, message);
    Ok(())
}

fn get_buffer_bytes(
    c: &mut Cx,
    t: u32,
    start: u32,
    max: u32,
    ptr_out: u32,
    size_out: u32,
) -> Result<(), Fault> {
    let data = {
        let buf = c.data_mut().buffer(t)?;
        let start = (start as usize).min(buf.len());
        let end = start.saturating_add(max as usize).min(buf.len());
        buf.get(start..end).unwrap_or_default().to_vec()
    };
    return_bytes(c, &data, ptr_out, size_out)
}

fn set_buffer_bytes(
    c: &mut Cx,
    t: u32,
    start: u32,
    size: u32,
    ptr: u32,
    len: u32,
) -> Result<(), Fault> {
    let data = read(c, ptr, len)?;
    let buf = c.data_mut().buffer(t)?;
    let start = (start as usize).min(buf.len());
    let end = start.saturating_add(size as usize).min(buf.len());
    buf.splice(start..end, data);
    Ok(())
}

fn add_header_map_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let env = "env";
    linker.func_wrap(
        env,
        "proxy_get_header_map_pairs",
        |mut c: Cx, t: u32, po: u32, so: u32| -> R {
            mark(&mut c, "proxy_get_header_map_pairs");
            finish((|| {
                let data = c.data_mut().map(t)?.serialize();
                return_bytes(&mut c, &data, po, so)
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_header_map_pairs",
        |mut c: Cx, t: u32, p: u32, l: u32| -> R {
            mark(&mut c, "proxy_set_header_map_pairs");
            finish((|| {
                let headers = Headers::deserialize(&read(&mut c, p, l)?)?;
                *c.data_mut().map(t)? = headers;
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_header_map_value",
        |mut c: Cx, t: u32, kp: u32, kl: u32, po: u32, so: u32| -> R {
            mark(&mut c, "proxy_get_header_map_value");
            finish((|| {
                let key = read_string(&mut c, kp, kl)?;
                let value = c
                    .data_mut()
                    .map(t)?
                    .get(&key)
                    .ok_or(Status::NotFound)?
                    .to_string();
                return_bytes(&mut c, value.as_bytes(), po, so)
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_add_header_map_value",
        |mut c: Cx, t: u32, kp: u32, kl: u32, vp: u32, vl: u32| -> R {
            mark(&mut c, "proxy_add_header_map_value");
            finish((|| {
                let (key, value) = (read_string(&mut c, kp, kl)?, read_string(&mut c, vp, vl)?);
                c.data_mut().map(t)?.add(&key, &value);
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_replace_header_map_value",
        |mut c: Cx, t: u32, kp: u32, kl: u32, vp: u32, vl: u32| -> R {
            mark(&mut c, "proxy_replace_header_map_value");
            finish((|| {
                let (key, value) = (read_string(&mut c, kp, kl)?, read_string(&mut c, vp, vl)?);
                c.data_mut().map(t)?.replace(&key, &value);
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_remove_header_map_value",
        |mut c: Cx, t: u32, kp: u32, kl: u32| -> R {
            mark(&mut c, "proxy_remove_header_map_value");
            finish((|| {
                let key = read_string(&mut c, kp, kl)?;
                c.data_mut().map(t)?.remove(&key);
                Ok(())
            })())
        },
    )?;
    Ok(())
}

fn get_property(c: &mut Cx, ptr: u32, len: u32, ptr_out: u32, size_out: u32) -> Result<(), Fault> {
    let path = abi::property_path(&read(c, ptr, len)?);
    let value = c.data().property(&path).ok_or(Status::NotFound)?;
    return_bytes(c, &value, ptr_out, size_out)
}

fn set_property(c: &mut Cx, ptr: u32, len: u32, vptr: u32, vlen: u32) -> Result<(), Fault> {
    let key = abi::property_path(&read(c, ptr, len)?).join("\0");
    let value = read(c, vptr, vlen)?;
    let state = c.data_mut();
    match state.streams.get_mut(&state.effective) {
        Some(stream) => stream.properties.insert(key, value),
        None => state.properties.insert(key, value),
    };
    Ok(())
}

fn add_shared_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let env = "env";
    linker.func_wrap(
        env,
        "proxy_get_shared_data",
        |mut c: Cx, kp: u32, kl: u32, po: u32, so: u32, cas_out: u32| -> R {
            mark(&mut c, "proxy_get_shared_data");
            finish((|| {
                let key = read_string(&mut c, kp, kl)?;
                let state = c.data();
                // Copy out before calling the guest allocator: never hold the shared lock across guest code.
                let (value, cas) = state
                    .shared
                    .get(&state.vm_id, &key)
                    .ok_or(Status::NotFound)?;
                return_bytes(&mut c, &value, po, so)?;
                write_u32(&mut c, cas_out, cas)
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_set_shared_data",
        |mut c: Cx, kp: u32, kl: u32, vp: u32, vl: u32, cas: u32| -> R {
            mark(&mut c, "proxy_set_shared_data");
            finish((|| {
                let (key, value) = (read_string(&mut c, kp, kl)?, read(&mut c, vp, vl)?);
                let state = c.data();
                state.shared.set(&state.vm_id, &key, &value, cas)?;
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_register_shared_queue",
        |mut c: Cx, np: u32, nl: u32, id_out: u32| -> R {
            mark(&mut c, "proxy_register_shared_queue");
            finish((|| {
                let name = read_string(&mut c, np, nl)?;
                let state = c.data();
                let id = state.shared.lock().register_queue(
                    &state.vm_id,
                    &name,
                    (state.uid, state.effective),
                );
                write_u32(&mut c, id_out, id)
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_resolve_shared_queue",
        |mut c: Cx, vp: u32, vl: u32, np: u32, nl: u32, id_out: u32| -> R {
            mark(&mut c, "proxy_resolve_shared_queue");
            finish((|| {
                let (vm_id, name) = (read_string(&mut c, vp, vl)?, read_string(&mut c, np, nl)?);
                let state = c.data();
                let vm_id = if vm_id.is_empty() {
                    state.vm_id.clone()
                } else {
                    vm_id
                };
                let id = state
                    .shared
                    .lock()
                    .resolve_queue(&vm_id, &name)
                    .ok_or(Status::NotFound)?;
                write_u32(&mut c, id_out, id)
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_dequeue_shared_queue",
        |mut c: Cx, id: u32, po: u32, so: u32| -> R {
            mark(&mut c, "proxy_dequeue_shared_queue");
            finish((|| {
                let item = {
                    let mut store = c.data().shared.lock();
                    let queue = store.queue_mut(id).ok_or(Status::NotFound)?;
                    queue.items.pop_front().ok_or(Status::Empty)?
                };
                return_bytes(&mut c, &item, po, so)
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_enqueue_shared_queue",
        |mut c: Cx, id: u32, vp: u32, vl: u32| -> R {
            mark(&mut c, "proxy_enqueue_shared_queue");
            finish((|| {
                let value = read(&mut c, vp, vl)?;
                let mut store = c.data().shared.lock();
                let queue = store.queue_mut(id).ok_or(Status::NotFound)?;
                queue.items.push_back(value);
                queue.ready = true;
                Ok(())
            })())
        },
    )?;
    Ok(())
}

fn add_stream_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let env = "env";
    linker.func_wrap(env, "proxy_continue_stream", |mut c: Cx, t: u32| -> R {
        mark(&mut c, "proxy_continue_stream");
        finish(continue_stream(c.data_mut(), t))
    })?;
    linker.func_wrap(env, "proxy_close_stream", |mut c: Cx, t: u32| -> R {
        mark(&mut c, "proxy_close_stream");
        finish((|| {
            if t > stream::UPSTREAM {
                return Err(Status::BadArgument.into());
            }
            let s = c.data_mut().stream_mut()?;
            s.reset = true;
            s.finished = true;
            s.paused = false;
            Ok(())
        })())
    })?;
    linker.func_wrap(
        env,
        "proxy_send_local_response",
        |mut c: Cx,
         status: u32,
         dp: u32,
         dl: u32,
         bp: u32,
         bl: u32,
         hp: u32,
         hl: u32,
         _grpc: i32|
         -> R {
            mark(&mut c, "proxy_send_local_response");
            finish((|| {
                let details = read_string(&mut c, dp, dl)?;
                let body = read(&mut c, bp, bl)?;
                let headers = Headers::deserialize(&read(&mut c, hp, hl)?)?;
                let state = c.data_mut();
                let s = state.stream_mut()?;
                if s.local_response.is_some() {
                    let note = format!("harness: a second local response ({status}) was ignored");
                    state.log(LogLevel::Warn, LogOrigin::Host, note);
                    return Ok(());
                }
                s.local_response = Some(LocalResponse {
                    status,
                    details,
                    headers,
                    body,
                });
                s.finished = true;
                s.paused = false;
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_http_call",
        |mut c: Cx,
         up: u32,
         ul: u32,
         hp: u32,
         hl: u32,
         bp: u32,
         bl: u32,
         tp: u32,
         tl: u32,
         ms: u32,
         out: u32|
         -> R {
            mark(&mut c, "proxy_http_call");
            finish((|| {
                let cluster = read_string(&mut c, up, ul)?;
                let headers = Headers::deserialize(&read(&mut c, hp, hl)?)?;
                let body = read(&mut c, bp, bl)?;
                let trailers = Headers::deserialize(&read(&mut c, tp, tl)?)?;
                let token = http_call(c.data_mut(), cluster, headers, body, trailers, ms)?;
                write_u32(&mut c, out, token)
            })())
        },
    )?;
    Ok(())
}

fn continue_stream(state: &mut HostState, t: u32) -> Result<(), Fault> {
    let in_own_callback = state.in_request_callback == Some(state.effective);
    let s = state.stream_mut()?;
    match t {
        stream::HTTP_REQUEST if in_own_callback => s.continue_requested = true,
        // Deferred to the end of the current callback, as Envoy does (`addAfterVmCallAction`).
        stream::HTTP_REQUEST if s.held => s.resume_requested = true,
        stream::HTTP_REQUEST | stream::HTTP_RESPONSE | stream::DOWNSTREAM | stream::UPSTREAM => {}
        _ => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

fn http_call(
    state: &mut HostState,
    cluster: String,
    headers: Headers,
    body: Vec<u8>,
    trailers: Headers,
    timeout_ms: u32,
) -> Result<u32, Fault> {
    if let Some(known) = &state.clusters {
        if !known.contains(&cluster) {
            state.log(
                LogLevel::Warn,
                LogOrigin::Host,
                format!("harness: http call to unknown cluster {cluster:?}"),
            );
            return Err(Status::BadArgument.into());
        }
    }
    // Envoy refuses a callout without these pseudo-headers.
    for required in [":method", ":path", ":authority"] {
        if !headers.contains(required) {
            let note = format!("harness: http call to {cluster:?} refused: no {required} header");
            state.log(LogLevel::Warn, LogOrigin::Host, note);
            return Err(Status::BadArgument.into());
        }
    }
    let token = state.next_call_token;
    state.next_call_token += 1;
    let call = HttpCall {
        token,
        context_id: state.effective,
        cluster,
        headers,
        body,
        trailers,
        timeout: Duration::from_millis(timeout_ms.into()),
    };
    state.calls.insert(token, call);
    Ok(token)
}

fn add_grpc_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let env = "env";
    let unimplemented = || Ok(Status::Unimplemented as u32);
    linker.func_wrap(
        env,
        "proxy_grpc_call",
        move |_: Cx,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32,
              _: u32|
              -> R { unimplemented() },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_stream",
        move |_: Cx, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| -> R {
            unimplemented()
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_grpc_send",
        move |_: Cx, _: u32, _: u32, _: u32, _: u32| -> R { unimplemented() },
    )?;
    linker.func_wrap(env, "proxy_grpc_cancel", move |_: Cx, _: u32| -> R {
        unimplemented()
    })?;
    linker.func_wrap(env, "proxy_grpc_close", move |_: Cx, _: u32| -> R {
        unimplemented()
    })?;
    Ok(())
}

fn add_metric_calls(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let env = "env";
    linker.func_wrap(
        env,
        "proxy_define_metric",
        |mut c: Cx, t: u32, np: u32, nl: u32, out: u32| -> R {
            mark(&mut c, "proxy_define_metric");
            finish((|| {
                let kind = match t {
                    0 => MetricKind::Counter,
                    1 => MetricKind::Gauge,
                    2 => MetricKind::Histogram,
                    _ => return Err(Status::BadArgument.into()),
                };
                let name = read_string(&mut c, np, nl)?;
                let id = c.data().shared.lock().define_metric(kind, &name);
                write_u32(&mut c, out, id)
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_increment_metric",
        |mut c: Cx, id: u32, offset: i64| -> R {
            mark(&mut c, "proxy_increment_metric");
            finish((|| {
                let mut store = c.data().shared.lock();
                let m = store.metric_mut(id).ok_or(Status::NotFound)?;
                match m.kind {
                    MetricKind::Counter if offset >= 0 => m.value += offset,
                    MetricKind::Gauge => m.value += offset,
                    _ => return Err(Status::BadArgument.into()),
                }
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_record_metric",
        |mut c: Cx, id: u32, value: u64| -> R {
            mark(&mut c, "proxy_record_metric");
            finish((|| {
                let mut store = c.data().shared.lock();
                let m = store.metric_mut(id).ok_or(Status::NotFound)?;
                match m.kind {
                    MetricKind::Counter | MetricKind::Gauge => m.value = value as i64,
                    MetricKind::Histogram => m.samples.push(value),
                }
                Ok(())
            })())
        },
    )?;
    linker.func_wrap(
        env,
        "proxy_get_metric",
        |mut c: Cx, id: u32, out: u32| -> R {
            mark(&mut c, "proxy_get_metric");
            finish((|| {
                let value = {
                    let mut store = c.data().shared.lock();
                    let m = store.metric_mut(id).ok_or(Status::NotFound)?;
                    if m.kind == MetricKind::Histogram {
                        return Err(Status::BadArgument.into());
                    }
                    m.value as u64
                };
                write_u64(&mut c, out, value)
            })())
        },
    )?;
    Ok(())
}

fn call_foreign_function(
    c: &mut Cx,
    np: u32,
    nl: u32,
    ap: u32,
    al: u32,
    po: u32,
    so: u32,
) -> Result<(), Fault> {
    let name = read_string(c, np, nl)?;
    let args = read(c, ap, al)?;
    let function = c
        .data()
        .foreign
        .get(&name)
        .cloned()
        .ok_or(Status::NotFound)?;
    let result = function(&args)?;
    return_bytes(c, &result, po, so)
}
