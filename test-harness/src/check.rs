//! `mlgate-harness check`: a table of policy cases run through the real `mlgate.wasm`.
//!
//! The configuration's inline key sets are rewritten to trust the harness's test keys, each case's
//! token is signed on the fly, and the filter's answer is compared with what the case expects.
//! The case-file format is documented in `filters/README.md`.
//!
//! `mlgate-harness check-config FILE...` only hands each policy to the real module's
//! `on_configure`, its keys untouched: the answer Envoy, Istio or Envoy Gateway would get, without
//! a proxy (envoy/check_manifests.py runs it on the policies embedded in the Kubernetes manifests).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::host::{Harness, Outcome};
use crate::mint::{self, TestKey};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    pub cases: Vec<Case>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub request: CaseRequest,
    #[serde(default)]
    pub token: Option<CaseToken>,
    pub expect: Expect,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    #[serde(default = "default_host")]
    pub host: String,
    /// A value, or several for a header sent more than once.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValues>,
    #[serde(default)]
    pub body: Option<Value>,
}

#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum HeaderValues {
    One(String),
    Repeated(Vec<String>),
}

impl HeaderValues {
    fn values(&self) -> &[String] {
        match self {
            HeaderValues::One(one) => std::slice::from_ref(one),
            HeaderValues::Repeated(many) => many,
        }
    }
}

fn default_method() -> String {
    "GET".into()
}

fn default_host() -> String {
    "ml.contoso.example".into()
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct CaseToken {
    pub literal: Option<String>,
    pub fixture: Option<String>,
    pub claims: Option<Map<String, Value>>,
    pub alg: Option<String>,
    pub kid: Option<String>,
    #[serde(rename = "in")]
    pub place: Option<Place>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub header: Option<String>,
    pub scheme: Option<String>,
    pub query: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u32,
    pub reason: Option<String>,
    pub www_authenticate: Option<String>,
    #[serde(default)]
    pub forwarded: BTreeMap<String, String>,
    #[serde(default)]
    pub absent: Vec<String>,
}

/// One case's result: `differences` is empty when it passed.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub differences: Vec<String>,
}

/// Rewrites every provider's key set to the harness's test keys, inline: `jwks.inline` is replaced, and a
/// remote set (`uri` or `discovery`, with its `cluster` and refresh settings) becomes an inline one, since
/// the checker has no IdP to fetch from.
pub fn trust_test_keys(config: &mut Value) {
    if let Some(providers) = config.get_mut("providers").and_then(Value::as_array_mut) {
        for provider in providers {
            if let Some(jwks) = provider.get_mut("jwks").and_then(Value::as_object_mut) {
                let keyed = ["inline", "uri", "discovery"]
                    .iter()
                    .any(|k| jwks.contains_key(*k));
                if keyed {
                    jwks.clear();
                    jwks.insert("inline".into(), mint::test_jwks());
                }
            }
        }
    }
}

/// Runs every case through a fresh harness configured with `config` (already rewritten).
/// A provider's `shared_secret: {"env": NAME}` is read, as in Envoy, from the VM's environment:
/// here the variables of that name in this process's own environment, handed to the VM.
pub fn run(config: &Value, file: &CaseFile) -> anyhow::Result<Vec<CaseResult>> {
    let harness = configured(config)?;
    let mut results = Vec::with_capacity(file.cases.len());
    for case in &file.cases {
        let differences = match run_case(&harness, config, case) {
            Ok(differences) => differences,
            Err(error) => vec![format!("could not run: {error:#}")],
        };
        results.push(CaseResult {
            name: case.name.clone(),
            differences,
        });
    }
    Ok(results)
}

fn run_case(harness: &Harness, config: &Value, case: &Case) -> anyhow::Result<Vec<String>> {
    let outcome = case_request(harness, config, case)?.send(harness)?;
    Ok(compare(&case.expect, &outcome))
}

