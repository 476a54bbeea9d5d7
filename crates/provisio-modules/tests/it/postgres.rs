//! Tests of the `postgres` module against real PostgreSQL 15 clusters. Each test starts its
//! own throwaway cluster with scram-sha-256 authentication (initdb takes well under a
//! second), so that a login proves a password and a refusal proves a suspension; the
//! cluster is stopped and its directory removed when the test ends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use provisio_core::module::{
    Action, ActionReply, ActionRequest, ClientContext, ErrorKind, Module, ModuleError,
    ProductContext, RemoteAccount, ServerContext, ServiceContext,
};
use provisio_core::settings::{Mode, Settings};
use provisio_modules::postgres::PostgresModule;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};

const ADMIN_PASSWORD: &str = "adm-Pg-7f3e91c2";
const PASSWORD: &str = "svc-Pg-4b8d2a17";
/// Quotes, a backslash and non-ASCII letters: the password must survive SQL quoting and
/// SASLprep on both sides.
const NEW_PASSWORD: &str = "n3w'P\\ässwörd\"-ü";
/// Every call of a test is bounded by this.
const CALL_LIMIT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------------ a throwaway cluster

/// A running PostgreSQL cluster in a temporary directory; stopped on drop.
struct Cluster {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn pg_bin() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
    );
    assert!(
        dir.join("initdb").exists(),
        "PostgreSQL binaries not found in {} (set PG_BIN, or run scripts/test, which installs PostgreSQL 15)",
        dir.display()
    );
    dir
}

