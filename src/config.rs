//! The configuration schema (serde, `deny_unknown_fields` everywhere) and `compile`, the one step
//! that validates everything and builds the runtime [`Policy`].
//!
//! Every error names the exact field path (`routes[2].allow[0].groups: …`), so a bad
//! configuration is refused at load time with a message a person can act on. Nothing here runs
//! per request.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hashbrown::HashMap;
use jsonwebtoken::Algorithm;
use serde::de::{self, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::claims::{Caller, CallerRule, ClaimMap, ClaimPath};
use crate::crypto::Backend;
use crate::json_path;
use crate::jwks::{self, Key, KeyFamily, KeySet, Strictness};
use crate::keyring::{FetchTarget, RemoteJwks, Url};
use crate::policy::{
    AuditLevel, Forward, Glob, HeaderExpect, HeaderMatch, HostPattern, Mode, ModelFrom, Overage,
    PathMatch, Policy, Provider, Route, RouteMatch, Rule, Template, TemplateSegment, Unmatched,
};
use crate::token::TokenSource;
use crate::verify::{IssuerPattern, Tenants, TokenRules};

/// A configuration error: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn err<T>(path: impl Into<String>, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        path: path.into(),
        message: message.into(),
    })
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

// The three either-or fields below (string or list, bool or string) have hand-written visitors
// rather than `#[serde(untagged)]`: untagged buffers the whole value and then reports only "data
// did not match any variant", after the value, and after its object's closing brace when it is
// the last member, so no position tells which field it was (json_path names fields from
// serde_json's position). A visitor is refused where it stands, with the element that is wrong
// (issuer[1]: invalid type: integer `1`, expected a string), and takes less code.

#[derive(Debug)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;
        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, one: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(one.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut many = Vec::new();
                while let Some(one) = seq.next_element::<String>()? {
                    many.push(one);
                }
                Ok(OneOrMany::Many(many))
            }
        }
        deserializer.deserialize_any(OneOrManyVisitor)
    }
}

/// `true`, `false` or a string: [`DiscoveryConfig`] and [`ForwardField`].
fn bool_or_string<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    from_bool: fn(bool) -> T,
    from_string: fn(String) -> T,
) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
{
    struct BoolOrString<T> {
        expecting: &'static str,
        from_bool: fn(bool) -> T,
        from_string: fn(String) -> T,
    }
    impl<T> Visitor<'_> for BoolOrString<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_bool<E: de::Error>(self, value: bool) -> Result<T, E> {
            Ok((self.from_bool)(value))
        }
        fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
            Ok((self.from_string)(value.to_string()))
        }
    }
    deserializer.deserialize_any(BoolOrString {
        expecting,
        from_bool,
        from_string,
    })
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    providers: Vec<ProviderConfig>,
    routes: Vec<RouteConfig>,
    #[serde(default)]
    unmatched: UnmatchedConfig,
    #[serde(default)]
    forward: ForwardConfig,
    #[serde(default)]
    mode: ModeConfig,
    #[serde(default = "default_max_token_bytes")]
    max_token_bytes: usize,
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    #[serde(default = "default_cache_entries")]
    cache_entries: usize,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default)]
    audit: AuditConfig,
}

