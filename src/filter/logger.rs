//! The `log` facade on the host's `proxy_log`. The SDK's own logger unwraps the host's status (a
//! host that refuses a log line would panic the VM); this one drops the line instead.

use super::hostcalls::{self, LogLevel};

struct HostLogger;

static LOGGER: HostLogger = HostLogger;

/// Installs the logger for the whole VM. Every level goes to the host, which filters by its own
/// level (Envoy's `--component-log-level wasm:…`).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

impl log::Log for HostLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        match record.args().as_str() {
            Some(text) => hostcalls::log(level, text),
            None => hostcalls::log(level, &record.args().to_string()),
        }
    }

    fn flush(&self) {}
}
