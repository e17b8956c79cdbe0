//! The host against the real module: it finds (and freshens) `target/mlgate.wasm`, links every import the
//! filter has, and carries configuration, headers, local responses and logs both ways. The filter's own
//! behaviour is specified by the `filter_*` suites; these only use what the configuration reference documents.

use mlgate_harness::host::{wasm_path, Harness, HostError, Outcome};
use mlgate_harness::mint::{bearer, test_jwks, TestKey};
use serde_json::{json, Value};

fn config() -> Value {
    json!({
        "providers": [{
            "name": "test",
            "issuer": "https://idp.test",
            "audiences": ["api://ml"],
            "algorithms": ["RS256", "ES256", "ES384", "EdDSA"],
            "jwks": {"inline": test_jwks()}
        }],
        "routes": [
            {"name": "health", "match": {"path": "/healthz"}, "auth": "anonymous"},
            {"name": "score", "match": {"path_prefix": "/score", "methods": ["POST"]}}
        ]
    })
}

fn harness() -> Harness {
    Harness::load().unwrap().configure(config()).unwrap()
}

/// A token for alice that the configuration accepts, signed with `key`.
fn alice(h: &Harness, key: &TestKey) -> String {
    let now = h.now_unix();
    key.sign_default(&json!({"iss": "https://idp.test", "aud": "api://ml", "sub": "alice", "iat": now, "exp": now + 600}))
}

fn score(h: &Harness, token: &str) -> Outcome {
    h.request()
        .method("POST")
        .path("/score")
        .header("authorization", &bearer(token))
        .send()
        .unwrap()
}

#[test]
fn the_module_is_found_fresh_and_every_import_is_implemented() {
    let path = wasm_path().unwrap();
    assert!(path.is_file(), "{}", path.display());
    // Loading fails with MissingImports if the filter imports anything the host lacks.
    Harness::load().unwrap();
}

#[test]
fn an_accepted_configuration_reaches_the_filter() {
    let h = harness();
    assert!(
        !h.logs_containing("mlgate: configured").is_empty(),
        "{}",
        h.log_text()
    );
}

#[test]
fn a_refused_configuration_is_an_error_carrying_the_logs() {
    let err = Harness::load().unwrap().configure("").unwrap_err();
    assert!(matches!(err, HostError::ConfigureRefused { .. }), "{err}");
    assert!(err.logs_contain("invalid configuration"), "{err}");
    let mut bad = config();
    bad["routes"][1]["unknown_field"] = json!(1);
    let err = Harness::load().unwrap().configure(&bad).unwrap_err();
    assert!(err.logs_contain("unknown_field"), "{err}");
}

#[test]
fn a_local_response_carries_status_headers_and_json_body() {
    let h = harness();
    let out = h.request().method("POST").path("/score").send().unwrap();
    assert_eq!(out.status(), Some(401), "{out}");
    assert_eq!(
        out.response_header("www-authenticate"),
        Some("Bearer realm=\"mlgate\"")
    );
    assert_eq!(out.reason().as_deref(), Some("missing_token"));
    let out = h.request().path("/elsewhere").send().unwrap();
    assert_eq!(
        (out.status(), out.reason().as_deref()),
        (Some(403), Some("no_matching_route")),
        "{out}"
    );
}

#[test]
fn a_forwarded_request_shows_the_headers_the_filter_wrote_and_removed() {
    let h = harness();
    let out = h
        .request()
        .path("/healthz")
        .header("x-mlgate-principal", "forged")
        .send()
        .unwrap();
    assert!(out.is_forwarded(), "{out}");
    assert_eq!(out.forwarded_header("x-mlgate-principal"), None);

    for key in TestKey::all() {
        let out = score(&h, &alice(&h, &key));
        assert!(out.is_forwarded(), "{}: {out}", key.kid());
        assert_eq!(
            out.forwarded_header("x-mlgate-principal"),
            Some("alice"),
            "{}: {out}",
            key.kid()
        );
    }
}

