//! Route matching: arbitrary method / host / path (first three lines of the input) and one
//! header, through the gate; the rest of the input as a path template and a path for
//! `compile_template`, whose captures must never be empty, `.`, `..` or contain `/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

thread_local! {
    static GATE: mlgate::gate::Gate = mlgate_fuzz::gate();
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("GET");
    let host = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("/");
    let header = lines.next().unwrap_or("");
    let headers: Vec<(String, String)> = header
        .split_once(':')
        .map(|(n, v)| vec![(n.to_ascii_lowercase(), v.to_string())])
        .unwrap_or_default();
    GATE.with(|gate| {
        let _ = mlgate_fuzz::run(gate, method, path, host, &headers);
    });
    let template = lines.next().unwrap_or("/v2/models/{model}/infer");
    let candidate = lines.next().unwrap_or(path);
    if let Ok(template) = mlgate::config::compile_template(template) {
        if let Some(captures) = template.matches(candidate) {
            for c in captures {
                assert!(
                    !c.is_empty() && c != "." && c != ".." && !c.contains('/'),
                    "{c:?} from {candidate:?}"
                );
            }
        }
    }
});
