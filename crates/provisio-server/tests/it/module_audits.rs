//! The audit (and, for `radius`, the usage sync) against each real-system module: an
//! account created directly on the remote is found as an orphan, and one deleted directly
//! there as missing. The remotes are real: a FreeRADIUS SQL database (SQLite, from
//! FreeRADIUS's own schema), the PostgreSQL cluster the test run started, and the
//! `scim2-server` from PyPI.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Db, TestApp};

async fn order(app: &TestApp, client: i64, product: &str, username: &str) -> i64 {
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": product, "username": username}),
        )
        .await;
    let id = s["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        if s["status"] == "active" {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "service {username} never became active: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs an audit of `server` and returns its findings as (kind, username).
async fn audit(app: &TestApp, server: &str) -> Vec<(String, String)> {
    let (status, started) = app.post("/v1/audits", json!({"server": server})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started[0]["id"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let a = loop {
        let (_, a) = app.get(&format!("/v1/audits/{id}")).await;
        if a["state"] != "running" {
            break a;
        }
        assert!(Instant::now() < deadline, "audit never ended: {a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(a["state"], "done", "{a}");
    let (_, f) = app.get(&format!("/v1/audits/{id}/findings")).await;
    f.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["kind"].as_str().unwrap().to_string(),
                x["username"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn a_client(app: &TestApp) -> i64 {
    app.create(
        "/v1/clients",
        json!({"name": "Audited", "email": "audited@example.test"}),
    )
    .await["id"]
        .as_i64()
        .unwrap()
}

fn assert_drift(findings: &[(String, String)], orphan: &str, missing: &str) {
    assert!(
        findings.contains(&("orphan_remote".into(), orphan.into())),
        "no orphan {orphan} in {findings:?}"
    );
    assert!(
        findings.contains(&("missing_remote".into(), missing.into())),
        "no missing {missing} in {findings:?}"
    );
    assert_eq!(
        findings
            .iter()
            .filter(|f| f.0 == "orphan_remote" || f.0 == "missing_remote")
            .count(),
        2,
        "{findings:?}"
    );
}

fn python() -> String {
    std::env::var("PROVISIO_TEST_PYTHON").expect(
        "PROVISIO_TEST_PYTHON is not set: run scripts/test, which installs the Python test peers",
    )
}

fn sqlite(db: &std::path::Path, script: &str) {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()")
        .arg(db)
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn radius_audit_finds_orphans_and_missing_accounts(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let radius_db = dir.path().join("radius.db");
    let schema =
        std::fs::read_to_string("/etc/freeradius/3.0/mods-config/sql/main/sqlite/schema.sql")
            .expect(
                "FreeRADIUS's SQL schema is missing: run scripts/test, which installs FreeRADIUS",
            );
    sqlite(&radius_db, &schema);
    let app = spawn_app_with(db, "[usage]\nschedule = \"\"\n").await;
    app.create(
        "/v1/servers",
        json!({"name": "nas", "module": "radius", "settings": {"database_url": format!("sqlite://{}", radius_db.display())}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "fibre100", "module": "radius", "settings": {"group": "fibre100"}}),
    )
    .await;
    let c = a_client(&app).await;
    let sub1 = order(&app, c, "fibre100", "sub1").await;
    order(&app, c, "fibre100", "sub2").await;

    // Accounting rows as FreeRADIUS writes them (the radius module's own tests send real
    // Accounting-Requests through radclient) become usage through the engine's sync.
    sqlite(
        &radius_db,
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, \
         acctinputoctets, acctoutputoctets) VALUES \
         ('s1', 'u1', 'sub1', '127.0.0.1', strftime('%s', 'now'), 1000, 2500), \
         ('s2', 'u2', 'sub1', '127.0.0.1', strftime('%s', 'now'), 4294967296, 500);",
    );
    let run = crate::usage::sync(&app, json!({"server": "nas"})).await;
    assert_eq!(run["state"], "done", "{run}");
    let (_, usage) = app.get(&format!("/v1/services/{sub1}/usage")).await;
    let data = usage["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "data")
        .unwrap_or_else(|| panic!("no data metric: {usage}"))
        .clone();
    assert_eq!(
        data["used"],
        1000.0 + 2500.0 + 4294967296.0 + 500.0,
        "{usage}"
    );
    assert!(audit(&app, "nas")
        .await
        .iter()
        .all(|f| f.0 != "orphan_remote" && f.0 != "missing_remote"));
    sqlite(
        &radius_db,
        "INSERT INTO radcheck (username, attribute, op, value) VALUES ('walkin', 'Cleartext-Password', ':=', 'pw-walkin-1');\
         DELETE FROM radcheck WHERE username = 'sub2'; DELETE FROM radusergroup WHERE username = 'sub2';\
         DELETE FROM radreply WHERE username = 'sub2';",
    );
    assert_drift(&audit(&app, "nas").await, "walkin", "sub2");
    app.stop().await;
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(url)
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-c")
        .arg(sql)
        .output()
        .expect("psql is missing");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn postgres_audit_finds_orphans_and_missing_accounts(db: Db) {
    let admin = std::env::var("PROVISIO_TEST_PG_URL").expect(
        "PROVISIO_TEST_PG_URL is not set: run scripts/test, which starts a throwaway PostgreSQL",
    );
    let url = reqwest::Url::parse(&admin).unwrap();
    // A prefix of its own, so roles of other tests and runs are not in this server's listing.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tail: String = format!("{nanos:x}")
        .chars()
        .rev()
        .take(10)
        .map(|c| {
            if c.is_ascii_digit() {
                (b'g' + c as u8 - b'0') as char
            } else {
                c
            }
        })
        .collect();
    let prefix = format!("pa{tail}_");
    let app = spawn_app_with(db, "[usage]\nschedule = \"\"\n").await;
    app.create(
        "/v1/servers",
        json!({"name": "pg", "module": "postgres", "settings": {
            "host": url.host_str().unwrap(), "port": url.port().unwrap(),
            "admin_user": url.username(), "prefix": prefix, "sslmode": "disable"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "db-small", "module": "postgres", "settings": {"connection_limit": 5}}),
    )
    .await;
    let c = a_client(&app).await;
    order(&app, c, "db-small", "shop").await;
    order(&app, c, "db-small", "blog").await;
    assert!(audit(&app, "pg")
        .await
        .iter()
        .all(|f| f.0 != "orphan_remote" && f.0 != "missing_remote"));
    psql(&admin, &format!("CREATE ROLE {prefix}sideload LOGIN"));
    psql(&admin, &format!("DROP DATABASE {prefix}blog"));
    psql(&admin, &format!("DROP ROLE {prefix}blog"));
    let findings = audit(&app, "pg").await;
    psql(&admin, &format!("DROP ROLE {prefix}sideload"));
    assert_drift(&findings, "sideload", "blog");
    app.stop().await;
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn scim_audit_finds_orphans_and_missing_accounts(db: Db) {
    let exe = std::path::Path::new(&python()).with_file_name("scim2-server");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let token = "scim-audit-token-4411";
    let _server = Kill(
        Command::new(&exe)
            .args(["--port", &port.to_string(), "--bearer-token", token])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/test)", exe.display())),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("{base}/Users?count=1"))
        .bearer_auth(token)
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "scim2-server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = spawn_app_with(db, "[usage]\nschedule = \"\"\n").await;
    app.create(
        "/v1/servers",
        json!({"name": "saas", "module": "scim", "settings": {"base_url": base, "token": token}}),
    )
    .await;
    app.create("/v1/products", json!({"name": "seat", "module": "scim"}))
        .await;
    let c = a_client(&app).await;
    order(&app, c, "seat", "ann").await;
    order(&app, c, "seat", "ben").await;
    assert!(audit(&app, "saas")
        .await
        .iter()
        .all(|f| f.0 != "orphan_remote" && f.0 != "missing_remote"));
    let created = http
        .post(format!("{base}/Users"))
        .bearer_auth(token)
        .json(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "drifter"}))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "{}",
        created.text().await.unwrap()
    );
    let found: Value = http
        .get(format!("{base}/Users"))
        .query(&[("filter", "userName eq \"ben\"")])
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = found["Resources"][0]["id"].as_str().unwrap().to_string();
    let gone = http
        .delete(format!("{base}/Users/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(gone.status().is_success());
    assert_drift(&audit(&app, "saas").await, "drifter", "ben");
    app.stop().await;
}

on_both!(
    radius_audit_finds_orphans_and_missing_accounts,
    postgres_audit_finds_orphans_and_missing_accounts,
    scim_audit_finds_orphans_and_missing_accounts,
);
