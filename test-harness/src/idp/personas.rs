//! The demo directory: its tenant, groups and applications, and the personas the IdP mints tokens for.

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
