//! The decision pipeline for one request: route → token → provider → verification → identity →
//! rules → verdict. Pure: the adapter hands in the request and the time, and carries out the
//! verdict (forward with these headers, or answer with this reply).

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::Value;

use sha2::{Digest, Sha256};

use crate::audit::{fingerprint, Audit, Outcome};
use crate::cache::TokenCache;
use crate::claims::{self, Identity};
use crate::decision::{local_reply, LocalReply, Reason};
use crate::jwks::KeySet;
use crate::policy::{AuditLevel, Mode, ModelFrom, Policy, RequestParts, Route, Unmatched};
use crate::token;
use crate::verify::{self, unverified};

/// A request as the gate sees it.
pub struct Request<'a> {
    pub method: &'a str,
    /// `:path`, query string included.
    pub path: &'a str,
    /// `:authority`.
    pub host: &'a str,
    /// A request header by lower-case name (repeated headers joined by `,`).
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

/// What to do with the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Let it through, after removing every client-sent header under the identity prefix
    /// (and `authorization` when `strip_authorization`), adding these headers.
    Forward(Vec<(String, String)>),
    /// Answer it here.
    Reply(LocalReply),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: Action,
    pub audit: Audit,
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
        headers: Vec<(String, String)>,
    },
    /// The token's provider has no keys yet, or does not know the token's `kid`: fetch the
    /// provider's keys, then decide again (or decide again with `may_wait = false`).
    NeedKeys {
        provider: usize,
        unknown_kid: bool,
    },
}

/// Why authentication stopped.
enum AuthError {
    Refuse(Reason),
    NeedKeys { provider: usize, unknown_kid: bool },
}

impl From<Reason> for AuthError {
    fn from(reason: Reason) -> AuthError {
        AuthError::Refuse(reason)
    }
}

/// A request whose token is verified and whose rules wait for the model in the body.
#[derive(Debug)]
pub struct Pending {
    route: usize,
    identity: Rc<Identity>,
    field: String,
    audit: Audit,
}

/// A refusal, with whatever was established before it.
struct Refusal {
    reason: Reason,
    route: Option<usize>,
    identity: Option<Rc<Identity>>,
    model: Option<String>,
}

impl Refusal {
    fn new(reason: Reason, route: Option<usize>) -> Refusal {
        Refusal {
            reason,
            route,
            identity: None,
            model: None,
        }
    }
}

/// The policy plus the key sets currently loaded for each provider.
pub struct Gate {
    pub policy: Policy,
    cache: RefCell<TokenCache>,
    /// Current key set per provider. A `RefCell` because remote refreshes replace sets while
    /// requests share the gate; single-threaded, as every proxy-wasm VM is.
    keys: RefCell<Vec<Option<Rc<KeySet>>>>,
}

impl Gate {
    pub fn new(policy: Policy) -> Gate {
        let keys = policy
            .providers
            .iter()
            .map(|p| p.initial_keys.clone().map(Rc::new))
            .collect();
        let cache = TokenCache::new(policy.cache_entries, policy.providers.len());
        Gate {
            policy,
            cache: RefCell::new(cache),
            keys: RefCell::new(keys),
        }
    }

    /// Replaces (or, with `None`, withdraws) a provider's key set: remote refreshes.
    pub fn set_keys(&self, provider: usize, keys: Option<Rc<KeySet>>) {
        if let Some(slot) = self.keys.borrow_mut().get_mut(provider) {
            *slot = keys;
        }
        self.cache.borrow_mut().flush_provider(provider);
    }

