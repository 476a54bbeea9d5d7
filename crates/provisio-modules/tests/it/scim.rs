//! Tests of the `scim` module against the real `scim2-server` (PyPI), one server per test
//! on a free loopback port, checked through its own SCIM API; and against raw TCP peers that
//! hang up or stay silent after reading a request.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use provisio_core::module::{
    Action, ActionReply, ActionRequest, ClientContext, ErrorKind, Module, ModuleError,
    ProductContext, RemoteAccount, ServerContext, ServiceContext,
};
use provisio_core::settings::{Mode, Settings};
use provisio_modules::scim::ScimModule;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

const TOKEN: &str = "tok-Scim-8e41b7d2";
const PASSWORD: &str = "svc-Scim-51c9f0a3";
const NEW_PASSWORD: &str = "new-Scim-Pw-d2e870";
const WRONG_TOKEN: &str = "wrong-Tok-0a9b8c7d";
/// Every call of a test is bounded by this.
const CALL_LIMIT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ the server

/// A running scim2-server; killed on drop.
struct ScimServer {
    _child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
}

fn scim2_server_path() -> PathBuf {
    let python = std::env::var("PROVISIO_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "PROVISIO_TEST_PYTHON is not set: run the tests through scripts/test, which installs \
             scim2-server into a virtual environment and exports its python"
        )
    });
    let exe = PathBuf::from(&python)
        .parent()
        .expect("PROVISIO_TEST_PYTHON is a path")
        .join("scim2-server");
    assert!(
        exe.exists(),
        "{} is missing: run scripts/test, which installs scim2-server next to {python}",
        exe.display()
    );
    exe
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ScimServer {
    async fn start() -> ScimServer {
        let exe = scim2_server_path();
        let http = reqwest::Client::new();
        // A port picked by the kernel may be taken again before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            let mut child = tokio::process::Command::new(&exe)
                .args(["--port", &port.to_string(), "--bearer-token", TOKEN])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("scim2-server starts");
            let base = format!("http://127.0.0.1:{port}/v2");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let answered = http
                    .get(format!("{base}/Users?count=1"))
                    .bearer_auth(TOKEN)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if answered {
                    return ScimServer {
                        _child: child,
                        base,
                        http,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "scim2-server did not answer within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("scim2-server did not start on any of five ports");
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = tokio::time::timeout(
            CALL_LIMIT,
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(TOKEN)
                .send(),
        )
        .await
        .unwrap()
        .unwrap();
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn user(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/Users/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// How many Users have this password: the server compares it in filters, which is the
    /// only way its API shows a write-only attribute took.
    async fn users_with_password(&self, username: &str, password: &str) -> i64 {
        let filter = format!("userName eq \"{username}\" and password eq \"{password}\"");
        let url =
            reqwest::Url::parse_with_params(&format!("{}/Users", self.base), &[("filter", filter)])
                .unwrap();
        let r = self.http.get(url).bearer_auth(TOKEN).send().await.unwrap();
        assert!(r.status().is_success());
        let body: Value = r.json().await.unwrap();
        body["totalResults"].as_i64().unwrap()
    }

    /// Creates a User behind the module's back.
    async fn create_directly(&self, username: &str) -> String {
        self.create_directly_with(username, json!({})).await
    }

    async fn create_directly_with(&self, username: &str, extra: Value) -> String {
        let mut user = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": username});
        user.as_object_mut().unwrap().extend(object(extra));
        let r = self
            .http
            .post(format!("{}/Users", self.base))
            .bearer_auth(TOKEN)
            .header("content-type", "application/scim+json")
            .body(user.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        body["id"].as_str().unwrap().to_string()
    }

    async fn delete_directly(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/Users/{id}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }
}

// ------------------------------------------------------------------ requests

fn object(v: Value) -> Settings {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

struct Fixture {
    module: ScimModule,
    server: ScimServer,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture {
            module: ScimModule::with(&crate::local_options()),
            server: ScimServer::start().await,
        }
    }

    fn server_settings(&self, extra: Value) -> Settings {
        let mut settings = object(json!({
            "base_url": self.server.base,
            "token": TOKEN,
            "timeout_seconds": 10,
        }));
        settings.extend(object(extra));
        self.module
            .info()
            .server_schema
            .validate(&settings, Mode::Complete)
            .unwrap_or_else(|e| panic!("server settings rejected: {e:?}"))
    }

    fn request(&self, action: Action, service_id: i64, username: &str) -> ActionRequest {
        self.request_with(action, service_id, username, json!({}))
    }

    fn request_with(
        &self,
        action: Action,
        service_id: i64,
        username: &str,
        server_extra: Value,
    ) -> ActionRequest {
        let product = self
            .module
            .info()
            .product_schema
            .validate(&object(json!({"package": "team"})), Mode::Complete)
            .unwrap();
        ActionRequest {
            action,
            idempotency_key: format!("job-{service_id}"),
            server: ServerContext {
                id: 8,
                name: "saas-1".into(),
                settings: self.server_settings(server_extra),
            },
            product: ProductContext {
                id: 4,
                name: "saas-team".into(),
                settings: product,
            },
            service: Some(ServiceContext {
                id: service_id,
                username: username.into(),
                password: PASSWORD.to_string().into(),
                status: "active".into(),
                settings: Settings::new(),
                outputs: Settings::new(),
            }),
            client: Some(ClientContext {
                id: 9,
                name: "Olga Example".into(),
                email: "olga@example.com".into(),
                custom_fields: Default::default(),
            }),
            params: Settings::new(),
        }
    }

    /// A request for a service whose create stored `id`.
    fn request_for(
        &self,
        action: Action,
        service_id: i64,
        username: &str,
        id: &str,
    ) -> ActionRequest {
        let mut req = self.request(action, service_id, username);
        req.service
            .as_mut()
            .unwrap()
            .outputs
            .insert("scim_id".into(), json!(id));
        req
    }

    async fn call(&self, req: &ActionRequest) -> Result<ActionReply, ModuleError> {
        tokio::time::timeout(CALL_LIMIT, self.module.call(req))
            .await
            .expect("the call finished in time")
    }

    async fn ok(&self, req: &ActionRequest) -> ActionReply {
        self.call(req)
            .await
            .unwrap_or_else(|e| panic!("{} failed: {e}", req.action))
    }

    /// Creates the service's User and returns its id.
    async fn create(&self, service_id: i64, username: &str) -> String {
        let reply = self
            .ok(&self.request(Action::Create, service_id, username))
            .await;
        reply.outputs["scim_id"].as_str().unwrap().to_string()
    }

    async fn lookup(&self, service_id: i64, username: &str) -> Option<RemoteAccount> {
        self.ok(&self.request(Action::Lookup, service_id, username))
            .await
            .account
    }

    async fn all_accounts(&self, limit: i64) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut req = self.request(Action::ListAccounts, 0, "x");
            req.service = None;
            req.params.insert("limit".into(), json!(limit));
            if let Some(c) = &cursor {
                req.params.insert("cursor".into(), json!(c));
            }
            let page = self.ok(&req).await;
            assert!(page.accounts.len() as i64 <= limit);
            names.extend(page.accounts.into_iter().map(|a| a.username));
            match page.next {
                Some(n) => cursor = Some(n),
                None => {
                    names.sort();
                    return names;
                }
            }
        }
        panic!("list_accounts never ended");
    }
}

fn assert_kind(result: Result<ActionReply, ModuleError>, kind: ErrorKind) -> String {
    match result {
        Ok(reply) => panic!("expected a {kind:?} error, got {reply:?}"),
        Err(e) => {
            assert_eq!(e.kind, kind, "wrong kind for: {e}");
            e.message
        }
    }
}

fn assert_no_secrets(text: &str) {
    for secret in [TOKEN, PASSWORD, NEW_PASSWORD, WRONG_TOKEN] {
        assert!(!text.contains(secret), "a secret leaked into: {text}");
    }
}

// ------------------------------------------------------------------ lifecycle

#[test]
fn the_registry_offers_the_module_with_checked_settings() {
    let registry = provisio_modules::Registry::builtin();
    let info = registry.info("scim").expect("scim is built in");
    let settings = info
        .server_schema
        .validate(
            &object(json!({"base_url": "https://app.example.com/scim/v2", "token": "t"})),
            Mode::Complete,
        )
        .unwrap();
    assert_eq!(settings["timeout_seconds"], 30);
    assert_eq!(settings["package_attribute"], "userType");
    let errors = info
        .server_schema
        .validate(&object(json!({"base_url": "ftp://x"})), Mode::Complete)
        .unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["base_url", "token"]);
    assert!(info.server_schema.secret_fields().eq(["token"]));
}

#[tokio::test]
async fn each_lifecycle_step_shows_on_the_scim_server() {
    let f = Fixture::new().await;
    let s = &f.server;

    let id = f.create(11, "olga").await;
    let user = s.user(&id).await;
    assert_eq!(user["userName"], "olga");
    assert_eq!(user["active"], true);
    assert_eq!(user["userType"], "team");
    assert_eq!(user["externalId"], "provisio:8:11");
    assert_eq!(user["displayName"], "Olga Example");
    assert_eq!(user["emails"][0]["value"], "olga@example.com");
    assert!(
        user.get("password").is_none(),
        "passwords are never returned"
    );
    assert_eq!(s.users_with_password("olga", PASSWORD).await, 1);
    assert_eq!(s.users_with_password("olga", "something-else").await, 0);
    assert_eq!(
        f.lookup(11, "olga").await,
        Some(RemoteAccount {
            username: "olga".into(),
            status: Some("active".into()),
            package: Some("team".into()),
        })
    );

    // The server answers these PATCHes with 204 and no body.
    f.ok(&f.request_for(Action::Suspend, 11, "olga", &id)).await;
    assert_eq!(s.user(&id).await["active"], false);
    assert_eq!(
        f.lookup(11, "olga").await.unwrap().status.as_deref(),
        Some("suspended")
    );
    f.ok(&f.request_for(Action::Unsuspend, 11, "olga", &id))
        .await;
    assert_eq!(s.user(&id).await["active"], true);

    let mut req = f.request_for(Action::ChangePassword, 11, "olga", &id);
    req.params
        .insert("new_password".into(), json!(NEW_PASSWORD));
    f.ok(&req).await;
    assert_eq!(s.users_with_password("olga", NEW_PASSWORD).await, 1);
    assert_eq!(s.users_with_password("olga", PASSWORD).await, 0);

    // This PATCH asks for the attribute back, so the server answers 200 with a body.
    let mut req = f.request_for(Action::ChangePackage, 11, "olga", &id);
    req.params
        .insert("new_product".into(), json!({"package": "enterprise"}));
    req.params
        .insert("new_product_name".into(), json!("saas-enterprise"));
    f.ok(&req).await;
    assert_eq!(s.user(&id).await["userType"], "enterprise");
    // Without a package setting, the product's name is the package.
    req.params.insert("new_product".into(), json!({}));
    f.ok(&req).await;
    assert_eq!(s.user(&id).await["userType"], "saas-enterprise");
    assert_eq!(
        f.lookup(11, "olga").await.unwrap().package.as_deref(),
        Some("saas-enterprise")
    );

    f.ok(&f.request_for(Action::Terminate, 11, "olga", &id))
        .await;
    assert_eq!(s.get(&format!("/Users/{id}")).await.0, 404);
    assert_eq!(f.lookup(11, "olga").await, None);
    // Already gone (404) counts as done, with or without the stored id.
    f.ok(&f.request_for(Action::Terminate, 11, "olga", &id))
        .await;
    f.ok(&f.request(Action::Terminate, 11, "olga")).await;
}

#[tokio::test]
async fn actions_find_the_user_by_name_when_no_id_was_stored() {
    let f = Fixture::new().await;
    let id = f.create(12, "pia").await;
    // A service without a stored scim_id (settled by a lookup before lookups answered it).
    f.ok(&f.request(Action::Suspend, 12, "pia")).await;
    assert_eq!(f.server.user(&id).await["active"], false);
    f.ok(&f.request(Action::Terminate, 12, "pia")).await;
    assert_eq!(f.server.get(&format!("/Users/{id}")).await.0, 404);
}

#[tokio::test]
async fn lookup_answers_the_outputs_of_create() {
    let f = Fixture::new().await;
    let absent = f.ok(&f.request(Action::Lookup, 13, "ron")).await;
    assert_eq!(absent.account, None);
    assert!(absent.outputs.is_empty(), "{:?}", absent.outputs);

    let created = f.ok(&f.request(Action::Create, 13, "ron")).await;
    assert!(
        created.outputs["scim_id"].is_string(),
        "{:?}",
        created.outputs
    );
    let found = f.ok(&f.request(Action::Lookup, 13, "ron")).await;
    assert!(found.account.is_some());
    assert_eq!(found.outputs, created.outputs);

    // Another service's lookup finds no account of its own, so no outputs either.
    let other = f.ok(&f.request(Action::Lookup, 14, "ron")).await;
    assert_eq!(other.account, None);
    assert!(other.outputs.is_empty(), "{:?}", other.outputs);
}

#[tokio::test]
async fn a_repeated_create_is_ours_but_a_taken_name_is_a_conflict() {
    let f = Fixture::new().await;
    let id = f.create(21, "quinn").await;
    // The retry of the same job meets 409 and recognises its own User.
    assert_eq!(f.create(21, "quinn").await, id);
    let (_, all) = f.server.get("/Users").await;
    assert_eq!(all["totalResults"], 1);

    // Another service, same name: not ours.
    let e = assert_kind(
        f.call(&f.request(Action::Create, 22, "quinn")).await,
        ErrorKind::Permanent,
    );
    assert!(e.contains("already taken"), "{e}");
    // Its lookup reports the User; the other service's lookup does not (not its account).
    assert!(f.lookup(21, "quinn").await.is_some());
    let other = f.ok(&f.request(Action::Lookup, 22, "quinn")).await;
    assert_eq!(other.account, None);
    // A User owned by another provisioning client is not reported either; one made in the
    // application without externalId cannot be told apart and is.
    f.server
        .create_directly_with("sven", json!({"externalId": "other-idp-77"}))
        .await;
    assert_eq!(f.lookup(24, "sven").await, None);
    // A User made by someone else.
    f.server.create_directly("rita").await;
    assert!(f.lookup(23, "rita").await.is_some());
    let e = assert_kind(
        f.call(&f.request(Action::Create, 23, "rita")).await,
        ErrorKind::Permanent,
    );
    assert!(e.contains("already taken"), "{e}");
    assert_no_secrets(&e);
}

#[tokio::test]
async fn list_accounts_pages_and_sees_changes_made_on_the_remote() {
    let f = Fixture::new().await;
    let mut ids = Vec::new();
    for (n, name) in ["sam", "tess", "uma", "vic", "wes"].iter().enumerate() {
        ids.push(f.create(31 + n as i64, name).await);
    }
    f.ok(&f.request_for(Action::Suspend, 33, "uma", &ids[2]))
        .await;

    let mut req = f.request(Action::ListAccounts, 0, "x");
    req.service = None;
    req.params.insert("limit".into(), json!(2));
    let first = f.ok(&req).await;
    assert_eq!(first.accounts.len(), 2);
    assert_eq!(first.next.as_deref(), Some("3"));
    req.params.insert("cursor".into(), json!("5"));
    let last = f.ok(&req).await;
    assert_eq!(last.accounts.len(), 1);
    assert_eq!(last.next, None);

    assert_eq!(
        f.all_accounts(2).await,
        ["sam", "tess", "uma", "vic", "wes"]
    );
    let mut req = f.request(Action::ListAccounts, 0, "x");
    req.service = None;
    let everything = f.ok(&req).await;
    let uma = everything
        .accounts
        .iter()
        .find(|a| a.username == "uma")
        .unwrap();
    assert_eq!(uma.status.as_deref(), Some("suspended"));
    assert_eq!(uma.package.as_deref(), Some("team"));

    // What the audit relies on: a User made on the remote appears, one deleted there
    // disappears.
    f.server.create_directly("xena").await;
    f.server.delete_directly(&ids[1]).await;
    assert_eq!(
        f.all_accounts(2).await,
        ["sam", "uma", "vic", "wes", "xena"]
    );
    assert_eq!(
        f.all_accounts(3).await,
        ["sam", "uma", "vic", "wes", "xena"]
    );
}

// ------------------------------------------------------------------ failures

#[tokio::test]
async fn failures_are_classified_and_never_show_a_secret() {
    let f = Fixture::new().await;

    let mut req = f.request(Action::TestConnection, 0, "x");
    req.service = None;
    f.ok(&req).await;

    // A wrong token: permanent for every action, the token never in the message.
    let wrong = json!({"token": WRONG_TOKEN});
    for action in [
        Action::TestConnection,
        Action::Create,
        Action::Lookup,
        Action::ListAccounts,
        Action::Suspend,
    ] {
        let req = f.request_with(action.clone(), 41, "yara", wrong.clone());
        let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
        assert!(e.contains("401"), "{action}: {e}");
        assert_no_secrets(&e);
    }
    assert_eq!(f.server.get("/Users").await.1["totalResults"], 0);

    // Acting on a User that does not exist: permanent (terminate: done).
    for action in [Action::Suspend, Action::Unsuspend, Action::ChangePassword] {
        let mut req = f.request(action.clone(), 42, "nobody");
        req.params
            .insert("new_password".into(), json!(NEW_PASSWORD));
        let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
        assert!(e.contains("no SCIM User"), "{action}: {e}");
        assert_no_secrets(&e);
        // A stale id (the User was deleted on the remote) says the same.
        let mut req = f.request_for(action.clone(), 42, "nobody", "0123456789abcdef");
        req.params
            .insert("new_password".into(), json!(NEW_PASSWORD));
        let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
        assert!(e.contains("no SCIM User"), "{action}: {e}");
    }

    // An empty userName is refused before anything is sent (the server would take it).
    let e = assert_kind(
        f.call(&f.request(Action::Create, 43, "")).await,
        ErrorKind::Permanent,
    );
    assert!(e.contains("empty"), "{e}");
    assert_eq!(f.server.get("/Users").await.1["totalResults"], 0);

    // A base URL that is no SCIM endpoint: the 404 is permanent, naming the status.
    let req = f.request_with(
        Action::Create,
        43,
        "yara",
        json!({"base_url": format!("{}/nowhere/v9", f.server.base)}),
    );
    let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
    assert!(e.contains("HTTP 404"), "{e}");
    assert_no_secrets(&e);

    // `title` can carry the package too (checked through the 200 answer of the PATCH).
    let id = f.create(44, "zoe").await;
    let mut req = f.request_for(Action::ChangePackage, 44, "zoe", &id);
    req.server
        .settings
        .insert("package_attribute".into(), json!("title"));
    req.params
        .insert("new_product".into(), json!({"package": "gold"}));
    f.ok(&req).await;
    assert_eq!(f.server.user(&id).await["title"], "gold");

    // Nobody listening: transient, nothing was sent.
    let closed = free_port();
    let req = f.request_with(
        Action::Create,
        45,
        "zed",
        json!({"base_url": format!("http://127.0.0.1:{closed}/v2")}),
    );
    let e = assert_kind(f.call(&req).await, ErrorKind::Transient);
    assert!(e.contains("nothing was sent"), "{e}");
    assert_no_secrets(&e);
}

/// A peer that reads each request and then hangs up (or, with `silent`, says nothing).
async fn mute_peer(silent: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                if silent {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                drop(socket);
            });
        }
    });
    format!("http://{addr}/v2")
}

