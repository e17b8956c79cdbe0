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

mod abi;
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

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Instance, Store, WasmParams, WasmResults};

pub use abi::{LogLevel, Status};
pub use error::HostError;
pub use headers::Headers;
pub use module::{host_imports, missing_imports, wasm_path, workspace_root};
pub use outcome::{HttpCall, LogEntry, LogOrigin, Outcome, PendingRequest};
pub use request::RequestBuilder;
pub use shared::{Metric, MetricKind, SharedData};
pub use state::ForeignFn;

use abi::ACTION_CONTINUE;
use request::RequestSpec;
use state::{CallResponse, HostConfig, HostState, NextCallback, Stream};

/// Distinguishes harnesses sharing one [`SharedData`] (queue owners). Not host state: only an id source.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// The id of the root context of every harness.
pub const ROOT_CONTEXT_ID: u32 = 1;

/// Something that can be a plugin configuration: JSON text or a `serde_json::Value`.
pub trait ConfigSource {
    /// The bytes Envoy would hand the filter.
    fn into_config_bytes(self) -> Vec<u8>;
}

impl ConfigSource for &str {
    fn into_config_bytes(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}
impl ConfigSource for String {
    fn into_config_bytes(self) -> Vec<u8> {
        self.into_bytes()
    }
}
impl ConfigSource for &String {
    fn into_config_bytes(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}
impl ConfigSource for serde_json::Value {
    fn into_config_bytes(self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}
impl ConfigSource for &serde_json::Value {
    fn into_config_bytes(self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}
impl ConfigSource for &[u8] {
    fn into_config_bytes(self) -> Vec<u8> {
        self.to_vec()
    }
}

/// A point in time: a `SystemTime`, or unix seconds.
pub trait IntoSystemTime {
    /// The time as a `SystemTime`.
    fn into_system_time(self) -> SystemTime;
}
impl IntoSystemTime for SystemTime {
    fn into_system_time(self) -> SystemTime {
        self
    }
}
impl IntoSystemTime for u64 {
    fn into_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self)
    }
}

/// Settings for a [`Harness`]: `Harness::builder().shared(s.clone()).time(t).load()?`.
pub struct HarnessBuilder {
    wasm: Option<PathBuf>,
    shared: SharedData,
    now: Option<SystemTime>,
    vm_id: String,
    vm_config: Vec<u8>,
    properties: HashMap<String, Vec<u8>>,
    foreign: HashMap<String, ForeignFn>,
    seed: Option<u64>,
    log_level: LogLevel,
    clusters: Option<Vec<String>>,
    callback_timeout: Duration,
    count_operators: bool,
    body_while_headers_held: bool,
}

/// The default seed of `random_get`; the n-th VM on one [`SharedData`] gets it mixed with n.
const DEFAULT_SEED: u64 = 0x6d6c_6761_7465;

impl Default for HarnessBuilder {
    fn default() -> Self {
        let mut properties = HashMap::new();
        properties.insert("plugin_name".to_string(), b"mlgate".to_vec());
        properties.insert("plugin_root_id".to_string(), Vec::new());
        properties.insert("source\0address".to_string(), b"192.0.2.10:43210".to_vec());
        HarnessBuilder {
            wasm: None,
            shared: SharedData::new(),
            now: None,
            vm_id: "mlgate".into(),
            vm_config: Vec::new(),
            properties,
            // Envoy's `verify_signature`, natively (host_crypto.rs); `.without_host_crypto()` removes it.
            foreign: HashMap::from([(
                host_crypto::VERIFY_SIGNATURE.to_string(),
                Arc::new(host_crypto::verify_signature) as ForeignFn,
            )]),
            seed: None,
            log_level: LogLevel::Trace,
            clusters: None,
            callback_timeout: Duration::from_secs(10),
            count_operators: false,
            body_while_headers_held: false,
        }
    }
}

impl HarnessBuilder {
    /// Run this module instead of [`wasm_path`]'s.
    pub fn wasm(mut self, path: impl Into<PathBuf>) -> Self {
        self.wasm = Some(path.into());
        self
    }

