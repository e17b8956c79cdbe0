//! Compiling `routes[]`: the request matcher (hosts, methods, paths and path templates, headers),
//! where the model comes from, and the allow and deny rules, with provider and group names
//! resolved against the compiled providers.

use super::names::{header_name, is_plain_name};
use super::schema::{
    AuthConfig, CallerConfig, ListModelsConfig, MatchConfig, ModelFromConfig, RouteConfig,
    RuleConfig,
};
use super::{err, Compiler, ConfigError};
use crate::claims::{Caller, CallerRule, ClaimPath};
use crate::policy::{
    Glob, HeaderExpect, HeaderMatch, HostPattern, ListModels, ListingFormat, ModelFrom, PathMatch,
    Provider, Route, RouteMatch, Rule, Template, TemplateSegment,
};

impl Compiler<'_> {
    #[inline(never)] // see `Compiler`
    pub(super) fn route(
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
            list_models: None,
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

/// The default and the largest `list_models.max_bytes`: a listing is held whole in the VM.
const LISTING_MAX_BYTES: usize = 1024 * 1024;
const LISTING_MAX_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// `routes[i].list_models`, once every route is compiled (`for_route` may name a later one).
pub(super) fn compile_list_models(
    path: &str,
    config: ListModelsConfig,
    index: usize,
    routes: &[Route],
) -> Result<ListModels, ConfigError> {
    let route = routes.get(index);
    if route.is_some_and(|r| r.anonymous) {
        return err(
            format!("{path}.list_models"),
            "an anonymous route has no caller to filter a listing for",
        );
    }
    if route.is_some_and(|r| r.model_from.is_some()) {
        return err(
            format!("{path}.list_models"),
            "a listing route names no model: remove model_from (or the {model} path parameter)",
        );
    }
    let Some(for_route) = routes.iter().position(|r| r.name == config.for_route) else {
        return err(
            format!("{path}.list_models.for_route"),
            format!("no route named {:?}", config.for_route),
        );
    };
    let target = routes.get(for_route);
    if target.is_some_and(|r| r.anonymous) {
        return err(
            format!("{path}.list_models.for_route"),
            format!(
                "{:?} is anonymous: it has no rules to filter a listing by",
                config.for_route
            ),
        );
    }
    if target.is_some_and(|r| r.model_from.is_none()) {
        return err(
            format!("{path}.list_models.for_route"),
            format!("{:?} names no model (no model_from, no {{model}} path parameter): its rules cannot tell one model from another", config.for_route),
        );
    }
    let format = match config.format.as_str() {
        "openai" => ListingFormat::OpenAi,
        "triton" => ListingFormat::Triton,
        "kserve_v1" => ListingFormat::KServeV1,
        other => {
            return err(
                format!("{path}.list_models.format"),
                format!("{other:?} is not one of \"openai\", \"triton\", \"kserve_v1\""),
            )
        }
    };
    let max_bytes = config.max_bytes.unwrap_or(LISTING_MAX_BYTES);
    if !(1..=LISTING_MAX_BYTES_LIMIT).contains(&max_bytes) {
        return err(
            format!("{path}.list_models.max_bytes"),
            "must be between 1 and 16777216",
        );
    }
    Ok(ListModels {
        format,
        for_route,
        max_bytes,
    })
}
