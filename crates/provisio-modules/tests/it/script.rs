//! Tests of the `script` module with real executables (sh and python3) written to a
//! temporary modules directory, and of `examples/modules/example-accounts.py` through it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisio_core::module::{
    Action, ActionRequest, ClientContext, ErrorKind, Module, ModuleError, ProductContext,
    RemoteAccount, ServerContext, ServiceContext,
};
use provisio_core::settings::Settings;
use provisio_modules::script::ScriptModule;
use serde_json::{json, Value};

const PASSWORD: &str = "svc-Pa55word-9f3b";
const API_SECRET: &str = "api-S3cret-77d1e0";
const NEW_PASSWORD: &str = "new-Pa55word-c4a2";

fn object(v: Value) -> Settings {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

/// A request for `action` on user `bob`, with `server` merged over the server settings.
fn request(action: Action, executable: &str, server: Value) -> ActionRequest {
    let mut settings = object(json!({
        "executable": executable,
        "timeout_seconds": 10,
        "api_secret": API_SECRET,
    }));
    settings.extend(object(server));
    ActionRequest {
        action,
        idempotency_key: "job-1-create".into(),
        server: ServerContext {
            id: 7,
            name: "box-1".into(),
            settings,
        },
        product: ProductContext {
            id: 3,
            name: "starter".into(),
            settings: object(json!({"package": "starter", "quota": 100})),
        },
        service: Some(ServiceContext {
            id: 42,
            username: "bob".into(),
            password: PASSWORD.to_string().into(),
            status: "pending".into(),
            settings: object(json!({"shell": "/bin/bash"})),
            outputs: Settings::new(),
        }),
        client: Some(ClientContext {
            id: 9,
            name: "Bob Example".into(),
            email: "bob@example.com".into(),
            custom_fields: BTreeMap::from([("vat".to_string(), "NL123".to_string())]),
        }),
        params: Settings::new(),
    }
}

struct Modules {
    dir: tempfile::TempDir,
    module: ScriptModule,
}

impl Modules {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let module = ScriptModule::new(dir.path().to_path_buf());
        Modules { dir, module }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes an executable script into the modules directory.
    fn script(&self, name: &str, body: &str) -> &Self {
        write_executable(&self.path().join(name), body);
        self
    }

    async fn call(
        &self,
        request: &ActionRequest,
    ) -> Result<provisio_core::module::ActionReply, ModuleError> {
        self.module.call(request).await
    }

    /// Runs a script that ignores its input and prints `reply`.
    async fn reply_with(
        &self,
        action: Action,
        reply: Value,
    ) -> Result<provisio_core::module::ActionReply, ModuleError> {
        let name = format!("reply-{}.sh", self.path().read_dir().unwrap().count());
        self.script(
            &name,
            &format!("#!/bin/sh\ncat >/dev/null\ncat <<'EOF'\n{reply}\nEOF\n"),
        );
        self.call(&request(action, &name, json!({}))).await
    }
}

fn write_executable(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn assert_kind(result: Result<impl std::fmt::Debug, ModuleError>, kind: ErrorKind) -> String {
    let err = result.expect_err("the call should fail");
    assert_eq!(err.kind, kind, "{}", err.message);
    err.message
}

fn assert_no_secrets(text: &str) {
    for secret in [PASSWORD, API_SECRET, NEW_PASSWORD] {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
}

#[tokio::test]
async fn a_success_reply_gives_its_outputs() {
    let m = Modules::new();
    let reply = m
        .reply_with(
            Action::Create,
            json!({"ok": true, "outputs": {"pass_key": "abc123", "port": 2222}}),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.outputs,
        object(json!({"pass_key": "abc123", "port": 2222}))
    );
    assert_eq!(reply.account, None);
}

#[tokio::test]
async fn lookup_reads_an_absent_and_a_present_account() {
    let m = Modules::new();
    let reply = m
        .reply_with(Action::Lookup, json!({"ok": true, "account": null}))
        .await
        .unwrap();
    assert_eq!(reply.account, None);

    let reply = m
        .reply_with(
            Action::Lookup,
            json!({"ok": true, "account": {"username": "bob", "status": "suspended", "package": "gold"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.account,
        Some(RemoteAccount {
            username: "bob".into(),
            status: Some("suspended".into()),
            package: Some("gold".into()),
        })
    );

    // Forgetting the field must not read as "no such account".
    assert_kind(
        m.reply_with(Action::Lookup, json!({"ok": true})).await,
        ErrorKind::Permanent,
    );
}

#[tokio::test]
async fn list_accounts_and_usage_replies_are_read() {
    let m = Modules::new();
    let reply = m
        .reply_with(
            Action::ListAccounts,
            json!({"ok": true, "accounts": [{"username": "a", "status": "active"}, {"username": "b"}], "next": "b"}),
        )
        .await
        .unwrap();
    let names: Vec<_> = reply.accounts.iter().map(|a| a.username.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(reply.accounts[0].status.as_deref(), Some("active"));
    assert_eq!(reply.next.as_deref(), Some("b"));

    let reply = m
        .reply_with(
            Action::Usage,
            json!({"ok": true, "usage": [{"username": "a", "metrics": {"disk": {"used": 5.5, "limit": 10, "unit": "GB"}}}]}),
        )
        .await
        .unwrap();
    let disk = &reply.usage[0].metrics["disk"];
    assert_eq!(
        (disk.used, disk.limit, disk.unit.as_deref()),
        (5.5, Some(10.0), Some("GB"))
    );
}

#[tokio::test]
async fn reported_errors_keep_their_kind_even_with_a_failing_exit_status() {
    let m = Modules::new();
    for (kind, expected) in [
        ("transient", ErrorKind::Transient),
        ("permanent", ErrorKind::Permanent),
        ("unknown", ErrorKind::Unknown),
    ] {
        let name = format!("{kind}.sh");
        m.script(
            &name,
            &format!(
                "#!/bin/sh\ncat >/dev/null\necho '{{\"ok\": false, \"error\": {{\"kind\": \"{kind}\", \"message\": \"remote said no\"}}}}'\nexit 4\n"
            ),
        );
        let err = m
            .call(&request(Action::Suspend, &name, json!({})))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ModuleError {
                kind: expected,
                message: "remote said no".into()
            }
        );
    }
}

#[tokio::test]
async fn output_that_is_no_reply_is_unknown_with_the_end_of_stderr() {
    let m = Modules::new();
    m.script(
        "crash.sh",
        "#!/bin/sh\ncat >/dev/null\necho 'starting'\necho 'Traceback: KeyError: quota' >&2\nexit 3\n",
    );
    let message = assert_kind(
        m.call(&request(Action::Create, "crash.sh", json!({})))
            .await,
        ErrorKind::Unknown,
    );
    assert!(message.contains("Traceback: KeyError: quota"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("the remote may have acted"), "{message}");

    m.script("array.sh", "#!/bin/sh\necho '[1, 2]'\n");
    let message = assert_kind(
        m.call(&request(Action::Create, "array.sh", json!({})))
            .await,
        ErrorKind::Unknown,
    );
    assert!(message.contains("not an object"), "{message}");
    assert!(message.contains("stderr: (empty)"), "{message}");

    m.script("no-ok.sh", "#!/bin/sh\necho '{\"outputs\": {}}'\n");
    assert_kind(
        m.call(&request(Action::Create, "no-ok.sh", json!({})))
            .await,
        ErrorKind::Unknown,
    );

    // Long stderr is cut to an excerpt.
    m.script(
        "noisy.sh",
        "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x >&2\necho 'the end' >&2\nexit 1\n",
    );
    let message = assert_kind(
        m.call(&request(Action::Create, "noisy.sh", json!({})))
            .await,
        ErrorKind::Unknown,
    );
    assert!(message.len() < 1000, "{}", message.len());
    assert!(message.ends_with("the end"), "{message}");
}

#[tokio::test]
async fn a_script_that_applies_then_exits_without_a_reply_is_unknown() {
    let m = Modules::new();
    // The effect lands on "the remote" (a file) before the script dies.
    m.script(
        "apply-then-fail.sh",
        "#!/bin/sh\ncat >/dev/null\necho created >> remote.txt\necho 'lost the reply' >&2\nexit 1\n",
    );
    let message = assert_kind(
        m.call(&request(Action::Create, "apply-then-fail.sh", json!({})))
            .await,
        ErrorKind::Unknown,
    );
    assert!(message.contains("exit status: 1"), "{message}");
    assert!(message.contains("printed nothing on stdout"), "{message}");
    assert!(message.contains("the remote may have acted"), "{message}");
    assert!(message.ends_with("stderr: lost the reply"), "{message}");
    assert_eq!(
        std::fs::read_to_string(m.path().join("remote.txt")).unwrap(),
        "created\n"
    );

    // A clean exit without a reply is no better.
    m.script(
        "apply-then-exit-0.sh",
        "#!/bin/sh\ncat >/dev/null\necho suspended >> remote.txt\n",
    );
    let message = assert_kind(
        m.call(&request(Action::Suspend, "apply-then-exit-0.sh", json!({})))
            .await,
        ErrorKind::Unknown,
    );
    assert!(message.contains("exit status: 0"), "{message}");

    // A custom action may change the remote as much as a standard one.
    assert_kind(
        m.call(&request(
            Action::Custom("reboot".into()),
            "apply-then-fail.sh",
            json!({}),
        ))
        .await,
        ErrorKind::Unknown,
    );
}

#[tokio::test]
async fn a_script_killed_by_a_signal_is_unknown() {
    let m = Modules::new();
    m.script(
        "killed.sh",
        "#!/bin/sh\ncat >/dev/null\necho created >> remote.txt\nkill -KILL $$\necho '{\"ok\": true}'\n",
    );
    let message = assert_kind(
        m.call(&request(Action::Create, "killed.sh", json!({})))
            .await,
        ErrorKind::Unknown,
    );
    assert!(message.contains("signal: 9"), "{message}");
    assert!(message.contains("the remote may have acted"), "{message}");
    assert!(m.path().join("remote.txt").exists());
}

#[tokio::test]
async fn a_read_that_leaves_no_reply_is_transient() {
    let m = Modules::new();
    m.script(
        "crash.sh",
        "#!/bin/sh\ncat >/dev/null\necho 'Traceback: oops' >&2\nexit 1\n",
    );
    m.script("killed.sh", "#!/bin/sh\ncat >/dev/null\nkill -KILL $$\n");
    m.script("garbage.sh", "#!/bin/sh\ncat >/dev/null\necho 'not json'\n");
    for action in [
        Action::Lookup,
        Action::ListAccounts,
        Action::Usage,
        Action::TestConnection,
        Action::LoginUrl,
    ] {
        for exe in ["crash.sh", "killed.sh", "garbage.sh"] {
            let message = assert_kind(
                m.call(&request(action.clone(), exe, json!({}))).await,
                ErrorKind::Transient,
            );
            assert!(
                message.contains("gave no valid reply"),
                "{action} {exe}: {message}"
            );
            assert!(
                !message.contains("may have acted"),
                "{action} {exe}: {message}"
            );
        }
    }
    // A reply still says what it is, for a read too.
    let err = m
        .reply_with(
            Action::Lookup,
            json!({"ok": false, "error": {"kind": "permanent", "message": "bad token"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(err, ModuleError::permanent("bad token"));
}

#[tokio::test]
async fn a_missing_executable_is_still_permanent() {
    let m = Modules::new();
    for action in [Action::Create, Action::Lookup] {
        let message = assert_kind(
            m.call(&request(action, "missing.sh", json!({}))).await,
            ErrorKind::Permanent,
        );
        assert!(message.contains("not found"), "{message}");
    }
}

#[tokio::test]
async fn secrets_echoed_on_stderr_or_in_a_message_are_redacted() {
    let m = Modules::new();
    // Prints the service password, the API secret and the new password wherever it can.
    let leak = r#"#!/usr/bin/env python3
import json, sys
r = json.load(sys.stdin)
found = [r["service"]["password"], r["server"]["settings"]["api_secret"], r["params"]["new_password"],
         r["server"]["settings"]["db_token"]]
print("debug:", *found, file=sys.stderr)
if r["server"]["settings"].get("mode") == "message":
    print(json.dumps({"ok": False, "error": {"kind": "permanent", "message": "rejected " + " ".join(found)}}))
else:
    sys.exit(2)
"#;
    m.script("leak.py", leak);
    let mut req = request(
        Action::ChangePassword,
        "leak.py",
        json!({"db_token": "tok-0a9b8c7d"}),
    );
    req.params = object(json!({"new_password": NEW_PASSWORD}));

    let message = assert_kind(m.call(&req).await, ErrorKind::Unknown);
    assert_no_secrets(&message);
    assert!(!message.contains("tok-0a9b8c7d"), "{message}");
    assert!(
        message.contains("debug: [redacted] [redacted] [redacted] [redacted]"),
        "{message}"
    );

    req.server.settings.insert("mode".into(), json!("message"));
    let message = assert_kind(m.call(&req).await, ErrorKind::Permanent);
    assert_eq!(
        message,
        "rejected [redacted] [redacted] [redacted] [redacted]"
    );
}

/// Whether a process is gone (a zombie counts: it runs nothing and holds nothing).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group_and_is_an_unknown_outcome() {
    let m = Modules::new();
    m.script(
        "hang.sh",
        "#!/bin/sh\ncat >/dev/null\n(sleep 2; touch grandchild-survived) &\necho $! > grandchild.pid\nsleep 60\n",
    );
    let started = Instant::now();
    let result = m
        .call(&request(
            Action::Create,
            "hang.sh",
            json!({"timeout_seconds": 1}),
        ))
        .await;
    let elapsed = started.elapsed();

    let message = assert_kind(result, ErrorKind::Unknown);
    assert!(message.contains("timed out after 1s"), "{message}");
    assert!(message.contains("may have acted"), "{message}");
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");

    let pid: i32 = std::fs::read_to_string(m.path().join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "grandchild {pid} still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Had it survived, it would have written the marker 2s after starting.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    assert!(!m.path().join("grandchild-survived").exists());
}

#[tokio::test]
async fn an_abandoned_call_kills_the_process_group_too() {
    let m = Modules::new();
    m.script(
        "hang.sh",
        "#!/bin/sh\ncat >/dev/null\nsleep 60 &\necho $! > grandchild.pid\nwait\n",
    );
    let req = request(Action::Create, "hang.sh", json!({"timeout_seconds": 60}));
    // The engine's own deadline drops the call's future.
    let abandoned = tokio::time::timeout(Duration::from_millis(700), m.call(&req)).await;
    assert!(abandoned.is_err());

    let pid: i32 = std::fs::read_to_string(m.path().join("grandchild.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "grandchild {pid} still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn executables_outside_the_modules_directory_are_refused() {
    let m = Modules::new();
    let outside = tempfile::tempdir().unwrap();
    write_executable(
        &outside.path().join("evil.sh"),
        "#!/bin/sh\necho '{\"ok\": true}'\n",
    );
    m.script("good.sh", "#!/bin/sh\necho '{\"ok\": true}'\n");
    std::os::unix::fs::symlink(outside.path().join("evil.sh"), m.path().join("link.sh")).unwrap();
    std::os::unix::fs::symlink(outside.path(), m.path().join("linkdir")).unwrap();
    std::fs::create_dir(m.path().join("sub")).unwrap();
    let evil = outside.path().join("evil.sh");
    let relative_escape = format!(
        "sub/../../{}/evil.sh",
        outside.path().file_name().unwrap().to_str().unwrap()
    );

    for (exe, needle) in [
        (evil.to_str().unwrap(), "absolute"),
        ("../evil.sh", "`..`"),
        (relative_escape.as_str(), "`..`"),
        ("link.sh", "outside the modules directory"),
        ("linkdir/evil.sh", "outside the modules directory"),
        ("missing.sh", "not found"),
    ] {
        let message = assert_kind(
            m.call(&request(Action::Create, exe, json!({}))).await,
            ErrorKind::Permanent,
        );
        assert!(message.contains(needle), "{exe}: {message}");
        assert_no_secrets(&message);
    }

    // A symbolic link that stays inside is fine.
    std::os::unix::fs::symlink(m.path().join("good.sh"), m.path().join("alias.sh")).unwrap();
    m.call(&request(Action::Create, "alias.sh", json!({})))
        .await
        .unwrap();

    std::fs::set_permissions(
        m.path().join("good.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let message = assert_kind(
        m.call(&request(Action::Create, "good.sh", json!({}))).await,
        ErrorKind::Permanent,
    );
    assert!(message.contains("not executable"), "{message}");
}

#[tokio::test]
async fn a_missing_interpreter_is_permanent() {
    let m = Modules::new();
    m.script("orphan.sh", "#!/nonexistent/interpreter\n");
    let message = assert_kind(
        m.call(&request(Action::Create, "orphan.sh", json!({})))
            .await,
        ErrorKind::Permanent,
    );
    assert!(message.contains("could not start"), "{message}");
}

#[tokio::test]
async fn stdin_carries_the_documented_request() {
    let m = Modules::new();
    m.script(
        "echo.py",
        "#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps({'ok': True, 'outputs': {'request': json.load(sys.stdin)}}))\n",
    );
    let mut req = request(Action::Suspend, "echo.py", json!({"region": "eu"}));
    req.params = object(json!({"reason": "non-payment", "until": null}));
    let reply = m.call(&req).await.unwrap();
    let got = &reply.outputs["request"];

    let mut keys: Vec<_> = got
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "client",
            "idempotency_key",
            "params",
            "product",
            "server",
            "service"
        ]
    );
    assert_eq!(got["action"], "suspend");
    assert_eq!(got["idempotency_key"], "job-1-create");
    assert_eq!(
        got["server"],
        json!({"id": 7, "name": "box-1", "settings": {
        "executable": "echo.py", "timeout_seconds": 10, "api_secret": API_SECRET, "region": "eu"}})
    );
    assert_eq!(
        got["product"],
        json!({"id": 3, "name": "starter", "settings": {"package": "starter", "quota": 100}})
    );
    assert_eq!(
        got["service"],
        json!({"id": 42, "username": "bob", "password": PASSWORD, "status": "pending",
        "settings": {"shell": "/bin/bash"}, "outputs": {}})
    );
    assert_eq!(
        got["client"],
        json!({"id": 9, "name": "Bob Example", "email": "bob@example.com",
        "custom_fields": {"vat": "NL123"}})
    );
    assert_eq!(
        got["params"],
        json!({"reason": "non-payment", "until": null})
    );
    assert_eq!(got, &serde_json::to_value(&req).unwrap());
}

#[tokio::test]
async fn the_executable_runs_in_the_modules_directory_with_a_clean_environment() {
    // Cargo sets these for the test process; they must not reach the executable.
    let leaked: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("CARGO"))
        .collect();
    assert!(
        !leaked.is_empty(),
        "expected cargo to set CARGO_* variables for tests"
    );

    let m = Modules::new();
    // sh rather than python3, whose launcher (e.g. pyenv) may add variables of its own.
    m.script(
        "env.sh",
        "#!/bin/sh\ncat >/dev/null\nenv > env.txt\npwd -P > cwd.txt\necho '{\"ok\": true}'\n",
    );
    m.call(&request(Action::TestConnection, "env.sh", json!({})))
        .await
        .unwrap();
    let env_text = std::fs::read_to_string(m.path().join("env.txt")).unwrap();
    let env: Vec<&str> = env_text
        .lines()
        .filter_map(|line| line.split_once('=').map(|(k, _)| k))
        .collect();
    for name in &leaked {
        assert!(!env.contains(&name.as_str()), "{name} leaked");
    }
    // PATH/HOME/LANG are passed on; the rest are what sh sets itself.
    let allowed = ["PATH", "HOME", "LANG", "PWD", "OLDPWD", "SHLVL", "_"];
    assert!(env.iter().all(|k| allowed.contains(k)), "{env:?}");
    assert!(env.contains(&"PATH"), "{env:?}");
    let cwd = std::fs::read_to_string(m.path().join("cwd.txt")).unwrap();
    assert_eq!(PathBuf::from(cwd.trim()), m.path().canonicalize().unwrap());
}

#[tokio::test]
async fn large_output_neither_deadlocks_nor_counts_as_a_reply() {
    let m = Modules::new();
    // 5 MB on both pipes, more than the capture limit and far more than a pipe buffer,
    // from a script that never reads its (large) input.
    m.script(
        "flood.sh",
        "#!/bin/sh\nhead -c 5000000 /dev/zero | tr '\\0' x >&2 &\nhead -c 5000000 /dev/zero | tr '\\0' y\nwait\n",
    );
    let mut req = request(Action::Create, "flood.sh", json!({}));
    req.params = object(json!({"blob": "z".repeat(1 << 20)}));
    let message = assert_kind(m.call(&req).await, ErrorKind::Unknown);
    assert!(message.contains("stdout exceeded 4 MiB"), "{message}");

    m.script("ignore-input.sh", "#!/bin/sh\necho '{\"ok\": true}'\n");
    let mut req = request(Action::Renew, "ignore-input.sh", json!({}));
    req.params = object(json!({"blob": "z".repeat(1 << 20)}));
    m.call(&req).await.unwrap();
}

// The example module, through the runner.

fn example_module() -> Modules {
    let m = Modules::new();
    let source =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/modules/example-accounts.py");
    let target = m.path().join("example-accounts.py");
    std::fs::copy(&source, &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    m
}

fn example(action: Action, username: &str, key: &str) -> ActionRequest {
    let mut req = request(action, "example-accounts.py", json!({}));
    req.idempotency_key = key.into();
    req.service.as_mut().unwrap().username = username.into();
    req
}

fn effects(m: &Modules) -> Vec<Value> {
    match std::fs::read_to_string(m.path().join("example-effects.jsonl")) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn effect_summary(m: &Modules) -> Vec<(String, String, String)> {
    effects(m)
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("action"), s("username"), s("key"))
        })
        .collect()
}

async fn lookup(m: &Modules, username: &str) -> Option<RemoteAccount> {
    m.call(&example(Action::Lookup, username, "lookup"))
        .await
        .unwrap()
        .account
}

#[tokio::test]
async fn example_create_is_found_by_lookup_and_repeats_are_no_ops() {
    let m = example_module();
    assert_eq!(lookup(&m, "bob").await, None);

    let first = m
        .call(&example(Action::Create, "bob", "job-1"))
        .await
        .unwrap();
    let pass_key = first.outputs["pass_key"].as_str().unwrap();
    assert_eq!(pass_key.len(), 32);
    assert_eq!(
        lookup(&m, "bob").await,
        Some(RemoteAccount {
            username: "bob".into(),
            status: Some("active".into()),
            package: Some("starter".into()),
        })
    );

    // A retry of the same job answers as the first attempt did and changes nothing.
    let again = m
        .call(&example(Action::Create, "bob", "job-1"))
        .await
        .unwrap();
    assert_eq!(again.outputs, first.outputs);
    assert_eq!(
        effect_summary(&m),
        [("create".into(), "bob".into(), "job-1".into())]
    );

    // Another job wanting the same name is refused.
    let message = assert_kind(
        m.call(&example(Action::Create, "bob", "job-2")).await,
        ErrorKind::Permanent,
    );
    assert!(message.contains("username taken"), "{message}");
    assert_eq!(effects(&m).len(), 1);
    let recorded = &effects(&m)[0];
    assert!(
        recorded["at"].as_str().is_some_and(|at| at.contains('T')),
        "{recorded}"
    );
}

#[tokio::test]
async fn example_lookup_answers_the_outputs_of_create() {
    let m = example_module();
    let absent = m
        .call(&example(Action::Lookup, "bob", "lookup"))
        .await
        .unwrap();
    assert_eq!(absent.account, None);
    assert!(absent.outputs.is_empty(), "{:?}", absent.outputs);

    let created = m
        .call(&example(Action::Create, "bob", "job-1"))
        .await
        .unwrap();
    assert!(!created.outputs.is_empty());
    let found = m
        .call(&example(Action::Lookup, "bob", "lookup"))
        .await
        .unwrap();
    assert!(found.account.is_some());
    assert_eq!(found.outputs, created.outputs);
}

#[tokio::test]
async fn example_lifecycle_records_one_effect_per_job() {
    let m = example_module();
    m.call(&example(Action::Create, "bob", "c1")).await.unwrap();

    m.call(&example(Action::Suspend, "bob", "s1"))
        .await
        .unwrap();
    m.call(&example(Action::Suspend, "bob", "s1"))
        .await
        .unwrap();
    assert_eq!(
        lookup(&m, "bob").await.unwrap().status.as_deref(),
        Some("suspended")
    );

    m.call(&example(Action::Unsuspend, "bob", "u1"))
        .await
        .unwrap();
    assert_eq!(
        lookup(&m, "bob").await.unwrap().status.as_deref(),
        Some("active")
    );

    let mut change = example(Action::ChangePackage, "bob", "p1");
    change.params = object(json!({"new_product": {"package": "pro"}}));
    m.call(&change).await.unwrap();
    assert_eq!(
        lookup(&m, "bob").await.unwrap().package.as_deref(),
        Some("pro")
    );

    let mut password = example(Action::ChangePassword, "bob", "pw1");
    password.params = object(json!({"new_password": NEW_PASSWORD}));
    m.call(&password).await.unwrap();
    let files = std::fs::read_to_string(m.path().join("example-accounts.json")).unwrap()
        + &std::fs::read_to_string(m.path().join("example-effects.jsonl")).unwrap();
    assert_no_secrets(&files);

    m.call(&example(Action::Terminate, "bob", "t1"))
        .await
        .unwrap();
    // A retry after the account is gone is still the same, finished job.
    m.call(&example(Action::Terminate, "bob", "t1"))
        .await
        .unwrap();
    assert_eq!(lookup(&m, "bob").await, None);
    let message = assert_kind(
        m.call(&example(Action::Suspend, "bob", "s2")).await,
        ErrorKind::Permanent,
    );
    assert!(message.contains("no such account"), "{message}");

    let actions: Vec<_> = effect_summary(&m)
        .into_iter()
        .map(|(a, _, k)| format!("{a}:{k}"))
        .collect();
    assert_eq!(
        actions,
        [
            "create:c1",
            "suspend:s1",
            "unsuspend:u1",
            "change_package:p1",
            "change_password:pw1",
            "terminate:t1"
        ]
    );
}

#[tokio::test]
async fn example_list_accounts_pages_by_username() {
    let m = example_module();
    for name in ["erin", "alice", "dave", "carol", "bob"] {
        m.call(&example(Action::Create, name, &format!("create-{name}")))
            .await
            .unwrap();
    }
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = example(Action::ListAccounts, "", "list");
        req.service = None;
        req.params = object(json!({"limit": 2, "cursor": cursor}));
        let reply = m.call(&req).await.unwrap();
        pages.push(
            reply
                .accounts
                .iter()
                .map(|a| a.username.clone())
                .collect::<Vec<_>>(),
        );
        match reply.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [vec!["alice", "bob"], vec!["carol", "dave"], vec!["erin"]]
    );

    let mut req = example(Action::Usage, "", "usage");
    req.service = None;
    let usage = m.call(&req).await.unwrap().usage;
    assert_eq!(usage.len(), 5);
    assert_eq!(usage[0].metrics["disk"].used, 0.0);

    let mut req = example(Action::TestConnection, "", "test");
    req.service = None;
    m.call(&req).await.unwrap();
}

#[tokio::test]
async fn example_concurrent_attempts_of_one_create_make_one_effect() {
    let m = Arc::new(example_module());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let m = Arc::clone(&m);
        tasks.spawn(async move { m.call(&example(Action::Create, "bob", "same-job")).await });
    }
    let mut pass_keys = Vec::new();
    while let Some(result) = tasks.join_next().await {
        pass_keys.push(result.unwrap().unwrap().outputs["pass_key"].clone());
    }
    pass_keys.dedup();
    assert_eq!(pass_keys.len(), 1, "{pass_keys:?}");
    assert_eq!(effects(&m).len(), 1);
}
