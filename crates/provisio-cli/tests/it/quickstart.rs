//! The README's quickstart, as a newcomer runs it: `serve --config examples/provisio.toml`
//! from the repository layout, then the CLI orders a service and runs its lifecycle.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provisio");

fn repo() -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "..", ".."].iter().collect()
}

pub(crate) fn cli(dir: &Path, url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("PROVISIO_URL", url)
        .env_remove("PROVISIO_API_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of the repository's examples in `dir`, so a run leaves nothing in the work tree.
pub(crate) fn copy_examples(dir: &Path) -> PathBuf {
    let examples = dir.join("examples");
    std::fs::create_dir_all(examples.join("modules")).unwrap();
    for f in ["provisio.toml", "modules/example-accounts.py"] {
        std::fs::copy(repo().join("examples").join(f), examples.join(f)).unwrap();
    }
    examples
}

#[test]
fn the_readme_quickstart_runs_a_service_through_its_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let examples = copy_examples(dir.path());
    let (mut serve, addr) = crate::spawn_serve(
        dir.path(),
        &["--config", "examples/provisio.toml"],
        "serve.log",
    );
    let url = format!("http://{addr}");

    let run = |args: &[&str]| {
        let (ok, out, err) = cli(dir.path(), &url, args);
        assert!(ok, "provisio {args:?}: {out}{err}");
        out
    };
    run(&[
        "client",
        "add",
        "--name",
        "Acme Ltd",
        "--email",
        "ops@acme.example",
    ]);
    run(&[
        "service",
        "add",
        "--client",
        "1",
        "--product",
        "pro",
        "--username",
        "acme1",
    ]);
    // The create runs by itself; wait for it through the service's job history.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let show = run(&["service", "show", "1", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&show).unwrap();
        if v["status"] == "active" {
            assert!(v["outputs"]["pass_key"].is_string(), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "create did not finish: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    for action in ["suspend", "unsuspend", "terminate"] {
        let mut args = vec!["service", action, "1", "--wait", "20"];
        if action == "suspend" {
            args.extend(["--reason", "holiday"]);
        }
        let out = run(&args);
        assert!(out.contains("done"), "{action}: {out}");
    }
    let jobs = run(&["service", "jobs", "1"]);
    for action in ["create", "suspend", "unsuspend", "terminate"] {
        assert!(jobs.contains(action), "{jobs}");
    }
    let queue = run(&["queue", "list", "--state", "done", "-o", "json"]);
    let done: serde_json::Value = serde_json::from_str(&queue).unwrap();
    assert_eq!(done.as_array().unwrap().len(), 4);
    assert!(run(&["server", "test", "box-1"]).contains("ok"));
    // What "the remote" saw: one effect per action, in order.
    let effects = std::fs::read_to_string(examples.join("modules/example-effects.jsonl")).unwrap();
    let actions: Vec<String> = effects
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(actions, ["create", "suspend", "unsuspend", "terminate"]);
    // An impossible action is one clear line.
    let (ok, _, err) = cli(dir.path(), &url, &["service", "suspend", "1"]);
    assert!(
        !ok && err.contains("409") && err.contains("terminated"),
        "{err}"
    );
    // The service's jobs name who asked for them: the admin key the CLI read.
    let jobs = run(&["service", "jobs", "1"]);
    assert!(jobs.contains("BY NAME") && jobs.contains("admin"), "{jobs}");

    // Keys over the API: a readonly key reads and cannot write; revoked, it stops working.
    let key = run(&["key", "create", "--name", "dashboard", "--role", "readonly"]);
    let key = key.trim();
    assert!(key.starts_with("pvo_"), "{key}");
    let as_dashboard = |args: &[&str]| {
        let mut all = vec!["--api-key", key];
        all.extend_from_slice(args);
        cli(dir.path(), &url, &all)
    };
    let (ok, out, err) = as_dashboard(&["service", "show", "1"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = as_dashboard(&["client", "add", "--name", "X", "--email", "x@example.test"]);
    assert!(
        !ok && err.contains("403") && err.contains("admin or operator or billing"),
        "{err}"
    );
    let list = run(&["key", "list"]);
    assert!(
        list.contains("dashboard") && list.contains("readonly") && !list.contains(key),
        "{list}"
    );
    assert!(run(&["key", "revoke", "dashboard"]).contains("revoked"));
    let (ok, _, err) = as_dashboard(&["service", "show", "1"]);
    assert!(!ok && err.contains("revoked"), "{err}");
    serve.kill().unwrap();
    serve.wait().unwrap();
}
