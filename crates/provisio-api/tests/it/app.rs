//! `spawn()`: a Provisio on a free loopback port with a fresh SQLite database and its first
//! admin key, with the built-in modules and `meter`; `lagging_proxy`: a proxy that holds
//! back the answer to the first request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use provisio_api::requests::{ClientCreate, ProductCreate, ServerCreate};
use provisio_api::Client;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub struct App {
    pub base: String,
    pub key: String,
    _dir: tempfile::TempDir,
    _worker: provisio_engine::worker::WorkerHandle,
}

impl App {
    pub fn client(&self) -> Client {
        Client::new(&self.base, Some(&self.key)).unwrap()
    }

    /// A noop server and product, and a client, to order services against.
    pub async fn catalog(&self, c: &Client) -> (i64, String) {
        c.create_server(&ServerCreate {
            name: "noop-1".into(),
            module: "noop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let product = c
            .create_product(&ProductCreate {
                name: "basic".into(),
                module: "noop".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let client = c
            .create_client(&ClientCreate {
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        (client.id, product.name)
    }
}

pub async fn spawn() -> App {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("provisio.db").display());
    let toml = format!(
        "database_url = {db:?}\nsecret_key_file = {key:?}\nadmin_key_file = {admin:?}\n\
         [usage]\nschedule = \"\"\n\
         [jobs]\nretry_schedule = [\"100ms\"]\nretry_jitter = 0.0\nlease_seconds = 2\npoll_interval_ms = 20\n",
        key = dir.path().join("secret.key").display().to_string(),
        admin = dir.path().join("admin.key").display().to_string(),
    );
    let path = dir.path().join("provisio.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = provisio_server::Config::load(Some(&path), &Default::default()).unwrap();
    let mut registry = provisio_modules::Registry::builtin_with(&cfg.module_options().unwrap());
    registry.register(Arc::new(Meter::new()));
    let engine = Arc::new(provisio_server::prepare(&cfg, registry).await.unwrap());
    let worker = provisio_engine::worker::spawn(engine.clone(), provisio_server::worker_name());
    let app = provisio_server::router(engine, &cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await.unwrap();
    });
    let key = std::fs::read_to_string(&cfg.admin_key_file)
        .unwrap()
        .trim()
        .to_string();
    App {
        base: format!("http://{addr}"),
        key,
        _dir: dir,
        _worker: worker,
    }
}

/// A proxy to `backend` that forwards every request but answers the first one only after
/// `lag` (a client with a shorter timeout has given up by then), and records each request's
/// head, lower-cased.
pub async fn lagging_proxy(backend: &str, lag: Duration) -> (String, Arc<Mutex<Vec<String>>>) {
    let backend = backend.trim_start_matches("http://").to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        let mut n = 0usize;
        // Bounded: the tests send a handful of requests.
        while n < 20 {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            n += 1;
            let delay = if n == 1 { lag } else { Duration::ZERO };
            let (backend, seen) = (backend.clone(), seen.clone());
            tokio::spawn(async move {
                let _ = forward(socket, &backend, delay, &seen).await;
            });
        }
    });
    (base, heads)
}

async fn forward(
    mut socket: TcpStream,
    backend: &str,
    delay: Duration,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while request.len() < head_end + length {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    seen.lock().unwrap().push(head.clone());
    // One request per connection, so the answer ends where the backend closes.
    let first_line = request.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut sent = request[..first_line].to_vec();
    sent.extend_from_slice(b"connection: close\r\n");
    sent.extend_from_slice(&request[first_line..]);
    let mut upstream = TcpStream::connect(backend).await?;
    upstream.write_all(&sent).await?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).await?;
    tokio::time::sleep(delay).await;
    socket.write_all(&answer).await?;
    socket.shutdown().await
}

/// A module that reports usage and lists accounts, which no built-in module does without a
/// remote of its own: every account is `ada1`, using 3.5 of 10 GB `data`, and `orphan-1`,
/// which no service knows.
pub struct Meter(provisio_core::module::ModuleInfo);

impl Meter {
    fn new() -> Self {
        use provisio_core::module::{Capability, ModuleInfo};
        use provisio_core::settings::SettingsSchema;
        Self(ModuleInfo {
            name: "meter".into(),
            version: "1.0.0".into(),
            description: "Reports usage and lists accounts, for tests".into(),
            capabilities: Capability::lifecycle_and(&[Capability::Usage, Capability::ListAccounts]),
            custom_actions: vec![],
            server_schema: SettingsSchema::new(vec![]).allow_extra(),
            product_schema: SettingsSchema::new(vec![]).allow_extra(),
            service_schema: SettingsSchema::new(vec![]).allow_extra(),
        })
    }
}

#[async_trait::async_trait]
impl provisio_core::module::Module for Meter {
    fn info(&self) -> &provisio_core::module::ModuleInfo {
        &self.0
    }

    async fn call(
        &self,
        request: &provisio_core::module::ActionRequest,
    ) -> Result<provisio_core::module::ActionReply, provisio_core::module::ModuleError> {
        use provisio_core::module::{Action, ActionReply, Metric, RemoteAccount, UsageReport};
        let account = |name: &str| RemoteAccount {
            username: name.into(),
            status: Some("active".into()),
            package: None,
        };
        Ok(match request.action {
            Action::ListAccounts => ActionReply {
                accounts: vec![account("ada1"), account("orphan-1")],
                ..Default::default()
            },
            Action::Usage => ActionReply {
                usage: vec![UsageReport {
                    username: "ada1".into(),
                    metrics: [(
                        "data".to_string(),
                        Metric {
                            used: 3.5,
                            limit: Some(10.0),
                            unit: Some("GB".into()),
                        },
                    )]
                    .into(),
                }],
                ..Default::default()
            },
            _ => ActionReply::default(),
        })
    }
}