/// A request as a case or `explain` sends it.
#[derive(Clone, Debug)]
pub struct PreparedRequest {
    pub method: String,
    /// `:path`, with the token in its query string when a case puts it there.
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl PreparedRequest {
    pub fn send(&self, harness: &Harness) -> anyhow::Result<Outcome> {
        let mut request = harness
            .request()
            .method(&self.method)
            .path(&self.path)
            .host(&self.host)
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        Ok(request.send()?)
    }
}

/// The request of a case, its token signed at the harness's time.
pub fn case_request(
    harness: &Harness,
    config: &Value,
    case: &Case,
) -> anyhow::Result<PreparedRequest> {
    let now = harness.now_unix();
    let mut path = case.request.path.clone();
    let mut builder_headers: Vec<(String, String)> = case
        .request
        .headers
        .iter()
        .flat_map(|(k, v)| v.values().iter().map(move |v| (k.clone(), v.clone())))
        .collect();
    // A body is sent as JSON unless the case says what it is.
    let typed = case
        .request
        .headers
        .keys()
        .any(|name| name.eq_ignore_ascii_case("content-type"));
    if case.request.body.is_some() && !typed {
        builder_headers.push(("content-type".into(), "application/json".into()));
    }
    if let Some(token_spec) = &case.token {
        let token = build_token(token_spec, config, now)?;
        match &token_spec.place {
            None => builder_headers.push(("authorization".into(), mint::bearer(&token))),
            Some(Place {
                header: Some(name),
                scheme,
                query: None,
                cookie: None,
            }) => {
                let value = match scheme {
                    Some(scheme) => format!("{scheme} {token}"),
                    None => token,
                };
                builder_headers.push((name.clone(), value));
            }
            Some(Place {
                header: None,
                scheme: None,
                query: Some(name),
                cookie: None,
            }) => {
                let separator = if path.contains('?') { '&' } else { '?' };
                path = format!("{path}{separator}{name}={token}");
            }
            Some(Place {
                header: None,
                scheme: None,
                query: None,
                cookie: Some(name),
            }) => {
                builder_headers.push(("cookie".into(), format!("{name}={token}")));
            }
            Some(_) => bail!(
                "token.in: give exactly one of header (with optional scheme), query or cookie"
            ),
        }
    }
    let body = match &case.request.body {
        None => None,
        Some(Value::String(text)) => Some(text.as_bytes().to_vec()),
        Some(value) => Some(value.to_string().into_bytes()),
    };
    Ok(PreparedRequest {
        method: case.request.method.clone(),
        path,
        host: case.request.host.clone(),
        headers: builder_headers,
        body,
    })
}

/// The status and reason `check` compares: 200 and the dry-run header's reason when forwarded,
/// the local reply's status and reason otherwise.
pub fn status_and_reason(outcome: &Outcome) -> (Option<u32>, Option<String>) {
    if outcome.is_forwarded() {
        let reason = outcome.forwarded_header("x-mlgate-dry-run");
        (Some(200), reason.map(str::to_string))
    } else {
        (outcome.status(), outcome.reason())
    }
}

fn compare(expect: &Expect, outcome: &Outcome) -> Vec<String> {
    let mut differences = Vec::new();
    let actual_status = if outcome.is_forwarded() {
        Some(200)
    } else {
        outcome.status()
    };
    let describe = |outcome: &Outcome| -> String {
        match outcome {
            Outcome::Forwarded { .. } => "forwarded".into(),
            Outcome::Responded { status, .. } => {
                format!("{status} {}", outcome.reason().unwrap_or_default())
            }
            Outcome::Paused { .. } => "paused".into(),
            Outcome::Reset { .. } => "reset".into(),
        }
    };
    if actual_status != Some(expect.status) {
        differences.push(format!(
            "status: expected {}, got {}",
            expect.status,
            describe(outcome)
        ));
    }
    if let Some(reason) = &expect.reason {
        let actual = if outcome.is_forwarded() {
            outcome
                .forwarded_header("x-mlgate-dry-run")
                .map(str::to_string)
        } else {
            outcome.reason()
        };
        if actual.as_deref() != Some(reason.as_str()) {
            differences.push(format!("reason: expected {reason:?}, got {actual:?}"));
        }
    }
    if let Some(expected) = &expect.www_authenticate {
        let actual = outcome.response_header("www-authenticate");
        if actual != Some(expected.as_str()) {
            differences.push(format!(
                "www-authenticate: expected {expected:?}, got {actual:?}"
            ));
        }
    }
    if !expect.forwarded.is_empty() || !expect.absent.is_empty() {
        match outcome.forwarded_headers() {
            None => differences.push("forwarded headers: the request was not forwarded".into()),
            Some(headers) => {
                for (name, value) in &expect.forwarded {
                    let actual = headers.get(name);
                    if actual != Some(value.as_str()) {
                        differences.push(format!(
                            "upstream header {name}: expected {value:?}, got {actual:?}"
                        ));
                    }
                }
                for name in &expect.absent {
                    if let Some(actual) = headers.get(name) {
                        differences.push(format!(
                            "upstream header {name}: expected absent, got {actual:?}"
                        ));
                    }
                }
            }
        }
    }
    differences
}

/// Signs the case's claims, or returns its literal token.
pub fn build_token(spec: &CaseToken, config: &Value, now: u64) -> anyhow::Result<String> {
    if let Some(literal) = &spec.literal {
        return Ok(literal.clone());
    }
    let mut claims = match &spec.fixture {
        Some(name) => {
            if !mint::claims_fixture_names().contains(&name.as_str()) {
                bail!(
                    "token.fixture: unknown fixture {name:?} (known: {:?})",
                    mint::claims_fixture_names()
                );
            }
            mint::claims_fixture_at(name, now)
        }
        None => json!({}),
    };
    let object = claims
        .as_object_mut()
        .context("a claims fixture must be a JSON object")?;
    for (name, value) in spec.claims.iter().flatten() {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), resolve_time(value, now));
        }
    }
    let claims = mint::fill_times(claims, now, 3600);
    let alg_name = spec.alg.as_deref().unwrap_or("RS256");
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|_| anyhow::anyhow!("token.alg: unknown algorithm {alg_name:?}"))?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        let secret = shared_secret(config)
            .context("token.alg: an HS* token needs a provider with shared_secret")?;
        let mut header = Header::new(alg);
        header.kid = spec.kid.clone();
        return Ok(jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(&secret),
        )?);
    }
    let key = match alg {
        Algorithm::ES256 => TestKey::ec_p256(),
        Algorithm::ES384 => TestKey::ec_p384(),
        Algorithm::EdDSA => TestKey::ed25519(),
        _ => TestKey::rsa_b(),
    };
    let kid = spec.kid.clone().unwrap_or_else(|| key.kid().to_string());
    let header = json!({"alg": mint::alg_name(alg), "typ": "JWT", "kid": kid});
    key.try_sign_with_header(&header, &claims)
}

