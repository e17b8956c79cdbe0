//! mlgate-harness: a proxy-wasm host on wasmtime that drives the real `mlgate.wasm`,
//! and the dev tools around it (token minting, demo IdP, demo ML backend, policy checker).
//!
//! Everything that needs wasmtime sits behind the `wasm-host` feature, so the demo's programs
//! (`idp`, `backend`, `token`) build without it.

pub mod mint;

#[cfg(feature = "wasm-host")]
pub mod host;

#[cfg(feature = "wasm-host")]
pub mod check;

#[cfg(feature = "wasm-host")]
pub mod explain;

#[cfg(feature = "wasm-host")]
pub mod bench;

pub mod bench_tokens;

pub mod backend;
pub mod http_server;
pub mod idp;

mod demo_cli;
