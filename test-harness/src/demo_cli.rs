//! What the demo programs' command lines share (`mlgate-harness idp`, `mlgate-harness backend`): their
//! `--port N` style flags, and running until Ctrl-C / SIGTERM.

use std::collections::BTreeMap;
use std::sync::mpsc;

use anyhow::{anyhow, bail, Context as _, Result};

/// Installs a Ctrl-C / SIGTERM handler and returns a receiver that fires once on the first signal.
pub(crate) fn stop_signal() -> Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("install signal handler")?;
    Ok(rx)
}

/// Parses `--port N` (and nothing else unknown) for the demo programs; returns (port, rest).
pub(crate) fn parse_flags(
    args: &[String],
    default_port: u16,
    known: &[&str],
) -> Result<(u16, BTreeMap<String, String>)> {
    let mut port = default_port;
    let mut flags = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            flags.insert("help".to_string(), String::new());
            continue;
        }
        let Some(stripped) = name.strip_prefix("--") else {
            bail!("unexpected argument {arg:?}");
        };
        if stripped != "port" && !known.contains(&stripped) {
            bail!("unknown option {name}");
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| anyhow!("{name} needs a value"))?,
        };
        if stripped == "port" {
            port = value
                .parse()
                .with_context(|| format!("--port {value:?} is not a port number"))?;
        } else {
            flags.insert(stripped.to_string(), value);
        }
    }
    Ok((port, flags))
}