fn default_max_token_bytes() -> usize {
    16 * 1024
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_cache_entries() -> usize {
    crate::cache::DEFAULT_ENTRIES
}
fn default_realm() -> String {
    "mlgate".into()
}
fn default_true() -> bool {
    true
}
fn default_skew() -> i64 {
    60
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum UnmatchedConfig {
    #[default]
    Deny,
    Allow,
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ModeConfig {
    #[default]
    Enforce,
    DryRun,
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum AuditConfig {
    #[default]
    All,
    Denied,
    Off,
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum OverageConfig {
    #[default]
    Deny,
    Ignore,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ProviderConfig {
    name: String,
    issuer: OneOrMany,
    tenants: Option<Vec<String>>,
    audiences: Option<Vec<String>>,
    #[serde(default)]
    allow_any_audience: bool,
    algorithms: Option<Vec<String>>,
    jwks: Option<JwksConfig>,
    shared_secret: Option<String>,
    #[serde(default = "default_true")]
    require_exp: bool,
    max_lifetime_seconds: Option<i64>,
    #[serde(default = "default_skew")]
    clock_skew_seconds: i64,
    token_from: Option<Vec<TokenFromConfig>>,
    #[serde(default)]
    claims: ClaimsConfig,
    #[serde(default)]
    group_names: BTreeMap<String, String>,
    #[serde(default)]
    on_groups_overage: OverageConfig,
    caller_type: Option<CallerTypeConfig>,
    #[serde(default)]
    accept_id_tokens: bool,
}

/// `"entra"`, or `{"claim": {"path": "<claim path>", "app": [...], "user": [...]}}`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
enum CallerTypeConfig {
    Entra,
    Claim(CallerClaimConfig),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CallerClaimConfig {
    path: String,
    #[serde(default)]
    app: Vec<String>,
    #[serde(default)]
    user: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct JwksConfig {
    inline: Option<Value>,
    uri: Option<String>,
    discovery: Option<DiscoveryConfig>,
    cluster: Option<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u32,
    #[serde(default = "default_refresh")]
    refresh_seconds: i64,
    #[serde(default = "default_min_refresh")]
    min_refresh_interval_seconds: i64,
    #[serde(default = "default_max_stale")]
    max_stale_seconds: i64,
}

#[derive(Debug)]
enum DiscoveryConfig {
    FromIssuer(bool),
    Url(String),
}

impl<'de> Deserialize<'de> for DiscoveryConfig {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        bool_or_string(
            deserializer,
            "true, false or a discovery document URL",
            DiscoveryConfig::FromIssuer,
            DiscoveryConfig::Url,
        )
    }
}

fn default_timeout_ms() -> u32 {
    5000
}
fn default_refresh() -> i64 {
    3600
}
fn default_min_refresh() -> i64 {
    300
}
fn default_max_stale() -> i64 {
    86400
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TokenFromConfig {
    header: Option<String>,
    scheme: Option<String>,
    query: Option<String>,
    cookie: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct ClaimsConfig {
    principal: Option<OneOrMany>,
    tenant: Option<OneOrMany>,
    app: Option<OneOrMany>,
    groups: Option<OneOrMany>,
    roles: Option<OneOrMany>,
    scopes: Option<OneOrMany>,
}

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum AuthConfig {
    #[default]
    Required,
    Anonymous,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    name: String,
    #[serde(rename = "match")]
    matcher: MatchConfig,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    allow_anonymous_models: bool,
    #[serde(default)]
    allow_missing_model: bool,
    providers: Option<Vec<String>>,
    model_from: Option<ModelFromConfig>,
    #[serde(default)]
    deny: Vec<RuleConfig>,
    #[serde(default)]
    allow: Vec<RuleConfig>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct MatchConfig {
    hosts: Option<Vec<String>>,
    methods: Option<Vec<String>>,
    path: Option<String>,
    path_prefix: Option<String>,
    path_template: Option<String>,
    headers: Option<Vec<HeaderMatchConfig>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct HeaderMatchConfig {
    name: String,
    present: Option<bool>,
    exact: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ModelFromConfig {
    path_param: Option<String>,
    header: Option<String>,
    json_body: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum CallerConfig {
    User,
    App,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    groups: Option<Vec<String>>,
    all_groups: Option<Vec<String>>,
    roles: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    principals: Option<Vec<String>>,
    apps: Option<Vec<String>>,
    tenants: Option<Vec<String>>,
    providers: Option<Vec<String>>,
    caller: Option<CallerConfig>,
    models: Option<Vec<String>>,
    claims: Option<BTreeMap<String, OneOrMany>>,
}

#[derive(Debug)]
enum ForwardField {
    Enabled(bool),
    Named(String),
}

impl<'de> Deserialize<'de> for ForwardField {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        bool_or_string(
            deserializer,
            "true, false or a header name",
            ForwardField::Enabled,
            ForwardField::Named,
        )
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ForwardConfig {
    #[serde(default = "default_prefix")]
    prefix: String,
    principal: Option<ForwardField>,
    tenant: Option<ForwardField>,
    app: Option<ForwardField>,
    caller: Option<ForwardField>,
    groups: Option<ForwardField>,
    roles: Option<ForwardField>,
    scopes: Option<ForwardField>,
    route: Option<ForwardField>,
    model: Option<ForwardField>,
    provider: Option<ForwardField>,
    #[serde(default)]
    strip_authorization: bool,
}

impl Default for ForwardConfig {
    fn default() -> ForwardConfig {
        ForwardConfig {
            prefix: default_prefix(),
            principal: None,
            tenant: None,
            app: None,
            caller: None,
            groups: None,
            roles: None,
            scopes: None,
            route: None,
            model: None,
            provider: None,
            strip_authorization: false,
        }
    }
}

fn default_prefix() -> String {
    "x-mlgate-".into()
}

// ---------------------------------------------------------------------------------------------
// Compile
// ---------------------------------------------------------------------------------------------

/// Parses and compiles a configuration document for a signature backend: an algorithm that
/// `backend` cannot check (ES384 on a host without P-384 verification) is refused here.
pub fn compile(bytes: &[u8], backend: &Backend) -> Result<Policy, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return err("(root)", "the configuration is empty");
    }
    // Plain serde_json; the field path of a parse error comes from its position (json_path).
    let config: Config = serde_json::from_slice(bytes).map_err(|error| ConfigError {
        path: json_path::error_path(bytes, &error),
        message: json_path::error_message(&error),
    })?;
    Compiler::new(backend).compile(config)
}

/// Builds the runtime form. Its larger steps are `#[inline(never)]`: Envoy's V8 compiles every
/// function of the module with TurboFan when it loads, and the memory that takes (kept by Envoy's
/// allocator afterwards) grows with the largest function; inlined into one another, these steps
/// made one of ~25 KB of code and cost Envoy ~3 MiB of RSS, for nothing at run time (they run once
/// per configuration).
struct Compiler<'b> {
    backend: &'b Backend,
    sources: Vec<TokenSource>,
    extra_claims: Vec<ClaimPath>,
}

impl Compiler<'_> {
    fn new(backend: &Backend) -> Compiler<'_> {
        Compiler {
            backend,
            sources: Vec::new(),
            extra_claims: Vec::new(),
        }
    }

    fn compile(mut self, config: Config) -> Result<Policy, ConfigError> {
        if config.providers.is_empty() {
            return err("providers", "at least one provider is required");
        }
        let mut providers: Vec<Provider> = Vec::with_capacity(config.providers.len());
        for (index, provider) in config.providers.into_iter().enumerate() {
            let path = format!("providers[{index}]");
            let compiled = self.provider(&path, provider)?;
            check_provider_overlap(&path, &compiled, &providers)?;
            providers.push(compiled);
        }
        if !(64..=65536).contains(&config.max_token_bytes) {
            return err("max_token_bytes", "must be between 64 and 65536");
        }
        if config.cache_entries > 1_000_000 {
            return err("cache_entries", "must be at most 1000000");
        }
        if !(1..=16 * 1024 * 1024).contains(&config.max_body_bytes) {
            return err("max_body_bytes", "must be between 1 and 16777216");
        }
        if config.realm.is_empty()
            || !config
                .realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return err(
                "realm",
                "must be non-empty printable ASCII without quotes or backslashes",
            );
        }
        let forward = compile_forward(config.forward)?;
        let mut routes: Vec<Route> = Vec::with_capacity(config.routes.len());
        for (index, route) in config.routes.into_iter().enumerate() {
            let path = format!("routes[{index}]");
            if let Some(previous) = routes.iter().position(|r| r.name == route.name) {
                return err(
                    format!("{path}.name"),
                    format!(
                        "duplicate route name {:?} (also routes[{previous}])",
                        route.name
                    ),
                );
            }
            routes.push(self.route(&path, route, &providers)?);
        }
        Ok(Policy {
            providers,
            routes,
            unmatched: match config.unmatched {
                UnmatchedConfig::Deny => Unmatched::Deny,
                UnmatchedConfig::Allow => Unmatched::Allow,
            },
            forward,
            mode: match config.mode {
                ModeConfig::Enforce => Mode::Enforce,
                ModeConfig::DryRun => Mode::DryRun,
            },
            max_token_bytes: config.max_token_bytes,
            max_body_bytes: config.max_body_bytes,
            cache_entries: config.cache_entries,
            realm: config.realm,
            audit: match config.audit {
                AuditConfig::All => AuditLevel::All,
                AuditConfig::Denied => AuditLevel::Denied,
                AuditConfig::Off => AuditLevel::Off,
            },
            sources: self.sources,
            extra_claims: self.extra_claims,
        })
    }

    #[inline(never)] // see `Compiler`
    fn provider(&mut self, path: &str, config: ProviderConfig) -> Result<Provider, ConfigError> {
        if config.name.is_empty() || !is_plain_name(&config.name) {
            return err(
                format!("{path}.name"),
                "must be a non-empty name of letters, digits, '-', '_' or '.'",
            );
        }
        let issuers = compile_issuers(&format!("{path}.issuer"), config.issuer.into_vec())?;
        let templated = issuers
            .iter()
            .any(|i| matches!(i, IssuerPattern::Tenant { .. }));
        let tenants = match config.tenants {
            None if templated => {
                return err(
                    format!("{path}.tenants"),
                    "required when an issuer contains {tenant}: list the allowed tenant IDs (or [\"*\"] to accept every tenant)",
                )
            }
            None => Tenants::Unrestricted,
            Some(list) if list.is_empty() => {
                return err(format!("{path}.tenants"), "must not be empty")
            }
            Some(list) if list.iter().any(|t| t == "*") => {
                if list.len() > 1 {
                    return err(format!("{path}.tenants"), "\"*\" must be the only entry");
                }
                Tenants::Any
            }
            Some(list) => {
                if let Some(i) = list.iter().position(|t| t.is_empty()) {
                    return err(format!("{path}.tenants[{i}]"), "must not be empty");
                }
                Tenants::List(list)
            }
        };
        let audiences = match (config.audiences, config.allow_any_audience) {
            (None, false) => {
                return err(
                    format!("{path}.audiences"),
                    "required: list the audiences (aud) this API accepts, or set allow_any_audience: true",
                )
            }
            (Some(_), true) => {
                return err(
                    format!("{path}.allow_any_audience"),
                    "contradicts audiences: use one or the other",
                )
            }
            (None, true) => None,
            (Some(list), false) => {
                if list.is_empty() {
                    return err(format!("{path}.audiences"), "must not be empty");
                }
                if let Some(i) = list.iter().position(|a| a.is_empty()) {
                    return err(format!("{path}.audiences[{i}]"), "must not be empty");
                }
                Some(list)
            }
        };
        let algorithms = compile_algorithms(path, config.algorithms, self.backend)?;
        let hmac = algorithms
            .iter()
            .any(|a| KeyFamily::for_algorithm(*a) == Some(KeyFamily::Hmac));
        let mut remote_keys = None;
        let initial_keys = match (config.jwks, config.shared_secret) {
            (Some(_), Some(_)) => {
                return err(
                    format!("{path}.shared_secret"),
                    "a provider has either jwks (public keys) or shared_secret, never both",
                )
            }
            (None, None) => return err(format!("{path}.jwks"), "required (or shared_secret)"),
            (None, Some(secret)) => {
                if let Some(i) = algorithms
                    .iter()
                    .position(|a| KeyFamily::for_algorithm(*a) != Some(KeyFamily::Hmac))
                {
                    return err(
                        format!("{path}.algorithms[{i}]"),
                        "a provider with shared_secret accepts only HS256, HS384 or HS512",
                    );
                }
                let secret = decode_secret(&secret).ok_or(()).or_else(|_| {
                    err(
                        format!("{path}.shared_secret"),
                        "must be base64 or base64url",
                    )
                })?;
                if secret.len() < 32 {
                    return err(
                        format!("{path}.shared_secret"),
                        format!(
                            "{} bytes is too short: an HMAC secret needs at least 32",
                            secret.len()
                        ),
                    );
                }
                Some(KeySet {
                    keys: vec![Key::shared_secret(&secret)],
                })
            }
            (Some(jwks), None) => {
                if hmac {
                    return err(
                        format!("{path}.algorithms"),
                        "HS* algorithms need a shared_secret; with public keys they would allow algorithm confusion",
                    );
                }
                let (keys, remote) =
                    compile_jwks(&format!("{path}.jwks"), jwks, &issuers, &algorithms)?;
                remote_keys = remote;
                keys
            }
        };
        if !(0..=600).contains(&config.clock_skew_seconds) {
            return err(
                format!("{path}.clock_skew_seconds"),
                "must be between 0 and 600",
            );
        }
        if let Some(max) = config.max_lifetime_seconds {
            if max <= 0 {
                return err(format!("{path}.max_lifetime_seconds"), "must be positive");
            }
        }
        let sources = self.token_sources(path, config.token_from)?;
        let mut claims = compile_claims(&format!("{path}.claims"), config.claims)?;
        claims.caller =
            compile_caller_type(&format!("{path}.caller_type"), config.caller_type, &issuers)?;
        let tenant_claim = claims
            .tenant
            .first()
            .map_or_else(|| "tid".to_string(), |p| p.as_str().to_string());
        let mut group_names = HashMap::new();
        for (id, name) in config.group_names {
            if id.is_empty()
                || name.is_empty()
                || name.contains(',')
                || name.chars().any(char::is_control)
            {
                return err(
                    format!("{path}.group_names.{id}"),
                    "IDs and names must be non-empty; names may not contain ',' or control characters",
                );
            }
            group_names.insert(id, name);
        }
        Ok(Provider {
            name: config.name,
            rules: TokenRules {
                issuers,
                tenants,
                tenant_claim,
                audiences,
                algorithms,
                require_exp: config.require_exp,
                max_lifetime_seconds: config.max_lifetime_seconds,
                clock_skew_seconds: config.clock_skew_seconds,
                accept_id_tokens: config.accept_id_tokens,
            },
            initial_keys,
            remote_keys,
            sources,
            claims,
            group_names,
            on_groups_overage: match config.on_groups_overage {
                OverageConfig::Deny => Overage::Deny,
                OverageConfig::Ignore => Overage::Ignore,
            },
        })
    }

    #[inline(never)] // see `Compiler`
    fn token_sources(
        &mut self,
        path: &str,
        config: Option<Vec<TokenFromConfig>>,
    ) -> Result<Vec<usize>, ConfigError> {
        let list = config.unwrap_or_else(|| {
            vec![TokenFromConfig {
                header: Some("authorization".into()),
                scheme: Some("Bearer".into()),
                query: None,
                cookie: None,
            }]
        });
        if list.is_empty() {
            return err(format!("{path}.token_from"), "must not be empty");
        }
        let mut indices = Vec::with_capacity(list.len());
        for (i, source) in list.into_iter().enumerate() {
            let at = format!("{path}.token_from[{i}]");
            let source =
                match (source.header, source.query, source.cookie, source.scheme) {
                    (Some(header), None, None, scheme) => {
                        let name = header_name(&format!("{at}.header"), &header)?;
                        match scheme {
                            Some(scheme) => {
                                if scheme.is_empty() || !scheme.bytes().all(is_token_char) {
                                    return err(
                                        format!("{at}.scheme"),
                                        "must be an HTTP auth scheme such as Bearer",
                                    );
                                }
                                TokenSource::HeaderWithScheme { name, scheme }
                            }
                            None => TokenSource::Header { name },
                        }
                    }
                    (None, Some(query), None, None) if !query.is_empty() => {
                        TokenSource::Query { name: query }
                    }
                    (None, None, Some(cookie), None) if !cookie.is_empty() => {
                        TokenSource::Cookie { name: cookie }
                    }
                    (None, _, _, Some(_)) => {
                        return err(format!("{at}.scheme"), "only goes with header")
                    }
                    _ => return err(
                        at,
                        "give exactly one non-empty header (with optional scheme), query or cookie",
                    ),
                };
            let index = match self.sources.iter().position(|s| *s == source) {
                Some(index) => index,
                None => {
                    self.sources.push(source);
                    self.sources.len() - 1
                }
            };
            if !indices.contains(&index) {
                indices.push(index);
            }
        }
        Ok(indices)
    }

    #[inline(never)] // see `Compiler`
    fn route(
        &mut self,
        path: &str,
        config: RouteConfig,
        providers: &[Provider],
    ) -> Result<Route, ConfigError> {
        if config.name.is_empty() || !is_plain_name(&config.name) {
            return err(
                format!("{path}.name"),
                "must be a non-empty name of letters, digits, '-', '_' or '.'",
            );
        }
        let (matcher, params) = compile_match(&format!("{path}.match"), config.matcher)?;
        let anonymous = config.auth == AuthConfig::Anonymous;
        let route_providers = match config.providers {
            None => None,
            Some(names) => Some(resolve_providers(
                &format!("{path}.providers"),
                &names,
                providers,
            )?),
        };
        let model_from = match config.model_from {
            None => params
                .iter()
                .position(|p| p == "model")
                .map(ModelFrom::PathParam),
            Some(from) => Some(compile_model_from(
                &format!("{path}.model_from"),
                from,
                &params,
            )?),
        };
        if anonymous {
            if !config.allow.is_empty() || !config.deny.is_empty() {
                return err(
                    format!("{path}.auth"),
                    "an anonymous route cannot have allow or deny rules",
                );
            }
            if route_providers.is_some() {
                return err(
                    format!("{path}.providers"),
                    "an anonymous route takes no providers",
                );
            }
            if model_from.is_some() && !config.allow_anonymous_models {
                return err(
                    format!("{path}.auth"),
                    "anonymous access to a model endpoint; set allow_anonymous_models: true if that is really intended",
                );
            }
        }
        let relevant: Vec<usize> = route_providers
            .clone()
            .unwrap_or_else(|| (0..providers.len()).collect());
        let mut deny = Vec::with_capacity(config.deny.len());
        for (i, rule) in config.deny.into_iter().enumerate() {
            deny.push(self.rule(
                &format!("{path}.deny[{i}]"),
                rule,
                providers,
                &relevant,
                model_from.is_some(),
            )?);
        }
        let mut allow = Vec::with_capacity(config.allow.len());
        for (i, rule) in config.allow.into_iter().enumerate() {
            allow.push(self.rule(
                &format!("{path}.allow[{i}]"),
                rule,
                providers,
                &relevant,
                model_from.is_some(),
            )?);
        }
        let uses_groups = deny.iter().chain(allow.iter()).any(Rule::uses_groups);
        let model_decides = deny
            .iter()
            .chain(allow.iter())
            .any(|r| !r.models.is_empty());
        if config.allow_missing_model {
            if model_from.is_none() {
                return err(
                    format!("{path}.allow_missing_model"),
                    "the route has no model: add model_from, or a {model} path template",
                );
            }
            if let Some(i) = deny.iter().position(|r| !r.models.is_empty()) {
                return err(
                    format!("{path}.allow_missing_model"),
                    format!("deny[{i}] names models: a request without a model would dodge it (the model server picks its default); name the model in every request instead"),
                );
            }
        }
        Ok(Route {
            name: config.name,
            matcher,
            anonymous,
            providers: route_providers,
            model_from,
            deny,
            allow,
            uses_groups,
            model_decides,
            allow_missing_model: config.allow_missing_model,
        })
    }

    #[inline(never)] // see `Compiler`
    fn rule(
        &mut self,
        path: &str,
        config: RuleConfig,
        providers: &[Provider],
        route_providers: &[usize],
        has_model: bool,
    ) -> Result<Rule, ConfigError> {
        let list = |field: &str, value: Option<Vec<String>>| -> Result<Vec<String>, ConfigError> {
            match value {
                None => Ok(Vec::new()),
                Some(v) if v.is_empty() => err(
                    format!("{path}.{field}"),
                    "must not be empty (leave it out instead)",
                ),
                Some(v) => match v.iter().position(String::is_empty) {
                    Some(i) => err(format!("{path}.{field}[{i}]"), "must not be empty"),
                    None => Ok(v),
                },
            }
        };
        let rule_providers = match config.providers {
            None => Vec::new(),
            Some(names) => resolve_providers(&format!("{path}.providers"), &names, providers)?,
        };
        let relevant: Vec<usize> = if rule_providers.is_empty() {
            route_providers.to_vec()
        } else {
            rule_providers.clone()
        };
        let groups = list("groups", config.groups)?;
        check_group_names(&format!("{path}.groups"), &groups, providers, &relevant)?;
        let all_groups = list("all_groups", config.all_groups)?;
        check_group_names(
            &format!("{path}.all_groups"),
            &all_groups,
            providers,
            &relevant,
        )?;
        if config.caller.is_some() {
            if let Some(i) = relevant.iter().copied().find(|i| {
                providers
                    .get(*i)
                    .is_some_and(|p| p.claims.caller == CallerRule::Unknown)
            }) {
                return err(
                    format!("{path}.caller"),
                    format!("providers[{i}] does not say how its tokens tell apps from users: set providers[{i}].caller_type (\"entra\", or the claim that says it)"),
                );
            }
        }
        let models = list("models", config.models)?;
        if !models.is_empty() && !has_model {
            return err(
                format!("{path}.models"),
                "the route has no model: add model_from, or a {model} path template",
            );
        }
        let mut claims = Vec::new();
        if let Some(map) = config.claims {
            if map.is_empty() {
                return err(
                    format!("{path}.claims"),
                    "must not be empty (leave it out instead)",
                );
            }
            for (claim, accepted) in map {
                if claim.is_empty() {
                    return err(format!("{path}.claims"), "claim paths must not be empty");
                }
                let accepted = accepted.into_vec();
                if accepted.is_empty() {
                    return err(format!("{path}.claims.{claim}"), "must not be empty");
                }
                let index = match self.extra_claims.iter().position(|p| p.as_str() == claim) {
                    Some(index) => index,
                    None => {
                        self.extra_claims.push(ClaimPath::new(&claim));
                        self.extra_claims.len() - 1
                    }
                };
                claims.push((index, accepted));
            }
        }
        let rule = Rule {
            groups,
            all_groups,
            roles: list("roles", config.roles)?,
            scopes: list("scopes", config.scopes)?,
            principals: list("principals", config.principals)?,
            apps: list("apps", config.apps)?,
            tenants: list("tenants", config.tenants)?,
            providers: rule_providers,
            caller: config.caller.map(|c| match c {
                CallerConfig::User => Caller::User,
                CallerConfig::App => Caller::App,
            }),
            models: models.iter().map(|m| Glob::new(m)).collect(),
            claims,
        };
        let empty = rule.groups.is_empty()
            && rule.all_groups.is_empty()
            && rule.roles.is_empty()
            && rule.scopes.is_empty()
            && rule.principals.is_empty()
            && rule.apps.is_empty()
            && rule.tenants.is_empty()
            && rule.providers.is_empty()
            && rule.caller.is_none()
            && rule.models.is_empty()
            && rule.claims.is_empty();
        if empty {
            return err(
                path,
                "a rule needs at least one condition (an authenticated route without allow rules already admits any valid token)",
            );
        }
        Ok(rule)
    }
}

/// Inline keys, or where remote keys come from.
#[inline(never)] // see `Compiler`
fn compile_jwks(
    path: &str,
    jwks: JwksConfig,
    issuers: &[IssuerPattern],
    algorithms: &[Algorithm],
) -> Result<(Option<KeySet>, Option<RemoteJwks>), ConfigError> {
    let sources = [
        jwks.inline.is_some(),
        jwks.uri.is_some(),
        jwks.discovery.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return err(path, "give exactly one of inline, uri or discovery");
    }
    if let Some(doc) = jwks.inline {
        if jwks.cluster.is_some() {
            return err(format!("{path}.cluster"), "only for uri or discovery");
        }
        let set = jwks::parse_jwks(&doc, Strictness::Strict).map_err(|e| ConfigError {
            path: format!("{path}.inline.{}", e.path),
            message: e.message,
        })?;
        if !set
            .keys
            .iter()
            .any(|k| algorithms.iter().any(|a| k.fits(*a)))
        {
            return err(
                format!("{path}.inline"),
                format!("no key fits any of the algorithms {algorithms:?}"),
            );
        }
        return Ok((Some(set), None));
    }
    let cluster = match jwks.cluster {
        Some(cluster) if !cluster.is_empty() => cluster,
        _ => {
            return err(
                format!("{path}.cluster"),
                "required: the Envoy cluster that reaches the identity provider",
            )
        }
    };
    let single_exact = match issuers {
        [IssuerPattern::Exact(issuer)] => Some(issuer.clone()),
        _ => None,
    };
    let target = match (jwks.uri, jwks.discovery) {
        (Some(uri), None) => FetchTarget::Jwks(Url::parse(&uri).map_err(|m| ConfigError {
            path: format!("{path}.uri"),
            message: m,
        })?),
        (None, Some(DiscoveryConfig::Url(url))) => {
            FetchTarget::Discovery(Url::parse(&url).map_err(|m| ConfigError {
                path: format!("{path}.discovery"),
                message: m,
            })?)
        }
        (None, Some(DiscoveryConfig::FromIssuer(true))) => {
            let Some(issuer) = &single_exact else {
                return err(
                    format!("{path}.discovery"),
                    "true needs exactly one issuer without {tenant}; give the discovery URL instead",
                );
            };
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            FetchTarget::Discovery(Url::parse(&url).map_err(|m| ConfigError {
                path: format!("{path}.discovery"),
                message: m,
            })?)
        }
        _ => {
            return err(
                format!("{path}.discovery"),
                "true, or the discovery document's URL",
            )
        }
    };
    if !(100..=60_000).contains(&jwks.timeout_ms) {
        return err(
            format!("{path}.timeout_ms"),
            "must be between 100 and 60000",
        );
    }
    if !(60..=7 * 86400).contains(&jwks.refresh_seconds) {
        return err(
            format!("{path}.refresh_seconds"),
            "must be between 60 and 604800",
        );
    }
    if !(0..=jwks.refresh_seconds).contains(&jwks.min_refresh_interval_seconds) {
        return err(
            format!("{path}.min_refresh_interval_seconds"),
            "must be between 0 and refresh_seconds",
        );
    }
    if !(0..=30 * 86400).contains(&jwks.max_stale_seconds) {
        return err(
            format!("{path}.max_stale_seconds"),
            "must be between 0 and 2592000",
        );
    }
    Ok((
        None,
        Some(RemoteJwks {
            cluster,
            target,
            timeout_ms: jwks.timeout_ms,
            refresh_seconds: jwks.refresh_seconds,
            min_refresh_interval_seconds: jwks.min_refresh_interval_seconds,
            max_stale_seconds: jwks.max_stale_seconds,
            expected_issuer: single_exact,
        }),
    ))
}

fn is_plain_name(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// RFC 7230 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return err(path, format!("{name:?} is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

fn decode_secret(text: &str) -> Option<Vec<u8>> {
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

fn compile_issuers(path: &str, issuers: Vec<String>) -> Result<Vec<IssuerPattern>, ConfigError> {
    if issuers.is_empty() {
        return err(path, "at least one issuer is required");
    }
    let many = issuers.len() > 1;
    let mut out = Vec::with_capacity(issuers.len());
    for (i, issuer) in issuers.into_iter().enumerate() {
        let at = if many {
            format!("{path}[{i}]")
        } else {
            path.to_string()
        };
        if issuer.is_empty() || issuer.chars().any(char::is_whitespace) {
            return err(at, "must be a non-empty URL without spaces");
        }
        let pattern = match issuer.split_once("{tenant}") {
            None => {
                if issuer.contains('{') || issuer.contains('}') {
                    return err(at, "the only placeholder an issuer may contain is {tenant}");
                }
                IssuerPattern::Exact(issuer)
            }
            Some((prefix, suffix)) => {
                if suffix.contains("{tenant}") || prefix.contains('{') || suffix.contains('{') {
                    return err(at, "{tenant} may appear once, and is the only placeholder");
                }
                if prefix.is_empty() {
                    return err(at, "an issuer cannot start with {tenant}");
                }
                IssuerPattern::Tenant {
                    prefix: prefix.to_string(),
                    suffix: suffix.to_string(),
                }
            }
        };
        if out.contains(&pattern) {
            return err(at, "duplicate issuer");
        }
        out.push(pattern);
    }
    Ok(out)
}

fn check_provider_overlap(
    path: &str,
    provider: &Provider,
    earlier: &[Provider],
) -> Result<(), ConfigError> {
    for (other_index, other) in earlier.iter().enumerate() {
        if other.name == provider.name {
            return err(
                format!("{path}.name"),
                format!(
                    "duplicate provider name {:?} (also providers[{other_index}])",
                    provider.name
                ),
            );
        }
        for pattern in &provider.rules.issuers {
            let overlaps = other.rules.issuers.iter().any(|theirs| {
                theirs == pattern
                    || matches!(pattern, IssuerPattern::Exact(mine) if theirs.matches(mine).is_some())
                    || matches!(theirs, IssuerPattern::Exact(exact) if pattern.matches(exact).is_some())
            });
            if overlaps {
                return err(
                    format!("{path}.issuer"),
                    format!("the same issuer is already accepted by providers[{other_index}] ({:?}): a token must map to exactly one provider", other.name),
                );
            }
        }
    }
    Ok(())
}

fn compile_algorithms(
    path: &str,
    names: Option<Vec<String>>,
    backend: &Backend,
) -> Result<Vec<Algorithm>, ConfigError> {
    let names = names.unwrap_or_else(|| vec!["RS256".into()]);
    if names.is_empty() {
        return err(format!("{path}.algorithms"), "must not be empty");
    }
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let at = format!("{path}.algorithms[{i}]");
        if name.eq_ignore_ascii_case("none") {
            return err(at, "\"none\" (unsigned tokens) is never accepted");
        }
        let alg = name.parse::<Algorithm>().or_else(|_| {
            err(
                at.clone(),
                format!("unknown algorithm {name:?} (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384, HS512)"),
            )
        })?;
        if out.contains(&alg) {
            return err(at, format!("duplicate algorithm {name:?}"));
        }
        if !backend.verifies(alg) {
            return err(
                at,
                format!("{name} signatures cannot be checked on this host: the filter verifies {name} with the host's verify_signature (Envoy), which did not verify P-384 here; build the portable module (make build-portable) for other proxy-wasm hosts"),
            );
        }
        out.push(alg);
    }
    Ok(out)
}

fn compile_claims(path: &str, config: ClaimsConfig) -> Result<ClaimMap, ConfigError> {
    let defaults = ClaimMap::default();
    let paths = |field: &str, value: Option<OneOrMany>, default: Vec<ClaimPath>| match value {
        None => Ok(default),
        Some(value) => {
            let list = value.into_vec();
            if list.is_empty() || list.iter().any(String::is_empty) {
                return err(format!("{path}.{field}"), "claim paths must be non-empty");
            }
            Ok(list.iter().map(|p| ClaimPath::new(p)).collect())
        }
    };
    Ok(ClaimMap {
        principal: paths("principal", config.principal, defaults.principal)?,
        tenant: paths("tenant", config.tenant, defaults.tenant)?,
        app: paths("app", config.app, defaults.app)?,
        groups: paths("groups", config.groups, defaults.groups)?,
        roles: paths("roles", config.roles, defaults.roles)?,
        scopes: paths("scopes", config.scopes, defaults.scopes)?,
        caller: defaults.caller,
    })
}

/// How the provider's tokens say user or app: explicit, or Entra's rule for an Entra issuer.
fn compile_caller_type(
    path: &str,
    config: Option<CallerTypeConfig>,
    issuers: &[IssuerPattern],
) -> Result<CallerRule, ConfigError> {
    match config {
        None if issuers.iter().all(is_entra_issuer) => Ok(CallerRule::Entra),
        None => Ok(CallerRule::Unknown),
        Some(CallerTypeConfig::Entra) => Ok(CallerRule::Entra),
        Some(CallerTypeConfig::Claim(claim)) => {
            let path = format!("{path}.claim");
            if claim.path.is_empty() {
                return err(format!("{path}.path"), "must be a non-empty claim path");
            }
            if claim.app.is_empty() && claim.user.is_empty() {
                return err(
                    path,
                    "name the claim's values for app or user callers (or both)",
                );
            }
            for (field, values) in [("app", &claim.app), ("user", &claim.user)] {
                if let Some(i) = values.iter().position(String::is_empty) {
                    return err(format!("{path}.{field}[{i}]"), "must not be empty");
                }
            }
            if let Some(both) = claim.app.iter().find(|v| claim.user.contains(v)) {
                return err(
                    format!("{path}.user"),
                    format!("{both:?} is listed for app callers too"),
                );
            }
            Ok(CallerRule::Claim {
                path: ClaimPath::new(&claim.path),
                app: claim.app,
                user: claim.user,
            })
        }
    }
}

/// Microsoft Entra ID's issuers (public and national clouds), exact or with `{tenant}`.
fn is_entra_issuer(issuer: &IssuerPattern) -> bool {
    let text = match issuer {
        IssuerPattern::Exact(exact) => exact,
        IssuerPattern::Tenant { prefix, .. } => prefix,
    };
    crate::verify::ENTRA_ISSUER_HOSTS
        .iter()
        .any(|host| text.starts_with(host))
}

fn resolve_providers(
    path: &str,
    names: &[String],
    providers: &[Provider],
) -> Result<Vec<usize>, ConfigError> {
    if names.is_empty() {
        return err(path, "must not be empty (leave it out for all providers)");
    }
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            providers
                .iter()
                .position(|p| &p.name == name)
                .ok_or(())
                .or_else(|_| err(format!("{path}[{i}]"), format!("unknown provider {name:?}")))
        })
        .collect()
}

/// A rule's group must be known to at least one provider that can satisfy the rule, when all of
/// them map group IDs to names: this is what catches `ml-scientsts`.
fn check_group_names(
    path: &str,
    groups: &[String],
    providers: &[Provider],
    relevant: &[usize],
) -> Result<(), ConfigError> {
    let mapped: Vec<usize> = relevant
        .iter()
        .copied()
        .filter(|i| providers.get(*i).is_some_and(|p| !p.group_names.is_empty()))
        .collect();
    if groups.is_empty() || mapped.len() != relevant.len() {
        return Ok(());
    }
    for group in groups {
        let known = mapped.iter().any(|i| {
            providers.get(*i).is_some_and(|p| {
                p.group_names.contains_key(group) || p.group_names.values().any(|n| n == group)
            })
        });
        if !known {
            let maps: Vec<String> = mapped
                .iter()
                .map(|i| format!("providers[{i}].group_names"))
                .collect();
            return err(
                path,
                format!("unknown group name {group:?} (not in {})", maps.join(", ")),
            );
        }
    }
    Ok(())
}

#[inline(never)] // see `Compiler`
fn compile_match(
    path: &str,
    config: MatchConfig,
) -> Result<(RouteMatch, Vec<String>), ConfigError> {
    let mut matcher = RouteMatch::default();
    let mut params = Vec::new();
    if let Some(hosts) = config.hosts {
        if hosts.is_empty() {
            return err(
                format!("{path}.hosts"),
                "must not be empty (leave it out for any host)",
            );
        }
        for (i, host) in hosts.iter().enumerate() {
            let at = format!("{path}.hosts[{i}]");
            let lower = host.to_ascii_lowercase();
            let valid = |h: &str| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            };
            let pattern = match lower.strip_prefix("*.") {
                Some(rest) if valid(rest) => HostPattern::Suffix(format!(".{rest}")),
                None if valid(&lower) => HostPattern::Exact(lower),
                _ => {
                    return err(
                        at,
                        format!("{host:?} is not a host name or *.suffix pattern"),
                    )
                }
            };
            matcher.hosts.push(pattern);
        }
    }
    if let Some(methods) = config.methods {
        if methods.is_empty() {
            return err(
                format!("{path}.methods"),
                "must not be empty (leave it out for any method)",
            );
        }
        for (i, method) in methods.into_iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return err(
                    format!("{path}.methods[{i}]"),
                    format!("{method:?} is not an upper-case HTTP method"),
                );
            }
            matcher.methods.push(method);
        }
    }
    let kinds = [
        config.path.is_some(),
        config.path_prefix.is_some(),
        config.path_template.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return err(path, "give at most one of path, path_prefix, path_template");
    }
    if let Some(exact) = config.path {
        check_path(&format!("{path}.path"), &exact)?;
        matcher.path = Some(PathMatch::Exact(exact));
    }
    if let Some(prefix) = config.path_prefix {
        check_path(&format!("{path}.path_prefix"), &prefix)?;
        matcher.path = Some(PathMatch::Prefix(prefix.trim_end_matches('/').to_string()));
    }
    if let Some(template) = config.path_template {
        let compiled = compile_template(&template).map_err(|message| ConfigError {
            path: format!("{path}.path_template"),
            message,
        })?;
        params = compiled.params.clone();
        matcher.path = Some(PathMatch::Template(compiled));
    }
    if let Some(headers) = config.headers {
        for (i, header) in headers.into_iter().enumerate() {
            let at = format!("{path}.headers[{i}]");
            let name = header_name(&format!("{at}.name"), &header.name)?;
            let expect = match (header.present, header.exact) {
                (Some(true), None) => HeaderExpect::Present,
                (Some(false), None) => HeaderExpect::Absent,
                (None, Some(value)) => HeaderExpect::Exact(value),
                _ => return err(at, "give exactly one of present or exact"),
            };
            matcher.headers.push(HeaderMatch { name, expect });
        }
    }
    Ok((matcher, params))
}

fn check_path(path: &str, value: &str) -> Result<(), ConfigError> {
    if !value.starts_with('/') {
        return err(path, "must start with '/'");
    }
    if value.contains('?')
        || value.contains('#')
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return err(path, "must be a plain path (no query, fragment or spaces)");
    }
    if value.split('/').any(|s| s == "." || s == "..") || value.contains('%') {
        return err(
            path,
            "must be normalised (no dot segments or percent-encoding)",
        );
    }
    Ok(())
}

/// Compiles `/v2/models/{model}/infer`-style templates.
pub fn compile_template(template: &str) -> Result<Template, String> {
    let rest = template
        .strip_prefix('/')
        .ok_or_else(|| "must start with '/'".to_string())?;
    let mut segments = Vec::new();
    let mut params: Vec<String> = Vec::new();
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err("empty path segment".into());
        }
        if segment == "." || segment == ".." || segment.contains('%') || segment.contains('?') {
            return Err(format!(
                "segment {segment:?} must be plain (no dot segments, percent-encoding or query)"
            ));
        }
        match segment.find('{') {
            None => {
                if segment.contains('}') {
                    return Err(format!("unbalanced brace in {segment:?}"));
                }
                segments.push(TemplateSegment::Literal(segment.to_string()));
            }
            Some(open) => {
                let (prefix, after) = segment.split_at(open);
                let close = after
                    .find('}')
                    .ok_or_else(|| format!("unbalanced brace in {segment:?}"))?;
                let name = after.get(1..close).unwrap_or_default();
                let suffix = after.get(close + 1..).unwrap_or_default();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("{{{name}}} is not a valid parameter name"));
                }
                if suffix.contains('{') || suffix.contains('}') {
                    return Err(format!("one parameter per segment ({segment:?})"));
                }
                if params.iter().any(|p| p == name) {
                    return Err(format!("parameter {{{name}}} appears twice"));
                }
                params.push(name.to_string());
                segments.push(TemplateSegment::Param {
                    prefix: prefix.to_string(),
                    suffix: suffix.to_string(),
                });
            }
        }
    }
    Ok(Template { segments, params })
}

