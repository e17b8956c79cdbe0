//! The decision pipeline for one request: route → token → provider → verification → identity →
//! rules → verdict. Pure: the adapter hands in the request and the time, and carries out the
//! verdict (forward with these headers, or answer with this reply).
//!
//! Who the caller is (cache, verification, keys) is in `authenticate`; what a forwarded request
//! carries, in `headers`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use crate::audit::{token_fingerprint, Audit, Decision, RuleRef};
use crate::cache::TokenCache;
use crate::claims::Identity;
use crate::crypto::Backend;
use crate::decision::{local_reply, LocalReply, Reason};
use crate::jwks::KeySet;
use crate::keystore::KeyStore;
use crate::max_tokens;
use crate::model::{self, ModelError};
use crate::policy::{
    path_is_unambiguous, AuditLevel, ListingFormat, Mode, ModelFrom, Policy, RequestParts, Route,
    Unmatched,
};
use crate::token;
use crate::trace::{TokenStep, Trace};
use crate::verify::dangerous;

mod authenticate;
mod headers;

use authenticate::AuthError;
pub use authenticate::Authenticated;
use headers::header_safe;
pub use headers::Headers;

/// A request's head as the gate sees it: method, path, host and headers. The body, when a
/// route's model is in it, comes later ([`Gate::decide_with_body`]).
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// `:path`, query string included.
    pub path: &'a str,
    /// `:authority`.
    pub host: &'a str,
    /// A request header by lower-case name (repeated headers joined by `,`).
    pub header: &'a token::HeaderLookup<'a>,
    /// Whether any request header's name satisfies the predicate (asked only on routes whose
    /// model comes from a header, for other spellings of that header's name).
    pub any_header_name: &'a HeaderNames<'a>,
}

/// See [`RequestHead::any_header_name`].
pub type HeaderNames<'a> = dyn Fn(&dyn Fn(&str) -> bool) -> bool + 'a;

/// What to do with the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Let it through, after removing every client-sent header under the identity prefix
    /// (and `authorization` when `strip_authorization`), adding these headers.
    Forward(Headers),
    /// Answer it here.
    Reply(LocalReply),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Disposition,
    pub audit: Audit,
    /// The response is a model listing to filter for this caller ([`Gate::filter_listing`]).
    pub listing: Option<Box<Listing>>,
    /// How the gate came to it, when the policy says `explain` ([`Gate::explain`] writes it).
    pub trace: Option<Box<Trace>>,
}

/// A forwarded request whose response is a model listing: who asked, and by which route's rules
/// its models are sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// The listing route.
    route: usize,
    /// The route whose rules decide which models the caller sees.
    for_route: usize,
    format: ListingFormat,
    max_bytes: usize,
    identity: Rc<Identity>,
    request_id: Option<String>,
}

impl Listing {
    /// The largest listing read.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// The verdict, or what the gate needs before it can give one.
// Returned once per request and consumed at once: boxing the common `Done` would cost an
// allocation per request to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step {
    Done(Verdict),
    /// The route's model is in the JSON body. Envoy does not hand a filter the body while its
    /// headers are held, so the headers go upstream now, with these identity headers (no model
    /// yet); the body is held until complete and [`Gate::decide_with_body`] decides — a refusal
    /// then resets the upstream request before any of the body reaches it.
    NeedBody {
        pending: Box<Pending>,
        headers: Headers,
    },
    /// The token's provider has no keys yet, or does not know the token's `kid`, and the key
    /// store lets the request wait (see [`KeyStore::may_wait`]): hold it, record it with
    /// [`KeyStore::wait`], and decide again with `may_wait = false` when the store wakes it.
    NeedKeys {
        provider: usize,
        /// This request's unknown `kid` started a refetch (for the metric; once per refetch).
        refetch: bool,
    },
}

/// A request whose token is verified and whose rules wait for the model in the body.
#[derive(Debug)]
pub struct Pending {
    route: usize,
    caller: Authenticated,
    field: String,
    audit: Audit,
    trace: Option<Box<Trace>>,
}

/// A refusal, with whatever was established before it.
struct Refusal {
    reason: Reason,
    route: Option<usize>,
    caller: Option<Authenticated>,
    model: Option<String>,
}

