//! A fresh engine per test: a SQLite store in a temporary directory, a recording module
//! registered through the registry (so behind its redacting layer, as in production),
//! and helpers to make the records an action needs.

use std::sync::{Arc, Mutex};

use provisio_core::module::{
    Action, ActionReply, ActionRequest, Capability, Module, ModuleError, ModuleInfo,
};
use provisio_core::secret::Cipher;
use provisio_core::service::Service;
use provisio_core::settings::{Field, Settings, SettingsSchema};
use provisio_core::ClientId;
use provisio_engine::input::{ClientCreate, ProductCreate, RecordRef, ServerCreate, ServiceCreate};
use provisio_engine::{Engine, EngineOptions};
use provisio_modules::Registry;
use serde_json::{json, Value};

/// Every call the module saw, as (action, username, idempotency key), and every effect
/// it applied: a call with a `delay_ms` service setting takes effect only at its end, so a
/// call cancelled before then has none.
#[derive(Default)]
pub struct Recording {
    info: std::sync::OnceLock<ModuleInfo>,
    pub calls: Mutex<Vec<(String, String, String)>>,
    pub effects: Mutex<Vec<(String, String)>>,
    /// A test's own behaviour, asked after the call is recorded: `Some` answers the call.
    pub script: std::sync::OnceLock<Arc<dyn Script>>,
}

/// What a test scripts a call to do (hold it, fail it) instead of the recording's default.
#[async_trait::async_trait]
pub trait Script: Send + Sync {
    async fn call(&self, req: &ActionRequest) -> Option<Result<ActionReply, ModuleError>>;
}

#[async_trait::async_trait]
impl Module for Recording {
    fn info(&self) -> &ModuleInfo {
        self.info.get_or_init(|| ModuleInfo {
            name: "recording".into(),
            version: "1".into(),
            description: "engine test scaffolding".into(),
            // No renew, so a missing capability can be asked for.
            capabilities: vec![
                Capability::Create,
                Capability::Suspend,
                Capability::Unsuspend,
                Capability::Terminate,
                Capability::ChangePassword,
                Capability::ChangePackage,
                Capability::Lookup,
                Capability::TestConnection,
            ],
            custom_actions: vec!["reboot".into()],
            server_schema: SettingsSchema::new(vec![Field::secret("token", "Token")]),
            product_schema: SettingsSchema::new(vec![]).allow_extra(),
            service_schema: SettingsSchema::new(vec![]).allow_extra(),
        })
    }

