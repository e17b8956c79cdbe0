//! Stub adapter: passes every request. Replaced by the real adapter.
#![allow(unsafe_code)]
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;
impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let cfg = self.get_plugin_configuration().unwrap_or_default();
        log::info!("stub configured with {} bytes", cfg.len());
        !cfg.is_empty()
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Req))
    }
}
struct Req;
impl Context for Req {}
impl HttpContext for Req {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.get_http_request_header(":path").as_deref() == Some("/deny") {
            self.send_http_response(403, vec![("x-stub", "1")], Some(b"denied"));
            return Action::Pause;
        }
        self.set_http_request_header("x-stub-seen", Some("1"));
        Action::Continue
    }
}
