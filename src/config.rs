//! The configuration schema (serde, `deny_unknown_fields` everywhere) and `compile`, the one step
//! that validates everything and builds the runtime [`Policy`].
//!
//! Every error names the exact field path (`routes[2].allow[0].groups: …`), so a bad
//! configuration is refused at load time with a message a person can act on. Nothing here runs
//! per request.
//!
//! Here: the error type and the top-level step. The parts, in `config/`: `schema` (the serde input),
//! `providers`, `routes` (with path templates), `forward` (the identity headers), and `names`
//! (the name checks they share).

mod forward;
mod names;
mod providers;
mod routes;
mod schema;

use std::fmt;

use crate::claims::ClaimPath;
use crate::crypto::Backend;
use crate::json_path;
use crate::policy::{AuditLevel, Mode, ModelFrom, Policy, Provider, Route, Unmatched};
use crate::token::TokenSource;

use forward::compile_forward;
use providers::check_provider_overlap;
pub use routes::compile_template;
use schema::{AuditConfig, Config, ModeConfig, UnmatchedConfig};

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

#[inline(never)]
fn err<T>(path: impl Text, message: impl Text) -> Result<T, ConfigError> {
    Err(ConfigError {
        path: path.text(),
        message: message.text(),
    })
}

/// An error's path or message: a literal or already formatted. Not `Into<String>`, and `err` not
/// inlined: the copy of a `&str` was otherwise written out in each caller (~1.7 KB of .wasm).
trait Text {
    fn text(self) -> String;
}

impl Text for &str {
    #[inline(never)]
    fn text(self) -> String {
        self.to_string()
    }
}

impl Text for String {
    fn text(self) -> String {
        self
    }
}

/// Parses and compiles a configuration document for a signature backend: an algorithm that
/// `backend` cannot check (ES384 on a host without P-384 verification) is refused here.
pub fn compile(bytes: &[u8], backend: &Backend) -> Result<Policy, ConfigError> {
    compile_with(bytes, backend, &|_| None)
}

/// Reads a VM environment variable: `Some(value)` when it is set. The core never calls the host;
/// the adapter passes the lookup (natively, tests pass a map).
pub type Env<'e> = &'e dyn Fn(&str) -> Option<String>;

/// [`compile`], with the VM's environment for the fields that name a variable
/// (`shared_secret: {"env": …}`).
pub fn compile_with(bytes: &[u8], backend: &Backend, env: Env<'_>) -> Result<Policy, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return err("(root)", "the configuration is empty");
    }
    // Plain serde_json; the field path of a parse error comes from its position (json_path).
    let config: Config = serde_json::from_slice(bytes).map_err(|error| ConfigError {
        path: json_path::error_path(bytes, &error),
        message: json_path::error_message(&error),
    })?;
    Compiler::new(backend, env).compile(config)
}

/// Builds the runtime form. Its larger steps are `#[inline(never)]`: Envoy's V8 compiles every
/// function of the module with TurboFan when it loads, and the memory that takes (kept by Envoy's
/// allocator afterwards) grows with the largest function; inlined into one another, these steps
/// made one of ~25 KB of code and cost Envoy ~3 MiB of RSS, for nothing at run time (they run once
/// per configuration).
struct Compiler<'b> {
    backend: &'b Backend,
    env: Env<'b>,
    sources: Vec<TokenSource>,
    extra_claims: Vec<ClaimPath>,
}

impl<'b> Compiler<'b> {
    fn new(backend: &'b Backend, env: Env<'b>) -> Compiler<'b> {
        Compiler {
            backend,
            env,
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
        let forward = compile_forward(config.forward, &mut self.extra_claims)?;
        let mut routes: Vec<Route> = Vec::with_capacity(config.routes.len());
        let mut listings = Vec::new();
        for (index, mut route) in config.routes.into_iter().enumerate() {
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
            if let Some(listing) = route.list_models.take() {
                listings.push((index, listing));
            }
            routes.push(self.route(&path, route, &providers)?);
        }
        for (index, listing) in listings {
            let path = format!("routes[{index}]");
            let compiled = routes::compile_list_models(&path, listing, index, &routes)?;
            if let Some(route) = routes.get_mut(index) {
                route.list_models = Some(compiled);
            }
        }
        // The limit is read from a body only where mlgate reads the body's model.
        let reads_a_body = |r: &Route| matches!(r.model_from, Some(ModelFrom::JsonBody(_)));
        if forward.max_tokens.is_some() && !routes.iter().any(reads_a_body) {
            return err(
                "forward.max_tokens",
                "is read from request bodies, but no route has model_from.json_body",
            );
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
            explain: config.explain,
            decision_duration_histogram: config.decision_duration_histogram,
        })
    }
}

#[cfg(test)]
mod tests;