/// PostgreSQL refuses to run as root; as root, run it as the `postgres` user.
fn as_owner(cmd: &mut Command, dir: &Path) {
    // SAFETY: geteuid and getpwnam are called before any thread of this test could change
    // the user database; the result is copied at once.
    unsafe {
        if libc::geteuid() != 0 {
            return;
        }
        let name = std::ffi::CString::new("postgres").unwrap();
        let pw = libc::getpwnam(name.as_ptr());
        assert!(
            !pw.is_null(),
            "running as root needs a `postgres` user to run PostgreSQL as"
        );
        let (uid, gid) = ((*pw).pw_uid, (*pw).pw_gid);
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
        cmd.uid(uid).gid(gid);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    async fn start() -> Cluster {
        let bin = pg_bin();
        let dir = tempfile::Builder::new()
            .prefix("provisio-pg-it")
            .tempdir()
            .unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, ADMIN_PASSWORD).unwrap();
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["--auth=scram-sha-256", "-U", "postgres", "-N"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_owner(&mut initdb, dir.path());
        if let Ok(meta) = std::fs::metadata(dir.path()) {
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&pwfile, Some(meta.uid()), Some(meta.gid())).unwrap();
        }
        let out = initdb.output().expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // A port picked by the kernel may be taken again before postgres binds it: retry.
        for _ in 0..5 {
            let port = free_port();
            let mut postgres = Command::new(bin.join("postgres"));
            postgres
                .arg("-D")
                .arg(dir.path().join("data"))
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "shared_buffers=16MB",
                    "-c",
                    "max_connections=40",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            as_owner(&mut postgres, dir.path());
            // SAFETY: prctl is async-signal-safe. If this test process dies without
            // dropping the cluster (killed), the kernel stops the postmaster too.
            unsafe {
                postgres.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = postgres.spawn().expect("postgres starts");
            if wait_ready(&mut child, port).await {
                return Cluster {
                    child,
                    port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("PostgreSQL did not start on any of five ports");
    }

    fn options(&self, user: &str, password: &str, database: &str) -> PgConnectOptions {
        options(self.port, user, password, database)
    }

    async fn admin_try(&self) -> Result<PgConnection, sqlx::Error> {
        bounded(admin_options(self.port).connect()).await
    }

    /// A superuser session for checking and arranging state.
    async fn admin(&self) -> PgConnection {
        self.admin_try().await.expect("the admin connects")
    }

    /// Logs in as `role` to its own database.
    async fn login(&self, role: &str, password: &str) -> Result<PgConnection, sqlx::Error> {
        bounded(self.options(role, password, role).connect()).await
    }
}

fn options(port: u16, user: &str, password: &str, database: &str) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username(user)
        .password(password)
        .database(database)
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
}

fn admin_options(port: u16) -> PgConnectOptions {
    options(port, "postgres", ADMIN_PASSWORD, "postgres")
}

/// Whether the cluster accepts the admin within 30 s (false if postgres exited, e.g. because
/// its port was taken).
async fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(Ok(conn)) =
            tokio::time::timeout(Duration::from_secs(5), admin_options(port).connect()).await
        {
            let _ = conn.close().await;
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("PostgreSQL did not start within 30 s");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the postmaster takes its backends down with it.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CALL_LIMIT, fut)
        .await
        .expect("did not finish in time")
}

// ------------------------------------------------------------------ requests

fn object(v: Value) -> Settings {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

/// A unique name prefix, so that no two tests (or runs) share roles.
fn prefix(test: &str) -> String {
    format!("pv_{test}_")
}

fn server_settings(
    module: &PostgresModule,
    cluster: &Cluster,
    prefix: &str,
    extra: Value,
) -> Settings {
    let mut settings = object(json!({
        "host": "127.0.0.1",
        "port": cluster.port,
        "admin_user": "postgres",
        "admin_password": ADMIN_PASSWORD,
        "prefix": prefix,
        "sslmode": "disable",
        "connect_timeout_seconds": 5,
    }));
    settings.extend(object(extra));
    module
        .info()
        .server_schema
        .validate(&settings, Mode::Complete)
        .unwrap_or_else(|e| panic!("server settings rejected: {e:?}"))
}

struct Fixture {
    module: PostgresModule,
    cluster: Cluster,
    prefix: String,
}

impl Fixture {
    async fn new(test: &str) -> Fixture {
        Fixture {
            module: PostgresModule::with(&crate::local_options()),
            cluster: Cluster::start().await,
            prefix: prefix(test),
        }
    }

    fn role(&self, username: &str) -> String {
        format!("{}{username}", self.prefix)
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
            .validate(&object(json!({"connection_limit": 3})), Mode::Complete)
            .unwrap();
        ActionRequest {
            action,
            idempotency_key: format!("job-{service_id}"),
            server: ServerContext {
                id: 5,
                name: "pg-1".into(),
                settings: server_settings(&self.module, &self.cluster, &self.prefix, server_extra),
            },
            product: ProductContext {
                id: 2,
                name: "db-small".into(),
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
                name: "Dana Example".into(),
                email: "dana@example.com".into(),
                custom_fields: Default::default(),
            }),
            params: Settings::new(),
        }
    }

    async fn call(&self, req: &ActionRequest) -> Result<ActionReply, ModuleError> {
        bounded(self.module.call(req)).await
    }

    async fn ok(&self, req: &ActionRequest) -> ActionReply {
        self.call(req)
            .await
            .unwrap_or_else(|e| panic!("{} failed: {e}", req.action))
    }

    async fn create(&self, service_id: i64, username: &str) -> ActionReply {
        self.ok(&self.request(Action::Create, service_id, username))
            .await
    }

    async fn lookup(&self, username: &str) -> Option<RemoteAccount> {
        self.ok(&self.request(Action::Lookup, 1, username))
            .await
            .account
    }

    async fn page(&self, action: Action, cursor: Option<&str>, limit: i64) -> ActionReply {
        let mut req = self.request(action, 0, "x");
        req.service = None;
        req.params.insert("limit".into(), json!(limit));
        if let Some(c) = cursor {
            req.params.insert("cursor".into(), json!(c));
        }
        self.ok(&req).await
    }

    /// Every account name, following `next` from the first page.
    async fn all_accounts(&self, limit: i64) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let page = self
                .page(Action::ListAccounts, cursor.as_deref(), limit)
                .await;
            assert!(page.accounts.len() as i64 <= limit);
            names.extend(page.accounts.iter().map(|a| a.username.clone()));
            match page.next {
                Some(n) => cursor = Some(n),
                None => return names,
            }
        }
        panic!("list_accounts never ended");
    }

    async fn role_row(&self, role: &str) -> Option<(bool, i32)> {
        let mut admin = self.cluster.admin().await;
        let row = sqlx::query("SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut admin)
            .await
            .unwrap();
        row.map(|r| (r.get(0), r.get(1)))
    }

    async fn database_owner(&self, name: &str) -> Option<String> {
        let mut admin = self.cluster.admin().await;
        sqlx::query_scalar(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        )
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .unwrap()
    }

    async fn admin_exec(&self, sql: &str) {
        let mut admin = self.cluster.admin().await;
        sqlx::raw_sql(sql).execute(&mut admin).await.unwrap();
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
    for secret in [ADMIN_PASSWORD, PASSWORD, NEW_PASSWORD, "wrong-Adm1n-pass"] {
        assert!(!text.contains(secret), "a secret leaked into: {text}");
    }
}

async fn still_works(conn: &mut PgConnection) -> bool {
    bounded(sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(conn))
        .await
        .is_ok()
}

// ------------------------------------------------------------------ lifecycle

#[test]
fn the_registry_offers_the_module_with_checked_settings() {
    let registry = provisio_modules::Registry::builtin();
    let info = registry.info("postgres").expect("postgres is built in");
    let settings = info
        .server_schema
        .validate(
            &object(json!({"host": "db.example.com", "admin_password": "x", "prefix": "h1_"})),
            Mode::Complete,
        )
        .unwrap();
    assert_eq!(settings["port"], 5432);
    assert_eq!(settings["admin_user"], "postgres");
    assert_eq!(settings["admin_database"], "postgres");
    assert_eq!(settings["sslmode"], "prefer");
    let errors = info
        .server_schema
        .validate(
            &object(json!({"host": "db; drop", "prefix": "H1-", "sslmode": "maybe"})),
            Mode::Complete,
        )
        .unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["host", "prefix", "sslmode"]);
    assert!(info.server_schema.secret_fields().eq(["admin_password"]));
    let product = info
        .product_schema
        .validate(&Settings::new(), Mode::Complete)
        .unwrap();
    assert_eq!(product["connection_limit"], 10);
}

#[tokio::test]
async fn each_lifecycle_step_is_proven_by_logging_in() {
    let f = Fixture::new("life").await;
    let role = f.role("dana");

    // Create: login works with the service's password, into a database the role owns.
    let reply = f.create(11, "dana").await;
    assert_eq!(
        Value::Object(reply.outputs),
        json!({"role": role, "database": role})
    );
    let mut session = f
        .cluster
        .login(&role, PASSWORD)
        .await
        .expect("login after create");
    sqlx::raw_sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .execute(&mut session)
        .await
        .expect("the owner can create tables");
    assert_eq!(f.role_row(&role).await, Some((true, 3)));
    assert_eq!(
        f.database_owner(&role).await.as_deref(),
        Some(role.as_str())
    );
    assert!(
        f.cluster.login(&role, "not-the-password").await.is_err(),
        "a wrong password is refused"
    );
    // Other roles may not connect to the service's database.
    f.create(12, "erin").await;
    let erin = f.role("erin");
    let other = f.cluster.options(&erin, PASSWORD, &role).connect().await;
    assert!(other.is_err(), "another customer reached the database");
    assert_eq!(
        f.lookup("dana").await,
        Some(RemoteAccount {
            username: "dana".into(),
            status: Some("active".into()),
            package: Some("3".into()),
        })
    );

    // NOLOGIN alone (a suspend that stopped half-way) leaves the open session working, and
    // lookup does not call that suspended.
    f.admin_exec(&format!("ALTER ROLE \"{role}\" NOLOGIN"))
        .await;
    assert!(still_works(&mut session).await);
    assert_eq!(
        f.lookup("dana").await.unwrap().status.as_deref(),
        Some("suspending")
    );

    // Suspend: the open session is cut and new logins are refused.
    f.ok(&f.request(Action::Suspend, 11, "dana")).await;
    assert!(
        !still_works(&mut session).await,
        "the open session survived suspend"
    );
    let refused = f.cluster.login(&role, PASSWORD).await.unwrap_err();
    assert!(
        refused.to_string().contains("not permitted to log in"),
        "{refused}"
    );
    assert_eq!(
        f.lookup("dana").await.unwrap().status.as_deref(),
        Some("suspended")
    );
    // The other customer was left alone.
    assert!(f.cluster.login(&erin, PASSWORD).await.is_ok());

    // Unsuspend: login works again, the data is still there.
    f.ok(&f.request(Action::Unsuspend, 11, "dana")).await;
    let mut session = f
        .cluster
        .login(&role, PASSWORD)
        .await
        .expect("login after unsuspend");
    let x: i32 = sqlx::query_scalar("SELECT x FROM t")
        .fetch_one(&mut session)
        .await
        .unwrap();
    assert_eq!(x, 1);
    assert_eq!(
        f.lookup("dana").await.unwrap().status.as_deref(),
        Some("active")
    );

    // Change password: the new one works, the old one no longer does.
    let mut req = f.request(Action::ChangePassword, 11, "dana");
    req.params
        .insert("new_password".into(), json!(NEW_PASSWORD));
    f.ok(&req).await;
    assert!(
        f.cluster.login(&role, NEW_PASSWORD).await.is_ok(),
        "new password refused"
    );
    assert!(
        f.cluster.login(&role, PASSWORD).await.is_err(),
        "old password still works"
    );

    // Change package: the connection limit follows the new product.
    let mut req = f.request(Action::ChangePackage, 11, "dana");
    req.params
        .insert("new_product".into(), json!({"connection_limit": 1}));
    req.params
        .insert("new_product_name".into(), json!("db-tiny"));
    f.ok(&req).await;
    assert_eq!(f.role_row(&role).await, Some((true, 1)));
    assert_eq!(
        f.lookup("dana").await.unwrap().package.as_deref(),
        Some("1")
    );
    // The limit is enforced: `session` is the one allowed connection.
    let second = f.cluster.login(&role, NEW_PASSWORD).await.unwrap_err();
    assert!(
        second.to_string().contains("too many connections"),
        "{second}"
    );

    // Terminate (with a session open): role and database are gone.
    assert!(still_works(&mut session).await);
    f.ok(&f.request(Action::Terminate, 11, "dana")).await;
    assert!(!still_works(&mut session).await);
    assert_eq!(f.role_row(&role).await, None);
    assert_eq!(f.database_owner(&role).await, None);
    assert_eq!(f.lookup("dana").await, None);
    // Again: already gone counts as done.
    f.ok(&f.request(Action::Terminate, 11, "dana")).await;
    // The other customer was left alone.
    assert!(f.role_row(&erin).await.is_some());
}

#[tokio::test]
async fn a_repeated_create_is_ours_but_a_foreign_role_is_a_conflict() {
    let f = Fixture::new("again").await;
    f.create(21, "fay").await;
    // A retry of the same job after an unknown outcome: success, same state.
    let reply = f.create(21, "fay").await;
    assert_eq!(reply.outputs.get("role"), Some(&json!(f.role("fay"))));
    assert!(f.cluster.login(&f.role("fay"), PASSWORD).await.is_ok());

    // A create that stopped after the database, before the role: the retry finishes it.
    let fay = f.role("fay");
    f.admin_exec(&format!("ALTER DATABASE \"{fay}\" OWNER TO postgres"))
        .await;
    f.admin_exec(&format!("DROP ROLE \"{fay}\"")).await;
    assert_eq!(f.lookup("fay").await, None, "no role, no account");
    f.create(21, "fay").await;
    assert_eq!(f.database_owner(&fay).await.as_deref(), Some(fay.as_str()));
    assert!(f.cluster.login(&fay, PASSWORD).await.is_ok());

    // Another service with the same name on this server is not this one.
    let e = assert_kind(
        f.call(&f.request(Action::Create, 22, "fay")).await,
        ErrorKind::Permanent,
    );
    assert!(e.contains("already exists"), "{e}");

    // A role made by hand with the prefix is not ours either, and is left untouched.
    f.admin_exec(&format!(
        "CREATE ROLE \"{}\" LOGIN PASSWORD 'by-hand-pw'",
        f.role("gus")
    ))
    .await;
    let e = assert_kind(
        f.call(&f.request(Action::Create, 23, "gus")).await,
        ErrorKind::Permanent,
    );
    assert!(e.contains("not created for this service"), "{e}");
    assert!(f
        .cluster
        .options(&f.role("gus"), "by-hand-pw", "postgres")
        .connect()
        .await
        .is_ok());
    assert_eq!(f.database_owner(&f.role("gus")).await, None);

    // A database of that name owned by someone else stops the create too.
    f.admin_exec(&format!("CREATE DATABASE \"{}\"", f.role("hal")))
        .await;
    let e = assert_kind(
        f.call(&f.request(Action::Create, 24, "hal")).await,
        ErrorKind::Permanent,
    );
    assert!(e.contains("not created for this service"), "{e}");
    assert_eq!(f.role_row(&f.role("hal")).await, None);
}

#[tokio::test]
async fn lookup_answers_the_outputs_of_create() {
    let f = Fixture::new("outs").await;
    let absent = f.ok(&f.request(Action::Lookup, 31, "ivy")).await;
    assert_eq!(absent.account, None);
    assert!(absent.outputs.is_empty(), "{:?}", absent.outputs);

    let created = f.create(31, "ivy").await;
    assert!(!created.outputs.is_empty());
    let found = f.ok(&f.request(Action::Lookup, 31, "ivy")).await;
    assert!(found.account.is_some());
    assert_eq!(found.outputs, created.outputs);

    // A suspended account is still the one create made.
    f.ok(&f.request(Action::Suspend, 31, "ivy")).await;
    let found = f.ok(&f.request(Action::Lookup, 31, "ivy")).await;
    assert_eq!(found.account.unwrap().status.as_deref(), Some("suspended"));
    assert_eq!(found.outputs, created.outputs);
}

// ------------------------------------------------------------------ listing and usage

#[tokio::test]
async fn list_accounts_pages_by_name_and_sees_changes_made_on_the_remote() {
    let f = Fixture::new("list").await;
    for (id, name) in [
        (31, "ivy"),
        (32, "abe"),
        (33, "moe"),
        (34, "kit"),
        (35, "cal"),
    ] {
        f.create(id, name).await;
    }
    f.ok(&f.request(Action::Suspend, 33, "moe")).await;
    // Roles outside the prefix are not accounts of this server.
    f.admin_exec("CREATE ROLE pv_other_zed LOGIN; CREATE ROLE pv_lis_abe LOGIN")
        .await;

    let first = f.page(Action::ListAccounts, None, 2).await;
    assert_eq!(
        first.accounts,
        vec![
            RemoteAccount {
                username: "abe".into(),
                status: Some("active".into()),
                package: Some("3".into())
            },
            RemoteAccount {
                username: "cal".into(),
                status: Some("active".into()),
                package: Some("3".into())
            },
        ]
    );
    assert_eq!(first.next.as_deref(), Some("cal"));
    let last = f.page(Action::ListAccounts, Some("kit"), 2).await;
    assert_eq!(last.accounts.len(), 1);
    assert_eq!(last.accounts[0].username, "moe");
    assert_eq!(last.accounts[0].status.as_deref(), Some("suspended"));
    assert_eq!(last.next, None);
    assert_eq!(f.all_accounts(2).await, ["abe", "cal", "ivy", "kit", "moe"]);

    // What the audit relies on: an account made on the remote directly appears, one
    // dropped there disappears.
    f.admin_exec(&format!(
        "CREATE ROLE \"{}\" LOGIN CONNECTION LIMIT -1",
        f.role("jon")
    ))
    .await;
    // DROP DATABASE cannot share a transaction with anything.
    f.admin_exec(&format!("DROP DATABASE \"{}\"", f.role("kit")))
        .await;
    f.admin_exec(&format!("DROP ROLE \"{}\"", f.role("kit")))
        .await;
    assert_eq!(f.all_accounts(2).await, ["abe", "cal", "ivy", "jon", "moe"]);
    assert_eq!(
        f.all_accounts(100).await,
        ["abe", "cal", "ivy", "jon", "moe"]
    );
    let jon = f.page(Action::ListAccounts, Some("ivy"), 1).await;
    assert_eq!(jon.accounts[0].package.as_deref(), Some("unlimited"));
}

#[tokio::test]
async fn usage_reports_database_sizes_and_sessions_page_by_page() {
    let f = Fixture::new("use").await;
    f.create(41, "ann").await;
    f.create(42, "ben").await;
    f.create(43, "cy").await;
    let mut ann = f.cluster.login(&f.role("ann"), PASSWORD).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE big AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 20000) g",
    )
    .execute(&mut ann)
    .await
    .unwrap();

    let first = f.page(Action::Usage, None, 2).await;
    assert_eq!(first.next.as_deref(), Some("ben"));
    let names: Vec<_> = first.usage.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["ann", "ben"]);
    let second = f.page(Action::Usage, first.next.as_deref(), 2).await;
    assert_eq!(second.usage.len(), 1);
    assert_eq!(second.usage[0].username, "cy");
    assert_eq!(second.next, None);

    let mut admin = f.cluster.admin().await;
    for report in first.usage.iter().chain(&second.usage) {
        let role = f.role(&report.username);
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size($1::text::name)")
            .bind(&role)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        let disk = &report.metrics["disk"];
        assert_eq!(disk.used, size as f64, "{}", report.username);
        assert_eq!(disk.unit.as_deref(), Some("bytes"));
        let connections = &report.metrics["connections"];
        assert_eq!(connections.limit, Some(3.0));
        let open = if report.username == "ann" { 1.0 } else { 0.0 };
        assert_eq!(connections.used, open, "{}", report.username);
    }
    let ann_disk = first.usage[0].metrics["disk"].used;
    let ben_disk = first.usage[1].metrics["disk"].used;
    assert!(
        ann_disk > ben_disk + 5_000_000.0,
        "ann's 10 MB table does not show: {ann_disk} vs {ben_disk}"
    );
}