    /// Identities currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.borrow().len()
    }

    pub fn keys(&self, provider: usize) -> Option<Rc<KeySet>> {
        self.keys.borrow().get(provider).cloned().flatten()
    }

    /// Decides on the request headers. `now` is Unix seconds from the host clock. With
    /// `may_wait`, a token whose remote provider lacks keys (or its `kid`) yields
    /// [`Step::NeedKeys`]; without, it is refused (`keys_unavailable` / `unknown_key`).
    pub fn decide(&self, req: &Request<'_>, now: i64, may_wait: bool) -> Step {
        let request_id = (req.header)("x-request-id");
        let (path, query) = match req.path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (req.path, None),
        };
        let mut audit = Audit::new(Outcome::Allowed);
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
                route
                    .matcher
                    .matches(&parts)
                    .map(|caps| (index, route, caps))
            });
        let Some((route_index, route, captures)) = matched else {
            return Step::Done(match self.policy.unmatched {
                Unmatched::Allow => self.pass(audit, None),
                Unmatched::Deny => self.refuse(Refusal::new(Reason::NoMatchingRoute, None), audit),
            });
        };
        audit.route = Some(route.name.clone());
        if route.anonymous {
            return Step::Done(self.pass(audit, Some(route)));
        }

        let found = match token::extract(
            &self.policy.sources,
            req.header,
            query,
            self.policy.max_token_bytes,
        ) {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Step::Done(
                    self.refuse(Refusal::new(Reason::MissingToken, Some(route_index)), audit),
                )
            }
            Err(reason) => {
                return Step::Done(self.refuse(Refusal::new(reason, Some(route_index)), audit))
            }
        };
        if self.policy.audit != AuditLevel::Off {
            // A SHA-256 per request is the price of an audit trail; skipped when audit is off.
            audit.token_sha256 = Some(fingerprint(&Sha256::digest(found.token.as_bytes()).into()));
        }

        let identity = match self.authenticate(route, &found, now, may_wait) {
            Ok(identity) => identity,
            Err(AuthError::NeedKeys {
                provider,
                unknown_kid,
            }) => {
                return Step::NeedKeys {
                    provider,
                    unknown_kid,
                }
            }
            Err(AuthError::Refuse(reason)) => {
                return Step::Done(self.refuse(Refusal::new(reason, Some(route_index)), audit))
            }
        };
        self.describe(&mut audit, &identity);

        let provider = self.policy.providers.get(identity.provider);
        let overage_denies =
            provider.is_some_and(|p| p.on_groups_overage == crate::policy::Overage::Deny);
        if identity.groups_overage && overage_denies && route.uses_groups {
            let mut refusal = Refusal::new(Reason::GroupsOverage, Some(route_index));
            refusal.identity = Some(identity);
            return Step::Done(self.refuse(refusal, audit));
        }

        let model = match &route.model_from {
            None => None,
            Some(ModelFrom::PathParam(index)) => captures.get(*index).map(|m| m.to_string()),
            Some(ModelFrom::Header(name)) => (req.header)(name),
            Some(ModelFrom::JsonBody(field)) => {
                // Refuse now what no model can change: a matching deny rule without `models`,
                // or allow rules none of which the identity satisfies.
                let denied_outright = route
                    .deny
                    .iter()
                    .any(|rule| rule.models.is_empty() && rule.matches_identity(&identity));
                let hopeless = !route.allow.is_empty()
                    && !route
                        .allow
                        .iter()
                        .any(|rule| rule.matches_identity(&identity));
                if denied_outright || hopeless {
                    return Step::Done(self.judge(route_index, identity, None, audit));
                }
                let headers = self.identity_headers(Some(route), Some(&*identity), None, None);
                return Step::NeedBody {
                    pending: Box::new(Pending {
                        route: route_index,
                        identity,
                        field: field.clone(),
                        audit,
                    }),
                    headers,
                };
            }
        };
        Step::Done(self.judge(route_index, identity, model, audit))
    }

    /// Finishes a [`Pending`] decision with the request body (`None`: larger than the limit).
    pub fn decide_with_body(&self, pending: Pending, body: Option<&[u8]>) -> Verdict {
        let Pending {
            route,
            identity,
            field,
            audit,
        } = pending;
        let Some(body) = body else {
            let mut refusal = Refusal::new(Reason::BodyTooLarge, Some(route));
            refusal.identity = Some(identity);
            return self.refuse(refusal, audit);
        };
        let model = model_from_json(body, &field);
        self.judge(route, identity, model, audit)
    }

    /// The largest body read for a `json_body` model.
    pub fn max_body_bytes(&self) -> usize {
        self.policy.max_body_bytes
    }

    /// The token's identity: from the cache, or verified (and then cached).
    fn authenticate(
        &self,
        route: &Route,
        found: &token::FoundToken,
        now: i64,
        may_wait: bool,
    ) -> Result<Rc<Identity>, AuthError> {
        let cached = self.cache.borrow_mut().get(found.token.as_bytes(), now);
        if let Some(identity) = cached {
            self.admit(route, identity.provider, found.source)?;
            return Ok(identity);
        }
        let (identity, exp) = self.verify_token(route, found, now, may_wait)?;
        let identity = Rc::new(identity);
        let skew = self
            .policy
            .providers
            .get(identity.provider)
            .map_or(0, |p| p.rules.clock_skew_seconds);
        self.cache
            .borrow_mut()
            .insert(found.token.as_bytes(), identity.clone(), exp, skew, now);
        Ok(identity)
    }

    /// Whether this route takes tokens of this provider, carried in this source.
    fn admit(&self, route: &Route, provider: usize, source: usize) -> Result<(), Reason> {
        if let Some(allowed) = &route.providers {
            if !allowed.contains(&provider) {
                return Err(Reason::UnknownIssuer);
            }
        }
        let provider = self
            .policy
            .providers
            .get(provider)
            .ok_or(Reason::UnknownIssuer)?;
        if !provider.sources.contains(&source) {
            return Err(Reason::TokenSourceNotAllowed);
        }
        Ok(())
    }

    fn verify_token(
        &self,
        route: &Route,
        found: &token::FoundToken,
        now: i64,
        may_wait: bool,
    ) -> Result<(Identity, Option<i64>), AuthError> {
        let peeked = unverified::peek(&found.token)?;
        let iss = peeked.issuer()?;
        let provider_index =
            verify::select_provider(self.policy.providers.iter().map(|p| &p.rules), iss)
                .ok_or(Reason::UnknownIssuer)?;
        self.admit(route, provider_index, found.source)?;
        let provider = self
            .policy
            .providers
            .get(provider_index)
            .ok_or(Reason::UnknownIssuer)?;
        // Cheap checks before keys are even looked at: a forged token with a made-up kid and
        // wrong claims must not trigger a refetch.
        verify::check_claims(&peeked, &provider.rules, now)?;
        let remote = provider.remote_keys.is_some();
        let Some(keys) = self.keys(provider_index) else {
            if remote && may_wait {
                return Err(AuthError::NeedKeys {
                    provider: provider_index,
                    unknown_kid: false,
                });
            }
            return Err(Reason::KeysUnavailable.into());
        };
        if remote && may_wait {
            if let crate::jwks::Selection::UnknownKid =
                keys.select(peeked.kid.as_deref(), peeked.alg)
            {
                return Err(AuthError::NeedKeys {
                    provider: provider_index,
                    unknown_kid: true,
                });
            }
        }
        let verified = verify::verify(peeked, &provider.rules, &keys, now)?;
        let identity = claims::identity(
            provider_index,
            &verified.claims,
            &provider.claims,
            &provider.group_names,
            &self.policy.extra_claims,
        );
        Ok((identity, verified.exp))
    }

    /// Deny rules first, then allow rules.
    fn judge(
        &self,
        route_index: usize,
        identity: Rc<Identity>,
        model: Option<String>,
        mut audit: Audit,
    ) -> Verdict {
        audit.model = model.clone();
        let Some(route) = self.policy.routes.get(route_index) else {
            return self.refuse(Refusal::new(Reason::NoMatchingRoute, None), audit);
        };
        let model_ref = model.as_deref();
        let reason = if route
            .deny
            .iter()
            .any(|rule| rule.matches(&identity, model_ref))
        {
            Some(Reason::DeniedByRule)
        } else if route.allow.is_empty()
            || route
                .allow
                .iter()
                .any(|rule| rule.matches(&identity, model_ref))
        {
            None
        } else if route
            .allow
            .iter()
            .any(|rule| rule.matches_identity(&identity))
        {
            Some(Reason::ModelNotAllowed)
        } else {
            Some(Reason::NoRuleMatched)
        };
        match reason {
            Some(reason) => self.refuse(
                Refusal {
                    reason,
                    route: Some(route_index),
                    identity: Some(identity),
                    model,
                },
                audit,
            ),
            None => {
                let headers = self.identity_headers(Some(route), Some(&*identity), model_ref, None);
                Verdict {
                    action: Action::Forward(headers),
                    audit,
                }
            }
        }
    }

    fn pass(&self, mut audit: Audit, route: Option<&Route>) -> Verdict {
        audit.decision = Outcome::Passed;
        Verdict {
            action: Action::Forward(self.identity_headers(route, None, None, None)),
            audit,
        }
    }

    fn refuse(&self, refusal: Refusal, mut audit: Audit) -> Verdict {
        audit.reason = Some(refusal.reason.as_str());
        let route = refusal.route.and_then(|i| self.policy.routes.get(i));
        if self.policy.mode == Mode::DryRun {
            audit.decision = Outcome::WouldDeny;
            let headers = self.identity_headers(
                route,
                refusal.identity.as_deref(),
                refusal.model.as_deref(),
                Some(refusal.reason),
            );
            return Verdict {
                action: Action::Forward(headers),
                audit,
            };
        }
        audit.decision = Outcome::Denied;
        let reply = local_reply(
            refusal.reason,
            &self.policy.realm,
            route.map(|r| r.name.as_str()),
            audit.request_id.as_deref(),
        );
        Verdict {
            action: Action::Reply(reply),
            audit,
        }
    }

    fn describe(&self, audit: &mut Audit, identity: &Identity) {
        audit.provider = self
            .policy
            .providers
            .get(identity.provider)
            .map(|p| p.name.clone());
        audit.principal = identity.principal.clone();
        audit.tenant = identity.tenant.clone();
        audit.app = identity.app.clone();
        audit.jti = identity.jti.clone();
    }

    fn identity_headers(
        &self,
        route: Option<&Route>,
        identity: Option<&Identity>,
        model: Option<&str>,
        dry_run: Option<Reason>,
    ) -> Vec<(String, String)> {
        let forward = &self.policy.forward;
        let mut headers = Vec::new();
        let mut add = |name: &Option<String>, value: Option<String>| {
            if let (Some(name), Some(value)) = (name, value) {
                if !value.is_empty() {
                    headers.push((name.clone(), header_safe(&value)));
                }
            }
        };
        add(&forward.route, route.map(|r| r.name.clone()));
        if let Some(id) = identity {
            let provider = self
                .policy
                .providers
                .get(id.provider)
                .map(|p| p.name.clone());
            add(&forward.principal, id.principal.clone());
            add(&forward.tenant, id.tenant.clone());
            add(&forward.app, id.app.clone());
            add(&forward.caller, Some(id.caller.as_str().to_string()));
            add(&forward.groups, Some(join_list(&id.groups)));
            add(&forward.roles, Some(join_list(&id.roles)));
            add(&forward.scopes, Some(join_list(&id.scopes)));
            add(&forward.provider, provider);
        }
        add(&forward.model, model.map(str::to_string));
        if self.policy.mode == Mode::DryRun {
            let value = dry_run.map_or("allow", Reason::as_str);
            headers.push((forward.dry_run.clone(), value.to_string()));
        }
        headers
    }
}

