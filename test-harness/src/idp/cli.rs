//! `mlgate-harness idp`: the command line of the demo IdP.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::personas::PERSONAS;
use super::server::{Idp, IdpOptions};
use crate::demo_cli::{parse_flags, stop_signal};

const HELP: &str = "usage: mlgate-harness idp [--port N] [--key FILE.pem] [--grace-seconds N]

Demo identity provider on 127.0.0.1 (default port 9400); its issuer is its own base URL.
  GET  /.well-known/openid-configuration   OIDC discovery
  GET  /jwks  (also /keys)                 key set (current key + retired keys in their grace period)
  GET  /token?persona=NAME                 fresh RS256 token (also POST /token, form or JSON)
       options: expires_in=SECONDS (negative: expired), not_before_in=SECONDS, aud=AUDIENCE, format=raw
  GET  /personas                           personas, groups, roles
  POST /admin/rotate[?grace_seconds=N]     rotate the signing key (new kid)
  POST /admin/outage?seconds=N             the key set answers 503 for N seconds (0 ends it)
Options:
  --key FILE.pem        RSA private key to sign with (default: a fresh RSA 2048 key)
  --grace-seconds N     how long a rotated-out key stays in the JWKS (default 600)
";

/// `mlgate-harness idp [--port N] [--key FILE.pem] [--grace-seconds N]`
pub fn cli(args: &[String]) -> Result<ExitCode> {
    let (port, flags) = parse_flags(args, 9400, &["key", "grace-seconds"])?;
    if flags.contains_key("help") {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let key_pem = match flags.get("key") {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("read --key {path}"))?)
        }
        None => None,
    };
    let grace = match flags.get("grace-seconds") {
        Some(s) => Duration::from_secs(
            s.parse()
                .with_context(|| format!("--grace-seconds {s:?}"))?,
        ),
        None => Duration::from_secs(600),
    };
    if grace > Duration::from_secs(7 * 24 * 3600) {
        bail!("--grace-seconds: at most a week");
    }
    let stop = stop_signal()?;
    let mut idp = Idp::start(IdpOptions {
        port,
        key_pem,
        grace,
        log: true,
    })?;
    let url = idp.url().to_string();
    println!(
        "idp: demo identity provider at {url} (issuer {url}, signing key kid={}; Ctrl-C to stop)",
        idp.current_kid()?
    );
    println!("idp: discovery {url}/.well-known/openid-configuration, keys {url}/jwks");
    println!(
        "idp: personas: {}",
        PERSONAS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("idp: a token: curl -s '{url}/token?persona=alice&format=raw'");
    let _ = stop.recv();
    idp.shutdown();
    println!("idp: stopped");
    Ok(ExitCode::SUCCESS)
}