// ------------------------------------------------------------------ failures

#[tokio::test]
async fn failures_are_classified_and_never_show_a_secret() {
    let f = Fixture::new("err").await;

    // test_connection succeeds with good settings and reports the version.
    let mut req = f.request(Action::TestConnection, 0, "x");
    req.service = None;
    let reply = f.ok(&req).await;
    assert!(reply.outputs["server_version"]
        .as_str()
        .unwrap()
        .starts_with("15"));

    // A wrong admin password: permanent, and neither password in the message.
    let wrong = json!({"admin_password": "wrong-Adm1n-pass"});
    for action in [Action::TestConnection, Action::Create, Action::ListAccounts] {
        let req = f.request_with(action.clone(), 51, "ida", wrong.clone());
        let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
        assert!(
            e.contains("password authentication failed"),
            "{action}: {e}"
        );
        assert_no_secrets(&e);
    }

    // Nobody listening: transient, nothing was done.
    let closed = free_port();
    let req = f.request_with(Action::Create, 51, "ida", json!({"port": closed}));
    let e = assert_kind(f.call(&req).await, ErrorKind::Transient);
    assert!(e.contains("could not connect"), "{e}");
    assert_no_secrets(&e);

    // An admin without the rights to create roles.
    f.admin_exec("CREATE ROLE weak LOGIN PASSWORD 'weak-Pw-1234'")
        .await;
    let mut req = f.request_with(
        Action::TestConnection,
        0,
        "x",
        json!({"admin_user": "weak", "admin_password": "weak-Pw-1234"}),
    );
    req.service = None;
    let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
    assert!(e.contains("CREATEROLE"), "{e}");
    let req = f.request_with(
        Action::Create,
        52,
        "ida",
        json!({"admin_user": "weak", "admin_password": "weak-Pw-1234"}),
    );
    let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
    assert!(e.contains("permission denied"), "{e}");
    assert_no_secrets(&e);

    // Usernames that cannot be a role are refused before anything is sent.
    for bad in ["Ida", "i-da", "i\"da", "a.b@c"] {
        let e = assert_kind(
            f.call(&f.request(Action::Create, 53, bad)).await,
            ErrorKind::Permanent,
        );
        assert!(e.contains("cannot be a PostgreSQL role"), "{bad}: {e}");
    }

    // Settings made by hand, past the schema: a prefix that could break out of a name.
    let mut req = f.request(Action::Create, 53, "ida");
    req.server
        .settings
        .insert("prefix".into(), json!("x\"; DROP ROLE postgres; --"));
    let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
    assert!(e.contains("prefix"), "{e}");

    // Acting on an account that does not exist.
    for action in [Action::Suspend, Action::Unsuspend, Action::ChangePassword] {
        let mut req = f.request(action.clone(), 54, "nobody");
        req.params
            .insert("new_password".into(), json!(NEW_PASSWORD));
        let e = assert_kind(f.call(&req).await, ErrorKind::Permanent);
        assert!(e.contains("does not exist"), "{action}: {e}");
        assert_no_secrets(&e);
    }
}

