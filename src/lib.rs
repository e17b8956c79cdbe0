//! mlgate: enterprise identity in front of machine-learning endpoints, as a proxy-wasm filter.
//!
//! The core (everything but `filter`) is pure Rust: it never calls the host and never panics.
//! `filter` is the one adapter that talks to the proxy-wasm host; it is compiled for wasm32 only,
//! so the core is unit-tested natively with `cargo test`.

pub mod audit;
pub mod body_hold;
pub mod bytes;
pub mod cache;
pub mod catalogue;
pub mod claims;
pub mod config;
pub mod crypto;
pub mod decision;
pub mod gate;
pub mod json_path;
pub mod jwks;
pub mod keyring;
pub mod keystore;
pub mod max_tokens;
pub mod model;
pub mod payload;
#[cfg(feature = "playground")]
pub mod playground;
pub mod policy;
pub mod strict_json;
pub mod token;
pub mod trace;
pub mod verify;

#[cfg(test)]
mod testing;

// The browser's build has no proxy-wasm host.
#[cfg(not(all(target_arch = "wasm32", feature = "playground")))]
mod filter;
