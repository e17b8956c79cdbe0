//! Compiling `providers[]`: issuers and tenants, audiences, algorithms, keys (inline or remote
//! JWKS, or a shared secret), where tokens come from, the claims map and caller type, and the
//! check that no two providers accept the same issuer.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::Algorithm;

use super::names::{header_name, is_plain_name, is_token_char};
use super::schema::{
    CallerTypeConfig, ClaimsConfig, DiscoveryConfig, JwksConfig, OneOrMany, OverageConfig,
    ProviderConfig, SecretConfig, TokenFromConfig,
};
use super::{err, Compiler, ConfigError};
use crate::claims::{CallerRule, ClaimMap, ClaimPath};
use crate::crypto::Backend;
use crate::jwks::{self, Key, KeyFamily, KeySet, Strictness};
use crate::keyring::{FetchTarget, RemoteJwks, Url};
use crate::policy::{Overage, Provider};
use crate::token::TokenSource;
use crate::verify::{IssuerPattern, Tenants, TokenRules};

impl Compiler<'_> {
    #[inline(never)] // see `Compiler`
    pub(super) fn provider(
        &mut self,
        path: &str,
        config: ProviderConfig,
    ) -> Result<Provider, ConfigError> {
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
                let secret = self.shared_secret(&format!("{path}.shared_secret"), secret)?;
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
        for (id, name) in &config.group_names {
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
            group_names: config.group_names,
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

impl Compiler<'_> {
    /// The decoded HMAC secret, inline or from the VM's environment. No message here contains the
    /// secret or any part of it: an error says only where, how long, and what is wrong.
    fn shared_secret(&self, path: &str, secret: SecretConfig) -> Result<Vec<u8>, ConfigError> {
        let (path, text) = match secret {
            SecretConfig::Inline(text) => (path.to_string(), text),
            SecretConfig::Env(name) => {
                let path = format!("{path}.env");
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
                    return err(
                        path,
                        "must be the name of an environment variable (printable ASCII, no '=' or spaces)",
                    );
                }
                // Surrounding whitespace (a trailing newline from a mounted file or `echo`) is
                // not part of the base64.
                match (self.env)(&name).map(|value| value.trim().to_string()) {
                    Some(value) if !value.is_empty() => (path, value),
                    Some(_) => {
                        return err(
                            path,
                            format!("the VM's environment variable {name:?} is empty"),
                        )
                    }
                    None => {
                        return err(path, format!("the VM has no environment variable {name:?}"))
                    }
                }
            }
        };
        let secret = decode_secret(&text)
            .ok_or(())
            .or_else(|_| err(path.as_str(), "must be base64 or base64url"))?;
        if secret.len() < 32 {
            return err(
                path,
                format!(
                    "{} bytes is too short: an HMAC secret needs at least 32",
                    secret.len()
                ),
            );
        }
        Ok(secret)
    }
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

pub(super) fn check_provider_overlap(
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
