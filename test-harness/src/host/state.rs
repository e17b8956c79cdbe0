//! The state of one VM, kept in its wasmtime `Store` (never in globals, so harnesses run in parallel):
//! clock, logs, contexts and their header maps and bodies, callouts, properties, the shared store handle.
//!
//! This module holds data and answers lookups; the hostcalls that change it are in `imports.rs`/`wasi.rs`,
//! the driving of callbacks in `mod.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::abi::{buffer, map, LogLevel, Status};
use super::headers::Headers;
use super::outcome::{HttpCall, LogEntry, LogOrigin};
use super::shared::SharedData;

/// A host function the filter can call with `proxy_call_foreign_function`: arguments in, results out.
pub type ForeignFn = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, Status> + Send + Sync>;

/// A local response sent by the filter.
#[derive(Clone, Debug)]
pub(crate) struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// One HTTP context (a request in flight).
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub request_headers: Headers,
    /// The body the filter sees now: data frames delivered and held (a body callback that
    /// returned Pause buffers them, as Envoy's `StopIterationAndBuffer` does), not yet forwarded.
    pub request_body: Vec<u8>,
    /// Data frames not yet delivered, in order.
    pub pending_body: std::collections::VecDeque<Vec<u8>>,
    /// The headers were held and then resumed: the frames that arrived meanwhile were buffered by
    /// the host and come in one body callback.
    pub coalesce_body: bool,
    pub request_trailers: Headers,
    pub response_headers: Headers,
    pub response_body: Vec<u8>,
    pub response_trailers: Headers,
    /// What the upstream will answer, until it does.
    pub upstream_response: Option<super::request::UpstreamResponse>,
    /// What the client received of the upstream's response (`None`: no response, or it is held).
    pub downstream_response: Option<super::outcome::Response>,
    /// The response headers went downstream: a local response now can only reset the stream.
    pub response_started: bool,
    /// Properties set for this request (by the test, or by the filter in this context), by NUL-joined path.
    pub properties: HashMap<String, Vec<u8>>,
    /// Snapshot of the headers when the filter let them go upstream.
    pub forwarded_headers: Option<Headers>,
    /// The body the filter let go upstream, frame by frame (`None` until any was).
    pub forwarded_body: Option<Vec<u8>>,
    /// `proxy_continue_stream` was called during this stream's own callback.
    pub continue_requested: bool,
    /// `proxy_continue_stream` was called for this held stream from another callback; the host resumes it
    /// once that callback returns (Envoy defers `continueDecoding` until the VM call ends).
    pub resume_requested: bool,
    /// The next request callback owed to the filter.
    pub next: NextCallback,
    /// The filter returned Pause from `proxy_on_request_headers`: Envoy turns that `StopIteration` into
    /// `StopAllIterationAndWatermark`, so the body and trailers are buffered, not delivered, until it resumes.
    pub held_at_headers: bool,
    pub local_response: Option<LocalResponse>,
    pub reset: bool,
    /// The last stream callback returned Pause (and did not continue).
    pub held: bool,
    /// Every callback has been delivered and the filter holds the request.
    pub paused: bool,
    /// Forwarded, answered or reset: ready for on_log/on_done/on_delete.
    pub finished: bool,
}

impl Stream {
    /// Takes the parts not yet forwarded as they are now, and marks the stream finished.
    pub fn forward_rest(&mut self) {
        if self.forwarded_headers.is_none() {
            self.forwarded_headers = Some(self.request_headers.clone());
        }
        self.forward_held_body();
        self.finished = true;
        self.paused = false;
        self.held = false;
        self.held_at_headers = false;
    }

    /// The held body goes upstream, after whatever went before it.
    pub fn forward_held_body(&mut self) {
        let held = std::mem::take(&mut self.request_body);
        self.forwarded_body
            .get_or_insert_with(Vec::new)
            .extend(held);
    }
}

/// Which request callback the host delivers next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum NextCallback {
    Body,
    Trailers,
    /// Every callback was delivered.
    #[default]
    End,
}

/// The response to a callout, visible to the filter during `proxy_on_http_call_response`.
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

