//! Tests of the `http` module against real local HTTP peers: an in-process axum server that
//! records every request and answers as each test says, and raw TCP sockets for a peer
//! that hangs up without answering.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use provisio_core::module::{
    Action, ActionReply, ActionRequest, ClientContext, ErrorKind, Metric, Module, ModuleError,
    ProductContext, RemoteAccount, SchemaScope, ServerContext, ServiceContext,
};
use provisio_core::settings::{Mode, Settings};
use provisio_modules::http::HttpModule;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PASSWORD: &str = "svc-Pa55word-9f3b";
const NEW_PASSWORD: &str = "new-Pa55word-c4a2";
const BASIC_PASSWORD: &str = "api-Basic-77d1e0";
const TOKEN: &str = "tok-Bearer-5a9c31";
const API_KEY: &str = "key-Header-e0b7f2";

// ------------------------------------------------------------------ a recording remote

/// One request as the remote received it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

/// What the remote answers.
struct Answer {
    status: u16,
    body: String,
    delay: Duration,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
        delay: Duration::ZERO,
    }
}

type Responder = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

#[derive(Clone)]
struct RemoteState {
    seen: Arc<Mutex<Vec<Seen>>>,
    respond: Responder,
}

struct Remote {
    /// The base URL, with a path prefix to check that relative URLs keep it.
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Remote {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn only(&self) -> Seen {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one request: {all:?}");
        all.into_iter().next().unwrap()
    }
}

async fn record(
    State(state): State<RemoteState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method,
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body,
    };
    state.seen.lock().unwrap().push(seen.clone());
    let answer = (state.respond)(&seen);
    // The request has been read completely by now: a delay models a slow remote that
    // received it.
    tokio::time::sleep(answer.delay).await;
    let status = StatusCode::from_u16(answer.status).unwrap();
    (status, [("content-type", "application/json")], answer.body).into_response()
}

async fn remote(respond: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Remote {
    remote_at("127.0.0.1:0", respond).await
}

async fn remote_at(
    bind: &str,
    respond: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
) -> Remote {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = RemoteState {
        seen: seen.clone(),
        respond: Arc::new(respond),
    };
    let app = axum::Router::new().fallback(record).with_state(state);
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Remote {
        base: format!("http://{addr}/v1"),
        seen,
    }
}

// ------------------------------------------------------------------ requests

fn object(v: Value) -> Settings {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

/// Server settings as the engine would pass them: validated by the schema (defaults
/// filled in) and by `check_settings`.
fn server_settings(module: &HttpModule, settings: Value) -> Settings {
    let schema = &module.info().server_schema;
    let settings = schema
        .validate(&object(settings), Mode::Complete)
        .unwrap_or_else(|e| panic!("server settings rejected: {e:?}"));
    let extra = module.check_settings(SchemaScope::Server, &settings);
    assert!(extra.is_empty(), "check_settings: {extra:?}");
    settings
}

fn request(module: &HttpModule, action: Action, server: Value) -> ActionRequest {
    ActionRequest {
        action,
        idempotency_key: "job-42-create-1".into(),
        server: ServerContext {
            id: 7,
            name: "users-api".into(),
            settings: server_settings(module, server),
        },
        product: ProductContext {
            id: 3,
            name: "starter".into(),
            settings: object(json!({"quota": 100, "plan": "starter", "features": ["mail"]})),
        },
        service: Some(ServiceContext {
            id: 42,
            username: "alice".into(),
            password: PASSWORD.to_string().into(),
            status: "pending".into(),
            settings: Settings::new(),
            outputs: object(json!({"remote_id": "u-981"})),
        }),
        client: Some(ClientContext {
            id: 9,
            name: "Alice Example".into(),
            email: "alice@example.com".into(),
            custom_fields: BTreeMap::new(),
        }),
        params: Settings::new(),
    }
}

/// Basic-auth server settings with the given actions.
fn basic(base: &str, actions: Value) -> Value {
    json!({
        "base_url": base,
        "auth": "basic",
        "username": "provisio",
        "password": BASIC_PASSWORD,
        "timeout_seconds": 5,
        "actions": actions,
    })
}

async fn call(module: &HttpModule, req: &ActionRequest) -> Result<ActionReply, ModuleError> {
    module.call(req).await
}

async fn fails(module: &HttpModule, req: &ActionRequest) -> ModuleError {
    match module.call(req).await {
        Ok(reply) => panic!("expected an error, got {reply:?}"),
        Err(e) => e,
    }
}

// ------------------------------------------------------------------ create and auth

#[tokio::test]
async fn create_renders_templates_sends_auth_and_idempotency_key_and_maps_outputs() {
    let remote = remote(|_| answer(201, json!({"id": 981, "links": {"self": "/users/981"}}))).await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"create": {
        "method": "POST",
        "url": "/accounts/{{ service.username }}",
        "headers": {"X-Plan": "{{ product.name }}", "X-Request-Id": "{{ idempotency_key }}"},
        "query": {"source": "provisio", "notify": "{{ params.notify | default('') }}"},
        "body": {
            "userName": "{{ service.username }}",
            "password": "{{ service.password }}",
            "quota": "{{ product.settings.quota }}",
            "features": "{{ product.settings.features }}",
            "note": "plan {{ product.name }}, quota {{ product.settings.quota }}",
            "emails": [{"value": "{{ client.email }}", "primary": true}],
            "fixed": 7
        },
        "success": {"status": [201]},
        "outputs": {"remote_id": "/id", "links": "/links"}
    }});
    let req = request(&module, Action::Create, basic(&remote.base, actions));
    let reply = call(&module, &req).await.unwrap();

    assert_eq!(
        Value::Object(reply.outputs),
        json!({"remote_id": 981, "links": {"self": "/users/981"}})
    );
    let seen = remote.only();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/v1/accounts/alice");
    assert_eq!(
        seen.query.as_deref(),
        Some("source=provisio"),
        "empty values are left out"
    );
    assert_eq!(seen.header("idempotency-key"), Some("job-42-create-1"));
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("provisio:{BASIC_PASSWORD}"));
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Basic {credentials}").as_str())
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(seen.header("x-plan"), Some("starter"));
    assert_eq!(seen.header("x-request-id"), Some("job-42-create-1"));
    assert_eq!(
        seen.json(),
        json!({
            "userName": "alice",
            "password": PASSWORD,
            "quota": 100,
            "features": ["mail"],
            "note": "plan starter, quota 100",
            "emails": [{"value": "alice@example.com", "primary": true}],
            "fixed": 7
        })
    );
}

