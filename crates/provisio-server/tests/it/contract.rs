//! The served API keeps the OpenAPI document's promises: schemathesis, written by others,
//! generates requests from `/openapi.json` against a live server and runs every check it
//! has (status codes, content types, headers, response schemas, valid data accepted,
//! invalid data refused, authentication honoured) with a fixed seed and a bounded budget.
//!
//! `PROVISIO_SCHEMATHESIS_EXAMPLES` (3) and `PROVISIO_SCHEMATHESIS_SECONDS` (300) raise the
//! budget for a run by hand.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app_with, Db};

/// The test venv's python, if it has schemathesis.
fn schemathesis_python() -> Option<String> {
    python_with("schemathesis")
}

/// The test venv's python, if it has `module`. Missing outside CI, the test is skipped
/// (with the reason printed); in CI (`CI` set) a missing peer fails it.
fn python_with(module: &str) -> Option<String> {
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let missing = |why: String| {
        assert!(!in_ci, "{why}");
        eprintln!("skipped: {why}");
        None
    };
    let Ok(python) = std::env::var("PROVISIO_TEST_PYTHON") else {
        return missing(format!(
            "PROVISIO_TEST_PYTHON is not set: run scripts/test, which installs {module}"
        ));
    };
    let found = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Some(python)
    } else {
        missing(format!(
            "{module} is not installed next to {python}: run scripts/test, which installs it"
        ))
    }
}

/// The figures of schemathesis's summary worth keeping in the test's output: operations
/// tested, cases generated, failures.
fn summary(out: &str) -> String {
    out.lines()
        .filter(|l| {
            let t = l.trim();
            t.starts_with("Selected:")
                || t.starts_with("Tested:")
                || t.contains(" generated")
                || t.starts_with('❌')
                || (t.starts_with("====") && t.contains(" in "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn schemathesis_finds_no_failure(db: Db) {
    let Some(python) = schemathesis_python() else {
        return;
    };
    // Schemathesis sends keyless and wrong keys on purpose (to check 401s) and many requests
    // at once: neither may turn into 429 or 503 for the rest of the run.
    let app = spawn_app_with(
        db,
        "[http]\nauth_failures_per_minute = 1000000\nmax_concurrent_requests = 4096\n",
    )
    .await;
    let (status, key) = app
        .post("/v1/keys", json!({"name": "schemathesis", "role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");

    let examples = std::env::var("PROVISIO_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "3".into());
    let hooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/schemathesis");
    let report = app.dir.path().join("schemathesis");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.args(["-m", "schemathesis.cli", "--no-color", "--config-file"])
        .arg(hooks.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("{}/openapi.json", app.base))
        .args(["--checks", "all", "--seed", "20261201", "--max-examples"])
        .arg(&examples)
        .args(["--workers", "1", "--request-timeout", "30"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .arg("--header")
        .arg(format!(
            "Authorization: Bearer {}",
            key["key"].as_str().unwrap()
        ))
        .env("SCHEMATHESIS_HOOKS", "provisio_hooks")
        .env("PYTHONPATH", &hooks)
        .env("PROVISIO_SCHEMATHESIS_KEY_ID", key["id"].to_string())
        .current_dir(app.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let seconds: u64 = std::env::var("PROVISIO_SCHEMATHESIS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let run = tokio::time::timeout(Duration::from_secs(seconds), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {seconds} s"))
        .expect("schemathesis ran");
    let out = String::from_utf8_lossy(&run.stdout);
    let err = String::from_utf8_lossy(&run.stderr);
    eprintln!("schemathesis ({db:?}):\n{}", summary(&out));
    assert!(
        run.status.success(),
        "schemathesis found failures ({db:?}):\n{out}\n{err}"
    );
    app.stop().await;
}

on_both!(schemathesis_finds_no_failure);

/// The document is usable by others: openapi-python-client generates a client from the
/// committed `docs/openapi.json` without a warning, and that client creates, reads and
/// lists a client and reads a 422 and a 404 as problems from a live server.
#[tokio::test]
async fn a_generated_python_client_works() {
    let Some(python) = python_with("openapi_python_client") else {
        return;
    };
    let app = spawn_app_with(Db::Sqlite, "").await;
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let out = app.dir.path().join("generated");
    std::fs::create_dir_all(&out).unwrap();
    let bin = PathBuf::from(&python).parent().unwrap().to_path_buf();
    // The generator formats its output with ruff, installed beside it.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let generated = tokio::process::Command::new(&python)
        .args(["-m", "openapi_python_client", "generate", "--meta", "none"])
        .args(["--fail-on-warning", "--path"])
        .arg(&doc)
        .arg("--output-path")
        .arg(out.join("provisio_client"))
        .env("PATH", &path)
        .output()
        .await
        .expect("openapi-python-client ran");
    assert!(
        generated.status.success(),
        "openapi-python-client refused the document:\n{}\n{}",
        String::from_utf8_lossy(&generated.stdout),
        String::from_utf8_lossy(&generated.stderr)
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/generated_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&app.base)
        .arg(&app.key)
        .env("PYTHONPATH", &out)
        .output()
        .await
        .expect("the generated client ran");
    assert!(
        run.status.success(),
        "the generated client and the server disagree:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    app.stop().await;
}
