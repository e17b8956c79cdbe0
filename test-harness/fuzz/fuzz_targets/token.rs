//! Token peek + verify: arbitrary bytes as a bearer token (and as a query/cookie token),
//! through `peek` and the whole gate at the seed tokens' clock.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlgate::verify::dangerous;

thread_local! {
    static GATE: mlgate::gate::Gate = mlgate_fuzz::gate();
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if dangerous::peek(token).is_ok() {
        // peek only ever accepts three canonical segments, the last one not empty.
        assert_eq!(token.matches('.').count(), 2);
        assert!(!token.ends_with('.'));
    }
    GATE.with(|gate| {
        let headers = vec![("authorization".to_string(), format!("Bearer {token}"))];
        let forwarded = mlgate_fuzz::run(gate, "POST", "/score", "ml.contoso.example", &headers);
        if forwarded.is_some() {
            // Only a token with a genuine signature gets through: the seeds hold some, and the
            // fuzzer may only reach them unchanged (or re-spelled, which peek refuses). Spaces
            // after the scheme (RFC 6750: 1*SP) and trailing whitespace are not the token's.
            assert!(dangerous::peek(token.trim_start_matches(' ').trim_end()).is_ok());
        }
        let cookie = vec![("cookie".to_string(), format!("session={token}"))];
        let _ = mlgate_fuzz::run(
            gate,
            "POST",
            "/v2/models/fraud/infer",
            "ml.contoso.example",
            &cookie,
        );
    });
});
