//! A proxy-wasm ABI 0.2.1 host on wasmtime that runs the real `mlgate.wasm` the way Envoy does, so tests
//! exercise the artifact that ships.
//!
//! ```no_run
//! use mlgate_harness::host::Harness;
//! use mlgate_harness::mint::{bearer, TestKey};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let h = Harness::load()?.configure(r#"{"providers": []}"#)?;
//! let token = TestKey::rsa_a().sign_default(&serde_json::json!({"sub": "alice"}));
//! let out = h.request().method("POST").path("/score").host("ml.example.com")
//!     .header("authorization", &bearer(&token)).body(b"{}").send()?;
//! if out.is_forwarded() {
//!     println!("{:?}", out.forwarded_header("x-mlgate-principal"));
//! } else {
//!     println!("{:?} {:?}", out.status(), out.reason());
//! }
//! # Ok(()) }
//! ```
//!
//! Every [`Harness`] is one VM with its own wasmtime `Store` and state (no globals: tests run in parallel).
//! The module is compiled once per process. Time is frozen at the harness's creation unless the test moves
//! it; callouts wait until the test answers them; ticks fire when the test says so.
//!
//! Envoy behaviours the host reproduces (proxy-wasm-cpp-host + Envoy's wasm filter):
//! - Pause from `proxy_on_request_headers` is `StopAllIterationAndWatermark`: while the headers are held the
//!   filter gets no body or trailer callbacks; they are buffered and delivered after it resumes
//!   (`proxy_continue_stream`), and never if it answers locally instead.
//! - `proxy_continue_stream` from another context's callback takes effect when that callback returns.
//! - `proxy_http_call` belongs to the root context whichever context is effective: the answer arrives in
//!   `proxy_on_http_call_response(root, token, …)` (SDKs route it by token) and is not cancelled when the
//!   request that was effective at dispatch ends.
//! - [`Harness::disconnect`] is a downstream reset: `proxy_on_log`/`done`/`delete` for the request.
//!
//! What the host does not model: the upstream's response (forwarded requests end at the upstream),
//! gRPC (answered `Unimplemented`), TCP streams, and more than one root context per VM.
//!
//! Where things are:
//! - `builder.rs`: [`HarnessBuilder`], the settings a harness is created with, and loading a VM.
//! - `api.rs`: [`Harness`], what tests call: configure, send requests, answer callouts, fire ticks, move the
//!   clock, read outcomes, logs, metrics, shared data and properties.
//! - `driver.rs`: calling the module's callbacks as Envoy does: the VM's start, a request's lifecycle
//!   (pause, resume, finish), callout answers, queue notifications, ticks; traps poison the VM.
//! - `request.rs`: [`RequestBuilder`], a request under construction.
//! - `outcome.rs`: what a test observes: [`Outcome`], [`LogEntry`], [`HttpCall`], [`PendingRequest`].
//! - `state.rs`: the state of one VM, kept in its wasmtime `Store`.
//! - `shared.rs`: [`SharedData`], what the VMs of one Envoy share (shared data, queues, metrics).
//! - `imports.rs`, `wasi.rs`, `abi.rs`, `headers.rs`: the hostcalls the module imports, and the ABI they speak.
//! - `module.rs`: finding and compiling the module, once per process.
//! - `host_crypto.rs`: Envoy's `verify_signature` foreign function.
//! - `error.rs`: [`HostError`].

mod abi;
mod api;
mod builder;
mod driver;
mod error;
mod headers;
pub mod host_crypto;
mod imports;
mod module;
mod outcome;
mod request;
mod shared;
mod state;
mod wasi;

pub use abi::{LogLevel, Status};
pub use api::{ConfigSource, Harness};
pub use builder::{HarnessBuilder, IntoSystemTime};
pub use driver::ROOT_CONTEXT_ID;
pub use error::HostError;
pub use headers::Headers;
pub use module::{host_imports, missing_imports, wasm_path, workspace_root};
pub use outcome::Response;
pub use outcome::{HttpCall, LogEntry, LogOrigin, Outcome, PendingRequest};
pub use request::RequestBuilder;
pub use request::UpstreamResponse;
pub use shared::{Metric, MetricKind, SharedData};
pub use state::ForeignFn;
