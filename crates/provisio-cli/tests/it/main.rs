//! The `provisio` binary end to end: `serve` in a temporary directory, then the CLI
//! commands a newcomer types, checked through their output.

mod chaos;
mod crash;
mod json_logs;
mod quickstart;
mod rolling;
mod secret_key;
mod usage_audit;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_provisio");

struct Served {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory whose `modules/` holds the example `script` module
/// (`examples/modules/example-accounts.py`), for a `provisio.toml` the test writes beside it.
fn dir_with_example_module() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    let example: std::path::PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "examples",
        "modules",
        "example-accounts.py",
    ]
    .iter()
    .collect();
    std::fs::copy(&example, modules.join("example-accounts.py")).unwrap();
    dir
}

/// Starts `provisio serve` on port 0 in `dir` (so parallel tests never race for a port),
/// logging to `dir/log`, and returns it with the address it reports listening on.
pub fn spawn_serve(dir: &Path, args: &[&str], log: &str) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISIO_DATABASE_URL")
        .env("PROVISIO_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let plain = strip_ansi(&std::fs::read_to_string(dir.join(log)).unwrap_or_default());
        if let Some(line) = plain.lines().find(|l| l.contains("provisio listening")) {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .expect("the listening line names its address")
                .to_string();
            return (child, addr);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("serve exited with {status}: {plain}");
        }
        assert!(Instant::now() < deadline, "serve did not start: {plain}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The log may be coloured: drop escape sequences before reading `addr=…`.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn serve(extra_args: &[&str]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = spawn_serve(dir.path(), extra_args, "serve.log");
    Served {
        child,
        url: format!("http://{addr}"),
        dir,
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
}

impl Served {
    /// Runs the CLI in the server's directory, where it finds `provisio.admin-key`.
    fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .env("PROVISIO_URL", &self.url)
            .env_remove("PROVISIO_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(s) = stdin {
            child
                .stdin
                .as_mut()
                .unwrap()
                .write_all(s.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args, None);
        assert!(
            out.status.success(),
            "provisio {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }
}

#[test]
fn a_newcomer_adds_a_client_server_product_and_service() {
    let s = serve(&[]);
    // The first start made the database, the secret key and the admin key, 0600.
    for f in ["provisio.db", "provisio.secret-key", "provisio.admin-key"] {
        assert!(s.dir.path().join(f).exists(), "{f} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["provisio.secret-key", "provisio.admin-key"] {
            let mode = std::fs::metadata(s.dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{f} is readable by others");
        }
    }

    let modules = s.ok(&["module", "list"]);
    assert!(modules.contains("script"), "{modules}");

    let client = s.json(&[
        "client",
        "add",
        "--name",
        "Acme Ltd",
        "--email",
        "ops@acme.example",
        "--field",
        "tier=gold",
    ]);
    assert_eq!(client["custom_fields"]["tier"], "gold");
    let client_id = client["id"].as_i64().unwrap().to_string();

    let out = s.cli(
        &[
            "server",
            "add",
            "box-1",
            "--module",
            "script",
            "--set",
            "executable=accounts.sh",
            "--set",
            "timeout_seconds=20",
            "--set-stdin",
            "api_secret",
            "-o",
            "json",
        ],
        Some("cli-Secret-42\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(server["secrets"], serde_json::json!(["api_secret"]));
    assert_eq!(server["settings"]["timeout_seconds"], 20);
    assert!(!server.to_string().contains("cli-Secret-42"), "{server}");

    let base = s.json(&[
        "product",
        "add",
        "starter",
        "--module",
        "script",
        "--set",
        "quota=100",
        "--set",
        "package=starter",
    ]);
    assert_eq!(base["effective_settings"]["quota"], 100);
    let pro = s.json(&[
        "product",
        "add",
        "pro",
        "--module",
        "script",
        "--auto-setup",
        "manual",
        "--extends",
        "starter",
        "--set",
        "quota=1000",
    ]);
    assert_eq!(pro["effective_settings"]["package"], "starter");
    assert_eq!(pro["effective_settings"]["quota"], 1000);

    let out = s.cli(
        &[
            "service",
            "add",
            "--client",
            &client_id,
            "--product",
            "pro",
            "--username",
            "acme1",
            "--password-stdin",
            "--invoice",
            "inv-1001",
            "-o",
            "json",
        ],
        Some("a-long-password-1\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(svc["status"], "pending");
    assert_eq!(svc["server_id"], server["id"]);
    let svc_id = svc["id"].as_i64().unwrap().to_string();

    assert_eq!(
        s.ok(&["service", "password", &svc_id]).trim(),
        "a-long-password-1"
    );
    let table = s.ok(&["service", "list", "--invoice", "inv-1001"]);
    assert!(
        table.contains("acme1") && table.contains("pending"),
        "{table}"
    );
    assert!(!table.contains("a-long-password-1"));
    let shown = s.ok(&["client", "show", &client_id]);
    assert!(shown.contains("Acme Ltd"), "{shown}");

    // A bad value: one clear line naming the field, non-zero exit.
    let out = s.cli(
        &[
            "server",
            "add",
            "box-2",
            "--module",
            "script",
            "--set",
            "timeout_seconds=0",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("settings.timeout_seconds") && err.contains("422"),
        "{err}"
    );
    assert!(err.contains("settings.executable"), "{err}");

    // Not found, and a wrong key.
    let out = s.cli(&["client", "show", "999"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let out = Command::new(BIN)
        .args(["client", "list"])
        .env("PROVISIO_URL", &s.url)
        .env("PROVISIO_API_KEY", "pvo_nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // The server log holds no secret.
    let log = log(s.dir.path());
    assert!(!log.contains("a-long-password-1") && !log.contains("cli-Secret-42"));
}

#[test]
fn key_create_bootstraps_access_and_migrate_reports() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("k.db").display());
    let out = Command::new(BIN)
        .args(["migrate", "--database-url", &db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args([
            "key",
            "create",
            "--name",
            "billing",
            "--role",
            "billing",
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.lines().count(), 1, "the key alone on stdout");
    assert!(key.starts_with("pvo_") && key.trim().len() == 68, "{key}");
    let out = Command::new(BIN)
        .args(["key", "list", "--database-url", &db])
        .output()
        .unwrap();
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.contains("billing") && !list.contains(key.trim()),
        "{list}"
    );
    // A duplicate name is one clear line.
    let out = Command::new(BIN)
        .args([
            "key",
            "create",
            "--name",
            "billing",
            "--role",
            "billing",
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("name is already taken") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn serve_refuses_a_bad_declared_entry_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[servers]]\nname = \"box\"\nmodule = \"script\"\nsettings = { timeout_seconds = 5 }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("servers[0]") && err.contains("settings.executable"),
        "{err}"
    );
}

#[test]
fn handlers_and_rules_through_the_cli() {
    let s = serve(&[]);
    s.ok(&["server", "add", "n1", "--module", "noop"]);
    s.ok(&["product", "add", "basic", "--module", "noop"]);
    let h = s.json(&[
        "handler",
        "add",
        "billing",
        "--kind",
        "http",
        "--phase",
        "notify",
        "--events",
        "service.*,client.created",
        "--endpoint",
        "http://127.0.0.1:9/hook",
    ]);
    assert!(h["secret"].as_str().unwrap().starts_with("whsec_"), "{h}");
    assert_eq!(
        h["events"],
        serde_json::json!(["service.*", "client.created"])
    );
    let shown = s.json(&["handler", "show", "billing"]);
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown once: {shown}"
    );
    let rotated = s.json(&["handler", "rotate-secret", "billing"]);
    assert_ne!(rotated["secret"], h["secret"]);
    assert!(rotated["previous_secret_until"].is_string());
    let edited = s.json(&["handler", "edit", "billing", "--disable"]);
    assert_eq!(edited["status"], "disabled");
    let table = s.ok(&["handler", "list"]);
    assert!(
        table.contains("billing") && table.contains("disabled"),
        "{table}"
    );

    let bad = s.cli(
        &[
            "handler",
            "add",
            "x",
            "--kind",
            "http",
            "--phase",
            "gate",
            "--events",
            "client.created",
            "--endpoint",
            "http://127.0.0.1:9/",
        ],
        None,
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("events[0]"), "{err}");

    let r = s.json(&[
        "rule",
        "add",
        "signup",
        "--on",
        "client.created",
        "--action",
        "create_service",
        "--product",
        "basic",
    ]);
    assert_eq!(
        r["action"],
        serde_json::json!({"kind": "create_service", "product": "basic"})
    );
    let c = s.json(&[
        "client",
        "add",
        "--name",
        "Ann",
        "--email",
        "ann@example.test",
    ]);
    let id = c["id"].as_i64().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let runs = s.json(&["rule", "runs", "signup"]);
        if runs
            .as_array()
            .is_some_and(|r| r.first().is_some_and(|r| r["state"] == "done"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{runs}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let services = s.json(&["service", "list", "--client", &id]);
    assert_eq!(services.as_array().unwrap().len(), 1, "{services}");
    s.ok(&["rule", "delete", "signup"]);
    assert!(
        s.ok(&["rule", "list"]).contains("no rules") || !s.ok(&["rule", "list"]).contains("signup")
    );
}

#[test]
fn collect_and_group_commands_follow_the_seed() {
    let s = serve(&[]);
    s.ok(&["server", "add", "web", "--module", "noop"]);
    s.ok(&["product", "add", "hosting", "--module", "noop"]);
    let c = s.json(&[
        "client",
        "add",
        "--name",
        "Site Owner",
        "--email",
        "owner@example.test",
    ]);
    let client = c["id"].as_i64().unwrap().to_string();
    let inv = "master-invoice-123";
    for (user, flag) in [
        ("test-admin", "--invoice"),
        ("test-child-1", "--parent-invoice"),
        ("test-child-2", "--parent-invoice"),
    ] {
        s.ok(&[
            "service",
            "add",
            "--client",
            &client,
            "--product",
            "hosting",
            "--username",
            user,
            flag,
            inv,
        ]);
    }
    // Their creates run in the background; compare the notations once the statuses settle.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list = s.json(&["service", "list", "--client", &client]);
        let list = list.as_array().unwrap();
        if list.len() == 3 && list.iter().all(|x| x["status"] == "active") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let fields = "[service.username,service.status]";
    let forms = [
        format!("[service.parent_invoice:{inv}]"),
        format!("[\"service,parent_invoice\":{inv}]"),
        format!("[service:[parent_invoice:{inv}]]"),
        format!("service.parent_invoice={inv}"),
    ];
    let results: Vec<serde_json::Value> = forms
        .iter()
        .map(|f| s.json(&["collect", fields, f]))
        .collect();
    assert_eq!(results[0].as_array().unwrap().len(), 2, "{}", results[0]);
    assert!(results.iter().all(|r| *r == results[0]));
    let yaml = s.ok(&["collect", fields, &forms[2], "--yaml"]);
    assert!(
        yaml.contains("  service:\n    username: test-child-1\n    status: "),
        "{yaml}"
    );

    // The master and both children, dry run: nothing changes.
    let table = s.ok(&["group", "delete", inv, "--dry-run"]);
    for user in ["test-admin", "test-child-1", "test-child-2"] {
        assert!(table.contains(user), "{table}");
    }
    assert_eq!(table.matches("planned").count(), 3, "{table}");
    let members = s.json(&["group", "show", inv, "--children-only"]);
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    // Pages of two members: the command follows `next` and still covers the whole group.
    let paged = s.json(&["group", "delete", inv, "--dry-run", "--page-size", "2"]);
    let users: Vec<&str> = paged["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        ["test-admin", "test-child-1", "test-child-2"],
        "{paged}"
    );
    let shown = s.json(&["group", "show", inv, "--page-size", "1"]);
    assert_eq!(shown["members"].as_array().unwrap().len(), 3, "{shown}");
    assert!(shown["next"].is_null());
    let bad = s.cli(&["collect", "[]", "[service.status"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("filters:"));
}

#[test]
fn usage_policies_through_the_cli() {
    let s = serve(&[]);
    s.ok(&["product", "add", "gold", "--module", "noop"]);
    s.ok(&["product", "add", "throttled", "--module", "noop"]);
    let p = s.json(&[
        "product",
        "set-usage-policy",
        "gold",
        "--limit",
        "data=data_cap",
        "--metric",
        "data",
        "--on-exceed",
        "change_package",
        "--to-product",
        "throttled",
    ]);
    assert_eq!(p["limits"]["data"], "data_cap", "{p}");
    assert_eq!(p["on_exceed"]["product"], "throttled");
    let shown = s.json(&["product", "usage-policy", "gold"]);
    assert_eq!(shown, p);
    s.ok(&["product", "delete-usage-policy", "gold"]);
    let gone = s.cli(&["product", "usage-policy", "gold"], None);
    assert!(!gone.status.success());
}

#[test]
fn an_import_reports_its_bad_lines_and_runs_again_without_doubling() {
    let s = serve(&[]);
    s.ok(&["server", "add", "n1", "--module", "noop"]);
    s.ok(&["product", "add", "plan", "--module", "noop"]);
    let clients = s.dir.path().join("clients.jsonl");
    std::fs::write(
        &clients,
        "{\"name\": \"One\", \"email\": \"1@x.test\", \"external_id\": \"w-1\"}\n\
         # a comment line\n\
         {\"name\": \"Two\", \"email\": \"2@x.test\", \"external_id\": \"w-2\"}\n",
    )
    .unwrap();
    let done = s.json(&["client", "import", clients.to_str().unwrap()]);
    assert_eq!(done["created"], 2, "{done}");
    let one = s.json(&["client", "list"])[0]["id"].clone();

    // 25 orders, two of them bad, in batches of 10.
    let mut lines = String::new();
    for i in 0..25 {
        let product = if i == 4 || i == 17 {
            "no-such-plan"
        } else {
            "plan"
        };
        lines.push_str(&format!(
            "{{\"client_id\": {one}, \"product\": \"{product}\", \"username\": \"imp{i}\", \"external_id\": \"ws-{i}\"}}\n"
        ));
    }
    let orders = s.dir.path().join("orders.jsonl");
    std::fs::write(&orders, &lines).unwrap();
    let out = s.cli(
        &[
            "service",
            "import",
            orders.to_str().unwrap(),
            "--batch-size",
            "10",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "bad lines fail the command: {stdout}{stderr}"
    );
    assert!(stdout.contains("25 lines: 23 created"), "{stdout}");
    assert!(
        stdout.contains("line 5:") && stdout.contains("line 18:"),
        "{stdout}"
    );
    assert!(stderr.contains("2 of 25 lines were refused"), "{stderr}");

    // Fixed and run again: the 23 are found, only the 2 are new.
    std::fs::write(&orders, lines.replace("no-such-plan", "plan")).unwrap();
    let again = s.json(&[
        "service",
        "import",
        orders.to_str().unwrap(),
        "--batch-size",
        "10",
    ]);
    assert_eq!(again["already_there"], 23, "{again}");
    assert_eq!(again["created"], 2, "{again}");
    assert_eq!(again["failed"], 0);
    let all = s.json(&["service", "list", "--limit", "100"]);
    assert_eq!(all.as_array().unwrap().len(), 25);
}