fn compile_model_from(
    path: &str,
    config: ModelFromConfig,
    params: &[String],
) -> Result<ModelFrom, ConfigError> {
    match (config.path_param, config.header, config.json_body) {
        (Some(param), None, None) => params
            .iter()
            .position(|p| *p == param)
            .map(ModelFrom::PathParam)
            .ok_or(())
            .or_else(|_| {
                err(
                    format!("{path}.path_param"),
                    format!("the route's path_template has no {{{param}}}"),
                )
            }),
        (None, Some(header), None) => Ok(ModelFrom::Header(header_name(
            &format!("{path}.header"),
            &header,
        )?)),
        (None, None, Some(field)) if !field.is_empty() => Ok(ModelFrom::JsonBody(field)),
        _ => err(path, "give exactly one of path_param, header or json_body"),
    }
}

fn compile_forward(config: ForwardConfig) -> Result<Forward, ConfigError> {
    let prefix = config.prefix;
    let prefix_ok = !prefix.is_empty()
        && prefix.ends_with('-')
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && prefix != "-";
    if !prefix_ok {
        return err(
            "forward.prefix",
            "must be lower-case letters, digits and '-', ending in '-' (e.g. x-mlgate-)",
        );
    }
    let field = |name: &str, value: Option<ForwardField>| -> Result<Option<String>, ConfigError> {
        match value {
            None | Some(ForwardField::Enabled(true)) => Ok(Some(format!("{prefix}{name}"))),
            Some(ForwardField::Enabled(false)) => Ok(None),
            Some(ForwardField::Named(header)) => {
                let header = header_name(&format!("forward.{name}"), &header)?;
                if !header.starts_with(&prefix) {
                    return err(
                        format!("forward.{name}"),
                        format!("{header:?} must start with the prefix {prefix:?}, so that client-sent copies are stripped"),
                    );
                }
                Ok(Some(header))
            }
        }
    };
    Ok(Forward {
        principal: field("principal", config.principal)?,
        tenant: field("tenant", config.tenant)?,
        app: field("app", config.app)?,
        caller: field("caller", config.caller)?,
        groups: field("groups", config.groups)?,
        roles: field("roles", config.roles)?,
        scopes: field("scopes", config.scopes)?,
        route: field("route", config.route)?,
        model: field("model", config.model)?,
        provider: field("provider", config.provider)?,
        dry_run: format!("{prefix}dry-run"),
        strip_authorization: config.strip_authorization,
        prefix,
    })
}

#[cfg(test)]
mod tests;