/// Finds the module's backend once it waits for a lock.
async fn wait_for_blocked_module(f: &Fixture) -> i32 {
    let mut admin = f.cluster.admin().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = 'provisio' AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&mut admin)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(Instant::now() < deadline, "the module never blocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_session_lost_mid_statement_is_unknown_and_a_cancelled_one_transient() {
    let f = Fixture::new("lost").await;
    f.create(61, "joy").await;
    let role = f.role("joy");
    // An uncommitted change to the role holds its row: the module's ALTER ROLE waits.
    let mut blocker = f.cluster.admin().await;
    sqlx::raw_sql(&format!("BEGIN; ALTER ROLE \"{role}\" CONNECTION LIMIT 7"))
        .execute(&mut blocker)
        .await
        .unwrap();

    let req = f.request(Action::Suspend, 61, "joy");
    let call = f.call(&req);
    let kill = async {
        let pid = wait_for_blocked_module(&f).await;
        let mut admin = f.cluster.admin().await;
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut admin)
            .await
            .unwrap();
    };
    let (result, ()) = tokio::join!(call, kill);
    let e = assert_kind(result, ErrorKind::Unknown);
    assert!(e.contains("may have been applied"), "{e}");
    assert_no_secrets(&e);

    // The server cancels a statement that waits beyond the statement timeout: rolled back,
    // so safely retried.
    let req = f.request_with(
        Action::Suspend,
        61,
        "joy",
        json!({"statement_timeout_seconds": 1}),
    );
    let started = Instant::now();
    let e = assert_kind(f.call(&req).await, ErrorKind::Transient);
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(e.contains("disabling login"), "{e}");

    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    f.ok(&f.request(Action::Suspend, 61, "joy")).await;
    assert_eq!(f.role_row(&role).await, Some((false, 3)));
}

