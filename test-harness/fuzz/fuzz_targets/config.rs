//! Configuration compile: arbitrary bytes as the filter's JSON configuration. A configuration
//! that compiles must give a gate that decides requests without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let backend = mlgate::crypto::Backend::RUST;
    let Ok(policy) = mlgate::config::compile(data, &backend) else {
        return;
    };
    let gate = mlgate::gate::Gate::new(policy, backend);
    for (method, path) in [
        ("GET", "/healthz"),
        ("POST", "/score"),
        ("POST", "/v2/models/x/infer"),
        ("GET", "/a/../b"),
    ] {
        let _ = mlgate_fuzz::run(&gate, method, path, "ml.contoso.example", &[]);
    }
});
