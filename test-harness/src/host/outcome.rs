//! What a test observes: the outcome of a request, captured log lines, recorded callouts, pending requests.

use std::time::Duration;

use super::abi::LogLevel;
use super::headers::Headers;

/// Where a captured log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOrigin {
    /// `proxy_log` (the filter's `log` macros, and the SDK's panic hook at `Critical`).
    Proxy,
    /// WASI `fd_write` to stdout (captured at `Info`).
    Stdout,
    /// WASI `fd_write` to stderr (captured at `Error`).
    Stderr,
    /// A note from the harness itself about something the filter did (e.g. a second local response).
    Host,
}

/// One captured log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Its level.
    pub level: LogLevel,
    /// The effective context when it was written (the root context id, or a request's).
    pub context_id: u32,
    /// The text.
    pub message: String,
    /// Where it came from.
    pub origin: LogOrigin,
}

impl std::fmt::Display for LogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:?} ctx={}] {}",
            self.level, self.context_id, self.message
        )
    }
}

/// An upstream response as the client receives it after the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The headers (`:status` included) as they were when the filter let them go downstream.
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

impl Response {
    /// `:status`.
    pub fn status(&self) -> Option<u16> {
        self.headers.get(":status").and_then(|s| s.parse().ok())
    }
}

/// How a request ended, as the client and the upstream would see it. Every variant carries the log lines
/// written in the request's context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The request went upstream.
    Forwarded {
        /// The request's context id.
        context_id: u32,
        /// The request headers as the upstream receives them (including pseudo-headers `:path`, …), taken at
        /// the moment the filter let the headers go: changes made afterwards would not reach an upstream.
        request_headers: Headers,
        /// The request body as forwarded.
        body: Vec<u8>,
        /// The upstream's response as the client received it (`None` when the test gave none).
        response: Option<Response>,
        /// Log lines of this request.
        logs: Vec<LogEntry>,
    },
    /// The filter answered locally (`proxy_send_local_response`).
    Responded {
        /// The request's context id.
        context_id: u32,
        /// HTTP status.
        status: u32,
        /// Response headers given by the filter.
        headers: Headers,
        /// Response body.
        body: Vec<u8>,
        /// The status-code details string (Envoy's response-code details).
        details: String,
        /// The request headers the upstream had already received when the filter answered (`None`: the
        /// upstream saw nothing of the request).
        upstream_headers: Option<Headers>,
        /// Log lines of this request.
        logs: Vec<LogEntry>,
    },
    /// The filter paused the request and has not resumed or answered it yet. Answer its callouts or fire
    /// ticks, then ask [`Harness::outcome`](super::Harness::outcome) again.
    Paused {
        /// The request's context id.
        context_id: u32,
        /// Log lines of this request so far.
        logs: Vec<LogEntry>,
    },
    /// The filter reset the stream (`proxy_close_stream`).
    Reset {
        /// The request's context id.
        context_id: u32,
        /// Log lines of this request.
        logs: Vec<LogEntry>,
    },
}

impl Outcome {
    /// The request's context id.
    pub fn context_id(&self) -> u32 {
        match self {
            Outcome::Forwarded { context_id, .. }
            | Outcome::Responded { context_id, .. }
            | Outcome::Paused { context_id, .. }
            | Outcome::Reset { context_id, .. } => *context_id,
        }
    }

    /// Whether the request went upstream.
    pub fn is_forwarded(&self) -> bool {
        matches!(self, Outcome::Forwarded { .. })
    }

    /// Whether the filter answered locally.
    pub fn is_responded(&self) -> bool {
        matches!(self, Outcome::Responded { .. })
    }

    /// Whether the request is still paused.
    pub fn is_paused(&self) -> bool {
        matches!(self, Outcome::Paused { .. })
    }