#[tokio::test]
async fn bearer_and_header_auth_and_no_content_type_without_body() {
    let remote = remote(|_| answer(204, Value::Null)).await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"terminate": {
        "method": "DELETE",
        "url": "/users/{{ service.outputs.remote_id }}"
    }});

    let bearer =
        json!({"base_url": remote.base, "auth": "bearer", "token": TOKEN, "actions": actions});
    let reply = call(&module, &request(&module, Action::Terminate, bearer))
        .await
        .unwrap();
    assert_eq!(reply, ActionReply::default());

    let header = json!({
        "base_url": format!("{}/", remote.base),
        "auth": "header",
        "header_name": "X-Api-Key",
        "header_value": API_KEY,
        "actions": actions
    });
    call(&module, &request(&module, Action::Terminate, header))
        .await
        .unwrap();

    let seen = remote.requests();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.method, Method::DELETE);
        assert_eq!(s.path, "/v1/users/u-981");
        assert_eq!(s.header("content-type"), None);
        assert!(s.body.is_empty());
        assert_eq!(s.header("idempotency-key"), Some("job-42-create-1"));
    }
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(seen[1].header("authorization"), None);
    assert_eq!(seen[1].header("x-api-key"), Some(API_KEY));
}

#[tokio::test]
async fn an_absolute_url_ignores_the_base_url() {
    let remote = remote(|_| answer(200, json!({}))).await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"renew": {"method": "post", "url": format!("{}/renewals", remote.base)}});
    let settings = json!({"base_url": "http://unused.invalid/api", "actions": actions});
    call(&module, &request(&module, Action::Renew, settings))
        .await
        .unwrap();
    let seen = remote.only();
    assert_eq!(
        (seen.method, seen.path.as_str()),
        (Method::POST, "/v1/renewals")
    );
}

#[tokio::test]
async fn an_unconfigured_action_is_permanent() {
    let module = HttpModule::with(&crate::local_options());
    let settings = json!({"base_url": "http://127.0.0.1:9/", "actions": {}});
    let e = fails(&module, &request(&module, Action::Suspend, settings)).await;
    assert_eq!(
        e,
        ModuleError::permanent("action suspend is not configured for this server")
    );
}

#[tokio::test]
async fn a_custom_action_runs_its_spec() {
    let remote = remote(|_| answer(200, json!({"result": {"count": 3}}))).await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"reset_quota": {
        "method": "POST",
        "url": "/users/{{ service.username }}/quota/reset",
        "body": {"by": "{{ params.by }}"},
        "outputs": {"resets": "/result/count"}
    }});
    let mut req = request(
        &module,
        Action::Custom("reset_quota".into()),
        basic(&remote.base, actions),
    );
    req.params.insert("by".into(), json!("admin"));
    let reply = call(&module, &req).await.unwrap();
    assert_eq!(reply.outputs["resets"], json!(3));
    assert_eq!(remote.only().json(), json!({"by": "admin"}));
}

// ------------------------------------------------------------------ lookup, list, usage, sso

fn lookup_actions() -> Value {
    json!({"lookup": {
        "method": "GET",
        "url": "/users",
        "query": {"userName": "{{ service.username }}"},
        "account": {
            "pointer": "/Resources/0",
            "username": "/userName",
            "status": "/active",
            "statuses": {"true": "active", "false": "suspended"},
            "package": "/plan/name"
        }
    }})
}

