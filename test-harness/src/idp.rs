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
//! | `GET /healthz` | liveness |
//!
//! Token options (query or body): `expires_in` (seconds, may be negative for an expired token),
//! `not_before_in` (seconds from now), `aud` (audience override), `format=raw` (the bare token as
//! text/plain instead of the OAuth JSON answer).
//!
//! Tokens are never logged; the log carries the first 16 hex digits of their SHA-256.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use rand::RngCore as _;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use rsa::traits::PublicKeyParts as _;
use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::backend::{parse_flags, parse_query, stop_signal, HttpServer, Request, Response};
use crate::mint::TestKey;

/// The audience of every demo token (the "ML scoring" API's application ID URI).
pub const AUDIENCE: &str = "api://ml-scoring";
/// The demo organisation's tenant (`tid`).
pub const TENANT_ID: &str = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7";
/// Another organisation's tenant: its users must not get in.
pub const OTHER_TENANT_ID: &str = "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a";

/// Entra group object IDs of the demo directory, and the names rules use.
pub const GROUP_ML_SCIENTISTS: &str = "b7e4c1a2-3f5d-4e6a-8b9c-0d1e2f3a4b5c";
pub const GROUP_ML_READERS: &str = "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f";
pub const GROUP_CONTRACTORS: &str = "d4e5f6a7-b8c9-4d0e-8f1a-2b3c4d5e6f70";
pub const GROUP_LLM_USERS: &str = "e6f7a8b9-c0d1-4e2f-9a3b-4c5d6e7f8091";

/// Group ID → name, as in `filters/demo.json`'s `group_names`.
pub const GROUP_NAMES: &[(&str, &str)] = &[
    (GROUP_ML_SCIENTISTS, "ml-scientists"),
    (GROUP_ML_READERS, "ml-readers"),
    (GROUP_CONTRACTORS, "contractors"),
    (GROUP_LLM_USERS, "llm-users"),
];

/// The client application users sign in with (their tokens' `azp`).
pub const PORTAL_APP_ID: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
/// The scoring service principal's application (client) ID.
pub const SCORER_APP_ID: &str = "9c8b7a6f-5e4d-4c3b-a291-80f7e6d5c4b3";

/// What kind of caller a persona is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    User,
    App,
}

/// A named identity the demo IdP mints tokens for.
#[derive(Debug, Clone)]
pub struct Persona {
    pub name: &'static str,
    pub description: &'static str,
    pub caller: Caller,
    pub tenant: &'static str,
    /// Entra object ID (`oid`): the principal mlgate forwards.
    pub oid: &'static str,
    /// Client application (`azp`).
    pub app: &'static str,
    pub display_name: &'static str,
    pub username: &'static str,
    /// Group object IDs (`groups`).
    pub groups: &'static [&'static str],
    /// App roles (`roles`).
    pub roles: &'static [&'static str],
    /// Delegated scopes (`scp`, space-separated), users only.
    pub scopes: &'static [&'static str],
    /// Too many groups: `_claim_names` / `_claim_sources` instead of `groups`.
    pub groups_overage: bool,
}

impl Persona {
    /// The names of its groups, as mlgate forwards them (`group_names` of the demo config).
    pub fn group_names(&self) -> Vec<&'static str> {
        self.groups
            .iter()
            .map(|g| {
                GROUP_NAMES
                    .iter()
                    .find(|(id, _)| id == g)
                    .map(|(_, n)| *n)
                    .unwrap_or(g)
            })
            .collect()
    }
}

