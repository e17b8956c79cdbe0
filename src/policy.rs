//! The compiled policy: providers, route matchers and rules, in the form the hot path uses.
//!
//! Built once by `config::compile`; never modified afterwards. Matching allocates nothing but
//! the captured path parameters.

use std::collections::BTreeMap;

use crate::claims::{Caller, ClaimMap, ClaimPath, Identity};
use crate::jwks::KeySet;
use crate::keyring::RemoteJwks;
use crate::token::TokenSource;
use crate::verify::TokenRules;

/// Everything the filter needs to decide, compiled.
#[derive(Clone, Debug)]
pub struct Policy {
    pub providers: Vec<Provider>,
    pub routes: Vec<Route>,
    pub unmatched: Unmatched,
    pub forward: Forward,
    pub mode: Mode,
    pub max_token_bytes: usize,
    pub max_body_bytes: usize,
    /// Verified-token cache entries per VM (0: no cache).
    pub cache_entries: usize,
    pub realm: String,
    pub audit: AuditLevel,
    /// The union of every provider's token sources; providers refer to it by index.
    pub sources: Vec<TokenSource>,
    /// Claim paths compared by rules' `claims` conditions; `Identity::extra` follows this order.
    pub extra_claims: Vec<ClaimPath>,
    /// Every decision records its trace ([`crate::trace`]), which the adapter logs.
    pub explain: bool,
    /// Each decision's compute time goes to a histogram (on by default). In Envoy one
    /// histogram sample costs ~1.5–2 µs of the proxy's CPU per request — a twentieth of a cache
    /// hit's — because Envoy hands every value to its stats sinks when it is recorded.
    pub decision_duration_histogram: bool,
}

#[derive(Clone, Debug)]
pub struct Provider {
    pub name: String,
    pub rules: TokenRules,
    /// Keys known at configure time (inline JWKS or shared secret).
    pub initial_keys: Option<KeySet>,
    /// Where remote keys come from (JWKS URI or OIDC discovery).
    pub remote_keys: Option<RemoteJwks>,
    /// Indices into `Policy::sources`.
    pub sources: Vec<usize>,
    pub claims: ClaimMap,
    /// Group ID → name. Ordered, as the configuration reads it: a lookup is a few comparisons,
    /// and the module carries no hash table for it.
    pub group_names: BTreeMap<String, String>,
    pub on_groups_overage: Overage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overage {
    Deny,
    Ignore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmatched {
    Deny,
    Allow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    DryRun,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditLevel {
    All,
    Denied,
    Off,
}

/// Which identity headers go upstream. Names are complete (prefix included), lower-case.
#[derive(Clone, Debug)]
pub struct Forward {
    pub prefix: String,
    pub principal: Option<String>,
    pub tenant: Option<String>,
    pub app: Option<String>,
    pub caller: Option<String>,
    pub groups: Option<String>,
    pub roles: Option<String>,
    pub scopes: Option<String>,
    pub route: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// The completion-token limit a json_body request declares (off by default).
    pub max_tokens: Option<String>,
    pub dry_run: String,
    pub strip_authorization: bool,
    /// More claims forwarded as they are: (index into `Policy::extra_claims`, header name).
    pub claims: Vec<(usize, String)>,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub anonymous: bool,
    /// Providers whose tokens this route accepts; `None` = all.
    pub providers: Option<Vec<usize>>,
    pub model_from: Option<ModelFrom>,
    pub deny: Vec<Rule>,
    pub allow: Vec<Rule>,
    /// Some rule looks at groups: a token with an incomplete group list cannot be judged.
    pub uses_groups: bool,
    /// Some rule names `models`: a request whose model cannot be read is refused, never judged
    /// as naming no model.
    pub model_decides: bool,
    /// A request that names no model is judged as such (e.g. Azure ML's default deployment);
    /// refused at load when a deny rule names models.
    pub allow_missing_model: bool,
    /// The route answers with a model catalogue, filtered per caller by another route's rules.
    pub list_models: Option<ListModels>,
}

/// `list_models`: the route's response is a model listing; each caller sees only the models that
/// route `for_route`'s rules would let it call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListModels {
    pub format: ListingFormat,
    /// Index of the route whose rules decide which models are listed.
    pub for_route: usize,
    /// The largest listing read; a larger one is refused (`listing_too_large`).
    pub max_bytes: usize,
}

/// The shape of a model listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListingFormat {
    /// OpenAI `GET /v1/models`: `{"object":"list","data":[{"id":…},…]}`.
    OpenAi,
    /// The v2 protocol's repository index (Triton, MLServer) `POST /v2/repository/index`:
    /// `[{"name":…,"version":…,"state":…},…]`.
    Triton,
    /// KServe v1 `GET /v1/models`: `{"models":[…]}`.
    KServeV1,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelFrom {
    /// Index of a `{param}` in the route's path template.
    PathParam(usize),
    /// A request header (lower-case name), e.g. Azure ML's `azureml-model-deployment`.
    Header(String),
    /// A top-level string field of the JSON request body (OpenAI-compatible `model`).
    JsonBody(String),
}

/// The request as the matcher sees it.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// Host without port, as sent.
    pub host: &'a str,
    pub header: &'a crate::token::HeaderLookup<'a>,
}

/// Whether a path means the same thing to mlgate's matcher and to any upstream. Refused: dot
/// segments, empty segments (`//`), backslashes, `;` parameters, control characters, and any
/// percent-encoding — `%2F` would hide a slash, and `/v2/models/%66inance-x/infer` would dodge
/// a `finance-*` rule while the model server decodes it to `finance-x`. Envoy's
/// `normalize_path`/`merge_slashes` fix most of these before the filter runs; this is the
/// filter's own guarantee for hosts that do not.
pub(crate) fn path_is_unambiguous(path: &str) -> bool {
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

#[derive(Clone, Debug, Default)]
pub struct RouteMatch {
    pub hosts: Vec<HostPattern>,
    pub methods: Vec<String>,
    pub path: Option<PathMatch>,
    pub headers: Vec<HeaderMatch>,
}

impl RouteMatch {
    /// `Some(captured path parameters)` when the request fits.
    pub fn matches<'p>(&self, req: &RequestParts<'p>) -> Option<Vec<&'p str>> {
        self.check(req).ok()
    }

