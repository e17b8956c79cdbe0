//! Compiling `forward`: the headers that carry the caller's identity to the backend, all under
//! one prefix so that copies a client sends can be stripped.

use super::names::header_name;
use super::schema::{ForwardConfig, ForwardField};
use super::{err, ConfigError};
use crate::claims::ClaimPath;
use crate::policy::Forward;

/// `extra_claims`: the claim paths the identity extracts beyond the standard ones; the claims
/// forwarded with `claims` join them (their values are read once per verified token, as the
/// claims rules compare are).
pub(super) fn compile_forward(
    config: ForwardConfig,
    extra_claims: &mut Vec<ClaimPath>,
) -> Result<Forward, ConfigError> {
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
    let mut forward = Forward {
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
        // Off unless asked for: it refuses bodies whose limit cannot be read one way.
        max_tokens: match config.max_tokens {
            None | Some(ForwardField::Enabled(false)) => None,
            Some(ForwardField::Enabled(true)) => Some(format!("{prefix}max-tokens")),
            Some(ForwardField::Named(header)) => {
                let header = header_name("forward.max_tokens", &header)?;
                if !header.starts_with(&prefix) {
                    return err(
                        "forward.max_tokens",
                        format!("{header:?} must start with the prefix {prefix:?}, so that client-sent copies are stripped"),
                    );
                }
                Some(header)
            }
        },
        dry_run: format!("{prefix}dry-run"),
        strip_authorization: config.strip_authorization,
        claims: Vec::with_capacity(config.claims.len()),
        prefix,
    };
    if let Some(header) = &forward.max_tokens {
        if forwards_identity(&forward, header) {
            return err(
                "forward.max_tokens",
                format!("{header:?} is already forwarded for something else"),
            );
        }
    }
    for (claim, header) in config.claims {
        let at = format!("forward.claims.{claim}");
        if claim.is_empty() {
            return err("forward.claims", "a claim path must not be empty");
        }
        let header = header_name(&at, &header)?;
        if !header.starts_with(&forward.prefix) {
            return err(
                at,
                format!("{header:?} must start with the prefix {:?}, so that client-sent copies are stripped", forward.prefix),
            );
        }
        let taken = forwards_identity(&forward, &header)
            || forward.max_tokens.as_deref() == Some(header.as_str())
            || forward.claims.iter().any(|(_, other)| *other == header);
        if taken {
            return err(
                at,
                format!("{header:?} is already forwarded for something else"),
            );
        }
        let index = match extra_claims.iter().position(|p| p.as_str() == claim) {
            Some(index) => index,
            None => {
                extra_claims.push(ClaimPath::new(&claim));
                extra_claims.len() - 1
            }
        };
        forward.claims.push((index, header));
    }
    Ok(forward)
}

/// Whether `header` already carries one of the identity's standard fields (or the dry-run verdict).
fn forwards_identity(forward: &Forward, header: &str) -> bool {
    let standard = [
        &forward.principal,
        &forward.tenant,
        &forward.app,
        &forward.caller,
        &forward.groups,
        &forward.roles,
        &forward.scopes,
        &forward.route,
        &forward.model,
        &forward.provider,
    ];
    standard.iter().any(|name| name.as_deref() == Some(header)) || header == forward.dry_run
}