#[tokio::test]
async fn lookup_maps_the_account_and_reads_an_empty_search_or_404_as_none() {
    let remote = remote(|seen| match seen.query.as_deref() {
        Some("userName=alice") => answer(
            200,
            json!({"Resources": [{"userName": "alice", "active": false, "plan": {"name": "pro"}}]}),
        ),
        Some("userName=nobody") => answer(200, json!({"Resources": []})),
        _ => answer(404, json!({"detail": "no such user"})),
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let mut req = request(
        &module,
        Action::Lookup,
        basic(&remote.base, lookup_actions()),
    );

    let reply = call(&module, &req).await.unwrap();
    assert_eq!(
        reply.account,
        Some(RemoteAccount {
            username: "alice".into(),
            status: Some("suspended".into()),
            package: Some("pro".into()),
        })
    );

    req.service.as_mut().unwrap().username = "nobody".into();
    assert_eq!(call(&module, &req).await.unwrap().account, None);

    req.service.as_mut().unwrap().username = "gone".into();
    assert_eq!(call(&module, &req).await.unwrap(), ActionReply::default());
}

#[tokio::test]
async fn lookup_outputs_can_answer_what_create_answered() {
    let remote = remote(|seen| match (seen.method.as_str(), seen.query.as_deref()) {
        ("POST", _) => answer(201, json!({"id": 981, "userName": "alice"})),
        (_, Some("userName=alice")) => answer(
            200,
            json!({"Resources": [{"id": 981, "userName": "alice", "active": true}]}),
        ),
        _ => answer(200, json!({"Resources": []})),
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let mut actions = lookup_actions();
    actions["lookup"]["outputs"] = json!({"remote_id": "/Resources/0/id"});
    actions["create"] = create_users()["create"].clone();
    actions["create"]["outputs"] = json!({"remote_id": "/id"});
    let settings = basic(&remote.base, actions);

    let created = call(&module, &request(&module, Action::Create, settings.clone()))
        .await
        .unwrap();
    assert_eq!(
        Value::Object(created.outputs.clone()),
        json!({"remote_id": 981})
    );
    let mut req = request(&module, Action::Lookup, settings);
    let found = call(&module, &req).await.unwrap();
    assert!(found.account.is_some());
    assert_eq!(found.outputs, created.outputs);

    // No account, so nothing to read outputs from: not an error.
    req.service.as_mut().unwrap().username = "nobody".into();
    assert_eq!(call(&module, &req).await.unwrap(), ActionReply::default());
}

#[tokio::test]
async fn lookup_of_a_single_resource_404_is_no_account_and_200_is_mapped() {
    let remote = remote(|seen| match seen.path.as_str() {
        "/v1/users/alice" => answer(200, json!({"name": "alice", "state": "ACTIVE"})),
        _ => answer(404, Value::Null),
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"lookup": {
        "method": "GET",
        "url": "/users/{{ service.username }}",
        "account": {"username": "/name", "status": "/state", "statuses": {"ACTIVE": "active"}}
    }});
    let mut req = request(&module, Action::Lookup, basic(&remote.base, actions));
    let account = call(&module, &req).await.unwrap().account.unwrap();
    assert_eq!(account.username, "alice");
    assert_eq!(account.status.as_deref(), Some("active"));
    assert_eq!(account.package, None);

    req.service.as_mut().unwrap().username = "bob".into();
    assert_eq!(call(&module, &req).await.unwrap().account, None);
}

#[tokio::test]
async fn list_accounts_pages_with_a_cursor() {
    let remote = remote(|seen| match seen.query.as_deref() {
        Some("limit=2") => answer(
            200,
            json!({"items": [{"login": "a", "enabled": true}, {"login": "b", "enabled": false}], "next": "p2"}),
        ),
        Some("limit=2&cursor=p2") => answer(
            200,
            json!({"items": [{"login": "c", "enabled": true}], "next": null}),
        ),
        other => answer(400, json!({"unexpected": other})),
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"list_accounts": {
        "method": "GET",
        "url": "/accounts",
        "query": {"limit": "2", "cursor": "{{ params.cursor | default('') }}"},
        "accounts": {
            "pointer": "/items",
            "username": "/login",
            "status": "/enabled",
            "statuses": {"true": "active", "false": "suspended"},
            "next": "/next"
        }
    }});
    let mut req = request(&module, Action::ListAccounts, basic(&remote.base, actions));
    req.service = None;
    req.client = None;

    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let reply = call(&module, &req).await.unwrap();
        pages += 1;
        seen.extend(
            reply
                .accounts
                .into_iter()
                .map(|a| (a.username, a.status.unwrap())),
        );
        match reply.next {
            Some(cursor) => req.params.insert("cursor".into(), json!(cursor)),
            None => break,
        };
    }
    assert_eq!(pages, 2);
    assert_eq!(
        seen,
        [("a", "active"), ("b", "suspended"), ("c", "active")]
            .map(|(u, s)| (u.to_string(), s.to_string()))
    );
}

#[tokio::test]
async fn list_accounts_pages_by_offset_with_a_next_template() {
    // SCIM-style: 1-based startIndex, the next start computed from the response.
    let users: Vec<Value> = (1..=5)
        .map(|i| json!({"userName": format!("u{i}")}))
        .collect();
    let remote = remote(move |seen| {
        let query = seen.query.clone().unwrap_or_default();
        let start: usize = query
            .split('&')
            .find_map(|p| p.strip_prefix("startIndex="))
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let page: Vec<Value> = users.iter().skip(start - 1).take(2).cloned().collect();
        answer(
            200,
            json!({
                "totalResults": users.len(), "startIndex": start,
                "itemsPerPage": page.len(), "Resources": page
            }),
        )
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"list_accounts": {
        "method": "GET",
        "url": "/Users",
        "query": {"count": "2", "startIndex": "{{ params.cursor | default(1) }}"},
        "accounts": {
            "pointer": "/Resources",
            "username": "/userName",
            "next_template": "{% set n = response.startIndex + response.itemsPerPage %}{% if n <= response.totalResults %}{{ n }}{% endif %}"
        }
    }});
    let mut req = request(&module, Action::ListAccounts, basic(&remote.base, actions));
    let mut names = Vec::new();
    loop {
        let reply = call(&module, &req).await.unwrap();
        names.extend(reply.accounts.into_iter().map(|a| a.username));
        match reply.next {
            Some(cursor) => req.params.insert("cursor".into(), json!(cursor)),
            None => break,
        };
    }
    assert_eq!(names, ["u1", "u2", "u3", "u4", "u5"]);
    assert_eq!(remote.requests().len(), 3);
}

#[tokio::test]
async fn list_accounts_without_the_list_is_an_error_never_an_empty_page() {
    let remote = remote(|_| answer(200, json!({"message": "maintenance"}))).await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"list_accounts": {
        "method": "GET", "url": "/accounts",
        "accounts": {"pointer": "/items", "username": "/login"}
    }});
    let e = fails(
        &module,
        &request(&module, Action::ListAccounts, basic(&remote.base, actions)),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(e.message.contains("/items is not an array"), "{e}");
}

#[tokio::test]
async fn usage_and_login_url_are_mapped() {
    let remote = remote(|seen| match seen.path.as_str() {
        "/v1/usage" => answer(
            200,
            json!({"accounts": [
                {"user": "alice", "disk_mb": 120.5, "disk_quota": 1024, "mails": "17"},
                {"user": "bob", "disk_mb": 3, "disk_quota": null}
            ]}),
        ),
        _ => answer(
            201,
            json!({"session": {"url": "https://panel.example/sso/abc"}}),
        ),
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({
        "usage": {
            "method": "GET", "url": "/usage",
            "usage": {
                "pointer": "/accounts",
                "username": "/user",
                "metrics": {
                    "disk": {"used": "/disk_mb", "limit": "/disk_quota", "unit": "MB"},
                    "mails": "/mails"
                }
            }
        },
        "login_url": {
            "method": "POST", "url": "/sessions",
            "body": {"user": "{{ service.username }}"},
            "login_url": "/session/url"
        }
    });
    let settings = basic(&remote.base, actions);
    let reply = call(&module, &request(&module, Action::Usage, settings.clone()))
        .await
        .unwrap();
    assert_eq!(reply.usage.len(), 2);
    assert_eq!(reply.usage[0].username, "alice");
    assert_eq!(
        reply.usage[0].metrics["disk"],
        Metric {
            used: 120.5,
            limit: Some(1024.0),
            unit: Some("MB".into())
        }
    );
    assert_eq!(reply.usage[0].metrics["mails"].used, 17.0);
    assert_eq!(reply.usage[1].metrics["disk"].limit, None);
    assert!(
        !reply.usage[1].metrics.contains_key("mails"),
        "absent metrics are left out"
    );

    let reply = call(&module, &request(&module, Action::LoginUrl, settings))
        .await
        .unwrap();
    assert_eq!(reply.url.as_deref(), Some("https://panel.example/sso/abc"));
}

// ------------------------------------------------------------------ classification

fn create_users() -> Value {
    json!({"create": {
        "method": "POST",
        "url": "/users",
        "body": {"userName": "{{ service.username }}"}
    }})
}

#[tokio::test]
async fn statuses_are_classified_by_default() {
    let status = Arc::new(Mutex::new(503));
    let current = status.clone();
    let remote = remote(move |_| {
        let code = *current.lock().unwrap();
        answer(code, json!({"error": format!("status {code}")}))
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let req = request(&module, Action::Create, basic(&remote.base, create_users()));

    let e = fails(&module, &req).await;
    assert_eq!(
        e,
        ModuleError::transient(r#"create: HTTP 503 from POST /v1/users: {"error":"status 503"}"#)
    );
    for (code, kind) in [
        (429, ErrorKind::Transient),
        (500, ErrorKind::Transient),
        (422, ErrorKind::Permanent),
        (401, ErrorKind::Permanent),
        (302, ErrorKind::Permanent),
    ] {
        *status.lock().unwrap() = code;
        let e = fails(&module, &req).await;
        assert_eq!(e.kind, kind, "{code}: {e}");
        let head = format!("create: HTTP {code} from POST /v1/users: ");
        assert!(e.message.starts_with(&head), "{e}");
    }
    *status.lock().unwrap() = 202;
    assert_eq!(
        call(&module, &req).await,
        Ok(ActionReply::default()),
        "any 2xx succeeds"
    );
}

#[tokio::test]
async fn configured_classes_override_the_defaults() {
    let status = Arc::new(Mutex::new(502));
    let current = status.clone();
    let remote = remote(move |_| answer(*current.lock().unwrap(), Value::Null)).await;
    let module = HttpModule::with(&crate::local_options());
    let mut actions = create_users();
    actions["create"]["errors"] =
        json!({"unknown": [502, 504], "transient": [409], "permanent": [503]});
    actions["create"]["success"] = json!({"status": [201]});
    let req = request(&module, Action::Create, basic(&remote.base, actions));
    for (code, kind) in [
        (502, ErrorKind::Unknown),
        (409, ErrorKind::Transient),
        (503, ErrorKind::Permanent),
        (500, ErrorKind::Transient),
        (200, ErrorKind::Permanent),
    ] {
        *status.lock().unwrap() = code;
        let e = fails(&module, &req).await;
        assert_eq!(e.kind, kind, "{code}: {e}");
        assert_eq!(
            e.message,
            format!("create: HTTP {code} from POST /v1/users")
        );
    }
}

#[tokio::test]
async fn a_success_status_whose_body_denies_success_is_permanent() {
    let remote = remote(|_| answer(200, json!({"ok": false, "error": "quota exhausted"}))).await;
    let module = HttpModule::with(&crate::local_options());
    let mut actions = create_users();
    actions["create"]["success"] = json!({"pointer": "/ok", "equals": true});
    let e = fails(
        &module,
        &request(&module, Action::Create, basic(&remote.base, actions)),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(e.message.starts_with("create: HTTP 200 from POST /v1/users: the response does not confirm success (/ok is not true)"), "{e}");
    assert!(e.message.contains("quota exhausted"), "{e}");
}

#[tokio::test]
async fn an_unusable_success_answer_is_unknown_for_changes_and_transient_for_reads() {
    let remote = remote(|_| answer(200, json!("<html>proxy</html>"))).await;
    // A JSON string where an object with `id` was expected: create did happen remotely.
    let module = HttpModule::with(&crate::local_options());
    let mut actions = create_users();
    actions["create"]["outputs"] = json!({"remote_id": "/id"});
    actions["lookup"] = lookup_actions()["lookup"].clone();
    actions["lookup"]["account"]["pointer"] = json!("/Resources");
    let settings = basic(&remote.base, actions);

    let e = fails(&module, &request(&module, Action::Create, settings.clone())).await;
    assert_eq!(e.kind, ErrorKind::Unknown, "{e}");
    assert!(
        e.message
            .contains("output remote_id: /id is not in the response"),
        "{e}"
    );

    let not_json = self::remote(|_| Answer {
        status: 200,
        body: "<html>".into(),
        delay: Duration::ZERO,
    })
    .await;
    let settings = basic(&not_json.base, settings["actions"].clone());
    let e = fails(&module, &request(&module, Action::Lookup, settings)).await;
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert_eq!(
        e.message,
        "lookup: HTTP 200 from GET /v1/users: the response is not JSON"
    );
}

#[tokio::test]
async fn a_timeout_after_sending_is_unknown() {
    let remote = remote(|_| Answer {
        status: 201,
        body: "{}".into(),
        delay: Duration::from_secs(4),
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let mut settings = basic(&remote.base, create_users());
    settings["timeout_seconds"] = json!(1);
    let started = Instant::now();
    let e = fails(&module, &request(&module, Action::Create, settings)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind, ErrorKind::Unknown, "{e}");
    assert_eq!(
        e.message,
        "create: POST /v1/users: the request was sent but no answer came within 1 s; the outcome is unknown"
    );
    assert_eq!(remote.requests().len(), 1, "the remote did receive it");
}

/// Reads one HTTP request (head and Content-Length body) from a raw socket.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed first");
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if data.len() >= end + 4 + length {
            return data;
        }
    }
}

#[tokio::test]
async fn a_connection_closed_after_the_request_without_an_answer_is_unknown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let request = read_request(&mut socket).await;
        socket.shutdown().await.unwrap();
        drop(socket);
        request
    });
    let module = HttpModule::with(&crate::local_options());
    let settings = basic(&format!("http://{addr}"), create_users());
    let e = fails(&module, &request(&module, Action::Create, settings)).await;
    assert_eq!(e.kind, ErrorKind::Unknown, "{e}");
    let head = "create: POST /users: the request was sent but the connection failed: ";
    assert!(e.message.starts_with(head), "{e}");
    assert!(e.message.ends_with("; the outcome is unknown"), "{e}");
    let request = String::from_utf8(received.await.unwrap()).unwrap();
    assert!(request.starts_with("POST /users HTTP/1.1\r\n"), "{request}");
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let module = HttpModule::with(&crate::local_options());
    let settings = basic(&format!("http://127.0.0.1:{port}/api"), create_users());
    let e = fails(&module, &request(&module, Action::Create, settings)).await;
    assert_eq!(e.kind, ErrorKind::Transient, "{e}");
    assert!(
        e.message
            .starts_with("create: POST /api/users: could not connect, nothing was sent: "),
        "{e}"
    );
}

// ------------------------------------------------------------------ secrets and templates

#[tokio::test]
async fn secrets_echoed_by_the_remote_are_redacted_from_messages() {
    // The remote echoes everything it received, headers included.
    let remote = remote(|seen| {
        let headers: BTreeMap<String, String> = seen
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        answer(400, json!({"received": seen.json(), "headers": headers}))
    })
    .await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"change_password": {
        "method": "PUT",
        "url": "/users/{{ service.username }}/password",
        "headers": {"X-Basic-Echo": "{{ server.settings.password }}"},
        "body": {"old": "{{ service.password }}", "new": "{{ params.new_password }}"}
    }});
    let mut req = request(
        &module,
        Action::ChangePassword,
        basic(&remote.base, actions),
    );
    req.params
        .insert("new_password".into(), json!(NEW_PASSWORD));
    let e = fails(&module, &req).await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message
            .starts_with("change_password: HTTP 400 from PUT /v1/users/alice/password: "),
        "{e}"
    );
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("provisio:{BASIC_PASSWORD}"));
    for secret in [PASSWORD, NEW_PASSWORD, BASIC_PASSWORD, basic.as_str()] {
        assert!(!e.message.contains(secret), "{secret} leaked: {e}");
    }
    assert!(e.message.contains("[redacted]"), "{e}");
    assert!(
        e.message.chars().count()
            <= "change_password: HTTP 400 from PUT /v1/users/alice/password: ".len() + 301
    );
}

#[tokio::test]
async fn a_secret_cut_by_the_excerpt_limit_is_still_redacted() {
    // The password straddles character 300 of the body.
    let remote = remote(|_| answer(500, json!({"pad": "x".repeat(270), "echo": PASSWORD}))).await;
    let module = HttpModule::with(&crate::local_options());
    let e = fails(
        &module,
        &request(&module, Action::Create, basic(&remote.base, create_users())),
    )
    .await;
    assert!(!e.message.contains(&PASSWORD[..6]), "{e}");
}

#[tokio::test]
async fn an_undefined_template_variable_is_permanent_and_names_the_template() {
    let remote = remote(|_| answer(201, json!({}))).await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"create": {
        "method": "POST",
        "url": "/users",
        "body": {"user": {"name": "{{ service.username }}", "pass": "{{ service.password }}", "shell": "{{ service.settings.shell }}"}}
    }});
    let e = fails(
        &module,
        &request(&module, Action::Create, basic(&remote.base, actions)),
    )
    .await;
    assert_eq!(
        e,
        ModuleError::permanent(
            "create: template actions.create.body.user.shell: undefined variable `service.settings.shell`"
        )
    );
    assert!(remote.requests().is_empty(), "nothing is sent");

    // A typed leaf, and a lookup without a service.
    let actions = json!({"lookup": {
        "method": "GET", "url": "/users/{{ service.username }}",
        "account": {"username": "/name"}
    }});
    let mut req = request(&module, Action::Lookup, basic(&remote.base, actions));
    req.service = None;
    let e = fails(&module, &req).await;
    assert_eq!(e.kind, ErrorKind::Permanent);
    assert!(
        e.message
            .starts_with("lookup: template actions.lookup.url: undefined"),
        "{e}"
    );
}

