//! Identity from verified claims: principal, tenant, client app, caller type, groups, roles,
//! scopes, and the extra claims that rules compare.
//!
//! Claim paths are compiled once. A path is dotted into nested objects (`realm_access.roles`);
//! a claim whose own name contains dots (`https://example.com/groups`) is found too, because the
//! literal name is tried first. List claims accept arrays of strings and space-separated strings.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::payload::Payload;

/// Where claims are read from: a verified token's payload (each claim decoded when read), or a
/// decoded map (tests and tools).
pub trait ClaimSource {
    fn claim(&self, name: &str) -> Option<Cow<'_, Value>>;
}

impl ClaimSource for Payload {
    fn claim(&self, name: &str) -> Option<Cow<'_, Value>> {
        self.get(name).map(Cow::Owned)
    }
}

impl ClaimSource for Map<String, Value> {
    fn claim(&self, name: &str) -> Option<Cow<'_, Value>> {
        self.get(name).map(Cow::Borrowed)
    }
}

/// A compiled claim path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimPath {
    literal: String,
    segments: Vec<String>,
}

impl ClaimPath {
    pub fn new(path: &str) -> ClaimPath {
        ClaimPath {
            literal: path.to_string(),
            segments: path.split('.').map(str::to_string).collect(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.literal
    }

    /// The value at this path, if any.
    pub fn lookup<'c, C: ClaimSource + ?Sized>(&self, claims: &'c C) -> Option<Cow<'c, Value>> {
        if let Some(value) = claims.claim(&self.literal) {
            return Some(value);
        }
        if self.segments.len() < 2 {
            return None;
        }
        let (first, rest) = self.segments.split_first()?;
        let mut current = claims.claim(first)?;
        for segment in rest {
            current = match current {
                Cow::Borrowed(value) => Cow::Borrowed(value.as_object()?.get(segment)?),
                // A copy of the nested value, not `remove`: BTreeMap's removal code costs ~3 KB
                // of .wasm, and nested claim paths are rare.
                Cow::Owned(value) => Cow::Owned(value.as_object()?.get(segment)?.clone()),
            };
        }
        Some(current)
    }
}

/// Which claims give the identity, compiled from a provider's `claims` and `caller_type`.
#[derive(Clone, Debug)]
pub struct ClaimMap {
    pub principal: Vec<ClaimPath>,
    pub tenant: Vec<ClaimPath>,
    pub app: Vec<ClaimPath>,
    pub groups: Vec<ClaimPath>,
    pub roles: Vec<ClaimPath>,
    pub scopes: Vec<ClaimPath>,
    pub caller: CallerRule,
}

/// How a provider's tokens say whether the caller is a user or an application. Never inferred
/// from which claims happen to be present: a user assigned app roles carries `roles` too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerRule {
    /// Microsoft Entra ID: `idtyp` (`app` or `user`; an optional claim in v2 tokens); without
    /// it, a token with `scp` is delegated (a user), and a v1 token whose `oid` equals its `sub`
    /// and has no `scp` is app-only. Anything else is [`Caller::Unknown`].
    Entra,
    /// The string value of a claim names the caller type.
    Claim {
        path: ClaimPath,
        app: Vec<String>,
        user: Vec<String>,
    },
    /// Not configured: every caller is [`Caller::Unknown`].
    Unknown,
}

impl Default for ClaimMap {
    fn default() -> ClaimMap {
        let paths = |names: &[&str]| names.iter().map(|n| ClaimPath::new(n)).collect();
        ClaimMap {
            principal: paths(&["oid", "sub"]),
            tenant: paths(&["tid"]),
            app: paths(&["azp", "appid"]),
            groups: paths(&["groups"]),
            roles: paths(&["roles"]),
            scopes: paths(&["scp"]),
            caller: CallerRule::Entra,
        }
    }
}

/// User (delegated) or application (app-only, client credentials / managed identity), or a
/// token that does not say: it satisfies no `caller` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    User,
    App,
    Unknown,
}

impl Caller {
    pub fn as_str(self) -> &'static str {
        match self {
            Caller::User => "user",
            Caller::App => "app",
            Caller::Unknown => "unknown",
        }
    }
}

