//! The proxy-wasm ABI 0.2.1 as the host sees it: status codes, the small enums passed by value, and
//! reading/writing guest memory (including handing the guest memory it owns, through its allocator).
//!
//! Nothing here knows about requests or harness state; `imports.rs` builds the hostcalls on top of it.

use wasmtime::{Caller, Extern, Memory};

use super::state::HostState;

/// `proxy_result_t`: what every hostcall returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// The key, queue, metric, call or property does not exist.
    NotFound = 1,
    /// An argument is out of range or does not apply in this context.
    BadArgument = 2,
    /// The value could not be serialized.
    SerializationFailure = 3,
    /// The input could not be parsed (e.g. a malformed header map).
    ParseFailure = 4,
    /// A pointer/length pair falls outside guest memory.
    InvalidMemoryAccess = 6,
    /// A shared queue has nothing to dequeue.
    Empty = 7,
    /// `proxy_set_shared_data` was given a stale CAS.
    CasMismatch = 8,
    /// The host failed.
    InternalFailure = 10,
    /// The hostcall exists but is not implemented by this host (gRPC).
    Unimplemented = 12,
}

/// Log levels of `proxy_log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5 (the proxy-wasm SDK logs panics at this level)
    Critical,
}

impl LogLevel {
    pub(crate) fn from_abi(level: u32) -> Option<LogLevel> {
        Some(match level {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    pub(crate) fn to_abi(self) -> u32 {
        self as u32
    }
}

/// `proxy_buffer_type_t`.
pub(crate) mod buffer {
    pub const HTTP_REQUEST_BODY: u32 = 0;
    pub const HTTP_RESPONSE_BODY: u32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub const VM_CONFIGURATION: u32 = 6;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
}

/// `proxy_map_type_t`.
pub(crate) mod map {
    pub const HTTP_REQUEST_HEADERS: u32 = 0;
    pub const HTTP_REQUEST_TRAILERS: u32 = 1;
    pub const HTTP_RESPONSE_HEADERS: u32 = 2;
    pub const HTTP_RESPONSE_TRAILERS: u32 = 3;
    pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
}

/// `proxy_stream_type_t`.
pub(crate) mod stream {
    pub const HTTP_REQUEST: u32 = 0;
    pub const HTTP_RESPONSE: u32 = 1;
    pub const DOWNSTREAM: u32 = 2;
    pub const UPSTREAM: u32 = 3;
}

/// `proxy_action_t` returned by the stream callbacks.
pub(crate) const ACTION_CONTINUE: u32 = 0;

/// A hostcall's failure: either a status returned to the guest, or a trap (host bug, guest allocator trap,
/// `proc_exit`) that aborts the guest's callback.
#[derive(Debug)]
pub(crate) enum Fault {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fault {
    fn from(s: Status) -> Self {
        Fault::Status(s)
    }
}

impl From<wasmtime::Error> for Fault {
    fn from(e: wasmtime::Error) -> Self {
        Fault::Trap(e)
    }
}

/// Turns a hostcall body's result into the `u32` status the guest sees, or a trap.
pub(crate) fn finish(result: Result<(), Fault>) -> wasmtime::Result<u32> {
    match result {
        Ok(()) => Ok(Status::Ok as u32),
        Err(Fault::Status(s)) => Ok(s as u32),
        Err(Fault::Trap(e)) => Err(e),
    }
}

type Cx<'a> = Caller<'a, HostState>;

fn memory(caller: &mut Cx<'_>) -> Result<Memory, Fault> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(Fault::Trap(wasmtime::format_err!(
            "the module exports no memory named `memory`"
        ))),
    }
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(caller: &mut Cx<'_>, ptr: u32, len: u32) -> Result<Vec<u8>, Fault> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let mem = memory(caller)?;
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    let data = mem.data(&*caller);
    Ok(data
        .get(start..end)
        .ok_or(Status::InvalidMemoryAccess)?
        .to_vec())
}

/// Reads guest memory as UTF-8 text (lossily: the guest's bytes are shown, not refused).
pub(crate) fn read_string(caller: &mut Cx<'_>, ptr: u32, len: u32) -> Result<String, Fault> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

/// Writes `bytes` at `ptr` in guest memory.
pub(crate) fn write(caller: &mut Cx<'_>, ptr: u32, bytes: &[u8]) -> Result<(), Fault> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mem = memory(caller)?;
    mem.write(&mut *caller, ptr as usize, bytes)
        .map_err(|_| Status::InvalidMemoryAccess)?;
    Ok(())
}

/// Writes a little-endian `u32` (pointers and sizes are 32-bit on wasm32).
pub(crate) fn write_u32(caller: &mut Cx<'_>, ptr: u32, value: u32) -> Result<(), Fault> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64`.
pub(crate) fn write_u64(caller: &mut Cx<'_>, ptr: u32, value: u64) -> Result<(), Fault> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates `size` bytes in the guest with its exported `proxy_on_memory_allocate` (or `malloc`).
pub(crate) fn allocate(caller: &mut Cx<'_>, size: u32) -> Result<u32, Fault> {
    let func = ["proxy_on_memory_allocate", "malloc"]
        .iter()
        .find_map(|name| caller.get_export(name).and_then(Extern::into_func))
        .ok_or_else(|| {
            Fault::Trap(wasmtime::format_err!(
                "the module exports neither proxy_on_memory_allocate nor malloc"
            ))
        })?;
    let typed = func.typed::<u32, u32>(&*caller).map_err(Fault::Trap)?;
    let ptr = typed.call(&mut *caller, size).map_err(Fault::Trap)?;
    if ptr == 0 && size != 0 {
        return Err(Fault::Trap(wasmtime::format_err!(
            "the guest allocator returned null for {size} bytes"
        )));
    }
    Ok(ptr)
}

/// Hands `data` to the guest: allocates a copy in guest memory and writes its pointer and size to
/// `*ptr_out` and `*size_out`. Empty data is returned as (null, 0) without allocating, as Envoy does.
pub(crate) fn return_bytes(
    caller: &mut Cx<'_>,
    data: &[u8],
    ptr_out: u32,
    size_out: u32,
) -> Result<(), Fault> {
    let size = u32::try_from(data.len()).map_err(|_| Status::BadArgument)?;
    let ptr = if data.is_empty() {
        0
    } else {
        allocate(caller, size)?
    };
    write(caller, ptr, data)?;
    write_u32(caller, ptr_out, ptr)?;
    write_u32(caller, size_out, size)
}

/// Splits a property path: segments separated by NUL (a trailing NUL is tolerated).
pub(crate) fn property_path(bytes: &[u8]) -> Vec<String> {
    let trimmed = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(property_path(b"request\0id"), ["request", "id"]);
        assert_eq!(property_path(b"plugin_name\0"), ["plugin_name"]);
        assert!(property_path(b"").is_empty());
    }

    #[test]
    fn log_levels_round_trip() {
        for n in 0..=5 {
            assert_eq!(LogLevel::from_abi(n).map(LogLevel::to_abi), Some(n));
        }
        assert_eq!(LogLevel::from_abi(6), None);
    }
}
