//! Property tests on stable (run by `make test`): the filter's core, natively, on arbitrary input.
//! Nothing panics; a valid token with any single byte changed is never accepted; whatever is
//! forwarded has the configured issuer and audience and is in date; paths that reach a route are
//! unambiguous; duplicate JSON keys are always refused. `test-harness/fuzz/` runs the same entry
//! points under libFuzzer (nightly, `make fuzz`).

mod common;

use std::collections::HashMap;

use jsonwebtoken::Algorithm;
use mlgate::gate::{Disposition, Gate, RequestHead, Step};
use mlgate::payload::Payload;
use mlgate::token::{self, TokenSource};
use mlgate::verify::dangerous;
use mlgate_harness::host::host_crypto::{self, VerifySignatureArguments};
use mlgate_harness::mint::{self, TestKey};
use proptest::prelude::*;
use serde_json::{json, Value};

const NOW: i64 = 1_800_000_000;

fn config() -> Value {
    common::entra_config()
}

fn gate() -> Gate {
    let policy = compile(config().to_string().as_bytes()).expect("config compiles");
    Gate::new(policy, envoy_backend())
}

/// The harness's `verify_signature` as the core's signature backend: what Envoy gives the filter.
fn envoy_backend() -> mlgate::crypto::Backend {
    mlgate::crypto::Backend::with_host(judge, true)
}

fn judge(check: &mlgate::crypto::HostCheck<'_>) -> Option<bool> {
    let args = VerifySignatureArguments {
        hash_function: check.hash.to_string(),
        public_key: check.spki_der.to_vec(),
        signature: check.signature.to_vec(),
        text: check.text.to_vec(),
        public_key_pem: String::new(),
    };
    let result = host_crypto::verify(&args).ok()?;
    match result.error.as_str() {
        "" => Some(result.result),
        error if error.starts_with("Failed to verify digest") => Some(false),
        _ => None,
    }
}

/// Compiled for Envoy's backend (the host verifies ES384).
fn compile(bytes: &[u8]) -> Result<mlgate::policy::Policy, mlgate::config::ConfigError> {
    mlgate::config::compile(bytes, &envoy_backend())
}

fn claims() -> Value {
    json!({
        "aud": "api://ml-scoring",
        "iss": common::entra_issuer(),
        "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
        "groups": [common::ML_SCIENTISTS],
        "oid": common::ALICE,
        "scp": "Scoring.Invoke",
        "tid": common::TENANT,
    })
}

