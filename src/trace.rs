//! A decision's trace: every step the gate took for one request, recorded when the policy says
//! `explain: true` and logged by the adapter as one JSON line (`mlgate trace {…}`), which
//! `mlgate-harness explain` prints.
//!
//! Recording is cheap and compact: the gate notes what only it saw (the routes tried and why each
//! missed, where the token was, how far verification got and why it stopped, the values the token
//! presented, whether the rules were reached); everything else — identity, rule, reason — is in
//! the decision's [`Audit`]. Nothing is recorded when the policy does not ask (the gate checks one
//! flag). The trace never holds the token: only its fingerprint.
//!
//! The filter logs the trace compactly ([`Trace::compact`]: indices and codes, the audit record,
//! the identity). [`render`] expands such a line against the same policy, natively: each check
//! with the values it compared and its result, each rule with each condition's result, the
//! deciding rule marked. Expanding in the VM would cost ~12 KB of module (2026-12-05) for text
//! no request needs (measured 2026-12-05 on 1dfd935).

use crate::audit::{push_decimal, push_string, token_fingerprint, Audit};
use crate::claims::Identity;
use crate::decision::Reason;
use crate::policy::{Miss, ModelFrom, Policy, Route, Rule, Unmatched};
use crate::token::TokenSource;
use crate::verify::dangerous::Seen;
use crate::verify::{IssuerPattern, Tenants};

/// What the gate saw of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    method: String,
    host: String,
    /// Without the query string, which may carry a token.
    path: String,
    now: i64,
    /// Each route tried, in order, with why it missed (`None`: it matched).
    pub(crate) routes: Vec<(usize, Option<Miss>)>,
    pub(crate) token: TokenStep,
    pub(crate) stage: Stage,
    pub(crate) provider: Option<usize>,
    /// What the token presented, as it wrote it ([`Seen::presented`] reads it).
    pub(crate) presented: Option<Box<Seen>>,
    /// Why authentication refused the token.
    pub(crate) refused: Option<Reason>,
    /// Who checks the signature (`host` or `rust_crypto`).
    pub(crate) checker: Option<&'static str>,
    /// The route's rules were applied (to the model the decision's record names).
    pub(crate) rules: bool,
    /// The local reply's status; `None`: forwarded.
    pub(crate) status: Option<u16>,
}

/// The token step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenStep {
    /// Not looked for (no route, or an anonymous one).
    NotLooked,
    Missing,
    /// More than one, or too large.
    Refused(Reason),
    Found {
        source: usize,
        sha256: String,
    },
}

/// How far authentication got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// The token's header and claims could not be read (or nothing was tried).
    Unread,
    /// Read; no provider chosen yet.
    Read,
    /// The issuer chose a provider; the route and the token's source may still refuse it.
    Provider,
    /// The route takes the provider and the source: the claims are checked.
    Admitted,
    /// The claims hold: keys are looked up.
    Claims,
    /// Keys are there: the signature is checked.
    Keys,
    Verified,
    /// The identity came from the verified-token cache.
    Cached,
}

impl Trace {
    pub(crate) fn new(method: &str, host: &str, path: &str, now: i64) -> Trace {
        Trace {
            method: method.to_string(),
            host: host.to_string(),
            path: path.to_string(),
            now,
            routes: Vec::new(),
            token: TokenStep::NotLooked,
            stage: Stage::Unread,
            provider: None,
            presented: None,
            refused: None,
            checker: None,
            rules: false,
            status: None,
        }
    }

    pub(crate) fn found(&mut self, token: &str, source: usize) {
        self.token = TokenStep::Found {
            source,
            sha256: token_fingerprint(token),
        };
    }

