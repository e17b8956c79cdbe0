//! The harness's errors. Each carries what a failing test needs to see: the logs, the callback, the imports.

use std::path::PathBuf;

use super::outcome::LogEntry;

/// Why the harness could not do what the test asked.
#[derive(Debug)]
pub enum HostError {
    /// The module could not be found, built, compiled or linked.
    Load(String),
    /// The module imports functions the host does not implement (named `module::name`).
    MissingImports {
        /// The module.
        wasm: PathBuf,
        /// The unimplemented imports.
        missing: Vec<String>,
    },
    /// `proxy_on_vm_start` returned false.
    VmStartRefused {
        /// Everything the module logged.
        logs: Vec<LogEntry>,
    },
    /// `proxy_on_configure` returned false: the filter refused the configuration.
    ConfigureRefused {
        /// Everything the module logged (the filter names the bad field here).
        logs: Vec<LogEntry>,
    },
    /// The guest trapped (a panic in the filter, `proc_exit`, an out-of-bounds access, a timeout).
    /// The VM is unusable afterwards, as in Envoy.
    Trap {
        /// The callback that trapped, e.g. `proxy_on_request_headers`.
        callback: String,
        /// The context it ran in.
        context_id: u32,
        /// The trap with its wasm backtrace.
        message: String,
        /// Everything the module logged (the SDK logs a panic's message at `Critical` before trapping).
        logs: Vec<LogEntry>,
    },
    /// An earlier trap left the VM unusable.
    Poisoned(String),
    /// A callback export has a signature other than ABI 0.2.1's.
    Abi(String),
    /// No pending callout has this token.
    UnknownCall(u32),
}

impl HostError {
    /// The logs carried by the error (empty for errors that have none).
    pub fn logs(&self) -> &[LogEntry] {
        match self {
            HostError::VmStartRefused { logs }
            | HostError::ConfigureRefused { logs }
            | HostError::Trap { logs, .. } => logs,
            _ => &[],
        }
    }

    /// Whether any carried log line contains `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(needle))
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostError::Load(message) => write!(f, "{message}"),
            HostError::MissingImports { wasm, missing } => write!(
                f,
                "{} imports functions the harness does not implement: {} (implement them in test-harness/src/host/)",
                wasm.display(),
                missing.join(", ")
            ),
            HostError::VmStartRefused { .. } => write!(f, "proxy_on_vm_start returned false"),
            HostError::ConfigureRefused { .. } => write!(f, "the filter refused its configuration (proxy_on_configure returned false)"),
            HostError::Trap { callback, context_id, message, .. } => {
                write!(f, "the module trapped in {callback} (context {context_id}): {message}")
            }
            HostError::Poisoned(message) => write!(f, "the VM is unusable after an earlier trap: {message}"),
            HostError::Abi(message) => write!(f, "ABI mismatch: {message}"),
            HostError::UnknownCall(token) => write!(f, "no pending http call has token {token}"),
        }?;
        let logs = self.logs();
        if !logs.is_empty() {
            write!(f, "\nlogs:")?;
            for line in logs {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for HostError {}
