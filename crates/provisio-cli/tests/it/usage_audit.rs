//! `provisio usage …` and `provisio audit …` against a live `serve` whose server runs the
//! example `script` module: its accounts file is the remote, so a test sets the usage and
//! the drift there and checks that the CLI prints what the remote holds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{spawn_serve, Served};

/// `serve` over a `script` server `box` (the example module) and the product `plan`.
fn serve_with_example_module() -> Served {
    let dir = crate::dir_with_example_module();
    std::fs::write(
        dir.path().join("provisio.toml"),
        r#"
database_url = "sqlite://provisio.db"
modules_dir = "modules"

[jobs]
poll_interval_ms = 50

[[servers]]
name = "box"
module = "script"
settings = { executable = "example-accounts.py", timeout_seconds = 30 }

[[products]]
name = "plan"
module = "script"
settings = { package = "plan" }
"#,
    )
    .unwrap();
    let (child, addr) = spawn_serve(dir.path(), &["--config", "provisio.toml"], "serve.log");
    Served {
        child,
        url: format!("http://{addr}"),
        dir,
    }
}

fn accounts_path(s: &Served) -> PathBuf {
    s.dir.path().join("modules").join("example-accounts.json")
}

/// Changes "the remote": the example module's accounts file, read and written whole while
/// no job runs.
fn edit_remote(path: &Path, change: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let mut data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    change(data["accounts"].as_object_mut().unwrap());
    std::fs::write(path, data.to_string()).unwrap();
}