    /// Share data, queues and metrics with the other harnesses built with (a clone of) `shared`, as the
    /// worker VMs of one Envoy do.
    pub fn shared(mut self, shared: SharedData) -> Self {
        self.shared = shared;
        self
    }

    /// Start the clock at `time` (default: the real time when the harness is created). It stays frozen
    /// until [`Harness::advance`] or [`Harness::set_time`].
    pub fn time(mut self, time: impl IntoSystemTime) -> Self {
        self.now = Some(time.into_system_time());
        self
    }

    /// The VM id (default `mlgate`); shared data and queues are scoped by it.
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = vm_id.into();
        self
    }

    /// The VM configuration passed to `proxy_on_vm_start` (default empty).
    pub fn vm_config(mut self, config: impl AsRef<[u8]>) -> Self {
        self.vm_config = config.as_ref().to_vec();
        self
    }

    /// A plugin-level property, e.g. `.property(&["plugin_name"], "mlgate")`.
    pub fn property(mut self, path: &[&str], value: impl AsRef<[u8]>) -> Self {
        self.properties
            .insert(path.join("\0"), value.as_ref().to_vec());
        self
    }

    /// A host function the filter can call by name with `proxy_call_foreign_function`.
    pub fn foreign_function(
        mut self,
        name: &str,
        function: impl Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync + 'static,
    ) -> Self {
        self.foreign.insert(name.into(), Arc::new(function));
        self
    }

    /// Without Envoy's `verify_signature` foreign function (registered by default): a host like the other
    /// proxy-wasm hosts, where the filter must fall back to its own crypto.
    pub fn without_host_crypto(mut self) -> Self {
        self.foreign.remove(host_crypto::VERIFY_SIGNATURE);
        self
    }

    /// Seed of the bytes WASI `random_get` returns. By default it is deterministic and differs between the
    /// VMs of one [`SharedData`] (as worker VMs' randomness does: e.g. their lock owner ids must differ).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// What `proxy_get_log_level` reports (default `Trace`; every line is captured regardless).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// Only these cluster names exist: `proxy_http_call` to another answers `BadArgument`, as Envoy does
    /// for an unknown cluster. By default every cluster exists.
    pub fn clusters<S: AsRef<str>>(mut self, clusters: impl IntoIterator<Item = S>) -> Self {
        self.clusters = Some(
            clusters
                .into_iter()
                .map(|c| c.as_ref().to_string())
                .collect(),
        );
        self
    }

    /// How long one callback may run before it is interrupted and reported as a trap (default 10 s).
    pub fn callback_timeout(mut self, timeout: Duration) -> Self {
        self.callback_timeout = timeout;
        self
    }

    /// Envoy with `allow_on_headers_stop_iteration` (wasm `PluginConfig`, Envoy ≥ 1.35): Pause at the request
    /// headers stays `StopIteration`, so the body and trailer callbacks still arrive while the headers are held
    /// (and the body is buffered while the filter pauses them), instead of waiting for the resume.
    pub fn body_while_headers_held(mut self) -> Self {
        self.body_while_headers_held = true;
        self
    }

    /// Counts the WebAssembly operators the filter executes ([`Harness::wasm_operators`]): wasmtime's fuel,
    /// about one unit per operator, host calls not included. The module is compiled with metering, which
    /// slows it: for counting, not timing.
    pub fn count_wasm_operators(mut self) -> Self {
        self.count_operators = true;
        self
    }

