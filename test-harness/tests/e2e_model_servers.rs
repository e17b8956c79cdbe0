//! Real clients and a real model server through a real Envoy 1.40 with mlgate (`filters/demo.json`):
//!
//! - the official OpenAI Python SDK (PyPI `openai`, `make venv-sdk`) against the demo backend: a streamed and a
//!   plain chat completion, a refused model (`PermissionDeniedError`), a bad token (`AuthenticationError`),
//!   `client.models.list()`;
//! - a real KServe v2 server, MLServer with its scikit-learn runtime (`make venv-mlserver`), serving a tiny
//!   model trained here, called with Triton's HTTP client (`tritonclient[http]`): an allowed persona gets
//!   predictions, refused ones get 403, and the repository index answers through the gateway.
//!
//! The clients are the committed scripts in `tests/clients/`, run with `.venv/bin/python`; each prints a
//! transcript line and a `RESULT <json>` line. Each group shares one Envoy (and one MLServer) across its
//! tests, started on a thread that lives as long as the test process, so the children's parent-death
//! signal takes them down when the process ends. Missing Python packages: the tests say so loudly and pass,
//! except in CI (`CI=true`).

mod e2e_fixture;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt as _;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use e2e_fixture::{agent, free_port, in_ci, root, Stack};
use mlgate_harness::backend::STREAM_PAUSE;
use serde_json::{json, Value};

const MLSERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The models MLServer serves: the demo's names, so filters/demo.json's `infer` route judges them as it
/// judges the demo backend's (contractors may not call `finance-*`).
const MLSERVER_MODELS: &[&str] = &["finance-risk", "fraud-detector"];

fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

fn client(script: &str) -> PathBuf {
    root().join("test-harness/tests/clients").join(script)
}

/// Whether `.venv/bin/python` imports `modules`; if not, a loud message (a panic in CI).
fn python_has(modules: &[&str], make_target: &str) -> bool {
    let ok = Command::new(python())
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    let msg = format!(
        "e2e_model_servers: {} cannot import {} (make {make_target})",
        python().display(),
        modules.join(", ")
    );
    if in_ci() {
        panic!("{msg}: required in CI");
    }
    eprintln!("\n!!!!!!!! {msg}: SKIPPING this end-to-end test !!!!!!!!\n");
    false
}

