//! Tests of the `radius` module against a real FreeRADIUS: each test writes a FreeRADIUS
//! configuration into a temporary directory (SQLite database from the packaged schema, an
//! auth and an accounting listener on free loopback ports), runs `freeradius -f` on it and
//! asks it with `radclient` whether the module's writes authenticate as they should. The
//! PostgreSQL tests run the module on a fresh database of the cluster `scripts/test` starts.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use provisio_core::module::{
    Action, ActionReply, ActionRequest, ErrorKind, Module, ModuleError, ProductContext,
    RemoteAccount, SchemaScope, ServerContext, ServiceContext,
};
use provisio_core::settings::{Mode, Settings};
use provisio_modules::radius::RadiusModule;
use serde_json::{json, Value};
use sqlx::{Connection, Row};

const FREERADIUS: &str = "/usr/sbin/freeradius";
const RADCLIENT: &str = "/usr/bin/radclient";
const PG_DRIVER: &str = "/usr/lib/freeradius/rlm_sql_postgresql.so";
const SCHEMA_DIR: &str = "/etc/freeradius/3.0/mods-config/sql/main";
const RADIUS_SECRET: &str = "nas-Secret-4411";
const PASSWORD: &str = "svc-Pa55word-7c1e";
const NEW_PASSWORD: &str = "new-Pa55word-e93d";

fn require_tools() {
    for tool in [FREERADIUS, RADCLIENT] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run scripts/test, which installs freeradius and freeradius-utils"
        );
    }
    assert!(
        Path::new(PG_DRIVER).exists(),
        "{PG_DRIVER} is missing: run scripts/test, which installs freeradius-postgresql"
    );
    for dialect in ["sqlite", "postgresql"] {
        let schema = format!("{SCHEMA_DIR}/{dialect}/schema.sql");
        assert!(
            Path::new(&schema).exists(),
            "{schema} is missing: run scripts/test, which installs freeradius"
        );
    }
}

// ------------------------------------------------------------------ databases

