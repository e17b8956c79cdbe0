//! The configuration's input form: the serde structs and enums (`deny_unknown_fields` on every
//! object), their hand-written visitors and their defaults. Only `compile` and its parts read them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::strict_json::KeySeed;

// The either-or fields below (string or list, bool or string, string or `{"env": …}`) have
// hand-written visitors rather than `#[serde(untagged)]`: untagged buffers the whole value and then
// reports only "data did not match any variant", after the value, and after its object's closing
// brace when it is the last member, so no position tells which field it was (json_path names
// fields from serde_json's position). A visitor is refused where it stands, with the element that
// is wrong (issuer[1]: invalid type: integer `1`, expected a string), and takes less code.

#[derive(Debug)]
pub(super) enum OneOrMany {
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
    Ok(
        match deserializer.deserialize_any(EitherOr {
            expecting,
            env: false,
        })? {
            Read::Bool(value) => from_bool(value),
            // Only read with `env` set.
            Read::String(value) | Read::Env(value) => from_string(value),
        },
    )
}

/// What [`EitherOr`] read.
enum Read {
    Bool(bool),
    String(String),
    /// `{"env": "<name>"}`.
    Env(String),
}

/// One visitor for every either-or field whose other form is not a list, not generic in the
/// field's type: each visitor given to serde_json's `deserialize_any` is a copy of its parser in
/// the module. `true`, `false` or a string; with `env`, a string or `{"env": "<name>"}` (and no
/// boolean).
struct EitherOr {
    expecting: &'static str,
    env: bool,
}