    /// The line the filter logs: what the gate saw, by index and code, with the decision's
    /// record and the identity (see [`render`]).
    pub fn compact(&self, audit: &Audit) -> String {
        let mut w = Writer(String::with_capacity(768));
        w.0.push('{');
        w.text("method", &self.method);
        w.text("host", &self.host);
        w.text("path", &self.path);
        w.number("now", self.now);
        w.key("routes");
        w.0.push('[');
        for (index, miss) in &self.routes {
            w.sep();
            w.0.push('[');
            push_decimal(&mut w.0, *index as u64);
            w.0.push(',');
            let code = match miss {
                None => 0,
                Some(Miss::Method) => 1,
                Some(Miss::Host) => 2,
                Some(Miss::Path) => 3,
                Some(Miss::Header(i)) => 4 + *i as u64,
            };
            push_decimal(&mut w.0, code);
            w.0.push(']');
        }
        w.0.push(']');
        match &self.token {
            TokenStep::NotLooked => {}
            TokenStep::Missing => w.text("token", "missing"),
            TokenStep::Refused(reason) => w.text("token", reason.as_str()),
            TokenStep::Found { source, sha256 } => {
                w.number("source", *source as i64);
                w.text("sha256", sha256);
            }
        }
        w.number("stage", self.stage as i64);
        if let Some(provider) = self.provider {
            w.number("provider", provider as i64);
        }
        if let Some(p) = self.presented.as_deref() {
            w.key("presented");
            w.0.push('{');
            {
                use std::fmt::Write as _;
                w.key("alg");
                let _infallible = write!(w.0, "\"{:?}\"", p.alg);
            }
            w.optional("kid", p.kid.as_deref());
            w.key_raw("claims", &p.claims);
            if let Some(tenant) = &p.tenant {
                w.key_raw("tenant", tenant);
            }
            w.0.push('}');
        }
        if let Some(reason) = self.refused {
            w.text("refused", reason.as_str());
        }
        w.optional("checker", self.checker);
        if self.rules {
            w.boolean("rules", true);
        }
        if let Some(status) = self.status {
            w.number("status", i64::from(status));
        }
        w.key_raw("audit", &audit.json());
        if let Some(id) = audit.identity.as_deref() {
            w.key("identity");
            w.0.push('{');
            w.number("provider", id.provider as i64);
            w.text("caller", id.caller.as_str());
            w.list("groups", id.groups.iter().map(String::as_str));
            w.list("roles", id.roles.iter().map(String::as_str));
            w.list("scopes", id.scopes.iter().map(String::as_str));
            if id.groups_overage {
                w.boolean("overage", true);
            }
            w.key("extra");
            w.0.push('[');
            for values in &id.extra {
                w.sep();
                w.0.push('[');
                for value in values {
                    w.sep();
                    push_string(&mut w.0, value);
                }
                w.0.push(']');
            }
            w.0.push(']');
            w.0.push('}');
        }
        w.0.push('}');
        w.0
    }

    /// The trace as one JSON object, against the policy that made the decision `audit` records.
    pub fn json(&self, policy: &Policy, audit: &Audit) -> String {
        let mut w = Writer(String::with_capacity(1024));
        w.0.push('{');
        w.key("request");
        w.0.push('{');
        w.text("method", &self.method);
        w.text("host", &self.host);
        w.text("path", &self.path);
        w.0.push('}');
        self.write_routes(&mut w, policy);
        let route = self
            .routes
            .iter()
            .find(|(_, miss)| miss.is_none())
            .and_then(|(index, _)| policy.routes.get(*index));
        self.write_token(&mut w, policy);
        self.write_checks(&mut w, policy);
        let identity = audit.identity.as_deref();
        if let Some(identity) = identity {
            write_identity(&mut w, policy, identity);
        }
        if let (Some(route), true) = (route, self.rules) {
            let model = audit.model.as_deref();
            write_model(&mut w, route, model);
            if let Some(identity) = identity {
                write_rules(&mut w, policy, route, identity, model, audit);
            }
        }
        w.key("decision");
        w.0.push('{');
        w.text("decision", audit.decision.as_str());
        if policy.mode == crate::policy::Mode::DryRun {
            w.boolean("dry_run", true);
        }
        match self.status {
            Some(status) => w.number("status", i64::from(status)),
            None => w.boolean("forwarded", true),
        }
        if let Some(reason) = audit.reason {
            w.text("reason", reason);
        }
        if let Some(route) = &audit.route {
            w.text("route", route);
        }
        if let Some(rule) = audit.rule {
            w.key("rule");
            w.0.push('"');
            rule.write(&mut w.0);
            w.0.push('"');
        }
        if let Some(model) = &audit.model {
            w.text("model", model);
        }
        w.0.push('}');
        w.0.push('}');
        w.0
    }

