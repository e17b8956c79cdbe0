//! `mlgate-harness explain`: why the real `mlgate.wasm` decides what it decides for one request.
//!
//! The policy is loaded with `"explain": true` into the real module, the request is sent, and the
//! trace the filter logs (`mlgate trace {…}`, compact) is expanded against the same policy by
//! mlgate's own core, natively ([`mlgate::trace::render`]), then printed readably or as JSON.
//! With `--claims`, the claims are signed with the harness's test key and the policy's key sets
//! are replaced by the harness's test keys, as `check` does; the output says so.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use serde_json::{Map, Value};

use crate::check::{self, CaseToken, PreparedRequest};
use crate::host::{Harness, Outcome};

/// What `explain` found for one request.
#[derive(Debug)]
pub struct Explained {
    /// The line the filter logged, after `mlgate trace `.
    pub line: String,
    /// The line expanded against the policy.
    pub trace: Value,
    /// How the request ended in the harness.
    pub outcome: Outcome,
}

impl Explained {
    /// The status and reason the trace gives: 200 (and the dry-run reason) when forwarded, as
    /// `check` reads an outcome ([`check::status_and_reason`]).
    pub fn status_and_reason(&self) -> (Option<u32>, Option<String>) {
        let decision = &self.trace["decision"];
        let reason = decision["reason"].as_str().map(str::to_string);
        if decision["forwarded"] == true {
            // In dry-run mode every forwarded request says its verdict upstream.
            let dry_run = decision["dry_run"] == true;
            let verdict = reason.or_else(|| Some("allow".into()));
            return (Some(200), verdict.filter(|_| dry_run));
        }
        let status = decision["status"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok());
        (status, reason)
    }
}

/// The policy as `explain` loads it: the user's, with `explain: true`.
pub fn explaining(config: &Value) -> Value {
    let mut config = config.clone();
    if let Some(object) = config.as_object_mut() {
        object.insert("explain".into(), Value::Bool(true));
    }
    config
}

/// Sends `request` to `harness` (configured with `explaining(config)`) and expands the trace the
/// filter logged. A request left waiting for remote keys has its key fetches failed, as no IdP
/// answers here: it is then decided without them.
pub fn explain_on(
    harness: &Harness,
    config: &Value,
    request: &PreparedRequest,
) -> anyhow::Result<Explained> {
    let mut outcome = request.send(harness)?;
    if outcome.is_paused() {
        for call in harness.pending_calls() {
            harness.fail_call(call.token)?;
        }
        harness.poll()?;
        outcome = harness
            .outcome(outcome.context_id())
            .context("the request vanished")?;
    }
    let line = outcome
        .logs()
        .iter()
        .rev()
        .find_map(|entry| entry.message.strip_prefix("mlgate trace "))
        .map(str::to_string)
        .with_context(|| format!("the filter logged no trace for the request ({outcome})"))?;
    let policy = native_policy(config)?;
    let rendered = mlgate::trace::render(&policy, &line)
        .map_err(|e| anyhow::anyhow!("the filter's trace cannot be read: {e}: {line}"))?;
    let trace = serde_json::from_str(&rendered).context("the expanded trace is not JSON")?;
    Ok(Explained {
        line,
        trace,
        outcome,
    })
}

/// The policy compiled by mlgate's core natively, as the module compiled it (every algorithm
/// accepted: nothing is verified here).
fn native_policy(config: &Value) -> anyhow::Result<mlgate::policy::Policy> {
    fn no_host(_: &mlgate::crypto::HostCheck<'_>) -> Option<bool> {
        None
    }
    let backend = mlgate::crypto::Backend::with_host(no_host, true);
    let env = |name: &str| std::env::var(name).ok();
    mlgate::config::compile_with(config.to_string().as_bytes(), &backend, &env)
        .map_err(|e| anyhow::anyhow!("the policy does not compile natively: {e}"))
}

/// Where the request's token comes from.
enum TokenInput {
    Literal(String),
    Claims(Map<String, Value>),
}

