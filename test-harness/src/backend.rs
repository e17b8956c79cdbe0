//! The demo ML backend: `mlgate-harness backend --port 9500`.
//!
//! A loopback-only HTTP/1.1 server that looks enough like three kinds of ML serving endpoints for the
//! demo and the end-to-end tests:
//!
//! | endpoint | shape |
//! |---|---|
//! | `POST /score` | Azure ML managed online endpoint (deployment from `azureml-model-deployment`) |
//! | `POST /v2/models/{model}/infer`, `GET /v2/models/{model}`, `POST /v2/repository/index` | KServe / Open Inference Protocol v2 (the index as Triton's repository extension) |
//! | `POST /v1/chat/completions`, `GET /v1/models` | OpenAI-compatible; `"stream": true` answers Server-Sent Events |
//! | `GET /healthz` | liveness |
//!
//! Every answer is JSON and carries an `"identity"` object that echoes what reached the upstream:
//! each `x-mlgate-*` request header (a string, or an array when the header arrived more than once)
//! and `"authorization": true|false`. Tests read it to check that only verified identity headers
//! got through. A streamed chat answer carries it in its first chunk.
//!
//! It serves on [`crate::http_server`], as the demo IdP does.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The pause between two events of a streamed chat answer: long enough that the events cross a proxy as
/// separate writes, short enough for tests.
pub const STREAM_PAUSE: Duration = Duration::from_millis(40);

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
            let content = format!("(demo backend) You said: {last}");
            let id = format!("chatcmpl-demo-{seq}");
            if body.get("stream").and_then(Value::as_bool) == Some(true) {
                let usage = body
                    .pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    == Some(true);
                return Response::event_stream(
                    chat_chunks(&id, &model, &content, usage, ident.clone()),
                    STREAM_PAUSE,
                );
            }
            Response::json(
                200,
                &with_identity(json!({
                    "id": id,
                    "object": "chat.completion",
                    "created": now_secs(),
                    "model": model,
                    "choices": [ {
                        "index": 0,
                        "message": { "role": "assistant", "content": content },
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
        // Triton's model repository extension, which KServe v2 servers (Triton, MLServer) answer: a bare
        // array, so it carries no identity.
        ("POST", ["v2", "repository", "index"]) => {
            let index: Vec<Value> = MODELS
                .iter()
                .map(|m| json!({"name": m, "version": "1", "state": "READY"}))
                .collect();
            Response::json(200, &Value::from(index))
        }
        (_, ["healthz"])
        | (_, ["score"])
        | (_, ["v2", "models", _, "infer"])
        | (_, ["v2", "models", _])
        | (_, ["v1", "chat", "completions"])
        | (_, ["v1", "models"])
        | (_, ["v2", "repository", "index"]) => Response::json(
            405,
            &with_identity(json!({"error": "method_not_allowed", "method": req.method})),
        ),
        _ => Response::json(
            404,
            &with_identity(json!({"error": "not_found", "path": req.path})),
        ),
    }
}

/// The `data:` payloads of a streamed chat answer, as OpenAI's API sends them: a first chunk with the role,
/// one per word of the content, one with `finish_reason`, the usage chunk when asked for
/// (`stream_options.include_usage`), and `[DONE]`.
fn chat_chunks(id: &str, model: &str, content: &str, usage: bool, identity: Value) -> Vec<String> {
    let created = now_secs();
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [ { "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish } ],
        })
    };
    let mut first = chunk(json!({"role": "assistant", "content": ""}), Value::Null);
    if let Value::Object(ref mut m) = first {
        m.insert("identity".to_string(), identity);
    }
    let mut out = vec![first.to_string()];
    for word in content.split_inclusive(' ') {
        out.push(chunk(json!({ "content": word }), Value::Null).to_string());
    }
    out.push(chunk(json!({}), json!("stop")).to_string());
    if usage {
        out.push(
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": { "prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21 },
            })
            .to_string(),
        );
    }
    out.push("[DONE]".to_string());
    out
}