// ------------------------------------------------------------------ URLs and bounds

#[tokio::test]
async fn a_value_in_the_url_path_reaches_the_remote_as_one_segment() {
    let remote = remote(|_| answer(200, json!({}))).await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"suspend": {
        "method": "POST",
        "url": "/users/{{ service.username }}/suspend?by={{ service.username }}&n=1",
        "query": {"reason": "{{ service.username }}"}
    }});
    let mut req = request(
        &module,
        Action::Suspend,
        basic(&remote.base, actions.clone()),
    );
    req.service.as_mut().unwrap().username = "../admin?x=1#y".into();
    call(&module, &req).await.unwrap();
    let seen = remote.only();
    // Raw, as it came over the wire: the value did not climb out of its segment, start a
    // query or cut the URL with a fragment.
    assert_eq!(seen.path, "/v1/users/..%2Fadmin%3Fx%3D1%23y/suspend");
    assert_eq!(
        seen.query.as_deref(),
        Some("by=..%2Fadmin%3Fx%3D1%23y&n=1&reason=..%2Fadmin%3Fx%3D1%23y")
    );

    // What no encoding can keep in place is refused before anything is sent.
    for (username, rule) in [
        ("..", "`..` segment"),
        (".", "`..` segment"),
        ("", "is empty"),
    ] {
        let mut req = request(
            &module,
            Action::Suspend,
            basic(&remote.base, actions.clone()),
        );
        req.service.as_mut().unwrap().username = username.into();
        let e = fails(&module, &req).await;
        assert_eq!(e.kind, ErrorKind::Permanent, "{username:?}: {e}");
        assert!(
            e.message
                .starts_with("suspend: template actions.suspend.url: ")
                && e.message.contains(rule),
            "{username:?}: {e}"
        );
    }
    assert_eq!(remote.requests().len(), 1, "nothing more was sent");
}

