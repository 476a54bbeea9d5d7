//! Audits end to end against a real `script` remote: each kind of planted drift is found,
//! the empty-listing guard refuses to fix, a dry run changes nothing, and after a fix a
//! second audit comes back clean. A billing key reads the reports but starts and fixes
//! nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_field_error, Db, TestApp};
use crate::usage::{active, app_with_remote, client, read_state, write_accounts, write_atomic};

/// Starts audits and polls them to their end; returns the finished audit of the first.
async fn audit(app: &TestApp, body: Value) -> Value {
    let (status, started) = app.post("/v1/audits", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started[0]["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, a) = app.get(&format!("/v1/audits/{id}")).await;
        if a["state"] != "running" {
            return a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit never ended: {a}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn findings(app: &TestApp, id: &Value) -> Vec<Value> {
    let (status, f) = app.get(&format!("/v1/audits/{id}/findings")).await;
    assert_eq!(status, StatusCode::OK, "{f}");
    f.as_array().unwrap().clone()
}

fn counts(a: &Value) -> (i64, i64, i64, i64) {
    let c = &a["counts"];
    (
        c["orphan_remote"].as_i64().unwrap(),
        c["missing_remote"].as_i64().unwrap(),
        c["status_mismatch"].as_i64().unwrap(),
        c["package_mismatch"].as_i64().unwrap(),
    )
}

async fn statuses(app: &TestApp) -> Vec<(String, String, i64)> {
    let (_, list) = app.get("/v1/services?limit=100").await;
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["username"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
                s["product_id"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Waits until every job has finished.
async fn settle(app: &TestApp) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, p) = app.get("/v1/jobs?state=pending").await;
        let (_, r) = app.get("/v1/jobs?state=running").await;
        if p["items"].as_array().unwrap().is_empty() && r["items"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "jobs never settled");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Plants one drift of each kind: dave missing, bob suspended remotely, carol on silver,
/// and an account nobody ordered.
fn plant(file: &std::path::Path, with_orphan: bool) {
    let mut accounts = read_state(file)["accounts"].clone();
    accounts.as_object_mut().unwrap().remove("dave");
    accounts["bob"]["status"] = json!("suspended");
    accounts["carol"]["package"] = json!("silver");
    if with_orphan {
        accounts["ghost"] = json!({"status": "active", "package": "gold", "usage": {}});
    }
    write_accounts(file, accounts);
}

async fn audit_finds_and_fixes_drift(db: Db) {
    let (app, _modules, file) = app_with_remote(db, "").await;
    for (name, package) in [("gold", "gold"), ("silver", "silver")] {
        app.create(
            "/v1/products",
            json!({"name": name, "module": "script", "settings": {"package": package}}),
        )
        .await;
    }
    let c = client(&app).await;
    for u in ["alice", "bob", "carol", "dave"] {
        active(&app, c, "gold", u).await;
    }
    let a = audit(&app, json!({"server": "scr"})).await;
    assert_eq!(a["state"], "done", "{a}");
    assert_eq!(counts(&a), (0, 0, 0, 0), "in step before planting: {a}");

    plant(&file, true);
    let a = audit(&app, json!({})).await;
    assert_eq!(counts(&a), (1, 1, 1, 1), "{a}");
    assert_eq!(a["remote_accounts"], 4);
    assert_eq!(a["local_services"], 4);
    let f = findings(&app, &a["id"]).await;
    let kinds: Vec<(String, String)> = f
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap().to_string(),
                x["username"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for k in [
        ("orphan_remote", "ghost"),
        ("missing_remote", "dave"),
        ("status_mismatch", "bob"),
        ("package_mismatch", "carol"),
    ] {
        assert!(
            kinds.contains(&(k.0.to_string(), k.1.to_string())),
            "{k:?} in {kinds:?}"
        );
    }
    let resp = app
        .request(
            reqwest::Method::GET,
            &format!(
                "/v1/audits/{}/findings?format=csv&kind=status_mismatch",
                a["id"]
            ),
            None,
        )
        .await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = resp.text().await.unwrap();
    assert!(csv.starts_with("kind,username,service_id,"), "{csv}");
    assert!(csv.contains("status_mismatch,bob,"), "{csv}");
    assert_eq!(csv.lines().count(), 2);
    let (_, ev) = app.get("/v1/events?type=audit.drift_found").await;
    assert_eq!(ev["items"][0]["payload"]["audit_id"], a["id"]);

    // A billing key (WHMCS's server sync) reads the reports, but starts no audit and fixes
    // nothing: 403 naming the roles that may, and no audit more than before.
    let billing = app
        .make_key(json!({"name": "whmcs", "role": "billing"}))
        .await;
    let (_, all) = app.get("/v1/audits?limit=100").await;
    for path in [
        "/v1/audits?limit=100".to_string(),
        format!("/v1/audits/{}", a["id"]),
        format!("/v1/audits/{}/findings", a["id"]),
    ] {
        let (status, seen) = app
            .call_as(&billing, reqwest::Method::GET, &path, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{path}: {seen}");
        assert_eq!(seen, app.get(&path).await.1, "{path}: as the admin sees it");
    }
    for body in [
        json!({}),
        json!({"server": "scr", "fix": "local", "client": c}),
        json!({"server": "scr", "fix": "remote"}),
    ] {
        let (status, p) = app
            .call_as(&billing, reqwest::Method::POST, "/v1/audits", Some(body))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
        assert_eq!(p["roles"], json!(["admin", "operator"]), "{p}");
    }
    let (_, after) = app.get("/v1/audits?limit=100").await;
    assert_eq!(
        after["items"], all["items"],
        "a refused start left no audit"
    );

    // Bad requests name their field.
    let (status, p) = app.post("/v1/audits", json!({"fix": "local"})).await;
    assert_field_error(status, &p, "client", "required");
    let (status, p) = app.post("/v1/audits", json!({"dry_run": true})).await;
    assert_field_error(status, &p, "dry_run", "requires");
    let (status, p) = app.post("/v1/audits", json!({"fix": "sideways"})).await;
    assert!(status.is_client_error(), "{p}");

    // A dry run lists exactly what a fix would do and changes nothing.
    let before_remote = std::fs::read_to_string(&file).unwrap();
    let before_local = statuses(&app).await;
    let a = audit(
        &app,
        json!({"server": "scr", "fix": "local", "dry_run": true, "client": c}),
    )
    .await;
    assert_eq!(a["dry_run"], true);
    let f = findings(&app, &a["id"]).await;
    let plan = |user: &str| -> String {
        f.iter().find(|x| x["username"] == user).unwrap()["fix"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        plan("ghost").starts_with("import as a active service"),
        "{f:?}"
    );
    assert_eq!(plan("dave"), "mark failed");
    assert_eq!(plan("bob"), "set status suspended");
    assert!(plan("carol").starts_with("set product "), "{f:?}");
    let a = audit(&app, json!({"fix": "remote", "dry_run": true})).await;
    let f = findings(&app, &a["id"]).await;
    let plan = |user: &str| -> String {
        f.iter().find(|x| x["username"] == user).unwrap()["fix"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(plan("dave"), "mark failed, then create");
    assert_eq!(plan("bob"), "record status suspended, then unsuspend");
    assert!(plan("carol").starts_with("record product "), "{f:?}");
    assert!(plan("ghost").starts_with("none:"));
    settle(&app).await;
    let mut expected: Value = serde_json::from_str(&before_remote).unwrap();
    let now = read_state(&file);
    // Listing calls are counted in the file; only the counter moved.
    expected["list_calls"] = now["list_calls"].clone();
    assert_eq!(now, expected, "a dry run sends nothing to the remote");
    assert_eq!(
        statuses(&app).await,
        before_local,
        "a dry run changes nothing"
    );

    // The guard: an empty listing while local services exist fixes nothing.
    let planted = read_state(&file)["accounts"].clone();
    write_accounts(&file, json!({}));
    let a = audit(&app, json!({"fix": "local", "client": c})).await;
    assert!(a["note"].as_str().unwrap().contains("fix refused"), "{a}");
    assert_eq!(counts(&a).1, 4, "all four look missing");
    assert_eq!(
        statuses(&app).await,
        before_local,
        "the guard changed nothing"
    );
    // A remote that fails mid-listing: the audit says so and fixes nothing either.
    let mut st = json!({"accounts": planted.clone(), "fail": true});
    write_atomic(&file, st.to_string());
    let a = audit(&app, json!({"fix": "remote"})).await;
    assert!(a["note"].as_str().unwrap().contains("ended early"), "{a}");
    assert!(a["note"].as_str().unwrap().contains("fix refused"), "{a}");
    assert_eq!(statuses(&app).await, before_local);
    st["fail"] = json!(false);
    write_atomic(&file, st.to_string());

    // Remote fix: the remote follows the records (the orphan is left alone).
    let a = audit(&app, json!({"fix": "remote"})).await;
    assert_eq!(a["state"], "done", "{a}");
    settle(&app).await;
    let remote = read_state(&file)["accounts"].clone();
    assert_eq!(remote["dave"]["status"], "active", "{remote}");
    assert_eq!(remote["bob"]["status"], "active");
    assert_eq!(remote["carol"]["package"], "gold");
    let a = audit(&app, json!({})).await;
    assert_eq!(counts(&a), (1, 0, 0, 0), "only the orphan is left: {a}");
    for (user, status, _) in statuses(&app).await {
        assert_eq!(status, "active", "{user}");
    }

    // Local fix: the orphan is imported; drift planted again is adopted locally.
    plant(&file, false);
    let a = audit(&app, json!({"fix": "local", "client": c})).await;
    assert_eq!(counts(&a), (1, 1, 1, 1), "{a}");
    let f = findings(&app, &a["id"]).await;
    assert!(
        f.iter()
            .all(|x| !x["fix"].as_str().unwrap().starts_with("failed")),
        "{f:?}"
    );
    let a = audit(&app, json!({})).await;
    assert_eq!(counts(&a), (0, 0, 0, 0), "a second audit is clean: {a}");
    let local = statuses(&app).await;
    let get = |u: &str| local.iter().find(|x| x.0 == u).unwrap().clone();
    assert_eq!(get("ghost").1, "active");
    assert_eq!(get("dave").1, "failed");
    assert_eq!(get("bob").1, "suspended");
    assert_ne!(get("carol").2, get("alice").2, "carol moved to silver");
    let (_, ev) = app.get("/v1/events?type=service.imported").await;
    assert_eq!(ev["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

on_both!(audit_finds_and_fixes_drift);
