//! The adapter: the only code that talks to the proxy-wasm host.
//!
//! It translates host callbacks into calls of the core (`config::compile`, `gate::Gate`) and
//! carries out the verdicts. It decides nothing itself. Hostcalls go through `hostcalls`, whose
//! wrappers never panic.
#![allow(unsafe_code)] // proxy_wasm::main! calls the module constructors.

mod host_crypto;
mod hostcalls;
mod http;
mod keys;
mod logger;
mod metrics;
mod request_state;
mod root;
mod shared;

use proxy_wasm::traits::RootContext;

proxy_wasm::main! {{
    // Not the SDK's `set_log_level`: its logger and panic hook unwrap the host's answers.
    logger::install();
    std::panic::set_hook(Box::new(|info| {
        // Reached only through a bug: say where, at the highest level, before the VM aborts.
        hostcalls::log(hostcalls::LogLevel::Critical, &format!("mlgate: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(root::Root::new(id)) });
}}
