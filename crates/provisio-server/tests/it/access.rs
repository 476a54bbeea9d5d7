//! Roles and scopes: every operation of the OpenAPI document, driven with a key of each
//! role, answers as the document's `x-provisio-roles` says; client and reseller keys reach
//! only their own records, by id, list, collect, events, jobs or group operation; keys are
//! made, listed and revoked over the API; failed logins are rate-limited.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{captured_log, spawn_app, spawn_app_with, Db, TestApp};

struct World {
    reseller: i64,
    /// The client key's client, another client, and the reseller's client.
    a: i64,
    b: i64,
    c: i64,
    /// One service of each, with invoices INV-A, INV-B and INV-C.
    sa: i64,
    sb: i64,
    sc: i64,
}

async fn order(app: &TestApp, client: i64, username: &str, invoice: &str) -> i64 {
    let s = app
        .create(
            "/v1/services",
            json!({"client_id": client, "product": "plan", "username": username, "invoice": invoice}),
        )
        .await;
    let id = s["id"].as_i64().unwrap();
    let (_, jobs) = app.get(&format!("/v1/services/{id}/jobs")).await;
    let job = app.wait_job(jobs["items"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "done", "{job}");
    id
}

async fn world(app: &TestApp) -> World {
    let reseller = app
        .create("/v1/resellers", json!({"name": "Hosts R Us"}))
        .await["id"]
        .as_i64()
        .unwrap();
    let client = |name: &str, reseller: Option<i64>| {
        let mut body =
            json!({"name": name, "email": format!("{}@example.test", name.to_lowercase())});
        if let Some(r) = reseller {
            body["reseller_id"] = json!(r);
        }
        body
    };
    let a = app.create("/v1/clients", client("Alice", None)).await["id"]
        .as_i64()
        .unwrap();
    let b = app.create("/v1/clients", client("Bob", None)).await["id"]
        .as_i64()
        .unwrap();
    let c = app
        .create("/v1/clients", client("Carol", Some(reseller)))
        .await;
    assert_eq!(c["reseller_id"], reseller);
    let c = c["id"].as_i64().unwrap();
    app.create(
        "/v1/servers",
        json!({"name": "rec", "module": "recorder", "settings": {"token": "Tok-Access-7781"}}),
    )
    .await;
    app.create(
        "/v1/products",
        json!({"name": "plan", "module": "recorder", "settings": {"package": "a"}}),
    )
    .await;
    let sa = order(app, a, "alice", "INV-A").await;
    let sb = order(app, b, "bob", "INV-B").await;
    let sc = order(app, c, "carol", "INV-C").await;
    World {
        reseller,
        a,
        b,
        c,
        sa,
        sb,
        sc,
    }
}

struct Keys {
    admin: String,
    operator: String,
    billing: String,
    readonly: String,
    client: String,
    reseller: String,
}

async fn keys(app: &TestApp, w: &World) -> Keys {
    Keys {
        admin: app.key.clone(),
        operator: app
            .make_key(json!({"name": "ops", "role": "operator"}))
            .await,
        billing: app
            .make_key(json!({"name": "whmcs", "role": "billing"}))
            .await,
        readonly: app
            .make_key(json!({"name": "look", "role": "readonly"}))
            .await,
        client: app
            .make_key(json!({"name": "alice", "role": "client", "client_id": w.a}))
            .await,
        reseller: app
            .make_key(json!({"name": "hosts", "role": "reseller", "reseller_id": w.reseller}))
            .await,
    }
}

/// The path with its parameters filled in: the role's own records where it has some,
/// ids that exist nowhere for the rest (so a permitted delete changes nothing).
fn fill(path: &str, own_client: i64, own_service: i64, own_job: i64, invoice: &str) -> String {
    let id = if path.starts_with("/v1/clients/") {
        own_client.to_string()
    } else if path.starts_with("/v1/services/") {
        own_service.to_string()
    } else if path.starts_with("/v1/jobs/") {
        own_job.to_string()
    } else {
        "999999".into()
    };
    path.replace("{id}", &id)
        .replace("{server}", "999999")
        .replace("{product}", "999999")
        .replace("{handler}", "999999")
        .replace("{rule}", "999999")
        .replace("{name}", "recorder")
        .replace("{invoice}", invoice)
        .replace("{action}", "suspend")
        .replace("{operation}", "suspend")
}

async fn every_operation_answers_as_its_roles_say(db: Db) {
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let k = keys(&app, &w).await;
    let job_of = |s: i64| {
        let app = &app;
        async move {
            let (_, jobs) = app.get(&format!("/v1/services/{s}/jobs")).await;
            jobs["items"][0]["id"].as_i64().unwrap()
        }
    };
    let (ja, jc) = (job_of(w.sa).await, job_of(w.sc).await);
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: [(&str, &str); 6] = [
        ("readonly", &k.readonly),
        ("client", &k.client),
        ("reseller", &k.reseller),
        ("billing", &k.billing),
        ("operator", &k.operator),
        ("admin", &k.admin),
    ];
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let allowed: Vec<&str> = op["x-provisio-roles"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} documents no roles"))
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // An unknown field makes every permitted write stop at validation, so the
            // matrix changes nothing it runs over.
            let body = matches!(m, Method::POST | Method::PUT | Method::PATCH)
                .then(|| json!({"probe_unknown_field": 1}));
            for (role, key) in roles {
                let url = if role == "reseller" {
                    fill(path, w.c, w.sc, jc, "INV-C")
                } else {
                    fill(path, w.a, w.sa, ja, "INV-A")
                };
                let (status, answer) = app.call_as(key, m.clone(), &url, body.clone()).await;
                let scoped = matches!(role, "client" | "reseller");
                // Reading a password also needs reveal_secrets, which only admin has here.
                let secret = path.ends_with("/password") && role != "admin";
                let permitted = allowed.contains(&role) && !secret;
                let what = format!("{role} {method} {url}: {status} {answer}");
                assert_ne!(status, StatusCode::UNAUTHORIZED, "{what}");
                assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}");
                if permitted {
                    assert_ne!(status, StatusCode::FORBIDDEN, "{what}");
                    assert_ne!(answer["detail"], "not found", "{what}");
                } else if scoped {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{what}");
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                    assert!(
                        answer["type"].as_str().unwrap().ends_with("/forbidden"),
                        "{what}"
                    );
                    if !secret {
                        assert_eq!(answer["roles"], json!(allowed), "{what}");
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 6 * 70, "only {checked} requests");
    app.stop().await;
}

async fn roles_hold_what_the_brief_says(db: Db) {
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let k = keys(&app, &w).await;
    let client = json!({"name": "New", "email": "new@example.test"});
    let server = json!({"name": "x", "module": "recorder", "settings": {"token": "t"}});
    for (key, method, path, body, want) in [
        (
            &k.billing,
            Method::POST,
            "/v1/clients",
            Some(client.clone()),
            StatusCode::CREATED,
        ),
        (
            &k.billing,
            Method::GET,
            "/v1/servers",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &k.billing,
            Method::POST,
            "/v1/servers",
            Some(server.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            &k.billing,
            Method::GET,
            "/v1/handlers",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &k.billing,
            Method::GET,
            "/v1/rules",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &k.billing,
            Method::GET,
            "/v1/modules",
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            &k.billing,
            Method::POST,
            "/v1/collect",
            Some(json!({})),
            StatusCode::OK,
        ),
        (
            &k.readonly,
            Method::GET,
            "/v1/servers",
            None,
            StatusCode::OK,
        ),
        (
            &k.readonly,
            Method::POST,
            "/v1/clients",
            Some(client.clone()),
            StatusCode::FORBIDDEN,
        ),
        (
            &k.operator,
            Method::POST,
            "/v1/servers",
            Some(server),
            StatusCode::CREATED,
        ),
        (
            &k.operator,
            Method::GET,
            "/v1/keys",
            None,
            StatusCode::FORBIDDEN,
        ),
        (&k.admin, Method::GET, "/v1/keys", None, StatusCode::OK),
        (
            &k.client,
            Method::GET,
            "/v1/servers",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            &k.client,
            Method::GET,
            "/v1/keys",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            &k.reseller,
            Method::GET,
            "/v1/products",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            &k.reseller,
            Method::POST,
            "/v1/usage/syncs",
            Some(json!({})),
            StatusCode::NOT_FOUND,
        ),
        // Audit reports are the billing system's to read (ListAccounts); starting one (and
        // so fixing drift) is set-up, and the reports cover the whole instance.
        (&k.billing, Method::GET, "/v1/audits", None, StatusCode::OK),
        (
            &k.billing,
            Method::POST,
            "/v1/audits",
            Some(json!({"fix": "local", "client": w.a})),
            StatusCode::FORBIDDEN,
        ),
        (&k.readonly, Method::GET, "/v1/audits", None, StatusCode::OK),
        (
            &k.reseller,
            Method::GET,
            "/v1/audits",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            &k.client,
            Method::GET,
            "/v1/audits",
            None,
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, answer) = app.call_as(key, method.clone(), path, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
    }
    let (status, answer) = app
        .call_as(&k.billing, Method::POST, "/v1/servers", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(answer["roles"], json!(["admin", "operator"]));
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("role admin or operator")
            && answer["detail"].as_str().unwrap().contains("billing"),
        "{answer}"
    );

    // Passwords: admin always; operator and billing only with reveal_secrets; readonly never.
    let pw = format!("/v1/services/{}/password", w.sa);
    for key in [&k.operator, &k.billing, &k.readonly] {
        let (status, answer) = app.call_as(key, Method::GET, &pw, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    }
    let revealing = app
        .make_key(json!({"name": "ops-pw", "role": "operator", "reveal_secrets": true}))
        .await;
    let (status, answer) = app.call_as(&revealing, Method::GET, &pw, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["password"].is_string());
    let (status, answer) = app
        .call(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "ro-pw", "role": "readonly", "reveal_secrets": true})),
        )
        .await;
    crate::helpers::assert_field_error(status, &answer, "reveal_secrets", "not_applicable");
    app.stop().await;
}

fn ids(list: &Value) -> Vec<i64> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect()
}

async fn a_client_key_reaches_only_its_own_records(db: Db) {
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let k = keys(&app, &w).await;
    let key = &k.client;
    let get = |path: String| {
        let app = &app;
        async move { app.call_as(key, Method::GET, &path, None).await }
    };
    let (_, jobs_b) = app.get(&format!("/v1/services/{}/jobs", w.sb)).await;
    let job_b = jobs_b["items"][0]["id"].as_i64().unwrap();
    for path in [
        format!("/v1/services/{}", w.sb),
        format!("/v1/services/{}/jobs", w.sb),
        format!("/v1/services/{}/usage", w.sb),
        format!("/v1/services/{}/password", w.sb),
        format!("/v1/clients/{}", w.b),
        format!("/v1/clients/{}/transactions", w.b),
        format!("/v1/jobs/{job_b}"),
        "/v1/groups/INV-B".into(),
        "/v1/groups/INV-A".into(),
    ] {
        let (status, answer) = get(path.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    for (path, body) in [
        (
            format!("/v1/services/{}/change-password", w.sb),
            json!({"password": "Str0ng-Pass-1"}),
        ),
        (format!("/v1/services/{}/login-url", w.sb), json!({})),
        ("/v1/collect".to_string(), json!({})),
        ("/v1/groups/INV-B/suspend".to_string(), json!({})),
    ] {
        let (status, answer) = app.call_as(key, Method::POST, &path, Some(body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    // Lists hold only its own.
    assert_eq!(ids(&get("/v1/services".into()).await.1), [w.sa]);
    assert_eq!(ids(&get("/v1/clients".into()).await.1), [w.a]);
    let (_, jobs) = get("/v1/jobs".into()).await;
    assert!(!jobs["items"].as_array().unwrap().is_empty());
    assert!(
        jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["service_id"] == w.sa),
        "{jobs}"
    );
    let (_, events) = get("/v1/events".into()).await;
    let subjects: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert!(!subjects.is_empty());
    assert!(
        subjects.iter().all(|s| *s == format!("service:{}", w.sa)),
        "{subjects:?}"
    );
    let (_, all) = app.get("/v1/events").await;
    assert!(
        all["items"].as_array().unwrap().len() > subjects.len(),
        "the admin sees more"
    );

    // Its own service: reading and the default actions, nothing else.
    let (status, _) = get(format!("/v1/services/{}", w.sa)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(format!("/v1/services/{}/usage", w.sa)).await;
    assert_ne!(status, StatusCode::FORBIDDEN);
    assert_ne!(status, StatusCode::NOT_FOUND);
    let (status, answer) = app
        .call_as(
            key,
            Method::POST,
            &format!("/v1/services/{}/suspend", w.sa),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("'suspend'"),
        "{answer}"
    );
    let (status, answer) = app
        .call_as(
            key,
            Method::POST,
            &format!("/v1/services/{}/change-password?wait=20", w.sa),
            Some(json!({"password": "Str0ng-Pass-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "done", "{answer}");

    // A key naming its actions may run those.
    let suspender = app
        .make_key(
            json!({"name": "alice-2", "role": "client", "client_id": w.a, "actions": ["suspend"]}),
        )
        .await;
    let (status, answer) = app
        .call_as(
            &suspender,
            Method::POST,
            &format!("/v1/services/{}/suspend?wait=20", w.sa),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, _) = app
        .call_as(
            &suspender,
            Method::GET,
            &format!("/v1/services/{}/usage", w.sa),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "usage is not among its actions"
    );
    app.stop().await;
}

async fn a_reseller_key_works_inside_its_reseller(db: Db) {
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let k = keys(&app, &w).await;
    let key = &k.reseller;
    let (_, clients) = app.call_as(key, Method::GET, "/v1/clients", None).await;
    assert_eq!(ids(&clients), [w.c]);
    let (_, services) = app.call_as(key, Method::GET, "/v1/services", None).await;
    assert_eq!(ids(&services), [w.sc]);
    // New clients land inside the reseller; another reseller's id is refused.
    let (status, made) = app
        .call_as(
            key,
            Method::POST,
            "/v1/clients",
            Some(json!({"name": "Dan", "email": "dan@example.test"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["reseller_id"], w.reseller);
    let (status, answer) = app
        .call_as(
            key,
            Method::POST,
            "/v1/clients",
            Some(
                json!({"name": "Eve", "email": "eve@example.test", "reseller_id": w.reseller + 1}),
            ),
        )
        .await;
    crate::helpers::assert_field_error(status, &answer, "reseller_id", "scope");
    // Orders only for its own clients.
    let (status, answer) = app
        .call_as(
            key,
            Method::POST,
            "/v1/services",
            Some(json!({"client_id": w.b, "product": "plan"})),
        )
        .await;
    crate::helpers::assert_field_error(status, &answer, "client_id", "exists");
    let (status, answer) = app
        .call_as(
            key,
            Method::POST,
            "/v1/services",
            Some(json!({"client_id": made["id"], "product": "plan"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    // Collect, groups, jobs and events hold only its records.
    let (status, collected) = app
        .call_as(key, Method::POST, "/v1/collect", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{collected}");
    let got: Vec<i64> = collected["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["service_id"].as_i64().unwrap())
        .collect();
    assert!(
        got.contains(&w.sc) && !got.contains(&w.sa) && !got.contains(&w.sb),
        "{got:?}"
    );
    let (status, _) = app
        .call_as(key, Method::GET, "/v1/groups/INV-C", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for (m, path) in [
        (Method::GET, "/v1/groups/INV-B"),
        (Method::POST, "/v1/groups/INV-B/suspend"),
    ] {
        let (status, answer) = app.call_as(key, m, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    let (_, jobs) = app.call_as(key, Method::GET, "/v1/jobs", None).await;
    let theirs: Vec<i64> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["service_id"].as_i64().unwrap())
        .collect();
    assert!(
        !theirs.is_empty() && !theirs.contains(&w.sa) && !theirs.contains(&w.sb),
        "{theirs:?}"
    );
    // A group operation on its own group runs.
    let (status, answer) = app
        .call_as(
            key,
            Method::POST,
            "/v1/groups/INV-C/suspend?",
            Some(json!({"dry_run": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["members"].as_array().unwrap().len(), 1, "{answer}");
    // A transfer cannot move its services to a client outside it.
    let (status, answer) = app
        .call_as(
            key,
            Method::POST,
            "/v1/groups/INV-C/transfer",
            Some(json!({"client": w.a, "dry_run": true})),
        )
        .await;
    crate::helpers::assert_field_error(status, &answer, "client", "exists");

    // A suspended reseller's keys are refused.
    let (status, _) = app
        .patch(
            &format!("/v1/resellers/{}", w.reseller),
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = app.call_as(key, Method::GET, "/v1/clients", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        answer["detail"].as_str().unwrap().contains("suspended"),
        "{answer}"
    );
    app.stop().await;
}

async fn keys_are_made_shown_once_and_revoked(db: Db) {
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let (status, made) = app
        .call(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "whmcs", "role": "billing"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("pvo_") && key.len() == 68);
    assert_eq!(made["role"], "billing");
    let (status, _) = app.call_as(&key, Method::GET, "/v1/clients", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, listed) = app.get("/v1/keys").await;
    let text = listed.to_string();
    assert!(!text.contains(&key), "a listing never shows a key");
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "whmcs")
        .unwrap()
        .clone();
    assert!(row["last_used_at"].is_string(), "{row}");
    assert!(key.starts_with(row["prefix"].as_str().unwrap()));

    // Bad specifications name the field and the rule.
    for (body, field, rule) in [
        (json!({"name": "x", "role": "root"}), "role", "type"),
        (
            json!({"name": "x", "role": "client"}),
            "client_id",
            "required",
        ),
        (
            json!({"name": "x", "role": "client", "client_id": 999999}),
            "client_id",
            "exists",
        ),
        (
            json!({"name": "x", "role": "billing", "client_id": w.a}),
            "client_id",
            "not_applicable",
        ),
        (
            json!({"name": "x", "role": "billing", "actions": ["suspend"]}),
            "actions",
            "not_applicable",
        ),
        (
            json!({"name": "x", "role": "client", "client_id": w.a, "actions": ["rm-rf"]}),
            "actions[0]",
            "one_of",
        ),
        (
            json!({"name": "x", "role": "reseller"}),
            "reseller_id",
            "required",
        ),
        (
            json!({"name": "x", "role": "billing", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
            "future",
        ),
        (
            json!({"name": "bad name!", "role": "billing"}),
            "name",
            "pattern",
        ),
    ] {
        let (status, answer) = app.call(Method::POST, "/v1/keys", Some(body.clone())).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY
                && answer["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["field"] == field && (e["rule"] == rule || rule == "type")),
            "{body}: {status} {answer}"
        );
    }
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "whmcs", "role": "billing"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "names are unique among keys in use"
    );

    // Revoked: the next request fails, and the name can be given again.
    let id = row["id"].as_i64().unwrap();
    let (status, revoked) = app.delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, answer) = app.call_as(&key, Method::GET, "/v1/clients", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        answer["detail"].as_str().unwrap().contains("revoked"),
        "{answer}"
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/keys",
            Some(json!({"name": "whmcs", "role": "billing"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app.delete("/v1/keys/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Expired: refused once its time has come.
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let brief = app
        .make_key(json!({"name": "brief", "role": "readonly", "expires_at": soon}))
        .await;
    let (status, _) = app.call_as(&brief, Method::GET, "/v1/clients", None).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    let (status, answer) = app.call_as(&brief, Method::GET, "/v1/clients", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        answer["detail"].as_str().unwrap().contains("expired"),
        "{answer}"
    );

    // No key made here ever reached the log.
    let log = captured_log();
    assert!(!log.contains(&key) && !log.contains(&brief));
    app.stop().await;
}

async fn failed_logins_are_rate_limited_per_address(db: Db) {
    let app = spawn_app_with(db, "[http]\nauth_failures_per_minute = 3\n").await;
    let wrong = "pvo_0000000000000000000000000000000000000000000000000000000000000bad";
    for _ in 0..3 {
        let (status, _) = app.call_as(wrong, Method::GET, "/v1/clients", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let resp = app
        .request_as(wrong, Method::GET, "/v1/clients", None)
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    // Blocked whatever key it sends, so keys cannot be guessed on.
    let (status, _) = app.get("/v1/clients").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Health is never refused.
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let log = captured_log();
    assert!(log.contains("authentication failed"));
    assert!(!log.contains(wrong), "the presented key is not logged");
    app.stop().await;
}

/// Polls `path` (admin key) until `done` holds, for at most 20 s.
async fn until(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, v) = app.get(path).await;
        if done(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The service's first job of `action`, once it is done (or after 20 s, as it is then).
async fn finished_job(app: &TestApp, service: i64, action: &str) -> Value {
    let done = |j: &Value| j["action"] == action && j["state"] == "done";
    let jobs = until(app, &format!("/v1/services/{service}/jobs"), |v| {
        v["items"].as_array().unwrap().iter().any(done)
    })
    .await;
    let found = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["action"] == action);
    found.cloned().unwrap_or(Value::Null)
}

async fn every_change_names_who_caused_it(db: Db) {
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let billing = app
        .make_key(json!({"name": "whmcs", "role": "billing"}))
        .await;
    let (_, keys) = app.get("/v1/keys").await;
    let id_of = |name: &str| {
        keys.as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (billing_id, admin_id) = (id_of("whmcs"), id_of("admin"));
    let by_billing = json!({"kind": "key", "id": billing_id, "name": "whmcs"});

    // A request's job, its outcome's event and a transaction name the key.
    let (status, job) = app
        .call_as(
            &billing,
            Method::POST,
            &format!("/v1/services/{}/suspend?wait=20", w.sa),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["actor"], by_billing, "{job}");
    let (status, t) = app
        .call_as(
            &billing,
            Method::POST,
            &format!("/v1/clients/{}/transactions", w.a),
            Some(json!({"kind": "payment", "amount_minor": 100, "idempotency_key": "p-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    assert_eq!(t["actor"], by_billing);
    let (_, events) = app.get(&format!("/v1/events?actor=key:{billing_id}")).await;
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    // The outcome was written by the worker, but its cause is the job's.
    for k in ["service.suspend.before", "service.suspend.succeeded"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert!(events["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == by_billing));
    // The set-up the admin key did is the admin's, not the billing key's.
    let (_, created) = app
        .get(&format!(
            "/v1/events?actor=key:{admin_id}&type=client.created"
        ))
        .await;
    assert_eq!(created["items"].as_array().unwrap().len(), 3, "{created}");

    // A service's edit is on record with its editor.
    let (status, _) = app
        .call_as(
            &billing,
            Method::PATCH,
            &format!("/v1/services/{}", w.sa),
            Some(json!({"invoice": "INV-A2"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, edited) = app
        .get(&format!(
            "/v1/events?type=service.updated&subject=service:{}",
            w.sa
        ))
        .await;
    assert_eq!(edited["items"][0]["actor"], by_billing, "{edited}");
    assert_eq!(
        edited["items"][0]["payload"]["service"]["invoice"],
        "INV-A2"
    );

    // Changes of servers and products are on record too, with who made them.
    let (_, setup) = app
        .get(&format!(
            "/v1/events?actor=key:{admin_id}&type=server.*,product.*"
        ))
        .await;
    let kinds: Vec<&str> = setup["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["server.created", "product.created"], "{setup}");
    let operator = app
        .make_key(json!({"name": "ops", "role": "operator"}))
        .await;
    let (status, _) = app
        .call_as(
            &operator,
            Method::PATCH,
            "/v1/servers/rec",
            Some(json!({"max_concurrent": 3})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, changed) = app.get("/v1/events?type=server.updated").await;
    let e = &changed["items"][0];
    assert_eq!(e["actor"]["name"], "ops", "{changed}");
    assert_eq!(e["payload"]["server"]["max_concurrent"], 3);
    assert!(
        !changed.to_string().contains("Tok-Access-7781"),
        "no secret in the event"
    );

    // A rule's doing is the rule's: B's balance falls from above zero to below.
    let (status, _) = app
        .post(
            &format!("/v1/clients/{}/transactions", w.b),
            json!({"kind": "payment", "amount_minor": 100, "idempotency_key": "pay-0"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let rule = app
        .call_as_created(
            &operator,
            "/v1/rules",
            json!({"name": "dunning", "on": "client.balance_nonpositive",
                   "action": {"kind": "suspend_services", "reason": "non-payment"}}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let (status, _) = app
        .post(
            &format!("/v1/clients/{}/transactions", w.b),
            json!({"kind": "charge", "amount_minor": 500, "idempotency_key": "inv-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, made) = app
        .get(&format!("/v1/events?type=rule.created&subject=rule:{rule}"))
        .await;
    assert_eq!(made["items"][0]["actor"]["name"], "ops", "{made}");
    let suspend = finished_job(&app, w.sb, "suspend").await;
    assert_eq!(
        suspend["actor"],
        json!({"kind": "rule", "id": rule}),
        "{suspend}"
    );
    let (_, events) = app.get(&format!("/v1/events?actor=rule:{rule}")).await;
    assert!(!events["items"].as_array().unwrap().is_empty());

    // The scheduler unsuspends when a suspension's time is up.
    let until_soon = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    app.act(w.sc, "suspend", Some(json!({"until": until_soon})))
        .await;
    let unsuspend = finished_job(&app, w.sc, "unsuspend").await;
    assert_eq!(
        unsuspend["actor"],
        json!({"kind": "scheduler"}),
        "{unsuspend}"
    );

    let (status, answer) = app.get("/v1/events?actor=root").await;
    crate::helpers::assert_field_error(status, &answer, "actor", "pattern");
    app.stop().await;
}

/// Every node keeps keys, resellers, products and servers in memory; a change made through
/// another node (here a second store on the same database, as another engine holds) takes
/// effect on the very next request, never after a delay.
async fn another_nodes_changes_take_effect_on_the_next_request(db: Db) {
    let app = spawn_app(db).await;
    let w = world(&app).await;
    let k = keys(&app, &w).await;
    let other = provisio_store::open(&app.db_url).await.unwrap();

    // Each request first, so this node holds a copy of what the other one changes.
    let (status, answer) = app
        .call_as(&k.operator, Method::GET, "/v1/servers", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ops = other
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == "ops")
        .unwrap();
    other
        .revoke_api_key(ops.id, chrono::Utc::now())
        .await
        .unwrap();
    let (status, answer) = app
        .call_as(&k.operator, Method::GET, "/v1/servers", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("revoked"),
        "{answer}"
    );

    let (status, answer) = app
        .call_as(&k.reseller, Method::GET, "/v1/clients", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut r = other
        .get_reseller(provisio_core::ResellerId(w.reseller))
        .await
        .unwrap()
        .unwrap();
    r.status = provisio_core::access::ResellerStatus::Suspended;
    other.update_reseller(&r).await.unwrap();
    let (status, answer) = app
        .call_as(&k.reseller, Method::GET, "/v1/clients", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");

    let order = |username: &str, product: &str| json!({"client_id": w.a, "product": product, "username": username, "invoice": "INV-N"});
    let (status, answer) = app.post("/v1/services", order("dave", "plan")).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let mut p = other.get_product_by_name("plan").await.unwrap().unwrap();
    p.name = provisio_core::text::Handle::parse("plan-two").unwrap();
    other.update_product(&p).await.unwrap();
    let (status, answer) = app.post("/v1/services", order("erin", "plan")).await;
    crate::helpers::assert_field_error(status, &answer, "product", "exists");
    let (status, answer) = app.post("/v1/services", order("erin", "plan-two")).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");

    // Placement's server list too: the only server, disabled elsewhere, takes no order.
    let mut s = other.get_server_by_name("rec").await.unwrap().unwrap();
    s.enabled = false;
    other.update_server(&s).await.unwrap();
    let (status, answer) = app.post("/v1/services", order("fay", "plan-two")).await;
    crate::helpers::assert_field_error(status, &answer, "server", "placement");
    other.close().await;
    app.stop().await;
}

on_both!(
    another_nodes_changes_take_effect_on_the_next_request,
    every_change_names_who_caused_it,
    every_operation_answers_as_its_roles_say,
    roles_hold_what_the_brief_says,
    a_client_key_reaches_only_its_own_records,
    a_reseller_key_works_inside_its_reseller,
    keys_are_made_shown_once_and_revoked,
    failed_logins_are_rate_limited_per_address,
);
