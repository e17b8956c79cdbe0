//! The header map as the host encodes it, and the rewrite of a forwarded request's headers,
//! with a host that records what it is asked.

use super::*;
use crate::policy::Forward;

/// proxy-wasm's map serialisation: u32 count, the sizes, then each name and value + NUL.
fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let pairs: Vec<(&[u8], &[u8])> = pairs
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    HeaderMap::decode(encode(&pairs))
}

#[derive(Default)]
struct RecordingHost {
    removed: Vec<String>,
    added: Vec<(String, String)>,
    refuse_after: Option<usize>,
}

impl RecordingHost {
    fn calls(&self) -> usize {
        self.removed.len() + self.added.len()
    }
    fn allowed(&self) -> Result<(), HostRefused> {
        match self.refuse_after {
            Some(limit) if self.calls() >= limit => Err(HostRefused("test host")),
            _ => Ok(()),
        }
    }
}

impl HeaderHost for RecordingHost {
    fn remove_header(&mut self, name: &str) -> Result<(), HostRefused> {
        self.allowed()?;
        self.removed.push(name.to_string());
        Ok(())
    }
    fn add_header(&mut self, name: &str, value: &str) -> Result<(), HostRefused> {
        self.allowed()?;
        self.added.push((name.to_string(), value.to_string()));
        Ok(())
    }
}

fn forward(strip_authorization: bool) -> Forward {
    let config = crate::testing::entra_config().to_string();
    let backend = crate::testing::envoy_backend();
    let mut forward = crate::config::compile(config.as_bytes(), &backend)
        .unwrap()
        .forward;
    forward.strip_authorization = strip_authorization;
    forward
}

#[test]
fn a_map_decodes_names_and_values_in_order() {
    let m = map(&[
        (":path", "/score"),
        ("authorization", "Bearer t"),
        ("x-a", ""),
    ]);
    let pairs: Vec<(&str, &str)> = m.iter().collect();
    assert_eq!(
        pairs,
        [
            (":path", "/score"),
            ("authorization", "Bearer t"),
            ("x-a", "")
        ]
    );
    assert_eq!(m.first(":path"), "/score");
}

#[test]
fn repeated_headers_are_joined_with_commas_and_names_match_in_any_case() {
    let m = map(&[("Model", "a"), ("model", "b"), ("other", "c")]);
    assert_eq!(m.get("model").as_deref(), Some("a,b"));
    assert_eq!(m.get("MODEL").as_deref(), Some("a,b"));
    assert_eq!(m.get("missing"), None);
}

#[test]
fn a_value_that_is_not_utf8_is_kept_lossily_and_the_others_intact() {
    let bytes = encode(&[(b"authorization", b"Bearer \xff\xfe"), (b"x-a", b"ok")]);
    let m = HeaderMap::decode(bytes);
    assert_eq!(
        m.get("authorization").as_deref(),
        Some("Bearer \u{fffd}\u{fffd}")
    );
    assert_eq!(m.get("x-a").as_deref(), Some("ok"));
}

#[test]
fn a_truncated_or_lying_map_yields_what_could_be_read_and_never_panics() {
    let good = encode(&[(b"a", b"1"), (b"b", b"2")]);
    for cut in 0..good.len() {
        let _ = HeaderMap::decode(good[..cut].to_vec());
    }
    let mut lying = good.clone();
    lying[..4].copy_from_slice(&1000u32.to_le_bytes());
    let m = HeaderMap::decode(lying);
    assert!(m.iter().count() <= 2);
    let mut huge_size = good;
    huge_size[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(HeaderMap::decode(huge_size).iter().count(), 0);
    assert_eq!(HeaderMap::decode(Vec::new()).iter().count(), 0);
}

#[test]
fn identity_headers_are_recognised_in_any_case_and_with_underscores() {
    for name in [
        "x-mlgate-principal",
        "X-MLGATE-Groups",
        "x_mlgate_principal",
        "X_Mlgate-tenant",
    ] {
        assert!(spoofs_identity(name, "x-mlgate-"), "{name}");
    }
    for name in [
        "x-mlgat",
        "x-mlgatexprincipal",
        "mlgate-principal",
        "x-other",
    ] {
        assert!(!spoofs_identity(name, "x-mlgate-"), "{name}");
    }
}

#[test]
fn client_sent_identity_headers_are_stripped_before_the_verified_ones_are_added() {
    let request = map(&[
        (":path", "/score"),
        ("X-Mlgate-Principal", "mallory"),
        ("x_mlgate_groups", "admins"),
        ("authorization", "Bearer t"),
        ("x-request-id", "1"),
    ]);
    let add = [("x-mlgate-principal", "alice")];
    let mut host = RecordingHost::default();
    rewrite(&mut host, &forward(false), &request, add).unwrap();
    assert_eq!(host.removed, ["X-Mlgate-Principal", "x_mlgate_groups"]);
    assert_eq!(
        host.added,
        [("x-mlgate-principal".to_string(), "alice".to_string())]
    );
}

#[test]
fn authorization_is_stripped_only_when_configured() {
    let request = map(&[("Authorization", "Bearer t")]);
    let add: [(&str, &str); 0] = [];
    let mut host = RecordingHost::default();
    rewrite(&mut host, &forward(true), &request, add).unwrap();
    assert_eq!(host.removed, ["Authorization"]);
}

#[test]
fn a_host_that_refuses_a_change_stops_the_rewrite() {
    let request = map(&[("x-mlgate-principal", "mallory"), ("x-mlgate-tenant", "t")]);
    let add = [("x-mlgate-principal", "alice")];
    for limit in 0..3 {
        let mut host = RecordingHost {
            refuse_after: Some(limit),
            ..RecordingHost::default()
        };
        let result = rewrite(&mut host, &forward(false), &request, add);
        assert!(result.is_err(), "refusing after {limit} calls");
        assert!(host.added.is_empty(), "nothing added once a strip failed");
    }
}
