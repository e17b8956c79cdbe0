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
//! It serves on [`crate::http_server`], as the demo IdP does.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::{json, Value};

use crate::demo_cli::{parse_flags, stop_signal};
use crate::http_server::{Handler, HttpServer, ReceivedRequest, Response};

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
        let handler: Arc<Handler> = Arc::new(move |req: &ReceivedRequest| {
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

    /// How many requests reached the backend, counted when their headers arrive: a request the proxy
    /// resets after its headers counts too.
    pub fn requests_seen(&self) -> u64 {
        self.server.requests_seen()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }
}

/// What reached the upstream: every `x-mlgate-*` header and whether `authorization` arrived.
pub fn identity(req: &ReceivedRequest) -> Value {
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
pub fn handle(req: &ReceivedRequest) -> Response {
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

    fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> ReceivedRequest {
        ReceivedRequest {
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
}