/// The caller type by the provider's rule.
fn caller_type<C: ClaimSource + ?Sized>(claims: &C, rule: &CallerRule, has_scp: bool) -> Caller {
    let string = |name: &str| match claims.claim(name).as_deref() {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    match rule {
        CallerRule::Unknown => Caller::Unknown,
        CallerRule::Claim { path, app, user } => match path.lookup(claims).as_deref() {
            Some(Value::String(value)) if app.contains(value) => Caller::App,
            Some(Value::String(value)) if user.contains(value) => Caller::User,
            _ => Caller::Unknown,
        },
        CallerRule::Entra => match string("idtyp").as_deref() {
            Some("app") => Caller::App,
            Some("user") => Caller::User,
            Some(_) => Caller::Unknown,
            None if has_scp => Caller::User,
            None => {
                let v1 = string("ver").as_deref() == Some("1.0");
                let oid = string("oid");
                if v1 && oid.is_some() && oid == string("sub") {
                    Caller::App
                } else {
                    Caller::Unknown
                }
            }
        },
    }
}

/// Who is calling, as established by a verified token. Holds no token material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Index of the provider that issued the token.
    pub provider: usize,
    pub principal: Option<String>,
    pub tenant: Option<String>,
    pub app: Option<String>,
    pub caller: Caller,
    /// Group names (IDs mapped through `group_names`; unmapped IDs kept as they are).
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Entra groups overage: the token's group list is incomplete.
    pub groups_overage: bool,
    pub jti: Option<String>,
    /// Values of the claims that rules compare, indexed by the policy's claim-condition ids.
    pub extra: Vec<Vec<String>>,
}

/// Builds the identity from verified claims.
pub fn identity<C: ClaimSource + ?Sized>(
    provider: usize,
    claims: &C,
    map: &ClaimMap,
    group_names: &BTreeMap<String, String>,
    extra_paths: &[ClaimPath],
) -> Identity {
    let groups = list(claims, &map.groups, Split::Never)
        .into_iter()
        .map(|id| group_names.get(&id).cloned().unwrap_or(id))
        .collect();
    let roles = list(claims, &map.roles, Split::Never);
    let scopes = list(claims, &map.scopes, Split::OnSpaces);
    let caller = caller_type(claims, &map.caller, claims.claim("scp").is_some());
    Identity {
        provider,
        principal: scalar(claims, &map.principal),
        tenant: scalar(claims, &map.tenant),
        app: scalar(claims, &map.app),
        caller,
        groups,
        roles,
        scopes,
        groups_overage: has_groups_overage(claims),
        jti: match claims.claim("jti") {
            Some(Cow::Owned(Value::String(jti))) => Some(jti),
            Some(Cow::Borrowed(Value::String(jti))) => Some(jti.clone()),
            _ => None,
        },
        // A rule's `claims` condition compares whole values: only a scopes claim is a list of
        // space-separated words (`"department": "Sales finance"` is not in `finance`).
        extra: extra_paths
            .iter()
            .map(|p| {
                let split = if map.scopes.contains(p) {
                    Split::OnSpaces
                } else {
                    Split::Never
                };
                list(claims, std::slice::from_ref(p), split)
            })
            .collect(),
    }
}

/// Entra signals "too many groups to list" with `_claim_names.groups` (JWT) or `hasgroups`.
pub fn has_groups_overage<C: ClaimSource + ?Sized>(claims: &C) -> bool {
    let claim_names = claims
        .claim("_claim_names")
        .as_deref()
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key("groups"));
    claim_names || claims.claim("hasgroups").as_deref() == Some(&Value::Bool(true))
}

/// The first present path that holds a string (or number), as a string.
fn scalar<C: ClaimSource + ?Sized>(claims: &C, paths: &[ClaimPath]) -> Option<String> {
    paths.iter().find_map(|path| match path.lookup(claims)? {
        Cow::Owned(Value::String(s)) if !s.is_empty() => Some(s),
        Cow::Borrowed(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        value => match &*value {
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        },
    })
}

/// Whether a string claim is one value or a space-separated list (OAuth's `scope`, Entra's `scp`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    Never,
    OnSpaces,
}

