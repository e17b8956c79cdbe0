//! The demo ML backend: `mlgate-harness backend --port 9500`.
//!
//! A loopback-only HTTP/1.1 server that looks enough like three kinds of ML serving endpoints for the
//! demo and the end-to-end tests:
//!
//! | endpoint | shape |
//! |---|---|
//! | `POST /score` | Azure ML managed online endpoint (deployment from `azureml-model-deployment`) |
//! | `POST /v2/models/{model}/infer`, `GET /v2/models/{model}` | KServe / Open Inference Protocol v2 |
//! | `POST /v1/chat/completions`, `GET /v1/models` | OpenAI-compatible |
//! | `GET /healthz` | liveness |
//!
//! Every answer is JSON and carries an `"identity"` object that echoes what reached the upstream:
//! each `x-mlgate-*` request header (a string, or an array when the header arrived more than once)
//! and `"authorization": true|false`. Tests read it to check that only verified identity headers
//! got through.
//!
//! This module also holds the tiny threaded server ([`HttpServer`]) that the demo IdP uses.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

/// Largest request body the demo servers read.
const MAX_BODY: u64 = 1 << 20;

/// One request, read completely.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lower case, in order (a repeated header appears more than once).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// First value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// First value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: text.into().into_bytes(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync + 'static;

/// A small threaded HTTP/1.1 server on 127.0.0.1 (tiny_http). Stops on [`HttpServer::shutdown`] or drop.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds 127.0.0.1:`port` (0 picks a free port) and serves `handler` on `threads` worker threads.
    pub fn start(
        name: &'static str,
        port: u16,
        threads: usize,
        handler: Arc<Handler>,
    ) -> Result<HttpServer> {
        let server = tiny_http::Server::http(("127.0.0.1", port))
            .map_err(|e| anyhow!("{name}: cannot listen on 127.0.0.1:{port}: {e}"))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow!("{name}: not an IP listener"))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let server = Arc::clone(&server);
            let stop = Arc::clone(&stop);
            let handler = Arc::clone(&handler);
            let worker = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match server.recv_timeout(Duration::from_millis(200)) {
                            Ok(Some(request)) => serve_one(name, request, handler.as_ref()),
                            Ok(None) => {}
                            Err(err) => {
                                if !stop.load(Ordering::Relaxed) {
                                    eprintln!("{name}: accept failed: {err}");
                                    std::thread::sleep(Duration::from_millis(50));
                                }
                            }
                        }
                    }
                })
                .context("spawn worker thread")?;
            workers.push(worker);
        }
        Ok(HttpServer {
            addr,
            stop,
            server,
            workers,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops accepting, lets the workers finish their current request, joins them.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn serve_one(name: &str, mut request: tiny_http::Request, handler: &Handler) {
    let url = request.url().to_string();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (url.clone(), Vec::new()),
    };
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body);
    let response = if read.is_err() {
        Response::text(400, "cannot read request body\n")
    } else if body.len() as u64 > MAX_BODY {
        Response::text(413, "request body too large\n")
    } else {
        let req = Request {
            method: request.method().as_str().to_ascii_uppercase(),
            path,
            query,
            headers,
            body,
        };
        handler(&req)
    };
    let mut out = tiny_http::Response::from_data(response.body).with_status_code(response.status);
    let mut all_headers = vec![(
        "content-type".to_string(),
        response.content_type.to_string(),
    )];
    all_headers.extend(response.headers);
    for (n, v) in all_headers {
        if let Ok(h) = tiny_http::Header::from_bytes(n.as_bytes(), v.as_bytes()) {
            out.add_header(h);
        }
    }
    if let Err(err) = request.respond(out) {
        eprintln!("{name}: cannot send response: {err}");
    }
}

/// Splits and percent-decodes a query string (`+` is a space).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'+') => out.push(b' '),
            Some(b'%') => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            Some(&b) => out.push(b),
            None => {}
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Installs a Ctrl-C / SIGTERM handler and returns a receiver that fires once on the first signal.
pub(crate) fn stop_signal() -> Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("install signal handler")?;
    Ok(rx)
}

/// Parses `--port N` (and nothing else unknown) for the demo programs; returns (port, rest).
pub(crate) fn parse_flags(
    args: &[String],
    default_port: u16,
    known: &[&str],
) -> Result<(u16, BTreeMap<String, String>)> {
    let mut port = default_port;
    let mut flags = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            flags.insert("help".to_string(), String::new());
            continue;
        }
        let Some(stripped) = name.strip_prefix("--") else {
            bail!("unexpected argument {arg:?}");
        };
        if stripped != "port" && !known.contains(&stripped) {
            bail!("unknown option {name}");
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| anyhow!("{name} needs a value"))?,
        };
        if stripped == "port" {
            port = value
                .parse()
                .with_context(|| format!("--port {value:?} is not a port number"))?;
        } else {
            flags.insert(stripped.to_string(), value);
        }
    }
    Ok((port, flags))
}

