//! What a forwarded request carries: the route's header and the caller's (each rendered once),
//! the model and the dry-run verdict, every value made safe to send as a header value.

use std::borrow::Cow;
use std::rc::Rc;

use super::{Authenticated, Gate};
use crate::bytes;
use crate::claims::Identity;
use crate::decision::Reason;
use crate::policy::Mode;

/// The headers a forwarded request gets. The route's and the identity's are rendered once (per
/// route; per verified token) and shared by every request: a cache hit builds no header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    route: Option<Rc<[(String, String)]>>,
    identity: Option<Rc<[(String, String)]>>,
    /// The model and the dry-run verdict: per request.
    request: Vec<(String, String)>,
}

impl Headers {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.route
            .iter()
            .chain(self.identity.iter())
            .flat_map(|part| part.iter())
            .chain(self.request.iter())
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// One more header of this request's own.
    pub(super) fn push(&mut self, header: (String, String)) {
        self.request.push(header);
    }

    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }
}

impl Gate {
    /// What a forwarded request carries: the route's header, the caller's, and the model and
    /// dry-run verdict of this request.
    pub(super) fn forward_headers(
        &self,
        route: Option<usize>,
        caller: Option<&Authenticated>,
        model: Option<&str>,
        dry_run: Option<Reason>,
    ) -> Headers {
        let forward = &self.policy.forward;
        let mut request = Vec::new();
        if let (Some(name), Some(model)) = (&forward.model, model) {
            if !model.is_empty() {
                request.push((name.clone(), header_safe(model)));
            }
        }
        if self.policy.mode == Mode::DryRun {
            let value = dry_run.map_or("allow", Reason::as_str);
            request.push((forward.dry_run.clone(), value.to_string()));
        }
        Headers {
            route: route.and_then(|i| self.route_headers.get(i)).cloned(),
            identity: caller.map(|c| c.headers.clone()),
            request,
        }
    }

    /// The headers naming a verified caller, rendered once per token.
    pub(super) fn identity_headers(&self, id: &Identity) -> Vec<(String, String)> {
        let forward = &self.policy.forward;
        let mut headers = Vec::with_capacity(8);
        // Values are borrowed from the identity, or joined lists owned already: either is
        // forwarded without another copy when it is clean.
        let mut add = |name: &Option<String>, value: Option<Cow<'_, str>>| {
            if let (Some(name), Some(value)) = (name, value) {
                if !value.is_empty() {
                    let value = match value {
                        Cow::Borrowed(value) => header_safe(value),
                        Cow::Owned(value) => into_header_safe(value),
                    };
                    headers.push((name.clone(), value));
                }
            }
        };
        // A list is joined only when its header is forwarded.
        let joined = |name: &Option<String>, items: &[String]| {
            name.as_ref().map(|_| Cow::Owned(join_list(items)))
        };
        add(
            &forward.principal,
            id.principal.as_deref().map(Cow::Borrowed),
        );
        add(&forward.tenant, id.tenant.as_deref().map(Cow::Borrowed));
        add(&forward.app, id.app.as_deref().map(Cow::Borrowed));
        add(&forward.caller, Some(Cow::Borrowed(id.caller.as_str())));
        add(&forward.groups, joined(&forward.groups, &id.groups));
        add(&forward.roles, joined(&forward.roles, &id.roles));
        add(&forward.scopes, joined(&forward.scopes, &id.scopes));
        let provider = self.provider_names.get(id.provider);
        add(&forward.provider, provider.map(|p| Cow::Borrowed(&**p)));
        for (index, header) in &forward.claims {
            if let Some(values) = id.extra.get(*index).filter(|v| !v.is_empty()) {
                let header = Some(header.clone());
                add(&header, Some(Cow::Owned(join_list(values))));
            }
        }
        headers
    }
}

/// List headers are comma-separated; a `,` or `%` inside an item is percent-encoded so the
/// upstream can split unambiguously.
fn join_list(items: &[String]) -> String {
    let mut joined = String::with_capacity(items.iter().map(|item| item.len() + 1).sum());
    for (at, item) in items.iter().enumerate() {
        if at > 0 {
            joined.push(',');
        }
        let bytes = item.as_bytes();
        if bytes::contains_byte(bytes, b'%') || bytes::contains_byte(bytes, b',') {
            joined.push_str(&item.replace('%', "%25").replace(',', "%2C"));
        } else {
            joined.push_str(item);
        }
    }
    joined
}

/// Header values must not carry control characters (CR/LF would split headers).
pub(super) fn header_safe(value: &str) -> String {
    if bytes::is_printable_ascii(value.as_bytes()) {
        return value.to_owned();
    }
    replace_controls(value)
}

/// [`header_safe`] for a value already owned: kept as it is when it is clean (nearly always).
fn into_header_safe(value: String) -> String {
    if bytes::is_printable_ascii(value.as_bytes()) {
        return value;
    }
    replace_controls(&value)
}

fn replace_controls(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