/// The demo personas.
pub const PERSONAS: &[Persona] = &[
    Persona {
        name: "alice",
        description: "data scientist (user) in ml-scientists and llm-users",
        caller: Caller::User,
        tenant: TENANT_ID,
        oid: "a11ce000-0000-4000-8000-00000000a11c",
        app: PORTAL_APP_ID,
        display_name: "Alice Analyst",
        username: "alice@contoso.example",
        groups: &[GROUP_ML_SCIENTISTS, GROUP_LLM_USERS],
        roles: &[],
        scopes: &["user_impersonation"],
        groups_overage: false,
    },
    Persona {
        name: "bob",
        description: "reader (user) in ml-readers, scope Models.Read only",
        caller: Caller::User,
        tenant: TENANT_ID,
        oid: "b0b00000-0000-4000-8000-000000000b0b",
        app: PORTAL_APP_ID,
        display_name: "Bob Reader",
        username: "bob@contoso.example",
        groups: &[GROUP_ML_READERS],
        roles: &[],
        scopes: &["Models.Read"],
        groups_overage: false,
    },
    Persona {
        name: "carl",
        description: "contractor (user) in contractors and ml-scientists: no finance-* models",
        caller: Caller::User,
        tenant: TENANT_ID,
        oid: "ca410000-0000-4000-8000-0000000ca410",
        app: PORTAL_APP_ID,
        display_name: "Carl Contractor",
        username: "carl@contoso.example",
        groups: &[GROUP_CONTRACTORS, GROUP_ML_SCIENTISTS],
        roles: &[],
        scopes: &["user_impersonation"],
        groups_overage: false,
    },
    Persona {
        name: "scorer",
        description: "service principal (app) with app role Scoring.Invoke",
        caller: Caller::App,
        tenant: TENANT_ID,
        oid: "5c0e0000-0000-4000-8000-000000005c0e",
        app: SCORER_APP_ID,
        display_name: "",
        username: "",
        groups: &[],
        roles: &["Scoring.Invoke"],
        scopes: &[],
        groups_overage: false,
    },
    Persona {
        name: "carol",
        description:
            "user in too many groups: Entra's groups overage (_claim_names) instead of groups",
        caller: Caller::User,
        tenant: TENANT_ID,
        oid: "ca401000-0000-4000-8000-00000ca401a0",
        app: PORTAL_APP_ID,
        display_name: "Carol Manygroups",
        username: "carol@contoso.example",
        groups: &[],
        roles: &[],
        scopes: &["user_impersonation"],
        groups_overage: true,
    },
    Persona {
        name: "eve",
        description: "user from another tenant (same group ID as ml-scientists)",
        caller: Caller::User,
        tenant: OTHER_TENANT_ID,
        oid: "e5e00000-0000-4000-8000-000000000e5e",
        app: PORTAL_APP_ID,
        display_name: "Eve Outsider",
        username: "eve@fabrikam.example",
        groups: &[GROUP_ML_SCIENTISTS],
        roles: &[],
        scopes: &["user_impersonation"],
        groups_overage: false,
    },
];

/// Looks a persona up by name (`carl` also answers to `contractor`).
pub fn persona(name: &str) -> Option<&'static Persona> {
    let name = if name == "contractor" { "carl" } else { name };
    PERSONAS.iter().find(|p| p.name == name)
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> i64 {
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

/// An RSA signing key with its public JWK; signing goes through [`crate::mint::TestKey`].
pub struct SigningKey {
    kid: String,
    key: TestKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh RSA 2048 key.
    pub fn generate() -> Result<SigningKey> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).context("generate RSA key")?;
        Self::from_rsa(&key)
    }

    /// An RSA private key in PEM (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<SigningKey> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| anyhow!("not an RSA private key in PEM (PKCS#8 or PKCS#1): {e}"))?;
        Self::from_rsa(&key)
    }

    fn from_rsa(key: &RsaPrivateKey) -> Result<SigningKey> {
        let pem = key.to_pkcs8_pem(LineEnding::LF).context("encode RSA key")?;
        let n = b64(&key.n().to_bytes_be());
        let e = b64(&key.e().to_bytes_be());
        // RFC 7638 thumbprint: a stable kid for a given key.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = b64(&Sha256::digest(canonical.as_bytes()))
            .chars()
            .take(16)
            .collect::<String>();
        let jwk = json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e });
        let key = TestKey::from_pem(&pem, &kid)?;
        Ok(SigningKey { kid, key, jwk })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (`kty`, `use`, `alg`, `kid`, `n`, `e`).
    pub fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs claims with RS256; the header is `{"alg":"RS256","typ":"JWT","kid":<kid>}`.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        self.key.try_sign(claims, Algorithm::RS256)
    }
}

struct KeyEntry {
    key: Arc<SigningKey>,
    /// Once retired, when it leaves the JWKS.
    retire_at: Option<Instant>,
}

struct KeyRing {
    /// Oldest first; the last one signs.
    keys: Vec<KeyEntry>,
}

impl KeyRing {
    fn current(&self) -> Option<Arc<SigningKey>> {
        self.keys.last().map(|k| Arc::clone(&k.key))
    }

    fn prune(&mut self, now: Instant) {
        self.keys
            .retain(|k| k.retire_at.is_none_or(|deadline| deadline > now));
    }
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

/// The IdP's state, shared by its worker threads.
struct IdpState {
    issuer: OnceLock<String>,
    ring: Mutex<KeyRing>,
    /// How long a retired key stays in the JWKS.
    grace: Duration,
    log: bool,
}

impl IdpState {
    fn issuer(&self) -> &str {
        self.issuer.get().map(String::as_str).unwrap_or("")
    }