    fn write_routes(&self, w: &mut Writer, policy: &Policy) {
        w.key("routes");
        w.0.push('[');
        for (index, miss) in &self.routes {
            w.sep();
            w.0.push('{');
            let name = policy.routes.get(*index).map_or("", |r| r.name.as_str());
            w.text("route", name);
            match miss {
                None => w.text("match", "matched"),
                Some(Miss::Method) => w.text("match", "method"),
                Some(Miss::Host) => w.text("match", "host"),
                Some(Miss::Path) => w.text("match", "path"),
                Some(Miss::Header(i)) => {
                    let mut at = String::from("headers[");
                    push_decimal(&mut at, *i as u64);
                    at.push(']');
                    w.text("match", &at);
                }
            }
            w.0.push('}');
        }
        w.0.push(']');
        let matched = self.routes.iter().find(|(_, miss)| miss.is_none());
        match matched.and_then(|(index, _)| policy.routes.get(*index)) {
            None if !self.routes.is_empty() || policy.routes.is_empty() => {
                let unmatched = match policy.unmatched {
                    Unmatched::Allow => "allow",
                    Unmatched::Deny => "deny",
                };
                w.text("unmatched", unmatched);
            }
            Some(route) if route.anonymous => w.boolean("anonymous", true),
            _ => {}
        }
    }

    fn write_token(&self, w: &mut Writer, policy: &Policy) {
        match &self.token {
            TokenStep::NotLooked => return,
            TokenStep::Missing => {
                w.key("token");
                w.0.push_str("{\"found\":false}");
                return;
            }
            TokenStep::Refused(reason) => {
                w.key("token");
                w.0.push_str("{\"found\":false");
                w.text("refused", reason.as_str());
                w.0.push('}');
                return;
            }
            TokenStep::Found { source, sha256 } => {
                w.key("token");
                w.0.push_str("{\"found\":true");
                match policy.sources.get(*source) {
                    Some(TokenSource::HeaderWithScheme { name, scheme }) => {
                        w.text("header", name);
                        w.text("scheme", scheme);
                    }
                    Some(TokenSource::Header { name }) => w.text("header", name),
                    Some(TokenSource::Query { name }) => w.text("query", name),
                    Some(TokenSource::Cookie { name }) => w.text("cookie", name),
                    None => {}
                }
                w.text("sha256", sha256);
                if self.stage == Stage::Unread {
                    if let Some(reason) = self.refused {
                        w.text("unreadable", reason.as_str());
                    }
                }
                w.0.push('}');
            }
        }
        if self.stage == Stage::Cached {
            w.text("cache", "hit");
        } else if self.stage > Stage::Unread {
            w.text("cache", "miss");
        }
        let presented = self.presented.as_deref().map(Seen::presented);
        if let Some(iss) = presented.as_ref().and_then(|p| p.iss.as_deref()) {
            w.text("issuer", iss);
        }
        let provider = self.provider.and_then(|p| policy.providers.get(p));
        match provider {
            Some(provider) => w.text("provider", &provider.name),
            None if self.stage == Stage::Read => {
                if let Some(reason) = self.refused {
                    w.text("provider_refused", reason.as_str());
                }
            }
            None => {}
        }
        if self.stage == Stage::Provider {
            // The issuer chose a provider that this route or this token source does not take.
            if let Some(reason) = self.refused {
                w.text("admission_refused", reason.as_str());
            }
        }
    }

