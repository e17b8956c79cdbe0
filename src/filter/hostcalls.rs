//! The proxy-wasm hostcalls mlgate uses, declared here and wrapped so every failure is a `Result`.
//!
//! Why not the SDK's `hostcalls` module: its wrappers `panic!` on any status they do not expect
//! and `unwrap` UTF-8 conversions of header values. A request header with an obs-text byte, or a
//! host answering `BadArgument`, would then trap the VM and take every later request down with
//! it. mlgate uses the SDK for the dispatcher (exports, contexts, allocator) and these wrappers
//! for every call it makes.
#![allow(unsafe_code)]

use std::ptr::null_mut;

use super::headers::HeaderMap;

/// A host status other than `Ok` (and `NotFound` where absence is an answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub u32);

type HostResult<T> = Result<T, HostError>;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

const CAS_MISMATCH: u32 = 8;

#[derive(Clone, Copy)]
#[repr(u32)]
#[allow(clippy::enum_variant_names)] // the ABI's names
pub enum MapType {
    HttpRequestHeaders = 0,
    HttpResponseHeaders = 2,
    HttpCallResponseHeaders = 6,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpResponseBody = 1,
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

fn status(code: u32) -> HostResult<()> {
    if code == OK {
        Ok(())
    } else {
        Err(HostError(code))
    }
}

/// Takes ownership of a buffer the host allocated in our memory through the SDK's
/// `proxy_on_memory_allocate` (a leaked `Vec<u8>` of capacity `size`).
fn take_buffer(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host wrote `size` bytes into a buffer it obtained from
    // `proxy_on_memory_allocate(size)`, which leaks a `Vec<u8>` with exactly that capacity.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: pointer and length describe a live &str.
    let _ignored = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// Host time in Unix seconds (0 if the host will not say: every token then looks expired or
/// not yet valid, which fails closed).
pub fn now_seconds() -> i64 {
    i64::try_from(now_nanos() / 1_000_000_000).unwrap_or(0)
}

/// Host time in Unix nanoseconds (0 if the host will not say).
pub fn now_nanos() -> u64 {
    let mut nanos: u64 = 0;
    // SAFETY: the host writes one u64 through the pointer.
    let code = unsafe { proxy_get_current_time_nanoseconds(&mut nanos) };
    if code == OK {
        nanos
    } else {
        0
    }
}

/// A variable of the VM's environment (WASI `environ_get`: Envoy's
/// `vm_config.environment_variables`, Istio's `vmConfig.env`), or `None` when it is not set. Not
/// a proxy-wasm hostcall, but a host interaction all the same, so it lives here. Bytes that are
/// not UTF-8 are replaced (the value is then refused as base64 by the configuration).
pub fn environment_variable(name: &str) -> Option<String> {
    std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
}

/// Sets a property of the current request. Envoy keeps it as filter state `wasm.<path>` (a
/// single-segment path) for the rest of the filter chain, the access log included.
pub fn set_property(path: &str, value: &[u8]) -> HostResult<()> {
    // SAFETY: pointers and lengths describe live buffers.
    status(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

pub fn get_buffer(buffer: BufferType, start: usize, max_size: usize) -> HostResult<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the host fills data/size with a buffer allocated in our memory.
    let code =
        unsafe { proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size) };
    match code {
        OK => Ok(take_buffer(data, size)),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(HostError(other)),
    }
}

/// Replaces `size` bytes from `start` of the buffer with `data`.
pub fn set_buffer(buffer: BufferType, start: usize, size: usize, data: &[u8]) -> HostResult<()> {
    // SAFETY: pointer and length describe a live slice.
    status(unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len()) })
}

/// All request headers, names as the host gives them (Envoy: lower-case), values as bytes
/// decoded lossily (a non-UTF-8 value can never equal a configured value or be a valid token).
pub fn get_headers(map: MapType) -> HostResult<HeaderMap> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: as in `get_buffer`.
    let code = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    match code {
        OK => Ok(HeaderMap::decode(take_buffer(data, size))),
        NOT_FOUND => Ok(HeaderMap::decode(Vec::new())),
        other => Err(HostError(other)),
    }
}

