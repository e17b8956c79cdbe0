//! The `wasi_snapshot_preview1` functions a Rust `wasm32-wasip1` filter imports, hand-rolled and
//! deterministic: no files, no arguments, no environment unless `HarnessBuilder::env` gives one;
//! stdout/stderr are captured as log lines; clocks are the harness clock; `random_get` is a seeded
//! generator; `proc_exit` traps.

use wasmtime::{Caller, Linker};

use super::abi::{read, write, write_u32, write_u64, Fault, LogLevel};
use super::outcome::LogOrigin;
use super::state::HostState;

type Cx<'a> = Caller<'a, HostState>;
type R = wasmtime::Result<u32>;

const SUCCESS: u32 = 0;
const EBADF: u32 = 8;
const EINVAL: u32 = 28;
const ENOSYS: u32 = 52;
const ESPIPE: u32 = 70;
const EFAULT: u32 = 21;

fn errno(result: Result<(), Fault>) -> R {
    match result {
        Ok(()) => Ok(SUCCESS),
        Err(Fault::Status(_)) => Ok(EFAULT),
        Err(Fault::Trap(e)) => Err(e),
    }
}

/// The environment as WASI hands it over: `NAME=value\0` per variable.
fn environ(state: &HostState) -> Vec<Vec<u8>> {
    state
        .env
        .iter()
        .map(|(name, value)| format!("{name}={value}\0").into_bytes())
        .collect()
}

/// Defines the WASI imports on `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let w = "wasi_snapshot_preview1";
    linker.func_wrap(
        w,
        "fd_write",
        |mut c: Cx, fd: u32, iovs: u32, n: u32, out: u32| -> R {
            if fd != 1 && fd != 2 {
                return Ok(EBADF);
            }
            errno((|| {
                let mut bytes = Vec::new();
                for i in 0..n {
                    let iov = read(&mut c, iovs + i * 8, 8)?;
                    let field = |at: usize| {
                        u32::from_le_bytes([iov[at], iov[at + 1], iov[at + 2], iov[at + 3]])
                    };
                    let (ptr, len) = (field(0), field(4));
                    bytes.extend(read(&mut c, ptr, len)?);
                }
                let written = bytes.len() as u32;
                let text = String::from_utf8_lossy(&bytes);
                let (level, origin) = if fd == 1 {
                    (LogLevel::Info, LogOrigin::Stdout)
                } else {
                    (LogLevel::Error, LogOrigin::Stderr)
                };
                for line in text.lines().filter(|l| !l.is_empty()) {
                    c.data_mut().log(level, origin, line.to_string());
                }
                write_u32(&mut c, out, written)
            })())
        },
    )?;
    linker.func_wrap(
        w,
        "fd_read",
        |_: Cx, _fd: u32, _iovs: u32, _n: u32, _out: u32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(w, "fd_close", |_: Cx, _fd: u32| -> R { Ok(EBADF) })?;
    linker.func_wrap(
        w,
        "fd_seek",
        |_: Cx, fd: u32, _off: i64, _whence: u32, _out: u32| -> R {
            Ok(if fd <= 2 { ESPIPE } else { EBADF })
        },
    )?;
    linker.func_wrap(w, "fd_fdstat_get", |mut c: Cx, fd: u32, out: u32| -> R {
        if fd > 2 {
            return Ok(EBADF);
        }
        // fdstat: filetype u8 (2 = character device), flags u16, rights base u64, rights inheriting u64.
        let mut stat = [0u8; 24];
        stat[0] = 2;
        stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        errno(write(&mut c, out, &stat))
    })?;
    linker.func_wrap(w, "fd_filestat_get", |_: Cx, _fd: u32, _out: u32| -> R {
        Ok(EBADF)
    })?;
    linker.func_wrap(w, "fd_prestat_get", |_: Cx, _fd: u32, _out: u32| -> R {
        Ok(EBADF)
    })?;
    linker.func_wrap(
        w,
        "fd_prestat_dir_name",
        |_: Cx, _fd: u32, _p: u32, _l: u32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        w,
        "path_open",
        |_: Cx, _: u32, _: u32, _: u32, _: u32, _: u32, _: i64, _: i64, _: u32, _: u32| -> R {
            Ok(EBADF)
        },
    )?;
    linker.func_wrap(
        w,
        "environ_sizes_get",
        |mut c: Cx, count: u32, size: u32| -> R {
            let entries = environ(c.data());
            let total: usize = entries.iter().map(Vec::len).sum();
            errno(
                write_u32(&mut c, count, entries.len() as u32)
                    .and_then(|()| write_u32(&mut c, size, total as u32)),
            )
        },
    )?;
    linker.func_wrap(w, "environ_get", |mut c: Cx, env: u32, buf: u32| -> R {
        let entries = environ(c.data());
        errno((|| {
            let mut at = buf;
            for (i, entry) in entries.iter().enumerate() {
                write_u32(&mut c, env + 4 * i as u32, at)?;
                write(&mut c, at, entry)?;
                at += entry.len() as u32;
            }
            Ok(())
        })())
    })?;
    linker.func_wrap(
        w,
        "args_sizes_get",
        |mut c: Cx, count: u32, size: u32| -> R {
            errno(write_u32(&mut c, count, 0).and_then(|()| write_u32(&mut c, size, 0)))
        },
    )?;
    linker.func_wrap(w, "args_get", |_: Cx, _argv: u32, _buf: u32| -> R {
        Ok(SUCCESS)
    })?;
    linker.func_wrap(
        w,
        "clock_time_get",
        |mut c: Cx, id: u32, _precision: u64, out: u32| -> R {
            let state = c.data();
            let nanos = match id {
                0 => state.now_nanos(),
                1..=3 => state.monotonic.as_nanos() as u64,
                _ => return Ok(EINVAL),
            };
            errno(write_u64(&mut c, out, nanos))
        },
    )?;
    linker.func_wrap(w, "clock_res_get", |mut c: Cx, id: u32, out: u32| -> R {
        if id > 3 {
            return Ok(EINVAL);
        }
        errno(write_u64(&mut c, out, 1))
    })?;
    linker.func_wrap(w, "random_get", |mut c: Cx, buf: u32, len: u32| -> R {
        let mut bytes = Vec::with_capacity(len as usize + 8);
        while bytes.len() < len as usize {
            let next = c.data_mut().next_random();
            bytes.extend_from_slice(&next.to_le_bytes());
        }
        bytes.truncate(len as usize);
        errno(write(&mut c, buf, &bytes))
    })?;
    linker.func_wrap(w, "sched_yield", |_: Cx| -> R { Ok(SUCCESS) })?;
    linker.func_wrap(
        w,
        "poll_oneoff",
        |_: Cx, _in: u32, _out: u32, _n: u32, _ret: u32| -> R { Ok(ENOSYS) },
    )?;
    linker.func_wrap(w, "proc_exit", |_: Cx, code: u32| -> wasmtime::Result<()> {
        Err(wasmtime::format_err!("the module called proc_exit({code})"))
    })?;
    Ok(())
}
