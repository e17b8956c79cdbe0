//! Who the caller is: a token's identity, from the verified-token cache or verified afresh —
//! issuer → provider, the route's and the provider's admission, claims, keys (or a wait for
//! them), signature.

use std::rc::Rc;

use super::Gate;
use crate::audit::{token_fingerprint, Audit, CallerRecord};
use crate::claims::{self, Identity};
use crate::decision::Reason;
use crate::keystore::Wait;
use crate::policy::Route;
use crate::token;
use crate::trace::{Stage, TokenStep};
use crate::verify::{self, dangerous};

/// A verified token's identity and the headers it forwards, rendered once: what the
/// verified-token cache keeps.
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub identity: Rc<Identity>,
    pub(super) headers: Rc<[(String, String)]>,
    /// The token's fingerprint ([`crate::audit::fingerprint`]), computed once per verification
    /// (a cache hit does not hash the token again), unless the policy's `audit` is `off`.
    pub(super) fingerprint: Option<Rc<str>>,
    /// The caller's fields of the decision record, written once per verification.
    pub(super) record: CallerRecord,
}

/// Why authentication stopped.
pub(super) enum AuthError {
    Refuse(Reason),
    NeedKeys { provider: usize, refetch: bool },
}

impl From<Reason> for AuthError {
    fn from(reason: Reason) -> AuthError {
        AuthError::Refuse(reason)
    }
}

impl Gate {
    /// The token's identity: from the cache, or verified (and then cached). `audit` learns which.
    pub(super) fn authenticate(
        &self,
        route: &Route,
        found: &token::FoundToken<'_>,
        (now, may_wait): (i64, bool),
        audit: &mut Audit,
    ) -> Result<Authenticated, AuthError> {
        let cached = self.cache.borrow_mut().get(found.token.as_bytes(), now);
        audit.token_cached = Some(cached.is_some());
        if let Some(caller) = cached {
            self.note(|t| {
                t.stage = Stage::Cached;
                t.provider = Some(caller.identity.provider);
            });
            self.admit(route, caller.identity.provider, found.source)?;
            return Ok(caller);
        }
        // Only now: a hit is a token equal to a verified one, which holds no `,`.
        if found.is_joined() {
            self.note(|t| t.token = TokenStep::Refused(Reason::MultipleTokens));
            return Err(Reason::MultipleTokens.into());
        }
        let verified = self.verify_token(route, found, now, may_wait);
        self.note(|t| match &verified {
            Ok(_) => t.stage = Stage::Verified,
            Err(AuthError::Refuse(reason)) => t.refused = Some(*reason),
            Err(AuthError::NeedKeys { .. }) => {}
        });
        let (identity, exp) = verified?;
        let provider = identity.provider;
        let fingerprint: Option<Rc<str>> = self
            .fingerprints()
            .then(|| token_fingerprint(&found.token).into());
        let record = CallerRecord::new(
            self.provider_names.get(provider).map(|p| &**p),
            &identity,
            fingerprint.as_deref(),
        );
        let caller = Authenticated {
            headers: self.identity_headers(&identity).into(),
            identity: Rc::new(identity),
            fingerprint,
            record,
        };
        let skew = self
            .policy
            .providers
            .get(provider)
            .map_or(0, |p| p.rules.clock_skew_seconds);
        self.cache.borrow_mut().insert(
            found.token.as_bytes(),
            caller.clone(),
            provider,
            (exp, skew),
            now,
        );
        Ok(caller)
    }

    /// Whether this route takes tokens of this provider, carried in this source.
    fn admit(&self, route: &Route, provider: usize, source: usize) -> Result<(), Reason> {
        if let Some(allowed) = &route.providers {
            if !allowed.contains(&provider) {
                return Err(Reason::UnknownIssuer);
            }
        }
        let provider = self
            .policy
            .providers
            .get(provider)
            .ok_or(Reason::UnknownIssuer)?;
        if !provider.sources.contains(&source) {
            return Err(Reason::TokenSourceNotAllowed);
        }
        Ok(())
    }

    fn verify_token(
        &self,
        route: &Route,
        found: &token::FoundToken<'_>,
        now: i64,
        may_wait: bool,
    ) -> Result<(Identity, Option<i64>), AuthError> {
        let peeked = dangerous::peek_remembering(&found.token, &mut self.last_header.borrow_mut())?;
        self.note(|t| {
            t.stage = Stage::Read;
            t.presented = Some(Box::new(dangerous::seen(&peeked)));
        });
        let iss = peeked.issuer()?;
        let provider_index =
            verify::select_provider(self.policy.providers.iter().map(|p| &p.rules), iss)
                .ok_or(Reason::UnknownIssuer)?;
        let provider = self
            .policy
            .providers
            .get(provider_index)
            .ok_or(Reason::UnknownIssuer)?;
        self.note(|t| {
            t.stage = Stage::Provider;
            t.provider = Some(provider_index);
            if let Some(presented) = t.presented.as_deref_mut() {
                presented.tenant = dangerous::raw_claim(&peeked, &provider.rules.tenant_claim);
            }
        });
        self.admit(route, provider_index, found.source)?;
        self.note(|t| t.stage = Stage::Admitted);
        // Cheap checks before keys are even looked at: a forged token with a made-up kid and
        // wrong claims must not trigger a refetch.
        let checked = verify::check_claims(peeked, &provider.rules, now)?;
        self.note(|t| t.stage = Stage::Claims);
        let keys = self.keys(provider_index);
        // Only a remote provider's request can wait (the key store says so too), and only then is
        // the key selection worth running twice (it runs again in the signature step).
        if may_wait && provider.remote_keys.is_some() {
            let wanted = match &keys {
                None => Some(false),
                Some(set) => match set.select(checked.kid(), checked.alg()) {
                    crate::jwks::Selection::UnknownKid => Some(true),
                    _ => None,
                },
            };
            if let Some(unknown_kid) = wanted {
                let wait = self
                    .keys
                    .borrow_mut()
                    .may_wait(provider_index, unknown_kid, now);
                if let Wait::Yes { refetch } = wait {
                    return Err(AuthError::NeedKeys {
                        provider: provider_index,
                        refetch,
                    });
                }
            }
        }
        let Some(keys) = keys else {
            return Err(Reason::KeysUnavailable.into());
        };
        self.note(|t| {
            t.stage = Stage::Keys;
            t.checker = Some(self.backend.checker(checked.alg()));
        });
        let verified = checked.verify_signature(&provider.rules, &keys, &self.backend)?;
        let identity = claims::identity(
            provider_index,
            verified.claims(),
            &provider.claims,
            &provider.group_names,
            &self.policy.extra_claims,
        );
        Ok((identity, verified.exp()))
    }
}
