//! The verified-token cache: a token whose signature and claims were verified once is not
//! verified again until it expires.
//!
//! Bounded (least recently used entries go first), keyed by the token's length and last
//! (signature) bytes, and confirmed by comparing the token in full — a collision is a miss, never
//! another caller's identity. Not SHA-256 of the token: a cache hit must cost next to nothing, and
//! SHA-256 of a 1–2 KB token inside the VM costs more than everything else a hit does. An entry
//! lives until the token's `exp` (plus the provider's clock skew), and dies with its provider's key
//! set: every key-set change bumps the provider's generation, and entries of an older generation
//! are misses.
//!
//! A token enters on its second verification, not its first (TinyLFU's "doorkeeper"): the first
//! only leaves its key in a fixed table of one word per slot. A caller reuses its token for up to
//! an hour, so this costs one more verification per token; in return, tokens sent once (a batch
//! job minting one per call, a flood of distinct valid tokens) neither evict the tokens that are
//! reused nor fill the VM's memory: `make bench`'s 100,000 distinct tokens left Envoy at 102 MiB
//! instead of 118. Speed is the same either way (88.8 µs of Envoy CPU per cold token with and
//! without, side by side), and a cycle of tokens longer than the cache, which a plain LRU never
//! hits, becomes partly hits.

use lru::LruCache;

use crate::bytes;

/// How much of a token's end is hashed for its map key.
const KEY_TAIL_BYTES: usize = 16;

/// Default number of entries per VM.
pub const DEFAULT_ENTRIES: usize = 10_000;

/// Longest an entry lives when its token has no `exp` (only possible with `require_exp: false`).
pub const MAX_TTL_WITHOUT_EXP: i64 = 300;

#[derive(Debug)]
struct Entry<V> {
    token: Box<[u8]>,
    value: V,
    provider: usize,
    /// Unix seconds after which the entry is dead.
    expires_at: i64,
    generation: u64,
}

/// What was verified for a token (the gate keeps its identity and rendered headers), by token.
pub struct TokenCache<V> {
    /// Grows as tokens arrive rather than reserving `capacity` slots up front: a VM that never
    /// serves requests (Envoy's main thread) keeps it empty.
    entries: LruCache<u64, Entry<V>>,
    capacity: usize,
    /// Key-set generation per provider.
    generations: Vec<u64>,
    /// The doorkeeper: keys of verified tokens not cached yet, one per slot (a power of two at
    /// least `capacity`, allocated with the first verified token). A newer key takes the slot, so
    /// a token whose key was pushed out waits for one more verification; a key equal by chance
    /// admits a token early, which is harmless: only verified tokens are offered, and an entry is
    /// still confirmed by comparing the whole token.
    seen_once: Vec<u64>,
}

