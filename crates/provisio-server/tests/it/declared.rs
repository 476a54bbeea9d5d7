//! Servers and products declared in the config are applied at start: created, then updated
//! in place on the next start; a bad entry stops the start with a message naming it.

use serde_json::json;

use crate::helpers::{config, db_url, spawn_app_with, Db};

const DECLARED: &str = r#"
[[products]]
name = "gold"
module = "backup"
extends = "silver"
settings = { storage_allotted = "50 GB" }

[[products]]
name = "silver"
module = "backup"
settings = { protocol = "https", action = "signup_customer", storage_allotted = "10 GB" }

[[servers]]
name = "backup-1"
module = "backup"
group = "eu"
max_concurrent = 3
settings = { hostname = "b1.example", username = "admin", password = "declared-Secret-1" }
"#;

async fn declared_entries_are_applied_idempotently(db: Db) {
    let app = spawn_app_with(db, DECLARED).await;
    let (_, s) = app.get("/v1/servers/backup-1").await;
    assert_eq!(s["group"], "eu");
    assert_eq!(s["max_concurrent"], 3);
    assert_eq!(s["secrets"], json!(["password"]));
    let (_, gold) = app.get("/v1/products/gold").await;
    assert_eq!(
        gold["extends"], "silver",
        "parents are applied first whatever the order"
    );
    assert_eq!(gold["effective_settings"]["storage_allotted"], 50u64 << 30);
    assert_eq!(gold["effective_settings"]["protocol"], "https");
    let server_id = s["id"].clone();
    let dir = app.dir.path().to_path_buf();
    let url = app.db_url.clone();
    let key = app.key.clone();

    // Start again on the same database with a changed declaration: updated in place.
    let changed = DECLARED
        .replace("max_concurrent = 3", "max_concurrent = 5")
        .replace("50 GB", "60 GB");
    let cfg = config(&dir, &url, &changed);
    let engine = provisio_server::prepare(&cfg, crate::helpers::registry())
        .await
        .unwrap();
    let server = engine
        .find_server(&provisio_engine::input::RecordRef::Name("backup-1".into()))
        .await
        .unwrap();
    assert_eq!(json!(server.id.0), server_id);
    assert_eq!(server.max_concurrent, 5);
    let gold = engine
        .get_product(&provisio_engine::input::RecordRef::Name("gold".into()))
        .await
        .unwrap();
    assert_eq!(gold.effective["storage_allotted"], 60u64 << 30);
    let (list, _) = (
        engine
            .list_servers(&Default::default(), Default::default())
            .await
            .unwrap(),
        (),
    );
    assert_eq!(list.items.len(), 1, "no duplicate");
    // The admin key is made once.
    assert_eq!(
        std::fs::read_to_string(dir.join("admin.key"))
            .unwrap()
            .trim(),
        key
    );
    app.stop().await;
}

async fn a_bad_declared_entry_stops_the_start_naming_it(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(db, dir.path()).await;
    let bad = r#"
[[servers]]
name = "ok"
module = "script"
settings = { executable = "a.sh" }

[[servers]]
name = "broken"
module = "backup"
settings = { hostname = "h", username = "u", password = "p", port = 99999 }
"#;
    let cfg = config(dir.path(), &url, bad);
    let err = provisio_server::prepare(&cfg, crate::helpers::registry())
        .await
        .err()
        .expect("refused");
    let msg = format!("{err}");
    assert!(
        msg.contains("servers[1]") && msg.contains("broken"),
        "{msg}"
    );
    assert!(msg.contains("settings.port"), "{msg}");

    let typo = "[[products]]\nname = \"x\"\nmodule = \"script\"\nsetings = {}\n";
    let cfg = config(dir.path(), &url, typo);
    let err = provisio_server::prepare(&cfg, crate::helpers::registry())
        .await
        .err()
        .expect("refused");
    let msg = format!("{err}");
    assert!(
        msg.contains("products[0]") && msg.contains("setings"),
        "{msg}"
    );
}

on_both!(
    declared_entries_are_applied_idempotently,
    a_bad_declared_entry_stops_the_start_naming_it,
);
