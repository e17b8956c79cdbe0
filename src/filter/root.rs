//! Root context: compiles the configuration, hands the compiled gate to each request, and runs
//! remote key fetches (configure, ticks, callout answers).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::host_crypto;
use super::hostcalls::{self, BufferType};
use super::http::{self, Request};
use super::keys::{self, Fetcher, LockHold, Woken};
use super::metrics::Metrics;
use super::shared::{Shared, StateRef, TICK_MILLISECONDS};
use crate::gate::Gate;

pub struct Root {
    id: u32,
    shared: Option<Rc<Shared>>,
}

impl Root {
    pub fn new(id: u32) -> Root {
        Root { id, shared: None }
    }
}

// Neither `on_done` nor `on_log`: the build drops their exports, so Envoy does not enter the VM for
// them (Makefile, `UNEXPORTED`). Implementing either means taking it off that list.
impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(shared) = &self.shared {
            let now = hostcalls::now_seconds();
            let woken = keys::on_response(&shared.key_io(), token, num_headers, body_size, now);
            resume(shared, woken);
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
        // The VM's environment, for a shared secret kept out of the policy text.
        let env = |name: &str| hostcalls::environment_variable(name);
        let policy = match crate::config::compile_with(&bytes, &backend, &env) {
            Ok(policy) => policy,
            Err(error) => {
                log::error!("mlgate: invalid configuration: {error}");
                return false;
            }
        };
        let names: Vec<String> = policy.providers.iter().map(|p| p.name.clone()).collect();
        let remote_targets: Vec<Option<String>> = policy
            .providers
            .iter()
            .map(|p| p.remote_keys.as_ref().map(|r| format!("{:?}", r.target)))
            .collect();
        log::info!(
            "mlgate: configured: {} provider(s), {} route(s), mode {:?}, signature backend {}",
            policy.providers.len(),
            policy.routes.len(),
            policy.mode,
            backend.name()
        );
        let decision_histogram = policy.decision_duration_histogram;
        let shared = Rc::new(Shared {
            gate: Gate::new(policy, backend),
            metrics: Metrics::define(&names, backend.uses_host(), decision_histogram),
            fetcher: Fetcher::new(&remote_targets, &names),
            root_id: self.id,
            held: Default::default(),
            body_hold: Default::default(),
            held_for_body: Default::default(),
            started: Default::default(),
            waiting_tick: Default::default(),
        });
        // Ticks refresh remote keys and let go requests held for a body that does not come.
        if hostcalls::set_tick_period(TICK_MILLISECONDS).is_err() {
            log::warn!("mlgate: no timer: remote keys refresh only on demand, and json_body routes send headers first");
            shared
                .body_hold
                .set(crate::body_hold::BodyHold::NotHonoured);
            shared
                .metrics
                .body_hold(crate::body_hold::BodyHold::NotHonoured);
        }
        if remote_targets.iter().any(Option::is_some) {
            // Cold start: fetch now rather than at the first tick.
            let woken = keys::on_tick(
                &shared.key_io(),
                hostcalls::now_seconds(),
                LockHold::Configure,
            );
            resume(&shared, woken);
        }
        self.shared = Some(shared);
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            let now = hostcalls::now_seconds();
            let woken = keys::on_tick(&shared.key_io(), now, LockHold::Tick);
            resume(shared, woken);
            let_go_overdue_body_holds(shared, now);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Request::new(self.shared.clone(), context_id)))
    }
}

/// Decides again, in its own context, each request the key store woke (its keys arrived or
/// will not), then makes the root context effective again.
fn resume(shared: &Shared, woken: Woken) {
    if woken.is_empty() {
        shared.tick_for_waiters();
        return;
    }
    for context_id in woken {
        let Some(state) = shared.take_held(context_id) else {
            continue;
        };
        if hostcalls::set_effective_context(context_id).is_ok() {
            http::resume_after_keys(shared, &state, context_id);
        }
    }
    let _ = hostcalls::set_effective_context(shared.root_id);
    shared.tick_for_waiters();
}

/// Requests held at their headers for a body that has not come while it is not known whether the
/// host delivers bodies then: each goes upstream headers first (see `crate::body_hold`).
fn let_go_overdue_body_holds(shared: &Shared, now: i64) {
    let hold = shared.body_hold.get();
    let overdue: Vec<(u32, StateRef)> = {
        let mut held = shared.held_for_body.borrow_mut();
        let ids: Vec<u32> = held
            .iter()
            .filter(|(_, (since, _))| hold.overdue(*since, now))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| held.remove(&id).map(|(_, state)| (id, state)))
            .collect()
    };
    if overdue.is_empty() {
        return;
    }
    for (context_id, state) in overdue {
        if hostcalls::set_effective_context(context_id).is_ok() {
            http::let_go_headers_first(shared, &state);
        }
    }
    let _ = hostcalls::set_effective_context(shared.root_id);
    shared.tick_for_waiters();
}