/// The decision for POST `path` with these headers: the forwarded headers, or the refusal reason.
fn decide(
    gate: &Gate,
    path: &str,
    headers: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let map: HashMap<String, String> = headers.iter().cloned().collect();
    let lookup = |name: &str| {
        map.get(name)
            .map(|v| std::borrow::Cow::Borrowed(v.as_str()))
    };
    let step = gate.decide(
        &RequestHead {
            method: "POST",
            path,
            host: "ml.contoso.example",
            header: &lookup,
            any_header_name: &|_| false,
        },
        NOW,
        false,
    );
    match step {
        Step::Done(verdict) => match verdict.action {
            Disposition::Forward(headers) => Ok(headers.to_vec()),
            Disposition::Reply(reply) => {
                let body: Value = serde_json::from_str(&reply.body).expect("reply body is JSON");
                Err(body["reason"].as_str().unwrap_or("?").to_string())
            }
        },
        Step::NeedBody { headers, .. } => Ok(headers.to_vec()),
        Step::NeedKeys { .. } => Err("need_keys".into()),
    }
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {token}"))]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "RS256",
            "none",
            "HS256",
            "rsa-a",
            "api://ml-scoring",
            common::TENANT
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Values for a registered claim: mostly plausible, often wrong.
fn claim_value(valid: Value) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(valid),
        1 => json_value(),
        1 => (NOW - 10_000..NOW + 10_000).prop_map(Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn peek_never_panics_on_any_string(token in ".{0,300}") {
        let _ = dangerous::peek(&token);
    }

    #[test]
    fn peek_never_panics_on_token_shaped_strings(token in "[A-Za-z0-9_=+/.-]{0,400}") {
        let _ = dangerous::peek(&token);
    }

    #[test]
    fn peek_never_panics_on_arbitrary_json_segments(header in json_value(), payload in json_value(), sig in prop::collection::vec(any::<u8>(), 0..80)) {
        let token = format!(
            "{}.{}.{}",
            mint::b64_json(&header).unwrap(),
            mint::b64_json(&payload).unwrap(),
            base64_url(&sig)
        );
        if let Ok(peeked) = dangerous::peek(&token) {
            // Whatever peek accepts names a real algorithm and no crit.
            prop_assert!(header.get("alg").and_then(Value::as_str).is_some());
            prop_assert!(header.get("crit").is_none());
            // Its issuer is the payload's (its claims are out of reach until verified).
            if let Some(Value::String(iss)) = payload.get("iss") {
                prop_assert_eq!(peeked.issuer(), Ok(iss.as_str()));
            }
        }
    }

    #[test]
    fn payload_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Payload::parse(bytes);
    }

    #[test]
    fn payload_agrees_with_serde_json_without_duplicates(value in json_value()) {
        let object = match value {
            Value::Object(object) => object,
            other => [("v".to_string(), other)].into_iter().collect(),
        };
        let text = serde_json::to_vec(&object).unwrap();
        // Compared with serde_json's reading of the same text (floats need not round-trip).
        let loose: serde_json::Map<String, Value> = serde_json::from_slice(&text).unwrap();
        let payload = Payload::parse(text).expect("no duplicates: parses");
        prop_assert_eq!(payload.to_map(), loose.clone());
        for (name, value) in &loose {
            prop_assert_eq!(payload.get(name), Some(value.clone()));
        }
    }

    #[test]
    fn payload_refuses_every_duplicate_key(value in json_value(), key in "[a-z]{0,4}", dup in json_value()) {
        // {"key": dup, <value's members>, "key": dup} — a duplicate whatever `value` holds.
        let mut object = serde_json::Map::new();
        object.insert("inner".into(), value);
        let inner = serde_json::to_string(&Value::Object(object)).unwrap();
        let member = format!("{}:{}", serde_json::to_string(&key).unwrap(), dup);
        let text = format!("{{{member},{},{member}}}", &inner[1..inner.len() - 1]);
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
        prop_assert!(Payload::parse(text.clone().into_bytes()).is_err());
        // The same one level down, and inside an array: refused by the check the verifier
        // makes once the signature holds, and never decoded before.
        for wrapped in [format!("{{\"n\":{text}}}"), format!("{{\"n\":[1,{text}]}}")] {
            let payload = Payload::parse(wrapped.into_bytes()).unwrap();
            prop_assert!(!payload.nested_keys_unique());
            prop_assert_eq!(payload.get("n"), None);
        }
    }

    #[test]
    fn extract_never_panics_and_flags_every_ambiguous_token(
        authorization in prop::option::of(".{0,80}"),
        cookie in prop::option::of(".{0,80}"),
        custom in prop::option::of(".{0,80}"),
        query in prop::option::of(".{0,80}"),
        max in 0usize..64,
    ) {
        let sources = [
            TokenSource::HeaderWithScheme { name: "authorization".into(), scheme: "Bearer".into() },
            TokenSource::Header { name: "x-token".into() },
            TokenSource::Query { name: "access_token".into() },
            TokenSource::Cookie { name: "session".into() },
        ];
        let header = |name: &str| match name {
            "authorization" => authorization.as_deref().map(std::borrow::Cow::Borrowed),
            "cookie" => cookie.as_deref().map(std::borrow::Cow::Borrowed),
            "x-token" => custom.as_deref().map(std::borrow::Cow::Borrowed),
            _ => None,
        };
        if let Ok(Some(found)) = token::extract(&sources, &header, query.as_deref(), max) {
            prop_assert!(!found.token.is_empty());
            prop_assert!(found.token.len() <= max);
            // Two tokens joined in one value are found as one and flagged: the gate refuses a
            // flagged token (multiple_tokens) on a cache miss, and no cached token holds a `,`.
            prop_assert_eq!(found.is_joined(), found.token.contains(','));
            prop_assert!(found.source < sources.len());
        }
    }

    #[test]
    fn compile_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = compile(&bytes);
    }

    #[test]
    fn compile_never_panics_on_arbitrary_json(doc in json_value()) {
        let _ = compile(doc.to_string().as_bytes());
    }

    /// The valid configuration with one member replaced by arbitrary JSON: compiles or is
    /// refused, and a policy that compiles decides a request without panicking.
    #[test]
    fn compile_never_panics_on_a_mutated_config(pick in any::<prop::sample::Index>(), value in json_value(), path in "/[ -~]{0,30}") {
        let mut doc = config();
        let pointers = pointers(&doc, String::new());
        let at = &pointers[pick.index(pointers.len())];
        *doc.pointer_mut(at).unwrap() = value;
        if let Ok(policy) = compile(doc.to_string().as_bytes()) {
            let gate = Gate::new(policy, envoy_backend());
            let _ = decide(&gate, &path, &[]);
        }
    }

    /// Any single byte of a valid token changed (to any printable ASCII byte): never accepted.
    #[test]
    fn a_valid_token_with_one_byte_changed_is_never_accepted(pick in any::<prop::sample::Index>(), byte in 0x21u8..0x7f) {
        let (gate, token) = valid();
        let mut bytes = token.as_bytes().to_vec();
        let i = pick.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        let forged = String::from_utf8(bytes).unwrap();
        let result = decide(&gate, "/score", &bearer(&forged));
        prop_assert!(result.is_err(), "accepted a token changed at byte {}: {:?}", i, result);
    }

    /// Any single bit of a valid token's decoded signature flipped: never accepted.
    #[test]
    fn a_valid_signature_with_one_bit_flipped_is_never_accepted(bit in 0usize..2048) {
        let (gate, token) = valid();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut sig = base64_url_decode(signature);
        sig[bit / 8] ^= 1 << (bit % 8);
        let forged = format!("{input}.{}", base64_url(&sig));
        prop_assert_eq!(decide(&gate, "/score", &bearer(&forged)), Err("bad_signature".to_string()));
    }

    /// Genuinely signed tokens with arbitrary registered claims: what is forwarded has the exact
    /// issuer, the audience, a tenant, and is within its validity window.
    #[test]
    fn forwarded_tokens_always_satisfy_the_registered_claims(
        iss in claim_value(json!(common::entra_issuer())),
        aud in claim_value(json!("api://ml-scoring")),
        exp in claim_value(json!(NOW + 3600)),
        nbf in claim_value(json!(NOW - 60)),
        iat in claim_value(json!(NOW - 60)),
        drop in prop::collection::vec(prop::sample::select(vec!["iss", "aud", "exp", "nbf", "iat", "tid"]), 0..3),
    ) {
        let mut c = claims();
        c["iss"] = iss; c["aud"] = aud; c["exp"] = exp; c["nbf"] = nbf; c["iat"] = iat;
        for key in drop {
            c.as_object_mut().unwrap().remove(key);
        }
        let token = TestKey::rsa_a().sign(&c, Algorithm::RS256);
        let (gate, _) = valid();
        if decide(&gate, "/score", &bearer(&token)).is_ok() {
            let issuer = common::entra_issuer();
            prop_assert_eq!(c["iss"].as_str(), Some(issuer.as_str()));
            prop_assert_eq!(c["aud"].as_str(), Some("api://ml-scoring"));
            // NumericDate may be fractional (RFC 7519 §2): `0.0` is a time like `0`.
            let exp = c["exp"].as_f64().expect("exp is a number");
            prop_assert!((NOW as f64) < exp + 60.0);
            if let Some(nbf) = c.get("nbf") { prop_assert!(nbf.as_f64().expect("a number") <= (NOW + 60) as f64); }
            if let Some(iat) = c.get("iat") { prop_assert!(iat.as_f64().expect("a number") <= (NOW + 60) as f64); }
        }
    }

    /// Paths built from tricky pieces: the gate either refuses them as invalid_path, or they
    /// are plain, and a template parameter never captures `.`, `..`, an empty segment or a `/`.
    #[test]
    fn only_unambiguous_paths_reach_a_route(pieces in prop::collection::vec(prop::sample::select(vec![
        "/", "//", ".", "..", "/..", "/.", "%2e", "%2F", "%", ";", ";x=1", "\\", "#", "?", "?/../x",
        "score", "SCORE", "v2", "models", "infer", "finance-x", "fraud", "healthz", " ", "\t", "é",
    ]), 0..10)) {
        let path = pieces.concat();
        let gate = gate();
        let (gate_path, _) = path.split_once('?').unwrap_or((&path, ""));
        let result = decide(&gate, &path, &[]);
        if result != Err("invalid_path".to_string()) {
            prop_assert!(gate_path.starts_with('/'));
            prop_assert!(gate_path.bytes().all(|b| b > 0x20 && b < 0x7f && !b"%;\\#".contains(&b)));
            let body = gate_path.strip_prefix('/').unwrap();
            let body = body.strip_suffix('/').unwrap_or(body);
            prop_assert!(body.is_empty() || body.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
        }
        let template = mlgate::config::compile_template("/v2/models/{model}/infer").unwrap();
        if let Some(captures) = template.matches(gate_path) {
            for c in captures {
                prop_assert!(!c.is_empty() && c != "." && c != ".." && !c.contains('/'), "captured {:?}", c);
            }
        }
    }

    /// Claim extraction on arbitrary claims never panics, and identity values reach the upstream
    /// without control characters.
    #[test]
    fn claim_extraction_never_panics(claims in prop::collection::btree_map("[a-z_]{0,6}", json_value(), 0..8), oid in ".{0,20}", groups in json_value()) {
        let mut claims: serde_json::Map<String, Value> = claims.into_iter().collect();
        claims.insert("oid".into(), Value::from(oid));
        claims.insert("groups".into(), groups);
        let policy = compile(config().to_string().as_bytes()).unwrap();
        let provider = &policy.providers[0];
        let _ = mlgate::claims::identity(0, &claims, &provider.claims, &provider.group_names, &policy.extra_claims);
        // A token's payload is read member by member: the same identity as from the whole map
        // (serde_json's reading of the same text: floats need not round-trip).
        let text = serde_json::to_vec(&claims).unwrap();
        let claims: serde_json::Map<String, Value> = serde_json::from_slice(&text).unwrap();
        let from_map = mlgate::claims::identity(0, &claims, &provider.claims, &provider.group_names, &policy.extra_claims);
        let payload = Payload::parse(text).unwrap();
        let from_payload = mlgate::claims::identity(0, &payload, &provider.claims, &provider.group_names, &policy.extra_claims);
        prop_assert_eq!(from_payload, from_map);
    }

    #[test]
    fn decide_never_panics_on_arbitrary_requests(
        path in "[ -~]{0,40}",
        headers in prop::collection::vec((prop::sample::select(vec!["authorization", "cookie", "x-mlgate-principal", "azureml-model-deployment", "x-request-id"]), ".{0,60}"), 0..5),
    ) {
        let gate = gate();
        let headers: Vec<(String, String)> = headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if let Ok(forwarded) = decide(&gate, &path, &headers) {
            for (name, value) in forwarded {
                prop_assert!(name.starts_with("x-mlgate-"));
                prop_assert!(!value.chars().any(char::is_control));
            }
        }
    }
}