// ---------------------------------------------------------------------------------------------
// The backend itself.

/// The models the demo backend pretends to serve.
pub const MODELS: &[&str] = &[
    "fraud-detector",
    "churn-predictor",
    "finance-risk",
    "finance-forecast",
    "gpt-4o-mini",
    "llama-3-8b",
];

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A running demo backend.
pub struct Backend {
    server: HttpServer,
}

impl Backend {
    /// Starts the backend on 127.0.0.1:`port` (0: any free port) with a few worker threads.
    pub fn start(port: u16) -> Result<Backend> {
        Self::start_with(port, false)
    }

    fn start_with(port: u16, log: bool) -> Result<Backend> {
        let handler: Arc<Handler> = Arc::new(move |req: &Request| {
            let resp = handle(req);
            if log {
                let principal = req.header("x-mlgate-principal").unwrap_or("-");
                let route = req.header("x-mlgate-route").unwrap_or("-");
                println!(
                    "backend: {} {} -> {} (x-mlgate-principal={principal}, x-mlgate-route={route}, authorization={})",
                    req.method,
                    req.path,
                    resp.status,
                    req.header("authorization").is_some()
                );
            }
            resp
        });
        Ok(Backend {
            server: HttpServer::start("backend", port, 4, handler)?,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }
}

/// What reached the upstream: every `x-mlgate-*` header and whether `authorization` arrived.
pub fn identity(req: &Request) -> Value {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &req.headers {
        if name.starts_with("x-mlgate-") {
            seen.entry(name.clone()).or_default().push(value.clone());
        }
    }
    let mut obj = serde_json::Map::new();
    obj.insert(
        "authorization".to_string(),
        Value::Bool(req.header("authorization").is_some()),
    );
    for (name, mut values) in seen {
        let v = if values.len() == 1 {
            Value::String(values.remove(0))
        } else {
            Value::from(values)
        };
        obj.insert(name, v);
    }
    Value::Object(obj)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A deterministic "score" in [0, 1) from the request body, so answers look alive but are stable.
fn score_of(bytes: &[u8]) -> f64 {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    ((h % 10_000) as f64) / 10_000.0
}

/// Routes one request of the demo backend.
pub fn handle(req: &Request) -> Response {
    let ident = identity(req);
    let segments: Vec<&str> = req.path.split('/').skip(1).collect();
    let seq = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let request_id = req
        .header("x-request-id")
        .map(str::to_string)
        .unwrap_or_else(|| format!("req-{seq}"));
    let with_identity = |mut v: Value| {
        if let Value::Object(ref mut m) = v {
            m.insert("identity".to_string(), ident.clone());
        }
        v
    };
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["healthz"]) => Response::json(200, &with_identity(json!({"status": "ok"}))),
        ("POST", ["score"]) => {
            let deployment = req
                .header("azureml-model-deployment")
                .unwrap_or("default")
                .to_string();
            let p = score_of(&req.body);
            Response::json(
                200,
                &with_identity(json!({
                    "deployment": deployment,
                    "request_id": request_id,
                    "predictions": [ { "label": if p >= 0.5 { "fraud" } else { "legit" },
                                       "probability": (p * 10_000.0).round() / 10_000.0 } ],
                })),
            )
            .with_header("azureml-model-deployment", &deployment)
        }
        ("POST", ["v2", "models", model, "infer"]) => {
            let id = serde_json::from_slice::<Value>(&req.body)
                .ok()
                .and_then(|b| b.get("id").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(request_id);
            Response::json(
                200,
                &with_identity(json!({
                    "model_name": model,
                    "model_version": "1",
                    "id": id,
                    "outputs": [ { "name": "output-0", "shape": [1, 1], "datatype": "FP32",
                                   "data": [ (score_of(&req.body) * 10_000.0).round() / 10_000.0 ] } ],
                })),
            )
        }
        ("GET", ["v2", "models", model]) => Response::json(
            200,
            &with_identity(json!({
                "name": model,
                "versions": ["1"],
                "platform": "onnxruntime_onnx",
                "inputs": [ { "name": "input-0", "datatype": "FP32", "shape": [-1, 4] } ],
                "outputs": [ { "name": "output-0", "datatype": "FP32", "shape": [-1, 1] } ],
            })),
        ),
        ("POST", ["v1", "chat", "completions"]) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let model = body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("gpt-4o-mini")
                .to_string();
            let last = body
                .get("messages")
                .and_then(Value::as_array)
                .and_then(|m| m.last())
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(60)
                .collect::<String>();
            Response::json(
                200,
                &with_identity(json!({
                    "id": format!("chatcmpl-demo-{seq}"),
                    "object": "chat.completion",
                    "created": now_secs(),
                    "model": model,
                    "choices": [ {
                        "index": 0,
                        "message": { "role": "assistant",
                                     "content": format!("(demo backend) You said: {last}") },
                        "finish_reason": "stop",
                    } ],
                    "usage": { "prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21 },
                })),
            )
        }
        ("GET", ["v1", "models"]) => {
            let created = now_secs();
            let data: Vec<Value> = MODELS
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": created, "owned_by": "mlgate-demo"}))
                .collect();
            Response::json(200, &with_identity(json!({"object": "list", "data": data})))
        }
        (_, ["healthz"])
        | (_, ["score"])
        | (_, ["v2", "models", _, "infer"])
        | (_, ["v2", "models", _])
        | (_, ["v1", "chat", "completions"])
        | (_, ["v1", "models"]) => Response::json(
            405,
            &with_identity(json!({"error": "method_not_allowed", "method": req.method})),
        ),
        _ => Response::json(
            404,
            &with_identity(json!({"error": "not_found", "path": req.path})),
        ),
    }
}

const HELP: &str = "usage: mlgate-harness backend [--port N]

Demo ML backend on 127.0.0.1 (default port 9500):
  POST /score                      Azure ML style (deployment from the azureml-model-deployment header)
  POST /v2/models/{model}/infer    KServe v2 inference
  GET  /v2/models/{model}          KServe v2 model metadata
  POST /v1/chat/completions        OpenAI-compatible chat
  GET  /v1/models                  OpenAI-compatible model list
  GET  /healthz                    liveness
Every answer echoes the x-mlgate-* headers it received in an \"identity\" object.
";

/// `mlgate-harness backend [--port N]`
pub fn cli(args: &[String]) -> Result<ExitCode> {
    let (port, flags) = parse_flags(args, 9500, &[])?;
    if flags.contains_key("help") {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let stop = stop_signal()?;
    let mut backend = Backend::start_with(port, true)?;
    println!(
        "backend: demo ML backend listening on {} (Ctrl-C to stop)",
        backend.url()
    );
    let _ = stop.recv();
    backend.shutdown();
    println!("backend: stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: Vec::new(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn echoes_identity_headers() {
        let r = handle(&req(
            "POST",
            "/v2/models/fraud-detector/infer",
            &[
                ("x-mlgate-principal", "alice"),
                ("x-mlgate-groups", "a,b"),
                ("x-mlgate-groups", "spoofed"),
                ("authorization", "Bearer x"),
            ],
            "{\"id\":\"42\"}",
        ));
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["model_name"], "fraud-detector");
        assert_eq!(v["id"], "42");
        assert_eq!(v["identity"]["x-mlgate-principal"], "alice");
        assert_eq!(v["identity"]["x-mlgate-groups"], json!(["a,b", "spoofed"]));
        assert_eq!(v["identity"]["authorization"], true);
    }

    #[test]
    fn endpoints() {
        assert_eq!(handle(&req("GET", "/healthz", &[], "")).status, 200);
        assert_eq!(handle(&req("GET", "/v1/models", &[], "")).status, 200);
        assert_eq!(handle(&req("GET", "/v2/models/m", &[], "")).status, 200);
        assert_eq!(handle(&req("GET", "/score", &[], "")).status, 405);
        assert_eq!(handle(&req("GET", "/nope", &[], "")).status, 404);
        let chat = handle(&req(
            "POST",
            "/v1/chat/completions",
            &[],
            "{\"model\":\"llama-3-8b\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        ));
        let v: Value = serde_json::from_slice(&chat.body).unwrap();
        assert_eq!(v["model"], "llama-3-8b");
        assert_eq!(v["identity"]["authorization"], false);
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("a=1&aud=api%3A%2F%2Fx&b=c+d&e"),
            vec![
                ("a".into(), "1".into()),
                ("aud".into(), "api://x".into()),
                ("b".into(), "c d".into()),
                ("e".into(), String::new())
            ]
        );
    }
}