    /// Instantiates the module and starts the VM: `_initialize`, `proxy_on_context_create(root, 0)`,
    /// `proxy_on_vm_start(root, vm_config_size)` (the order of proxy-wasm-cpp-host).
    pub fn load(self) -> Result<Harness, HostError> {
        let path = match self.wasm {
            Some(path) => path,
            None => wasm_path()?,
        };
        let compiled = module::compiled(&path, self.count_operators)?;
        let vm_config_len = self.vm_config.len() as u32;
        let config = HostConfig {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            vm_id: self.vm_id.clone(),
            root_id: ROOT_CONTEXT_ID,
            vm_config: self.vm_config,
            properties: self.properties,
            foreign: self.foreign,
            seed: self.seed.unwrap_or_else(|| {
                let mut store = self.shared.lock();
                store.vms += 1;
                DEFAULT_SEED ^ (store.vms - 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            }),
            now: self.now.unwrap_or_else(SystemTime::now),
            log_level: self.log_level,
            shared: self.shared.clone(),
            clusters: self.clusters,
        };
        let timeout_ticks =
            (self.callback_timeout.as_millis() / module::EPOCH_TICK.as_millis()).max(1) as u64;
        let mut store = Store::new(&compiled.engine, HostState::new(config));
        store.set_epoch_deadline(timeout_ticks);
        if self.count_operators {
            store
                .set_fuel(u64::MAX)
                .map_err(|e| HostError::Load(format!("metering: {e:#}")))?;
        }
        let instance = compiled.pre.instantiate(&mut store).map_err(|e| {
            HostError::Load(format!("instantiating {}: {e:#}", compiled.path.display()))
        })?;
        let mut inner = Inner {
            store,
            instance,
            poisoned: None,
            next_context_id: ROOT_CONTEXT_ID + 1,
            completed: BTreeMap::new(),
            timeout_ticks,
            body_while_headers_held: self.body_while_headers_held,
        };
        let root = ROOT_CONTEXT_ID;
        if inner.has_export("_initialize") {
            inner.call::<(), ()>("_initialize", root, ())?;
        } else if inner.has_export("_start") {
            inner.call::<(), ()>("_start", root, ())?;
        }
        inner.call::<(u32, u32), ()>("proxy_on_context_create", root, (root, 0))?;
        if inner.call::<(u32, u32), u32>("proxy_on_vm_start", root, (root, vm_config_len))?
            == Some(0)
        {
            return Err(HostError::VmStartRefused {
                logs: inner.store.data().logs.clone(),
            });
        }
        inner.settle()?;
        Ok(Harness {
            inner: RefCell::new(inner),
            shared: self.shared,
            vm_id: self.vm_id,
        })
    }
}

/// One proxy-wasm VM running the filter, with one root context. See the module docs.
pub struct Harness {
    inner: RefCell<Inner>,
    shared: SharedData,
    vm_id: String,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("vm_id", &self.vm_id)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Store<HostState>,
    instance: Instance,
    poisoned: Option<String>,
    next_context_id: u32,
    completed: BTreeMap<u32, Outcome>,
    timeout_ticks: u64,
    body_while_headers_held: bool,
}

#[derive(PartialEq)]
enum Phase {
    Headers,
    Body,
}

impl Harness {
    /// Loads the module from [`wasm_path`] with default settings.
    pub fn load() -> Result<Harness, HostError> {
        HarnessBuilder::default().load()
    }

    /// Settings for a harness (shared data, clock, properties, foreign functions, …).
    pub fn builder() -> HarnessBuilder {
        HarnessBuilder::default()
    }

    /// Hands the filter its plugin configuration (`proxy_on_configure`). A refusal is
    /// [`HostError::ConfigureRefused`] with the logs that say why.
    pub fn configure(self, config: impl ConfigSource) -> Result<Harness, HostError> {
        self.reconfigure(config)?;
        Ok(self)
    }

    /// Calls `proxy_on_configure` again on the same root context with a new configuration.
    pub fn reconfigure(&self, config: impl ConfigSource) -> Result<(), HostError> {
        let mut inner = self.inner.borrow_mut();
        let bytes = config.into_config_bytes();
        let len = bytes.len() as u32;
        inner.store.data_mut().plugin_config = bytes;
        let root = ROOT_CONTEXT_ID;
        let accepted = inner.call::<(u32, u32), u32>("proxy_on_configure", root, (root, len))?;
        inner.settle()?;
        if accepted == Some(0) {
            return Err(HostError::ConfigureRefused {
                logs: inner.store.data().logs.clone(),
            });
        }
        Ok(())
    }

    /// Starts a request: `GET /` on host `localhost` until told otherwise.
    pub fn request(&self) -> RequestBuilder<'_> {
        RequestBuilder::new(self)
    }

