//! `spawn_app()`: a Provisio on a free loopback port with a fresh database, an admin key,
//! and a log captured in memory so tests can search it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use provisio_core::module::{Capability, Module, ModuleInfo};
use provisio_core::settings::{Field, SettingsSchema};
use provisio_modules::Registry;
use provisio_server::Config;
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

/// Everything logged by every test of this binary (tests run in parallel, so a test
/// searches it for values only it used).
static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_log() -> Arc<Mutex<Vec<u8>>> {
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        // Trace level: the most a deployment could ever log.
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
    .clone()
}

pub fn captured_log() -> String {
    String::from_utf8_lossy(&init_log().lock().unwrap()).into_owned()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub db_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// A module whose schema follows seed 002 (a backup server's WHMCS module), so the API's
/// validation can be checked against every kind of rule.
pub struct BackupModule(ModuleInfo);

impl BackupModule {
    pub fn new() -> Self {
        let product = SettingsSchema::new(vec![
            Field::enumeration("protocol", "Protocol", &["http", "https"]).required(),
            Field::enumeration("action", "Action", &["signup_reseller", "signup_customer"])
                .required(),
            Field::string("reseller_name", "Reseller name")
                .forbidden_when("action", "signup_reseller"),
            Field::bytes("storage_allotted", "Storage allotted", None, None),
            Field::email_list("report_email", "Consolidated report email")
                .forbidden_when("action", "signup_reseller"),
            Field::boolean("throttle_enabled", "Throttle").default_value(false),
            Field::enumeration(
                "throttle_mode",
                "Throttle settings",
                &["always", "specified_time"],
            )
            .default_value("always"),
            Field::time_of_day("throttle_from", "Throttle from")
                .required_when("throttle_mode", "specified_time"),
            Field::time_of_day("throttle_till", "Throttle till")
                .required_when("throttle_mode", "specified_time"),
            Field::bytes(
                "restricted_rate",
                "Restricted rate",
                Some(1024),
                Some(9999 * (1 << 30)),
            )
            .required_when("throttle_enabled", true),
        ]);
        let server = SettingsSchema::new(vec![
            Field::string("hostname", "Host").required(),
            Field::integer("port", "Port", Some(1), Some(65535)).default_value(6061),
            Field::string("username", "Admin user").required(),
            Field::secret("password", "Admin password").required(),
        ]);
        Self(ModuleInfo {
            name: "backup".into(),
            version: "1.0.0".into(),
            description: "Seed 002's backup server, for tests".into(),
            capabilities: vec![Capability::Create, Capability::Suspend],
            custom_actions: vec![],
            server_schema: server,
            product_schema: product,
            service_schema: SettingsSchema::new(vec![Field::string("domain", "Domain")]),
        })
    }
}

impl Module for BackupModule {
    fn info(&self) -> &ModuleInfo {
        &self.0
    }
}

pub fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.register(Arc::new(BackupModule::new()));
    r
}

pub async fn db_url(db: Db, dir: &std::path::Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("provisio.db").display()),
        Db::Postgres => {
            use sqlx::Connection;
            let admin = std::env::var("PROVISIO_TEST_PG_URL").expect(
                "PROVISIO_TEST_PG_URL is not set: run scripts/test, which starts a throwaway PostgreSQL",
            );
            let name = format!("t_{:016x}", rand_u64());
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// A config for a test instance: files in `dir`, the given database, extra TOML appended.
pub fn config(dir: &std::path::Path, db_url: &str, extra_toml: &str) -> Config {
    let path: PathBuf = dir.join("provisio.toml");
    let toml = format!(
        "database_url = {db:?}\nsecret_key_file = {key:?}\nadmin_key_file = {admin:?}\nmax_body_bytes = 65536\n{extra_toml}\n",
        db = db_url,
        key = dir.join("secret.key").display().to_string(),
        admin = dir.join("admin.key").display().to_string(),
    );
    std::fs::write(&path, toml).unwrap();
    Config::load(Some(&path), &Default::default()).unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Db::Sqlite, "").await
}

pub async fn spawn_app_with(db: Db, extra_toml: &str) -> TestApp {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(db, dir.path()).await;
    let cfg = config(dir.path(), &url, extra_toml);
    start(dir, url, cfg).await
}

async fn start(dir: tempfile::TempDir, db_url: String, cfg: Config) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let admin_file = cfg.admin_key_file.clone();
    // Prepare first so the admin key file exists before the test reads it.
    let engine = Arc::new(provisio_server::prepare(&cfg, registry()).await.unwrap());
    let app = provisio_server::router(engine, &cfg);
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    let key = std::fs::read_to_string(admin_file)
        .unwrap()
        .trim()
        .to_string();
    TestApp {
        base: format!("http://{addr}"),
        key,
        http: reqwest::Client::new(),
        dir,
        db_url,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// Sends a request and returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let resp = self.request(method, path, body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a record and returns it, failing the test on anything but 201.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, json) = self.post(path, body).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {json}");
        json
    }

    /// A client, a `script` server and product, ready for services.
    pub async fn seed(&self) -> (i64, Value, Value) {
        let client = self
            .create(
                "/v1/clients",
                serde_json::json!({"name": "Acme", "email": "ops@acme.test"}),
            )
            .await;
        let server = self
            .create(
                "/v1/servers",
                serde_json::json!({"name": "s1", "module": "script", "settings": {"executable": "accounts.sh"}}),
            )
            .await;
        let product = self
            .create(
                "/v1/products",
                serde_json::json!({"name": "basic", "module": "script", "settings": {"quota": 100}}),
            )
            .await;
        (client["id"].as_i64().unwrap(), server, product)
    }
}

/// Asserts a problem+json response with a field error for `field` under `rule`.
pub fn assert_field_error(status: StatusCode, body: &Value, field: &str, rule: &str) {
    assert!(
        status.is_client_error(),
        "expected 4xx, got {status}: {body}"
    );
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors list: {body}"));
    assert!(
        errors
            .iter()
            .any(|e| e["field"] == field && e["rule"] == rule),
        "expected {field}/{rule} in {body}"
    );
    for e in errors {
        let msg = e["message"].as_str().unwrap();
        assert!(
            msg.contains(e["field"].as_str().unwrap()),
            "message names its field: {e}"
        );
    }
}
