//! The `whmcs` modules with real `php`: how a WHMCS module's answers, errors, fatal errors
//! and hangs become outcomes, which files are found, and that secrets stay out of errors.
//! The whole lifecycle against a remote is in the server suite (`tests/it/whmcs.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use provisio_core::module::{
    Action, ActionRequest, ClientContext, ErrorKind, Module, ProductContext, ServerContext,
    ServiceContext,
};
use provisio_core::settings::Settings;
use provisio_modules::whmcs::{discover, WhmcsModule, PHP};
use serde_json::{json, Value};

const PASSWORD: &str = "svc-Pa55word-WHMCS-1";
const ACCESS_HASH: &str = "hash-WHMCS-77d1e0";

/// A module whose answer is chosen by its first option, to reach every outcome.
const EDGE: &str = r#"<?php
if (!defined("WHMCS")) { die("This file cannot be accessed directly"); }
function edge_ConfigOptions() { return ['Behaviour' => ['Type' => 'text']]; }
function edge_CreateAccount(array $params) {
    switch ($params['configoption1']) {
        case 'ok':
            echo "chatty module output\n";
            provisio_set_custom_field('Pass Key', 'PK-' . $params['username']);
            return 'success';
        case 'error': return 'Quota exceeded for password ' . $params['password'];
        case 'throw': throw new RuntimeException('remote said 500 to ' . $params['serveraccesshash']);
        case 'localapi': return localAPI('GetClients', []);
        case 'capsule': return \WHMCS\Database\Capsule::table('tblhosting')->count();
        case 'nothing': return;
        case 'array': return ['success' => true];
        case 'exit': exit(0);
        case 'hang': sleep(60); return 'success';
    }
    return 'unexpected';
}
function edge_TestConnection(array $params) {
    return ['success' => false, 'error' => 'access hash ' . $params['serveraccesshash'] . ' refused'];
}
function edge_ListAccounts(array $params) {
    if ($params['configoption1'] === 'throw') { throw new Exception('listing broke'); }
    return ['success' => true, 'accounts' => [
        ['username' => 'bob', 'status' => \WHMCS\Service\Status::SUSPENDED, 'product' => 'gold'],
        ['username' => 'amy', 'status' => \WHMCS\Service\Status::ACTIVE, 'product' => 'basic'],
    ]];
}
"#;

fn object(v: Value) -> Settings {
    v.as_object().unwrap().clone()
}

fn write(dir: &Path, name: &str, body: &str) {
    let d = dir.join("servers").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(format!("{name}.php")), body).unwrap();
}

fn request(action: Action, behaviour: &str, timeout: i64) -> ActionRequest {
    ActionRequest {
        action,
        idempotency_key: "job-1".into(),
        server: ServerContext {
            id: 1,
            name: "edge".into(),
            settings: object(
                json!({"hostname": "127.0.0.1", "password": "srv-pw-WHMCS-2",
                "access_hash": ACCESS_HASH, "timeout_seconds": timeout}),
            ),
        },
        product: ProductContext {
            id: 2,
            name: "p".into(),
            settings: object(json!({"behaviour": behaviour})),
        },
        service: Some(ServiceContext {
            id: 3,
            username: "bob".into(),
            password: PASSWORD.to_string().into(),
            status: "pending".into(),
            settings: Settings::new(),
            outputs: Settings::new(),
        }),
        client: Some(ClientContext {
            id: 4,
            name: "Bob Example".into(),
            email: "bob@example.test".into(),
            custom_fields: Default::default(),
        }),
        params: Settings::new(),
    }
}

/// The edge module behind the registry's redacting layer, as the engine calls it.
fn edge() -> (tempfile::TempDir, std::sync::Arc<dyn Module>) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "edge", EDGE);
    let registry = provisio_modules::Registry::builtin_in(dir.path().to_path_buf());
    let m = registry
        .get("whmcs-edge")
        .expect("whmcs-edge registered")
        .clone();
    (dir, m)
}

