//! The running IdP: its state shared by the server's worker threads, and [`Idp`], the handle that starts
//! it on [`crate::http_server`] and stops it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::keys::{KeyEntry, KeyRing, SigningKey};
use super::personas::persona;
use super::tokens::{MintOptions, Minted};
use crate::http_server::{HttpServer, ReceivedRequest};

/// The IdP's state, shared by its worker threads.
pub(super) struct IdpState {
    pub(super) issuer: OnceLock<String>,
    pub(super) ring: Mutex<KeyRing>,
    /// How long a retired key stays in the JWKS.
    pub(super) grace: Duration,
    pub(super) log: bool,
    /// Until when the key set is unavailable (a simulated outage of the JWKS endpoint: 503).
    pub(super) keys_down_until: Mutex<Option<Instant>>,
}

impl IdpState {
    pub(super) fn issuer(&self) -> &str {
        self.issuer.get().map(String::as_str).unwrap_or("")
    }

    /// Makes the key set endpoints answer 503 for `duration` from now (zero ends an outage).
    pub(super) fn fail_keys_for(&self, duration: Duration) {
        if let Ok(mut until) = self.keys_down_until.lock() {
            *until = Some(Instant::now() + duration);
        }
        if self.log {
            println!("idp: key set unavailable for {}s", duration.as_secs());
        }
    }

    /// Is the key set endpoint in a simulated outage now?
    pub(super) fn keys_down(&self) -> bool {
        self.keys_down_until
            .lock()
            .map(|until| until.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }
}

/// Options for [`Idp::start`].
#[derive(Debug, Clone)]
pub struct IdpOptions {
    /// 127.0.0.1 port; 0 picks a free one.
    pub port: u16,
    /// RSA private key in PEM; a fresh RSA 2048 key when absent.
    pub key_pem: Option<String>,
    /// How long a key stays in the JWKS after a rotation retired it.
    pub grace: Duration,
    /// Print a line per token and rotation (the CLI does; tests don't).
    pub log: bool,
}

impl Default for IdpOptions {
    fn default() -> Self {
        IdpOptions {
            port: 0,
            key_pem: None,
            grace: Duration::from_secs(600),
            log: false,
        }
    }
}

/// A running demo IdP. Stops on drop.
pub struct Idp {
    server: HttpServer,
    state: Arc<IdpState>,
}

impl Idp {
    pub fn start(opts: IdpOptions) -> Result<Idp> {
        let key = match &opts.key_pem {
            Some(pem) => SigningKey::from_pem(pem)?,
            None => SigningKey::generate()?,
        };
        let state = Arc::new(IdpState {
            issuer: OnceLock::new(),
            ring: Mutex::new(KeyRing {
                keys: vec![KeyEntry {
                    key: Arc::new(key),
                    retire_at: None,
                }],
            }),
            grace: opts.grace,
            log: opts.log,
            keys_down_until: Mutex::new(None),
        });
        let handler_state = Arc::clone(&state);
        let server = HttpServer::start(
            "idp",
            opts.port,
            3,
            Arc::new(move |req: &ReceivedRequest| handler_state.handle(req)),
        )?;
        let _ = state.issuer.set(format!("http://{}", server.addr()));
        Ok(Idp { server, state })
    }

    /// The issuer, which is also the base URL: `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> &str {
        self.state.issuer()
    }

    pub fn url(&self) -> &str {
        self.issuer()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The JWKS currently served.
    pub fn jwks(&self) -> Value {
        self.state.jwks()
    }

    /// The `kid` of the current signing key.
    pub fn current_kid(&self) -> Result<String> {
        Ok(self.state.current_key()?.kid().to_string())
    }

    /// A fresh token for a persona with default options.
    pub fn token(&self, persona: &str) -> Result<String> {
        Ok(self.state.mint(persona, &MintOptions::default())?.token)
    }

    pub fn mint(&self, persona: &str, opts: &MintOptions) -> Result<Minted> {
        self.state.mint(persona, opts)
    }

    /// The claims a token for this persona would carry (without signing).
    pub fn claims(&self, persona_name: &str, opts: &MintOptions) -> Result<Value> {
        let p = persona(persona_name).ok_or_else(|| anyhow!("unknown persona {persona_name:?}"))?;
        Ok(self.state.claims(p, opts))
    }

    /// Signs arbitrary claims with the current key.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        self.state.current_key()?.sign(claims)
    }

    /// New signing key; returns (new kid, previous kid). The previous key stays in the JWKS for `grace`
    /// (default: the IdP's).
    pub fn rotate(&self, grace: Option<Duration>) -> Result<(String, String)> {
        self.state.rotate(grace)
    }

    /// Makes the JWKS endpoint answer 503 for `duration` (an outage of the key set; tokens are still
    /// issued).
    pub fn fail_keys_for(&self, duration: Duration) {
        self.state.fail_keys_for(duration)
    }

    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }
}
