//! The verified-token cache: a token whose signature and claims were verified once is not
//! verified again until it expires.
//!
//! Bounded (least recently used entries go first), keyed by a randomly keyed SipHash of the whole
//! token and confirmed by comparing the token in full — a hash collision is a miss, never another
//! caller's identity. SipHash rather than SHA-256: a cache hit must cost next to nothing, and
//! SHA-256 of a 1–2 KB token inside the VM costs more than everything else a hit does. An entry lives until the token's
//! `exp` (plus the provider's clock skew), and dies with its provider's key set: every key-set
//! change bumps the provider's generation, and entries of an older generation are misses.

use std::num::NonZeroUsize;
use std::rc::Rc;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;

use lru::LruCache;

use crate::claims::Identity;

/// Default number of entries per VM.
pub const DEFAULT_ENTRIES: usize = 10_000;

/// Longest an entry lives when its token has no `exp` (only possible with `require_exp: false`).
pub const MAX_TTL_WITHOUT_EXP: i64 = 300;

#[derive(Debug)]
struct Entry {
    token: Box<[u8]>,
    identity: Rc<Identity>,
    /// Unix seconds after which the entry is dead.
    expires_at: i64,
    generation: u64,
}

/// Verified identities by token digest.
pub struct TokenCache {
    entries: Option<LruCache<u64, Entry>>,
    hasher: RandomState,
    /// Key-set generation per provider.
    generations: Vec<u64>,
}

impl TokenCache {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize, providers: usize) -> TokenCache {
        TokenCache {
            entries: NonZeroUsize::new(capacity).map(LruCache::new),
            hasher: RandomState::new(),
            generations: vec![0; providers],
        }
    }

    fn key(&self, token: &[u8]) -> u64 {
        self.hasher.hash_one(token)
    }

    /// The identity verified for this token, if still valid at `now`.
    pub fn get(&mut self, token: &[u8], now: i64) -> Option<Rc<Identity>> {
        let key = self.key(token);
        let entries = self.entries.as_mut()?;
        let entry = entries.get(&key)?;
        if *entry.token != *token {
            return None;
        }
        let current = self.generations.get(entry.identity.provider).copied();
        if now < entry.expires_at && current == Some(entry.generation) {
            return Some(entry.identity.clone());
        }
        entries.pop(&key);
        None
    }

    /// Remembers a verified identity. `exp` is the token's, `skew` the provider's leeway.
    pub fn insert(
        &mut self,
        token: &[u8],
        identity: Rc<Identity>,
        exp: Option<i64>,
        skew: i64,
        now: i64,
    ) {
        let key = self.key(token);
        let Some(entries) = self.entries.as_mut() else {
            return;
        };
        let Some(generation) = self.generations.get(identity.provider).copied() else {
            return;
        };
        let expires_at = match exp {
            Some(exp) => exp.saturating_add(skew),
            None => now.saturating_add(MAX_TTL_WITHOUT_EXP),
        };
        entries.put(
            key,
            Entry {
                token: token.into(),
                identity,
                expires_at,
                generation,
            },
        );
    }

    /// A provider's key set changed: its cached identities are no longer trusted.
    pub fn flush_provider(&mut self, provider: usize) {
        if let Some(generation) = self.generations.get_mut(provider) {
            *generation = generation.wrapping_add(1);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, LruCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Caller;

    fn identity(provider: usize) -> Rc<Identity> {
        Rc::new(Identity {
            provider,
            principal: Some("p".into()),
            tenant: None,
            app: None,
            caller: Caller::User,
            groups: vec![],
            roles: vec![],
            scopes: vec![],
            groups_overage: false,
            jti: None,
            extra: vec![],
        })
    }

    #[test]
    fn hit_until_expiry_plus_skew() {
        let mut cache = TokenCache::new(10, 1);
        cache.insert(b"token-1", identity(0), Some(100), 60, 0);
        assert!(cache.get(b"token-1", 159).is_some());
        assert!(cache.get(b"token-1", 160).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped");
    }

    #[test]
    fn key_set_change_flushes_the_provider_only() {
        let mut cache = TokenCache::new(10, 2);
        cache.insert(b"token-1", identity(0), Some(100), 0, 0);
        cache.insert(b"token-2", identity(1), Some(100), 0, 0);
        cache.flush_provider(0);
        assert!(cache.get(b"token-1", 1).is_none());
        assert!(cache.get(b"token-2", 1).is_some());
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut cache = TokenCache::new(2, 1);
        cache.insert(b"token-1", identity(0), Some(100), 0, 0);
        cache.insert(b"token-2", identity(0), Some(100), 0, 0);
        assert!(cache.get(b"token-1", 1).is_some());
        cache.insert(b"token-3", identity(0), Some(100), 0, 0);
        assert!(cache.get(b"token-2", 1).is_none());
        assert!(cache.get(b"token-1", 1).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn token_without_exp_lives_briefly() {
        let mut cache = TokenCache::new(10, 1);
        cache.insert(b"token-1", identity(0), None, 60, 1000);
        assert!(cache
            .get(b"token-1", 1000 + MAX_TTL_WITHOUT_EXP - 1)
            .is_some());
        assert!(cache.get(b"token-1", 1000 + MAX_TTL_WITHOUT_EXP).is_none());
    }

    #[test]
    fn a_different_token_never_gets_a_cached_identity() {
        let mut cache = TokenCache::new(10, 1);
        cache.insert(b"token-1", identity(0), Some(100), 0, 0);
        assert!(cache.get(b"token-2", 1).is_none());
        assert!(cache.get(b"token-1 ", 1).is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let mut cache = TokenCache::new(0, 1);
        cache.insert(b"token-1", identity(0), Some(100), 0, 0);
        assert!(cache.get(b"token-1", 1).is_none());
    }
}