const BOMB: &str =
    "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";

#[tokio::test]
async fn a_template_bomb_fails_permanently_within_a_second_and_sends_nothing() {
    let remote = remote(|_| answer(201, json!({}))).await;
    let module = HttpModule::with(&crate::local_options());
    for actions in [
        json!({"create": {"method": "POST", "url": "/users", "body": {"name": BOMB}}}),
        json!({"create": {"method": "POST", "url": format!("/users/{BOMB}")}}),
        json!({"create": {"method": "POST", "url": "/users", "headers": {"X-Bomb": BOMB}}}),
    ] {
        let req = request(&module, Action::Create, basic(&remote.base, actions));
        let started = Instant::now();
        let e = fails(&module, &req).await;
        let took = started.elapsed();
        eprintln!("bomb failed after {took:?}: {e}");
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(
            e.message
                .ends_with("the template ran out of fuel: it does too much work (limit 200000)"),
            "{e}"
        );
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
    assert!(remote.requests().is_empty(), "nothing is sent");
}

/// Heavy templates run on the blocking pool: on a single-threaded runtime, a task beside
/// the render keeps its pace while a render takes hundreds of milliseconds.
#[tokio::test(flavor = "current_thread")]
async fn a_heavy_render_does_not_hold_the_async_runtime() {
    let remote = remote(|_| answer(201, json!({}))).await;
    let module = HttpModule::with(&provisio_modules::ModuleOptions {
        templates: provisio_modules::render::TemplateLimits {
            fuel: 20_000_000,
            max_output_bytes: 64 << 20,
        },
        ..crate::local_options()
    });
    let actions = json!({"create": {"method": "POST", "url": "/users", "body": {"name": BOMB}}});
    let req = request(&module, Action::Create, basic(&remote.base, actions));
    let ticking = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ticker = {
        let ticking = ticking.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            let mut ticks = 0u32;
            while ticking.load(std::sync::atomic::Ordering::Relaxed) {
                let at = Instant::now();
                tokio::time::sleep(Duration::from_millis(5)).await;
                worst = worst.max(at.elapsed());
                ticks += 1;
            }
            (worst, ticks)
        })
    };
    let started = Instant::now();
    let e = fails(&module, &req).await;
    let took = started.elapsed();
    ticking.store(false, std::sync::atomic::Ordering::Relaxed);
    let (worst, ticks) = ticker.await.unwrap();
    eprintln!("render took {took:?}; worst 5 ms tick beside it {worst:?} ({ticks} ticks)");
    assert!(e.message.contains("ran out of fuel"), "{e}");
    assert!(
        took > Duration::from_millis(100),
        "the render is heavy: {took:?}"
    );
    // Held by the render, the ticker could not tick while it ran: its worst gap would be
    // the whole render. A busy machine may delay a tick, but not by half the render.
    assert!(
        worst * 2 < took,
        "the runtime was held: worst tick {worst:?} beside a render of {took:?}"
    );
}

