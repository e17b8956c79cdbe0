//! Minting tokens: the Entra-shaped claims of a persona, signed with the current key.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use rand::RngCore as _;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::keys::b64;
use super::personas::{persona, Caller, Persona, AUDIENCE};
use super::server::IdpState;

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// First 16 hex digits of the SHA-256 of a token: what logs carry instead of the token.
pub fn token_fingerprint(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Options for one token.
#[derive(Debug, Clone, Default)]
pub struct MintOptions {
    /// Lifetime in seconds from now (default 3600); negative gives an expired token.
    pub expires_in: Option<i64>,
    /// `nbf` in seconds from now (default: now).
    pub not_before_in: Option<i64>,
    /// Audience override (default [`AUDIENCE`]).
    pub audience: Option<String>,
    /// Extra claims merged over the persona's (a `null` value removes the claim).
    pub extra: Option<Map<String, Value>>,
}

/// A minted token.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    pub kid: String,
    pub exp: i64,
}

impl IdpState {
    pub(super) fn claims(&self, p: &Persona, opts: &MintOptions) -> Value {
        let now = now_secs();
        let exp = now + opts.expires_in.unwrap_or(3600);
        let nbf = now + opts.not_before_in.unwrap_or(0);
        let aud = opts
            .audience
            .clone()
            .unwrap_or_else(|| AUDIENCE.to_string());
        let mut uti = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut uti);
        // Entra's `sub` is pairwise (per application); derive a stable one.
        let sub = b64(&Sha256::digest(format!("{}|{aud}", p.oid).as_bytes()))
            .chars()
            .take(43)
            .collect::<String>();
        let mut c = json!({
            "aud": aud,
            "iss": self.issuer(),
            "iat": now,
            "nbf": nbf,
            "exp": exp,
            "azp": p.app,
            "azpacr": if p.caller == Caller::App { "1" } else { "0" },
            "oid": p.oid,
            "sub": sub,
            "tid": p.tenant,
            "uti": b64(&uti),
            "ver": "2.0",
        });
        if let Value::Object(m) = &mut c {
            match p.caller {
                Caller::User => {
                    m.insert("name".into(), json!(p.display_name));
                    m.insert("preferred_username".into(), json!(p.username));
                    if !p.scopes.is_empty() {
                        m.insert("scp".into(), json!(p.scopes.join(" ")));
                    }
                }
                Caller::App => {
                    m.insert("idtyp".into(), json!("app"));
                }
            }
            if !p.roles.is_empty() {
                m.insert("roles".into(), json!(p.roles));
            }
            if p.groups_overage {
                m.insert("_claim_names".into(), json!({ "groups": "src1" }));
                m.insert(
                    "_claim_sources".into(),
                    json!({ "src1": { "endpoint": format!(
                        "https://graph.microsoft.com/v1.0/users/{}/getMemberObjects", p.oid) } }),
                );
            } else if !p.groups.is_empty() {
                m.insert("groups".into(), json!(p.groups));
            }
            if let Some(extra) = &opts.extra {
                for (k, v) in extra {
                    if v.is_null() {
                        m.remove(k);
                    } else {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        c
    }

    pub(super) fn mint(&self, persona_name: &str, opts: &MintOptions) -> Result<Minted> {
        let p = persona(persona_name)
            .ok_or_else(|| anyhow!("unknown persona {persona_name:?} (see /personas)"))?;
        let claims = self.claims(p, opts);
        let key = self.current_key()?;
        let token = key.sign(&claims)?;
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if self.log {
            println!(
                "idp: minted token for {} (kid={}, sha256={}, exp in {}s)",
                p.name,
                key.kid(),
                token_fingerprint(&token),
                exp - now_secs()
            );
        }
        Ok(Minted {
            token,
            kid: key.kid().to_string(),
            exp,
        })
    }
}