#[tokio::test]
async fn answers_map_to_ok_permanent_and_unknown_without_secrets() {
    let (_dir, m) = edge();
    let reply = m.call(&request(Action::Create, "ok", 10)).await.unwrap();
    assert_eq!(
        reply.outputs,
        object(json!({"pass_key": "PK-bob"})),
        "printed output is no answer"
    );

    let e = m
        .call(&request(Action::Create, "error", 10))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e:?}");
    assert!(
        e.message
            .contains("edge_CreateAccount: Quota exceeded for password [redacted]"),
        "{e:?}"
    );

    for (behaviour, needle) in [
        (
            "throw",
            "threw RuntimeException: remote said 500 to [redacted]",
        ),
        ("localapi", "Call to undefined function localAPI()"),
        ("capsule", "Class \"WHMCS\\Database\\Capsule\" not found"),
        ("nothing", "returned nothing instead of \"success\""),
        ("array", "returned an array instead of \"success\""),
        ("exit", "exited without an answer"),
    ] {
        let e = m
            .call(&request(Action::Create, behaviour, 10))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unknown, "{behaviour}: {e:?}");
        assert!(e.message.contains(needle), "{behaviour}: {e:?}");
        assert!(
            !e.message.contains(ACCESS_HASH) && !e.message.contains(PASSWORD),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn a_hanging_module_is_killed_at_the_server_timeout() {
    let (_dir, m) = edge();
    let started = Instant::now();
    let e = m
        .call(&request(Action::Create, "hang", 1))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unknown, "{e:?}");
    assert!(e.message.contains("timed out after 1s"), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn listings_lookups_and_connection_tests_read_the_whmcs_arrays() {
    let (_dir, m) = edge();
    let mut list = request(Action::ListAccounts, "ok", 10);
    list.service = None;
    let reply = m.call(&list).await.unwrap();
    let got: Vec<(String, Option<String>, Option<String>)> = reply
        .accounts
        .iter()
        .map(|a| (a.username.clone(), a.status.clone(), a.package.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("bob".into(), Some("suspended".into()), Some("gold".into())),
            ("amy".into(), Some("active".into()), Some("basic".into()))
        ]
    );
    let found = m.call(&request(Action::Lookup, "ok", 10)).await.unwrap();
    assert_eq!(found.account.unwrap().username, "bob");

    // A read that broke changed nothing: it is tried again later.
    let e = m
        .call(&request(Action::ListAccounts, "throw", 10))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient, "{e:?}");
    assert!(e.message.contains("listing broke"), "{e:?}");

    let e = m
        .call(&request(Action::TestConnection, "ok", 10))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e:?}");
    assert!(
        e.message.contains("access hash [redacted] refused"),
        "{e:?}"
    );
}

#[tokio::test]
async fn only_whmcs_shaped_files_inside_the_directory_that_load_become_modules() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "edge", EDGE);
    write(
        dir.path(),
        "broken",
        "<?php function broken_CreateAccount( {",
    );
    write(
        dir.path(),
        "Upper",
        "<?php function Upper_CreateAccount($p) { return 'success'; }",
    );
    write(
        dir.path(),
        "badbutton",
        "<?php function badbutton_AdminCustomButtonArray() { return ['X' => '!!']; }",
    );
    // A link out of the modules directory is refused like the script module's.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("evil.php"),
        EDGE.replace("edge_", "evil_"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("servers/evil")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("evil.php"),
        dir.path().join("servers/evil/evil.php"),
    )
    .unwrap();
    let found: Vec<String> = discover(dir.path(), Path::new(PHP))
        .iter()
        .map(|m| m.info().name.clone())
        .collect();
    assert_eq!(found, ["whmcs-edge"]);

    let err = WhmcsModule::describe(dir.path(), Path::new(PHP), "broken")
        .await
        .err()
        .unwrap();
    assert!(err.contains("syntax error"), "{err}");
    let err = WhmcsModule::describe(dir.path(), Path::new(PHP), "evil")
        .await
        .err()
        .unwrap();
    assert!(err.contains("outside the modules directory"), "{err}");
    let err = WhmcsModule::describe(dir.path(), Path::new(PHP), "badbutton")
        .await
        .err()
        .unwrap();
    assert!(err.contains("custom action name"), "{err}");

    let edge = WhmcsModule::describe(dir.path(), Path::new(PHP), "edge")
        .await
        .unwrap();
    let info = edge.info();
    assert!(info.can(provisio_core::module::Capability::Create));
    assert!(info.can(provisio_core::module::Capability::Lookup));
    assert!(!info.can(provisio_core::module::Capability::Suspend));
    assert_eq!(info.product_schema.fields[0].name, "behaviour");
}
