//! Seed 003's walk-through with Provisio's names: an invoice group of a master and two
//! children, `collect`, group edit/suspend/activate/delete with dry runs and `--since`,
//! transfer to another client, the clean-up policy and single sign-on between members.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Db, TestApp};

const INVOICE: &str = "master-invoice-123";

async fn site(
    app: &TestApp,
    client: i64,
    username: &str,
    invoice: Option<&str>,
    parent: Option<&str>,
) -> i64 {
    let mut body = json!({"client_id": client, "product": "hosting", "username": username});
    if let Some(i) = invoice {
        body["invoice"] = i.into();
    }
    if let Some(p) = parent {
        body["parent_invoice"] = p.into();
    }
    let s = app.create("/v1/services", body).await;
    let id = s["id"].as_i64().unwrap();
    wait_status(app, id, "active").await;
    id
}

async fn wait_status(app: &TestApp, id: i64, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        if s["status"] == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "service {id} never became {status}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// `POST /v1/groups/{INVOICE}/{op}`.
async fn group_op(app: &TestApp, op: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/v1/groups/{INVOICE}/{op}"), body).await
}

/// Whether every member of a group result ended with `outcome`.
fn every_member(result: &Value, outcome: &str) -> bool {
    result["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["outcome"] == outcome)
}

async fn collect(app: &TestApp, fields: Value, filters: Value) -> Vec<Value> {
    let (status, body) = app
        .post("/v1/collect", json!({"fields": fields, "filters": filters}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn setup(db: Db, extra: &str) -> (TestApp, i64, [i64; 3]) {
    let app = spawn_app_with(db, extra).await;
    app.create(
        "/v1/servers",
        json!({"name": "web1", "module": "recorder", "settings": {"token": "Tok-Groups-77"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "hosting", "module": "recorder", "settings": {"quota": 1000, "ssh": true}}),
    )
    .await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Test Domain", "email": "admin@test-domain.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let master = site(&app, c, "test-admin", Some(INVOICE), None).await;
    let child1 = site(&app, c, "test-child-1", None, Some(INVOICE)).await;
    let child2 = site(&app, c, "test-child-2", None, Some(INVOICE)).await;
    // Someone else's site, which no group operation may touch.
    site(&app, c, "bystander", Some("other-invoice"), None).await;
    (app, c, [master, child1, child2])
}

async fn the_seed_walk_through_works(db: Db) {
    let (app, _, [master, child1, child2]) = setup(db, "").await;
    let fields = json!([
        "service.username",
        "product.settings.quota",
        "product.settings.ssh"
    ]);

    // The seed's three notations arrive here as the same filter (the CLI turns each into it).
    let children = collect(
        &app,
        fields.clone(),
        json!({"service.parent_invoice": INVOICE}),
    )
    .await;
    let ids: Vec<i64> = children
        .iter()
        .map(|c| c["service_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [child1, child2]);
    assert_eq!(children[0]["values"]["service"]["username"], "test-child-1");
    assert_eq!(children[0]["values"]["product"]["settings"]["quota"], 1000);
    assert_eq!(children[0]["active"], true);

    // Edit: quota 5000 for every member, master included, reaching the remote.
    let (status, r) = group_op(
        &app,
        "edit",
        json!({"settings": {"quota": 5000}, "wait": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let members = r["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[0]["service_id"], master);
    assert_eq!(members[0]["role"], "master");
    assert!(members.iter().all(|m| m["outcome"] == "done"), "{r}");
    for user in ["test-admin", "test-child-1", "test-child-2"] {
        let quota = app
            .recorder
            .with(|st| st.packages.get(user).and_then(|p| p.get("quota").cloned()));
        assert_eq!(quota, Some(json!(5000)), "{user}");
    }
    assert!(app
        .recorder
        .with(|st| !st.packages["bystander"].contains_key("quota")
            || st.packages["bystander"]["quota"] == 1000));
    let all = collect(&app, fields.clone(), json!({"service.group": INVOICE})).await;
    assert!(all
        .iter()
        .all(|c| c["values"]["product"]["settings"]["quota"] == 5000));
    let master_only = collect(&app, fields.clone(), json!({"service.invoice": INVOICE})).await;
    assert_eq!(master_only.len(), 1);
    assert_eq!(
        master_only[0]["values"]["product"]["settings"]["quota"],
        5000
    );
    // Running it again changes nothing.
    let (_, again) = group_op(&app, "edit", json!({"settings": {"quota": 5000}})).await;
    assert!(every_member(&again, "skipped"), "{again}");

    // Suspend and activate flip `active` for every member.
    let (_, r) = group_op(&app, "suspend", json!({"wait": 30})).await;
    assert!(every_member(&r, "done"), "{r}");
    let listed = collect(&app, json!([]), json!({"service.group": INVOICE})).await;
    assert!(listed.iter().all(|c| c["active"] == false));
    let (_, r) = group_op(&app, "activate", json!({"wait": 30})).await;
    assert!(every_member(&r, "done"), "{r}");
    let listed = collect(&app, json!([]), json!({"service.group": INVOICE})).await;
    assert!(listed.iter().all(|c| c["active"] == true));

    // Delete --dry-run lists all three; nothing changes.
    let (_, r) = group_op(&app, "delete", json!({"dry_run": true})).await;
    let planned: Vec<(i64, String)> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["service_id"].as_i64().unwrap(),
                m["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        planned,
        [
            (master, "planned".into()),
            (child1, "planned".into()),
            (child2, "planned".into())
        ]
    );
    assert!(r["members"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("no suspension date"));
    let (_, s) = app.get(&format!("/v1/services/{master}")).await;
    assert_eq!(s["status"], "active");

    // After suspending one child, --since now lists only it.
    assert_eq!(app.act(child2, "suspend", None).await["state"], "done");
    let (_, r) = group_op(&app, "delete", json!({"dry_run": true, "since": "now"})).await;
    let planned: Vec<i64> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["outcome"] == "planned")
        .map(|m| m["service_id"].as_i64().unwrap())
        .collect();
    assert_eq!(planned, [child2]);
    assert!(r["members"][2]["detail"]
        .as_str()
        .unwrap()
        .contains("suspended since"));

    // --children-only leaves the master out.
    let (_, r) = group_op(
        &app,
        "suspend",
        json!({"dry_run": true, "children_only": true}),
    )
    .await;
    let ids: Vec<i64> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["service_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [child1, child2]);

    // The real delete with --since now terminates only the suspended child.
    let (_, r) = group_op(&app, "delete", json!({"since": "now", "wait": 30})).await;
    assert_eq!(r["members"][2]["outcome"], "done", "{r}");
    wait_status(&app, child2, "terminated").await;
    let (_, s) = app.get(&format!("/v1/services/{child1}")).await;
    assert_eq!(s["status"], "active");
    app.stop().await;
}

async fn transfer_moves_members_to_another_client(db: Db) {
    let (app, c, [master, child1, child2]) = setup(db, "").await;
    let other = app
        .create(
            "/v1/clients",
            json!({"name": "Buyer", "email": "buyer@example.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let (status, problem) = group_op(&app, "transfer", json!({})).await;
    crate::helpers::assert_field_error(status, &problem, "client", "required");
    let (_, dry) = group_op(&app, "transfer", json!({"client": other, "dry_run": true})).await;
    assert!(every_member(&dry, "planned"));
    let (_, s) = app.get(&format!("/v1/services/{master}")).await;
    assert_eq!(s["client_id"], c);
    let (_, r) = group_op(&app, "transfer", json!({"client": other})).await;
    assert!(every_member(&r, "done"), "{r}");
    for id in [master, child1, child2] {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        assert_eq!(s["client_id"], other);
    }
    app.stop().await;
}

async fn group_operations_refuse_bad_input_and_unknown_groups(db: Db) {
    let (app, _, _) = setup(db, "").await;
    let (status, problem) = app.post("/v1/groups/nope/suspend", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, problem) = group_op(&app, "explode", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, problem) = group_op(&app, "edit", json!({})).await;
    crate::helpers::assert_field_error(status, &problem, "settings", "required");
    let (status, problem) = group_op(&app, "delete", json!({"since": "soon"})).await;
    crate::helpers::assert_field_error(status, &problem, "since", "duration");
    // Past u64 seconds: refused naming the field, not wrapped into a short duration.
    let (status, problem) = group_op(&app, "delete", json!({"since": "213503982334602d"})).await;
    crate::helpers::assert_field_error(status, &problem, "since", "duration");
    let (status, problem) = group_op(&app, "suspend", json!({"settings": {"quota": 1}})).await;
    crate::helpers::assert_field_error(status, &problem, "settings", "not_applicable");
    let (status, problem) = app
        .post(
            "/v1/collect",
            json!({"fields": ["nothing.here"], "filters": {"service.status": "sleepy"}}),
        )
        .await;
    crate::helpers::assert_field_error(status, &problem, "fields[0]", "path");
    crate::helpers::assert_field_error(status, &problem, "filters.service.status", "enum");
    app.stop().await;
}

async fn clean_up_terminates_long_suspended_services(db: Db) {
    let (app, _, [master, child1, _]) =
        setup(db, "[cleanup]\nterminate_suspended_after = \"30 days\"\n").await;
    assert_eq!(app.act(child1, "suspend", None).await["state"], "done");
    // Suspended just now: not 30 days yet.
    let (status, r) = app.post("/v1/cleanup", json!({"dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r.as_array().unwrap().len(), 0);
    // Previewed with a shorter threshold, it is listed; nothing changes.
    let (_, r) = app
        .post("/v1/cleanup", json!({"dry_run": true, "after": "now"}))
        .await;
    let listed: Vec<i64> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["service_id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [child1]);
    assert_eq!(r[0]["outcome"], "planned");
    let (_, s) = app.get(&format!("/v1/services/{child1}")).await;
    assert_eq!(s["status"], "suspended");
    let (_, r) = app.post("/v1/cleanup", json!({"after": "now"})).await;
    assert_eq!(r[0]["outcome"], "queued");
    wait_status(&app, child1, "terminated").await;
    let (_, s) = app.get(&format!("/v1/services/{master}")).await;
    assert_eq!(s["status"], "active");
    app.stop().await;
}

async fn sign_on_goes_from_the_master_to_children_never_up_or_sideways(db: Db) {
    let (app, _, [master, child1, child2]) = setup(db, "").await;
    let url = |v: &Value| v["url"].as_str().unwrap().to_string();
    let (status, own) = app
        .post(&format!("/v1/services/{child1}/login-url"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert!(url(&own).contains("/sso/test-child-1"));
    let (status, down) = app
        .post(
            &format!("/v1/services/{child1}/login-url"),
            json!({"from_service": master}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{down}");
    assert!(url(&down).contains("/sso/test-child-1"));
    for (from, to) in [(child1, master), (child1, child2)] {
        let (status, problem) = app
            .post(
                &format!("/v1/services/{to}/login-url"),
                json!({"from_service": from}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("only a group's master"));
    }
    app.stop().await;
}

async fn collect_shows_and_filters_usage_fields(db: Db) {
    use crate::usage::{active, app_with_remote, client, read_state, sync, write_accounts};
    let (app, _modules, file) = app_with_remote(db, "").await;
    app.create(
        "/v1/products",
        json!({"name": "gold", "module": "script", "settings": {"package": "gold", "data_limit": 100}}),
    )
    .await;
    let c = client(&app).await;
    let heavy = active(&app, c, "gold", "heavy").await;
    active(&app, c, "gold", "light").await;
    let mut accounts = read_state(&file)["accounts"].clone();
    accounts["heavy"]["usage"] = json!({"data": 90});
    accounts["light"]["usage"] = json!({"data": 10});
    write_accounts(&file, accounts);
    assert_eq!(sync(&app, json!({})).await["state"], "done");
    let rows = collect(
        &app,
        json!(["service.username", "usage.data.used", "usage.data.limit"]),
        json!({"usage.data.used": "90.0"}),
    )
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["service_id"], heavy);
    assert_eq!(rows[0]["values"]["usage"]["data"]["used"], 90.0);
    assert_eq!(rows[0]["values"]["usage"]["data"]["limit"], 100.0);
    app.stop().await;
}

async fn transfer_to_another_server_creates_first_and_removes_the_source_after(db: Db) {
    let (app, _, [master, child1, child2]) = setup(db, "").await;
    app.create(
        "/v1/servers",
        json!({"name": "web2", "module": "recorder", "settings": {"token": "Tok-Groups-78"}}),
    )
    .await;
    app.create(
        "/v1/servers",
        json!({"name": "full", "module": "recorder", "settings": {"token": "Tok-Groups-79", "refuse_creates": true}}),
    )
    .await;
    let (_, web1) = app.get("/v1/servers/web1").await;
    let (_, web2) = app.get("/v1/servers/web2").await;

    // A target that refuses: the members stay active on their source, and the failure is
    // reported per member.
    let (status, r) = group_op(&app, "transfer", json!({"server": "full", "wait": 30})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    for m in r["members"].as_array().unwrap() {
        assert_eq!(m["outcome"], "failed", "{r}");
        assert!(
            m["detail"]
                .as_str()
                .unwrap()
                .contains("takes no new accounts"),
            "{m}"
        );
    }
    for id in [master, child1, child2] {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        assert_eq!(s["status"], "active");
        assert_eq!(s["server_id"], web1["id"]);
    }
    assert!(app
        .recorder
        .with(|st| !st.server_calls.iter().any(|c| c.1 == "terminate")));

    // A working target: created there first, then removed from the source.
    let (_, r) = group_op(&app, "transfer", json!({"server": "web2", "wait": 30})).await;
    assert!(every_member(&r, "done"), "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let terminated = app.recorder.with(|st| {
            st.server_calls
                .iter()
                .filter(|c| c.0 == "web1" && c.1 == "terminate")
                .count()
        });
        if terminated == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the sources were not cleaned up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (id, user) in [
        (master, "test-admin"),
        (child1, "test-child-1"),
        (child2, "test-child-2"),
    ] {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        assert_eq!(s["status"], "active", "{s}");
        assert_eq!(s["server_id"], web2["id"], "{s}");
        let calls = app.recorder.with(|st| {
            st.server_calls
                .iter()
                .filter(|c| c.2 == user)
                .map(|c| format!("{}:{}", c.0, c.1))
                .collect::<Vec<_>>()
        });
        let create = calls
            .iter()
            .position(|c| c == "web2:create")
            .expect("created on web2");
        let cleanup = calls
            .iter()
            .position(|c| c == "web1:terminate")
            .expect("removed from web1");
        assert!(create < cleanup, "{calls:?}");
    }
    app.stop().await;
}

/// A small REST remote for the `http` module: accounts per host (the first path segment), a
/// host that takes no new accounts, and sign-on links.
#[derive(Default)]
struct Panel {
    /// (host, username) → remote id.
    accounts: std::collections::BTreeMap<(String, String), String>,
    /// "host:METHOD:username" in arrival order.
    calls: Vec<String>,
}

async fn start_panel() -> (String, std::sync::Arc<std::sync::Mutex<Panel>>) {
    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    type S = std::sync::Arc<std::sync::Mutex<Panel>>;
    let state: S = Default::default();
    async fn create(
        State(st): State<S>,
        Path(host): Path<String>,
        axum::Json(body): axum::Json<Value>,
    ) -> (StatusCode, axum::Json<Value>) {
        let user = body["userName"].as_str().unwrap_or_default().to_string();
        let mut p = st.lock().unwrap();
        p.calls.push(format!("{host}:POST:{user}"));
        if host == "full" {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(json!({"error": "this host takes no new accounts"})),
            );
        }
        let id = format!("{host}-{user}");
        p.accounts.insert((host, user), id.clone());
        (StatusCode::CREATED, axum::Json(json!({ "id": id })))
    }
    async fn remove(State(st): State<S>, Path((host, user)): Path<(String, String)>) -> StatusCode {
        let mut p = st.lock().unwrap();
        p.calls.push(format!("{host}:DELETE:{user}"));
        match p.accounts.remove(&(host, user)) {
            Some(_) => StatusCode::NO_CONTENT,
            None => StatusCode::NOT_FOUND,
        }
    }
    async fn lookup(
        State(st): State<S>,
        Path((host, user)): Path<(String, String)>,
    ) -> (StatusCode, axum::Json<Value>) {
        let p = st.lock().unwrap();
        match p.accounts.get(&(host, user.clone())) {
            Some(_) => (StatusCode::OK, axum::Json(json!({"userName": user}))),
            None => (StatusCode::NOT_FOUND, axum::Json(json!({}))),
        }
    }
    async fn sso(
        State(st): State<S>,
        Path((host, user)): Path<(String, String)>,
    ) -> (StatusCode, axum::Json<Value>) {
        let p = st.lock().unwrap();
        if !p.accounts.contains_key(&(host.clone(), user.clone())) {
            return (StatusCode::NOT_FOUND, axum::Json(json!({})));
        }
        let url = format!(
            "https://{host}.panel.test/sso/{user}?ticket=t-{}",
            p.calls.len()
        );
        (StatusCode::OK, axum::Json(json!({ "url": url })))
    }
    let app = axum::Router::new()
        .route("/{host}/users", post(create))
        .route("/{host}/users/{user}", get(lookup).delete(remove))
        .route("/{host}/users/{user}/sso", post(sso))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

fn panel_settings(base: &str, host: &str) -> Value {
    json!({
        "base_url": format!("{base}/{host}"),
        "timeout_seconds": 10,
        "actions": {
            "create": {"method": "POST", "url": "/users",
                       "body": {"userName": "{{ service.username }}"},
                       "outputs": {"remote_id": "/id"}},
            "terminate": {"method": "DELETE", "url": "/users/{{ service.username }}",
                          "success": {"status": [204, 404]}},
            "lookup": {"method": "GET", "url": "/users/{{ service.username }}",
                       "account": {"username": "/userName"}},
            "login_url": {"method": "POST", "url": "/users/{{ service.username }}/sso",
                          "login_url": "/url"}
        }
    })
}

/// The same rules as above through the real `http` module and a live remote: a transfer to
/// a host that refuses leaves every member where it was, a working one creates on the
/// target before removing from the source, and sign-on links follow the group's rule.
async fn transfer_and_sign_on_through_the_http_module(db: Db) {
    let (base, panel) = start_panel().await;
    let app = spawn_app_with(db, "").await;
    app.create(
        "/v1/servers",
        json!({"name": "panel-a", "module": "http", "settings": panel_settings(&base, "a")}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "hosting", "module": "http", "settings": {}}),
    )
    .await;
    let c = app
        .create(
            "/v1/clients",
            json!({"name": "Test Domain", "email": "admin@test-domain.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let master = site(&app, c, "test-admin", Some(INVOICE), None).await;
    let child1 = site(&app, c, "test-child-1", None, Some(INVOICE)).await;
    let child2 = site(&app, c, "test-child-2", None, Some(INVOICE)).await;
    // Added after the members were placed, so they all live on panel-a.
    for host in ["b", "full"] {
        app.create(
            "/v1/servers",
            json!({"name": format!("panel-{host}"), "module": "http", "settings": panel_settings(&base, host)}),
        )
        .await;
    }
    let url = |v: &Value| v["url"].as_str().unwrap_or_default().to_string();

    // Sign-on: into one's own service, from the master down, never up or sideways.
    let (status, own) = app
        .post(&format!("/v1/services/{child1}/login-url"), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert!(
        url(&own).starts_with("https://a.panel.test/sso/test-child-1"),
        "{own}"
    );
    let (status, down) = app
        .post(
            &format!("/v1/services/{child2}/login-url"),
            json!({"from_service": master}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{down}");
    assert!(
        url(&down).starts_with("https://a.panel.test/sso/test-child-2"),
        "{down}"
    );
    for (from, to) in [(child1, master), (child1, child2)] {
        let (status, problem) = app
            .post(
                &format!("/v1/services/{to}/login-url"),
                json!({"from_service": from}),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    }
    let sso_calls = panel.lock().unwrap().calls.len();
    assert_eq!(sso_calls, 3, "refused links never reach the remote");

    // A target that refuses: every member stays active on panel-a, the failure is reported
    // per member, and nothing was removed from the source.
    let (status, r) = group_op(
        &app,
        "transfer",
        json!({"server": "panel-full", "wait": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let members = r["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{r}");
    for m in members {
        assert_eq!(m["outcome"], "failed", "{m}");
        assert!(
            m["detail"].as_str().unwrap_or_default().contains("422"),
            "{m}"
        );
    }
    let (_, a) = app.get("/v1/servers/panel-a").await;
    for id in [master, child1, child2] {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        assert_eq!(s["status"], "active", "{s}");
        assert_eq!(s["server_id"], a["id"], "{s}");
        assert_eq!(
            s["outputs"]["remote_id"]
                .as_str()
                .unwrap_or_default()
                .get(..2),
            Some("a-"),
            "{s}"
        );
    }
    {
        let p = panel.lock().unwrap();
        assert_eq!(p.accounts.keys().filter(|(h, _)| h == "a").count(), 3);
        assert!(
            !p.calls.iter().any(|c| c.contains(":DELETE:")),
            "{:?}",
            p.calls
        );
    }

    // A working target: created there first, then removed from the source.
    let (status, r) = group_op(&app, "transfer", json!({"server": "panel-b", "wait": 30})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(every_member(&r, "done"), "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while panel.lock().unwrap().accounts.keys().any(|(h, _)| h == "a") {
        assert!(Instant::now() < deadline, "the sources were not cleaned up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, b) = app.get("/v1/servers/panel-b").await;
    let calls = panel.lock().unwrap().calls.clone();
    for (id, user) in [
        (master, "test-admin"),
        (child1, "test-child-1"),
        (child2, "test-child-2"),
    ] {
        let (_, s) = app.get(&format!("/v1/services/{id}")).await;
        assert_eq!(s["status"], "active", "{s}");
        assert_eq!(s["server_id"], b["id"], "{s}");
        assert_eq!(
            s["outputs"]["remote_id"],
            format!("b-{user}"),
            "outputs come from the target"
        );
        let created = calls.iter().position(|c| *c == format!("b:POST:{user}"));
        let removed = calls.iter().position(|c| *c == format!("a:DELETE:{user}"));
        assert!(
            matches!((created, removed), (Some(c), Some(r)) if c < r),
            "{user}: {calls:?}"
        );
    }
    // Links now lead to the new host.
    let (status, moved) = app
        .post(
            &format!("/v1/services/{child1}/login-url"),
            json!({"from_service": master}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert!(
        url(&moved).starts_with("https://b.panel.test/sso/test-child-1"),
        "{moved}"
    );
    app.stop().await;
}

/// A group larger than the page: every member is acted on once, masters first, over two
/// pages, and the last page has no `next`.
async fn group_operations_page_through_a_large_group(db: Db) {
    let (app, c, [master, child1, child2]) = setup(db, "").await;
    let mut expected = vec![master, child1, child2];
    for i in 3..5 {
        expected.push(site(&app, c, &format!("test-child-{i}"), None, Some(INVOICE)).await);
    }
    // Listing: pages of three, masters first.
    let (status, first) = app.get(&format!("/v1/groups/{INVOICE}?limit=3")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let next = first["next"]
        .as_str()
        .expect("more members follow")
        .to_string();
    let (status, second) = app
        .get(&format!("/v1/groups/{INVOICE}?limit=3&after={next}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(second["next"].is_null(), "{second}");
    let listed: Vec<i64> = [&first, &second]
        .iter()
        .flat_map(|p| p["members"].as_array().unwrap().clone())
        .map(|m| m["service_id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(first["members"][0]["role"], "master");

    // A suspend in pages of three, waiting for each page's jobs.
    let (status, p1) = group_op(&app, "suspend", json!({"limit": 3, "wait": 30})).await;
    assert_eq!(status, StatusCode::OK, "{p1}");
    assert_eq!(p1["members"].as_array().unwrap().len(), 3, "{p1}");
    assert!(every_member(&p1, "done"), "{p1}");
    let after = p1["next"].as_str().expect("a second page").to_string();
    // The second page's members are untouched until it is asked for.
    wait_status(&app, expected[3], "active").await;
    let (status, p2) = group_op(
        &app,
        "suspend",
        json!({"limit": 3, "wait": 30, "after": after}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{p2}");
    assert!(p2["next"].is_null(), "{p2}");
    assert!(every_member(&p2, "done"), "{p2}");
    let acted: Vec<i64> = [&p1, &p2]
        .iter()
        .flat_map(|p| p["members"].as_array().unwrap().clone())
        .map(|m| m["service_id"].as_i64().unwrap())
        .collect();
    assert_eq!(acted, expected, "every member once, in order");
    for id in &expected {
        wait_status(&app, *id, "suspended").await;
        let (_, jobs) = app.get(&format!("/v1/jobs?service={id}")).await;
        let suspends = jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["action"] == "suspend")
            .count();
        assert_eq!(suspends, 1, "{id}: {jobs}");
    }

    // Bad paging is refused naming the field.
    for (body, field) in [
        (json!({"limit": 0}), "limit"),
        (json!({"limit": 10_001}), "limit"),
        (json!({"after": "x12"}), "after"),
        (json!({"after": "m-3"}), "after"),
    ] {
        let (status, problem) = group_op(&app, "activate", body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        crate::helpers::assert_field_error(
            status,
            &problem,
            field,
            if field == "limit" { "range" } else { "cursor" },
        );
    }
    // In a listing's query they are 400, as every query parameter is.
    let (status, problem) = app.get(&format!("/v1/groups/{INVOICE}?after=nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    crate::helpers::assert_field_error(status, &problem, "after", "cursor");
    let (status, problem) = app.get(&format!("/v1/groups/{INVOICE}?limit=0")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    crate::helpers::assert_field_error(status, &problem, "limit", "range");
    app.stop().await;
}

/// Filters checked per service read a bounded share of services per request: a page may
/// be short, even empty, with a cursor, and following it reaches the match.
async fn collect_reads_a_bounded_share_per_request(db: Db) {
    let (app, c, _) = setup(db, "").await;
    let other = app
        .create(
            "/v1/clients",
            json!({"name": "Late", "email": "late@far.test"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    for i in 0..20 {
        app.create(
            "/v1/services",
            json!({"client_id": c, "product": "hosting", "username": format!("filler{i}")}),
        )
        .await;
    }
    let last = app
        .create(
            "/v1/services",
            json!({"client_id": other, "product": "hosting", "username": "the-one"}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    // `client.email` is checked per service; a page of 2 reads at most 20 services.
    let query =
        json!({"fields": ["service.username"], "filters": {"client.email": "late@far.test"}});
    let (status, first) = app.post("/v1/collect?limit=2", query.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["items"], json!([]), "{first}");
    let mut cursor = first["next_cursor"]
        .as_str()
        .expect("a short page still says where to go on")
        .to_string();
    let mut found = Vec::new();
    let mut requests = 1;
    loop {
        let (status, page) = app
            .post(
                &format!("/v1/collect?limit=2&cursor={cursor}"),
                query.clone(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        requests += 1;
        found.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["service_id"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
        assert!(requests < 10, "the cursor never ends");
    }
    assert_eq!(found, [last]);
    assert_eq!(requests, 2, "24 services before the match, 20 a request");
    app.stop().await;
}

on_both!(
    group_operations_page_through_a_large_group,
    collect_reads_a_bounded_share_per_request,
    the_seed_walk_through_works,
    transfer_moves_members_to_another_client,
    group_operations_refuse_bad_input_and_unknown_groups,
    clean_up_terminates_long_suspended_services,
    sign_on_goes_from_the_master_to_children_never_up_or_sideways,
    collect_shows_and_filters_usage_fields,
    transfer_to_another_server_creates_first_and_removes_the_source_after,
    transfer_and_sign_on_through_the_http_module,
);