/// Settings a harness is built with.
#[derive(Clone)]
pub(crate) struct HostConfig {
    pub uid: u64,
    pub vm_id: String,
    pub root_id: u32,
    pub vm_config: Vec<u8>,
    pub properties: HashMap<String, Vec<u8>>,
    pub foreign: HashMap<String, ForeignFn>,
    pub seed: u64,
    pub now: SystemTime,
    pub log_level: LogLevel,
    pub shared: SharedData,
    pub clusters: Option<Vec<String>>,
    /// The VM's environment variables, in order.
    pub env: Vec<(String, String)>,
}

impl HostConfig {
    /// Settings for a store that never runs a module (used to list the linker's imports).
    pub fn placeholder() -> Self {
        HostConfig {
            uid: 0,
            vm_id: String::new(),
            root_id: 1,
            vm_config: Vec::new(),
            properties: HashMap::new(),
            foreign: HashMap::new(),
            seed: 0,
            now: UNIX_EPOCH,
            log_level: LogLevel::Trace,
            shared: SharedData::new(),
            clusters: None,
            env: Vec::new(),
        }
    }
}

/// Per-`Store` host state.
pub(crate) struct HostState {
    pub uid: u64,
    pub vm_id: String,
    pub root_id: u32,
    pub vm_config: Vec<u8>,
    pub plugin_config: Vec<u8>,
    pub log_level: LogLevel,
    pub logs: Vec<LogEntry>,
    pub now: SystemTime,
    pub monotonic: Duration,
    pub tick_period: Option<Duration>,
    /// The context hostcalls act on (changed by `proxy_set_effective_context`).
    pub effective: u32,
    /// The request whose own stream callback (headers/body/trailers) the host is running, if any.
    pub in_request_callback: Option<u32>,
    /// Cluster names `proxy_http_call` accepts (`None`: any).
    pub clusters: Option<Vec<String>>,
    pub streams: BTreeMap<u32, Stream>,
    pub calls: BTreeMap<u32, HttpCall>,
    pub next_call_token: u32,
    pub call_response: Option<CallResponse>,
    /// Properties of the plugin/VM, by NUL-joined path.
    pub properties: HashMap<String, Vec<u8>>,
    pub foreign: HashMap<String, ForeignFn>,
    pub shared: SharedData,
    pub rng: u64,
    /// Operators executed (fuel used) at each host call and callback entry and return, with its
    /// name, when marking ([`crate::host::Harness::mark_operators`]); `None`: not marking.
    pub operator_marks: Option<Vec<(u64, String)>>,
    /// (code, message) for `proxy_get_status`.
    pub status: (u32, String),
    pub done_called: bool,
    /// The VM's environment variables, in order (`wasi.rs`'s `environ_get`).
    pub env: Vec<(String, String)>,
}

impl HostState {
    pub fn new(config: HostConfig) -> Self {
        HostState {
            uid: config.uid,
            vm_id: config.vm_id,
            root_id: config.root_id,
            vm_config: config.vm_config,
            plugin_config: Vec::new(),
            log_level: config.log_level,
            logs: Vec::new(),
            now: config.now,
            monotonic: Duration::from_secs(1),
            tick_period: None,
            effective: config.root_id,
            in_request_callback: None,
            clusters: config.clusters,
            streams: BTreeMap::new(),
            calls: BTreeMap::new(),
            next_call_token: 1,
            call_response: None,
            properties: config.properties,
            foreign: config.foreign,
            shared: config.shared,
            rng: config.seed,
            operator_marks: None,
            status: (0, String::new()),
            done_called: false,
            env: config.env,
        }
    }

    /// Records a log line in the effective context.
    pub fn log(&mut self, level: LogLevel, origin: LogOrigin, message: String) {
        self.logs.push(LogEntry {
            level,
            context_id: self.effective,
            message,
            origin,
        });
    }

    /// The stream of the effective context, if it is one.
    pub fn stream_mut(&mut self) -> Result<&mut Stream, Status> {
        self.streams
            .get_mut(&self.effective)
            .ok_or(Status::BadArgument)
    }

