//! The empty wasm filter: every request continues untouched. `make bench` runs it in Envoy (V8) as the
//! floor for any wasm HTTP filter (VM entry, context creation, the SDK's dispatch), so that mlgate's own
//! cost can be told apart from the cost of being a wasm filter at all.
//!
//! Built like mlgate (the workspace's `wasm` profile):
//! `cargo build --profile wasm --target wasm32-wasip1 -p mlgate-noop-filter`
//! → `target/wasm32-wasip1/wasm/mlgate_noop_filter.wasm`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
}