/// A SQLite RADIUS database created from FreeRADIUS's own schema. WAL lets FreeRADIUS read
/// while the module writes; both sides wait on the write lock (busy timeouts).
async fn sqlite_database(dir: &Path) -> PathBuf {
    let path = dir.join("radius.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("create the SQLite database");
    let schema = std::fs::read_to_string(format!("{SCHEMA_DIR}/sqlite/schema.sql")).unwrap();
    sqlx::raw_sql(&schema)
        .execute(&mut conn)
        .await
        .expect("load the FreeRADIUS SQLite schema");
    conn.close().await.unwrap();
    path
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A fresh PostgreSQL database with FreeRADIUS's schema; the URL to it.
async fn pg_database() -> String {
    require_tools();
    let admin = std::env::var("PROVISIO_TEST_PG_URL").expect(
        "PROVISIO_TEST_PG_URL is not set: run scripts/test, which starts a throwaway PostgreSQL",
    );
    let name = format!("radius_{}", rand_suffix());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to PROVISIO_TEST_PG_URL");
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("PROVISIO_TEST_PG_URL has no database part"),
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let schema = std::fs::read_to_string(format!("{SCHEMA_DIR}/postgresql/schema.sql")).unwrap();
    sqlx::raw_sql(&schema)
        .execute(&mut conn)
        .await
        .expect("load the FreeRADIUS PostgreSQL schema");
    conn.close().await.unwrap();
    url
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one statement (or several) on the RADIUS database directly, as an administrator
/// or FreeRADIUS would.
async fn exec(url: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

/// Rows of `SELECT` as text columns joined by `|`.
async fn rows(url: &str, query: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let out = sqlx::query(query)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    r.try_get::<String, _>(i)
                        .or_else(|_| r.try_get::<i64, _>(i).map(|n| n.to_string()))
                        .or_else(|_| r.try_get::<i32, _>(i).map(|n| n.to_string()))
                        .unwrap_or_else(|_| "?".into())
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    conn.close().await.unwrap();
    out
}

// ------------------------------------------------------------------ FreeRADIUS

/// A FreeRADIUS server in the foreground on its own configuration; killed on drop.
struct FreeRadius {
    _dir: tempfile::TempDir,
    db_url: String,
    auth_port: u16,
    acct_port: u16,
    child: Child,
    log: PathBuf,
}

impl Drop for FreeRadius {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// The `sql` module's connection lines for the database at `url` (the module's URL).
fn sql_connection(url: &str) -> String {
    if let Some(path) = url.strip_prefix("sqlite://") {
        format!(
            "dialect = \"sqlite\"\n    driver = \"rlm_sql_sqlite\"\n    sqlite {{\n      filename = \"{path}\"\n      busy_timeout = 5000\n    }}\n    radius_db = \"radius\""
        )
    } else {
        let u = url::Url::parse(url).expect("a postgres:// URL");
        format!(
            "dialect = \"postgresql\"\n    driver = \"rlm_sql_postgresql\"\n    server = \"{}\"\n    port = {}\n    login = \"{}\"\n    password = \"{}\"\n    radius_db = \"{}\"",
            u.host_str().unwrap(),
            u.port().unwrap_or(5432),
            u.username(),
            u.password().unwrap_or(""),
            u.path().trim_start_matches('/'),
        )
    }
}

fn radiusd_conf(dir: &Path, db_url: &str, auth_port: u16, acct_port: u16) -> String {
    let d = dir.display();
    let connection = sql_connection(db_url);
    // A minimal radiusd.conf: dictionaries and SQL queries from the packages, everything
    // else here. `expr` provides the %{tolower:} and %{md5:} expansions the queries and
    // the accounting key need. No user/group: it runs as whoever runs the tests.
    format!(
        r#"prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {d}/log
raddbdir = {d}
radacctdir = {d}/acct
confdir = {d}
run_dir = {d}/run
libdir = /usr/lib/freeradius
dictdir = /usr/share/freeradius
modconfdir = /etc/freeradius/3.0/mods-config
pidfile = {d}/run/radiusd.pid
max_request_time = 10
cleanup_delay = 0
max_requests = 1024
hostname_lookups = no
log {{
  destination = stderr
  colourise = no
}}
security {{
  allow_core_dumps = no
  max_attributes = 200
  reject_delay = 0
  status_server = yes
}}
thread pool {{
  start_servers = 2
  max_servers = 4
  min_spare_servers = 1
  max_spare_servers = 4
}}
client localhost {{
  ipaddr = 127.0.0.1
  secret = {RADIUS_SECRET}
}}
modules {{
  expr {{
  }}
  pap {{
    normalise = yes
  }}
  sql {{
    {connection}
    acct_table1 = "radacct"
    acct_table2 = "radacct"
    postauth_table = "radpostauth"
    authcheck_table = "radcheck"
    groupcheck_table = "radgroupcheck"
    authreply_table = "radreply"
    groupreply_table = "radgroupreply"
    usergroup_table = "radusergroup"
    delete_stale_sessions = yes
    read_clients = no
    client_table = "nas"
    group_attribute = "SQL-Group"
    pool {{
      start = 1
      min = 1
      max = 4
      spare = 1
      uses = 0
      retry_delay = 1
      lifetime = 0
      idle_timeout = 0
    }}
    $INCLUDE ${{modconfdir}}/${{.:name}}/main/${{dialect}}/queries.conf
  }}
}}
server default {{
  listen {{
    type = auth
    ipaddr = 127.0.0.1
    port = {auth_port}
  }}
  listen {{
    type = acct
    ipaddr = 127.0.0.1
    port = {acct_port}
  }}
  authorize {{
    sql
    pap
  }}
  authenticate {{
    Auth-Type PAP {{
      pap
    }}
  }}
  preacct {{
    update request {{
      Acct-Unique-Session-Id := "%{{md5:%{{User-Name}},%{{Acct-Session-Id}},%{{NAS-IP-Address}},%{{NAS-Port}}}}"
    }}
  }}
  accounting {{
    sql
  }}
}}
"#
    )
}

impl FreeRadius {
    /// FreeRADIUS on a new SQLite database.
    async fn start() -> FreeRadius {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&sqlite_database(dir.path()).await);
        Self::start_on(dir, url).await
    }

    /// FreeRADIUS on the database at `db_url` (sqlite:// or postgres://), configured in `dir`.
    async fn start_on(dir: tempfile::TempDir, db_url: String) -> FreeRadius {
        require_tools();
        for sub in ["log", "run", "acct"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // Ports are picked free and then released, so another process may take one in
        // between: try a few times.
        let mut last_log = String::new();
        for _ in 0..3 {
            let (auth_port, acct_port) = (free_udp_port(), free_udp_port());
            std::fs::write(
                dir.path().join("radiusd.conf"),
                radiusd_conf(dir.path(), &db_url, auth_port, acct_port),
            )
            .unwrap();
            let log = dir.path().join(format!("log/out-{auth_port}.txt"));
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(FREERADIUS)
                .args(["-f", "-l", "stdout", "-n", "radiusd", "-d"])
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("start freeradius");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Ready to process requests") {
                    return FreeRadius {
                        _dir: dir,
                        db_url,
                        auth_port,
                        acct_port,
                        child,
                        log,
                    };
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = text;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("freeradius did not start:\n{last_log}");
    }

    /// Sends an Access-Request with `radclient` and returns its answer.
    async fn auth(&self, user: &str, password: &str) -> Answer {
        let input = format!("User-Name = \"{user}\", User-Password = \"{password}\"\n");
        self.radclient("auth", self.auth_port, &input).await
    }

    /// Sends an Accounting-Request made of `attributes` (`Name = value` pairs).
    async fn acct(&self, attributes: &str) {
        let answer = self
            .radclient("acct", self.acct_port, &format!("{attributes}\n"))
            .await;
        assert_eq!(answer.code, "Accounting-Response", "{answer:?}");
    }

    async fn radclient(&self, kind: &str, port: u16, input: &str) -> Answer {
        let mut cmd = Command::new(RADCLIENT);
        cmd.args(["-x", "-t", "3", "-r", "2"])
            .arg(format!("127.0.0.1:{port}"))
            .args([kind, RADIUS_SECRET])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let input = input.to_string();
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("run radclient");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            Answer::parse(&text).unwrap_or_else(|| {
                panic!(
                    "no answer from FreeRADIUS:\n{text}\n--- server log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
        })
        .await
        .unwrap()
    }
}

/// What FreeRADIUS answered: the packet type and the reply attributes as `Name = value`.
#[derive(Debug)]
struct Answer {
    code: String,
    attributes: Vec<String>,
}

impl Answer {
    fn parse(text: &str) -> Option<Answer> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with("Received "));
        let code = lines.next()?.split_whitespace().nth(1)?.to_string();
        let attributes = lines
            .take_while(|l| l.starts_with('\t') || l.starts_with("  "))
            .map(|l| l.trim().to_string())
            .collect();
        Some(Answer { code, attributes })
    }

    fn accepted(&self) -> bool {
        self.code == "Access-Accept"
    }

    fn has(&self, attribute: &str) -> bool {
        self.attributes.iter().any(|a| a == attribute)
    }
}

// ------------------------------------------------------------------ module calls

fn object(v: Value) -> Settings {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

struct Fixture {
    module: RadiusModule,
    server: Settings,
    product: Settings,
}

impl Fixture {
    fn new(database_url: &str, server: Value, product: Value) -> Fixture {
        let module = RadiusModule::with(&crate::local_options());
        let mut server = object(server);
        server.insert("database_url".into(), database_url.into());
        let server = validated(&module, SchemaScope::Server, server);
        let product = validated(&module, SchemaScope::Product, object(product));
        Fixture {
            module,
            server,
            product,
        }
    }

    fn request(&self, action: Action, user: &str, password: &str, params: Value) -> ActionRequest {
        ActionRequest {
            action,
            idempotency_key: format!("job-{user}"),
            server: ServerContext {
                id: 1,
                name: "radius-1".into(),
                settings: self.server.clone(),
            },
            product: ProductContext {
                id: 1,
                name: "basic".into(),
                settings: self.product.clone(),
            },
            service: Some(ServiceContext {
                id: 1,
                username: user.into(),
                password: password.to_string().into(),
                status: "active".into(),
                settings: Settings::new(),
                outputs: Settings::new(),
            }),
            client: None,
            params: object(params),
        }
    }

    async fn call(
        &self,
        action: Action,
        user: &str,
        params: Value,
    ) -> Result<ActionReply, ModuleError> {
        let request = self.request(action, user, PASSWORD, params);
        tokio::time::timeout(Duration::from_secs(30), self.module.call(&request))
            .await
            .expect("the module answers within 30 s")
    }

    async fn ok(&self, action: Action, user: &str, params: Value) -> ActionReply {
        let what = action.to_string();
        self.call(action, user, params)
            .await
            .unwrap_or_else(|e| panic!("{what} {user}: {e}"))
    }

    async fn lookup(&self, user: &str) -> Option<RemoteAccount> {
        self.ok(Action::Lookup, user, json!({})).await.account
    }

    /// Every account, page by page.
    async fn list_all(&self, limit: i64) -> Vec<RemoteAccount> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let params = match &cursor {
                Some(c) => json!({"limit": limit, "cursor": c}),
                None => json!({"limit": limit}),
            };
            let reply = self.ok(Action::ListAccounts, "", params).await;
            assert!(reply.accounts.len() as i64 <= limit);
            out.extend(reply.accounts);
            match reply.next {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
        panic!("list_accounts never ended");
    }
}

fn validated(module: &RadiusModule, scope: SchemaScope, settings: Settings) -> Settings {
    let settings = module
        .info()
        .schema(scope)
        .validate(&settings, Mode::Complete)
        .unwrap_or_else(|e| panic!("{} settings rejected: {e:?}", scope.as_str()));
    let extra = module.check_settings(scope, &settings);
    assert!(extra.is_empty(), "check_settings: {extra:?}");
    settings
}

fn new_product(settings: Value) -> Value {
    let module = RadiusModule::with(&crate::local_options());
    Value::Object(validated(&module, SchemaScope::Product, object(settings)))
}

fn basic_product() -> Value {
    json!({"group": "basic", "reply_attributes": {"Reply-Message": "basic plan", "Session-Timeout": 3600}})
}

fn account(username: &str, status: &str, package: &str) -> RemoteAccount {
    RemoteAccount {
        username: username.into(),
        status: Some(status.into()),
        package: Some(package.into()),
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_lifecycle_authenticates_through_freeradius() {
    let radius = FreeRadius::start().await;
    let f = Fixture::new(&radius.db_url, json!({}), basic_product());
    let user = "alice@isp.example";

    assert_eq!(f.lookup(user).await, None, "no account before create");
    f.ok(Action::Create, user, json!({})).await;
    let answer = radius.auth(user, PASSWORD).await;
    assert!(answer.accepted(), "accepted after create: {answer:?}");
    assert!(answer.has("Reply-Message = \"basic plan\""), "{answer:?}");
    assert!(answer.has("Session-Timeout = 3600"), "{answer:?}");
    assert!(!radius.auth(user, "wrong-password").await.accepted());
    assert_eq!(f.lookup(user).await, Some(account(user, "active", "basic")));

    f.ok(Action::Suspend, user, json!({})).await;
    assert_eq!(radius.auth(user, PASSWORD).await.code, "Access-Reject");
    assert_eq!(
        f.lookup(user).await,
        Some(account(user, "suspended", "basic"))
    );
    // A retried suspend changes nothing.
    f.ok(Action::Suspend, user, json!({})).await;
    assert_eq!(
        rows(&radius.db_url, "SELECT groupname, priority FROM radusergroup WHERE username = 'alice@isp.example' ORDER BY priority").await,
        vec!["disabled|0", "basic|1"]
    );
    assert_eq!(
        rows(
            &radius.db_url,
            "SELECT attribute, op, value FROM radgroupcheck WHERE groupname = 'disabled'"
        )
        .await,
        vec!["Auth-Type|:=|Reject"]
    );

    f.ok(Action::Unsuspend, user, json!({})).await;
    assert!(
        radius.auth(user, PASSWORD).await.accepted(),
        "accepted after unsuspend"
    );
    assert_eq!(f.lookup(user).await, Some(account(user, "active", "basic")));

    f.ok(
        Action::ChangePassword,
        user,
        json!({"new_password": NEW_PASSWORD}),
    )
    .await;
    assert!(
        radius.auth(user, NEW_PASSWORD).await.accepted(),
        "new password"
    );
    assert!(
        !radius.auth(user, PASSWORD).await.accepted(),
        "old password"
    );
    assert_eq!(
        rows(
            &radius.db_url,
            "SELECT attribute FROM radcheck WHERE username = 'alice@isp.example'"
        )
        .await,
        vec!["Cleartext-Password"],
        "one password row"
    );

    // A package change while suspended keeps the suspension.
    f.ok(Action::Suspend, user, json!({})).await;
    let pro = new_product(
        json!({"group": "pro", "reply_attributes": {"Reply-Message": "pro plan", "Idle-Timeout": 600}}),
    );
    f.ok(Action::ChangePackage, user, json!({"new_product": pro}))
        .await;
    assert_eq!(
        f.lookup(user).await,
        Some(account(user, "suspended", "pro"))
    );
    assert_eq!(radius.auth(user, NEW_PASSWORD).await.code, "Access-Reject");
    f.ok(Action::Unsuspend, user, json!({})).await;
    let answer = radius.auth(user, NEW_PASSWORD).await;
    assert!(answer.accepted(), "{answer:?}");
    assert!(answer.has("Reply-Message = \"pro plan\""), "{answer:?}");
    assert!(answer.has("Idle-Timeout = 600"), "{answer:?}");
    assert!(!answer.has("Session-Timeout = 3600"), "{answer:?}");

    f.ok(Action::Renew, user, json!({})).await;

    // Accounting history survives terminate.
    radius
        .acct(&format!("User-Name = \"{user}\", Acct-Status-Type = Start, Acct-Session-Id = \"t1\", NAS-IP-Address = 127.0.0.1, NAS-Port = 1"))
        .await;
    f.ok(Action::Terminate, user, json!({})).await;
    assert_eq!(radius.auth(user, NEW_PASSWORD).await.code, "Access-Reject");
    assert_eq!(f.lookup(user).await, None);
    for table in ["radcheck", "radreply", "radusergroup"] {
        assert!(
            rows(
                &radius.db_url,
                &format!("SELECT id FROM {table} WHERE username = 'alice@isp.example'")
            )
            .await
            .is_empty(),
            "{table} is empty after terminate"
        );
    }
    assert_eq!(
        rows(
            &radius.db_url,
            "SELECT acctsessionid FROM radacct WHERE username = 'alice@isp.example'"
        )
        .await,
        vec!["t1"]
    );
    // Terminating what is gone succeeds; the other actions say there is nothing.
    f.ok(Action::Terminate, user, json!({})).await;
    for action in [Action::Suspend, Action::Renew, Action::ChangePassword] {
        let e = f
            .call(action.clone(), user, json!({"new_password": NEW_PASSWORD}))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{action}: {e}");
        assert!(e.message.contains("no such account"), "{action}: {e}");
        assert!(!e.message.contains(NEW_PASSWORD), "{action}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_hashed_passwords_and_check_suspension_work_in_freeradius() {
    let radius = FreeRadius::start().await;
    let f = Fixture::new(
        &radius.db_url,
        json!({"password_attribute": "SSHA2-256-Password", "suspend_method": "check"}),
        basic_product(),
    );
    let user = "bob";
    f.ok(Action::Create, user, json!({})).await;
    let stored = rows(
        &radius.db_url,
        "SELECT attribute, value FROM radcheck WHERE username = 'bob'",
    )
    .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].starts_with("SSHA2-256-Password|"), "{stored:?}");
    assert!(
        !stored[0].contains(PASSWORD),
        "the password is stored hashed"
    );
    assert!(radius.auth(user, PASSWORD).await.accepted());
    assert!(!radius.auth(user, "not-the-password").await.accepted());

    // A retried create (the first one's commit went unanswered) recognises its own hash.
    f.ok(Action::Create, user, json!({})).await;
    assert_eq!(
        rows(
            &radius.db_url,
            "SELECT COUNT(*) FROM radcheck WHERE username = 'bob'"
        )
        .await,
        vec!["1"]
    );
    assert_eq!(
        rows(
            &radius.db_url,
            "SELECT COUNT(*) FROM radusergroup WHERE username = 'bob'"
        )
        .await,
        vec!["1"]
    );

    f.ok(Action::Suspend, user, json!({})).await;
    assert_eq!(
        rows(&radius.db_url, "SELECT attribute, op, value FROM radcheck WHERE username = 'bob' AND attribute = 'Auth-Type'").await,
        vec!["Auth-Type|:=|Reject"]
    );
    assert!(rows(
        &radius.db_url,
        "SELECT id FROM radusergroup WHERE groupname = 'disabled'"
    )
    .await
    .is_empty());
    assert_eq!(radius.auth(user, PASSWORD).await.code, "Access-Reject");
    assert_eq!(
        f.lookup(user).await,
        Some(account(user, "suspended", "basic"))
    );
    f.ok(Action::Unsuspend, user, json!({})).await;
    assert!(radius.auth(user, PASSWORD).await.accepted());

    f.ok(
        Action::ChangePassword,
        user,
        json!({"new_password": NEW_PASSWORD}),
    )
    .await;
    assert!(radius.auth(user, NEW_PASSWORD).await.accepted());
    assert!(!radius.auth(user, PASSWORD).await.accepted());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_usage_sums_accounting_octets_of_the_period() {
    let radius = FreeRadius::start().await;
    let f = Fixture::new(
        &radius.db_url,
        json!({}),
        json!({"group": "capped", "reply_attributes": {"Reply-Message": "capped"}, "data_cap": "100 GB"}),
    );
    f.ok(Action::Create, "carol", json!({})).await;
    f.ok(Action::Create, "dave", json!({})).await;
    let nas = "NAS-IP-Address = 127.0.0.1, NAS-Port = 7";
    // carol: one session over 4 GiB (gigawords), and an interim session still open.
    radius
        .acct(&format!(
            "User-Name = \"carol\", Acct-Status-Type = Start, Acct-Session-Id = \"c1\", {nas}"
        ))
        .await;
    radius.acct(&format!("User-Name = \"carol\", Acct-Status-Type = Stop, Acct-Session-Id = \"c1\", {nas}, Acct-Session-Time = 60, Acct-Input-Octets = 1000, Acct-Output-Octets = 2000, Acct-Input-Gigawords = 1, Acct-Output-Gigawords = 2")).await;
    radius.acct("User-Name = \"carol\", Acct-Status-Type = Start, Acct-Session-Id = \"c2\", NAS-IP-Address = 127.0.0.1, NAS-Port = 8").await;
    radius.acct("User-Name = \"carol\", Acct-Status-Type = Interim-Update, Acct-Session-Id = \"c2\", NAS-IP-Address = 127.0.0.1, NAS-Port = 8, Acct-Session-Time = 30, Acct-Input-Octets = 500, Acct-Output-Octets = 5").await;
    // dave: a session that started in 2020, outside the period.
    radius.acct(&format!("User-Name = \"dave\", Acct-Status-Type = Stop, Acct-Session-Id = \"d0\", {nas}, Event-Timestamp = 1577880000, Acct-Session-Time = 600, Acct-Input-Octets = 777, Acct-Output-Octets = 1")).await;
    // erin: no account (terminated long ago, or never provisioned) but accounting.
    radius.acct(&format!("User-Name = \"erin\", Acct-Status-Type = Stop, Acct-Session-Id = \"e1\", {nas}, Acct-Session-Time = 5, Acct-Input-Octets = 10, Acct-Output-Octets = 20")).await;

    let reply = f.ok(Action::Usage, "", json!({})).await;
    let used = |r: &ActionReply, u: &str| -> (f64, Option<f64>) {
        let report = r
            .usage
            .iter()
            .find(|x| x.username == u)
            .unwrap_or_else(|| panic!("no usage for {u}: {:?}", r.usage));
        let m = &report.metrics["data"];
        assert_eq!(m.unit.as_deref(), Some("bytes"));
        (m.used, m.limit)
    };
    let carol = (1u64 << 32) + 1000 + (2u64 << 32) + 2000 + 500 + 5;
    let cap = 100.0 * 1024.0 * 1024.0 * 1024.0;
    assert_eq!(used(&reply, "carol"), (carol as f64, Some(cap)));
    assert_eq!(used(&reply, "dave"), (0.0, Some(cap)));
    assert_eq!(
        used(&reply, "erin"),
        (30.0, None),
        "no package, no known cap"
    );
    assert_eq!(reply.next, None);

    // A period reaching back to 2020 includes dave's old session; paging gives the same.
    let since = json!({"since": "2020-01-01T00:00:00Z", "limit": 1});
    let mut all = Vec::new();
    let mut params = since.clone();
    loop {
        let r = f.ok(Action::Usage, "", params.clone()).await;
        assert!(r.usage.len() <= 1);
        all.extend(r.usage);
        match r.next {
            Some(next) => params["cursor"] = next.into(),
            None => break,
        }
    }
    let names: Vec<_> = all.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["carol", "dave", "erin"]);
    assert_eq!(all[1].metrics["data"].used, 778.0);

    // A period starting now is empty of traffic.
    let r = f
        .ok(Action::Usage, "", json!({"since": chrono::Utc::now().checked_add_signed(chrono::TimeDelta::seconds(5)).unwrap().to_rfc3339()}))
        .await;
    assert!(
        r.usage.iter().all(|u| u.metrics["data"].used == 0.0),
        "{:?}",
        r.usage
    );
    let e = f
        .call(Action::Usage, "", json!({"since": "last month"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_list_accounts_sees_what_the_tables_hold() {
    let radius = FreeRadius::start().await;
    let f = Fixture::new(&radius.db_url, json!({}), basic_product());
    for user in ["u3", "u1", "u5"] {
        f.ok(Action::Create, user, json!({})).await;
    }
    f.ok(Action::Suspend, "u5", json!({})).await;
    // An orphan an administrator added by hand, and one removed by hand.
    exec(
        &radius.db_url,
        "INSERT INTO radcheck (username, attribute, op, value) VALUES ('u2', 'Cleartext-Password', ':=', 'x')",
    )
    .await;
    assert!(
        radius.auth("u2", "x").await.accepted(),
        "the orphan is live"
    );
    let all = f.list_all(2).await;
    assert_eq!(
        all,
        vec![
            account("u1", "active", "basic"),
            RemoteAccount {
                username: "u2".into(),
                status: Some("active".into()),
                package: None
            },
            account("u3", "active", "basic"),
            account("u5", "suspended", "basic"),
        ]
    );
    exec(&radius.db_url, "DELETE FROM radcheck WHERE username = 'u3'; DELETE FROM radusergroup WHERE username = 'u3'").await;
    let names: Vec<_> = f
        .list_all(100)
        .await
        .into_iter()
        .map(|a| a.username)
        .collect();
    assert_eq!(names, ["u1", "u2", "u5"]);
    // A page that is exactly full points to a next page, which is empty.
    let r = f.ok(Action::ListAccounts, "", json!({"limit": 3})).await;
    assert_eq!(r.next.as_deref(), Some("u5"));
    let r = f
        .ok(
            Action::ListAccounts,
            "",
            json!({"limit": 3, "cursor": "u5"}),
        )
        .await;
    assert!(r.accounts.is_empty() && r.next.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_create_refuses_foreign_accounts_and_shares_groups() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&sqlite_database(dir.path()).await);
    let f = Fixture::new(&url, json!({}), basic_product());
    f.ok(Action::Create, "frank", json!({})).await;
    f.ok(Action::Create, "frank", json!({})).await;
    assert_eq!(
        rows(
            &url,
            "SELECT attribute, value FROM radcheck WHERE username = 'frank'"
        )
        .await,
        vec![format!("Cleartext-Password|{PASSWORD}")]
    );
    // Someone else's account under the same name is not overwritten, and the message
    // carries neither password.
    let other = f.request(Action::Create, "frank", "other-Secret-0b1c", json!({}));
    let e = f.module.call(&other).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(e.message.contains("already exists"), "{e}");
    assert!(!e.message.contains(PASSWORD) && !e.message.contains("other-Secret-0b1c"));

    // Two users of one package: the group's rows are written once, and a product change
    // rewrites them.
    f.ok(Action::Create, "gina", json!({})).await;
    assert_eq!(
        rows(
            &url,
            "SELECT attribute, op, value FROM radgroupreply WHERE groupname = 'basic' ORDER BY id"
        )
        .await,
        vec!["Reply-Message|:=|basic plan", "Session-Timeout|:=|3600"]
    );
    let changed = Fixture::new(
        &url,
        json!({}),
        json!({"group": "basic", "reply_attributes": {"Reply-Message": "basic plan v2", "Framed-Pool": ["a", "b"]}, "check_attributes": {"Simultaneous-Use": 1}}),
    );
    changed.ok(Action::Create, "hank", json!({})).await;
    assert_eq!(
        rows(
            &url,
            "SELECT attribute, op, value FROM radgroupreply WHERE groupname = 'basic' ORDER BY id"
        )
        .await,
        vec![
            "Reply-Message|:=|basic plan v2",
            "Framed-Pool|+=|a",
            "Framed-Pool|+=|b"
        ]
    );
    assert_eq!(
        rows(
            &url,
            "SELECT attribute, op, value FROM radgroupcheck WHERE groupname = 'basic'"
        )
        .await,
        vec!["Simultaneous-Use|:=|1"]
    );
    // A product that leaves its group to an administrator touches none of its rows.
    let unmanaged = Fixture::new(
        &url,
        json!({}),
        json!({"group": "basic", "manage_group": false}),
    );
    unmanaged.ok(Action::Create, "ivan", json!({})).await;
    assert_eq!(
        rows(
            &url,
            "SELECT COUNT(*) FROM radgroupreply WHERE groupname = 'basic'"
        )
        .await,
        vec!["3"]
    );

    // Bad input is permanent.
    let e = f
        .call(Action::Create, "bad,name", json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    let e = f
        .call(
            Action::ChangePackage,
            "frank",
            json!({"new_product": {"group": "disabled"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(e.message.contains("suspend group"), "{e}");
    let e = f
        .call(Action::ChangePassword, "frank", json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_settings_are_checked() {
    let module = RadiusModule::with(&crate::local_options());
    let product = object(json!({"group": "g", "reply_attributes": {"Bad Name": "x"}}));
    let errors = module.check_settings(SchemaScope::Product, &product);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "reply_attributes");
    let product = object(json!({"group": "g", "check_attributes": {"Simultaneous-Use": {"x": 1}}}));
    assert_eq!(
        module.check_settings(SchemaScope::Product, &product).len(),
        1
    );
    let server = object(json!({"database_url": "mysql://u:Hidden-Pw-31@h/db"}));
    let errors = module.check_settings(SchemaScope::Server, &server);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(!errors[0].message.contains("Hidden-Pw-31"));
    let schema = &module.info().product_schema;
    assert!(schema
        .validate(&object(json!({"group": "a,b"})), Mode::Complete)
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_errors_are_classed_without_secrets() {
    require_tools();
    // Nothing listens on this port: refused until the timeout, so transient.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let db_password = "db-Secret-Pa55-8e2f";
    let f = Fixture::new(
        &format!("postgres://radius:{db_password}@127.0.0.1:{port}/radius"),
        json!({"timeout_seconds": 1}),
        basic_product(),
    );
    for action in [Action::Create, Action::Lookup, Action::TestConnection] {
        let e = f.call(action.clone(), "jane", json!({})).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient, "{action}: {e}");
        for secret in [db_password, PASSWORD, "radius:db-Secret"] {
            assert!(!e.message.contains(secret), "{action}: {e}");
        }
    }

    // A database without the FreeRADIUS tables: permanent, naming what is missing.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&empty)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE radcheck (id INTEGER PRIMARY KEY, username TEXT, attribute TEXT, op TEXT, value TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let f = Fixture::new(&sqlite_url(&empty), json!({}), basic_product());
    let e = f
        .call(Action::TestConnection, "", json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(
        e.message.contains("radusergroup") && !e.message.contains("radcheck ("),
        "{e}"
    );
    let e = f.call(Action::Create, "jane", json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    // A missing file is not created behind the administrator's back.
    let f = Fixture::new(
        &sqlite_url(&dir.path().join("nope.db")),
        json!({"timeout_seconds": 2}),
        basic_product(),
    );
    let e = f.call(Action::Lookup, "jane", json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(!dir.path().join("nope.db").exists());

    let good = tempfile::tempdir().unwrap();
    let f = Fixture::new(
        &sqlite_url(&sqlite_database(good.path()).await),
        json!({}),
        basic_product(),
    );
    f.ok(Action::TestConnection, "", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_lifecycle_and_usage_on_postgresql() {
    let url = pg_database().await;
    let f = Fixture::new(
        &url,
        json!({}),
        json!({"group": "basic", "reply_attributes": {"Reply-Message": "basic plan"}, "data_cap": 1000}),
    );
    assert_eq!(f.lookup("kim").await, None);
    f.ok(Action::Create, "kim", json!({})).await;
    f.ok(Action::Create, "kim", json!({})).await;
    f.ok(Action::Create, "lee", json!({})).await;
    assert_eq!(
        f.lookup("kim").await,
        Some(account("kim", "active", "basic"))
    );
    assert_eq!(
        rows(
            &url,
            "SELECT attribute, op, value FROM radgroupreply WHERE groupname = 'basic'"
        )
        .await,
        vec!["Reply-Message|:=|basic plan"]
    );
    f.ok(Action::Suspend, "kim", json!({})).await;
    f.ok(Action::Suspend, "kim", json!({})).await;
    assert_eq!(
        f.lookup("kim").await,
        Some(account("kim", "suspended", "basic"))
    );
    assert_eq!(
        rows(
            &url,
            "SELECT groupname, priority FROM radusergroup WHERE username = 'kim' ORDER BY priority"
        )
        .await,
        vec!["disabled|0", "basic|1"]
    );
    let pro = new_product(json!({"group": "pro"}));
    f.ok(Action::ChangePackage, "kim", json!({"new_product": pro}))
        .await;
    f.ok(Action::Unsuspend, "kim", json!({})).await;
    assert_eq!(f.lookup("kim").await, Some(account("kim", "active", "pro")));
    f.ok(
        Action::ChangePassword,
        "kim",
        json!({"new_password": NEW_PASSWORD}),
    )
    .await;
    assert_eq!(
        rows(
            &url,
            "SELECT attribute, value FROM radcheck WHERE username = 'kim'"
        )
        .await,
        vec![format!("Cleartext-Password|{NEW_PASSWORD}")]
    );
    exec(&url, "INSERT INTO radcheck (username, attribute, op, value) VALUES ('orphan', 'Cleartext-Password', ':=', 'x')").await;
    let names: Vec<_> = f
        .list_all(1)
        .await
        .into_iter()
        .map(|a| a.username)
        .collect();
    assert_eq!(names, ["kim", "lee", "orphan"]);

    // Accounting rows as FreeRADIUS's PostgreSQL queries write them.
    exec(
        &url,
        "INSERT INTO radacct (acctsessionid, acctuniqueid, username, nasipaddress, acctstarttime, acctinputoctets, acctoutputoctets) VALUES \
         ('s1', 'u1', 'lee', '127.0.0.1', now() - interval '1 minute', 4294967296, 100), \
         ('s2', 'u2', 'lee', '127.0.0.1', now() - interval '1 minute', NULL, 5), \
         ('s0', 'u0', 'lee', '127.0.0.1', TIMESTAMP WITH TIME ZONE '2020-01-01 00:00:00+00', 999, 0)",
    )
    .await;
    let r = f
        .ok(Action::Usage, "", json!({"since": "2021-01-01T00:00:00Z"}))
        .await;
    let lee = r.usage.iter().find(|u| u.username == "lee").unwrap();
    assert_eq!(lee.metrics["data"].used, 4294967296.0 + 105.0);
    assert_eq!(lee.metrics["data"].limit, Some(1000.0));
    let kim = r.usage.iter().find(|u| u.username == "kim").unwrap();
    assert_eq!(kim.metrics["data"].used, 0.0);
    assert_eq!(
        kim.metrics["data"].limit, None,
        "kim is on pro, whose cap is unknown here"
    );
    let r = f
        .ok(Action::Usage, "", json!({"since": "2019-01-01T00:00:00Z"}))
        .await;
    let lee = r.usage.iter().find(|u| u.username == "lee").unwrap();
    assert_eq!(lee.metrics["data"].used, 4294967296.0 + 105.0 + 999.0);

    f.ok(Action::TestConnection, "", json!({})).await;
    concurrent_creates_write_the_group_once(&url).await;
    f.ok(Action::Terminate, "kim", json!({})).await;
    assert_eq!(f.lookup("kim").await, None);
    assert!(
        rows(&url, "SELECT id FROM radusergroup WHERE username = 'kim'")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radius_freeradius_on_postgresql_authenticates_and_accounts() {
    let url = pg_database().await;
    let radius = FreeRadius::start_on(tempfile::tempdir().unwrap(), url.clone()).await;
    let f = Fixture::new(&url, json!({}), basic_product());
    let user = "pat";
    f.ok(Action::Create, user, json!({})).await;
    let answer = radius.auth(user, PASSWORD).await;
    assert!(answer.accepted(), "{answer:?}");
    assert!(answer.has("Reply-Message = \"basic plan\""), "{answer:?}");
    f.ok(Action::Suspend, user, json!({})).await;
    assert_eq!(radius.auth(user, PASSWORD).await.code, "Access-Reject");
    f.ok(Action::Unsuspend, user, json!({})).await;
    assert!(radius.auth(user, PASSWORD).await.accepted());
    let gold =
        new_product(json!({"group": "gold", "reply_attributes": {"Reply-Message": "gold plan"}}));
    f.ok(Action::ChangePackage, user, json!({"new_product": gold}))
        .await;
    assert!(radius
        .auth(user, PASSWORD)
        .await
        .has("Reply-Message = \"gold plan\""));

    let nas = "NAS-IP-Address = 127.0.0.1, NAS-Port = 3";
    radius
        .acct(&format!(
            "User-Name = \"{user}\", Acct-Status-Type = Start, Acct-Session-Id = \"p1\", {nas}"
        ))
        .await;
    radius
        .acct(&format!("User-Name = \"{user}\", Acct-Status-Type = Stop, Acct-Session-Id = \"p1\", {nas}, Acct-Session-Time = 90, Acct-Input-Octets = 10, Acct-Output-Octets = 20, Acct-Output-Gigawords = 3"))
        .await;
    let reply = f.ok(Action::Usage, "", json!({})).await;
    let report = reply.usage.iter().find(|u| u.username == user).unwrap();
    assert_eq!(report.metrics["data"].used, ((3u64 << 32) + 30) as f64);

    f.ok(Action::Terminate, user, json!({})).await;
    assert_eq!(radius.auth(user, PASSWORD).await.code, "Access-Reject");
    let reply = f.ok(Action::Usage, "", json!({})).await;
    let report = reply.usage.iter().find(|u| u.username == user).unwrap();
    assert_eq!(
        report.metrics["data"].used,
        ((3u64 << 32) + 30) as f64,
        "history stays"
    );
}

/// Creates of one new package running at once (the engine runs up to `max_concurrent` jobs
/// per server) leave the group's rows written once, not once per create.
async fn concurrent_creates_write_the_group_once(url: &str) {
    let f = std::sync::Arc::new(Fixture::new(
        url,
        json!({}),
        json!({"group": "burst", "reply_attributes": {"Reply-Message": "burst", "Framed-Pool": ["p1", "p2"]}}),
    ));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move { f.ok(Action::Create, &format!("burst{i}"), json!({})).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        rows(
            url,
            "SELECT attribute, value FROM radgroupreply WHERE groupname = 'burst' ORDER BY id"
        )
        .await,
        vec!["Reply-Message|burst", "Framed-Pool|p1", "Framed-Pool|p2"]
    );
    assert_eq!(
        rows(
            url,
            "SELECT COUNT(*) FROM radusergroup WHERE groupname = 'burst'"
        )
        .await,
        vec!["8"]
    );
}

// ------------------------------------------------------------------ the outbound guard

/// SQLite databases are opened only inside `[outbound] radius_sqlite_dir` (none without
/// it, and a link out of it does not count), and a PostgreSQL database at a refused
/// address is refused before connecting; every refusal is permanent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_outside_what_is_allowed_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&sqlite_database(dir.path()).await);
    let f = Fixture::new(&url, json!({}), basic_product());
    f.ok(Action::TestConnection, "", json!({})).await;
    let call = |module: RadiusModule, url: String| async move {
        let f = Fixture {
            module,
            ..Fixture::new(&url, json!({"timeout_seconds": 2}), basic_product())
        };
        f.call(Action::TestConnection, "", json!({}))
            .await
            .unwrap_err()
    };

    let e = call(RadiusModule::new(), url.clone()).await;
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(e.message.contains("local SQLite databases are refused: none is allowed until [outbound] radius_sqlite_dir"), "{e}");

    let elsewhere = tempfile::tempdir().unwrap();
    let confined = |d: &Path| provisio_modules::ModuleOptions {
        radius_sqlite_dir: Some(d.to_path_buf()),
        ..crate::local_options()
    };
    let e = call(RadiusModule::with(&confined(elsewhere.path())), url.clone()).await;
    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
    assert!(
        e.message
            .contains("the SQLite database is outside [outbound] radius_sqlite_dir"),
        "{e}"
    );
    let link = elsewhere.path().join("radius.db");
    std::os::unix::fs::symlink(url.trim_start_matches("sqlite://"), &link).unwrap();
    let e = call(
        RadiusModule::with(&confined(elsewhere.path())),
        sqlite_url(&link),
    )
    .await;
    assert!(
        e.message.contains("is outside"),
        "a link out of the directory: {e}"
    );

    for (host, ip) in [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "127.0.0.1 (localhost)"),
        ("10.0.0.1", "10.0.0.1"),
    ] {
        let e = call(
            RadiusModule::new(),
            format!("postgres://radius:pw@{host}:5432/radius"),
        )
        .await;
        assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
        assert!(
            e.message.contains(&format!("refused to connect to {ip}: ")),
            "{e}"
        );
        assert!(!e.message.contains("pw@"), "{e}");
    }
    let e = call(
        RadiusModule::with(&crate::local_options()),
        "postgres://radius:pw@127.0.0.1:5432/radius?host=10.0.0.1".into(),
    )
    .await;
    assert!(e.message.contains("must be in the URL itself"), "{e}");
}