// ------------------------------------------------------------------ check_settings

fn check(actions: Value) -> Vec<(String, String)> {
    let module = HttpModule::with(&crate::local_options());
    let settings = object(json!({"base_url": "https://api.example.com", "actions": actions}));
    module
        .check_settings(SchemaScope::Server, &settings)
        .into_iter()
        .map(|e| (e.field, e.rule))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(f, r)| (f.to_string(), r.to_string()))
        .collect()
}

#[test]
fn check_settings_reports_every_problem_with_its_path() {
    let errors = check(json!({
        "create": {
            "method": "FETCH",
            "url": "/users/{{ service.username",
            "headers": {"Bad Header": "x", "X-Ok": "{{ servce.username }}"},
            "body": {"a": ["{{ 1 + }}"], "n": "{{ product.settings.quota }}"},
            "success": {"status": [200, 700, "201"], "pointer": "ok"},
            "errors": {"transient": [503], "permanent": [503], "not_found": [404], "fatal": []},
            "outputs": {"id": "/id", "bad": "id~2"},
            "account": {"username": "/u"},
            "retries": 3
        },
        "lookup": {"method": "GET", "url": "/u"},
        "list_accounts": {"method": "GET", "url": "/u", "accounts": {"pointer": "/items"}},
        "usage": {"method": "GET", "url": "/u", "usage": {"username": "/u", "metrics": {"disk": 5}}},
        "Bad-Name": {"method": "GET", "url": "/"},
        "reset_quota": "POST /quota",
        "test_connection": {"url": "/ping"}
    }));
    let expected = pairs(&[
        ("actions.create.account", "not_applicable"),
        ("actions.create.retries", "unknown_field"),
        ("actions.create.method", "enum"),
        ("actions.create.url", "template"),
        ("actions.create.headers.X-Ok", "template"),
        ("actions.create.headers.Bad Header", "header_name"),
        ("actions.create.body.a.0", "template"),
        ("actions.create.success.status.1", "status_code"),
        ("actions.create.success.status.2", "type"),
        ("actions.create.success.pointer", "pointer"),
        ("actions.create.errors.permanent", "duplicate"),
        ("actions.create.errors.not_found", "not_applicable"),
        ("actions.create.errors.fatal", "unknown_field"),
        ("actions.create.outputs.bad", "pointer"),
        ("actions.lookup.account", "required"),
        ("actions.list_accounts.accounts.username", "required"),
        ("actions.usage.usage.metrics.disk", "type"),
        ("actions.Bad-Name", "pattern"),
        ("actions.reset_quota", "type"),
        ("actions.test_connection.method", "required"),
    ]);
    let mut got = errors.clone();
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "in order: {errors:#?}");
}

