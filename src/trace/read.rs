//! Reading a compact trace line back ([`super::Trace::compact`]), for [`super::render`]. Runs
//! natively (`mlgate-harness explain`, tests); the filter never calls it.

use std::rc::Rc;

use serde_json::{Map, Value};

use super::{Stage, TokenStep, Trace};
use crate::audit::{Audit, Decision, RuleRef};
use crate::claims::{Caller, Identity};
use crate::decision::Reason;
use crate::policy::Miss;
use crate::verify::dangerous::Seen;

pub(super) fn read(line: &str) -> Result<(Trace, Audit), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let o = value.as_object().ok_or("not a JSON object")?;
    let text =
        |o: &Map<String, Value>, key: &str| o.get(key).and_then(Value::as_str).map(str::to_string);
    let int = |o: &Map<String, Value>, key: &str| o.get(key).and_then(Value::as_i64);
    let index =
        |o: &Map<String, Value>, key: &str| int(o, key).and_then(|i| usize::try_from(i).ok());
    let mut trace = Trace::new(
        &text(o, "method").unwrap_or_default(),
        &text(o, "host").unwrap_or_default(),
        &text(o, "path").unwrap_or_default(),
        int(o, "now").ok_or("no now")?,
    );
    for pair in o
        .get("routes")
        .and_then(Value::as_array)
        .ok_or("no routes")?
    {
        let pair = pair.as_array().ok_or("a route is not [index, code]")?;
        let number = |i: usize| {
            pair.get(i)
                .and_then(Value::as_u64)
                .ok_or("a route is not [index, code]")
        };
        let miss = match number(1)? {
            0 => None,
            1 => Some(Miss::Method),
            2 => Some(Miss::Host),
            3 => Some(Miss::Path),
            n => Some(Miss::Header((n - 4) as usize)),
        };
        trace.routes.push((number(0)? as usize, miss));
    }
    trace.token = match (text(o, "token"), index(o, "source"), text(o, "sha256")) {
        (Some(missing), _, _) if missing == "missing" => TokenStep::Missing,
        (Some(reason), _, _) => TokenStep::Refused(reason_named(&reason)?),
        (None, Some(source), Some(sha256)) => TokenStep::Found { source, sha256 },
        _ => TokenStep::NotLooked,
    };
    trace.stage = match int(o, "stage").ok_or("no stage")? {
        0 => Stage::Unread,
        1 => Stage::Read,
        2 => Stage::Provider,
        3 => Stage::Admitted,
        4 => Stage::Claims,
        5 => Stage::Keys,
        6 => Stage::Verified,
        7 => Stage::Cached,
        other => return Err(format!("unknown stage {other}")),
    };
    trace.provider = index(o, "provider");
    if let Some(p) = o.get("presented").and_then(Value::as_object) {
        trace.presented = Some(Box::new(Seen {
            alg: text(p, "alg")
                .and_then(|a| a.parse().ok())
                .ok_or("presented without alg")?,
            kid: text(p, "kid"),
            claims: p
                .get("claims")
                .map_or_else(|| "{}".to_string(), Value::to_string),
            tenant: p.get("tenant").map(Value::to_string),
        }));
    }
    trace.refused = text(o, "refused").map(|r| reason_named(&r)).transpose()?;
    trace.checker = match text(o, "checker").as_deref() {
        Some("host") => Some("host"),
        Some(_) => Some("rust_crypto"),
        None => None,
    };
    trace.rules = o.get("rules").and_then(Value::as_bool) == Some(true);
    trace.status = int(o, "status").and_then(|s| u16::try_from(s).ok());

    let a = o
        .get("audit")
        .and_then(Value::as_object)
        .ok_or("no audit")?;
    let decision = match text(a, "decision").as_deref() {
        Some("allowed") => Decision::Allowed,
        Some("passed") => Decision::Passed,
        Some("denied") => Decision::Denied,
        Some("would_deny") => Decision::WouldDeny,
        other => return Err(format!("unknown decision {other:?}")),
    };
    let mut audit = Audit::new(decision);
    audit.reason = text(a, "reason")
        .map(|r| reason_named(&r).map(Reason::as_str))
        .transpose()?;
    audit.route = text(a, "route").map(Rc::from);
    audit.provider = text(a, "provider").map(Rc::from);
    audit.model = text(a, "model");
    audit.rule = text(a, "rule").map(|r| rule_named(&r)).transpose()?;
    audit.token_sha256 = text(a, "token_sha256").map(Rc::from);
    audit.token_cached = a.get("token_cached").and_then(Value::as_bool);
    audit.request_id = text(a, "request_id");
    if let Some(id) = o.get("identity").and_then(Value::as_object) {
        audit.identity = Some(Rc::new(Identity {
            provider: index(id, "provider").ok_or("identity without provider")?,
            principal: text(a, "principal"),
            tenant: text(a, "tenant"),
            app: text(a, "app"),
            caller: match text(id, "caller").as_deref() {
                Some("user") => Caller::User,
                Some("app") => Caller::App,
                _ => Caller::Unknown,
            },
            groups: strings(id.get("groups")),
            roles: strings(id.get("roles")),
            scopes: strings(id.get("scopes")),
            groups_overage: id.get("overage").and_then(Value::as_bool) == Some(true),
            jti: text(a, "jti"),
            extra: id
                .get("extra")
                .and_then(Value::as_array)
                .map(|lists| lists.iter().map(|l| strings(Some(l))).collect())
                .unwrap_or_default(),
        }));
    }
    Ok((trace, audit))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn reason_named(name: &str) -> Result<Reason, String> {
    Reason::ALL
        .into_iter()
        .find(|r| r.as_str() == name)
        .ok_or_else(|| format!("unknown reason {name:?}"))
}

fn rule_named(name: &str) -> Result<RuleRef, String> {
    let parse = |rest: &str| rest.strip_suffix(']').and_then(|n| n.parse::<usize>().ok());
    if let Some(index) = name.strip_prefix("allow[").and_then(parse) {
        return Ok(RuleRef::Allow(index));
    }
    if let Some(index) = name.strip_prefix("deny[").and_then(parse) {
        return Ok(RuleRef::Deny(index));
    }
    Err(format!("unknown rule {name:?}"))
}
