//! Root context: compiles the configuration, hands the compiled gate to each request, and runs
//! remote key fetches (configure, ticks, callout answers).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::host_crypto;
use super::hostcalls::{self, BufferType};
use super::http::Request;
use super::keys::{self, Fetcher};
use super::metrics::Metrics;
use crate::gate::Gate;
use crate::keyring::RemoteKeys;

/// How often the root context looks at remote key sets.
const TICK_MILLISECONDS: u32 = 1000;

/// What every request of this VM shares.
pub struct Shared {
    pub gate: Gate,
    pub metrics: Metrics,
    pub fetcher: Fetcher,
    pub root_id: u32,
}

pub struct Root {
    id: u32,
    shared: Option<Rc<Shared>>,
}

impl Root {
    pub fn new(id: u32) -> Root {
        Root { id, shared: None }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(shared) = &self.shared {
            keys::on_response(
                shared,
                token,
                num_headers,
                body_size,
                hostcalls::now_seconds(),
            );
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes,
            Err(error) => {
                log::error!("mlgate: invalid configuration: (root): the host gave no configuration ({error:?})");
                return false;
            }
        };
        // The host first: the policy is compiled for what it can verify (ES384 needs it).
        let backend = host_crypto::probe();
        let policy = match crate::config::compile(&bytes, &backend) {
            Ok(policy) => policy,
            Err(error) => {
                log::error!("mlgate: invalid configuration: {error}");
                return false;
            }
        };
        let names: Vec<String> = policy.providers.iter().map(|p| p.name.clone()).collect();
        let remotes: Vec<Option<RemoteKeys>> = policy
            .providers
            .iter()
            .map(|p| p.remote_keys.clone().map(RemoteKeys::new))
            .collect();
        log::info!(
            "mlgate: configured: {} provider(s), {} route(s), mode {:?}, signature backend {}",
            policy.providers.len(),
            policy.routes.len(),
            policy.mode,
            backend.name()
        );
        let shared = Rc::new(Shared {
            gate: Gate::new(policy, backend),
            metrics: Metrics::define(&names, backend.uses_host()),
            fetcher: Fetcher::new(remotes, &names),
            root_id: self.id,
        });
        if shared.fetcher.has_remote() {
            if hostcalls::set_tick_period(TICK_MILLISECONDS).is_err() {
                log::warn!("mlgate: no timer: remote keys refresh only on demand");
            }
            // Cold start: fetch now rather than at the first tick.
            keys::on_tick(&shared, hostcalls::now_seconds(), keys::Claim::Configure);
        }
        self.shared = Some(shared);
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            keys::on_tick(shared, hostcalls::now_seconds(), keys::Claim::Tick);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(self.shared.clone(), context_id)))
    }
}