/// A gate and a valid token for it (at NOW). The token is signed once; the gate (it holds `Rc`s,
/// as each filter VM is single-threaded) is compiled per case.
fn valid() -> (Gate, &'static str) {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let token = TOKEN.get_or_init(|| TestKey::rsa_a().sign(&claims(), Algorithm::RS256));
    let gate = gate();
    assert!(
        decide(&gate, "/score", &bearer(token)).is_ok(),
        "the valid token is accepted"
    );
    (gate, token)
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn base64_url_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

/// JSON pointers of every member and element of `doc`.
fn pointers(doc: &Value, at: String) -> Vec<String> {
    let mut out = Vec::new();
    match doc {
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                out.extend(pointers(v, p));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                out.extend(pointers(v, p));
            }
        }
        _ => {}
    }
    out
}

/// Writes the fuzz targets' seed corpus (`test-harness/fuzz/seeds/<target>/`): valid tokens for
/// the fuzz configuration at NOW, and the attack catalogue's shapes. RS*/ES*/EdDSA signatures are
/// deterministic, so re-running it changes only the (salted) PS256 seed. Run with
/// `cargo test --release -p mlgate-harness --test properties -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run by hand when the seeds need refreshing"]
fn write_fuzz_seeds() {
    let root = mlgate_harness::host::workspace_root().join("test-harness/fuzz/seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let b64 = |v: &Value| mint::b64_json(v).unwrap();
    let c = claims();
    let partner_tenant = common::OTHER_TENANT;
    let mut partner = c.clone();
    partner["iss"] = json!(format!(
        "https://login.microsoftonline.com/{partner_tenant}/v2.0"
    ));
    partner["tid"] = json!(partner_tenant);
    let with = |key: &str, value: Value| {
        let mut c = claims();
        c[key] = value;
        c
    };
    let rsa_a = TestKey::rsa_a();
    let valid = rsa_a.sign(&c, Algorithm::RS256);
    let (valid_input, valid_sig) = valid.rsplit_once('.').unwrap();
    let hs = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(mint::test_jwks()["keys"][0].to_string().as_bytes()),
        )
        .unwrap()
    };
    let tokens: Vec<(&str, String)> = vec![
        ("valid-rs256", valid.clone()),
        ("valid-ps256", TestKey::rsa_b().sign(&c, Algorithm::PS256)),
        ("valid-es256", TestKey::ec_p256().sign(&c, Algorithm::ES256)),
        ("valid-es384", TestKey::ec_p384().sign(&c, Algorithm::ES384)),
        ("valid-eddsa", TestKey::ed25519().sign(&c, Algorithm::EdDSA)),
        ("valid-partner", rsa_a.sign(&partner, Algorithm::RS256)),
        (
            "valid-no-kid",
            rsa_a.sign_with_header(&json!({"alg": "RS256"}), &c),
        ),
        (
            "alg-none",
            mint::unsigned_token(&json!({"alg": "none"}), &c),
        ),
        (
            "alg-none-signed",
            rsa_a.sign_with_header(&json!({"alg": "nOnE"}), &c),
        ),
        ("alg-hs256-confusion", hs),
        (
            "crit-b64",
            rsa_a.sign_with_header(
                &json!({"alg": "RS256", "kid": "rsa-a", "crit": ["b64"], "b64": false}),
                &c,
            ),
        ),
        (
            "jwk-embedded",
            TestKey::rsa_b().sign_with_header(
                &json!({"alg": "RS256", "jwk": TestKey::rsa_b().public_jwk()}),
                &c,
            ),
        ),
        (
            "jku",
            TestKey::rsa_b().sign_with_header(
                &json!({"alg": "RS256", "jku": "https://attacker.example/k"}),
                &c,
            ),
        ),
        (
            "kid-traversal",
            rsa_a.sign_with_header(&json!({"alg": "RS256", "kid": "../../etc/passwd"}), &c),
        ),
        (
            "kid-number",
            rsa_a.sign_with_header(&json!({"alg": "RS256", "kid": 1}), &c),
        ),
        (
            "exp-string",
            rsa_a.sign(&with("exp", json!("1800003600")), Algorithm::RS256),
        ),
        (
            "exp-float",
            rsa_a.sign(&with("exp", json!(1_800_003_600.5)), Algorithm::RS256),
        ),
        (
            "aud-object",
            rsa_a.sign(&with("aud", json!({"a": 1})), Algorithm::RS256),
        ),
        (
            "iss-suffix",
            rsa_a.sign(
                &with("iss", json!(format!("{}/", common::entra_issuer()))),
                Algorithm::RS256,
            ),
        ),
        (
            "tid-mismatch",
            rsa_a.sign(&with("tid", json!(partner_tenant)), Algorithm::RS256),
        ),
        ("dup-iss", {
            let text = c.to_string();
            let payload = format!("{{\"iss\":\"https://evil.example/\",{}", &text[1..]);
            rsa_a.sign_segments(
                &b64(&json!({"alg": "RS256", "kid": "rsa-a"})),
                &base64_url(payload.as_bytes()),
                Algorithm::RS256,
            )
        }),
        ("signature-stripped", format!("{valid_input}.")),
        ("signature-padded", format!("{valid}==")),
        (
            "signature-truncated",
            format!("{valid_input}.{}", &valid_sig[..valid_sig.len() - 4]),
        ),
        (
            "es256-zero",
            format!(
                "{}.{}",
                TestKey::ec_p256()
                    .sign(&c, Algorithm::ES256)
                    .rsplit_once('.')
                    .unwrap()
                    .0,
                base64_url(&[0u8; 64])
            ),
        ),
        ("many-dots", "a.b.c.d.e".into()),
        ("empty-segments", "..".into()),
    ];
    for (name, token) in &tokens {
        write("token", name, token.as_bytes());
        if let Some(payload) = token.split('.').nth(1) {
            use base64::Engine as _;
            if let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) {
                write("claims", name, &bytes);
            }
        }
    }
    write(
        "claims",
        "dup-nested",
        br#"{"iss":"x","groups":[{"a":1,"a":2}]}"#,
    );
    write(
        "claims",
        "deep",
        format!("{{\"x\":{}{}}}", "[".repeat(200), "]".repeat(200)).as_bytes(),
    );
    write("claims", "overage", br#"{"_claim_names":{"groups":"src1"},"_claim_sources":{"src1":{"endpoint":"x"}},"oid":"a"}"#);

    write("config", "entra.json", config().to_string().as_bytes());
    let filters = mlgate_harness::host::workspace_root().join("filters");
    for entry in std::fs::read_dir(filters).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            write(
                "config",
                path.file_name().unwrap().to_str().unwrap(),
                &std::fs::read(&path).unwrap(),
            );
        }
    }
    write("config", "hmac-short.json", br#"{"providers":[{"name":"p","issuer":"https://i","audiences":["a"],"algorithms":["HS256"],"shared_secret":"c2hvcnQ"}],"routes":[]}"#);

    let routes = [
        ("infer", format!("POST\nml.contoso.example\n/v2/models/fraud/infer\nauthorization: Bearer {valid}\n/v2/models/{{model}}/infer\n/v2/models/a/infer")),
        ("predict", "GET\ngpu1.lab.contoso.example:443\n/v1/models/m1:predict\nx-canary: 1\n/v1/models/{model}:predict\n/v1/models/x:predict".to_string()),
        ("dotdot", "POST\nml.contoso.example\n/v2/models/a/../b/infer\n\n/v2/models/{model}/infer\n/v2/models/../infer".to_string()),
        ("encoded", "POST\nml.contoso.example\n/v2/models/%2e%2e/infer\n\n/{a}/{b}\n/x/%2F".to_string()),
        ("admin", "GET\nML.CONTOSO.EXAMPLE\n/admin/x;y\nx-canary: \n/admin/{p}\n/admin/.".to_string()),
        ("query", "GET\nml.contoso.example\n/healthz?/../score\n\n/{a}\n/".to_string()),
    ];
    for (name, text) in routes {
        write("routes", name, text.as_bytes());
    }
}