    /// Why the request does not fit, the first condition in [`RouteMatch::matches`]'s order
    /// that fails; `None` when it fits. Only a trace asks.
    pub fn miss(&self, req: &RequestParts<'_>) -> Option<Miss> {
        self.check(req).err()
    }

    /// The captured path parameters when the request fits, else the first condition that
    /// fails: one walk serves both the match and a trace's reason for a miss.
    pub fn check<'p>(&self, req: &RequestParts<'p>) -> Result<Vec<&'p str>, Miss> {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == req.method) {
            return Err(Miss::Method);
        }
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h.matches(req.host)) {
            return Err(Miss::Host);
        }
        let captures = match &self.path {
            None => Vec::new(),
            Some(path) => path.matches(req.path).ok_or(Miss::Path)?,
        };
        match self.headers.iter().position(|h| !h.matches(req.header)) {
            Some(i) => Err(Miss::Header(i)),
            None => Ok(captures),
        }
    }
}

/// The part of a route's `match` a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    Method,
    Host,
    Path,
    /// `match.headers[i]`.
    Header(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// Lower-case host.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any subdomain, not the bare domain.
    Suffix(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        match self {
            HostPattern::Exact(exact) => host.eq_ignore_ascii_case(exact),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(v6, _)| v6.trim_start_matches('['));
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Without trailing slash; matches on a segment boundary.
    Prefix(String),
    Template(Template),
}

impl PathMatch {
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        match self {
            PathMatch::Exact(exact) => (path == exact).then(Vec::new),
            PathMatch::Prefix(prefix) => {
                let rest = path.strip_prefix(prefix.as_str())?;
                (rest.is_empty() || rest.starts_with('/') || prefix.is_empty()).then(Vec::new)
            }
            PathMatch::Template(template) => template.matches(path),
        }
    }
}

/// A path template such as `/v2/models/{model}/infer` or `/v1/models/{model}:predict`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<TemplateSegment>,
    pub params: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSegment {
    Literal(String),
    /// `{name}` with optional literal text before and after it in the same segment.
    Param {
        prefix: String,
        suffix: String,
    },
}

impl Template {
    pub fn matches<'p>(&self, path: &'p str) -> Option<Vec<&'p str>> {
        let rest = path.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let mut captures = Vec::with_capacity(self.params.len());
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                TemplateSegment::Literal(literal) => {
                    if part != literal {
                        return None;
                    }
                }
                TemplateSegment::Param { prefix, suffix } => {
                    let value = part
                        .strip_prefix(prefix.as_str())?
                        .strip_suffix(suffix.as_str())?;
                    if value.is_empty() || value == "." || value == ".." {
                        return None;
                    }
                    captures.push(value);
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(captures)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Lower-case.
    pub name: String,
    pub expect: HeaderExpect,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderExpect {
    Present,
    Absent,
    Exact(String),
}

impl HeaderMatch {
    fn matches(&self, header: &crate::token::HeaderLookup<'_>) -> bool {
        let value = header(&self.name);
        match &self.expect {
            HeaderExpect::Present => value.is_some(),
            HeaderExpect::Absent => value.is_none(),
            HeaderExpect::Exact(expected) => value.as_deref() == Some(expected.as_str()),
        }
    }
}

/// One allow or deny rule: every condition present must hold.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    pub groups: Vec<String>,
    pub all_groups: Vec<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub principals: Vec<String>,
    pub apps: Vec<String>,
    pub tenants: Vec<String>,
    pub providers: Vec<usize>,
    pub caller: Option<Caller>,
    pub models: Vec<Glob>,
    /// (index into `Policy::extra_claims`, accepted values).
    pub claims: Vec<(usize, Vec<String>)>,
}