impl<'de> Visitor<'de> for EitherOr {
    type Value = Read;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Read, E> {
        if self.env {
            return Err(de::Error::invalid_type(de::Unexpected::Bool(value), &self));
        }
        Ok(Read::Bool(value))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Read, E> {
        Ok(Read::String(value.to_string()))
    }
    // An array or object is read to its end before it is refused, so that the error's
    // position (and json_path's path) is the field's, not its first element's.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Read, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Read, A::Error> {
        if !self.env {
            while map
                .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                .is_some()
            {}
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        // `{"env": …}` read as a derived struct with `deny_unknown_fields` reads it, and refused
        // where it stands: an unknown member at its key, a repeated `env` at the second one, a
        // missing one at the closing brace.
        let mut env = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key.as_str() != "env" {
                return Err(de::Error::unknown_field(key.as_str(), &["env"]));
            }
            if env.is_some() {
                return Err(de::Error::duplicate_field("env"));
            }
            env = Some(map.next_value::<String>()?);
        }
        env.map(Read::Env)
            .ok_or_else(|| de::Error::missing_field("env"))
    }
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct Config {
    pub(super) providers: Vec<ProviderConfig>,
    pub(super) routes: Vec<RouteConfig>,
    #[serde(default)]
    pub(super) unmatched: UnmatchedConfig,
    #[serde(default)]
    pub(super) forward: ForwardConfig,
    #[serde(default)]
    pub(super) mode: ModeConfig,
    #[serde(default = "default_max_token_bytes")]
    pub(super) max_token_bytes: usize,
    #[serde(default = "default_max_body_bytes")]
    pub(super) max_body_bytes: usize,
    #[serde(default = "default_cache_entries")]
    pub(super) cache_entries: usize,
    #[serde(default = "default_realm")]
    pub(super) realm: String,
    #[serde(default)]
    pub(super) audit: AuditConfig,
    /// Log each decision's trace (`mlgate trace {…}`): for `mlgate-harness explain` and for
    /// debugging a policy, never for production traffic.
    #[serde(default)]
    pub(super) explain: bool,
    /// Record each decision's compute time in the `mlgate.decision_duration_us` histogram: one
    /// host call per request, which Envoy delivers to its histogram sinks as it comes.
    #[serde(default = "default_true")]
    pub(super) decision_duration_histogram: bool,
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
pub(super) enum UnmatchedConfig {
    #[default]
    Deny,
    Allow,
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum ModeConfig {
    #[default]
    Enforce,
    DryRun,
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum AuditConfig {
    #[default]
    All,
    Denied,
    Off,
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum OverageConfig {
    #[default]
    Deny,
    Ignore,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct ProviderConfig {
    pub(super) name: String,
    pub(super) issuer: OneOrMany,
    pub(super) tenants: Option<Vec<String>>,
    pub(super) audiences: Option<Vec<String>>,
    #[serde(default)]
    pub(super) allow_any_audience: bool,
    pub(super) algorithms: Option<Vec<String>>,
    pub(super) jwks: Option<JwksConfig>,
    pub(super) shared_secret: Option<SecretConfig>,
    #[serde(default = "default_true")]
    pub(super) require_exp: bool,
    pub(super) max_lifetime_seconds: Option<i64>,
    #[serde(default = "default_skew")]
    pub(super) clock_skew_seconds: i64,
    pub(super) token_from: Option<Vec<TokenFromConfig>>,
    #[serde(default)]
    pub(super) claims: ClaimsConfig,
    #[serde(default)]
    pub(super) group_names: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) on_groups_overage: OverageConfig,
    pub(super) caller_type: Option<CallerTypeConfig>,
    #[serde(default)]
    pub(super) accept_id_tokens: bool,
}

/// `shared_secret`: the base64 text itself, or `{"env": "NAME"}`, the VM environment variable
/// that holds it (the same base64 form), so that the secret stays out of the policy text.
pub(super) enum SecretConfig {
    Inline(String),
    /// The variable's name.
    Env(String),
}

impl<'de> Deserialize<'de> for SecretConfig {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expecting = "a base64 string or {\"env\": \"<VM environment variable>\"}";
        match deserializer.deserialize_any(EitherOr {
            expecting,
            env: true,
        })? {
            Read::String(secret) => Ok(SecretConfig::Inline(secret)),
            Read::Env(name) => Ok(SecretConfig::Env(name)),
            // Refused by the visitor, where it stands.
            Read::Bool(value) => Err(de::Error::invalid_type(
                de::Unexpected::Bool(value),
                &expecting,
            )),
        }
    }
}

/// Hand-written: a derived `Debug` would print an inline secret.
impl fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretConfig::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretConfig::Env(name) => f.debug_tuple("Env").field(name).finish(),
        }
    }
}

/// `"entra"`, or `{"claim": {"path": "<claim path>", "app": [...], "user": [...]}}`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub(super) enum CallerTypeConfig {
    Entra,
    Claim(CallerClaimConfig),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct CallerClaimConfig {
    pub(super) path: String,
    #[serde(default)]
    pub(super) app: Vec<String>,
    #[serde(default)]
    pub(super) user: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct JwksConfig {
    pub(super) inline: Option<Value>,
    pub(super) uri: Option<String>,
    pub(super) discovery: Option<DiscoveryConfig>,
    pub(super) cluster: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub(super) timeout_ms: u32,
    #[serde(default = "default_refresh")]
    pub(super) refresh_seconds: i64,
    #[serde(default = "default_min_refresh")]
    pub(super) min_refresh_interval_seconds: i64,
    #[serde(default = "default_max_stale")]
    pub(super) max_stale_seconds: i64,
}

#[derive(Debug)]
pub(super) enum DiscoveryConfig {
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
pub(super) struct TokenFromConfig {
    pub(super) header: Option<String>,
    pub(super) scheme: Option<String>,
    pub(super) query: Option<String>,
    pub(super) cookie: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ClaimsConfig {
    pub(super) principal: Option<OneOrMany>,
    pub(super) tenant: Option<OneOrMany>,
    pub(super) app: Option<OneOrMany>,
    pub(super) groups: Option<OneOrMany>,
    pub(super) roles: Option<OneOrMany>,
    pub(super) scopes: Option<OneOrMany>,
}

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum AuthConfig {
    #[default]
    Required,
    Anonymous,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteConfig {
    pub(super) name: String,
    #[serde(rename = "match")]
    pub(super) matcher: MatchConfig,
    #[serde(default)]
    pub(super) auth: AuthConfig,
    #[serde(default)]
    pub(super) allow_anonymous_models: bool,
    #[serde(default)]
    pub(super) allow_missing_model: bool,
    pub(super) providers: Option<Vec<String>>,
    pub(super) model_from: Option<ModelFromConfig>,
    #[serde(default)]
    pub(super) deny: Vec<RuleConfig>,
    #[serde(default)]
    pub(super) allow: Vec<RuleConfig>,
    pub(super) list_models: Option<ListModelsConfig>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct ListModelsConfig {
    /// `openai`, `triton` or `kserve_v1`: read as a string and matched at compile, which names
    /// the field in its error and costs less .wasm than a derived enum.
    pub(super) format: String,
    pub(super) for_route: String,
    pub(super) max_bytes: Option<usize>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct MatchConfig {
    pub(super) hosts: Option<Vec<String>>,
    pub(super) methods: Option<Vec<String>>,
    pub(super) path: Option<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) path_template: Option<String>,
    pub(super) headers: Option<Vec<HeaderMatchConfig>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct HeaderMatchConfig {
    pub(super) name: String,
    pub(super) present: Option<bool>,
    pub(super) exact: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelFromConfig {
    pub(super) path_param: Option<String>,
    pub(super) header: Option<String>,
    pub(super) json_body: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum CallerConfig {
    User,
    App,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleConfig {
    pub(super) groups: Option<Vec<String>>,
    pub(super) all_groups: Option<Vec<String>>,
    pub(super) roles: Option<Vec<String>>,
    pub(super) scopes: Option<Vec<String>>,
    pub(super) principals: Option<Vec<String>>,
    pub(super) apps: Option<Vec<String>>,
    pub(super) tenants: Option<Vec<String>>,
    pub(super) providers: Option<Vec<String>>,
    pub(super) caller: Option<CallerConfig>,
    pub(super) models: Option<Vec<String>>,
    pub(super) claims: Option<BTreeMap<String, OneOrMany>>,
}

#[derive(Debug)]
pub(super) enum ForwardField {
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
pub(super) struct ForwardConfig {
    #[serde(default = "default_prefix")]
    pub(super) prefix: String,
    pub(super) principal: Option<ForwardField>,
    pub(super) tenant: Option<ForwardField>,
    pub(super) app: Option<ForwardField>,
    pub(super) caller: Option<ForwardField>,
    pub(super) groups: Option<ForwardField>,
    pub(super) roles: Option<ForwardField>,
    pub(super) scopes: Option<ForwardField>,
    pub(super) route: Option<ForwardField>,
    pub(super) model: Option<ForwardField>,
    pub(super) provider: Option<ForwardField>,
    /// Off unless set: the `max_tokens` a json_body request declares (src/max_tokens.rs).
    pub(super) max_tokens: Option<ForwardField>,
    #[serde(default)]
    pub(super) strip_authorization: bool,
    /// Claim path → header name: more claims forwarded as they are.
    #[serde(default)]
    pub(super) claims: std::collections::BTreeMap<String, String>,
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
            max_tokens: None,
            claims: Default::default(),
            strip_authorization: false,
        }
    }
}

fn default_prefix() -> String {
    "x-mlgate-".into()
}