/// `"now"`, `"now+3600"`, `"now-120"` → Unix seconds; anything else unchanged.
fn resolve_time(value: &Value, now: u64) -> Value {
    let Some(text) = value.as_str() else {
        return value.clone();
    };
    let Some(rest) = text.strip_prefix("now") else {
        return value.clone();
    };
    let offset = if rest.is_empty() {
        Some(0)
    } else if let Some(n) = rest.strip_prefix('+') {
        n.parse::<i64>().ok()
    } else if let Some(n) = rest.strip_prefix('-') {
        n.parse::<i64>().ok().map(|n| -n)
    } else {
        None
    };
    match offset {
        Some(offset) => Value::from(now as i64 + offset),
        None => value.clone(),
    }
}

/// A fresh harness configured with `config`, its providers' `shared_secret: {"env": NAME}` read
/// from this process's variables of that name.
pub fn configured(config: &Value) -> anyhow::Result<Harness> {
    let mut builder = Harness::builder();
    for name in secret_variables(config) {
        if let Ok(value) = std::env::var(&name) {
            builder = builder.env(&name, &value);
        }
    }
    builder
        .load()?
        .configure(config.clone())
        .map_err(|e| anyhow::anyhow!("the filter refused the configuration: {e}"))
}

/// The names of the environment variables the providers' `shared_secret: {"env": NAME}` read.
fn secret_variables(config: &Value) -> Vec<String> {
    let providers = config.get("providers").and_then(Value::as_array);
    providers
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("shared_secret")?.get("env")?.as_str())
        .map(str::to_string)
        .collect()
}

