//! `serve` with JSON logs: every line is one JSON object, and a job attempt's lines carry
//! the `job.attempt` span with the job, service, server, action, attempt and the trace id
//! the job record shows, so a log search joins Provisio's lines with a remote's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_provisio");

/// Stops `serve` however the test ends.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn cli(dir: &Path, url: &str, args: &[&str]) -> String {
    let (ok, out, err) = crate::quickstart::cli(dir, url, args);
    assert!(ok, "provisio {args:?}: {out}{err}");
    out
}

#[test]
fn json_log_lines_carry_the_attempt_span_and_the_jobs_trace_id() {
    let dir = tempfile::tempdir().unwrap();
    crate::quickstart::copy_examples(dir.path());
    let log = dir.path().join("serve.log");
    let child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(["--config", "examples/provisio.toml"])
        .current_dir(dir.path())
        .env_remove("PROVISIO_DATABASE_URL")
        .env("PROVISIO_LOG_JSON", "true")
        .env("PROVISIO_LOG", "info,provisio_engine=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut served = Serving(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let found = json_lines(&log).into_iter().find_map(|l| {
            (l["fields"]["message"] == "provisio listening")
                .then(|| l["fields"]["addr"].as_str().map(str::to_string))
                .flatten()
        });
        if let Some(addr) = found {
            break addr;
        }
        if let Ok(Some(status)) = served.0.try_wait() {
            panic!("serve exited with {status}");
        }
        assert!(Instant::now() < deadline, "serve did not start");
        std::thread::sleep(Duration::from_millis(25));
    };
    let url = format!("http://{addr}");
    let run = |args: &[&str]| cli(dir.path(), &url, args);
    run(&[
        "client",
        "add",
        "--name",
        "Acme",
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
    let job = run(&[
        "service", "suspend", "1", "--reason", "holiday", "--wait", "30",
    ]);
    assert!(job.contains("done"), "{job}");

    let jobs: Value = serde_json::from_str(&run(&["queue", "list", "-o", "json"])).unwrap();
    let suspend = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["action"] == "suspend")
        .unwrap_or_else(|| panic!("no suspend job: {jobs}"));
    let trace = suspend["trace_id"]
        .as_str()
        .expect("the job keeps a trace id");

    // The attempt's own line, logged inside its span: the span names the job it ran.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = json_lines(&log).into_iter().find(|l| {
            l["fields"]["message"] == "job attempt finished" && l["span"]["trace_id"] == trace
        });
        if let Some(l) = found {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no attempt line with trace {trace}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let span = &line["span"];
    assert_eq!(span["name"], "job.attempt", "{line}");
    assert_eq!(span["job"], suspend["id"], "{line}");
    assert_eq!(span["service"], 1, "{line}");
    assert_eq!(span["server"], suspend["server_id"], "{line}");
    assert_eq!(span["action"], "suspend", "{line}");
    assert_eq!(span["attempt"], 1, "{line}");
    assert_eq!(line["fields"]["outcome"], "ok", "{line}");
    assert!(
        line["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["name"] == "job.attempt")),
        "{line}"
    );
}