fn effects(s: &Served) -> usize {
    std::fs::read_to_string(s.dir.path().join("modules").join("example-effects.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// A client with the services `alice` and `bob` on `plan`, active on the remote.
fn two_active_services(s: &Served) -> (i64, i64) {
    let c = s.json(&[
        "client",
        "add",
        "--name",
        "Usage Owner",
        "--email",
        "usage@example.test",
    ]);
    let client = c["id"].as_i64().unwrap().to_string();
    let mut ids = Vec::new();
    for user in ["alice", "bob"] {
        let svc = s.json(&[
            "service",
            "add",
            "--client",
            &client,
            "--product",
            "plan",
            "--username",
            user,
        ]);
        ids.push(svc["id"].as_i64().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = s.json(&["service", "list", "--client", &client]);
        if list
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "active")
        {
            break;
        }
        assert!(Instant::now() < deadline, "creates did not finish: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (ids[0], ids[1])
}

/// The rows of a printed table, each as its trimmed cells.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| {
            l.trim_matches('│')
                .split('┆')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The first row whose cell `col` is `value`.
fn row(table: &str, col: usize, value: &str) -> Vec<String> {
    rows(table)
        .into_iter()
        .find(|r| r.get(col).is_some_and(|c| c == value))
        .unwrap_or_else(|| panic!("no row with {value}: {table}"))
}

/// The command fails with one line on stderr that names `field` and says 422.
fn refused(s: &Served, args: &[&str], field: &str) -> String {
    let out = s.cli(args, None);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "provisio {args:?} was accepted");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("422") && err.contains(field), "{err}");
    err
}

#[test]
fn usage_sync_show_history_and_topups_print_what_the_remote_reported() {
    let s = serve_with_example_module();
    let (alice, bob) = two_active_services(&s);
    let accounts = accounts_path(&s);
    edit_remote(&accounts, |a| {
        a["alice"]["usage"] = json!({"disk": {"used": 1234, "limit": 5000, "unit": "bytes"}});
        a.insert(
            "stray7".into(),
            json!({"status": "active", "package": "plan"}),
        );
    });

    // A sync run to its end: one table row per server with the counts of this run.
    let table = s.ok(&["usage", "sync"]);
    assert!(table.contains("SERVICES UPDATED"), "{table}");
    // SERVER STATE SERVICES-UPDATED UNKNOWN EXCEEDED PAGES ERRORS DURATION
    let cells = row(&table, 0, "box");
    assert_eq!(
        cells[..7],
        ["box", "done", "2", "1", "0", "1", "0"],
        "{table}"
    );
    assert!(
        table.contains("unknown usernames include stray7"),
        "{table}"
    );
    let first = table
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("usage sync "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|id| id.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("the first line names the run: {table}"));

    // `usage run ID` shows the stored run, the same in JSON.
    let run = s.json(&["usage", "run", &first.to_string()]);
    assert_eq!(run["id"], first);
    assert_eq!(run["state"], "done");
    let servers = run["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{run}");
    assert_eq!(servers[0]["server"], "box");
    assert_eq!(servers[0]["services_updated"], 2);
    assert_eq!(servers[0]["unknown_usernames"], 1);
    assert_eq!(servers[0]["unknown_sample"], json!(["stray7"]));
    let table = s.ok(&["usage", "run", &first.to_string()]);
    assert!(
        table.starts_with(&format!("usage sync {first} done")),
        "{table}"
    );

    // A top-up, sent twice under one key: recorded once.
    let alice_id = alice.to_string();
    let t = s.json(&[
        "usage", "topup", &alice_id, "--metric", "disk", "--amount", "1000", "--note", "bonus",
        "--key", "t-1",
    ]);
    assert_eq!(t["metric"], "disk");
    assert_eq!(t["amount"], 1000.0);
    assert_eq!(t["note"], "bonus");
    let again = s.json(&[
        "usage", "topup", &alice_id, "--metric", "disk", "--amount", "1000", "--key", "t-1",
    ]);
    assert_eq!(again["id"], t["id"], "{again}");

    // `usage show`: the reported figures, the limit plus the top-up as the quota.
    let shown = s.json(&["usage", "show", &alice_id]);
    assert_eq!(shown["service_id"], alice);
    let disk = &shown["metrics"][0];
    assert_eq!(disk["metric"], "disk", "{shown}");
    assert_eq!(disk["used"], 1234.0);
    assert_eq!(disk["limit"], 5000.0);
    assert_eq!(disk["unit"], "bytes");
    assert_eq!(disk["topup_left"], 1000.0);
    assert_eq!(disk["quota"], 6000.0);
    assert_eq!(disk["exceeded"], false);
    assert_eq!(shown["topups"].as_array().unwrap().len(), 1, "{shown}");
    let table = s.ok(&["usage", "show", &alice_id]);
    // METRIC USED LIMIT UNIT TOP-UP-USED TOP-UP-LEFT QUOTA EXCEEDED PERIOD
    let cells = row(&table, 0, "disk");
    assert_eq!(
        cells[..8],
        ["disk", "1234.0", "5000.0", "bytes", "0.0", "1000.0", "6000.0", "false"],
        "{table}"
    );
    assert!(
        table.contains("top-ups:") && table.contains("bonus"),
        "{table}"
    );
    // bob reported the module's default: nothing used, no limit.
    let table = s.ok(&["usage", "show", &bob.to_string()]);
    let cells = row(&table, 0, "disk");
    assert_eq!(cells[1..3], ["0.0", "unlimited"], "{table}");

    // The remote reports more; the history holds one reading per change, oldest first.
    edit_remote(&accounts, |a| {
        a["alice"]["usage"]["disk"]["used"] = json!(2500);
    });
    let second = s.json(&["usage", "sync", "--server", "box"]);
    assert_eq!(second["state"], "done", "{second}");
    assert_ne!(second["id"], first);
    let history = s.json(&["usage", "history", &alice_id, "--metric", "disk"]);
    let used: Vec<f64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["used"].as_f64().unwrap())
        .collect();
    assert_eq!(used, [1234.0, 2500.0], "{history}");
    let table = s.ok(&["usage", "history", &alice_id]);
    assert!(
        table.contains("1234") && table.contains("2500") && table.contains("5000"),
        "{table}"
    );

    // Bad input: one line naming the field and its rule.
    let err = refused(
        &s,
        &[
            "usage", "topup", &alice_id, "--metric", "Disk!", "--amount", "5",
        ],
        "metric",
    );
    assert!(!err.contains("amount"), "{err}");
    refused(
        &s,
        &[
            "usage", "topup", &alice_id, "--metric", "disk", "--amount", "0",
        ],
        "amount",
    );
    let out = s.cli(&["usage", "sync", "--server", "no-such-box"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no-such-box"),
        "{err}"
    );
    let out = s.cli(&["usage", "show", "999"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}

#[test]
fn audit_run_show_and_a_dry_run_fix_print_the_drift_and_change_nothing() {
    let s = serve_with_example_module();
    let (_alice, bob) = two_active_services(&s);
    let accounts = accounts_path(&s);
    edit_remote(&accounts, |a| {
        a["bob"]["status"] = json!("suspended");
        a.insert(
            "stray7".into(),
            json!({"status": "active", "package": "plan"}),
        );
    });
    let effects_before = effects(&s);

    // Run: the summary per server, then where to look next.
    let table = s.ok(&["audit", "run"]);
    // AUDIT SERVER STATE REMOTE LOCAL ORPHAN MISSING STATUS PACKAGE FIX NOTE
    let cells = row(&table, 1, "box");
    assert_eq!(
        cells[1..9],
        ["box", "done", "3", "2", "1", "0", "1", "0"],
        "{table}"
    );
    assert!(table.contains("provisio audit show"), "{table}");
    let id = cells[0].to_string();

    // Show, in JSON: the audit and each finding with the two sides.
    let shown = s.json(&["audit", "show", &id]);
    assert_eq!(shown["audit"]["id"].to_string(), id);
    assert_eq!(shown["audit"]["state"], "done");
    assert_eq!(shown["audit"]["remote_accounts"], 3);
    let findings = shown["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{shown}");
    let orphan = findings
        .iter()
        .find(|f| f["kind"] == "orphan_remote")
        .unwrap();
    assert_eq!(orphan["username"], "stray7");
    assert_eq!(orphan["remote_status"], "active");
    let mismatch = findings
        .iter()
        .find(|f| f["kind"] == "status_mismatch")
        .unwrap();
    assert_eq!(mismatch["username"], "bob");
    assert_eq!(mismatch["service_id"], bob);
    assert_eq!(mismatch["local_status"], "active");
    assert_eq!(mismatch["remote_status"], "suspended");

    // The findings as a table, one kind, and as CSV.
    let table = s.ok(&["audit", "show", &id]);
    // KIND USERNAME SERVICE LOCAL REMOTE LOCAL-PACKAGE REMOTE-PACKAGE FIX
    assert_eq!(
        row(&table, 1, "stray7")[..5],
        ["orphan_remote", "stray7", "-", "-", "active"],
        "{table}"
    );
    let bob_id = bob.to_string();
    assert_eq!(
        row(&table, 1, "bob")[..7],
        [
            "status_mismatch",
            "bob",
            bob_id.as_str(),
            "active",
            "suspended",
            "plan",
            "plan"
        ],
        "{table}"
    );
    let only = s.json(&["audit", "show", &id, "--kind", "orphan_remote"]);
    let only = only["findings"].as_array().unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["username"], "stray7");
    let csv = s.ok(&["audit", "show", &id, "--csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some(
            "kind,username,service_id,local_status,remote_status,local_package,remote_package,fix"
        )
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows.contains(&format!("status_mismatch,bob,{bob},active,suspended,plan,plan,").as_str()),
        "{csv}"
    );
    let summary = s.ok(&["audit", "show", &id, "--summary"]);
    assert!(!summary.contains("stray7"), "{summary}");

    // A dry run of a remote fix: the actions it would take, and nothing done.
    let jobs_before = s
        .json(&["queue", "list", "--limit", "1000"])
        .as_array()
        .unwrap()
        .len();
    let table = s.ok(&[
        "audit",
        "run",
        "--server",
        "box",
        "--fix",
        "remote",
        "--dry-run",
    ]);
    assert!(
        table.contains("remote (dry run)")
            && table.contains("actions a fix would take (nothing was changed)"),
        "{table}"
    );
    let planned = s.json(&["audit", "run", "--fix", "remote", "--dry-run"]);
    let planned = planned.as_array().unwrap();
    assert_eq!(planned.len(), 1, "{planned:?}");
    assert_eq!(planned[0]["audit"]["dry_run"], true);
    assert_eq!(planned[0]["audit"]["fix"], "remote");
    let bob_fix = planned[0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["username"] == "bob")
        .and_then(|f| f["fix"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(bob_fix.contains("unsuspend"), "{planned:?}");
    assert!(table.contains(&bob_fix), "{table}");
    let remote: Value = serde_json::from_str(&std::fs::read_to_string(&accounts).unwrap()).unwrap();
    assert_eq!(remote["accounts"]["bob"]["status"], "suspended");
    assert!(remote["accounts"]["stray7"].is_object());
    assert_eq!(effects(&s), effects_before, "a dry run reached the remote");
    let jobs_after = s
        .json(&["queue", "list", "--limit", "1000"])
        .as_array()
        .unwrap()
        .len();
    assert_eq!(jobs_after, jobs_before, "a dry run queued a job");
    let listed = s.json(&["audit", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");

    // Bad input: a local fix without the client to import orphans under.
    refused(&s, &["audit", "run", "--fix", "local"], "client");
    let out = s.cli(&["audit", "show", "999"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
}