/// Appends a value; mlgate adds only names it has just stripped, so this never duplicates one.
pub fn add_header(map: MapType, name: &str, value: &str) -> HostResult<()> {
    // SAFETY: pointers and lengths describe live &strs.
    status(unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_header(map: MapType, name: &str) -> HostResult<()> {
    // SAFETY: pointer and length describe a live &str.
    status(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut serialized = Vec::with_capacity(64);
    serialized.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        serialized.extend_from_slice(&(name.len() as u32).to_le_bytes());
        serialized.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        serialized.extend_from_slice(name.as_bytes());
        serialized.push(0);
        serialized.extend_from_slice(value.as_bytes());
        serialized.push(0);
    }
    serialized
}

/// Answers the request. `details` becomes Envoy's `%RESPONSE_CODE_DETAILS%` (Envoy turns any
/// whitespace in it into `_`).
pub fn send_local_response(
    status_code: u32,
    details: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HostResult<()> {
    let serialized = serialize_pairs(headers);
    // SAFETY: pointers and lengths describe live buffers.
    status(unsafe {
        proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            serialized.as_ptr(),
            serialized.len(),
            -1,
        )
    })
}

pub fn define_counter(name: &str) -> HostResult<u32> {
    let mut id: u32 = 0;
    // SAFETY: pointer and length describe a live &str; the host writes one u32.
    status(unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment(id: u32) {
    // SAFETY: no pointers.
    let _ignored = unsafe { proxy_increment_metric(id, 1) };
}

/// Resumes a request paused in a request callback (of the effective context).
pub fn resume_request() -> HostResult<()> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(0) })
}

pub fn set_tick_period(milliseconds: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(milliseconds) })
}

/// Makes later hostcalls act for `context_id` (another request, or the root context).
pub fn set_effective_context(context_id: u32) -> HostResult<()> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// A value in the VM-wide shared data, with its CAS.
pub fn get_shared_data(key: &str) -> HostResult<Option<(Vec<u8>, u32)>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: as in `get_buffer`; the host writes one u32 for the CAS.
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match code {
        OK => Ok(Some((take_buffer(data, size), cas))),
        NOT_FOUND => Ok(None),
        other => Err(HostError(other)),
    }
}

/// Sets shared data if its CAS still is `cas` (0: unconditionally). `Ok(false)` on a CAS
/// mismatch.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> HostResult<bool> {
    // SAFETY: pointers and lengths describe live buffers.
    let code =
        unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas) };
    match code {
        OK => Ok(true),
        CAS_MISMATCH => Ok(false),
        other => Err(HostError(other)),
    }
}

pub fn define_gauge(name: &str) -> HostResult<u32> {
    let mut id: u32 = 0;
    // SAFETY: pointer and length describe a live &str; the host writes one u32.
    status(unsafe { proxy_define_metric(1, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// A histogram; [`record`] adds a sample.
pub fn define_histogram(name: &str) -> HostResult<u32> {
    let mut id: u32 = 0;
    // SAFETY: pointer and length describe a live &str; the host writes one u32.
    status(unsafe { proxy_define_metric(2, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn record(id: u32, value: u64) {
    // SAFETY: no pointers.
    let _ignored = unsafe { proxy_record_metric(id, value) };
}

/// A response header of the HTTP call being answered.
pub fn call_response_status() -> Option<u16> {
    get_headers(MapType::HttpCallResponseHeaders)
        .ok()?
        .first(":status")
        .parse()
        .ok()
}

/// Calls a foreign function the host registered. `Ok(None)` when the host has no function of
/// that name (other proxy-wasm hosts, older Envoys).
pub fn call_foreign_function(name: &str, arguments: &[u8]) -> HostResult<Option<Vec<u8>>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: pointers and lengths describe live buffers; the host fills data/size with a
    // buffer allocated in our memory.
    let code = unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut data,
            &mut size,
        )
    };
    match code {
        OK => Ok(Some(take_buffer(data, size))),
        NOT_FOUND => Ok(None),
        other => Err(HostError(other)),
    }
}