#[tokio::test]
async fn a_request_that_got_no_answer_is_unknown_for_changes_and_transient_for_reads() {
    let f = Fixture::new().await;
    for silent in [false, true] {
        let base = mute_peer(silent).await;
        let server = json!({"base_url": base, "timeout_seconds": 1});
        for action in [Action::Create, Action::Suspend, Action::Terminate] {
            let req = f.request_with(action.clone(), 51, "abel", server.clone());
            let mut req = req;
            req.service
                .as_mut()
                .unwrap()
                .outputs
                .insert("scim_id".into(), json!("abc"));
            let e = assert_kind(f.call(&req).await, ErrorKind::Unknown);
            assert!(e.contains("may have been applied"), "{action}: {e}");
            assert_no_secrets(&e);
        }
        for action in [Action::Lookup, Action::ListAccounts] {
            let req = f.request_with(action.clone(), 51, "abel", server.clone());
            assert_kind(f.call(&req).await, ErrorKind::Transient);
        }
    }
}

// ------------------------------------------------------------------ the outbound guard

fn scim_with(allow: &[&str]) -> ScimModule {
    ScimModule::with(&provisio_modules::ModuleOptions {
        outbound: provisio_modules::outbound::OutboundPolicy::parse(
            &allow.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        )
        .unwrap(),
        ..Default::default()
    })
}