    /// Each check with the values it compared, in the order `verify::check_claims` and the
    /// signature step run them: those before the failing one passed, those after it were not
    /// reached.
    fn write_checks(&self, w: &mut Writer, policy: &Policy) {
        if self.stage < Stage::Admitted || self.stage == Stage::Cached {
            return;
        }
        let presented = self.presented.as_deref().map(Seen::presented);
        let (Some(presented), Some(provider)) = (
            presented.as_ref(),
            self.provider.and_then(|p| policy.providers.get(p)),
        ) else {
            return;
        };
        let failed = match (self.stage, self.refused) {
            (Stage::Verified, _) | (_, None) => None,
            (Stage::Admitted, Some(reason)) => Some(claims_check(reason)),
            (Stage::Claims, Some(_)) => Some(Check::Keys),
            (Stage::Keys, Some(Reason::UnknownKey)) => Some(Check::Kid),
            (_, Some(_)) => Some(Check::Signature),
        };
        let rules = &provider.rules;
        w.key("checks");
        w.0.push('[');
        for check in CHECKS {
            let result = match failed {
                Some(at) if at == check => self.refused.map_or("failed", Reason::as_str),
                Some(at) if (at as u8) < (check as u8) => "not_reached",
                _ => "ok",
            };
            w.sep();
            w.0.push('{');
            w.text("check", check.name());
            w.text("result", result);
            match check {
                Check::Alg => {
                    if let Some(alg) = presented.alg {
                        w.text("value", &format!("{alg:?}"));
                    }
                    let accepted: Vec<String> =
                        rules.algorithms.iter().map(|a| format!("{a:?}")).collect();
                    w.list("accepted", accepted.iter().map(String::as_str));
                }
                Check::Issuer => {
                    w.optional("value", presented.iss.as_deref());
                    let patterns: Vec<String> = rules
                        .issuers
                        .iter()
                        .map(|p| match p {
                            IssuerPattern::Exact(exact) => exact.clone(),
                            IssuerPattern::Tenant { prefix, suffix } => {
                                format!("{prefix}{{tenant}}{suffix}")
                            }
                        })
                        .collect();
                    w.list("accepted", patterns.iter().map(String::as_str));
                }
                Check::Tenant => {
                    w.text("claim", &rules.tenant_claim);
                    w.optional("value", presented.tenant.as_deref());
                    match &rules.tenants {
                        Tenants::Unrestricted => w.text("accepted", "unrestricted"),
                        Tenants::Any => w.text("accepted", "*"),
                        Tenants::List(list) => w.list("accepted", list.iter().map(String::as_str)),
                    }
                }
                Check::Exp | Check::Nbf | Check::Iat => {
                    let value = match check {
                        Check::Exp => presented.exp,
                        Check::Nbf => presented.nbf,
                        _ => presented.iat,
                    };
                    match value {
                        Some(value) => w.number("value", value),
                        None => w.key_raw("value", "null"),
                    }
                    if check == Check::Exp {
                        w.boolean("required", rules.require_exp);
                    }
                    w.number("now", self.now);
                    w.number("skew", rules.clock_skew_seconds);
                }
                Check::Lifetime => match rules.max_lifetime_seconds {
                    Some(max) => w.number("max", max),
                    None => w.key_raw("max", "null"),
                },
                Check::Audience => {
                    w.list("value", presented.aud.iter().map(String::as_str));
                    match &rules.audiences {
                        Some(list) => w.list("accepted", list.iter().map(String::as_str)),
                        None => w.text("accepted", "any"),
                    }
                }
                Check::IdToken => w.boolean("accepted", rules.accept_id_tokens),
                Check::Keys => {}
                Check::Kid => w.optional("value", presented.kid.as_deref()),
                Check::Signature => w.optional("backend", self.checker),
            }
            w.0.push('}');
        }
        w.0.push(']');
    }
}

/// The checks a fresh token goes through, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Alg,
    Issuer,
    Tenant,
    Exp,
    Nbf,
    Iat,
    Lifetime,
    Audience,
    IdToken,
    Keys,
    Kid,
    Signature,
}

const CHECKS: [Check; 12] = [
    Check::Alg,
    Check::Issuer,
    Check::Tenant,
    Check::Exp,
    Check::Nbf,
    Check::Iat,
    Check::Lifetime,
    Check::Audience,
    Check::IdToken,
    Check::Keys,
    Check::Kid,
    Check::Signature,
];

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::Alg => "alg",
            Check::Issuer => "issuer",
            Check::Tenant => "tenant",
            Check::Exp => "exp",
            Check::Nbf => "nbf",
            Check::Iat => "iat",
            Check::Lifetime => "lifetime",
            Check::Audience => "audience",
            Check::IdToken => "id_token",
            Check::Keys => "keys",
            Check::Kid => "kid",
            Check::Signature => "signature",
        }
    }
}