    fn jwks(&self) -> Value {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.prune(Instant::now());
        // Newest first, as IdPs list the current key first.
        let keys: Vec<Value> = ring
            .keys
            .iter()
            .rev()
            .map(|k| k.key.public_jwk().clone())
            .collect();
        json!({ "keys": keys })
    }

    fn current_key(&self) -> Result<Arc<SigningKey>> {
        self.ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current()
            .ok_or_else(|| anyhow!("no signing key"))
    }

    fn claims(&self, p: &Persona, opts: &MintOptions) -> Value {
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

    fn mint(&self, persona_name: &str, opts: &MintOptions) -> Result<Minted> {
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

    fn rotate(&self, grace: Option<Duration>) -> Result<(String, String)> {
        let fresh = Arc::new(SigningKey::generate()?);
        let grace = grace.unwrap_or(self.grace);
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let previous = ring
            .current()
            .map(|k| k.kid().to_string())
            .unwrap_or_default();
        for entry in ring.keys.iter_mut() {
            if entry.retire_at.is_none() {
                entry.retire_at = Some(now + grace);
            }
        }
        ring.prune(now);
        ring.keys.push(KeyEntry {
            key: Arc::clone(&fresh),
            retire_at: None,
        });
        if self.log {
            println!(
                "idp: rotated signing key: {previous} -> {} ({previous} stays in the JWKS for {}s)",
                fresh.kid(),
                grace.as_secs()
            );
        }
        Ok((fresh.kid().to_string(), previous))
    }

    fn discovery(&self) -> Value {
        let base = self.issuer();
        json!({
            "issuer": base,
            "jwks_uri": format!("{base}/jwks"),
            "token_endpoint": format!("{base}/token"),
            "response_types_supported": ["token"],
            "grant_types_supported": ["client_credentials"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "claims_supported": ["aud", "iss", "iat", "nbf", "exp", "azp", "oid", "sub", "tid",
                                 "ver", "scp", "roles", "groups", "idtyp", "name", "preferred_username"],
            "tenant_region_scope": "demo",
        })
    }

    fn personas_doc(&self) -> Value {
        let personas: Vec<Value> = PERSONAS
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "description": p.description,
                    "caller": match p.caller { Caller::User => "user", Caller::App => "app" },
                    "tenant": p.tenant,
                    "oid": p.oid,
                    "app": p.app,
                    "groups": p.groups,
                    "group_names": p.group_names(),
                    "roles": p.roles,
                    "scopes": p.scopes,
                    "groups_overage": p.groups_overage,
                })
            })
            .collect();
        let group_names: Map<String, Value> = GROUP_NAMES
            .iter()
            .map(|(id, n)| (id.to_string(), json!(n)))
            .collect();
        json!({
            "issuer": self.issuer(),
            "audience": AUDIENCE,
            "tenant": TENANT_ID,
            "group_names": group_names,
            "personas": personas,
        })
    }

    fn handle(&self, req: &Request) -> Response {
        if self.issuer.get().is_none() {
            return Response::text(503, "starting\n");
        }
        let path = req.path.trim_end_matches('/');
        match (req.method.as_str(), path) {
            ("GET", "/.well-known/openid-configuration")
            | ("GET", "/v2.0/.well-known/openid-configuration") => {
                Response::json(200, &self.discovery())
            }
            ("GET", "/jwks") | ("GET", "/keys") | ("GET", "/discovery/v2.0/keys") => {
                Response::json(200, &self.jwks()).with_header("cache-control", "max-age=60")
            }
            ("GET", "/personas") => Response::json(200, &self.personas_doc()),
            ("GET", "/healthz") => Response::json(200, &json!({"status": "ok"})),
            ("GET", "/token") | ("POST", "/token") => self.token_endpoint(req),
            ("POST", "/admin/rotate") => {
                let grace = match req.query_param("grace_seconds").map(str::parse::<u64>) {
                    None => None,
                    Some(Ok(s)) => Some(Duration::from_secs(s)),
                    Some(Err(_)) => {
                        return oauth_error(400, "invalid_request", "grace_seconds: not a number")
                    }
                };
                match self.rotate(grace) {
                    Ok((kid, previous)) => Response::json(
                        200,
                        &json!({
                            "kid": kid,
                            "previous": previous,
                            "grace_seconds": grace.unwrap_or(self.grace).as_secs(),
                        }),
                    ),
                    Err(e) => oauth_error(500, "server_error", &format!("{e:#}")),
                }
            }
            (_, "/token") | (_, "/admin/rotate") => {
                oauth_error(405, "invalid_request", "method not allowed")
            }
            _ => Response::json(404, &json!({"error": "not_found", "path": req.path})),
        }
    }

