//! Every provider's verification keys, in one place: the set in use, the fetch schedule of a
//! remote provider (`keyring::RemoteKeys`), and the requests waiting for keys, with the rule for
//! whether a request may wait at all.
//!
//! The gate owns the store and reads keys from it; the adapter drives it from host events (a
//! tick, a callout's answer, a key set another VM published) and carries out what it answers —
//! dispatch this fetch, resume these requests — without deciding anything itself.

use std::rc::Rc;

use crate::jwks::KeySet;
use crate::keyring::{FetchRequest, Progress, RemoteKeys};
use crate::policy::Policy;

/// How long a request may wait for keys when its provider has no remote configuration to say
/// (it never waits then; this bounds a bug).
const DEFAULT_WAIT_SECONDS: i64 = 5;

/// One provider's keys.
#[derive(Debug)]
struct ProviderKeys {
    /// The set tokens are verified with now.
    current: Option<Rc<KeySet>>,
    /// How a remote provider's set is kept fresh; `None` for inline keys and shared secrets.
    remote: Option<RemoteKeys>,
    /// Bumped whenever `current` changes: what was verified with an older set is not reused.
    generation: u64,
}

/// A request paused until its provider's keys arrive, by the adapter's id for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiter {
    id: u32,
    provider: usize,
    since: i64,
}

/// May a request that needs keys wait for them?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// No: decide now without them (`keys_unavailable` / `unknown_key`).
    No,
    /// Yes; `refetch` when this request's unknown `kid` is what started a refetch (counted once
    /// per refetch, not per request that joins it).
    Yes { refetch: bool },
}

#[derive(Debug)]
pub struct KeyStore {
    providers: Vec<ProviderKeys>,
    waiting: Vec<Waiter>,
}

impl KeyStore {
    /// The keys a policy starts with: its inline sets, and a schedule for each remote provider.
    pub fn new(policy: &Policy) -> KeyStore {
        let providers = policy
            .providers
            .iter()
            .map(|p| ProviderKeys {
                current: p.initial_keys.clone().map(Rc::new),
                remote: p.remote_keys.clone().map(RemoteKeys::new),
                generation: 0,
            })
            .collect();
        KeyStore {
            providers,
            waiting: Vec::new(),
        }
    }

    /// The set a provider's tokens are verified with now.
    pub fn current(&self, provider: usize) -> Option<Rc<KeySet>> {
        self.providers.get(provider)?.current.clone()
    }

    /// Changes whenever the provider's set does.
    pub fn generation(&self, provider: usize) -> u64 {
        self.providers.get(provider).map_or(0, |p| p.generation)
    }

    pub fn provider_count(&self) -> usize {
        self.providers.len()
    }

    pub fn has_remote(&self) -> bool {
        self.providers.iter().any(|p| p.remote.is_some())
    }

    /// A remote provider's schedule (for reading: its configuration, failures, next attempt).
    pub fn remote(&self, provider: usize) -> Option<&RemoteKeys> {
        self.providers.get(provider)?.remote.as_ref()
    }

    fn remote_mut(&mut self, provider: usize) -> Option<&mut RemoteKeys> {
        self.providers.get_mut(provider)?.remote.as_mut()
    }

    /// The waiting rule. A token's provider has no keys yet (`unknown_kid` false) or lacks the
    /// token's `kid`: it may wait if a fetch is under way or allowed to start now — for an unknown
    /// `kid`, at most one refetch per `min_refresh_interval_seconds`, so forged `kid`s cannot make
    /// the proxy hammer the IdP. Inline keys never wait.
    pub fn may_wait(&mut self, provider: usize, unknown_kid: bool, now: i64) -> Wait {
        let Some(remote) = self.remote_mut(provider) else {
            return Wait::No;
        };
        let joining = remote.in_flight() || remote.refetch_pending();
        let wait = if unknown_kid {
            remote.want_unknown_kid(now)
        } else {
            remote.cold_start_possible(now)
        };
        match wait {
            false => Wait::No,
            true => Wait::Yes {
                refetch: unknown_kid && !joining && remote.refetch_pending(),
            },
        }
    }

    /// Records that request `id` waits for `provider`'s keys.
    pub fn wait(&mut self, id: u32, provider: usize, now: i64) {
        self.waiting.push(Waiter {
            id,
            provider,
            since: now,
        });
    }