    /// The local response's status; `None` when the request was forwarded, paused or reset.
    pub fn status(&self) -> Option<u32> {
        match self {
            Outcome::Responded { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A header of the local response (first value).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        match self {
            Outcome::Responded { headers, .. } => headers.get(name),
            _ => None,
        }
    }

    /// The local response's headers (empty unless responded).
    pub fn response_headers(&self) -> Headers {
        match self {
            Outcome::Responded { headers, .. } => headers.clone(),
            _ => Headers::new(),
        }
    }

    /// A request header as the upstream sees it (first value); `None` unless forwarded.
    pub fn forwarded_header(&self, name: &str) -> Option<&str> {
        self.forwarded_headers().and_then(|h| h.get(name))
    }

    /// Whether any of the request reached the upstream: forwarded, or answered locally after its headers
    /// had gone upstream.
    pub fn reached_upstream(&self) -> bool {
        match self {
            Outcome::Forwarded { .. } => true,
            Outcome::Responded {
                upstream_headers, ..
            } => upstream_headers.is_some(),
            _ => false,
        }
    }

    /// The upstream's response as the client received it; `None` unless forwarded and answered.
    pub fn response(&self) -> Option<&Response> {
        match self {
            Outcome::Forwarded { response, .. } => response.as_ref(),
            _ => None,
        }
    }

    /// The request headers as the upstream sees them; `None` unless forwarded.
    pub fn forwarded_headers(&self) -> Option<&Headers> {
        match self {
            Outcome::Forwarded {
                request_headers, ..
            } => Some(request_headers),
            _ => None,
        }
    }

    /// The body: the local response's, or the forwarded request's (empty otherwise).
    pub fn body(&self) -> &[u8] {
        match self {
            Outcome::Forwarded { body, .. } | Outcome::Responded { body, .. } => body,
            _ => &[],
        }
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(self.body()).into_owned()
    }

    /// The body parsed as JSON, or the parse error.
    pub fn try_body_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(self.body())
    }

    /// The body parsed as JSON. Panics, showing the outcome, if it is not JSON: for tests.
    #[allow(clippy::panic)]
    pub fn body_json(&self) -> serde_json::Value {
        match self.try_body_json() {
            Ok(v) => v,
            Err(e) => panic!("the body is not JSON ({e}): {self}"),
        }
    }

    /// The local reply's details (Envoy's `%RESPONSE_CODE_DETAILS%`); `None` unless answered.
    pub fn details(&self) -> Option<&str> {
        match self {
            Outcome::Responded { details, .. } => Some(details),
            _ => None,
        }
    }

    /// The `reason` field of a JSON response body, if there is one.
    pub fn reason(&self) -> Option<String> {
        self.try_body_json()
            .ok()?
            .get("reason")?
            .as_str()
            .map(str::to_string)
    }

    /// The log lines written in the request's context.
    pub fn logs(&self) -> &[LogEntry] {
        match self {
            Outcome::Forwarded { logs, .. }
            | Outcome::Responded { logs, .. }
            | Outcome::Paused { logs, .. }
            | Outcome::Reset { logs, .. } => logs,
        }
    }

    /// The request's log lines that contain `needle`.
    pub fn logs_containing(&self, needle: &str) -> Vec<&LogEntry> {
        self.logs()
            .iter()
            .filter(|l| l.message.contains(needle))
            .collect()
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Forwarded {
                context_id,
                request_headers,
                body,
                ..
            } => {
                // Credentials are shown by size only: test output never echoes a token.
                let shown: Vec<(&str, String)> = request_headers
                    .pairs()
                    .iter()
                    .map(|(name, value)| {
                        let secret = matches!(name.as_str(), "authorization" | "cookie");
                        let value = if secret {
                            format!("<{} bytes>", value.len())
                        } else {
                            value.clone()
                        };
                        (name.as_str(), value)
                    })
                    .collect();
                write!(f, "forwarded (ctx {context_id}) with headers {shown:?}")?;
                if !body.is_empty() {
                    write!(f, " and a {}-byte body", body.len())?;
                }
            }
            Outcome::Responded {
                context_id,
                status,
                headers,
                body,
                ..
            } => write!(
                f,
                "responded {status} (ctx {context_id}) with headers {:?} and body {:?}",
                headers.pairs(),
                String::from_utf8_lossy(body)
            )?,
            Outcome::Paused { context_id, .. } => write!(f, "paused (ctx {context_id})")?,
            Outcome::Reset { context_id, .. } => write!(f, "reset (ctx {context_id})")?,
        }
        for line in self.logs() {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// An HTTP callout (`proxy_http_call`) the filter made and the test has not answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// The token the filter got; answer with [`Harness::respond_call`](super::Harness::respond_call).
    pub token: u32,
    /// The context that was effective when the call was made (the root context, or a request's). As in
    /// Envoy (proxy-wasm-cpp-host `http_call` uses `contextOrEffectiveContext()->root_context()`), the call
    /// belongs to the root context: it outlives the request and its answer arrives in
    /// `proxy_on_http_call_response(root, token, …)`; the SDK routes it by token.
    pub context_id: u32,
    /// The upstream (Envoy cluster) name.
    pub cluster: String,
    /// Request headers (`:method`, `:path`, `:authority`, …).
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Headers,
    /// The timeout the filter asked for.
    pub timeout: Duration,
}

impl HttpCall {
    /// `:path`.
    pub fn path(&self) -> Option<&str> {
        self.headers.get(":path")
    }
    /// `:authority`.
    pub fn authority(&self) -> Option<&str> {
        self.headers.get(":authority")
    }
    /// `:method`.
    pub fn method(&self) -> Option<&str> {
        self.headers.get(":method")
    }
    /// Any header (first value).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// A request the filter has paused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    /// Its context id.
    pub context_id: u32,
    /// Its current request headers.
    pub request_headers: Headers,
}

impl PendingRequest {
    /// `:path`.
    pub fn path(&self) -> Option<&str> {
        self.request_headers.get(":path")
    }
}