/// The first provider's shared secret, inline or from this process's environment (as [`run`]
/// gives it to the VM).
fn shared_secret(config: &Value) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let secret = config
        .get("providers")?
        .as_array()?
        .iter()
        .find_map(|p| p.get("shared_secret"))?;
    let text = match secret.get("env").and_then(Value::as_str) {
        Some(name) => std::env::var(name).ok()?.trim().to_string(),
        None => secret.as_str()?.to_string(),
    };
    [URL_SAFE_NO_PAD, URL_SAFE, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(&text).ok())
}

/// The printed table, and whether every case passed.
pub fn report(config_path: &Path, results: &[CaseResult]) -> (String, bool) {
    let mut out = String::new();
    let _ = writeln!(out, "mlgate check: {}", config_path.display());
    let failed = results.iter().filter(|r| !r.differences.is_empty()).count();
    for result in results {
        let mark = if result.differences.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        let _ = writeln!(out, "  {mark}  {}", result.name);
        for difference in &result.differences {
            let _ = writeln!(out, "          - {difference}");
        }
    }
    let _ = writeln!(out, "{} passed, {failed} failed", results.len() - failed);
    (out, failed == 0)
}

pub fn cli(args: &[String]) -> anyhow::Result<ExitCode> {
    let mut config_path: Option<PathBuf> = None;
    let mut cases_path: Option<PathBuf> = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--config" => config_path = iter.next().map(PathBuf::from),
            "--cases" => cases_path = iter.next().map(PathBuf::from),
            "--wasm" => {
                let path = iter.next().context("--wasm needs a path")?;
                std::env::set_var("MLGATE_WASM", path);
            }
            "-h" | "--help" => {
                println!("usage: mlgate-harness check --config FILE --cases FILE [--wasm FILE]\n\nRuns each case of the case file through the real mlgate.wasm configured with FILE\n(its inline key sets rewritten to trust the harness's test keys). Format: filters/README.md.");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let config_path = config_path.context("--config FILE is required")?;
    let cases_path = cases_path.context("--cases FILE is required")?;
    let mut config: Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let file: CaseFile = serde_json::from_str(
        &std::fs::read_to_string(&cases_path)
            .with_context(|| format!("reading {}", cases_path.display()))?,
    )
    .with_context(|| format!("{} is not a valid case file", cases_path.display()))?;
    trust_test_keys(&mut config);
    let results = run(&config, &file)?;
    let (table, passed) = report(&config_path, &results);
    print!("{table}");
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether the real module accepts `config` as its plugin configuration, as it is (no key set
/// rewritten: a remote set's fetch starts and stays pending). `Err` carries mlgate's own message,
/// which names the field (`mlgate: invalid configuration: routes[2].…`), or what else went wrong.
/// A provider's `shared_secret: {"env": NAME}` is read from this process's variable of that name.
pub fn compile(config: &Value) -> anyhow::Result<()> {
    let mut builder = Harness::builder();
    for name in secret_variables(config) {
        if let Ok(value) = std::env::var(&name) {
            builder = builder.env(&name, &value);
        }
    }
    match builder.load()?.configure(config.clone()) {
        Ok(_) => Ok(()),
        Err(error @ crate::host::HostError::ConfigureRefused { .. }) => {
            let reasons: Vec<&str> = error
                .logs()
                .iter()
                .map(|line| line.message.as_str())
                .filter(|message| message.contains("invalid configuration"))
                .collect();
            if reasons.is_empty() {
                bail!("{error}");
            }
            bail!("{}", reasons.join("; "))
        }
        Err(error) => bail!("{error}"),
    }
}

pub fn check_config_cli(args: &[String]) -> anyhow::Result<ExitCode> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--wasm" => {
                let path = iter.next().context("--wasm needs a path")?;
                std::env::set_var("MLGATE_WASM", path);
            }
            "-h" | "--help" => {
                println!("usage: mlgate-harness check-config FILE... [--wasm FILE]\n\nHands each policy (JSON) to the real mlgate.wasm's on_configure, keys as they are, and prints\nok or mlgate's refusal, which names the field. Exit status 1 if any is refused.");
                return Ok(ExitCode::SUCCESS);
            }
            other if other.starts_with('-') => bail!("unknown argument {other:?} (see --help)"),
            file => files.push(PathBuf::from(file)),
        }
    }
    if files.is_empty() {
        bail!("give at least one policy file (see --help)");
    }
    let mut refused = 0;
    for file in &files {
        let result = std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))
            .and_then(|text| serde_json::from_str::<Value>(&text).context("not JSON"))
            .and_then(|config| compile(&config));
        match result {
            Ok(()) => println!("check-config: ok      {}", file.display()),
            Err(error) => {
                refused += 1;
                println!("check-config: FAILED  {}: {error:#}", file.display());
            }
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_expressions_resolve() {
        assert_eq!(resolve_time(&json!("now"), 100), json!(100));
        assert_eq!(resolve_time(&json!("now+5"), 100), json!(105));
        assert_eq!(resolve_time(&json!("now-5"), 100), json!(95));
        assert_eq!(resolve_time(&json!("nowhere"), 100), json!("nowhere"));
        assert_eq!(resolve_time(&json!(7), 100), json!(7));
    }

    #[test]
    fn secret_variables_are_the_env_names_of_shared_secrets() {
        let config = json!({"providers": [
            {"shared_secret": {"env": "MLGATE_HS_SECRET"}},
            {"shared_secret": "aW5saW5l"},
            {"jwks": {"inline": {"keys": []}}}
        ]});
        assert_eq!(secret_variables(&config), vec!["MLGATE_HS_SECRET"]);
    }

    /// A policy whose keys come from a cluster, as the Kubernetes manifests' do.
    fn remote_policy() -> Value {
        json!({
            "providers": [{
                "name": "entra",
                "issuer": "https://login.microsoftonline.com/4b2f3c1e-8a6d-4f0e-9c3b-2a1d5e7f9a10/v2.0",
                "audiences": ["api://ml-scoring"],
                "jwks": {"discovery": true, "cluster": "outbound|443||login.microsoftonline.com"}
            }],
            "routes": [{"name": "score", "match": {"path": "/score"}, "allow": [{"roles": ["Scoring.Invoke"]}]}]
        })
    }

    #[test]
    fn compile_accepts_a_remote_key_set_as_it_is() {
        compile(&remote_policy()).expect("the real module accepts the policy");
    }

    #[test]
    fn compile_reports_mlgate_s_refusal_naming_the_field() {
        let mut policy = remote_policy();
        policy["providers"][0]["jwks"]["timeout_ms"] = json!(5);
        let error = compile(&policy)
            .expect_err("a 5 ms timeout is refused")
            .to_string();
        assert!(
            error.contains("mlgate: invalid configuration: providers[0].jwks.timeout_ms"),
            "{error}"
        );
    }

    #[test]
    fn inline_jwks_is_replaced_with_test_keys() {
        let mut config =
            json!({"providers": [{"jwks": {"inline": {"keys": []}}}, {"shared_secret": "x"}]});
        trust_test_keys(&mut config);
        assert_eq!(config["providers"][0]["jwks"]["inline"], mint::test_jwks());
        let mut remote = json!({"providers": [
            {"jwks": {"uri": "http://127.0.0.1:9400/jwks", "cluster": "demo_idp", "min_refresh_interval_seconds": 5}},
            {"jwks": {"discovery": true, "cluster": "entra", "timeout_ms": 2000}}
        ]});
        trust_test_keys(&mut remote);
        for p in 0..2 {
            assert_eq!(
                remote["providers"][p]["jwks"],
                json!({"inline": mint::test_jwks()})
            );
        }
        assert!(config["providers"][1].get("jwks").is_none());
    }
}