const HELP: &str = "usage: mlgate-harness backend [--port N]

Demo ML backend on 127.0.0.1 (default port 9500):
  POST /score                      Azure ML style (deployment from the azureml-model-deployment header)
  POST /v2/models/{model}/infer    KServe v2 inference
  GET  /v2/models/{model}          KServe v2 model metadata
  POST /v2/repository/index        KServe v2 / Triton model repository index
  POST /v1/chat/completions        OpenAI-compatible chat (\"stream\": true: Server-Sent Events)
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

    fn chat_request(body: &str) -> Response {
        handle(&req(
            "POST",
            "/v1/chat/completions",
            &[("x-mlgate-principal", "alice")],
            body,
        ))
    }

    /// The `data:` payloads of an event-stream answer, each event checked for its `data: ...\n\n` frame.
    fn payloads(r: &Response) -> Vec<String> {
        let stream = r.stream.as_ref().expect("a streamed answer");
        stream
            .events
            .iter()
            .map(|e| {
                let e = std::str::from_utf8(e).unwrap();
                let p = e.strip_prefix("data: ").expect("data: prefix");
                p.strip_suffix("\n\n")
                    .expect("blank line after the event")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn a_streamed_chat_answers_openai_chunks_then_done() {
        let r = chat_request(
            "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello there\"}]}",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "text/event-stream");
        assert_eq!(r.stream.as_ref().unwrap().pause, STREAM_PAUSE);
        let p = payloads(&r);
        assert_eq!(p.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = p[..p.len() - 1]
            .iter()
            .map(|c| serde_json::from_str(c).unwrap())
            .collect();
        assert!(chunks.len() >= 4, "{p:?}");
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "gpt-4o-mini");
            assert_eq!(c["id"], chunks[0]["id"]);
        }
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["identity"]["x-mlgate-principal"], "alice");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "(demo backend) You said: hello there");
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert!(chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()));
        // The body holds the same events, for anything that reads a response whole.
        assert_eq!(r.body, r.stream.as_ref().unwrap().events.concat());
    }

    #[test]
    fn a_streamed_chat_sends_usage_last_when_asked() {
        let r = chat_request(
            "{\"model\":\"llama-3-8b\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[]}",
        );
        let p = payloads(&r);
        let usage: Value = serde_json::from_str(&p[p.len() - 2]).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 21);
        let without = payloads(&chat_request(
            "{\"model\":\"llama-3-8b\",\"stream\":true,\"messages\":[]}",
        ));
        assert_eq!(without.len(), p.len() - 1);
    }

    #[test]
    fn a_chat_without_stream_true_is_one_json_answer() {
        for body in [
            "{\"model\":\"gpt-4o-mini\",\"messages\":[]}",
            "{\"model\":\"gpt-4o-mini\",\"stream\":false,\"messages\":[]}",
        ] {
            let r = chat_request(body);
            assert!(r.stream.is_none());
            assert_eq!(r.content_type, "application/json");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["object"], "chat.completion");
        }
    }

    #[test]
    fn the_repository_index_lists_the_models_of_v1_models() {
        let r = handle(&req("POST", "/v2/repository/index", &[], "{}"));
        assert_eq!(r.status, 200);
        let index: Value = serde_json::from_slice(&r.body).unwrap();
        let names: Vec<&str> = index
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["version"], "1");
                assert_eq!(m["state"], "READY");
                m["name"].as_str().unwrap()
            })
            .collect();
        let models: Value =
            serde_json::from_slice(&handle(&req("GET", "/v1/models", &[], "")).body).unwrap();
        let listed: Vec<&str> = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(names, listed);
        assert_eq!(names, MODELS);
        assert_eq!(
            handle(&req("GET", "/v2/repository/index", &[], "")).status,
            405
        );
    }
}