impl Refusal {
    fn new(reason: Reason, route: Option<usize>) -> Refusal {
        Refusal {
            reason,
            route,
            caller: None,
            model: None,
        }
    }
}

/// The policy plus the key sets currently loaded for each provider.
pub struct Gate {
    pub policy: Policy,
    cache: RefCell<TokenCache<Authenticated>>,
    /// The JWS header of the last token whose header was accepted, verified or not: only its
    /// decoding is reused, never a verdict (see [`dangerous::LastHeader`]).
    last_header: RefCell<Option<dangerous::LastHeader>>,
    /// Who checks signatures: the host's verifier and the RustCrypto crates, as the adapter found.
    backend: Backend,
    /// Per route: its name (for audit records) and its forwarded header, rendered once.
    route_names: Vec<Rc<str>>,
    route_headers: Vec<Rc<[(String, String)]>>,
    provider_names: Vec<Rc<str>>,
    /// Every provider's keys, their fetch schedules and the requests waiting for them. A
    /// `RefCell` because remote refreshes replace sets while requests share the gate;
    /// single-threaded, as every proxy-wasm VM is.
    keys: RefCell<KeyStore>,
    /// The trace of the decision being taken, when the policy says `explain`.
    trace: RefCell<Option<Box<Trace>>>,
}

impl Gate {
    /// The gate for a compiled policy, checking signatures with `backend` (the one the policy
    /// was compiled for: [`crate::config::compile`] refuses algorithms it cannot check).
    pub fn new(policy: Policy, backend: Backend) -> Gate {
        let keys = KeyStore::new(&policy);
        let cache = TokenCache::new(policy.cache_entries, policy.providers.len());
        let route_names = policy
            .routes
            .iter()
            .map(|r| Rc::from(r.name.as_str()))
            .collect();
        let route_headers = policy
            .routes
            .iter()
            .map(|r| {
                let header = policy.forward.route.as_ref().filter(|_| !r.name.is_empty());
                header
                    .map(|name| (name.clone(), header_safe(&r.name)))
                    .into_iter()
                    .collect()
            })
            .collect();
        let provider_names = policy
            .providers
            .iter()
            .map(|p| Rc::from(p.name.as_str()))
            .collect();
        Gate {
            policy,
            cache: RefCell::new(cache),
            last_header: RefCell::new(None),
            backend,
            route_names,
            route_headers,
            provider_names,
            keys: RefCell::new(keys),
            trace: RefCell::new(None),
        }
    }

    /// Lets the adapter drive the key store (fetches, answers, adoptions, waiters). Identities
    /// verified with a set that `f` replaced or withdrew leave the cache.
    ///
    /// Generic over `f` with a dozen callers: the generations are taken and compared by two
    /// functions of their own, so that each caller's copy holds only its `f` (~2.4 KB of module).
    pub fn with_keys<T>(&self, f: impl FnOnce(&mut KeyStore) -> T) -> T {
        let before = self.generations();
        let result = f(&mut self.keys.borrow_mut());
        self.flush_replaced(before);
        result
    }

    #[inline(never)]
    fn generations(&self) -> Vec<u64> {
        let store = self.keys.borrow();
        (0..store.provider_count())
            .map(|p| store.generation(p))
            .collect()
    }

    /// Flushes the cached identities of each provider whose set changed since `before`.
    #[inline(never)]
    fn flush_replaced(&self, before: Vec<u64>) {
        let store = self.keys.borrow();
        for (provider, generation) in before.into_iter().enumerate() {
            if store.generation(provider) != generation {
                self.cache.borrow_mut().flush_provider(provider);
            }
        }
    }