/// By default a service provider on loopback (by address or by a name resolving to it),
/// at the metadata address or at a private address is refused with a permanent error that
/// names the address and the setting; once allowed, the real server is reached.
#[tokio::test]
async fn the_outbound_guard_refuses_special_addresses_until_allowed() {
    let f = Fixture::new().await;
    let by_name = f.server.base.replace("127.0.0.1", "localhost");
    let refused = ScimModule::new();
    for (base, ip, allow) in [
        (f.server.base.clone(), "127.0.0.1", "127.0.0.1/32"),
        (by_name.clone(), "127.0.0.1 (localhost)", "127.0.0.1/32"),
        ("http://[::1]:9/v2".into(), "::1", "::1/128"),
        (
            "http://169.254.169.254/scim".into(),
            "169.254.169.254",
            "169.254.169.254/32",
        ),
        ("http://10.0.0.1/scim".into(), "10.0.0.1", "10.0.0.1/32"),
    ] {
        let req = f.request_with(Action::Create, 900, "guarded", json!({"base_url": base}));
        let e = refused.call(&req).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{base}: {e}");
        assert!(
            e.message.contains(&format!("refused to connect to {ip}: ")),
            "{base}: {e}"
        );
        assert!(
            e.message
                .ends_with(&format!("allow it with [outbound] allow = [\"{allow}\"]")),
            "{base}: {e}"
        );
    }
    assert_eq!(
        f.server.users_with_password("guarded", PASSWORD).await,
        0,
        "nothing reached the server"
    );

    let allowed = scim_with(&["127.0.0.1/32"]);
    for base in [f.server.base.clone(), by_name] {
        let req = f.request_with(
            Action::TestConnection,
            901,
            "guarded",
            json!({"base_url": base}),
        );
        allowed
            .call(&req)
            .await
            .unwrap_or_else(|e| panic!("{base}: {e}"));
    }
}