    fn token_endpoint(&self, req: &Request) -> Response {
        // Parameters from the query, then the body (form or JSON).
        let mut params: Vec<(String, String)> = req.query.clone();
        if req.method == "POST" && !req.body.is_empty() {
            let is_json = req
                .header("content-type")
                .is_some_and(|ct| ct.contains("json"));
            if is_json {
                match serde_json::from_slice::<Value>(&req.body) {
                    Ok(Value::Object(m)) => {
                        for (k, v) in m {
                            let s = match v {
                                Value::String(s) => s,
                                other => other.to_string(),
                            };
                            params.push((k, s));
                        }
                    }
                    _ => return oauth_error(400, "invalid_request", "body: not a JSON object"),
                }
            } else {
                params.extend(parse_query(&String::from_utf8_lossy(&req.body)));
            }
        }
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(persona_name) = get("persona") else {
            return oauth_error(
                400,
                "invalid_request",
                "persona is required (e.g. /token?persona=alice; see /personas)",
            );
        };
        let int = |name: &str| -> std::result::Result<Option<i64>, Response> {
            match get(name) {
                None => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                    oauth_error(
                        400,
                        "invalid_request",
                        &format!("{name}: not an integer: {v:?}"),
                    )
                }),
            }
        };
        let opts = MintOptions {
            expires_in: match int("expires_in") {
                Ok(v) => v,
                Err(r) => return r,
            },
            not_before_in: match int("not_before_in") {
                Ok(v) => v,
                Err(r) => return r,
            },
            audience: get("aud").map(str::to_string),
            extra: None,
        };
        match self.mint(persona_name, &opts) {
            Ok(m) => {
                if get("format") == Some("raw") {
                    Response::text(200, format!("{}\n", m.token))
                } else {
                    Response::json(
                        200,
                        &json!({
                            "access_token": m.token,
                            "token_type": "Bearer",
                            "expires_in": m.exp - now_secs(),
                            "persona": persona(persona_name).map(|p| p.name),
                            "kid": m.kid,
                        }),
                    )
                    .with_header("cache-control", "no-store")
                }
            }
            Err(e) => oauth_error(400, "invalid_request", &format!("{e:#}")),
        }
    }
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    Response::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
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
        });
        let handler_state = Arc::clone(&state);
        let server = HttpServer::start(
            "idp",
            opts.port,
            3,
            Arc::new(move |req: &Request| handler_state.handle(req)),
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

    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }
}

const HELP: &str = "usage: mlgate-harness idp [--port N] [--key FILE.pem] [--grace-seconds N]

Demo identity provider on 127.0.0.1 (default port 9400); its issuer is its own base URL.
  GET  /.well-known/openid-configuration   OIDC discovery
  GET  /jwks  (also /keys)                 key set (current key + retired keys in their grace period)
  GET  /token?persona=NAME                 fresh RS256 token (also POST /token, form or JSON)
       options: expires_in=SECONDS (negative: expired), not_before_in=SECONDS, aud=AUDIENCE, format=raw
  GET  /personas                           personas, groups, roles
  POST /admin/rotate[?grace_seconds=N]     rotate the signing key (new kid)
Options:
  --key FILE.pem        RSA private key to sign with (default: a fresh RSA 2048 key)
  --grace-seconds N     how long a rotated-out key stays in the JWKS (default 600)
";

