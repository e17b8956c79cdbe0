//! Compiling `forward`: the headers that carry the caller's identity to the backend, all under
//! one prefix so that copies a client sends can be stripped.

use super::names::header_name;
use super::schema::{ForwardConfig, ForwardField};
use super::{err, ConfigError};
use crate::policy::Forward;

pub(super) fn compile_forward(config: ForwardConfig) -> Result<Forward, ConfigError> {
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