    /// Identities currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.borrow().len()
    }

    pub fn keys(&self, provider: usize) -> Option<Rc<KeySet>> {
        self.keys.borrow().current(provider)
    }

    /// Decides on the request headers. `now` is Unix seconds from the host clock. With
    /// `may_wait` (the adapter can hold the request), a token whose provider lacks keys (or its
    /// `kid`) yields [`Step::NeedKeys`] when the key store lets it wait; otherwise it is refused
    /// (`keys_unavailable` / `unknown_key`).
    pub fn decide(&self, req: &RequestHead<'_>, now: i64, may_wait: bool) -> Step {
        // One call of the pipeline, so that it is not compiled twice.
        if self.policy.explain {
            let path = req.path.split_once('?').map_or(req.path, |(path, _)| path);
            let trace = Trace::new(req.method, req.host, path, now);
            *self.trace.borrow_mut() = Some(Box::new(trace));
        }
        let mut step = self.decide_head(req, now, may_wait);
        if !self.policy.explain {
            return step;
        }
        let trace = self.trace.borrow_mut().take();
        match &mut step {
            Step::Done(verdict) => self.attach(verdict, trace),
            Step::NeedBody { pending, .. } => pending.trace = trace,
            // Decided again when the keys come, with a trace of its own.
            Step::NeedKeys { .. } => {}
        }
        step
    }

    /// Lets `f` record in the trace, when the policy asks for one: otherwise one flag is read
    /// (inlined, so that nothing else runs).
    #[inline(always)]
    fn note(&self, f: impl FnOnce(&mut Trace)) {
        if self.policy.explain {
            if let Some(trace) = self.trace.borrow_mut().as_deref_mut() {
                f(trace);
            }
        }
    }

    fn attach(&self, verdict: &mut Verdict, trace: Option<Box<Trace>>) {
        verdict.trace = trace.map(|mut trace| {
            trace.status = match &verdict.action {
                Disposition::Reply(reply) => Some(reply.status),
                Disposition::Forward(_) => None,
            };
            trace
        });
    }

    /// The verdict's trace as the compact line the filter logs ([`crate::trace::render`]
    /// expands it), if it has one.
    pub fn explain(&self, verdict: &Verdict) -> Option<String> {
        let trace = verdict.trace.as_deref()?;
        Some(trace.compact(&verdict.audit))
    }

    // Inlined into its one caller: a call would move the (large) step once more per request.
    #[inline(always)]
    fn decide_head(&self, req: &RequestHead<'_>, now: i64, may_wait: bool) -> Step {
        let request_id = (req.header)("x-request-id").map(Cow::into_owned);
        let (path, query) = match req.path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (req.path, None),
        };
        let mut audit = Audit::new(Decision::Allowed);
        audit.request_id = request_id;
        if !path_is_unambiguous(path) {
            return Step::Done(self.refuse(Refusal::new(Reason::InvalidPath, None), audit));
        }
        let parts = RequestParts {
            method: req.method,
            path,
            host: req.host,
            header: req.header,
        };

        let matched = self
            .policy
            .routes
            .iter()
            .enumerate()
            .find_map(|(index, route)| {
                let checked = route.matcher.check(&parts);
                self.note(|t| t.routes.push((index, checked.as_ref().err().copied())));
                checked.ok().map(|caps| (index, route, caps))
            });
        let Some((route_index, route, captures)) = matched else {
            return Step::Done(match self.policy.unmatched {
                Unmatched::Allow => self.pass(audit, None),
                Unmatched::Deny => self.refuse(Refusal::new(Reason::NoMatchingRoute, None), audit),
            });
        };
        audit.route = self.route_names.get(route_index).cloned();
        if route.anonymous {
            return Step::Done(self.pass(audit, Some(route_index)));
        }

        let found = match token::extract(
            &self.policy.sources,
            req.header,
            query,
            self.policy.max_token_bytes,
        ) {
            Ok(Some(found)) => {
                self.note(|t| t.found(&found.token, found.source));
                found
            }
            Ok(None) => {
                self.note(|t| t.token = TokenStep::Missing);
                return Step::Done(
                    self.refuse(Refusal::new(Reason::MissingToken, Some(route_index)), audit),
                );
            }
            Err(reason) => {
                self.note(|t| t.token = TokenStep::Refused(reason));
                return Step::Done(self.refuse(Refusal::new(reason, Some(route_index)), audit));
            }
        };
        let mut step = self.decide_token(req, &found, route_index, &captures, audit, now, may_wait);
        // Every record names its token (filter state, access log, audit line): a verified
        // token's fingerprint came with its identity; a refused one is hashed here.
        let record = match &mut step {
            Step::Done(verdict) => Some(&mut verdict.audit),
            Step::NeedBody { pending, .. } => Some(&mut pending.audit),
            Step::NeedKeys { .. } => None,
        };
        let unnamed = record.filter(|a| a.token_sha256.is_none() && self.fingerprints());
        if let Some(audit) = unnamed {
            audit.token_sha256 = Some(token_fingerprint(&found.token).into());
            // The pre-rendered caller fields would not name it.
            audit.caller_record = None;
        }
        step
    }

    /// Whether records carry the token's fingerprint: a SHA-256 of the token inside the VM costs
    /// more than the rest of a cache hit, so not with `audit: off`.
    fn fingerprints(&self) -> bool {
        self.policy.audit != AuditLevel::Off
    }

    /// Whether this record goes to the log, by the policy's `audit` level.
    pub fn logs(&self, audit: &Audit) -> bool {
        match self.policy.audit {
            AuditLevel::All => true,
            AuditLevel::Denied => matches!(audit.decision, Decision::Denied | Decision::WouldDeny),
            AuditLevel::Off => false,
        }
    }

    /// The rest of [`Gate::decide`], once the route and the token are known.
    #[allow(clippy::too_many_arguments)]
    fn decide_token(
        &self,
        req: &RequestHead<'_>,
        found: &token::FoundToken<'_>,
        route_index: usize,
        captures: &[&str],
        mut audit: Audit,
        now: i64,
        may_wait: bool,
    ) -> Step {
        let Some(route) = self.policy.routes.get(route_index) else {
            return Step::Done(self.refuse(Refusal::new(Reason::NoMatchingRoute, None), audit));
        };
        let caller = match self.authenticate(route, found, (now, may_wait), &mut audit) {
            Ok(caller) => caller,
            Err(AuthError::NeedKeys { provider, refetch }) => {
                return Step::NeedKeys { provider, refetch }
            }
            Err(AuthError::Refuse(reason)) => {
                return Step::Done(self.refuse(Refusal::new(reason, Some(route_index)), audit))
            }
        };
        self.describe(&mut audit, &caller);
        let identity = &*caller.identity;

        let provider = self.policy.providers.get(identity.provider);
        let overage_denies =
            provider.is_some_and(|p| p.on_groups_overage == crate::policy::Overage::Deny);
        if identity.groups_overage && overage_denies && route.uses_groups {
            let mut refusal = Refusal::new(Reason::GroupsOverage, Some(route_index));
            refusal.caller = Some(caller);
            return Step::Done(self.refuse(refusal, audit));
        }

        let model = match &route.model_from {
            None => None,
            Some(ModelFrom::PathParam(index)) => captures.get(*index).map(|m| m.to_string()),
            Some(ModelFrom::Header(name)) => {
                let value = (req.header)(name);
                let aliased = route.model_decides
                    && (req.any_header_name)(&|other| model::is_alias(other, name));
                match model::from_header(value.as_deref(), aliased) {
                    Ok(model) => Some(model.to_string()),
                    Err(error) => match self.unreadable_model(route, identity, error) {
                        Some(reason) => {
                            let mut refusal = Refusal::new(reason, Some(route_index));
                            refusal.caller = Some(caller);
                            return Step::Done(self.refuse(refusal, audit));
                        }
                        None => None,
                    },
                }
            }
            Some(ModelFrom::JsonBody(field)) => {
                // Refuse now what no model can change: a matching deny rule without `models`,
                // or allow rules none of which the identity satisfies.
                if model::decided_without_model(route, identity) {
                    return Step::Done(self.judge(route_index, caller, None, audit));
                }
                if route.model_decides {
                    let media = model::check_json_media(
                        (req.header)("content-type").as_deref(),
                        (req.header)("content-encoding").as_deref(),
                    );
                    if let Err(error) = media {
                        let mut refusal = Refusal::new(error.reason(), Some(route_index));
                        refusal.caller = Some(caller);
                        return Step::Done(self.refuse(refusal, audit));
                    }
                }
                let headers = self.forward_headers(Some(route_index), Some(&caller), None, None);
                return Step::NeedBody {
                    pending: Box::new(Pending {
                        route: route_index,
                        caller,
                        field: field.clone(),
                        audit,
                        trace: None,
                    }),
                    headers,
                };
            }
        };
        Step::Done(self.judge(route_index, caller, model, audit))
    }

    /// Finishes a [`Pending`] decision with the request body (`None`: larger than the limit).
    pub fn decide_with_body(&self, mut pending: Pending, body: Option<&[u8]>) -> Verdict {
        let trace = pending.trace.take();
        let traced = trace.is_some();
        *self.trace.borrow_mut() = trace;
        let mut verdict = self.decide_body(pending, body);
        if traced {
            let trace = self.trace.borrow_mut().take();
            self.attach(&mut verdict, trace);
        }
        verdict
    }

    fn decide_body(&self, pending: Pending, body: Option<&[u8]>) -> Verdict {
        let Pending {
            route,
            caller,
            field,
            audit,
            trace: _,
        } = pending;
        let Some(body) = body else {
            let mut refusal = Refusal::new(Reason::BodyTooLarge, Some(route));
            refusal.caller = Some(caller);
            return self.refuse(refusal, audit);
        };
        let model = match model::from_json_body(body, &field) {
            Ok(model) => Some(model),
            Err(error) => {
                let refused = self
                    .policy
                    .routes
                    .get(route)
                    .map_or(Some(error.reason()), |r| {
                        self.unreadable_model(r, &caller.identity, error)
                    });
                if let Some(reason) = refused {
                    let mut refusal = Refusal::new(reason, Some(route));
                    refusal.caller = Some(caller);
                    return self.refuse(refusal, audit);
                }
                None
            }
        };
        // `forward.max_tokens`: the limit the body declares, for Envoy's rate limits to charge.
        let declared = match &self.policy.forward.max_tokens {
            None => None,
            Some(header) => match max_tokens::from_json_body(body) {
                Ok(limit) => limit.map(|n| (header.clone(), n.to_string())),
                Err(_) => {
                    let mut refusal = Refusal::new(Reason::MaxTokensInvalid, Some(route));
                    refusal.caller = Some(caller);
                    refusal.model = model;
                    return self.refuse(refusal, audit);
                }
            },
        };
        let mut verdict = self.judge(route, caller, model, audit);
        if let (Some(header), Disposition::Forward(headers)) = (declared, &mut verdict.action) {
            headers.push(header);
        }
        verdict
    }

    /// What a model that cannot be read means on this route: a refusal when the route's rules
    /// look at the model (and the identity alone does not settle the request already), or
    /// nothing — the request is judged as naming no model — when they do not, or when the model
    /// is only missing and the route allows that.
    fn unreadable_model(
        &self,
        route: &Route,
        identity: &Identity,
        error: ModelError,
    ) -> Option<Reason> {
        let missing_allowed = error == ModelError::Missing && route.allow_missing_model;
        if !route.model_decides || missing_allowed || model::decided_without_model(route, identity)
        {
            return None;
        }
        Some(error.reason())
    }

    /// The largest body read for a `json_body` model.
    pub fn max_body_bytes(&self) -> usize {
        self.policy.max_body_bytes
    }

    /// Deny rules first, then allow rules.
    fn judge(
        &self,
        route_index: usize,
        caller: Authenticated,
        model: Option<String>,
        mut audit: Audit,
    ) -> Verdict {
        let Some(route) = self.policy.routes.get(route_index) else {
            return self.refuse(Refusal::new(Reason::NoMatchingRoute, None), audit);
        };
        let (reason, rule) = apply_rules(route, &caller.identity, model.as_deref());
        self.note(|t| t.rules = true);
        audit.rule = rule;
        match reason {
            Some(reason) => self.refuse(
                Refusal {
                    reason,
                    route: Some(route_index),
                    caller: Some(caller),
                    model,
                },
                audit,
            ),
            None => {
                let headers =
                    self.forward_headers(Some(route_index), Some(&caller), model.as_deref(), None);
                // In dry-run mode every model may be called, so every model is listed.
                let listing = route
                    .list_models
                    .as_ref()
                    .filter(|_| self.policy.mode == Mode::Enforce)
                    .map(|list| {
                        Box::new(Listing {
                            route: route_index,
                            for_route: list.for_route,
                            format: list.format,
                            max_bytes: list.max_bytes,
                            identity: caller.identity.clone(),
                            request_id: audit.request_id.clone(),
                        })
                    });
                audit.model = model;
                Verdict {
                    action: Disposition::Forward(headers),
                    audit,
                    listing,
                    trace: None,
                }
            }
        }
    }

    /// Whether the caller may call `model` on route `route_index`, as far as the caller and the
    /// model decide it: the route takes the caller's provider, an incomplete group list does not
    /// stop it, and its rules allow the model. What a listing shows.
    pub fn may_call(&self, route_index: usize, identity: &Identity, model: &str) -> bool {
        let Some(route) = self.policy.routes.get(route_index) else {
            return false;
        };
        if route.anonymous {
            return true;
        }
        if route
            .providers
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&identity.provider))
        {
            return false;
        }
        let overage_denies = self
            .policy
            .providers
            .get(identity.provider)
            .is_some_and(|p| p.on_groups_overage == crate::policy::Overage::Deny);
        if identity.groups_overage && overage_denies && route.uses_groups {
            return false;
        }
        apply_rules(route, identity, Some(model)).0.is_none()
    }

    /// The model server's listing with only the models the caller may call on the listing's
    /// `for_route`; or why it cannot be filtered ([`Gate::listing_refused`] answers for it).
    pub fn filter_listing(&self, listing: &Listing, body: &[u8]) -> Result<Vec<u8>, Reason> {
        if body.len() > listing.max_bytes {
            return Err(Reason::ListingTooLarge);
        }
        crate::catalogue::filter(body, listing.format, &|model| {
            self.may_call(listing.for_route, &listing.identity, model)
        })
    }

    /// The reply for a listing that cannot be passed on.
    pub fn listing_refused(&self, listing: &Listing, reason: Reason) -> LocalReply {
        local_reply(
            reason,
            &self.policy.realm,
            self.policy
                .routes
                .get(listing.route)
                .map(|r| r.name.as_str()),
            listing.request_id.as_deref(),
        )
    }

    fn pass(&self, mut audit: Audit, route: Option<usize>) -> Verdict {
        audit.decision = Decision::Passed;
        Verdict {
            action: Disposition::Forward(self.forward_headers(route, None, None, None)),
            audit,
            listing: None,
            trace: None,
        }
    }

    fn refuse(&self, refusal: Refusal, mut audit: Audit) -> Verdict {
        audit.reason = Some(refusal.reason.as_str());
        audit.model.clone_from(&refusal.model);
        if self.policy.mode == Mode::DryRun {
            audit.decision = Decision::WouldDeny;
            let headers = self.forward_headers(
                refusal.route,
                refusal.caller.as_ref(),
                refusal.model.as_deref(),
                Some(refusal.reason),
            );
            return Verdict {
                action: Disposition::Forward(headers),
                audit,
                listing: None,
                trace: None,
            };
        }
        audit.decision = Decision::Denied;
        let route = refusal.route.and_then(|i| self.policy.routes.get(i));
        let reply = local_reply(
            refusal.reason,
            &self.policy.realm,
            route.map(|r| r.name.as_str()),
            audit.request_id.as_deref(),
        );
        Verdict {
            action: Disposition::Reply(reply),
            audit,
            listing: None,
            trace: None,
        }
    }

    fn describe(&self, audit: &mut Audit, caller: &Authenticated) {
        let identity = &caller.identity;
        audit.provider = self.provider_names.get(identity.provider).cloned();
        audit.identity = Some(identity.clone());
        audit.token_sha256.clone_from(&caller.fingerprint);
        audit.caller_record = Some(caller.record.clone());
    }
}

/// The route's rules on this caller and model: deny rules first, then allow rules (none: anyone the
/// route admits). Why they refuse, if they do, and the rule that decided, if one did.
fn apply_rules(
    route: &Route,
    identity: &Identity,
    model: Option<&str>,
) -> (Option<Reason>, Option<RuleRef>) {
    if let Some(index) = route
        .deny
        .iter()
        .position(|rule| rule.matches(identity, model))
    {
        return (Some(Reason::DeniedByRule), Some(RuleRef::Deny(index)));
    }
    if route.allow.is_empty() {
        return (None, None);
    }
    if let Some(index) = route
        .allow
        .iter()
        .position(|rule| rule.matches(identity, model))
    {
        return (None, Some(RuleRef::Allow(index)));
    }
    if route
        .allow
        .iter()
        .any(|rule| rule.matches_identity(identity))
    {
        (Some(Reason::ModelNotAllowed), None)
    } else {
        (Some(Reason::NoRuleMatched), None)
    }
}

#[cfg(test)]
mod tests;