impl<V: Clone> TokenCache<V> {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize, providers: usize) -> TokenCache<V> {
        TokenCache {
            entries: LruCache::unbounded(),
            capacity,
            generations: vec![0; providers],
            seen_once: Vec::new(),
        }
    }

    /// The map key: the token's length and last bytes, which are signature bytes — unpredictable
    /// for every token in the cache, since only verified tokens enter it. Equal keys are
    /// confirmed by comparing whole tokens, so a collision (or a forgery that copies a cached
    /// token's tail) only costs a miss. No keyed hash: SipHash inside the VM cost more than the
    /// rest of a cache hit.
    fn key(token: &[u8]) -> u64 {
        let tail = token
            .get(token.len().saturating_sub(KEY_TAIL_BYTES)..)
            .unwrap_or(token);
        let mix = |key: u64, word: u64| {
            (key ^ word)
                .rotate_left(27)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        };
        let mut key = (token.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Whole words straight from the bytes; only a token shorter than the tail leaves a rest.
        let (words, rest) = tail.as_chunks::<8>();
        for word in words {
            key = mix(key, u64::from_le_bytes(*word));
        }
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            for (slot, byte) in word.iter_mut().zip(rest) {
                *slot = *byte;
            }
            key = mix(key, u64::from_le_bytes(word));
        }
        key
    }

    /// What was verified for this token, if still valid at `now`.
    pub fn get(&mut self, token: &[u8], now: i64) -> Option<V> {
        if self.entries.is_empty() {
            return None;
        }
        let key = Self::key(token);
        let entry = self.entries.get(&key)?;
        if !bytes::same_bytes(&entry.token, token) {
            return None;
        }
        let current = self.generations.get(entry.provider).copied();
        if now < entry.expires_at && current == Some(entry.generation) {
            return Some(entry.value.clone());
        }
        self.entries.pop(&key);
        None
    }

    /// Offers what was verified for a token of `provider`: kept when the token was verified
    /// before (see the module's note on admission); returns whether it was. `exp` is the token's,
    /// `skew` the provider's leeway.
    pub fn insert(
        &mut self,
        token: &[u8],
        value: V,
        provider: usize,
        (exp, skew): (Option<i64>, i64),
        now: i64,
    ) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let Some(generation) = self.generations.get(provider).copied() else {
            return false;
        };
        let key = Self::key(token);
        if !self.verified_before(key) {
            return false;
        }
        let expires_at = match exp {
            Some(exp) => exp.saturating_add(skew),
            None => now.saturating_add(MAX_TTL_WITHOUT_EXP),
        };
        self.entries.put(
            key,
            Entry {
                token: token.into(),
                value,
                provider,
                expires_at,
                generation,
            },
        );
        while self.entries.len() > self.capacity {
            self.entries.pop_lru();
        }
        true
    }

    /// Whether a verified token with this key was offered before; if not, its key is recorded.
    fn verified_before(&mut self, key: u64) -> bool {
        if self.seen_once.is_empty() {
            self.seen_once = vec![0; self.capacity.next_power_of_two()];
        }
        // The key's high half: its low bits are those of a product, the least mixed.
        let slot = (key >> 32) as usize & self.seen_once.len().wrapping_sub(1);
        match self.seen_once.get_mut(slot) {
            Some(seen) if *seen == key => true,
            Some(seen) => {
                *seen = key;
                false
            }
            None => true,
        }
    }

    /// A provider's key set changed: what was verified with the old set is no longer trusted.
    pub fn flush_provider(&mut self, provider: usize) {
        if let Some(generation) = self.generations.get_mut(provider) {
            *generation = generation.wrapping_add(1);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached value names its provider, as the gate's does.
    fn identity(provider: usize) -> usize {
        provider
    }

    /// A token verified twice: what it takes to be kept.
    fn offer_twice<V: Clone>(
        cache: &mut TokenCache<V>,
        token: &[u8],
        value: V,
        provider: usize,
        exp: (Option<i64>, i64),
        now: i64,
    ) {
        cache.insert(token, value.clone(), provider, exp, now);
        cache.insert(token, value, provider, exp, now);
    }

    #[test]
    fn a_token_is_kept_on_its_second_verification() {
        let mut cache = TokenCache::<usize>::new(10, 1);
        assert!(!cache.insert(b"token-1", identity(0), 0, (Some(100), 0), 0));
        assert!(cache.get(b"token-1", 1).is_none());
        assert!(cache.insert(b"token-1", identity(0), 0, (Some(100), 0), 0));
        assert_eq!(cache.get(b"token-1", 1), Some(0));
    }

    #[test]
    fn tokens_verified_once_never_push_out_a_reused_one() {
        let mut cache = TokenCache::<usize>::new(2, 1);
        offer_twice(&mut cache, b"reused", identity(0), 0, (Some(100), 0), 0);
        for n in 0..1000 {
            let once = format!("once-{n}");
            assert!(!cache.insert(once.as_bytes(), identity(0), 0, (Some(100), 0), 0));
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.get(b"reused", 1).is_some());
    }

    #[test]
    fn a_token_whose_first_sighting_was_pushed_out_waits_one_more_verification() {
        // One slot: every other token's first sighting takes it.
        let mut cache = TokenCache::<usize>::new(1, 1);
        assert!(!cache.insert(b"token-1", identity(0), 0, (Some(100), 0), 0));
        assert!(!cache.insert(b"token-2", identity(0), 0, (Some(100), 0), 0));
        assert!(!cache.insert(b"token-1", identity(0), 0, (Some(100), 0), 0));
        assert!(cache.insert(b"token-1", identity(0), 0, (Some(100), 0), 0));
        assert!(cache.get(b"token-1", 1).is_some());
    }

    #[test]
    fn hit_until_expiry_plus_skew() {
        let mut cache = TokenCache::<usize>::new(10, 1);
        offer_twice(&mut cache, b"token-1", identity(0), 0, (Some(100), 60), 0);
        assert!(cache.get(b"token-1", 159).is_some());
        assert!(cache.get(b"token-1", 160).is_none());
        assert!(cache.is_empty(), "an expired entry is dropped");
    }

    #[test]
    fn key_set_change_flushes_the_provider_only() {
        let mut cache = TokenCache::<usize>::new(10, 2);
        offer_twice(&mut cache, b"token-1", identity(0), 0, (Some(100), 0), 0);
        offer_twice(&mut cache, b"token-2", identity(1), 1, (Some(100), 0), 0);
        cache.flush_provider(0);
        assert!(cache.get(b"token-1", 1).is_none());
        assert!(cache.get(b"token-2", 1).is_some());
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut cache = TokenCache::<usize>::new(2, 1);
        offer_twice(&mut cache, b"token-1", identity(0), 0, (Some(100), 0), 0);
        offer_twice(&mut cache, b"token-2", identity(0), 0, (Some(100), 0), 0);
        assert!(cache.get(b"token-1", 1).is_some());
        offer_twice(&mut cache, b"token-3", identity(0), 0, (Some(100), 0), 0);
        assert!(cache.get(b"token-2", 1).is_none());
        assert!(cache.get(b"token-1", 1).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn token_without_exp_lives_briefly() {
        let mut cache = TokenCache::<usize>::new(10, 1);
        offer_twice(&mut cache, b"token-1", identity(0), 0, (None, 60), 1000);
        assert!(cache
            .get(b"token-1", 1000 + MAX_TTL_WITHOUT_EXP - 1)
            .is_some());
        assert!(cache.get(b"token-1", 1000 + MAX_TTL_WITHOUT_EXP).is_none());
    }

    #[test]
    fn a_different_token_never_gets_a_cached_identity() {
        let mut cache = TokenCache::<usize>::new(10, 1);
        offer_twice(&mut cache, b"token-1", identity(0), 0, (Some(100), 0), 0);
        assert!(cache.get(b"token-2", 1).is_none());
        assert!(cache.get(b"token-1 ", 1).is_none());
    }

    #[test]
    fn tokens_differing_anywhere_are_different() {
        let token: Vec<u8> = (0..203u8).collect();
        let mut cache = TokenCache::<usize>::new(10, 1);
        offer_twice(&mut cache, &token, identity(0), 0, (Some(100), 0), 0);
        assert!(cache.get(&token, 1).is_some());
        for at in [0, 7, 8, 100, 186, 195, 196, 202] {
            let mut other = token.clone();
            other[at] ^= 1;
            assert!(cache.get(&other, 1).is_none(), "byte {at}");
        }
        assert!(cache.get(&token[..202], 1).is_none());
    }

    #[test]
    fn tokens_sharing_their_tail_are_told_apart() {
        let mut cache = TokenCache::<usize>::new(10, 1);
        let tail = "x".repeat(KEY_TAIL_BYTES);
        let (one, two) = (format!("a.b.{tail}"), format!("c.d.{tail}"));
        offer_twice(&mut cache, one.as_bytes(), 1, 0, (Some(100), 0), 0);
        assert_eq!(cache.get(two.as_bytes(), 1), None);
        offer_twice(&mut cache, two.as_bytes(), 2, 0, (Some(100), 0), 0);
        assert_eq!(cache.get(two.as_bytes(), 1), Some(2));
        assert_eq!(
            cache.get(one.as_bytes(), 1),
            None,
            "replaced under the same key"
        );
    }

    #[test]
    fn zero_capacity_disables() {
        let mut cache = TokenCache::<usize>::new(0, 1);
        offer_twice(&mut cache, b"token-1", identity(0), 0, (Some(100), 0), 0);
        assert!(cache.get(b"token-1", 1).is_none());
    }
}
