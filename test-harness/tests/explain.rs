//! `mlgate-harness explain` against the real module: its trace agrees with `check` on every case
//! of every shipped case file, and the command prints what it found. Needs `make build`.

use std::path::{Path, PathBuf};
use std::process::Command;

use mlgate_harness::check::{self, CaseFile};
use mlgate_harness::explain::{self, explaining};
use mlgate_harness::host::{workspace_root, Outcome};
use serde_json::Value;

/// Every `filters/<name>.json` with its `filters/cases/<name>.cases.json`, as `make check-cases`
/// pairs them.
fn shipped() -> Vec<(PathBuf, PathBuf)> {
    let filters = workspace_root().join("filters");
    let mut pairs: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(&filters)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("json"))
        .map(|policy| {
            let name = policy.file_stem().unwrap().to_str().unwrap().to_string();
            let cases = filters.join("cases").join(format!("{name}.cases.json"));
            (policy, cases)
        })
        .collect();
    pairs.sort();
    pairs
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn explain_agrees_with_check_on_every_shipped_case() {
    let pairs = shipped();
    assert!(pairs.len() >= 8, "{pairs:?}");
    let mut compared = 0;
    let mut disagreements = Vec::new();
    for (policy, cases) in pairs {
        let mut config = read(&policy);
        check::trust_test_keys(&mut config);
        let file: CaseFile = serde_json::from_value(read(&cases)).unwrap();
        let checking = check::configured(&config).unwrap();
        let traced_config = explaining(&config);
        let explaining = check::configured(&traced_config).unwrap();
        for case in &file.cases {
            let request = check::case_request(&checking, &config, case).unwrap();
            let checked = check::status_and_reason(&request.send(&checking).unwrap());
            let request = check::case_request(&explaining, &traced_config, case).unwrap();
            let explained = explain::explain_on(&explaining, &traced_config, &request)
                .unwrap_or_else(|e| panic!("{}: {}: {e:#}", policy.display(), case.name));
            // The trace says what the module did, and the module decided as without a trace.
            let what_it_did = check::status_and_reason(&explained.outcome);
            let traced = explained.status_and_reason();
            if traced != checked || what_it_did != checked {
                disagreements.push(format!(
                    "{}: {}: check {checked:?}, explain {traced:?} (the module did {what_it_did:?})",
                    policy.display(),
                    case.name
                ));
            }
            compared += 1;
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(compared > 50, "compared {compared} cases");
}

fn explain_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mlgate-harness"))
        .arg("explain")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap()
}

const DEMO_CLAIMS: &str = r#"{"iss":"http://127.0.0.1:9400","aud":"api://ml-scoring","tid":"6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7","sub":"dave","oid":"dave","groups":["d4e5f6a7-b8c9-4d0e-8f1a-2b3c4d5e6f70"],"scp":"score"}"#;

#[test]
fn explain_with_claims_says_it_signed_them_and_marks_the_deciding_rule() {
    let out = explain_cli(&[
        "--config",
        "filters/demo.json",
        "--claims",
        DEMO_CLAIMS,
        "--method",
        "POST",
        "--path",
        "/score",
        "--header",
        "azureml-model-deployment:finance-forecast",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("--claims signed by mlgate-harness with its test key"),
        "{text}"
    );
    assert!(text.contains("->deny[0]"), "{text}");
    assert!(
        text.contains("contractors (from d4e5f6a7-b8c9-4d0e-8f1a-2b3c4d5e6f70)"),
        "{text}"
    );
    assert!(
        text.contains("decision  denied, answered 403, reason denied_by_rule"),
        "{text}"
    );
}

#[test]
fn explain_json_prints_the_expanded_trace_without_the_token() {
    let token = mlgate_harness::mint::TestKey::rsa_a().sign_default(&serde_json::json!({
        "iss": "http://127.0.0.1:9400", "aud": "api://ml-scoring", "sub": "x", "exp": 4_000_000_000u64,
        "tid": "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7"
    }));
    // Not signed by a key the demo policy trusts (its keys are remote, and no IdP answers here).
    let out = explain_cli(&[
        "--config",
        "filters/demo.json",
        "--token",
        &token,
        "--method",
        "POST",
        "--path",
        "/score",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(trace["decision"]["reason"], "keys_unavailable", "{trace}");
    assert_eq!(trace["token"]["sha256"].as_str().unwrap().len(), 16);
    for part in token.split('.') {
        assert!(!text.contains(part), "a token segment in {text}");
    }
}

#[test]
fn explain_reports_a_refused_policy_naming_its_field() {
    let dir = std::env::temp_dir().join(format!("mlgate-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut policy = read(&workspace_root().join("filters/demo.json"));
    policy["routes"][1]["allow"][0]["groups"] = serde_json::json!(["ml-scientsts"]);
    let file = dir.join("typo.json");
    std::fs::write(&file, policy.to_string()).unwrap();
    let out = explain_cli(&[
        "--config",
        file.to_str().unwrap(),
        "--claims",
        DEMO_CLAIMS,
        "--method",
        "POST",
        "--path",
        "/score",
    ]);
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(error.contains("routes[1].allow[0].groups"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The demo policy with the harness's keys, and a request a contractor may not make.
fn contractor_request(
    harness: &mlgate_harness::host::Harness,
    config: &Value,
) -> check::PreparedRequest {
    let case: check::Case = serde_json::from_value(serde_json::json!({
        "name": "contractor, finance model",
        "request": {"method": "POST", "path": "/score", "headers": {"azureml-model-deployment": "finance-forecast"}},
        "token": {"claims": serde_json::from_str::<Value>(DEMO_CLAIMS).unwrap()},
        "expect": {"status": 403}
    }))
    .unwrap();
    check::case_request(harness, config, &case).unwrap()
}

fn demo_with_test_keys() -> Value {
    let mut config = read(&workspace_root().join("filters/demo.json"));
    check::trust_test_keys(&mut config);
    config
}

#[test]
fn without_explain_the_module_logs_no_trace() {
    let config = demo_with_test_keys();
    let harness = check::configured(&config).unwrap();
    let outcome = contractor_request(&harness, &config)
        .send(&harness)
        .unwrap();
    assert_eq!(outcome.status(), Some(403), "{outcome}");
    assert!(
        outcome
            .logs()
            .iter()
            .all(|l| !l.message.starts_with("mlgate trace")),
        "{outcome}"
    );
}

#[test]
fn with_explain_the_trace_is_one_info_line_and_the_reply_is_unchanged() {
    let config = demo_with_test_keys();
    let plain = check::configured(&config).unwrap();
    let reply = contractor_request(&plain, &config).send(&plain).unwrap();
    let traced_config = explaining(&config);
    let traced = check::configured(&traced_config).unwrap();
    let outcome = contractor_request(&traced, &traced_config)
        .send(&traced)
        .unwrap();
    let lines: Vec<_> = outcome
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("mlgate trace {"))
        .collect();
    assert_eq!(lines.len(), 1, "{outcome}");
    assert_eq!(lines[0].level, mlgate_harness::host::LogLevel::Info);
    let (
        Outcome::Responded {
            status,
            body,
            headers,
            ..
        },
        Outcome::Responded {
            status: s2,
            body: b2,
            headers: h2,
            ..
        },
    ) = (&reply, &outcome)
    else {
        panic!("{reply} / {outcome}")
    };
    assert_eq!((status, body, headers), (s2, b2, h2));
}
