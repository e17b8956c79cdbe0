//! Root context: compiles the configuration and hands the compiled gate to each request.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::hostcalls::{self, BufferType, LogLevel};
use super::http::Request;
use super::metrics::Metrics;
use crate::gate::Gate;

/// What every request of this VM shares.
pub struct Shared {
    pub gate: Gate,
    pub metrics: Metrics,
}

#[derive(Default)]
pub struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes,
            Err(error) => {
                hostcalls::log(
                    LogLevel::Error,
                    &format!("mlgate: invalid configuration: (root): the host gave no configuration ({error:?})"),
                );
                return false;
            }
        };
        match crate::config::compile(&bytes) {
            Ok(policy) => {
                hostcalls::log(
                    LogLevel::Info,
                    &format!(
                        "mlgate: configured: {} provider(s), {} route(s), mode {:?}, signature backend rust_crypto",
                        policy.providers.len(),
                        policy.routes.len(),
                        policy.mode
                    ),
                );
                self.shared = Some(Rc::new(Shared {
                    gate: Gate::new(policy),
                    metrics: Metrics::define(),
                }));
                true
            }
            Err(error) => {
                hostcalls::log(
                    LogLevel::Error,
                    &format!("mlgate: invalid configuration: {error}"),
                );
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(self.shared.clone())))
    }
}
