//! The demo identity provider: `mlgate-harness idp --port 9400 [--key FILE.pem] [--grace-seconds N]`.
//!
//! A loopback-only, Entra-ID-shaped token issuer for the demo and the end-to-end tests. Its issuer is
//! its own base URL (`http://127.0.0.1:<port>`), so `{iss}/.well-known/openid-configuration` answers
//! as it does with a real IdP.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | OIDC discovery: issuer, jwks_uri, token_endpoint, ... |
//! | `GET /jwks` (also `/keys`, `/discovery/v2.0/keys`) | the key set: the signing key, plus retired keys during their grace period |
//! | `GET /token?persona=alice` (or `POST /token`, form or JSON) | a fresh RS256 access token for a persona; options below |
//! | `GET /personas` | the personas, their tenant, groups (IDs and names), roles, scopes |
//! | `POST /admin/rotate[?grace_seconds=N]` | new signing key (new `kid`); the previous one stays in the JWKS for the grace period |
//! | `POST /admin/outage?seconds=N` | the key set endpoints answer 503 for N seconds (a JWKS outage; tokens are still issued) |
//! | `GET /healthz` | liveness |
//!
//! Token options (query or body): `expires_in` (seconds, may be negative for an expired token),
//! `not_before_in` (seconds from now), `aud` (audience override), `format=raw` (the bare token as
//! text/plain instead of the OAuth JSON answer).
//!
//! Tokens are never logged; the log carries the first 16 hex digits of their SHA-256.
//!
//! Where things are:
//! - `personas.rs`: the demo directory: tenants, groups, applications, [`PERSONAS`].
//! - `keys.rs`: [`SigningKey`], the ring of current and retired keys, the JWKS, rotation.
//! - `tokens.rs`: minting a persona's token ([`MintOptions`], [`Minted`]).
//! - `routes.rs`: the HTTP endpoints above.
//! - `server.rs`: [`Idp`], the running IdP, and its shared state.
//! - `cli.rs`: `mlgate-harness idp`.

mod cli;
mod keys;
mod personas;
mod routes;
mod server;
mod tokens;

#[cfg(test)]
mod tests;

pub use cli::cli;
pub use keys::SigningKey;
pub use personas::{
    persona, Caller, Persona, AUDIENCE, GROUP_CONTRACTORS, GROUP_LLM_USERS, GROUP_ML_READERS,
    GROUP_ML_SCIENTISTS, GROUP_NAMES, OTHER_TENANT_ID, PERSONAS, PORTAL_APP_ID, SCORER_APP_ID,
    TENANT_ID,
};
pub use server::{Idp, IdpOptions};
pub use tokens::{token_fingerprint, MintOptions, Minted};
