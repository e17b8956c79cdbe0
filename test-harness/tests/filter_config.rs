//! Through the real mlgate.wasm: a bad configuration is refused at configure time, with the
//! field path in the log, and a good one is accepted (every file in filters/).

mod common;

use common::*;
use mlgate_harness::host::Harness;
use serde_json::{json, Value};

/// Configures and expects refusal; returns the log text.
fn refused(config: Value) -> String {
    match Harness::load().unwrap().configure(config) {
        Ok(h) => panic!("configuration accepted; logs: {}", h.log_text()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn misspelled_group_is_refused_with_field_path() {
    let mut config = entra_config();
    config["routes"][1]["allow"][0]["groups"] = json!(["ml-scientsts"]);
    let text = refused(config);
    assert!(
        text.contains("mlgate: invalid configuration: routes[1].allow[0].groups: unknown group name \"ml-scientsts\" (not in providers[0].group_names)"),
        "{text}"
    );
}

#[test]
fn unknown_field_is_refused_with_its_path() {
    let mut config = entra_config();
    config["providers"][0]["audience"] = json!("x");
    let text = refused(config);
    assert!(
        text.contains("invalid configuration: providers[0]"),
        "{text}"
    );
    assert!(text.contains("audience"), "{text}");
}

#[test]
fn empty_configuration_is_refused() {
    let text = match Harness::load().unwrap().configure("") {
        Ok(_) => panic!("accepted"),
        Err(error) => error.to_string(),
    };
    assert!(text.contains("invalid configuration: (root)"), "{text}");
}

#[test]
fn non_json_configuration_is_refused() {
    let text = match Harness::load().unwrap().configure("providers: []") {
        Ok(_) => panic!("accepted"),
        Err(error) => error.to_string(),
    };
    assert!(text.contains("invalid configuration"), "{text}");
}

#[test]
fn misuse_is_refused_at_load() {
    let cases: Vec<(Box<dyn Fn(&mut Value)>, &str)> = vec![
        (
            Box::new(|c| {
                c["providers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("audiences");
            }),
            "providers[0].audiences",
        ),
        (
            Box::new(|c| c["providers"][0]["algorithms"] = json!([])),
            "providers[0].algorithms",
        ),
        (
            Box::new(|c| c["providers"][0]["algorithms"] = json!(["none"])),
            "providers[0].algorithms[0]",
        ),
        (
            Box::new(|c| c["routes"][2]["auth"] = json!("anonymous")),
            "routes[2].auth",
        ),
        (
            Box::new(|c| c["routes"][2]["match"]["path_template"] = json!("/v2/{a}/{a}")),
            "routes[2].match.path_template",
        ),
        (
            Box::new(|c| {
                let mut second = c["providers"][0].clone();
                second["name"] = json!("copy");
                c["providers"].as_array_mut().unwrap().push(second);
            }),
            "providers[1].issuer",
        ),
    ];
    for (mutate, path) in cases {
        let mut config = entra_config();
        mutate(&mut config);
        let text = refused(config);
        assert!(
            text.contains(&format!("invalid configuration: {path}")),
            "{path}: {text}"
        );
    }
}

#[test]
fn every_file_in_filters_is_accepted_by_the_wasm() {
    let dir = mlgate_harness::host::workspace_root().join("filters");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let h = Harness::load().unwrap().configure(text.as_str());
            assert!(h.is_ok(), "{}: {:?}", path.display(), h.err());
            count += 1;
        }
    }
    assert!(count >= 7);
}

#[test]
fn configure_logs_a_summary() {
    let h = harness(&entra_config());
    assert!(
        h.log_text()
            .contains("mlgate: configured: 1 provider(s), 4 route(s)"),
        "{}",
        h.log_text()
    );
}
