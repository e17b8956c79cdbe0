//! Claim extraction and registered-claim checks: arbitrary bytes as a token payload (read as
//! `Payload`, strict JSON), then `check_claims` against both providers' rules and
//! `claims::identity`, which must agree with the identity from the decoded map.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlgate::payload::Payload;
use mlgate::verify::{check_claims, unverified::Unverified};
use serde_json::Value;

thread_local! {
    static POLICY: mlgate::policy::Policy =
        mlgate::config::compile(mlgate_fuzz::config().to_string().as_bytes()).expect("config");
}

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = Payload::parse(data.to_vec()) else {
        return;
    };
    let claims = payload.to_map();
    POLICY.with(|policy| {
        for provider in &policy.providers {
            let token = Unverified {
                alg: jsonwebtoken::Algorithm::RS256,
                kid: None,
                claims: payload.clone(),
                iss: payload.get("iss"),
                signing_input: "",
                signature: Vec::new(),
            };
            if let Ok(exp) = check_claims(&token, &provider.rules, mlgate_fuzz::NOW) {
                // Passing claims have an integer exp in the future (require_exp is on).
                let exp = exp.expect("require_exp");
                assert!(mlgate_fuzz::NOW < exp + provider.rules.clock_skew_seconds);
                assert!(claims.get("iss").and_then(Value::as_str).is_some());
            }
        }
        for (index, provider) in policy.providers.iter().enumerate() {
            let identity = mlgate::claims::identity(
                index,
                &claims,
                &provider.claims,
                &provider.group_names,
                &policy.extra_claims,
            );
            assert_eq!(identity.extra.len(), policy.extra_claims.len());
            let from_payload = mlgate::claims::identity(
                index,
                &payload,
                &provider.claims,
                &provider.group_names,
                &policy.extra_claims,
            );
            assert_eq!(from_payload, identity);
        }
    });
});