// ------------------------------------------------------------------ the outbound guard

/// By default the module refuses a database on loopback (by address or by a name that
/// resolves to it), at the metadata address or at a private address, before connecting,
/// with a permanent error naming the address and the setting; allowed, the same cluster
/// is reached by address and by name.
#[tokio::test]
async fn the_outbound_guard_refuses_special_addresses_until_allowed() {
    let f = Fixture::new("guard").await;
    let refused = PostgresModule::new();
    for (host, ip, allow) in [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1/32"),
        ("localhost", "127.0.0.1 (localhost)", "127.0.0.1/32"),
        ("[::1]", "::1", "::1/128"),
        ("169.254.169.254", "169.254.169.254", "169.254.169.254/32"),
        ("10.0.0.1", "10.0.0.1", "10.0.0.1/32"),
    ] {
        let req = f.request_with(Action::Create, 70, "guarded", json!({"host": host}));
        let e = bounded(refused.call(&req)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{host}: {e}");
        assert_eq!(
            e.message,
            format!("could not connect to PostgreSQL: refused to connect to {ip}: {}; allow it with [outbound] allow = [\"{allow}\"]",
                provisio_modules::outbound::special_range(ip.split(' ').next().unwrap().parse().unwrap()).unwrap()),
            "{host}"
        );
    }
    for host in ["127.0.0.1", "localhost"] {
        let req = f.request_with(Action::TestConnection, 71, "guarded", json!({"host": host}));
        f.ok(&req).await;
    }
}
