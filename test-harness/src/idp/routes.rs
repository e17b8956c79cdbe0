//! The IdP's HTTP endpoints: discovery, JWKS, personas, the token endpoint, key rotation, health.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::personas::{persona, Caller, AUDIENCE, GROUP_NAMES, PERSONAS, TENANT_ID};
use super::server::IdpState;
use super::tokens::{now_secs, MintOptions};
use crate::http_server::{parse_query, ReceivedRequest, Response};

impl IdpState {
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

    pub(super) fn handle(&self, req: &ReceivedRequest) -> Response {
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
                if self.keys_down() {
                    return Response::json(503, &json!({"error": "temporarily_unavailable"}));
                }
                Response::json(200, &self.jwks()).with_header("cache-control", "max-age=60")
            }
            ("POST", "/admin/outage") => match req.query_param("seconds").map(str::parse::<u64>) {
                Some(Ok(s)) if s <= 3600 => {
                    self.fail_keys_for(Duration::from_secs(s));
                    Response::json(200, &json!({"keys_unavailable_seconds": s}))
                }
                _ => oauth_error(400, "invalid_request", "seconds: a number up to 3600"),
            },
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
            (_, "/token") | (_, "/admin/rotate") | (_, "/admin/outage") => {
                oauth_error(405, "invalid_request", "method not allowed")
            }
            _ => Response::json(404, &json!({"error": "not_found", "path": req.path})),
        }
    }

    fn token_endpoint(&self, req: &ReceivedRequest) -> Response {
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
