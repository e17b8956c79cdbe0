//! Finding, freshening and compiling the filter module, once per process.
//!
//! [`wasm_path`] decides which `.wasm` runs (and rebuilds a stale one with `make build`); [`compiled`]
//! compiles it once per path with one shared engine and links it against the host, refusing a module that
//! imports anything the host does not implement ([`missing_imports`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use wasmtime::{Config, Engine, InstancePre, Linker, Module, Store};

use super::error::HostError;
use super::state::{HostConfig, HostState};

/// How often the engine's epoch advances; a callback gets [`super::HarnessBuilder::callback_timeout`] worth.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(50);

/// A compiled, linked module ready to instantiate.
pub(crate) struct Compiled {
    pub path: PathBuf,
    pub engine: Engine,
    pub pre: InstancePre<HostState>,
}

/// The workspace root (the directory holding the filter's `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The filter module to run: `$MLGATE_WASM` if set, else `<workspace>/target/mlgate.wasm`.
///
/// The default module (also when `$MLGATE_WASM` names it, as the Makefile does) is kept fresh: if it is
/// missing, or a file under `<workspace>/src/` or `<workspace>/Cargo.toml` is newer, this runs
/// `make -C <workspace> build` first (once per process; a lock file serializes concurrent test binaries).
/// Another explicit path is used as is. The result is computed once per process.
pub fn wasm_path() -> Result<PathBuf, HostError> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(resolve_wasm_path)
        .clone()
        .map_err(HostError::Load)
}

fn resolve_wasm_path() -> Result<PathBuf, String> {
    let root = workspace_root();
    let default = root.join("target").join("mlgate.wasm");
    if let Some(explicit) = std::env::var_os("MLGATE_WASM")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    {
        let same = explicit == default
            || std::fs::canonicalize(&explicit)
                .ok()
                .zip(std::fs::canonicalize(&default).ok())
                .is_some_and(|(a, b)| a == b);
        if !same {
            if !explicit.is_file() {
                return Err(format!(
                    "MLGATE_WASM={} does not exist (run `make build`)",
                    explicit.display()
                ));
            }
            return Ok(explicit);
        }
    }
    if staleness(&root, &default).is_some() {
        rebuild(&root, &default)?;
    }
    Ok(default)
}

/// Why the module needs building, or `None` when it is fresh.
fn staleness(root: &Path, wasm: &Path) -> Option<String> {
    let Ok(built) = std::fs::metadata(wasm).and_then(|m| m.modified()) else {
        return Some(format!("{} is missing", wasm.display()));
    };
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut consider = |path: PathBuf| {
        if let Ok(t) = std::fs::metadata(&path).and_then(|m| m.modified()) {
            if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                newest = Some((t, path));
            }
        }
    };
    consider(root.join("Cargo.toml"));
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                consider(path);
            }
        }
    }
    match newest {
        Some((t, path)) if t > built => Some(format!(
            "{} is newer than {}",
            path.display(),
            wasm.display()
        )),
        _ => None,
    }
}