/// Runs `make` on a thread that never ends, and hands its result back: children started there with a
/// parent-death signal (Envoy, MLServer) outlive the test that started them and die with the process.
fn on_a_lasting_thread<T: Send + 'static>(make: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("e2e-model-servers".into())
        .spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(make)));
            loop {
                std::thread::park();
            }
        })
        .expect("spawn the lasting thread");
    match rx.recv().expect("the lasting thread answers") {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Removes what earlier test processes left under `dir` (entries named `<prefix>-<pid>-…`).
fn remove_leftovers(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('-'))
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// One run of a client script: its transcript line(s) and its `RESULT` object.
struct Run {
    transcript: String,
    result: Value,
}

/// Runs `script args…` with `.venv/bin/python`, the token (if any) in the environment variable `token_var`
/// (never in the arguments), and prints the transcript.
fn run_client(script: &str, args: &[&str], token_var: &str, token: Option<&str>) -> Run {
    let mut cmd = Command::new(python());
    cmd.arg(client(script)).args(args).env_remove(token_var);
    if let Some(t) = token {
        cmd.env(token_var, t);
    }
    let out = cmd.output().expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut transcript = String::new();
    let mut result = None;
    for line in stdout.lines() {
        match line.strip_prefix("RESULT ") {
            Some(json) => result = serde_json::from_str(json).ok(),
            None => {
                transcript.push_str(line);
                transcript.push('\n');
            }
        }
    }
    print!("{transcript}");
    let result = result.unwrap_or_else(|| {
        panic!(
            "{script} {args:?} printed no RESULT (exit {:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        )
    });
    Run { transcript, result }
}

// ---------------------------------------------------------------------------------------------------
// The OpenAI SDK against the demo backend.

static OPENAI: OnceLock<Option<Stack>> = OnceLock::new();

fn openai_stack() -> Option<&'static Stack> {
    OPENAI
        .get_or_init(|| {
            remove_leftovers(&root().join("target/e2e-envoy"), "openai-sdk");
            if !python_has(&["openai"], "venv-sdk") {
                return None;
            }
            on_a_lasting_thread(|| Stack::start("openai-sdk", 2))
        })
        .as_ref()
}

fn sdk(stack: &Stack, persona: &str, token: Option<&str>, call: &[&str]) -> Run {
    let base = stack.envoy.url("/v1");
    let mut args = vec!["--base-url", base.as_str(), "--persona", persona];
    args.extend_from_slice(call);
    run_client("openai_client.py", &args, "OPENAI_API_KEY", token)
}

#[test]
fn the_sdk_streams_a_chat_completion_chunk_by_chunk() {
    let Some(stack) = openai_stack() else {
        return;
    };
    let token = stack.token("alice");
    let run = sdk(
        stack,
        "alice",
        Some(&token),
        &["stream", "gpt-4o-mini", "hello through the gateway"],
    );
    let r = &run.result;
    assert_eq!(r["ok"], true, "{}{r}", run.transcript);
    assert_eq!(
        r["content"], "(demo backend) You said: hello through the gateway",
        "{r}"
    );
    assert_eq!(r["finish_reason"], "stop", "{r}");
    assert_eq!(r["objects"], json!(["chat.completion.chunk"]), "{r}");
    // A role chunk, one per word, a finish chunk: each its own server-sent event.
    let words = r["content"].as_str().unwrap_or("").split(' ').count() as u64;
    assert_eq!(r["chunks"], words + 2, "{r}");
    assert_eq!(r["identity"]["x-mlgate-model"], "gpt-4o-mini", "{r}");
    assert_eq!(r["identity"]["authorization"], false, "{r}");
    // The backend pauses STREAM_PAUSE between events; had Envoy or mlgate held the answer until its end,
    // every chunk would reach the client at once.
    let pauses = STREAM_PAUSE.as_millis() as u64 * (words + 1);
    let spread = r["arrival_spread_ms"].as_u64().unwrap_or(0);
    assert!(
        spread >= pauses / 4,
        "chunks arrived within {spread} ms though the backend spread them over {pauses} ms: {r}"
    );
}

#[test]
fn the_sdk_gets_a_plain_chat_completion() {
    let Some(stack) = openai_stack() else {
        return;
    };
    let token = stack.token("alice");
    let run = sdk(
        stack,
        "alice",
        Some(&token),
        &["create", "llama-3-8b", "hi"],
    );
    let r = &run.result;
    assert_eq!(r["ok"], true, "{}{r}", run.transcript);
    assert_eq!(r["object"], "chat.completion", "{r}");
    assert_eq!(r["model"], "llama-3-8b", "{r}");
    assert_eq!(r["content"], "(demo backend) You said: hi", "{r}");
}

#[test]
fn the_sdk_raises_permission_denied_with_mlgates_reason_for_a_refused_model() {
    let Some(stack) = openai_stack() else {
        return;
    };
    let token = stack.token("alice");
    let run = sdk(
        stack,
        "alice",
        Some(&token),
        &["stream", "gpt-4-turbo", "hi"],
    );
    let r = &run.result;
    assert_eq!(r["ok"], false, "{}{r}", run.transcript);
    assert_eq!(r["error"], "PermissionDeniedError", "{r}");
    assert_eq!(r["status"], 403, "{r}");
    assert_eq!(r["body"]["reason"], "model_not_allowed", "{r}");
    assert_eq!(r["body"]["route"], "chat", "{r}");
}

#[test]
fn the_sdk_raises_authentication_error_for_a_bad_token() {
    let Some(stack) = openai_stack() else {
        return;
    };
    let token = stack.token("alice");
    // The same token with its signature's last characters changed.
    let bad = format!("{}AAAA", &token[..token.len() - 4]);
    let run = sdk(stack, "alice", Some(&bad), &["create", "gpt-4o-mini", "hi"]);
    let r = &run.result;
    assert_eq!(r["ok"], false, "{}{r}", run.transcript);
    assert_eq!(r["error"], "AuthenticationError", "{r}");
    assert_eq!(r["status"], 401, "{r}");
    assert!(
        r["www_authenticate"]
            .as_str()
            .is_some_and(|w| w.starts_with("Bearer")),
        "{r}"
    );
}

/// `client.models.list()` through mlgate: each persona sees only the chat models it may call
/// (filters/demo.json's `models` route, `list_models: openai` for `chat`).
#[test]
fn the_sdk_lists_only_the_models_each_persona_may_call() {
    let Some(stack) = openai_stack() else {
        return;
    };
    for (persona, expected) in [
        ("alice", json!(["gpt-4o-mini", "llama-3-8b"])),
        ("bob", json!([])),
        ("carl", json!([])),
    ] {
        let token = stack.token(persona);
        let run = sdk(stack, persona, Some(&token), &["models"]);
        let r = &run.result;
        assert_eq!(r["ok"], true, "{}{r}", run.transcript);
        assert_eq!(r["models"], expected, "{persona}: {r}");
    }
}

// ---------------------------------------------------------------------------------------------------
// MLServer (scikit-learn runtime) behind Envoy + mlgate.

/// MLServer, started from a repository that `mlserver_model.py` wrote; killed with the test process.
struct MlServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl MlServer {
    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("mlserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Trains the model, writes the repository under target/, starts `mlserver start`, waits for
    /// `/v2/health/ready`. A port taken between picking and binding: another try.
    fn start() -> MlServer {
        let mut last = String::new();
        for attempt in 0..3 {
            let dir = root()
                .join("target/e2e-model-servers")
                .join(format!("mlserver-{}-{attempt}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create the MLServer directory");
            let port = free_port();
            let grpc = free_port();
            let (port_s, grpc_s) = (port.to_string(), grpc.to_string());
            let mut args = vec![
                "--out",
                dir.to_str().expect("utf-8 path"),
                "--http-port",
                &port_s,
                "--grpc-port",
                &grpc_s,
            ];
            for m in MLSERVER_MODELS {
                args.extend(["--model", m]);
            }
            let trained = Command::new(python())
                .arg(client("mlserver_model.py"))
                .args(&args)
                .output()
                .expect("run mlserver_model.py");
            assert!(
                trained.status.success(),
                "mlserver_model.py failed: {}",
                String::from_utf8_lossy(&trained.stderr)
            );
            let log = fs::File::create(dir.join("mlserver.log")).expect("create mlserver.log");
            let log2 = log.try_clone().expect("clone log handle");
            let began = Instant::now();
            let mut cmd = Command::new(root().join(".venv/bin/mlserver"));
            cmd.arg("start")
                .arg(&dir)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut server = MlServer {
                child: cmd.spawn().expect("start mlserver"),
                port,
                dir,
            };
            match server.wait_ready() {
                Ok(()) => {
                    eprintln!(
                        "e2e_model_servers: MLServer ready on 127.0.0.1:{port} after {:.1} s",
                        began.elapsed().as_secs_f64()
                    );
                    return server;
                }
                Err(e) => {
                    let tail = server.log_tail();
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    if tail.contains("address already in use") || tail.contains("Errno 98") {
                        last = format!("{e}\n{tail}");
                        continue;
                    }
                    panic!("MLServer did not become ready: {e}\n{tail}");
                }
            }
        }
        panic!("MLServer could not bind its ports: {last}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + MLSERVER_READY_TIMEOUT;
        let url = format!("http://127.0.0.1:{}/v2/health/ready", self.port);
        let agent = agent();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("mlserver exited with {status}"));
            }
            if let Ok(resp) = agent.get(&url).call() {
                if resp.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("not ready after {MLSERVER_READY_TIMEOUT:?}"))
    }
}

impl Drop for MlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Envoy + mlgate in front of MLServer, with the demo policy as it is.
struct MlServerStack {
    mlserver: MlServer,
    stack: Stack,
}

static MLSERVER: OnceLock<Option<MlServerStack>> = OnceLock::new();

fn mlserver_stack() -> Option<&'static MlServerStack> {
    MLSERVER
        .get_or_init(|| {
            remove_leftovers(&root().join("target/e2e-envoy"), "mlserver");
            remove_leftovers(&root().join("target/e2e-model-servers"), "mlserver");
            if !python_has(
                &[
                    "mlserver",
                    "mlserver_sklearn",
                    "sklearn",
                    "tritonclient.http",
                ],
                "venv-mlserver",
            ) {
                return None;
            }
            e2e_fixture::prerequisites()?;
            on_a_lasting_thread(|| {
                let mlserver = MlServer::start();
                let template =
                    fs::read_to_string(root().join("envoy/demo.yaml")).expect("envoy/demo.yaml");
                let stack = Stack::start_in_front_of(
                    &template,
                    "mlserver",
                    1,
                    Some(mlserver.port),
                    |_| {},
                )?;
                Some(MlServerStack { mlserver, stack })
            })
        })
        .as_ref()
}

fn kserve(s: &MlServerStack, persona: &str, call: &[&str]) -> Run {
    let token = s.stack.token(persona);
    kserve_with(s, persona, Some(&token), call)
}

fn kserve_with(s: &MlServerStack, persona: &str, token: Option<&str>, call: &[&str]) -> Run {
    let url = format!("127.0.0.1:{}", s.stack.envoy.listen);
    let mut args = vec!["--url", url.as_str(), "--persona", persona];
    args.extend_from_slice(call);
    let run = run_client("kserve_client.py", &args, "MLGATE_TOKEN", token);
    if run.result["ok"] != true && run.result["status"] == "503" {
        eprintln!("MLServer's log:\n{}", s.mlserver.log_tail());
    }
    run
}

#[test]
fn mlserver_gives_an_allowed_persona_predictions() {
    let Some(s) = mlserver_stack() else {
        return;
    };
    let run = kserve(s, "alice", &["infer", "finance-risk"]);
    let r = &run.result;
    assert_eq!(r["ok"], true, "{}{r}", run.transcript);
    assert_eq!(r["model_name"], "finance-risk", "{r}");
    // The tiny model: class 0 for a small feature sum, 1 for a large one.
    assert_eq!(r["predictions"], json!([0, 1]), "{r}");
}

#[test]
fn a_contractor_is_refused_a_finance_model_on_mlserver() {
    let Some(s) = mlserver_stack() else {
        return;
    };
    let run = kserve(s, "carl", &["infer", "finance-risk"]);
    let r = &run.result;
    assert_eq!(r["ok"], false, "{}{r}", run.transcript);
    assert_eq!(r["status"], "403", "{r}");
    // tritonclient shows the `error` field of mlgate's JSON answer.
    assert_eq!(r["message"], "forbidden", "{r}");
}

#[test]
fn mlserver_gives_a_contractor_predictions_from_a_model_outside_finance() {
    let Some(s) = mlserver_stack() else {
        return;
    };
    let run = kserve(s, "carl", &["infer", "fraud-detector"]);
    let r = &run.result;
    assert_eq!(r["ok"], true, "{}{r}", run.transcript);
    assert_eq!(r["predictions"], json!([0, 1]), "{r}");
}

#[test]
fn a_persona_without_the_group_is_refused_on_mlserver() {
    let Some(s) = mlserver_stack() else {
        return;
    };
    let run = kserve(s, "bob", &["infer", "fraud-detector"]);
    let r = &run.result;
    assert_eq!(r["ok"], false, "{}{r}", run.transcript);
    assert_eq!(r["status"], "403", "{r}");
}

#[test]
fn a_call_without_a_token_is_refused_on_mlserver() {
    let Some(s) = mlserver_stack() else {
        return;
    };
    let run = kserve_with(s, "anonymous", None, &["infer", "fraud-detector"]);
    let r = &run.result;
    assert_eq!(r["ok"], false, "{}{r}", run.transcript);
    assert_eq!(r["status"], "401", "{r}");
}

/// MLServer's repository index through the gateway, filtered per caller by the `infer` route's rules
/// (filters/demo.json's `repository-index` route, `list_models: triton`): Alice (ml-scientists) sees
/// both models, Carl (a contractor) not `finance-risk`, Bob (ml-readers, no infer rule) none — each
/// exactly the models it may call.
#[test]
fn mlserver_repository_index_shows_each_persona_the_models_it_may_infer_with() {
    let Some(s) = mlserver_stack() else {
        return;
    };
    for (persona, expected) in [
        ("alice", &["finance-risk", "fraud-detector"][..]),
        ("carl", &["fraud-detector"][..]),
        ("bob", &[][..]),
    ] {
        let run = kserve(s, persona, &["index"]);
        let r = &run.result;
        assert_eq!(r["ok"], true, "{}{r}", run.transcript);
        let index = r["index"].as_array().expect("an index");
        let names: BTreeSet<&str> = index.iter().filter_map(|m| m["name"].as_str()).collect();
        assert_eq!(
            names,
            expected.iter().copied().collect::<BTreeSet<_>>(),
            "{persona}: {r}"
        );
        assert!(index.iter().all(|m| m["state"] == "READY"), "{r}");
        for model in MLSERVER_MODELS {
            let call = kserve(s, persona, &["infer", model]);
            assert_eq!(
                call.result["ok"] == true,
                names.contains(model),
                "{persona} × {model}: {}",
                call.result
            );
        }
    }
}

/// Every row of envoy/demo-scenarios-mlserver.json (what `make demo BACKEND=mlserver` prints): status and
/// mlgate's reason, with MLServer behind the gateway.
#[test]
fn mlserver_demo_scenarios_give_expected_status_and_reason() {
    let Some(s) = mlserver_stack() else {
        return;
    };
    let file = fs::read_to_string(root().join("envoy/demo-scenarios-mlserver.json"))
        .expect("envoy/demo-scenarios-mlserver.json");
    let scenarios: Value = serde_json::from_str(&file).expect("scenarios are JSON");
    let scenarios = scenarios["scenarios"].as_array().expect("scenarios");
    assert!(!scenarios.is_empty());
    for sc in scenarios {
        let headers: Vec<(String, String)> = sc["token"]
            .as_str()
            .map(|p| vec![e2e_fixture::bearer(&s.stack.token(p))])
            .unwrap_or_default();
        let method = sc["method"].as_str().expect("method");
        let url = s.stack.envoy.url(sc["path"].as_str().expect("path"));
        let body = sc.get("body");
        let answer = e2e_fixture::send(method, &url, &headers, body);
        let name = &sc["name"];
        assert_eq!(
            Value::from(answer.status),
            sc["expect"]["status"],
            "{name}: {}",
            answer.raw
        );
        if let Some(reason) = sc["expect"].get("reason") {
            assert_eq!(&answer.body["reason"], reason, "{name}: {}", answer.raw);
        }
        if let Some(w) = sc["expect"].get("www_authenticate") {
            assert_eq!(
                answer.www_authenticate.as_deref(),
                w.as_str(),
                "{name}: {}",
                answer.raw
            );
        }
        if answer.status == 200 && method == "POST" {
            assert!(answer.body["outputs"].is_array(), "{name}: {}", answer.raw);
        }
    }
}
