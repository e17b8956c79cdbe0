//! [`Harness`]: what tests call. Configure the filter, send requests, answer its callouts, fire its ticks,
//! move the clock, and read what it left behind (outcomes, logs, metrics, shared data, properties).
//! Calling into the module is `driver.rs`'s job; these methods hold the VM and ask it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::abi::Status;
use super::builder::{HarnessBuilder, IntoSystemTime};
use super::driver::Inner;
use super::error::HostError;
use super::headers::Headers;
use super::outcome::{HttpCall, LogEntry, Outcome, PendingRequest};
use super::request::{RequestBuilder, RequestSpec};
use super::shared::{Metric, SharedData};
use super::state::CallResponse;

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

impl Harness {
    /// A harness around a started VM ([`HarnessBuilder::load`] builds one).
    pub(super) fn new(inner: Inner, shared: SharedData, vm_id: String) -> Harness {
        Harness {
            inner: RefCell::new(inner),
            shared,
            vm_id,
        }
    }

    /// Loads the module from [`wasm_path`](super::wasm_path) with default settings.
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
        inner.configure(config.into_config_bytes())
    }

    /// Starts a request: `GET /` on host `localhost` until told otherwise.
    pub fn request(&self) -> RequestBuilder<'_> {
        RequestBuilder::new(self)
    }

    pub(crate) fn send_spec(&self, spec: RequestSpec) -> Result<Outcome, HostError> {
        self.inner.borrow_mut().send(spec)
    }

    /// The client goes away while its request is in flight (e.g. paused): the stream is reset and the
    /// filter sees `proxy_on_log`, `proxy_on_done`, `proxy_on_delete` for it, as Envoy does on a downstream
    /// reset. Callouts it made stay pending (Envoy's calls belong to the root context). The outcome is
    /// `Reset`. An error if the request already ended.
    pub fn disconnect(&self, context_id: u32) -> Result<(), HostError> {
        self.inner.borrow_mut().disconnect(context_id)
    }

    /// The outcome of request `context_id` now: final once forwarded/answered/reset, else `Paused`.
    pub fn outcome(&self, context_id: u32) -> Option<Outcome> {
        self.inner.borrow().outcome(context_id)
    }

    /// A property request `context_id` set (`proxy_set_property`; in Envoy, filter state
    /// `wasm.<path>` for a one-segment path), whether the request finished or not.
    pub fn request_property(&self, context_id: u32, path: &[&str]) -> Option<Vec<u8>> {
        self.inner
            .borrow()
            .request_property(context_id, &path.join("\0"))
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
        self.inner.borrow_mut().tick()
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

    /// Starts (or restarts) noting the operators executed at each host call and callback entry and
    /// return; the harness must count operators ([`HarnessBuilder::count_wasm_operators`]).
    pub fn mark_operators(&self) {
        self.inner.borrow_mut().store.data_mut().operator_marks = Some(Vec::new());
    }

    /// The marks noted since [`Harness::mark_operators`]: operators executed so far, and where
    /// (`enter proxy_on_request_headers`, `proxy_get_header_map_pairs`, `leave …`). Marking stops.
    pub fn take_operator_marks(&self) -> Vec<(u64, String)> {
        self.inner
            .borrow_mut()
            .store
            .data_mut()
            .operator_marks
            .take()
            .unwrap_or_default()
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