    async fn call(&self, req: &ActionRequest) -> Result<ActionReply, ModuleError> {
        let user = req
            .service
            .as_ref()
            .map(|s| s.username.clone())
            .unwrap_or_default();
        self.calls.lock().unwrap().push((
            req.action.as_str().to_string(),
            user,
            req.idempotency_key.clone(),
        ));
        if let Some(script) = self.script.get() {
            if let Some(answer) = script.call(req).await {
                return answer;
            }
        }
        if req
            .service
            .as_ref()
            .and_then(|s| s.settings.get("panic"))
            .and_then(Value::as_bool)
            == Some(true)
            && req.action == Action::Create
        {
            panic!("the recording module was told to panic");
        }
        let echo = req
            .service
            .as_ref()
            .and_then(|s| s.settings.get("echo_secrets"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let delay = req
            .service
            .as_ref()
            .and_then(|s| s.settings.get("delay_ms"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if delay > 0 && !req.action.is_read_only() {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if echo || req.service.is_none() {
            // A careless module repeating every secret it was given.
            use secrecy::ExposeSecret;
            let token = req.server.settings.get("token").and_then(Value::as_str);
            let password = req
                .service
                .as_ref()
                .map(|s| s.password.expose_secret().to_string());
            let new = req.params.get("new_password").and_then(Value::as_str);
            return Err(ModuleError::permanent(format!(
                "remote refused token={token:?} password={password:?} new={new:?}"
            )));
        }
        if !req.action.is_read_only() {
            let user = req.service.as_ref().map(|s| s.username.clone());
            self.effects
                .lock()
                .unwrap()
                .push((req.action.as_str().to_string(), user.unwrap_or_default()));
        }
        Ok(ActionReply::default())
    }
}

pub struct TestEngine {
    pub engine: Arc<Engine>,
    pub module: Arc<Recording>,
    pub client: ClientId,
    store: Arc<dyn provisio_store::Store>,
    key: [u8; 32],
    /// The SQLite file's folder; `None` on PostgreSQL.
    _dir: Option<tempfile::TempDir>,
}

pub const TOKEN: &str = "tok-7f3a9c2e-server-secret";

impl TestEngine {
    pub async fn new() -> Self {
        Self::with_options(|_| {}).await
    }

    /// Another engine over the same store, module and key: a second node.
    pub fn another_engine(&self, tune: impl FnOnce(&mut EngineOptions)) -> Arc<Engine> {
        Arc::new(Engine::new(
            self.store.clone(),
            self.registry(),
            self.cipher(),
            options(tune),
        ))
    }

    /// Another engine over `store` (the same database through another node's connections
    /// and clock), with this one's module and key.
    pub fn another_engine_on(
        &self,
        store: Arc<dyn provisio_store::Store>,
        tune: impl FnOnce(&mut EngineOptions),
    ) -> Arc<Engine> {
        Arc::new(Engine::new(
            store,
            self.registry(),
            self.cipher(),
            options(tune),
        ))
    }

    fn registry(&self) -> Registry {
        let mut modules = Registry::empty();
        modules.register(self.module.clone());
        modules
    }

    fn cipher(&self) -> Cipher {
        Cipher::new(&secrecy::SecretBox::new(Box::new(self.key)))
    }

    pub async fn with_options(tune: impl FnOnce(&mut EngineOptions)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("engine.db").display());
        Self::on(&url, Some(dir), tune).await
    }

    /// The same records over the PostgreSQL database `url` (see [`fresh_pg_url`]).
    pub async fn on_postgres(url: &str, tune: impl FnOnce(&mut EngineOptions)) -> Self {
        Self::on(url, None, tune).await
    }

    async fn on(
        url: &str,
        dir: Option<tempfile::TempDir>,
        tune: impl FnOnce(&mut EngineOptions),
    ) -> Self {
        let store = provisio_store::open(url).await.unwrap();
        store.migrate().await.unwrap();
        let module = Arc::new(Recording::default());
        let mut modules = Registry::empty();
        modules.register(module.clone());
        let key = {
            use secrecy::ExposeSecret;
            *Cipher::generate_key().expose_secret()
        };
        let engine = Arc::new(Engine::new(
            store.clone(),
            modules,
            Cipher::new(&secrecy::SecretBox::new(Box::new(key))),
            options(tune),
        ));
        engine
            .create_server(ServerCreate {
                name: "edge-1".into(),
                module: "recording".into(),
                group: None,
                settings: settings(json!({ "token": TOKEN })),
                max_concurrent: None,
                max_per_second: None,
                enabled: None,
            })
            .await
            .unwrap();
        for (name, setup) in [
            ("basic", "manual"),
            ("gold", "manual"),
            ("auto", "on_order"),
        ] {
            engine
                .create_product(ProductCreate {
                    name: name.into(),
                    module: "recording".into(),
                    extends: None,
                    server_group: None,
                    settings: Settings::new(),
                    auto_setup: Some(serde_json::from_value(json!(setup)).unwrap()),
                    client_fields: None,
                })
                .await
                .unwrap();
        }
        let client = engine
            .create_client(ClientCreate {
                name: "Acme Ltd".into(),
                email: "ops@acme.example".into(),
                currency: None,
                balance_minor: None,
                status: None,
                custom_fields: Default::default(),
                reseller_id: None,
                external_id: None,
                order_key: None,
            })
            .await
            .unwrap()
            .id;
        Self {
            engine,
            module,
            client,
            store,
            key,
            _dir: dir,
        }
    }

    /// Orders a service of `product`; `auto` queues its create at once.
    pub async fn order(&self, product: &str, username: &str, service_settings: Value) -> Service {
        self.engine
            .create_service(ServiceCreate {
                order_key: None,
                external_id: None,
                client_id: self.client,
                product: RecordRef::Name(product.into()),
                server: None,
                username: Some(username.into()),
                password: Some("client-password-5b1d".to_string().into()),
                invoice: None,
                parent_invoice: None,
                settings: settings(service_settings),
            })
            .await
            .unwrap()
    }

    /// The SQLite file under the engine, for tests that write rows the API cannot.
    pub fn db_path(&self) -> std::path::PathBuf {
        let dir = self._dir.as_ref().expect("a SQLite engine");
        dir.path().join("engine.db")
    }

    pub fn effects(&self, action: &str) -> usize {
        let effects = self.module.effects.lock().unwrap();
        effects.iter().filter(|(a, _)| a == action).count()
    }

    pub fn calls(&self) -> Vec<(String, String, String)> {
        self.module.calls.lock().unwrap().clone()
    }

    pub fn actions_called(&self) -> Vec<Action> {
        self.calls()
            .iter()
            .map(|(a, _, _)| Action::from_stored(a))
            .collect()
    }
}

/// The URL of a new, empty database in the PostgreSQL cluster `PROVISIO_TEST_PG_URL` names
/// (`scripts/test` starts one); `None`, and the test skips saying so, when it is unset.
pub async fn fresh_pg_url() -> Option<String> {
    use sqlx::Connection as _;
    let Ok(admin) = std::env::var("PROVISIO_TEST_PG_URL") else {
        eprintln!(
            "PROVISIO_TEST_PG_URL is not set: skipping a PostgreSQL test (scripts/test sets it)"
        );
        return None;
    };
    let name = format!("engine_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let base = admin.rsplit_once('/').expect("the URL names a database").0;
    Some(format!("{base}/{name}"))
}

/// Test engines poll often, so that waits are short.
fn options(tune: impl FnOnce(&mut EngineOptions)) -> EngineOptions {
    let mut options = EngineOptions::default();
    options.jobs.poll_interval = std::time::Duration::from_millis(20);
    tune(&mut options);
    options
}

pub fn settings(v: Value) -> Settings {
    match v {
        Value::Object(m) => m,
        _ => Settings::new(),
    }
}