/// The check of `verify::check_claims` that refuses with `reason`. A malformed claim (a tenant,
/// time or audience of the wrong type) is put on the first check that reads claims.
fn claims_check(reason: Reason) -> Check {
    match reason {
        Reason::UnsupportedAlgorithm => Check::Alg,
        Reason::UnknownIssuer => Check::Issuer,
        Reason::MissingExpiry | Reason::TokenExpired => Check::Exp,
        Reason::TokenNotYetValid => Check::Nbf,
        Reason::TokenIssuedInFuture => Check::Iat,
        Reason::TokenLifetimeTooLong => Check::Lifetime,
        Reason::AudienceMismatch => Check::Audience,
        Reason::IdTokenNotAccepted => Check::IdToken,
        _ => Check::Tenant,
    }
}

fn write_identity(w: &mut Writer, policy: &Policy, identity: &Identity) {
    let provider = policy.providers.get(identity.provider);
    w.key("identity");
    w.0.push('{');
    w.optional("principal", identity.principal.as_deref());
    w.optional("tenant", identity.tenant.as_deref());
    w.optional("app", identity.app.as_deref());
    w.text("caller", identity.caller.as_str());
    w.key("groups");
    w.0.push('[');
    for name in &identity.groups {
        w.sep();
        w.0.push('{');
        w.text("name", name);
        // Mapped from an ID by the provider's `group_names`.
        let id = provider.and_then(|p| {
            p.group_names
                .iter()
                .find(|(_, mapped)| *mapped == name)
                .map(|(id, _)| id.as_str())
        });
        w.optional("id", id);
        w.0.push('}');
    }
    w.0.push(']');
    if identity.groups_overage {
        w.boolean("groups_overage", true);
    }
    w.list("roles", identity.roles.iter().map(String::as_str));
    w.list("scopes", identity.scopes.iter().map(String::as_str));
    if !policy.extra_claims.is_empty() {
        w.key("claims");
        w.0.push('{');
        for (path, values) in policy.extra_claims.iter().zip(&identity.extra) {
            w.list(path.as_str(), values.iter().map(String::as_str));
        }
        w.0.push('}');
    }
    w.0.push('}');
}

fn write_model(w: &mut Writer, route: &Route, model: Option<&str>) {
    let Some(from) = &route.model_from else {
        return;
    };
    w.key("model");
    w.0.push('{');
    match from {
        ModelFrom::PathParam(_) => w.text("from", "path"),
        ModelFrom::Header(name) => w.text("header", name),
        ModelFrom::JsonBody(field) => w.text("json_body", field),
    }
    match model {
        Some(model) => w.text("value", model),
        None => w.key_raw("value", "null"),
    }
    w.0.push('}');
}

/// Each deny rule, then each allow rule, with each condition's result; the deciding rule marked.
fn write_rules(
    w: &mut Writer,
    policy: &Policy,
    route: &Route,
    identity: &Identity,
    model: Option<&str>,
    audit: &Audit,
) {
    use crate::audit::RuleRef;
    w.key("rules");
    w.0.push('[');
    let all = route
        .deny
        .iter()
        .enumerate()
        .map(|(i, r)| (RuleRef::Deny(i), r))
        .chain(
            route
                .allow
                .iter()
                .enumerate()
                .map(|(i, r)| (RuleRef::Allow(i), r)),
        );
    for (at, rule) in all {
        w.sep();
        w.0.push('{');
        w.key("rule");
        w.0.push('"');
        at.write(&mut w.0);
        w.0.push('"');
        w.boolean("matched", rule.matches(identity, model));
        if audit.rule == Some(at) {
            w.boolean("decided", true);
        }
        w.key("conditions");
        w.0.push('[');
        for_each_condition(policy, rule, identity, model, &mut |name, wanted, ok| {
            w.sep();
            w.0.push('{');
            w.list(name, wanted.iter().map(String::as_str));
            w.boolean("ok", ok);
            w.0.push('}');
        });
        w.0.push(']');
        w.0.push('}');
    }
    w.0.push(']');
}

