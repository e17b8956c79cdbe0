//! The small threaded HTTP/1.1 server the demo programs (the IdP in `idp/`, the ML backend in `backend.rs`)
//! serve on: 127.0.0.1 only, each request read completely into a [`ReceivedRequest`] and answered with one
//! [`Response`] by the program's handler (or, for a Server-Sent Events answer, with its events written one at a
//! time). Also the query-string decoding both need.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use serde_json::Value;

/// Largest request body the demo servers read.
const MAX_BODY: u64 = 1 << 20;

/// One request as a demo server received it, read completely.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lower case, in order (a repeated header appears more than once).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
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
    /// Sent instead of `body` when present: events written and flushed one at a time.
    pub stream: Option<EventStream>,
}

/// A streamed answer (`text/event-stream`): each event is written as its own HTTP/1.1 chunk and flushed,
/// `pause` after the one before, so a proxy in between really relays a stream.
#[derive(Debug, Clone)]
pub struct EventStream {
    /// Whole events, each with its terminating blank line (`data: ...\n\n`).
    pub events: Vec<Vec<u8>>,
    pub pause: Duration,
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
            stream: None,
        }
    }

    pub fn text(status: u16, text: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: text.into().into_bytes(),
            stream: None,
        }
    }

    /// A `200 text/event-stream` answer: one `data: <payload>` event per payload, `pause` apart.
    pub fn event_stream(payloads: Vec<String>, pause: Duration) -> Response {
        let events = payloads
            .into_iter()
            .map(|p| format!("data: {p}\n\n").into_bytes())
            .collect::<Vec<_>>();
        Response {
            status: 200,
            content_type: "text/event-stream",
            headers: vec![("cache-control".to_string(), "no-cache".to_string())],
            body: events.concat(),
            stream: Some(EventStream { events, pause }),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// What a demo program does with each request (called on the server's worker threads).
pub type Handler = dyn Fn(&ReceivedRequest) -> Response + Send + Sync + 'static;

/// A small threaded HTTP/1.1 server on 127.0.0.1 (tiny_http). Stops on [`HttpServer::shutdown`] or drop.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    server: Arc<tiny_http::Server>,
    workers: Vec<JoinHandle<()>>,
    /// Requests whose headers arrived, complete or not (a proxy may reset one after its headers).
    seen: Arc<AtomicU64>,
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
        let seen = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let server = Arc::clone(&server);
            let stop = Arc::clone(&stop);
            let handler = Arc::clone(&handler);
            let seen = Arc::clone(&seen);
            let worker = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match server.recv_timeout(Duration::from_millis(200)) {
                            Ok(Some(request)) => {
                                seen.fetch_add(1, Ordering::Relaxed);
                                serve_one(name, request, handler.as_ref())
                            }
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
            seen,
        })
    }

    /// How many requests' headers have arrived so far, whether or not their bodies followed.
    pub fn requests_seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
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
    let (path, query) = split_target(request.url());
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
        let req = ReceivedRequest {
            method: request.method().as_str().to_ascii_uppercase(),
            path,
            query,
            headers,
            body,
        };
        handler(&req)
    };
    if let Some(stream) = response.stream.clone() {
        if let Err(err) = send_stream(request, &response, &stream) {
            eprintln!("{name}: cannot send event stream: {err}");
        }
        return;
    }
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

/// Writes a streamed answer itself, chunk by chunk: tiny_http's own chunked writer buffers 8 KiB before it
/// sends anything, which would turn a stream into one late burst.
fn send_stream(
    request: tiny_http::Request,
    response: &Response,
    stream: &EventStream,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\n",
        response.status,
        tiny_http::StatusCode(response.status).default_reason_phrase(),
        response.content_type
    );
    for (n, v) in &response.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = request.into_writer();
    out.write_all(head.as_bytes())?;
    out.flush()?;
    for (i, event) in stream.events.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(stream.pause);
        }
        out.write_all(format!("{:x}\r\n", event.len()).as_bytes())?;
        out.write_all(event)?;
        out.write_all(b"\r\n")?;
        out.flush()?;
    }
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// Splits a request target (`/path?query`) into the path and its decoded query parameters.
pub fn split_target(target: &str) -> (String, Vec<(String, String)>) {
    match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target.to_string(), Vec::new()),
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A streamed answer leaves as separate chunks while the handler's events are still to come, framed as
    /// HTTP/1.1 chunked encoding.
    #[test]
    fn an_event_stream_arrives_event_by_event() {
        use std::io::Write as _;
        let handler: Arc<Handler> = Arc::new(|_req: &ReceivedRequest| {
            Response::event_stream(
                vec!["one".into(), "two".into(), "[DONE]".into()],
                Duration::from_millis(500),
            )
        });
        let server = HttpServer::start("sse-test", 0, 1, handler).unwrap();
        let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("data: one") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let first = String::from_utf8_lossy(&got).into_owned();
        assert!(!first.contains("data: two"), "{first}");
        conn.read_to_end(&mut got).unwrap();
        let all = String::from_utf8_lossy(&got).into_owned();
        let (head, body) = all.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("content-length"),
            "{head}"
        );
        assert_eq!(
            body,
            "b\r\ndata: one\n\n\r\nb\r\ndata: two\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
        );
    }
}
