//! Claim extraction and registered-claim checks: arbitrary bytes as a token payload (read as
//! `Payload`, strict JSON), then `check_claims` against both providers' rules and
//! `claims::identity`, which must agree with the identity from the decoded map.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlgate::payload::Payload;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use mlgate::verify::{check_claims, dangerous};
use serde_json::Value;

thread_local! {
    static POLICY: mlgate::policy::Policy =
        mlgate_fuzz::policy();
}

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = Payload::parse(data.to_vec()) else {
        return;
    };
    let claims = payload.to_map();
    POLICY.with(|policy| {
        for provider in &policy.providers {
            // The payload under an RS256 header, as a token: the only way to an unverified one.
            let text = format!("eyJhbGciOiJSUzI1NiJ9.{}.AA", URL_SAFE_NO_PAD.encode(data));
            let Ok(token) = dangerous::peek(&text) else {
                continue;
            };
            if let Ok(checked) = check_claims(token, &provider.rules, mlgate_fuzz::NOW) {
                // Passing claims have an integer exp in the future (require_exp is on).
                let exp = checked.exp().expect("require_exp");
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