    pub(crate) fn send_spec(&self, spec: RequestSpec) -> Result<Outcome, HostError> {
        let mut inner = self.inner.borrow_mut();
        inner.check_usable()?;
        let ctx = inner.next_context_id;
        inner.next_context_id += 1;
        let RequestSpec {
            headers,
            body,
            trailers,
            properties,
        } = spec;
        let n_headers = headers.len() as u32;
        let chunks: std::collections::VecDeque<Vec<u8>> = body.unwrap_or_default().into();
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
            ..Stream::default()
        };
        inner.store.data_mut().streams.insert(ctx, stream);
        let root = ROOT_CONTEXT_ID;
        inner.call::<(u32, u32), ()>("proxy_on_context_create", ctx, (ctx, root))?;
        inner.request_phase(
            ctx,
            "proxy_on_request_headers",
            (ctx, n_headers, end_after_headers as u32),
            Phase::Headers,
        )?;
        inner.drive(ctx)?;
        inner.settle()?;
        Ok(inner.outcome(ctx).unwrap_or(Outcome::Paused {
            context_id: ctx,
            logs: Vec::new(),
        }))
    }

    /// The client goes away while its request is in flight (e.g. paused): the stream is reset and the
    /// filter sees `proxy_on_log`, `proxy_on_done`, `proxy_on_delete` for it, as Envoy does on a downstream
    /// reset. Callouts it made stay pending (Envoy's calls belong to the root context). The outcome is
    /// `Reset`. An error if the request already ended.
    pub fn disconnect(&self, context_id: u32) -> Result<(), HostError> {
        let mut inner = self.inner.borrow_mut();
        inner.check_usable()?;
        let Some(s) = inner.store.data_mut().streams.get_mut(&context_id) else {
            return Err(HostError::Abi(format!(
                "disconnect: request {context_id} is not in flight"
            )));
        };
        s.reset = true;
        s.finished = true;
        s.paused = false;
        inner.settle()
    }

    /// The outcome of request `context_id` now: final once forwarded/answered/reset, else `Paused`.
    pub fn outcome(&self, context_id: u32) -> Option<Outcome> {
        self.inner.borrow().outcome(context_id)
    }