    /// Request `id` is gone (the client hung up): it waits no more.
    pub fn forget(&mut self, id: u32) {
        self.waiting.retain(|w| w.id != id);
    }

    /// The requests waiting for `provider`, which now have their answer (keys, or none coming).
    pub fn take_waiting(&mut self, provider: usize) -> Vec<u32> {
        let (woken, still): (Vec<Waiter>, Vec<Waiter>) =
            self.waiting.drain(..).partition(|w| w.provider == provider);
        self.waiting = still;
        woken.into_iter().map(|w| w.id).collect()
    }

    /// The requests that waited longer than a fetch can take — the fetching VM's attempt and
    /// then this one's — with every other request of their providers: decided now, keys or not.
    pub fn take_overdue(&mut self, now: i64) -> Vec<u32> {
        let mut late: Vec<usize> = Vec::new();
        for waiter in &self.waiting {
            let limit = self
                .remote(waiter.provider)
                .map_or(DEFAULT_WAIT_SECONDS, |r| {
                    2 * i64::from(r.config.timeout_ms.div_ceil(1000)) + 3
                });
            if now - waiter.since > limit && !late.contains(&waiter.provider) {
                late.push(waiter.provider);
            }
        }
        late.into_iter()
            .flat_map(|provider| self.take_waiting(provider))
            .collect()
    }

    /// The next fetch for `provider`, if one is due. `may_fetch` is asked only then: whether
    /// this VM wins the right to fetch (the adapter's lock shared with the other VMs), and for
    /// how many seconds; when it does not, the store waits for the winner's result.
    pub fn start_fetch(
        &mut self,
        provider: usize,
        now: i64,
        may_fetch: impl FnOnce(&RemoteKeys) -> bool,
    ) -> Option<FetchRequest> {
        let remote = self.remote_mut(provider)?;
        if !remote.due(now) {
            return None;
        }
        if !may_fetch(remote) {
            // Another VM is fetching; its result arrives through shared data.
            remote.defer(now, 1);
            return None;
        }
        Some(remote.start(now))
    }

    /// The fetch could not even be dispatched.
    pub fn dispatch_failed(&mut self, provider: usize, now: i64, why: &str) -> Option<Progress> {
        Some(self.remote_mut(provider)?.dispatch_failed(now, why))
    }

    /// The answer to `provider`'s fetch (`status` `None`: no answer). A loaded set is in use
    /// from now on.
    pub fn on_response(
        &mut self,
        provider: usize,
        now: i64,
        status: Option<u16>,
        body: &[u8],
    ) -> Option<Progress> {
        let progress = self.remote_mut(provider)?.on_response(now, status, body);
        if progress == Progress::Loaded {
            self.refresh_current(provider, now);
        }
        Some(progress)
    }

    /// A set another VM fetched at `fetched_at`; used if newer than this VM's. Returns whether
    /// the set in use changed.
    pub fn adopt(&mut self, provider: usize, set: KeySet, fetched_at: i64, now: i64) -> bool {
        let before = self.generation(provider);
        if let Some(remote) = self.remote_mut(provider) {
            remote.adopt(set, fetched_at, now);
            self.refresh_current(provider, now);
        }
        self.generation(provider) != before
    }

    /// Withdraws the sets older than their provider's staleness bound (`max_stale_seconds` past
    /// a refresh that never succeeded): their tokens are refused until a refresh succeeds.
    /// Returns the providers withdrawn just now.
    pub fn withdraw_stale(&mut self, now: i64) -> Vec<usize> {
        let mut withdrawn = Vec::new();
        for (index, slot) in self.providers.iter_mut().enumerate() {
            let Some(remote) = &slot.remote else {
                continue;
            };
            if slot.current.is_some() && remote.keys(now).is_none() {
                slot.current = None;
                slot.generation += 1;
                withdrawn.push(index);
            }
        }
        withdrawn
    }

    /// Takes the remote schedule's set as the one in use, if it is another one.
    fn refresh_current(&mut self, provider: usize, now: i64) {
        let Some(slot) = self.providers.get_mut(provider) else {
            return;
        };
        let fresh = slot.remote.as_ref().and_then(|r| r.keys(now)).cloned();
        let same = match (&slot.current, &fresh) {
            (Some(a), Some(b)) => Rc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            slot.current = fresh;
            slot.generation += 1;
        }
    }
}

#[cfg(test)]
mod tests;