/// `mlgate-harness idp [--port N] [--key FILE.pem] [--grace-seconds N]`
pub fn cli(args: &[String]) -> Result<ExitCode> {
    let (port, flags) = parse_flags(args, 9400, &["key", "grace-seconds"])?;
    if flags.contains_key("help") {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    }
    let key_pem = match flags.get("key") {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("read --key {path}"))?)
        }
        None => None,
    };
    let grace = match flags.get("grace-seconds") {
        Some(s) => Duration::from_secs(
            s.parse()
                .with_context(|| format!("--grace-seconds {s:?}"))?,
        ),
        None => Duration::from_secs(600),
    };
    if grace > Duration::from_secs(7 * 24 * 3600) {
        bail!("--grace-seconds: at most a week");
    }
    let stop = stop_signal()?;
    let mut idp = Idp::start(IdpOptions {
        port,
        key_pem,
        grace,
        log: true,
    })?;
    let url = idp.url().to_string();
    println!(
        "idp: demo identity provider at {url} (issuer {url}, signing key kid={}; Ctrl-C to stop)",
        idp.current_kid()?
    );
    println!("idp: discovery {url}/.well-known/openid-configuration, keys {url}/jwks");
    println!(
        "idp: personas: {}",
        PERSONAS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("idp: a token: curl -s '{url}/token?persona=alice&format=raw'");
    let _ = stop.recv();
    idp.shutdown();
    println!("idp: stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    fn get(idp: &IdpState, path_and_query: &str, method: &str) -> Response {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), parse_query(q)),
            None => (path_and_query.to_string(), Vec::new()),
        };
        idp.handle(&Request {
            method: method.to_string(),
            path,
            query,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    fn state() -> IdpState {
        let s = IdpState {
            issuer: OnceLock::new(),
            ring: Mutex::new(KeyRing {
                keys: vec![KeyEntry {
                    key: Arc::new(SigningKey::generate().unwrap()),
                    retire_at: None,
                }],
            }),
            grace: Duration::from_secs(600),
            log: false,
        };
        s.issuer.set("http://127.0.0.1:9400".to_string()).unwrap();
        s
    }

    fn verify(jwks: &Value, token: &str) -> Value {
        let header = jsonwebtoken::decode_header(token).unwrap();
        let kid = header.kid.unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .expect("kid in jwks");
        let key = DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&["http://127.0.0.1:9400"]);
        decode::<Value>(token, &key, &v).unwrap().claims
    }

    #[test]
    fn personas_are_entra_shaped_and_verify() {
        let s = state();
        let jwks = s.jwks();
        for p in PERSONAS {
            let t = s.mint(p.name, &MintOptions::default()).unwrap().token;
            let c = verify(&jwks, &t);
            assert_eq!(c["ver"], "2.0");
            assert_eq!(c["tid"], p.tenant);
            assert_eq!(c["oid"], p.oid);
            assert_eq!(c["aud"], AUDIENCE);
            match p.caller {
                Caller::App => {
                    assert_eq!(c["idtyp"], "app");
                    assert!(c.get("scp").is_none());
                    assert_eq!(c["roles"], json!(["Scoring.Invoke"]));
                }
                Caller::User => assert!(c["scp"].is_string()),
            }
            if p.groups_overage {
                assert!(c.get("groups").is_none());
                assert_eq!(c["_claim_names"]["groups"], "src1");
            }
        }
        assert!(persona("contractor").is_some());
    }

    #[test]
    fn token_endpoint_and_discovery() {
        let s = state();
        let r = get(
            &s,
            "/token?persona=bob&expires_in=-600&aud=api%3A%2F%2Fother",
            "GET",
        );
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let token = v["access_token"].as_str().unwrap();
        let payload: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["aud"], "api://other");
        assert!(payload["exp"].as_i64().unwrap() < now_secs());
        let raw = get(&s, "/token?persona=alice&format=raw", "GET");
        assert_eq!(raw.content_type, "text/plain; charset=utf-8");
        assert_eq!(String::from_utf8(raw.body).unwrap().matches('.').count(), 2);
        assert_eq!(get(&s, "/token?persona=nobody", "GET").status, 400);
        assert_eq!(get(&s, "/token", "GET").status, 400);
        let d: Value =
            serde_json::from_slice(&get(&s, "/.well-known/openid-configuration", "GET").body)
                .unwrap();
        assert_eq!(d["issuer"], "http://127.0.0.1:9400");
        assert_eq!(d["jwks_uri"], "http://127.0.0.1:9400/jwks");
        assert_eq!(get(&s, "/personas", "GET").status, 200);
    }

    #[test]
    fn rotation_keeps_previous_key_for_grace() {
        let s = state();
        let old = s.mint("alice", &MintOptions::default()).unwrap();
        let r = get(&s, "/admin/rotate", "POST");
        assert_eq!(r.status, 200);
        let jwks = s.jwks();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        let new = s.mint("alice", &MintOptions::default()).unwrap();
        assert_ne!(old.kid, new.kid);
        assert_eq!(jwks["keys"][0]["kid"], new.kid.as_str());
        verify(&jwks, &old.token);
        verify(&jwks, &new.token);
        // Grace 0: the previous key leaves at once.
        s.rotate(Some(Duration::ZERO)).unwrap();
        assert_eq!(s.jwks()["keys"].as_array().unwrap().len(), 2);
        assert_eq!(get(&s, "/admin/rotate", "GET").status, 405);
    }

    #[test]
    fn pem_key_gives_stable_kid() {
        let pem = include_str!("../keys/rsa-a.pem");
        let a = SigningKey::from_pem(pem).unwrap();
        let b = SigningKey::from_pem(pem).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), 16);
    }
}
