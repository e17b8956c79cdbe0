//! [`HarnessBuilder`]: the settings a [`Harness`] is created with, and loading the module into a new VM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::Store;

use super::abi::{LogLevel, Status};
use super::api::Harness;
use super::driver::{Inner, ROOT_CONTEXT_ID};
use super::error::HostError;
use super::host_crypto;
use super::module::{self, wasm_path};
use super::shared::SharedData;
use super::state::{ForeignFn, HostConfig, HostState};

/// Distinguishes harnesses sharing one [`SharedData`] (queue owners). Not host state: only an id source.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

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
    /// Visible to the other host modules: `host_crypto`'s tests check what is registered by default.
    pub(super) foreign: HashMap<String, ForeignFn>,
    seed: Option<u64>,
    log_level: LogLevel,
    clusters: Option<Vec<String>>,
    callback_timeout: Duration,
    count_operators: bool,
    body_while_headers_held: bool,
    env: Vec<(String, String)>,
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
            // Envoy as mlgate's configurations run it (envoy/demo.yaml sets the flag).
            body_while_headers_held: true,
            // Deterministic: no variable unless a test sets one.
            env: Vec::new(),
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

    /// Envoy with `allow_on_headers_stop_iteration` (wasm `PluginConfig`, Envoy ≥ 1.35), the default: Pause at
    /// the request headers stays `StopIteration`, so the body and trailer callbacks still arrive while the headers
    /// are held (and the body is buffered while the filter pauses them), instead of waiting for the resume.
    pub fn body_while_headers_held(mut self) -> Self {
        self.body_while_headers_held = true;
        self
    }

    /// Envoy without `allow_on_headers_stop_iteration` (and hosts like it): Pause at the request headers is
    /// `StopAllIterationAndWatermark`, so no body or trailer callback arrives until the filter resumes the
    /// request; the body is buffered meanwhile.
    pub fn no_body_while_headers_held(mut self) -> Self {
        self.body_while_headers_held = false;
        self
    }

    /// Counts the WebAssembly operators the filter executes ([`Harness::wasm_operators`]): wasmtime's fuel,
    /// about one unit per operator, host calls not included. The module is compiled with metering, which
    /// slows it: for counting, not timing.
    pub fn count_wasm_operators(mut self) -> Self {
        self.count_operators = true;
        self
    }

    /// Adds a variable to the VM's environment (WASI `environ_get`), as Envoy's
    /// `vm_config.environment_variables` does. The environment is empty by default.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
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
            env: self.env,
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
        let mut inner = Inner::new(store, instance, timeout_ticks, self.body_while_headers_held);
        inner.start_vm(vm_config_len)?;
        Ok(Harness::new(inner, self.shared, self.vm_id))
    }
}