#[test]
fn check_settings_accepts_a_complete_spec_and_other_scopes() {
    assert_eq!(
        check(json!({"create": create_users()["create"].clone()})),
        []
    );
    assert_eq!(check(lookup_actions()), []);
    assert_eq!(
        check(json!(["not", "an", "object"])),
        pairs(&[("actions", "type")])
    );
    let module = HttpModule::with(&crate::local_options());
    let anything = object(json!({"actions": 1, "quota": 5}));
    assert!(module
        .check_settings(SchemaScope::Product, &anything)
        .is_empty());
    assert!(module
        .check_settings(SchemaScope::Service, &anything)
        .is_empty());
}

#[test]
fn the_schema_requires_credentials_per_auth_kind() {
    let module = HttpModule::with(&crate::local_options());
    let schema = &module.info().server_schema;
    let rejected = |settings: Value| -> Vec<String> {
        schema
            .validate(&object(settings), Mode::Complete)
            .unwrap_err()
            .into_iter()
            .map(|e| format!("{}:{}", e.field, e.rule))
            .collect()
    };
    let base = "https://api.example.com";
    assert_eq!(
        rejected(json!({"base_url": base, "auth": "basic", "actions": {}})),
        ["username:required_when", "password:required_when"]
    );
    assert_eq!(
        rejected(json!({"base_url": base, "auth": "bearer", "actions": {}})),
        ["token:required_when"]
    );
    assert_eq!(
        rejected(json!({"base_url": base, "auth": "header", "actions": {}})),
        ["header_name:required_when", "header_value:required_when"]
    );
    assert_eq!(
        rejected(json!({"base_url": base, "timeout_seconds": 301})),
        ["timeout_seconds:max", "actions:required"]
    );
    let ok = schema
        .validate(
            &object(json!({"base_url": base, "actions": {}})),
            Mode::Complete,
        )
        .unwrap();
    assert_eq!(
        (ok["auth"].clone(), ok["timeout_seconds"].clone()),
        (json!("none"), json!(30))
    );
}

#[test]
fn the_registry_ships_the_module() {
    let registry = provisio_modules::Registry::builtin();
    let info = registry.info("http").expect("http is built in");
    assert_eq!(info.capabilities.len(), 12);
    assert!(info.custom_actions.is_empty());
}

// ------------------------------------------------------------------ the outbound guard

fn guarded(allow: &[&str]) -> HttpModule {
    HttpModule::with(&provisio_modules::ModuleOptions {
        outbound: provisio_modules::outbound::OutboundPolicy::parse(
            &allow.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        )
        .unwrap(),
        ..Default::default()
    })
}