pub fn cli(args: &[String]) -> anyhow::Result<ExitCode> {
    let mut config_path: Option<PathBuf> = None;
    let mut token: Option<TokenInput> = None;
    let mut method: Option<String> = None;
    let mut path: Option<String> = None;
    let mut host = "ml.contoso.example".to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut body: Option<Vec<u8>> = None;
    let mut alg: Option<String> = None;
    let mut json = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = |name: &str| iter.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config" => config_path = Some(PathBuf::from(value("--config")?)),
            "--token" => token = Some(TokenInput::Literal(value("--token")?.trim().to_string())),
            "--claims" => {
                let text = value("--claims")?;
                let claims: Value = serde_json::from_str(text)
                    .context("--claims must be a JSON object of claims")?;
                let Value::Object(claims) = claims else {
                    bail!("--claims must be a JSON object of claims");
                };
                token = Some(TokenInput::Claims(claims));
            }
            "--alg" => alg = Some(value("--alg")?.clone()),
            "--method" => method = Some(value("--method")?.clone()),
            "--path" => path = Some(value("--path")?.clone()),
            "--header" => {
                let header = value("--header")?;
                let (name, v) = header
                    .split_once(':')
                    .with_context(|| format!("--header {header:?} is not NAME:VALUE"))?;
                let name = name.trim().to_ascii_lowercase();
                if name == "host" || name == ":authority" {
                    host = v.trim().to_string();
                } else {
                    headers.push((name, v.trim().to_string()));
                }
            }
            "--body" => {
                let file = value("--body")?;
                body = Some(std::fs::read(file).with_context(|| format!("reading {file}"))?);
            }
            "--json" => json = true,
            "--wasm" => std::env::set_var("MLGATE_WASM", value("--wasm")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let config_path = config_path.context("--config FILE is required")?;
    let token = token.context("give --token JWT or --claims JSON")?;
    let method = method.context("--method M is required")?;
    let path = path.context("--path P is required")?;
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let mut notes = Vec::new();
    if matches!(token, TokenInput::Claims(_)) {
        check::trust_test_keys(&mut config);
    }
    let config = explaining(&config);
    let harness = check::configured(&config)?;
    let token = match token {
        TokenInput::Literal(token) => token,
        TokenInput::Claims(claims) => {
            let spec = CaseToken {
                claims: Some(claims),
                alg: alg.clone(),
                ..CaseToken::default()
            };
            let token = check::build_token(&spec, &config, harness.now_unix())?;
            let kid = mlgate::verify::dangerous::peek(&token)
                .ok()
                .and_then(|t| t.kid().map(str::to_string))
                .unwrap_or_default();
            notes.push(format!(
                "--claims signed by mlgate-harness with its test key {kid:?} ({}); the policy's key sets were replaced by the harness's test keys (iat/exp added when absent)",
                alg.as_deref().unwrap_or("RS256")
            ));
            token
        }
    };
    let typed = headers.iter().any(|(name, _)| name == "content-type");
    if body.is_some() && !typed {
        headers.push(("content-type".into(), "application/json".into()));
    }
    if !headers.iter().any(|(name, _)| name == "authorization") {
        headers.push(("authorization".into(), crate::mint::bearer(&token)));
    } else {
        notes.push("an authorization header was given: the token was not added".into());
    }
    let request = PreparedRequest {
        method,
        path,
        host,
        headers,
        body,
    };
    let explained = explain_on(&harness, &config, &request)?;
    if json {
        let mut out = explained.trace.clone();
        if let Some(object) = out.as_object_mut() {
            object.insert("notes".into(), notes.into());
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for note in &notes {
            println!("note: {note}");
        }
        print!("{}", readable(&explained.trace));
    }
    Ok(ExitCode::SUCCESS)
}

const USAGE: &str = "usage: mlgate-harness explain --config FILE (--token JWT | --claims JSON) --method M --path P
                              [--header K:V]... [--body FILE] [--alg ALG] [--json] [--wasm FILE]

Loads the policy, with \"explain\": true, into the real mlgate.wasm, sends the request and prints the
decision's trace: the routes tried, the token, each check with the values compared, the identity,
each rule with each condition's result (the deciding rule marked), and the decision.
--claims JSON signs the claims with the harness's test key (RS256 unless --alg) and replaces the
policy's key sets by the harness's test keys, as `check` does. --header host:NAME sets :authority
(default ml.contoso.example). A body is sent as application/json unless a content-type is given.";

/// The expanded trace as text, one step per paragraph.
pub fn readable(trace: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let list = |v: &Value| -> String {
        let items: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i.as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        if items.is_empty() {
            "-".into()
        } else {
            items.join(", ")
        }
    };
    let request = &trace["request"];
    let _ = writeln!(
        out,
        "request   {} {} (host {})",
        s(&request["method"]),
        s(&request["path"]),
        s(&request["host"])
    );
    let _ = writeln!(out, "routes");
    for route in trace["routes"].as_array().into_iter().flatten() {
        let result = match route["match"].as_str() {
            Some("matched") => "matched".to_string(),
            Some(part) => format!("no: {part} does not match"),
            None => "?".into(),
        };
        let _ = writeln!(out, "  {:<20} {result}", s(&route["route"]));
    }
    if let Some(unmatched) = trace["unmatched"].as_str() {
        let _ = writeln!(out, "  no route matched: unmatched requests {unmatched}");
    }
    if trace["anonymous"] == true {
        let _ = writeln!(out, "  the route is anonymous: no token is looked for");
    }
    let token = &trace["token"];
    if token.is_object() {
        let _ = write!(out, "token     ");
        if token["found"] == true {
            let place = match (token["header"].as_str(), token["query"].as_str()) {
                (Some(h), _) => match token["scheme"].as_str() {
                    Some(scheme) => format!("header {h} ({scheme})"),
                    None => format!("header {h}"),
                },
                (None, Some(q)) => format!("query parameter {q}"),
                _ => format!("cookie {}", s(&token["cookie"])),
            };
            let _ = write!(out, "from {place}, sha256 {}", s(&token["sha256"]));
            if let Some(cache) = trace["cache"].as_str() {
                let _ = write!(out, ", cache {cache}");
            }
            let _ = writeln!(out);
            if let Some(reason) = token["unreadable"].as_str() {
                let _ = writeln!(out, "          unreadable: {reason}");
            }
        } else {
            match token["refused"].as_str() {
                Some(reason) => {
                    let _ = writeln!(out, "refused: {reason}");
                }
                None => {
                    let _ = writeln!(out, "none found");
                }
            }
        }
    }
    if let Some(iss) = trace["issuer"].as_str() {
        let provider = match (
            trace["provider"].as_str(),
            trace["provider_refused"].as_str(),
        ) {
            (Some(p), _) => format!("provider {p}"),
            (None, Some(reason)) => format!("no provider ({reason})"),
            _ => "?".into(),
        };
        let _ = writeln!(out, "issuer    {iss} -> {provider}");
    } else if let Some(p) = trace["provider"].as_str() {
        let _ = writeln!(
            out,
            "provider  {p} (identity from the cache, verified earlier)"
        );
    }
    if let Some(reason) = trace["admission_refused"].as_str() {
        let _ = writeln!(out, "          the route does not take it: {reason}");
    }
    if let Some(checks) = trace["checks"].as_array() {
        let _ = writeln!(out, "checks");
        for check in checks {
            let values = check_values(check);
            let _ = writeln!(
                out,
                "  {:<20} {:<10} {values}",
                s(&check["result"]),
                s(&check["check"])
            );
        }
    }
    let identity = &trace["identity"];
    if identity.is_object() {
        let _ = writeln!(out, "identity");
        for key in ["principal", "tenant", "app", "caller"] {
            if let Some(value) = identity[key].as_str() {
                let _ = writeln!(out, "  {key:<10} {value}");
            }
        }
        let groups: Vec<String> = identity["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| match g["id"].as_str() {
                Some(id) => format!("{} (from {id})", s(&g["name"])),
                None => s(&g["name"]),
            })
            .collect();
        let groups = if groups.is_empty() {
            "-".to_string()
        } else {
            groups.join(", ")
        };
        let _ = writeln!(out, "  {:<10} {groups}", "groups");
        if identity["groups_overage"] == true {
            let _ = writeln!(out, "  {:<10} incomplete (groups overage)", "");
        }
        let _ = writeln!(out, "  {:<10} {}", "roles", list(&identity["roles"]));
        let _ = writeln!(out, "  {:<10} {}", "scopes", list(&identity["scopes"]));
        if let Some(claims) = identity["claims"].as_object() {
            for (name, values) in claims {
                let _ = writeln!(out, "  {name:<10} {}", list(values));
            }
        }
    }
    let model = &trace["model"];
    if model.is_object() {
        let from = match (
            model["from"].as_str(),
            model["header"].as_str(),
            model["json_body"].as_str(),
        ) {
            (Some(_), _, _) => "the path".to_string(),
            (_, Some(h), _) => format!("header {h}"),
            (_, _, Some(f)) => format!("body field {f}"),
            _ => "?".into(),
        };
        let value = model["value"].as_str().unwrap_or("(none)");
        let _ = writeln!(out, "model     {value} (from {from})");
    }
    if let Some(rules) = trace["rules"].as_array() {
        let _ = writeln!(out, "rules (deny first, then allow)");
        if rules.is_empty() {
            let _ = writeln!(out, "  none: any valid token the route takes is allowed");
        }
        for rule in rules {
            let mark = if rule["decided"] == true { "->" } else { "  " };
            let matched = if rule["matched"] == true {
                "matches"
            } else {
                "no"
            };
            let conditions: Vec<String> = rule["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_object)
                .map(|c| {
                    let ok = if c.get("ok") == Some(&Value::Bool(true)) {
                        "yes"
                    } else {
                        "NO"
                    };
                    let (name, wanted) = c
                        .iter()
                        .find(|(k, _)| k.as_str() != "ok")
                        .map(|(k, v)| (k.clone(), list(v)))
                        .unwrap_or_default();
                    format!("{name} [{wanted}]: {ok}")
                })
                .collect();
            let _ = writeln!(
                out,
                "{mark}{:<10} {matched:<8} {}",
                s(&rule["rule"]),
                conditions.join("; ")
            );
        }
    }
    let decision = &trace["decision"];
    let _ = write!(out, "decision  {}", s(&decision["decision"]));
    match decision["status"].as_u64() {
        Some(status) => {
            let _ = write!(out, ", answered {status}");
        }
        None => {
            let _ = write!(out, ", forwarded");
        }
    }
    for key in ["reason", "route", "rule", "model"] {
        if let Some(value) = decision[key].as_str() {
            let _ = write!(out, ", {key} {value}");
        }
    }
    let _ = writeln!(out);
    out
}

/// A check's compared values, as text.
fn check_values(check: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "(absent)".into(),
        Value::Array(items) if items.is_empty() => "(none)".into(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    };
    match check["check"].as_str() {
        Some("lifetime") => {
            return match check["max"].as_i64() {
                Some(max) => format!("exp - (iat or nbf) <= {max} s"),
                None => "no limit".into(),
            }
        }
        Some("id_token") => {
            let accepted = if check["accepted"] == true {
                "yes"
            } else {
                "no"
            };
            return format!("(OpenID Connect ID tokens accepted: {accepted})");
        }
        Some("keys") => return "the provider's key set is loaded".into(),
        _ => {}
    }
    let mut parts = Vec::new();
    if let Some(claim) = check["claim"].as_str() {
        parts.push(format!("claim {claim}"));
    }
    if let Some(value) = check.get("value") {
        parts.push(text(value));
    }
    if let Some(accepted) = check.get("accepted") {
        parts.push(format!("(accepted: {})", text(accepted)));
    }
    if let Some(max) = check.get("max") {
        parts.push(format!("max {}", text(max)));
    }
    if let (Some(now), Some(skew)) = (check["now"].as_i64(), check["skew"].as_i64()) {
        parts.push(format!("(now {now}, skew {skew} s)"));
    }
    if check["required"] == true {
        parts.push("required".into());
    }
    if let Some(backend) = check["backend"].as_str() {
        parts.push(format!("backend {backend}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_forwarded_trace_reads_as_200_and_a_dry_run_refusal_keeps_its_reason() {
        let forwarded = |decision: &str, reason: Option<&str>| Explained {
            line: String::new(),
            trace: json!({"decision": {
                "decision": decision, "forwarded": true, "reason": reason,
                "dry_run": decision == "would_deny"
            }}),
            outcome: Outcome::Paused {
                context_id: 0,
                logs: Vec::new(),
            },
        };
        assert_eq!(
            forwarded("allowed", None).status_and_reason(),
            (Some(200), None)
        );
        assert_eq!(
            forwarded("would_deny", Some("no_rule_matched")).status_and_reason(),
            (Some(200), Some("no_rule_matched".into()))
        );
    }

    #[test]
    fn explaining_sets_the_policy_field() {
        let config = explaining(&json!({"providers": [], "explain": false}));
        assert_eq!(config["explain"], true);
    }
}
