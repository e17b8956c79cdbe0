//! The adapter: the only code that talks to the proxy-wasm host.
//!
//! It translates host callbacks into calls of the core (`config::compile`, `gate::Gate`) and
//! carries out the verdicts. It decides nothing itself. Hostcalls go through `hostcalls`, whose
//! wrappers never panic.
//!
//! `headers` is host-independent (the host behind a trait) and compiled natively too, so it is
//! unit-tested with `cargo test`; everything else here exists only in the VM.
#![cfg_attr(target_arch = "wasm32", allow(unsafe_code))] // proxy_wasm::main! calls the module constructors.

// Natively only its tests use it.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod headers;

#[cfg(target_arch = "wasm32")]
mod host_crypto;
#[cfg(target_arch = "wasm32")]
mod hostcalls;
#[cfg(target_arch = "wasm32")]
mod http;
#[cfg(target_arch = "wasm32")]
mod keys;
#[cfg(target_arch = "wasm32")]
mod listing;
#[cfg(target_arch = "wasm32")]
mod logger;
#[cfg(target_arch = "wasm32")]
mod metrics;
#[cfg(all(target_arch = "wasm32", feature = "bench-replay"))]
mod replay;
#[cfg(target_arch = "wasm32")]
mod request_state;
#[cfg(target_arch = "wasm32")]
mod root;
#[cfg(target_arch = "wasm32")]
mod shared;

#[cfg(target_arch = "wasm32")]
use proxy_wasm::traits::RootContext;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // Not the SDK's `set_log_level`: its logger and panic hook unwrap the host's answers.
    logger::install();
    std::panic::set_hook(Box::new(|info| {
        // Reached only through a bug: say where, at the highest level, before the VM aborts.
        hostcalls::log(hostcalls::LogLevel::Critical, &format!("mlgate: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(root::Root::new(id)) });
}}