/// Loopback (by address and by a name that resolves to it), the metadata address and a
/// private address are refused before anything is sent, with a permanent error that names
/// the address, the rule and the setting that would allow it.
#[tokio::test]
async fn the_outbound_guard_refuses_special_addresses_by_default() {
    let v4 = remote(|_| answer(201, json!({}))).await;
    let v6 = remote_at("[::1]:0", |_| answer(201, json!({}))).await;
    let v4_port = port_of(&v4);
    let module = HttpModule::new();
    for (base, ip, rule, allow) in [
        (
            v4.base.clone(),
            "127.0.0.1",
            "a loopback address (127.0.0.0/8)",
            "127.0.0.1/32",
        ),
        (
            v6.base.clone(),
            "::1",
            "a loopback address (::1)",
            "::1/128",
        ),
        (
            format!("http://localhost:{v4_port}/v1"),
            "127.0.0.1 (localhost)",
            "a loopback address (127.0.0.0/8)",
            "127.0.0.1/32",
        ),
        (
            "http://169.254.169.254/latest".into(),
            "169.254.169.254",
            "a link-local address (169.254.0.0/16)",
            "169.254.169.254/32",
        ),
        (
            "http://10.0.0.1/api".into(),
            "10.0.0.1",
            "a private address (RFC 1918)",
            "10.0.0.1/32",
        ),
    ] {
        let e = fails(
            &module,
            &request(&module, Action::Create, basic(&base, create_users())),
        )
        .await;
        assert_eq!(e.kind, ErrorKind::Permanent, "{base}: {e}");
        let expected = format!(
            "nothing was sent: refused to connect to {ip}: {rule}; allow it with [outbound] allow = [\"{allow}\"]"
        );
        assert!(e.message.ends_with(&expected), "{base}: {e}");
    }
    assert!(v4.requests().is_empty() && v6.requests().is_empty());
}

fn port_of(remote: &Remote) -> String {
    remote
        .base
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/v1")
        .to_string()
}

/// Once named in `[outbound] allow`, the same remotes are reached; an address that is
/// allowed but has no remote fails like any unreachable host, not as refused.
#[tokio::test]
async fn addresses_named_in_allow_are_reached() {
    let v4 = remote(|_| answer(201, json!({}))).await;
    let v6 = remote_at("[::1]:0", |_| answer(201, json!({}))).await;
    let port = port_of(&v4);
    let module = guarded(&["127.0.0.1/32", "::1/128"]);
    for base in [
        v4.base.clone(),
        v6.base.clone(),
        format!("http://localhost:{port}/v1"),
    ] {
        let req = request(&module, Action::Create, basic(&base, create_users()));
        assert_eq!(
            call(&module, &req).await,
            Ok(ActionReply::default()),
            "{base}"
        );
    }
    assert_eq!(v4.requests().len(), 2);
    assert_eq!(v6.requests().len(), 1);

    let module = guarded(&["169.254.169.254/32", "10.0.0.0/8"]);
    for base in ["http://169.254.169.254/latest", "http://10.0.0.1/api"] {
        let mut settings = basic(base, create_users());
        settings["timeout_seconds"] = json!(1);
        let e = fails(&module, &request(&module, Action::Create, settings)).await;
        assert!(!e.message.contains("refused to connect"), "{base}: {e}");
    }
}

/// An answer larger than the cap is not read to the end: the call fails saying so, and
/// what was read stays below the cap.
#[tokio::test]
async fn an_answer_beyond_the_reply_cap_is_an_error() {
    let big = json!({"id": "x".repeat(3 * 1024 * 1024)});
    let remote = remote(move |_| answer(200, big.clone())).await;
    let module = HttpModule::with(&provisio_modules::ModuleOptions {
        max_reply_bytes: 1024 * 1024,
        ..crate::local_options()
    });
    let actions = json!({"create": {
        "method": "POST", "url": "/users", "outputs": {"remote_id": "/id"}
    }});
    let e = fails(
        &module,
        &request(&module, Action::Create, basic(&remote.base, actions)),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::Unknown, "{e}");
    assert!(
        e.message.contains(
            "the response body exceeds 1048576 bytes ([outbound] max_module_reply_bytes)"
        ),
        "{e}"
    );
}

/// A connection test says whether the remote works, never what it answered.
#[tokio::test]
async fn a_connection_test_never_quotes_the_remote() {
    let remote = remote(|_| answer(500, json!({"internal": "secret-ish page"}))).await;
    let module = HttpModule::with(&crate::local_options());
    let actions = json!({"test_connection": {"method": "GET", "url": "/health"}});
    let e = fails(
        &module,
        &request(
            &module,
            Action::TestConnection,
            basic(&remote.base, actions),
        ),
    )
    .await;
    assert_eq!(e.message, "test_connection: HTTP 500 from GET /v1/health");
}

/// A redirect is an answer, never followed, even to an address the policy allows: each
/// hop would be a target nobody configured.
#[tokio::test]
async fn a_redirect_is_an_answer_and_never_followed() {
    let target = remote(|_| answer(201, json!({}))).await;
    let location = format!("{}/users", target.base);
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move { (StatusCode::TEMPORARY_REDIRECT, [("location", location)]) }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let module = HttpModule::with(&crate::local_options());
    let e = fails(
        &module,
        &request(&module, Action::Create, basic(&base, create_users())),
    )
    .await;
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(
        e.message
            .starts_with("create: HTTP 307 from POST /v1/users"),
        "{e}"
    );
    assert!(target.requests().is_empty(), "the redirect was followed");
}