fn rebuild(root: &Path, wasm: &Path) -> Result<(), String> {
    let target = root.join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let lock_path = target.join(".mlgate-harness-build.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| format!("creating {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    // Another process may have built it while we waited for the lock.
    let Some(reason) = staleness(root, wasm) else {
        return Ok(());
    };
    eprintln!(
        "mlgate-harness: {reason}; running `make -C {} build`",
        root.display()
    );
    let status = std::process::Command::new("make")
        .arg("-C")
        .arg(root)
        .arg("build")
        .env_remove("MLGATE_WASM")
        .status()
        .map_err(|e| {
            format!(
                "could not run `make build` ({e}); run `make build` in {}",
                root.display()
            )
        })?;
    drop(lock);
    if !status.success() {
        return Err(format!(
            "`make -C {} build` failed ({status}): run `make build` and fix the filter's build first",
            root.display()
        ));
    }
    if !wasm.is_file() {
        return Err(format!(
            "`make build` did not produce {} (run `make build`)",
            wasm.display()
        ));
    }
    Ok(())
}

/// The shared engine; `metered`: the one whose code counts fuel (about one unit per WebAssembly operator),
/// which makes it slower, so only harnesses that count operators use it.
fn engine(metered: bool) -> Result<Engine, HostError> {
    static ENGINES: [OnceLock<Result<Engine, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    ENGINES[usize::from(metered)]
        .get_or_init(|| {
            let mut config = Config::new();
            config.epoch_interruption(true);
            config.consume_fuel(metered);
            // For `perf record` of the harness: JIT code named through /tmp/perf-PID.map.
            if std::env::var_os("MLGATE_HARNESS_PERFMAP").is_some() {
                config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            }
            let engine =
                Engine::new(&config).map_err(|e| format!("creating the wasmtime engine: {e:#}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("mlgate-harness-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                })
                .map_err(|e| format!("starting the epoch thread: {e}"))?;
            Ok(engine)
        })
        .clone()
        .map_err(HostError::Load)
}

/// Compiled modules by path and engine (metered or not).
type CompiledByPath = HashMap<(PathBuf, bool), Arc<Compiled>>;

/// The module at `path`, compiled and linked once per process (and engine: see [`engine`]).
pub(crate) fn compiled(path: &Path, metered: bool) -> Result<Arc<Compiled>, HostError> {
    static CACHE: OnceLock<Mutex<CompiledByPath>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // Held while compiling: parallel tests wait for the one compilation instead of repeating it.
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    let key = (path.to_path_buf(), metered);
    if let Some(hit) = cache.get(&key) {
        return Ok(hit.clone());
    }
    let engine = engine(metered)?;
    let bytes = std::fs::read(path).map_err(|e| {
        HostError::Load(format!(
            "reading {}: {e} (run `make build`)",
            path.display()
        ))
    })?;
    let module = Module::new(&engine, &bytes)
        .map_err(|e| HostError::Load(format!("compiling {}: {e:#}", path.display())))?;
    let linker = linker(&engine)?;
    let provided = provided_imports(&engine, &linker);
    let required: Vec<(String, String)> = module
        .imports()
        .map(|i| (i.module().to_string(), i.name().to_string()))
        .collect();
    let missing = missing_imports(
        required.iter().map(|(m, n)| (m.as_str(), n.as_str())),
        &provided,
    );
    if !missing.is_empty() {
        return Err(HostError::MissingImports {
            wasm: path.to_path_buf(),
            missing,
        });
    }
    if module.get_export("proxy_abi_version_0_2_1").is_none() {
        return Err(HostError::Load(format!(
            "{} does not export proxy_abi_version_0_2_1: this host speaks proxy-wasm ABI 0.2.1 only",
            path.display()
        )));
    }
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| HostError::Load(format!("linking {}: {e:#}", path.display())))?;
    let compiled = Arc::new(Compiled {
        path: path.to_path_buf(),
        engine,
        pre,
    });
    cache.insert(key, compiled.clone());
    Ok(compiled)
}

fn linker(engine: &Engine) -> Result<Linker<HostState>, HostError> {
    let mut linker = Linker::new(engine);
    super::imports::add_to_linker(&mut linker)
        .map_err(|e| HostError::Load(format!("defining proxy_* imports: {e:#}")))?;
    super::wasi::add_to_linker(&mut linker)
        .map_err(|e| HostError::Load(format!("defining WASI imports: {e:#}")))?;
    Ok(linker)
}

fn provided_imports(engine: &Engine, linker: &Linker<HostState>) -> BTreeSet<(String, String)> {
    let mut store = Store::new(engine, HostState::new(HostConfig::placeholder()));
    linker
        .iter(&mut store)
        .map(|(m, n, _)| (m.to_string(), n.to_string()))
        .collect()
}

/// The imports (`module::name`) in `required` that `provided` lacks, sorted and deduplicated.
pub fn missing_imports<'a>(
    required: impl IntoIterator<Item = (&'a str, &'a str)>,
    provided: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let missing: BTreeSet<String> = required
        .into_iter()
        .filter(|(m, n)| !provided.contains(&(m.to_string(), n.to_string())))
        .map(|(m, n)| format!("{m}::{n}"))
        .collect();
    missing.into_iter().collect()
}

/// Every (module, name) the host implements: what a filter may import.
pub fn host_imports() -> Result<BTreeSet<(String, String)>, HostError> {
    let engine = engine(false)?;
    Ok(provided_imports(&engine, &linker(&engine)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_imports_are_named_with_their_module() {
        let provided: BTreeSet<(String, String)> = [("env".to_string(), "proxy_log".to_string())]
            .into_iter()
            .collect();
        let required = [
            ("env", "proxy_log"),
            ("env", "proxy_new_thing"),
            ("wasi_snapshot_preview1", "fd_pread"),
        ];
        assert_eq!(
            missing_imports(required, &provided),
            ["env::proxy_new_thing", "wasi_snapshot_preview1::fd_pread"]
        );
        assert!(missing_imports([("env", "proxy_log")], &provided).is_empty());
    }

    #[test]
    fn the_host_implements_every_hostcall_of_the_rust_sdk() {
        let provided = host_imports().unwrap();
        for name in SDK_0_2_5_IMPORTS {
            assert!(
                provided.contains(&("env".to_string(), name.to_string())),
                "missing {name}"
            );
        }
    }

    /// `grep -o 'fn proxy_[a-z_]*' proxy-wasm-0.2.5/src/hostcalls.rs | sort -u`
    const SDK_0_2_5_IMPORTS: &[&str] = &[
        "proxy_add_header_map_value",
        "proxy_call_foreign_function",
        "proxy_close_stream",
        "proxy_continue_stream",
        "proxy_define_metric",
        "proxy_dequeue_shared_queue",
        "proxy_done",
        "proxy_enqueue_shared_queue",
        "proxy_get_buffer_bytes",
        "proxy_get_current_time_nanoseconds",
        "proxy_get_header_map_pairs",
        "proxy_get_header_map_value",
        "proxy_get_log_level",
        "proxy_get_metric",
        "proxy_get_property",
        "proxy_get_shared_data",
        "proxy_get_status",
        "proxy_grpc_call",
        "proxy_grpc_cancel",
        "proxy_grpc_close",
        "proxy_grpc_send",
        "proxy_grpc_stream",
        "proxy_http_call",
        "proxy_increment_metric",
        "proxy_log",
        "proxy_record_metric",
        "proxy_register_shared_queue",
        "proxy_remove_header_map_value",
        "proxy_replace_header_map_value",
        "proxy_resolve_shared_queue",
        "proxy_send_local_response",
        "proxy_set_buffer_bytes",
        "proxy_set_effective_context",
        "proxy_set_header_map_pairs",
        "proxy_set_property",
        "proxy_set_shared_data",
        "proxy_set_tick_period_milliseconds",
    ];
}
