//! `spawn_app()`: a Provisio on a free loopback port with a fresh database, an admin key,
//! and a log captured in memory so tests can search it.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use provisio_core::module::{
    ActionReply, ActionRequest, Capability, Module, ModuleError, ModuleInfo,
};
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

/// How long one test may run before it counts as hung: ten minutes, more when the
/// schemathesis run is given longer (`PROVISIO_SCHEMATHESIS_SECONDS`), or
/// `PROVISIO_TEST_TIMEOUT_SECS`.
fn test_bound() -> std::time::Duration {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let secs = env("PROVISIO_TEST_TIMEOUT_SECS")
        .unwrap_or_else(|| 600.max(env("PROVISIO_SCHEMATHESIS_SECONDS").unwrap_or(0) + 300));
    std::time::Duration::from_secs(secs)
}

/// Runs one test on a thread of its own with a current-thread runtime (what
/// `#[tokio::test]` gives) and fails it once it has run longer than [`test_bound`]. The
/// bound holds even when the test's thread is blocked outside the runtime; on PostgreSQL the
/// failure shows what the cluster's sessions were doing, the usual reason being a lock wait.
pub fn run_bounded<F, Fut>(name: &'static str, db: Db, body: F)
where
    F: FnOnce(Db) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (done, finished) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(body(db))));
            let _ = done.send(());
            if let Err(p) = outcome {
                std::panic::resume_unwind(p);
            }
        })
        .unwrap();
    let bound = test_bound();
    match finished.recv_timeout(bound) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = thread.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let sessions = if db == Db::Postgres {
                postgres_sessions()
            } else {
                String::new()
            };
            panic!("{name} was still running after {bound:?}: it hung.{sessions}");
        }
    }
}