    /// Requests the filter holds, oldest first.
    pub fn pending_requests(&self) -> Vec<PendingRequest> {
        let inner = self.inner.borrow();
        let streams = &inner.store.data().streams;
        streams
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(id, s)| PendingRequest {
                context_id: *id,
                request_headers: s.request_headers.clone(),
            })
            .collect()
    }

    /// Callouts the filter made that nobody answered yet, in the order they were made.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.inner
            .borrow()
            .store
            .data()
            .calls
            .values()
            .cloned()
            .collect()
    }

    /// Pending callouts to one cluster.
    pub fn pending_calls_to(&self, cluster: &str) -> Vec<HttpCall> {
        self.pending_calls()
            .into_iter()
            .filter(|c| c.cluster == cluster)
            .collect()
    }

    /// Answers callout `token`: calls `proxy_on_http_call_response` with `:status` and `headers` in the call
    /// response header map and `body` in its buffer.
    pub fn respond_call(
        &self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: impl AsRef<[u8]>,
    ) -> Result<(), HostError> {
        let mut map = Headers::new();
        map.add(":status", &status.to_string());
        for (k, v) in headers {
            map.add(k, v);
        }
        let response = CallResponse {
            headers: map,
            body: body.as_ref().to_vec(),
            trailers: Headers::new(),
        };
        self.inner
            .borrow_mut()
            .deliver_call(token, response, (Status::Ok as u32, String::new()))
    }

    /// Fails callout `token` as Envoy reports a reset or timeout: no headers (no `:status`), no body,
    /// and `proxy_get_status` says `BrokenConnection` (11), "reset".
    pub fn fail_call(&self, token: u32) -> Result<(), HostError> {
        self.inner
            .borrow_mut()
            .deliver_call(token, CallResponse::default(), (11, "reset".into()))
    }

    /// Fires `proxy_on_tick` if the filter set a tick period; returns whether it did.
    pub fn tick(&self) -> Result<bool, HostError> {
        let mut inner = self.inner.borrow_mut();
        if inner.store.data().tick_period.is_none() {
            return Ok(false);
        }
        let root = ROOT_CONTEXT_ID;
        inner.call::<u32, ()>("proxy_on_tick", root, root)?;
        inner.settle()?;
        Ok(true)
    }

    /// The tick period the filter asked for.
    pub fn tick_period(&self) -> Option<Duration> {
        self.inner.borrow().store.data().tick_period
    }

    /// Delivers pending `proxy_on_queue_ready` notifications for queues this VM registered (e.g. after
    /// another VM enqueued). Happens by itself after every callback of this VM.
    pub fn poll(&self) -> Result<(), HostError> {
        self.inner.borrow_mut().settle()
    }

    /// The harness clock (wall time), frozen unless moved.
    pub fn now(&self) -> SystemTime {
        self.inner.borrow().store.data().now
    }

    /// The harness clock in unix seconds.
    pub fn now_unix(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// Sets the wall clock (the monotonic clock does not move).
    pub fn set_time(&self, time: impl IntoSystemTime) {
        self.inner.borrow_mut().store.data_mut().now = time.into_system_time();
    }

    /// Moves both clocks forward.
    pub fn advance(&self, by: Duration) {
        let mut inner = self.inner.borrow_mut();
        let state = inner.store.data_mut();
        state.now += by;
        state.monotonic += by;
    }

    /// Every captured log line, in order.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.inner.borrow().store.data().logs.clone()
    }

    /// Captured log lines containing `needle`.
    pub fn logs_containing(&self, needle: &str) -> Vec<LogEntry> {
        self.inner
            .borrow()
            .store
            .data()
            .logs
            .iter()
            .filter(|l| l.message.contains(needle))
            .cloned()
            .collect()
    }

    /// All captured lines as text, one per line (for assertion messages).
    pub fn log_text(&self) -> String {
        self.logs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// WebAssembly operators the filter executed since it was loaded, if the harness counts them
    /// ([`HarnessBuilder::count_wasm_operators`]).
    pub fn wasm_operators(&self) -> Option<u64> {
        let fuel = self.inner.borrow().store.get_fuel().ok()?;
        Some(u64::MAX - fuel)
    }

    /// Forgets the captured log lines.
    pub fn clear_logs(&self) {
        self.inner.borrow_mut().store.data_mut().logs.clear();
    }

    /// The value of counter or gauge `name` (shared by every VM on the same [`SharedData`]).
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.shared.metric(name).map(|m| m.value)
    }

    /// Every defined metric.
    pub fn metrics(&self) -> BTreeMap<String, Metric> {
        self.shared.metrics()
    }

    /// The shared store this VM uses.
    pub fn shared(&self) -> &SharedData {
        &self.shared
    }

    /// Shared data `key` of this VM's id.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.get(&self.vm_id, key).map(|(v, _)| v)
    }

    /// Sets a plugin-level property.
    pub fn set_property(&self, path: &[&str], value: impl AsRef<[u8]>) {
        let mut inner = self.inner.borrow_mut();
        inner
            .store
            .data_mut()
            .properties
            .insert(path.join("\0"), value.as_ref().to_vec());
    }

    /// A plugin-level property (including ones the filter set from its root context).
    pub fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.inner
            .borrow()
            .store
            .data()
            .properties
            .get(&path.join("\0"))
            .cloned()
    }

    /// Whether the filter called `proxy_done`.
    pub fn done_called(&self) -> bool {
        self.inner.borrow().store.data().done_called
    }

    /// The VM id.
    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }
}

impl Inner {
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
        let result = typed.call(&mut self.store, params);
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
                    } else {
                        s.forward_rest();
                    }
                    return Ok(());
                }
            }
        }
    }

    fn deliver_call(
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
    fn settle(&mut self) -> Result<(), HostError> {
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
                logs,
            }
        };
        self.completed.insert(ctx, outcome);
        Ok(())
    }

    fn outcome(&self, ctx: u32) -> Option<Outcome> {
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