/// The module's budget (README, "640 KB"): V8 compiles all of it when Envoy loads it, in every
/// worker, so its size is also Envoy's memory and start-up time.
#[test]
fn the_module_fits_its_640_kb_budget() {
    const BUDGET: u64 = 640 * 1024;
    let size = std::fs::metadata(wasm_path().unwrap()).unwrap().len();
    assert!(
        size <= BUDGET,
        "the module is {size} bytes (at most {BUDGET})"
    );
}

/// Envoy's V8 compiles every function of the module with TurboFan when it loads it (proxy-wasm's V8
/// has Liftoff off), and the memory that takes grows with the largest function; Envoy's allocator
/// keeps it afterwards. `wasm-opt -Os` with unlimited one-caller inlining once fused configure-time
/// code into one 54 KB function, which cost Envoy ~16 MiB of RSS (Makefile, `WASM_OPT_FLAGS`).
#[test]
fn no_function_of_the_module_is_large_enough_to_inflate_envoys_compile_memory() {
    const LARGEST_ALLOWED: usize = 16 * 1024;
    let bytes = std::fs::read(wasm_path().unwrap()).unwrap();
    let mut sizes = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::CodeSectionEntry(body) = payload.unwrap() {
            let range = body.range();
            sizes.push(usize::try_from(range.end - range.start).unwrap());
        }
    }
    assert!(sizes.len() > 100, "read {} function bodies", sizes.len());
    let largest = sizes.iter().copied().max().unwrap_or(0);
    assert!(
        largest <= LARGEST_ALLOWED,
        "the largest function body is {largest} bytes (at most {LARGEST_ALLOWED})"
    );
}

/// Envoy enters the VM for every callback a module exports. mlgate implements neither `on_log` nor
/// `on_done` (the SDK's defaults), so the build drops those two exports (Makefile, `UNEXPORTED`) and
/// Envoy skips them: two VM entries fewer per request. Every callback mlgate does implement stays.
#[test]
fn the_module_exports_the_callbacks_mlgate_implements_and_not_log_or_done() {
    let bytes = std::fs::read(wasm_path().unwrap()).unwrap();
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::ExportSection(section) = payload.unwrap() {
            for export in section {
                exports.push(export.unwrap().name.to_string());
            }
        }
    }
    for unused in ["proxy_on_log", "proxy_on_done"] {
        assert!(
            !exports.iter().any(|e| e == unused),
            "{unused} in {exports:?}"
        );
    }
    for used in [
        "memory",
        "_initialize",
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "proxy_on_request_trailers",
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_response_trailers",
        "proxy_on_http_call_response",
        "proxy_on_tick",
        "proxy_on_delete",
    ] {
        assert!(
            exports.iter().any(|e| e == used),
            "{used} not in {exports:?}"
        );
    }
}

/// `mlgate-harness bench` counts the WebAssembly operators of each request (wasmtime fuel), which
/// unlike time is the same on a busy machine.
#[test]
fn a_counting_harness_counts_the_operators_each_request_executes() {
    let h = Harness::builder()
        .count_wasm_operators()
        .load()
        .unwrap()
        .configure(config())
        .unwrap();
    let token = alice(&h, &TestKey::all().into_iter().next().unwrap());
    let operators_of_one_request = || {
        let before = h.wasm_operators().unwrap();
        let out = score(&h, &token);
        assert!(out.is_forwarded(), "{out}");
        h.wasm_operators().unwrap() - before
    };
    let verified = operators_of_one_request();
    // Verified again, and kept: a token enters the cache on its second use.
    let kept = operators_of_one_request();
    let cached = operators_of_one_request();
    assert!(
        1_000 < cached && cached < verified && cached < kept,
        "verified {verified}, verified and kept {kept}, then from the cache {cached}"
    );
    assert_eq!(harness().wasm_operators(), None);
}