/// The union of all paths: arrays of strings, or strings (split on spaces for scopes).
fn list<C: ClaimSource + ?Sized>(claims: &C, paths: &[ClaimPath], split: Split) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |item: Cow<'_, str>| {
        if !item.is_empty() && !out.iter().any(|seen| *seen == *item) {
            out.push(item.into_owned());
        }
    };
    for path in paths {
        match path.lookup(claims) {
            // A claim decoded for this lookup gives its strings away instead of copying them.
            Some(Cow::Owned(Value::Array(items))) => {
                for item in items {
                    if let Value::String(item) = item {
                        push(Cow::Owned(item));
                    }
                }
            }
            Some(value) => match &*value {
                Value::String(s) if split == Split::OnSpaces => {
                    s.split(' ').map(Cow::Borrowed).for_each(&mut push)
                }
                Value::String(s) => push(Cow::Borrowed(s)),
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(Cow::Borrowed)
                    .for_each(&mut push),
                Value::Bool(b) => push(Cow::Borrowed(if *b { "true" } else { "false" })),
                Value::Number(n) => push(Cow::Owned(n.to_string())),
                _ => {}
            },
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn fixture(name: &str) -> Map<String, Value> {
        let path = format!(
            "{}/test-harness/fixtures/claims/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn entra_identity(name: &str) -> Identity {
        let names: BTreeMap<String, String> = [(
            "6a1f2b3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c".to_string(),
            "ml-scientists".to_string(),
        )]
        .into_iter()
        .collect();
        identity(0, &fixture(name), &ClaimMap::default(), &names, &[])
    }

    #[test]
    fn entra_user_principal_is_oid_and_groups_are_named() {
        let id = entra_identity("entra-v2-user");
        assert_eq!(
            id.principal.as_deref(),
            Some("8f1d2c3b-4a5e-4f6d-9a8b-7c6d5e4f3a2b")
        );
        assert_eq!(
            id.tenant.as_deref(),
            Some("4b2f3c1e-8a6d-4f0e-9c3b-2a1d5e7f9a10")
        );
        assert_eq!(
            id.app.as_deref(),
            Some("0c9a7e55-3f7d-4b1c-a2a4-6d2e9b1f0c33")
        );
        assert_eq!(
            id.groups,
            vec!["ml-scientists", "b3c4d5e6-f7a8-4b9c-8d0e-1f2a3b4c5d6e"]
        );
        assert_eq!(id.caller, Caller::User);
    }

    #[test]
    fn space_separated_scp_becomes_scopes() {
        let id = entra_identity("entra-v2-user");
        assert_eq!(id.scopes, vec!["Scoring.Invoke", "Models.Read"]);
    }

    #[test]
    fn v1_token_app_comes_from_appid() {
        let id = entra_identity("entra-v1-user");
        assert_eq!(
            id.app.as_deref(),
            Some("0c9a7e55-3f7d-4b1c-a2a4-6d2e9b1f0c33")
        );
    }

    #[test]
    fn managed_identity_is_an_app_caller() {
        let id = entra_identity("entra-v2-app-managed-identity");
        assert_eq!(id.caller, Caller::App);
        assert_eq!(id.roles, vec!["Scoring.Invoke"]);
    }

    fn caller_of(value: Value, rule: CallerRule) -> Caller {
        let map = ClaimMap {
            caller: rule,
            ..ClaimMap::default()
        };
        identity(0, &claims(value), &map, &BTreeMap::new(), &[]).caller
    }

    #[test]
    fn roles_without_scopes_do_not_make_an_entra_token_an_app() {
        // An ID token (or a v2 token without `idtyp`) of a user assigned app roles.
        let user_id_token =
            json!({"ver": "2.0", "roles": ["Scoring.Invoke"], "oid": "u", "sub": "pairwise"});
        assert_eq!(caller_of(user_id_token, CallerRule::Entra), Caller::Unknown);
    }

    #[test]
    fn entra_idtyp_names_the_caller() {
        assert_eq!(
            caller_of(json!({"idtyp": "app"}), CallerRule::Entra),
            Caller::App
        );
        assert_eq!(
            caller_of(json!({"idtyp": "user", "roles": ["r"]}), CallerRule::Entra),
            Caller::User
        );
        assert_eq!(
            caller_of(json!({"idtyp": "device"}), CallerRule::Entra),
            Caller::Unknown
        );
    }

    #[test]
    fn entra_v1_app_token_is_oid_equal_to_sub_without_scp() {
        let app = json!({"ver": "1.0", "oid": "sp", "sub": "sp", "roles": ["r"]});
        assert_eq!(caller_of(app, CallerRule::Entra), Caller::App);
        let v2 = json!({"ver": "2.0", "oid": "sp", "sub": "sp", "roles": ["r"]});
        assert_eq!(caller_of(v2, CallerRule::Entra), Caller::Unknown);
        let user = json!({"ver": "1.0", "oid": "u", "sub": "u", "scp": "Scoring.Invoke"});
        assert_eq!(caller_of(user, CallerRule::Entra), Caller::User);
    }

    #[test]
    fn a_configured_claim_names_the_caller_and_nothing_else_does() {
        let rule = CallerRule::Claim {
            path: ClaimPath::new("gty"),
            app: vec!["client-credentials".into()],
            user: vec!["password".into()],
        };
        assert_eq!(
            caller_of(json!({"gty": "client-credentials"}), rule.clone()),
            Caller::App
        );
        assert_eq!(
            caller_of(json!({"gty": "password"}), rule.clone()),
            Caller::User
        );
        assert_eq!(
            caller_of(json!({"roles": ["r"], "idtyp": "app"}), rule),
            Caller::Unknown
        );
        assert_eq!(
            caller_of(json!({"idtyp": "app"}), CallerRule::Unknown),
            Caller::Unknown
        );
    }

    #[test]
    fn only_scopes_are_split_on_spaces() {
        let paths = [ClaimPath::new("department"), ClaimPath::new("scp")];
        let id = identity(
            0,
            &claims(json!({"department": "Sales finance", "scp": "a b", "roles": "r1 r2"})),
            &ClaimMap::default(),
            &BTreeMap::new(),
            &paths,
        );
        assert_eq!(
            id.extra,
            vec![
                vec!["Sales finance".to_string()],
                vec!["a".to_string(), "b".to_string()]
            ]
        );
        assert_eq!(id.roles, vec!["r1 r2"]);
        assert_eq!(id.scopes, vec!["a", "b"]);
    }

    #[test]
    fn overage_is_detected_from_claim_names() {
        assert!(entra_identity("entra-v2-user-groups-overage").groups_overage);
        assert!(!entra_identity("entra-v2-user").groups_overage);
    }

    #[test]
    fn overage_is_detected_from_hasgroups() {
        assert!(has_groups_overage(&claims(json!({"hasgroups": true}))));
    }

    #[test]
    fn a_token_payload_gives_the_same_identity_as_its_decoded_map() {
        let map = ClaimMap {
            roles: vec![
                ClaimPath::new("roles"),
                ClaimPath::new("realm_access.roles"),
                ClaimPath::new("resource_access.ml-gateway.roles"),
            ],
            scopes: vec![ClaimPath::new("scp"), ClaimPath::new("scope")],
            ..ClaimMap::default()
        };
        let extra = [
            ClaimPath::new("hd"),
            ClaimPath::new("realm_access"),
            ClaimPath::new("iat"),
        ];
        let dir = format!(
            "{}/test-harness/fixtures/claims",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read(&path).unwrap();
            let decoded: Map<String, Value> = serde_json::from_slice(&text).unwrap();
            let payload = Payload::parse(text).unwrap();
            let from_map = identity(0, &decoded, &map, &BTreeMap::new(), &extra);
            let from_payload = identity(0, &payload, &map, &BTreeMap::new(), &extra);
            assert_eq!(from_payload, from_map, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 8);
    }

    #[test]
    fn keycloak_nested_roles_are_found() {
        let map = ClaimMap {
            roles: vec![
                ClaimPath::new("realm_access.roles"),
                ClaimPath::new("resource_access.ml-gateway.roles"),
            ],
            scopes: vec![ClaimPath::new("scope")],
            principal: vec![ClaimPath::new("preferred_username")],
            ..ClaimMap::default()
        };
        let id = identity(0, &fixture("keycloak-access"), &map, &BTreeMap::new(), &[]);
        assert_eq!(id.roles, vec!["offline_access", "ml-scientist", "infer"]);
        assert_eq!(id.scopes, vec!["openid", "profile", "email"]);
        assert_eq!(id.principal.as_deref(), Some("frank"));
        assert_eq!(
            id.jti.as_deref(),
            Some("f0e1d2c3-b4a5-4697-8877-665544332211")
        );
    }

    #[test]
    fn okta_array_scopes_are_found() {
        let id = identity(
            0,
            &fixture("okta-access"),
            &ClaimMap::default(),
            &BTreeMap::new(),
            &[],
        );
        assert_eq!(id.scopes, vec!["scoring.invoke", "models.read"]);
        assert_eq!(id.principal.as_deref(), Some("erin@contoso.example"));
    }

    #[test]
    fn claim_with_dots_in_its_name_is_found_literally() {
        let path = ClaimPath::new("https://example.com/groups");
        let c = claims(json!({"https://example.com/groups": ["a"]}));
        assert_eq!(path.lookup(&c).as_deref(), Some(&json!(["a"])));
    }

    #[test]
    fn extra_claims_are_extracted_in_order() {
        let paths = [ClaimPath::new("hd"), ClaimPath::new("email_verified")];
        let id = identity(
            0,
            &fixture("google-id"),
            &ClaimMap::default(),
            &BTreeMap::new(),
            &paths,
        );
        assert_eq!(
            id.extra,
            vec![
                vec!["contoso.example".to_string()],
                vec!["true".to_string()]
            ]
        );
    }
}
