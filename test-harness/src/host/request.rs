//! Building a request to send through the filter: `h.request().method("POST").path("/score")…send()`.

use std::collections::HashMap;

use super::error::HostError;
use super::headers::Headers;
use super::outcome::Outcome;
use super::Harness;

/// A request as the filter receives it from Envoy.
#[derive(Clone, Debug)]
pub(crate) struct RequestSpec {
    /// Pseudo-headers first, then the others in the order given.
    pub headers: Headers,
    /// The body's data frames (`None`: no body).
    pub body: Option<Vec<Vec<u8>>>,
    pub trailers: Headers,
    pub properties: HashMap<String, Vec<u8>>,
    /// What the upstream answers once the request reaches it.
    pub response: Option<UpstreamResponse>,
}

/// What the upstream answers a forwarded request with: the filter sees it in
/// `proxy_on_response_headers`, `_body` and `_trailers`, and the client gets what it lets through
/// ([`Outcome::response`]).
#[derive(Clone, Debug, Default)]
pub struct UpstreamResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    /// The body's data frames, one response body callback each.
    pub(crate) body: Vec<Vec<u8>>,
    pub(crate) trailers: Vec<(String, String)>,
}

impl UpstreamResponse {
    /// A response with this status, no headers and no body.
    pub fn status(status: u16) -> Self {
        UpstreamResponse {
            status,
            ..UpstreamResponse::default()
        }
    }

    /// A JSON body with `content-type: application/json` and its `content-length`.
    pub fn json(status: u16, body: &str) -> Self {
        UpstreamResponse::status(status)
            .header("content-type", "application/json")
            .header("content-length", &body.len().to_string())
            .body_frames([body])
    }

    /// Adds a header (names are lower-cased).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The body, as these data frames.
    pub fn body_frames<F: AsRef<[u8]>>(mut self, frames: impl IntoIterator<Item = F>) -> Self {
        self.body = frames.into_iter().map(|f| f.as_ref().to_vec()).collect();
        self
    }

    /// A response trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.into(), value.into()));
        self
    }
}

/// A request under construction. Defaults: `GET /` on host `localhost`, scheme `https`, no body.
#[must_use = "a request does nothing until .send()"]
pub struct RequestBuilder<'h> {
    harness: &'h Harness,
    method: String,
    path: String,
    authority: String,
    scheme: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<Vec<u8>>>,
    trailers: Vec<(String, String)>,
    properties: HashMap<String, Vec<u8>>,
    response: Option<UpstreamResponse>,
}

impl<'h> RequestBuilder<'h> {
    pub(crate) fn new(harness: &'h Harness) -> Self {
        RequestBuilder {
            harness,
            method: "GET".into(),
            path: "/".into(),
            authority: "localhost".into(),
            scheme: "https".into(),
            headers: Vec::new(),
            body: None,
            trailers: Vec::new(),
            properties: HashMap::new(),
            response: None,
        }
    }

    /// `:method`.
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    /// `:path`, including any query string.
    pub fn path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    /// `:authority` (the `Host`).
    pub fn host(mut self, host: &str) -> Self {
        self.authority = host.into();
        self
    }

    /// `:scheme`.
    pub fn scheme(mut self, scheme: &str) -> Self {
        self.scheme = scheme.into();
        self
    }

    /// Adds a header (repeatable: calling twice with one name sends it twice). Names are lower-cased.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds several headers.
    pub fn headers<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        headers: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in headers {
            self.headers.push((k.as_ref().into(), v.as_ref().into()));
        }
        self
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// `x-request-id` (Envoy's `request.id` property follows it).
    pub fn request_id(self, id: &str) -> Self {
        self.header("x-request-id", id)
    }

    /// A request body; `content-length` is added unless a header gives one.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = Some(vec![body.as_ref().to_vec()]);
        self
    }

    /// A body sent as these data frames, one body callback each (while the filter lets the
    /// request go on; frames that arrive while it holds the headers come together).
    /// `content-length` is added unless a header gives one.
    pub fn body_frames<F: AsRef<[u8]>>(mut self, frames: impl IntoIterator<Item = F>) -> Self {
        self.body = Some(frames.into_iter().map(|f| f.as_ref().to_vec()).collect());
        self
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// A request trailer (the filter then gets `proxy_on_request_trailers` after the body).
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.into(), value.into()));
        self
    }

    /// A property of this request, e.g. `.property(&["route_name"], "score")`.
    pub fn property(mut self, path: &[&str], value: impl AsRef<[u8]>) -> Self {
        self.properties
            .insert(path.join("\0"), value.as_ref().to_vec());
        self
    }

    /// `source.address`, e.g. `10.1.2.3:45678`.
    pub fn source_address(self, address: &str) -> Self {
        self.property(&["source", "address"], address)
    }

    /// `route_name`.
    pub fn route_name(self, name: &str) -> Self {
        self.property(&["route_name"], name)
    }

    /// The upstream answers the request with `response` once it is forwarded.
    pub fn answered_with(mut self, response: UpstreamResponse) -> Self {
        self.response = Some(response);
        self
    }

    /// Runs the request through the filter: context create, request headers, body and trailers if given,
    /// then (once forwarded or answered) log, done, delete. A request the filter pauses comes back as
    /// [`Outcome::Paused`]; it stays pending until the filter resumes or answers it.
    pub fn send(self) -> Result<Outcome, HostError> {
        let harness = self.harness;
        harness.send_spec(self.into_spec())
    }

    pub(crate) fn into_spec(self) -> RequestSpec {
        let mut headers = Headers::new();
        headers.add(":authority", &self.authority);
        headers.add(":path", &self.path);
        headers.add(":method", &self.method);
        headers.add(":scheme", &self.scheme);
        for (k, v) in &self.headers {
            headers.add(k, v);
        }
        if let Some(frames) = &self.body {
            if !headers.contains("content-length") {
                let length: usize = frames.iter().map(Vec::len).sum();
                headers.add("content-length", &length.to_string());
            }
        }
        RequestSpec {
            headers,
            body: self.body,
            trailers: Headers::from_pairs(self.trailers),
            properties: self.properties,
            response: self.response,
        }
    }
}