/// pid, database, state, waiting on, in transaction for, query.
type SessionRow = (
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The cluster's sessions other than idle ones, with what each waits on and its query.
fn postgres_sessions() -> String {
    let Ok(url) = std::env::var("PROVISIO_TEST_PG_URL") else {
        return String::new();
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use sqlx::Connection;
        let mut conn = match sqlx::PgConnection::connect(&url).await {
            Ok(c) => c,
            Err(e) => return format!(" PostgreSQL could not be asked what it was doing: {e}"),
        };
        let rows: Vec<SessionRow> =
            sqlx::query_as(
                "SELECT pid, datname::text, state, wait_event_type || ':' || wait_event, \
                        (now() - xact_start)::text, left(query, 300) \
                 FROM pg_stat_activity \
                 WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' \
                   AND state IS DISTINCT FROM 'idle'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
        let mut out = String::from(" PostgreSQL sessions not idle (pid, database, state, waiting on, in transaction for, query):");
        for r in rows {
            out.push_str(&format!("\n  {r:?}"));
        }
        out
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub recorder: Arc<Recorder>,
    pub engine: Arc<provisio_engine::Engine>,
    worker: Option<provisio_engine::worker::WorkerHandle>,
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

#[async_trait::async_trait]
impl Module for BackupModule {
    fn info(&self) -> &ModuleInfo {
        &self.0
    }

    async fn call(&self, _: &ActionRequest) -> Result<ActionReply, ModuleError> {
        Ok(ActionReply::default())
    }
}

pub fn registry() -> Registry {
    registry_with(Arc::new(Recorder::default()))
}

pub fn registry_with(recorder: Arc<Recorder>) -> Registry {
    registry_in(
        recorder,
        &provisio_modules::ModuleOptions {
            outbound: provisio_modules::outbound::OutboundPolicy::parse(&["127.0.0.1/32".into()])
                .unwrap(),
            radius_sqlite_dir: Some(std::env::temp_dir()),
            ..Default::default()
        },
    )
}

/// The built-in modules (configured as an instance's config says) and the test ones.
pub fn registry_in(recorder: Arc<Recorder>, options: &provisio_modules::ModuleOptions) -> Registry {
    let mut r = Registry::builtin_with(options);
    r.register(Arc::new(BackupModule::new()));
    r.register(recorder);
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

/// Jobs run fast in tests: short retries and leases, frequent polls.
pub const FAST_JOBS: &str = "[jobs]\nretry_schedule = [\"100ms\", \"100ms\", \"100ms\"]\nretry_jitter = 0.0\nlease_seconds = 2\npoll_interval_ms = 20\nbreaker_failures = 5\nbreaker_open_seconds = 2\n";

/// A config for a test instance: files in `dir`, the given database, extra TOML appended.
pub fn config(dir: &std::path::Path, db_url: &str, extra_toml: &str) -> Config {
    let path: PathBuf = dir.join("provisio.toml");
    // No scheduled usage sync in tests unless one asks for it: an hourly sync landing in
    // the middle of an unrelated test would call its modules.
    let quiet = if extra_toml.contains("[usage]") {
        String::new()
    } else {
        "\n[usage]\nschedule = \"\"\n".to_string()
    };
    // The suite's remotes live on loopback, which the outbound guard refuses by default:
    // an instance allows 127.0.0.1 explicitly, as an operator would for a local remote,
    // unless the test is about the guard and says what it allows.
    let outbound = if extra_toml.contains("[outbound]") {
        String::new()
    } else {
        format!(
            "\n[outbound]\nallow = [\"127.0.0.1/32\"]\nradius_sqlite_dir = {:?}\n",
            std::env::temp_dir().display().to_string()
        )
    };
    let extra_toml = format!("{extra_toml}{quiet}{outbound}");
    let toml = format!(
        "database_url = {db:?}\nsecret_key_file = {key:?}\nadmin_key_file = {admin:?}\nmax_body_bytes = 65536\n{extra_toml}\n",
        db = db_url,
        key = dir.join("secret.key").display().to_string(),
        admin = dir.join("admin.key").display().to_string(),
    );
    std::fs::write(&path, toml).unwrap();
    Config::load(Some(&path), &Default::default()).unwrap()
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, "").await
}

pub async fn spawn_app_with(db: Db, extra_toml: &str) -> TestApp {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(db, dir.path()).await;
    let extra = if extra_toml.contains("[jobs]") {
        extra_toml.to_string()
    } else {
        format!("{extra_toml}\n{FAST_JOBS}")
    };
    let cfg = config(dir.path(), &url, &extra);
    start(dir, url, cfg).await
}

/// [`spawn_app_with`] whose recorder module is `recorder` (one that names itself, say).
pub async fn spawn_app_recording(db: Db, extra_toml: &str, recorder: Arc<Recorder>) -> TestApp {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(db, dir.path()).await;
    let cfg = config(dir.path(), &url, extra_toml);
    start_with(dir, url, cfg, recorder).await
}

async fn start(dir: tempfile::TempDir, db_url: String, cfg: Config) -> TestApp {
    start_with(dir, db_url, cfg, Arc::new(Recorder::default())).await
}

async fn start_with(
    dir: tempfile::TempDir,
    db_url: String,
    cfg: Config,
    recorder: Arc<Recorder>,
) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let admin_file = cfg.admin_key_file.clone();
    // Prepare first so the admin key file exists before the test reads it.
    let engine = Arc::new(
        provisio_server::prepare(
            &cfg,
            registry_in(recorder.clone(), &cfg.module_options().unwrap()),
        )
        .await
        .unwrap(),
    );
    let worker = Some(provisio_engine::worker::spawn(
        engine.clone(),
        provisio_server::worker_name(),
    ));
    let app = provisio_server::router(engine.clone(), &cfg);
    let handle = tokio::spawn(async move {
        // With the peer address, as `serve` runs it: failed logins are counted per address.
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
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
        recorder,
        engine,
        worker,
        base: format!("http://{addr}"),
        key,
        // No request of a test waits this long (`?wait=` is at most 20 s): one that does is
        // a hang, failed with its URL instead of waited on.
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .unwrap(),
        dir,
        db_url,
        shutdown: Some(tx),
        handle: Some(handle),
    }
}

impl TestApp {
    /// Stops the worker's loops (the API goes on serving).
    pub async fn stop_worker(&mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown().await;
        }
    }

    /// Stops the server, then the worker; each part has a minute, and one that takes longer
    /// fails the test naming itself rather than hanging it.
    pub async fn stop(mut self) {
        const BOUND: std::time::Duration = std::time::Duration::from_secs(60);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(BOUND, h)
                .await
                .expect("the HTTP server did not stop within a minute of being told to");
        }
        if let Some(w) = self.worker.take() {
            tokio::time::timeout(BOUND, w.shutdown())
                .await
                .expect("the worker did not stop within a minute of being told to");
        }
    }

    /// Polls until the job is final (or 20 s pass) and returns it.
    pub async fn wait_job(&self, id: i64) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
            let state = job["state"].as_str().unwrap_or("").to_string();
            if !matches!(state.as_str(), "pending" | "running")
                || std::time::Instant::now() > deadline
            {
                return job;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Runs an action with `?wait=20` and returns the finished job.
    pub async fn act(&self, service: i64, action: &str, body: Option<Value>) -> Value {
        let (status, job) = self
            .call(
                Method::POST,
                &format!("/v1/services/{service}/{action}?wait=20"),
                body,
            )
            .await;
        assert!(
            status == StatusCode::OK || status == StatusCode::ACCEPTED,
            "{action}: {status} {job}"
        );
        job
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        self.request_as(&self.key, method, path, body).await
    }

    pub async fn request_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Response {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(key);
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
        self.call_as(&self.key, method, path, body).await
    }

    /// [`TestApp::call`] with another key than the admin's.
    pub async fn call_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let resp = self.request_as(key, method, path, body).await;
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

    /// Creates a record with `key` and returns it, failing the test on anything but 201.
    pub async fn call_as_created(&self, key: &str, path: &str, body: Value) -> Value {
        let (status, json) = self.call_as(key, Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path}: {json}");
        json
    }

    /// Makes an API key (with the admin key) and returns it.
    pub async fn make_key(&self, spec: Value) -> String {
        let made = self.create("/v1/keys", spec).await;
        made["key"].as_str().unwrap().to_string()
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
                serde_json::json!({"name": "basic", "module": "script", "auto_setup": "manual", "settings": {"quota": 100}}),
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

/// How the recorder answers one call, chosen per service by its `behaviour` setting.
/// The recorder is test scaffolding for the engine's rules (retries, lookups, limits); the
/// real `script` and `http` modules are exercised against real peers elsewhere.
#[derive(Default)]
pub struct Recorder {
    pub info: OnceLock<ModuleInfo>,
    state: Mutex<RecorderState>,
}

#[derive(Default)]
pub struct RecorderState {
    /// username -> status on the "remote".
    pub accounts: std::collections::BTreeMap<String, String>,
    /// (idempotency key, action, username) of every effect applied.
    pub effects: Vec<(String, String, String)>,
    /// Calls per (username, action), lookups included.
    pub calls: std::collections::HashMap<(String, String), u32>,
    pub running: u32,
    pub max_running: u32,
    /// When each non-lookup call started.
    pub starts: Vec<std::time::Instant>,
    /// (server name, action, username) of every effect applied, in order.
    pub server_calls: Vec<(String, String, String)>,
    /// username -> the product settings the last create or change_package carried.
    pub packages: std::collections::BTreeMap<String, provisio_core::settings::Settings>,
}

impl Recorder {
    pub fn with<R>(&self, f: impl FnOnce(&RecorderState) -> R) -> R {
        f(&self.state.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl Module for Recorder {
    fn info(&self) -> &ModuleInfo {
        self.info.get_or_init(|| ModuleInfo {
            name: "recorder".into(),
            version: "1".into(),
            description: "test scaffolding".into(),
            capabilities: Capability::lifecycle_and(&[
                Capability::Lookup,
                Capability::TestConnection,
                Capability::LoginUrl,
            ]),
            custom_actions: vec!["reboot".into()],
            server_schema: SettingsSchema::new(vec![Field::secret("token", "Token")]).allow_extra(),
            product_schema: SettingsSchema::new(vec![]).allow_extra(),
            service_schema: SettingsSchema::new(vec![]).allow_extra(),
        })
    }

    async fn call(&self, req: &ActionRequest) -> Result<ActionReply, ModuleError> {
        use provisio_core::module::{Action, RemoteAccount};
        let Some(svc) = &req.service else {
            return match req.server.settings.get("healthy").and_then(Value::as_bool) {
                Some(false) => Err(ModuleError::permanent("cannot log in")),
                _ => Ok(ActionReply::default()),
            };
        };
        let user = svc.username.clone();
        let action = req.action.as_str().to_string();
        let behaviour = svc
            .settings
            .get("behaviour")
            .and_then(Value::as_str)
            .unwrap_or("ok")
            .to_string();
        let delay_ms = svc
            .settings
            .get("delay_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let n = {
            let mut st = self.state.lock().unwrap();
            let n = st.calls.entry((user.clone(), action.clone())).or_default();
            *n += 1;
            let n = *n;
            if req.action != Action::Lookup {
                st.running += 1;
                st.max_running = st.max_running.max(st.running);
                st.starts.push(std::time::Instant::now());
            }
            n
        };
        if req.action == Action::LoginUrl {
            return Ok(ActionReply {
                url: Some(format!("https://panel.test/sso/{user}?token=one-time")),
                ..Default::default()
            });
        }
        if req.action == Action::Lookup {
            let st = self.state.lock().unwrap();
            return Ok(ActionReply {
                account: st.accounts.get(&user).map(|s| RemoteAccount {
                    username: user.clone(),
                    status: Some(s.clone()),
                    package: None,
                }),
                ..Default::default()
            });
        }
        if delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        }
        let apply = |st: &mut RecorderState| {
            if !st
                .effects
                .iter()
                .any(|(k, a, _)| k == &req.idempotency_key && a == &action)
            {
                st.effects
                    .push((req.idempotency_key.clone(), action.clone(), user.clone()));
                st.server_calls
                    .push((req.server.name.clone(), action.clone(), user.clone()));
                if matches!(req.action, Action::Create | Action::ChangePackage) {
                    let settings = match req.params.get("new_product") {
                        Some(Value::Object(p)) => p.clone(),
                        _ => req.product.settings.clone(),
                    };
                    st.packages.insert(user.clone(), settings);
                }
                match req.action {
                    Action::Create | Action::Unsuspend => {
                        st.accounts.insert(user.clone(), "active".into());
                    }
                    Action::Suspend => {
                        st.accounts.insert(user.clone(), "suspended".into());
                    }
                    Action::Terminate => {
                        st.accounts.remove(&user);
                    }
                    _ => {}
                }
            }
        };
        let result = {
            let mut st = self.state.lock().unwrap();
            let r = match behaviour.as_str() {
                // Fails twice (nothing applied), then works.
                "flaky" if n <= 2 => Err(ModuleError::transient("remote busy (503)")),
                "permanent" => Err(ModuleError::permanent(format!(
                    "remote refused {user}: bad plan; password {}",
                    secrecy::ExposeSecret::expose_secret(&svc.password)
                ))),
                "down" => Err(ModuleError::transient("connection refused")),
                _ if req.action == Action::Create
                    && req.server.settings.get("refuse_creates") == Some(&Value::Bool(true)) =>
                {
                    Err(ModuleError::permanent("this server takes no new accounts"))
                }
                // Applies the effect, then the answer is lost.
                "lost_reply" if n == 1 => {
                    apply(&mut st);
                    Err(ModuleError::unknown("connection reset after sending"))
                }
                _ => {
                    apply(&mut st);
                    Ok(ActionReply {
                        outputs: serde_json::json!({"pass_key": format!("PK-{user}")})
                            .as_object()
                            .unwrap()
                            .clone(),
                        ..Default::default()
                    })
                }
            };
            st.running -= 1;
            r
        };
        result
    }
}