fn any_in(wanted: &[String], have: &[String]) -> bool {
    wanted.is_empty() || wanted.iter().any(|w| have.contains(w))
}

fn one_of(wanted: &[String], have: Option<&String>) -> bool {
    wanted.is_empty() || have.is_some_and(|h| wanted.contains(h))
}

impl Rule {
    pub fn uses_groups(&self) -> bool {
        !self.groups.is_empty() || !self.all_groups.is_empty()
    }

    /// Whether the identity satisfies every condition but `models`.
    pub fn matches_identity(&self, id: &Identity) -> bool {
        any_in(&self.groups, &id.groups)
            && self.all_groups.iter().all(|g| id.groups.contains(g))
            && any_in(&self.roles, &id.roles)
            && any_in(&self.scopes, &id.scopes)
            && one_of(&self.principals, id.principal.as_ref())
            && one_of(&self.apps, id.app.as_ref())
            && one_of(&self.tenants, id.tenant.as_ref())
            && (self.providers.is_empty() || self.providers.contains(&id.provider))
            && self.caller.is_none_or(|c| c == id.caller)
            && self.claims.iter().all(|(index, accepted)| {
                id.extra
                    .get(*index)
                    .is_some_and(|values| values.iter().any(|v| accepted.contains(v)))
            })
    }

    pub fn matches_model(&self, model: Option<&str>) -> bool {
        self.models.is_empty() || model.is_some_and(|m| self.models.iter().any(|g| g.matches(m)))
    }

    pub fn matches(&self, id: &Identity, model: Option<&str>) -> bool {
        self.matches_identity(id) && self.matches_model(model)
    }
}

/// A model-name glob: `*` any run of characters, `?` exactly one.
///
/// Hand-written because path globbing crates treat `/` specially, and model names such as
/// `meta/llama-3-8b` contain slashes that must match like any other character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        Glob {
            pattern: pattern.chars().collect(),
        }
    }

    /// The pattern as written.
    pub fn pattern(&self) -> String {
        self.pattern.iter().collect()
    }

    /// Iterative wildcard matching with single-star backtracking: linear in practice, never
    /// exponential.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let (mut p, mut t) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.pattern.get(p) {
                Some('*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some('?') => {
                    p += 1;
                    t += 1;
                }
                Some(c) if Some(c) == text.get(t) => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        star = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        self.pattern
            .get(p..)
            .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(text: &str) -> Template {
        crate::config::compile_template(text).unwrap()
    }

    #[test]
    fn template_captures_model() {
        let t = template("/v2/models/{model}/infer");
        assert_eq!(t.matches("/v2/models/resnet/infer"), Some(vec!["resnet"]));
        assert_eq!(t.matches("/v2/models/resnet/ready"), None);
        assert_eq!(t.matches("/v2/models//infer"), None);
        assert_eq!(t.matches("/v2/models/a/b/infer"), None);
    }

    #[test]
    fn template_param_with_suffix() {
        let t = template("/v1/models/{model}:predict");
        assert_eq!(t.matches("/v1/models/fraud:predict"), Some(vec!["fraud"]));
        assert_eq!(t.matches("/v1/models/fraud:explain"), None);
        assert_eq!(t.matches("/v1/models/:predict"), None);
    }

    #[test]
    fn template_refuses_dot_segments_as_parameters() {
        let t = template("/v2/models/{model}/infer");
        assert_eq!(t.matches("/v2/models/../infer"), None);
        assert_eq!(t.matches("/v2/models/./infer"), None);
    }

    #[test]
    fn prefix_matches_on_segment_boundary() {
        let p = PathMatch::Prefix("/score".into());
        assert!(p.matches("/score").is_some());
        assert!(p.matches("/score/batch").is_some());
        assert!(p.matches("/scores").is_none());
    }

    #[test]
    fn host_suffix_matches_subdomains_not_apex() {
        let h = HostPattern::Suffix(".example.com".into());
        assert!(h.matches("ml.example.com"));
        assert!(h.matches("ML.Example.com:8443"));
        assert!(!h.matches("example.com"));
        assert!(!h.matches("evilexample.com"));
    }

    #[test]
    fn host_exact_ignores_port_and_case() {
        let h = HostPattern::Exact("ml.example.com".into());
        assert!(h.matches("ML.example.com:443"));
        assert!(!h.matches("ml.example.com.evil"));
    }

    #[test]
    fn glob_star_and_question_mark() {
        assert!(Glob::new("finance-*").matches("finance-forecast"));
        assert!(!Glob::new("finance-*").matches("fin-forecast"));
        assert!(Glob::new("llama-?b").matches("llama-7b"));
        assert!(Glob::new("*").matches(""));
        assert!(Glob::new("meta/*").matches("meta/llama-3"));
        assert!(!Glob::new("gpt-4o").matches("gpt-4o-mini"));
        assert!(Glob::new("*a*b*c").matches("xxaxxbxxc"));
    }

    #[test]
    fn glob_is_not_exponential() {
        let g = Glob::new(&"*a".repeat(30));
        assert!(!g.matches(&"a".repeat(29)));
    }
}