/// Whether a path means the same thing to mlgate's matcher and to any upstream. Refused: dot
/// segments, empty segments (`//`), backslashes, `;` parameters, control characters, and any
/// percent-encoding — `%2F` would hide a slash, and `/v2/models/%66inance-x/infer` would dodge
/// a `finance-*` rule while the model server decodes it to `finance-x`. Envoy's
/// `normalize_path`/`merge_slashes` fix most of these before the filter runs; this is the
/// filter's own guarantee for hosts that do not.
fn path_is_unambiguous(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.starts_with('/') {
        return false;
    }
    let bytes_ok = path
        .bytes()
        .all(|b| b > 0x20 && b < 0x7f && !matches!(b, b'%' | b'\\' | b';' | b'#'));
    // One trailing slash is fine; anything else must be plain, non-empty segments.
    let body = rest.strip_suffix('/').unwrap_or(rest);
    bytes_ok && (body.is_empty() || body.split('/').all(|s| !matches!(s, "" | "." | "..")))
}

/// The model named by a top-level string field of a JSON body.
fn model_from_json(body: &[u8], field: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_str().map(str::to_string)
}

/// List headers are comma-separated; a `,` or `%` inside an item is percent-encoded so the
/// upstream can split unambiguously.
fn join_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| item.replace('%', "%25").replace(',', "%2C"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Header values must not carry control characters (CR/LF would split headers).
fn header_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests;
