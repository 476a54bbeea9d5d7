//! Known secrets written through the API appear nowhere: not in the database file, not in
//! the log, not in any API answer but the one password endpoint. That holds for settings a
//! pass-through module (`script`) does not declare but whose names look like credentials.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{captured_log, spawn_app, Db};

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// SQLite only: it searches the database's files (WAL included) for the secrets, and only
/// SQLite keeps a database in files of the test's own.
#[tokio::test]
async fn secrets_are_encrypted_at_rest_and_never_shown() {
    let app = spawn_app(Db::Sqlite).await;
    let server_secret = "SrvSecret-7d1f4c2a9b";
    let service_password = "SvcPassword-3e8a6b0c5d";
    let product_secret = "should-not-be-accepted-9f2";
    // Undeclared settings of a pass-through module, secret by their names alone.
    let undeclared = [
        "UndeclaredToken-5a1e",
        "UndeclaredClientSecret-b27c",
        "UndeclaredDbPassword-0c9d",
        "UndeclaredCredentials-e41f",
    ];

    let client = app
        .create("/v1/clients", json!({"name": "A", "email": "a@a.test"}))
        .await;
    let server = app
        .create(
            "/v1/servers",
            json!({"name": "bk", "module": "backup",
                   "settings": {"hostname": "h", "username": "admin", "password": server_secret}}),
        )
        .await;
    app.create(
        "/v1/servers",
        json!({"name": "sc", "module": "script",
        "settings": {"executable": "x.sh", "api_secret": server_secret, "auth_token": undeclared[0]}}),
    )
    .await;
    let product = app
        .create(
            "/v1/products",
            json!({"name": "p", "module": "script",
                   "settings": {"client_secret": undeclared[1], "quota": 10}}),
        )
        .await;
    let svc = app
        .create(
            "/v1/services",
            json!({"client_id": client["id"], "product": "p", "password": service_password,
                   "settings": {"db_password": undeclared[2], "credentials": undeclared[3], "keyboard": "de"}}),
        )
        .await;
    // Masked where they are shown: named among the secrets, their values absent; an
    // ordinary undeclared setting stays in view.
    let (_, sc) = app.get("/v1/servers/sc").await;
    assert!(sc["secrets"].to_string().contains("auth_token"), "{sc}");
    assert!(
        product["secrets"].to_string().contains("client_secret"),
        "{product}"
    );
    assert_eq!(product["settings"]["quota"], 10, "{product}");
    assert_eq!(svc["settings"]["keyboard"], "de", "{svc}");
    assert!(svc["settings"].get("db_password").is_none(), "{svc}");
    // A rejected request carrying a secret in a wrongly typed field.
    let (status, body) = app
        .post(
            "/v1/servers",
            json!({"name": "bad", "module": "script", "max_concurrent": product_secret}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        !body.to_string().contains(product_secret),
        "error echoes a value: {body}"
    );
    // A wrong-typed password.
    let (status, body) = app
        .post(
            "/v1/services",
            json!({"client_id": client["id"], "product": "p", "password": ["x", service_password]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!body.to_string().contains(service_password), "{body}");

    // Every listing and record the API shows.
    for path in [
        "/v1/servers".to_string(),
        format!("/v1/servers/{}", server["id"]),
        "/v1/servers/sc".to_string(),
        "/v1/services".to_string(),
        format!("/v1/services/{}", svc["id"]),
        "/v1/products".to_string(),
        format!("/v1/products/{}", product["id"]),
        "/v1/clients".to_string(),
        "/v1/jobs".to_string(),
        "/v1/events".to_string(),
    ] {
        let (_, body) = app.get(&path).await;
        let text = body.to_string();
        assert!(
            !text.contains(server_secret) && !text.contains(service_password),
            "{path}: {text}"
        );
        for secret in undeclared {
            assert!(!text.contains(secret), "{path}: {text}");
        }
    }
    // API keys: made over the API, used (so their actor is recorded), then listed.
    let billing_key = app
        .make_key(json!({"name": "whmcs", "role": "billing"}))
        .await;
    let (status, _) = app
        .call_as(&billing_key, reqwest::Method::GET, "/v1/clients", None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let (_, transaction) = app
        .call_as(
            &billing_key,
            reqwest::Method::POST,
            &format!("/v1/clients/{}/transactions", client["id"]),
            Some(json!({"kind": "payment", "amount_minor": 1, "idempotency_key": "k-1"})),
        )
        .await;
    assert_eq!(
        transaction["actor"]["name"], "whmcs",
        "the actor is named, not its key"
    );
    for path in ["/v1/keys", "/v1/events", "/v1/jobs"] {
        let (_, body) = app.get(path).await;
        let text = body.to_string();
        assert!(
            !text.contains(&billing_key) && !text.contains(&app.key),
            "{path}: {text}"
        );
    }
    // The one explicit endpoint does show the password.
    let (_, pw) = app
        .get(&format!("/v1/services/{}/password", svc["id"]))
        .await;
    assert_eq!(pw["password"], service_password);

    // The database files, WAL included.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("provisio.db")
        {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(bytes.len() > 4096, "read the database");
    assert!(
        contains(&bytes, "admin"),
        "plain settings are there, so the search works"
    );
    for secret in [server_secret, service_password, product_secret]
        .into_iter()
        .chain(undeclared)
    {
        assert!(
            !contains(&bytes, secret),
            "{secret} found in the database file"
        );
    }
    // Keys are stored as hashes only.
    assert!(!contains(&bytes, &billing_key) && !contains(&bytes, &app.key));
    // The log, at trace level.
    let log = captured_log();
    assert!(!log.is_empty());
    for secret in [server_secret, service_password, product_secret]
        .into_iter()
        .chain(undeclared)
    {
        assert!(!log.contains(secret), "{secret} found in the log");
    }
    // Nor any API key.
    assert!(!log.contains(&app.key) && !log.contains(&billing_key));
    app.stop().await;
}
