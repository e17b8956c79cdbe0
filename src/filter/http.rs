//! HTTP context: reads the request, asks the gate, carries out the verdict.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use super::hostcalls::{self, BufferType, LogLevel, MapType};
use super::root::Shared;
use crate::audit::Outcome;
use crate::gate::{self, Pending, Step, Verdict};
use crate::policy::AuditLevel;

pub struct Request {
    shared: Option<Rc<Shared>>,
    /// Waiting for the body to learn the model (OpenAI-compatible `model`).
    pending: Option<Pending>,
    /// Names of the request headers, kept while the body is awaited, for stripping.
    header_names: Vec<String>,
}

impl Request {
    pub fn new(shared: Option<Rc<Shared>>) -> Request {
        Request {
            shared,
            pending: None,
            header_names: Vec::new(),
        }
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return internal_error("not configured");
        };
        let headers = match hostcalls::get_headers(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(_) => return internal_error("cannot read request headers"),
        };
        let lookup = |name: &str| header_value(&headers, name);
        let method = lookup(":method").unwrap_or_default();
        let path = lookup(":path").unwrap_or_default();
        let host = lookup(":authority").unwrap_or_default();
        let step = shared.gate.decide(
            &gate::Request {
                method: &method,
                path: &path,
                host: &host,
                header: &lookup,
            },
            hostcalls::now_seconds(),
        );
        let names: Vec<String> = headers.into_iter().map(|(name, _)| name).collect();
        match step {
            Step::Done(verdict) => carry_out(&shared, verdict, &names),
            Step::NeedBody(pending) if end_of_stream => {
                let verdict = shared.gate.decide_with_body(pending, Some(&[]));
                carry_out(&shared, verdict, &names)
            }
            Step::NeedBody(pending) => {
                self.pending = Some(pending);
                self.header_names = names;
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(shared), Some(pending)) = (self.shared.clone(), self.pending.take()) else {
            return Action::Continue;
        };
        let names = std::mem::take(&mut self.header_names);
        if body_size > shared.gate.max_body_bytes() {
            let verdict = shared.gate.decide_with_body(pending, None);
            return carry_out(&shared, verdict, &names);
        }
        if !end_of_stream {
            // Envoy buffers the body until the end of the stream.
            self.pending = Some(pending);
            self.header_names = names;
            return Action::Pause;
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(body) => body,
            Err(_) => return internal_error("cannot read request body"),
        };
        let verdict = shared.gate.decide_with_body(pending, Some(&body));
        carry_out(&shared, verdict, &names)
    }
}

/// A header's value; repeated headers are joined with `,` as HTTP allows.
fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    let first = values.next()?;
    let mut joined = first.to_string();
    for more in values {
        joined.push(',');
        joined.push_str(more);
    }
    Some(joined)
}

fn carry_out(shared: &Shared, verdict: Verdict, header_names: &[String]) -> Action {
    let policy = &shared.gate.policy;
    let Verdict { action, audit } = verdict;
    shared.metrics.record(audit.decision, audit.reason);
    let log_it = match policy.audit {
        AuditLevel::All => true,
        AuditLevel::Denied => matches!(audit.decision, Outcome::Denied | Outcome::WouldDeny),
        AuditLevel::Off => false,
    };
    if log_it {
        hostcalls::log(LogLevel::Info, &audit.line());
    }
    match action {
        gate::Action::Forward(identity) => {
            let prefix = &policy.forward.prefix;
            for name in header_names {
                let spoofable = name.len() >= prefix.len()
                    && name
                        .get(..prefix.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(prefix));
                let strip = spoofable
                    || (policy.forward.strip_authorization
                        && name.eq_ignore_ascii_case("authorization"));
                if strip && hostcalls::remove_header(MapType::HttpRequestHeaders, name).is_err() {
                    return internal_error("cannot strip identity headers");
                }
            }
            for (name, value) in &identity {
                if hostcalls::replace_header(MapType::HttpRequestHeaders, name, value).is_err() {
                    return internal_error("cannot set identity headers");
                }
            }
            Action::Continue
        }
        gate::Action::Reply(reply) => {
            let headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .collect();
            if let Err(error) = hostcalls::send_local_response(
                u32::from(reply.status),
                &headers,
                reply.body.as_bytes(),
            ) {
                hostcalls::log(
                    LogLevel::Critical,
                    &format!(
                        "mlgate: could not send the {} reply: {error:?}",
                        reply.status
                    ),
                );
            }
            Action::Pause
        }
    }
}

/// Fail closed when the host itself misbehaves.
fn internal_error(what: &str) -> Action {
    hostcalls::log(LogLevel::Error, &format!("mlgate: internal error: {what}"));
    let body = br#"{"error":"internal","reason":"internal_error"}"#;
    let _ignored =
        hostcalls::send_local_response(500, &[("content-type", "application/json")], body);
    Action::Pause
}