    /// Wall-clock time in nanoseconds since the unix epoch.
    pub fn now_nanos(&self) -> u64 {
        self.now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }

    /// The header map `map_type` in the effective context.
    pub fn map(&mut self, map_type: u32) -> Result<&mut Headers, Status> {
        if let map::HTTP_CALL_RESPONSE_HEADERS | map::HTTP_CALL_RESPONSE_TRAILERS = map_type {
            let response = self.call_response.as_mut().ok_or(Status::NotFound)?;
            return Ok(if map_type == map::HTTP_CALL_RESPONSE_HEADERS {
                &mut response.headers
            } else {
                &mut response.trailers
            });
        }
        let stream = self
            .streams
            .get_mut(&self.effective)
            .ok_or(Status::NotFound)?;
        match map_type {
            map::HTTP_REQUEST_HEADERS => Ok(&mut stream.request_headers),
            map::HTTP_REQUEST_TRAILERS => Ok(&mut stream.request_trailers),
            map::HTTP_RESPONSE_HEADERS => Ok(&mut stream.response_headers),
            map::HTTP_RESPONSE_TRAILERS => Ok(&mut stream.response_trailers),
            _ => Err(Status::BadArgument),
        }
    }

    /// The buffer `buffer_type` in the effective context.
    pub fn buffer(&mut self, buffer_type: u32) -> Result<&mut Vec<u8>, Status> {
        match buffer_type {
            buffer::PLUGIN_CONFIGURATION => Ok(&mut self.plugin_config),
            buffer::VM_CONFIGURATION => Ok(&mut self.vm_config),
            buffer::HTTP_CALL_RESPONSE_BODY => self
                .call_response
                .as_mut()
                .map(|r| &mut r.body)
                .ok_or(Status::NotFound),
            buffer::HTTP_REQUEST_BODY | buffer::HTTP_RESPONSE_BODY => {
                let stream = self
                    .streams
                    .get_mut(&self.effective)
                    .ok_or(Status::NotFound)?;
                Ok(if buffer_type == buffer::HTTP_REQUEST_BODY {
                    &mut stream.request_body
                } else {
                    &mut stream.response_body
                })
            }
            _ => Err(Status::BadArgument),
        }
    }

    /// A property by path: set on the request, derived from the request, or set on the plugin.
    pub fn property(&self, path: &[String]) -> Option<Vec<u8>> {
        let key = path.join("\0");
        let stream = self.streams.get(&self.effective);
        if let Some(value) = stream.and_then(|s| s.properties.get(&key)) {
            return Some(value.clone());
        }
        if let Some(value) = stream.and_then(|s| derived_request_property(s, path)) {
            return Some(value);
        }
        if let Some(value) = self.properties.get(&key) {
            return Some(value.clone());
        }
        match path {
            [p] if p == "plugin_vm_id" => Some(self.vm_id.clone().into_bytes()),
            _ => None,
        }
    }

    /// splitmix64: deterministic "random" bytes for `random_get`.
    pub fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Envoy's request attributes, read from the request headers (`request.id` is the `x-request-id` header).
fn derived_request_property(stream: &Stream, path: &[String]) -> Option<Vec<u8>> {
    let h = &stream.request_headers;
    let [first, second] = path else { return None };
    if first != "request" {
        return None;
    }
    let value = match second.as_str() {
        "path" => h.get(":path")?.to_string(),
        "url_path" => h
            .get(":path")?
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string(),
        "query" => h
            .get(":path")?
            .split_once('?')
            .map(|(_, q)| q.to_string())
            .unwrap_or_default(),
        "host" => h.get(":authority")?.to_string(),
        "method" => h.get(":method")?.to_string(),
        "scheme" => h.get(":scheme")?.to_string(),
        "id" => h.get("x-request-id")?.to_string(),
        "referer" => h.get("referer")?.to_string(),
        "useragent" => h.get("user-agent")?.to_string(),
        "protocol" => "HTTP/1.1".to_string(),
        _ => return None,
    };
    Some(value.into_bytes())
}