/// Each condition a rule has, with what it wants and whether the identity and model satisfy it:
/// the parts of [`Rule::matches`], whose conjunction it is.
pub(crate) fn for_each_condition(
    policy: &Policy,
    rule: &Rule,
    id: &Identity,
    model: Option<&str>,
    f: &mut dyn FnMut(&str, &[String], bool),
) {
    let any = |wanted: &[String], have: &[String]| wanted.iter().any(|w| have.contains(w));
    let one = |wanted: &[String], have: Option<&String>| have.is_some_and(|h| wanted.contains(h));
    let lists: [(&str, &[String], bool); 7] = [
        ("groups", &rule.groups, any(&rule.groups, &id.groups)),
        (
            "all_groups",
            &rule.all_groups,
            rule.all_groups.iter().all(|g| id.groups.contains(g)),
        ),
        ("roles", &rule.roles, any(&rule.roles, &id.roles)),
        ("scopes", &rule.scopes, any(&rule.scopes, &id.scopes)),
        (
            "principals",
            &rule.principals,
            one(&rule.principals, id.principal.as_ref()),
        ),
        ("apps", &rule.apps, one(&rule.apps, id.app.as_ref())),
        (
            "tenants",
            &rule.tenants,
            one(&rule.tenants, id.tenant.as_ref()),
        ),
    ];
    for (name, wanted, ok) in lists {
        if !wanted.is_empty() {
            f(name, wanted, ok);
        }
    }
    if !rule.providers.is_empty() {
        let names: Vec<String> = rule
            .providers
            .iter()
            .filter_map(|p| policy.providers.get(*p).map(|p| p.name.clone()))
            .collect();
        f("providers", &names, rule.providers.contains(&id.provider));
    }
    if let Some(caller) = rule.caller {
        let wanted = [caller.as_str().to_string()];
        f("caller", &wanted, caller == id.caller);
    }
    if !rule.models.is_empty() {
        let globs: Vec<String> = rule.models.iter().map(|g| g.pattern()).collect();
        f("models", &globs, rule.matches_model(model));
    }
    for (index, accepted) in &rule.claims {
        let name = policy.extra_claims.get(*index).map_or("", |p| p.as_str());
        let ok = id
            .extra
            .get(*index)
            .is_some_and(|values| values.iter().any(|v| accepted.contains(v)));
        let mut key = String::from("claims.");
        key.push_str(name);
        f(&key, accepted, ok);
    }
}

/// Expands a compact trace line ([`Trace::compact`], the JSON after `mlgate trace `) against the
/// policy that wrote it. `Err` says what in the line is not a trace.
pub fn render(policy: &Policy, line: &str) -> Result<String, String> {
    let (trace, audit) = read::read(line)?;
    Ok(trace.json(policy, &audit))
}

mod read;

/// A JSON writer for the trace's shape: objects and arrays are opened and closed by the caller;
/// members and elements get their separating comma here. Not inlined: each call is a few bytes of
/// module rather than a copy of the method.
struct Writer(String);

impl Writer {
    /// A comma unless this is the first member or element.
    #[inline(never)]
    fn sep(&mut self) {
        if !matches!(self.0.as_bytes().last(), Some(b'{' | b'[' | b':') | None) {
            self.0.push(',');
        }
    }

    #[inline(never)]
    fn key(&mut self, key: &str) {
        self.sep();
        push_string(&mut self.0, key);
        self.0.push(':');
    }

    #[inline(never)]
    fn key_raw(&mut self, key: &str, raw: &str) {
        self.key(key);
        self.0.push_str(raw);
    }

    #[inline(never)]
    fn text(&mut self, key: &str, value: &str) {
        self.key(key);
        push_string(&mut self.0, value);
    }

    #[inline(never)]
    fn optional(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.text(key, value);
        }
    }

    #[inline(never)]
    fn number(&mut self, key: &str, value: i64) {
        self.key(key);
        if value < 0 {
            self.0.push('-');
        }
        push_decimal(&mut self.0, value.unsigned_abs());
    }

    #[inline(never)]
    fn boolean(&mut self, key: &str, value: bool) {
        self.key_raw(key, if value { "true" } else { "false" });
    }

    #[inline(never)]
    fn list<'v>(&mut self, key: &str, values: impl Iterator<Item = &'v str>) {
        self.key(key);
        self.0.push('[');
        for value in values {
            self.sep();
            push_string(&mut self.0, value);
        }
        self.0.push(']');
    }
}

#[cfg(test)]
mod tests;
