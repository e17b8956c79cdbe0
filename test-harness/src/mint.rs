//! placeholder
use std::process::ExitCode;
pub fn cli(_args: &[String]) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
