//! The `postgres` module: database hosting on a PostgreSQL server. Each service is a login
//! role and a database it owns, both named `<prefix><username>`. The reference is
//! `docs/modules/postgres.md`.

mod error;
mod sql;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use provisio_core::module::{
    Action, ActionReply, ActionRequest, Capability, Metric, Module, ModuleError, ModuleInfo,
    RemoteAccount, UsageReport,
};
use provisio_core::settings::{Field, Settings, SettingsSchema};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection, Row};

use crate::outbound::{OutboundError, OutboundPolicy};
use error::{sqlstate, PgError};
use sql::{password_literal, quote_literal, RoleName};

const DEFAULT_PORT: i64 = 5432;
const DEFAULT_CONNECT_TIMEOUT_SECONDS: i64 = 10;
const DEFAULT_STATEMENT_TIMEOUT_SECONDS: i64 = 30;
const DEFAULT_CONNECTION_LIMIT: i64 = 10;
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// How long suspend and terminate wait for each session they end to be gone.
const TERMINATE_WAIT_MS: i64 = 5000;
/// Extra time the client gives a statement beyond the server's own `statement_timeout`, so
/// that the server's cancellation (a clean, rolled-back error) normally comes first.
const CLIENT_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

pub struct PostgresModule {
    info: ModuleInfo,
    policy: OutboundPolicy,
}

impl PostgresModule {
    /// With the default outbound policy.
    pub fn new() -> Self {
        Self::with(&crate::ModuleOptions::default())
    }

    pub fn with(options: &crate::ModuleOptions) -> Self {
        Self {
            info: info(),
            policy: options.outbound.clone(),
        }
    }
}

impl Default for PostgresModule {
    fn default() -> Self {
        Self::new()
    }
}

fn info() -> ModuleInfo {
    let server_schema = SettingsSchema::new(vec![
        Field::string("host", "Host")
            .required()
            .pattern(r"[A-Za-z0-9._:-]+|\[[0-9A-Fa-f:.]+\]")
            .help("Host name or IP address of the PostgreSQL server."),
        Field::integer("port", "Port", Some(1), Some(65535)).default_value(DEFAULT_PORT),
        Field::string("admin_user", "Admin user")
            .required()
            .default_value("postgres")
            .pattern(r"[A-Za-z_][A-Za-z0-9_$.-]{0,62}")
            .help("A superuser, or a role with CREATEROLE and CREATEDB that becomes a member of the roles it creates (see docs/modules/postgres.md)."),
        Field::secret("admin_password", "Admin password")
            .help("The admin user's password; stored encrypted. Leave unset where the server trusts the connection."),
        Field::string("admin_database", "Admin database")
            .default_value("postgres")
            .pattern(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")
            .help("The database the module connects to for its work."),
        Field::string("prefix", "Name prefix")
            .required()
            .pattern(r"[a-z][a-z0-9_]{0,30}")
            .help("Every role and database the module manages is named <prefix><username>; list_accounts and usage see only names with this prefix, so give each Provisio server its own."),
        Field::enumeration("sslmode", "TLS mode", &["disable", "prefer", "require", "verify-ca", "verify-full"])
            .default_value("prefer")
            .help("As libpq's sslmode; verify-ca and verify-full check the certificate against the Web PKI roots."),
        Field::integer("connect_timeout_seconds", "Connect timeout (seconds)", Some(1), Some(120))
            .default_value(DEFAULT_CONNECT_TIMEOUT_SECONDS)
            .help("A server that does not accept a session in this time is retried later."),
        Field::integer("statement_timeout_seconds", "Statement timeout (seconds)", Some(1), Some(600))
            .default_value(DEFAULT_STATEMENT_TIMEOUT_SECONDS)
            .help("The server cancels a statement that runs longer (the job is retried)."),
    ]);
    let product_schema = SettingsSchema::new(vec![Field::integer(
        "connection_limit",
        "Connection limit",
        Some(-1),
        Some(100_000),
    )
    .default_value(DEFAULT_CONNECTION_LIMIT)
    .help("How many sessions the role may have open at once; -1 for no limit.")]);
    ModuleInfo {
        name: "postgres".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description:
            "PostgreSQL database hosting: a login role and a database it owns per service.".into(),
        capabilities: vec![
            Capability::Create,
            Capability::Suspend,
            Capability::Unsuspend,
            Capability::Terminate,
            Capability::ChangePassword,
            Capability::ChangePackage,
            Capability::Lookup,
            Capability::ListAccounts,
            Capability::Usage,
            Capability::TestConnection,
        ],
        custom_actions: vec![],
        server_schema,
        product_schema,
        service_schema: SettingsSchema::new(vec![]),
    }
}

#[async_trait::async_trait]
impl Module for PostgresModule {
    fn info(&self) -> &ModuleInfo {
        &self.info
    }

    async fn call(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        // The registry's layer redacts and logs what leaves; an unclear end of a call that
        // changes nothing is simply worth a retry.
        run(request, &self.policy)
            .await
            .map_err(|e| e.into_module_error(!request.action.is_read_only()))
    }
}

/// The server settings the module works with (already validated by the schema; missing
/// values fall back to the schema's defaults, for hand-made settings).
struct Server {
    options: PgConnectOptions,
    /// As the settings give it, without brackets: resolved at every connect.
    host: String,
    port: u16,
    /// Whether the certificate must name `host`: then the connection is made by name.
    verify_name: bool,
    prefix: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
}

impl Server {
    fn from_settings(settings: &Settings) -> Result<Self, PgError> {
        let text = |name: &str| settings.get(name).and_then(Value::as_str);
        let int = |name: &str, default: i64| {
            settings
                .get(name)
                .and_then(Value::as_i64)
                .unwrap_or(default)
        };
        let host =
            text("host").ok_or_else(|| PgError::InvalidInput("the server has no host".into()))?;
        // The schema's pattern, checked again: the prefix becomes part of every identifier.
        let prefix = text("prefix")
            .filter(|p| {
                p.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
            .ok_or_else(|| {
                PgError::InvalidInput("the server's name prefix is missing or invalid".into())
            })?;
        let port = u16::try_from(int("port", DEFAULT_PORT))
            .map_err(|_| PgError::InvalidInput("the port is out of range".into()))?;
        let sslmode = match text("sslmode").unwrap_or("prefer") {
            "disable" => PgSslMode::Disable,
            "prefer" => PgSslMode::Prefer,
            "require" => PgSslMode::Require,
            "verify-ca" => PgSslMode::VerifyCa,
            "verify-full" => PgSslMode::VerifyFull,
            other => return Err(PgError::InvalidInput(format!("unknown sslmode {other:?}"))),
        };
        let statement_timeout = Duration::from_secs(
            int(
                "statement_timeout_seconds",
                DEFAULT_STATEMENT_TIMEOUT_SECONDS,
            )
            .clamp(1, 600) as u64,
        );
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(host.trim_start_matches('[').trim_end_matches(']'))
            .port(port)
            .username(text("admin_user").unwrap_or("postgres"))
            .database(text("admin_database").unwrap_or("postgres"))
            .ssl_mode(sslmode)
            .application_name("provisio")
            .options([
                (
                    "statement_timeout",
                    statement_timeout.as_millis().to_string(),
                ),
                ("lock_timeout", statement_timeout.as_millis().to_string()),
            ])
            // Statements can carry a password verifier; none is ever logged.
            .disable_statement_logging();
        if let Some(pw) = text("admin_password") {
            options = options.password(pw);
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Server {
            options,
            host: host.to_string(),
            port,
            verify_name: matches!(sslmode, PgSslMode::VerifyFull)
                && host.parse::<std::net::IpAddr>().is_err(),
            prefix: prefix.to_string(),
            connect_timeout: Duration::from_secs(
                int("connect_timeout_seconds", DEFAULT_CONNECT_TIMEOUT_SECONDS).clamp(1, 120)
                    as u64,
            ),
            statement_timeout,
        })
    }

    /// One session per call: provisioning calls are few, and a fresh session always uses
    /// the server's current settings (a changed admin password needs no pool invalidation).
    ///
    /// The host is resolved here and the session goes to an address the outbound policy
    /// allows, so the name cannot point elsewhere between the check and the connect. With
    /// `sslmode = verify-full` the certificate must name the host, which a connection by
    /// address cannot check; then every address the name has must be allowed and the
    /// connection is made by name, where a name that moved in between cannot present the
    /// host's certificate and the session fails before the password is sent.
    async fn connect(&self, policy: &OutboundPolicy) -> Result<Session, PgError> {
        let attempt = async {
            let addrs = policy
                .resolve(&self.host, self.port)
                .await
                .map_err(|e| match e {
                    OutboundError::Refused(r) => PgError::Refused(r),
                    other => PgError::Unresolved(other.to_string()),
                })?;
            if self.verify_name {
                let all = tokio::net::lookup_host((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| PgError::Unresolved(format!("{}: {e}", self.host)))?;
                for a in all {
                    policy
                        .check(a.ip(), Some(&self.host))
                        .map_err(PgError::Refused)?;
                }
                return self.options.connect().await.map_err(PgError::Connect);
            }
            let mut last = None;
            for addr in addrs {
                let options = self.options.clone().host(&addr.ip().to_string());
                match options.connect().await {
                    Ok(conn) => return Ok(conn),
                    // Another address of the name may answer; a database's own refusal
                    // (bad password) would only repeat.
                    Err(e @ sqlx::Error::Io(_)) => last = Some(e),
                    Err(e) => return Err(PgError::Connect(e)),
                }
            }
            Err(last
                .map(PgError::Connect)
                .unwrap_or_else(|| PgError::Unresolved(format!("{} has no address", self.host))))
        };
        let conn = tokio::time::timeout(self.connect_timeout, attempt)
            .await
            .map_err(|_| PgError::ConnectTimeout(self.connect_timeout))??;
        Ok(Session {
            conn,
            limit: self.statement_timeout + CLIENT_TIMEOUT_MARGIN,
        })
    }

    /// The service's role name, from its username.
    fn role(&self, request: &ActionRequest) -> Result<RoleName, PgError> {
        let service = request
            .service
            .as_ref()
            .ok_or_else(|| PgError::InvalidInput(format!("{} needs a service", request.action)))?;
        RoleName::new(&self.prefix, &service.username)
    }
}

/// An admin session, every statement bounded in time.
struct Session {
    conn: PgConnection,
    limit: Duration,
}

/// A statement's future, boxed: a generic future borrowing the connection trips the
/// compiler's `Send` inference inside `async_trait`.
type StatementFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'a>>;

/// Bounds one statement's future in time.
async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    fut: StatementFuture<'_, T>,
) -> Result<T, PgError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(|source| PgError::Statement { what, source }),
        Err(_) => Err(PgError::StatementTimeout { what, after: limit }),
    }
}

impl Session {
    /// Statements without parameters, sent as one simple query: DDL cannot take bind
    /// parameters, and several statements in one simple query form one transaction.
    async fn exec(&mut self, what: &'static str, statements: &str) -> Result<(), PgError> {
        bounded(
            self.limit,
            what,
            // A `&str` without arguments goes out as a simple query.
            sqlx::Executor::execute(&mut self.conn, statements),
        )
        .await
        .map(|_| ())
    }

    async fn role_state(&mut self, role: &RoleName) -> Result<Option<RoleState>, PgError> {
        let row = bounded(
            self.limit,
            "reading the role",
            Box::pin(
                sqlx::query(
                    "SELECT r.rolcanlogin, r.rolconnlimit, shobj_description(r.oid, 'pg_authid'), \
                        (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname) \
                 FROM pg_roles r WHERE r.rolname = $1",
                )
                .bind(role.as_str())
                .fetch_optional(&mut self.conn),
            ),
        )
        .await?;
        Ok(row.map(|row| RoleState {
            can_login: row.get(0),
            connection_limit: row.get(1),
            comment: row.get(2),
            sessions: row.get(3),
        }))
    }

    /// Ends every session of `role` and waits (boundedly) for each to be gone.
    async fn terminate_sessions(&mut self, role: &RoleName) -> Result<(), PgError> {
        bounded(
            self.limit,
            "ending the role's sessions",
            Box::pin(
                sqlx::query(
                    "SELECT pg_terminate_backend(pid, $2) FROM pg_stat_activity \
                 WHERE usename = $1 AND pid <> pg_backend_pid()",
                )
                .bind(role.as_str())
                .bind(TERMINATE_WAIT_MS)
                .fetch_all(&mut self.conn),
            ),
        )
        .await
        .map(|_| ())
    }

    async fn close(self) {
        // A failed or slow goodbye changes nothing that was done; dropping the connection
        // closes the socket anyway.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.close()).await;
    }
}

struct RoleState {
    can_login: bool,
    connection_limit: i32,
    comment: Option<String>,
    /// Sessions of the role open now.
    sessions: i64,
}

impl RoleState {
    /// `suspended` only once login is off *and* no session is left: a suspend that stopped
    /// between the two (unknown outcome) reads as `suspending`, so that the engine's lookup
    /// does not count it as done.
    fn status(&self) -> &'static str {
        match (self.can_login, self.sessions) {
            (true, _) => "active",
            (false, 0) => "suspended",
            (false, _) => "suspending",
        }
    }
}

/// The package as the remote knows it: the connection limit.
fn package(connection_limit: i32) -> String {
    if connection_limit < 0 {
        "unlimited".into()
    } else {
        connection_limit.to_string()
    }
}

/// What `create` answers, and `lookup` too when it finds the role: the engine keeps a
/// lookup's outputs in place of those of a create whose answer was lost.
fn create_outputs(role: &RoleName) -> Settings {
    let mut outputs = Settings::new();
    outputs.insert("role".into(), json!(role.as_str()));
    outputs.insert("database".into(), json!(role.as_str()));
    outputs
}

/// What `create` writes on the role, so that a repeated create recognises its own role.
fn ownership_marker(request: &ActionRequest) -> String {
    let service = request.service.as_ref().map(|s| s.id).unwrap_or_default();
    format!("provisio service {service} on server {}", request.server.id)
}

fn connection_limit(settings: &Settings) -> Result<i64, PgError> {
    match settings.get("connection_limit") {
        None | Some(Value::Null) => Ok(DEFAULT_CONNECTION_LIMIT),
        Some(v) => v
            .as_i64()
            .filter(|n| (-1..=100_000).contains(n))
            .ok_or_else(|| {
                PgError::InvalidInput(
                    "connection_limit must be an integer from -1 to 100000".into(),
                )
            }),
    }
}

async fn run(request: &ActionRequest, policy: &OutboundPolicy) -> Result<ActionReply, PgError> {
    let server = Server::from_settings(&request.server.settings)?;
    // Names and inputs are checked before any connection is made.
    match &request.action {
        Action::TestConnection => {
            let mut s = server.connect(policy).await?;
            let r = test_connection(&mut s).await;
            s.close().await;
            r
        }
        Action::ListAccounts | Action::Usage => {
            let (cursor, limit) = page(&request.params)?;
            let mut s = server.connect(policy).await?;
            let r = list(
                &mut s,
                &server.prefix,
                cursor,
                limit,
                request.action == Action::Usage,
            )
            .await;
            s.close().await;
            r
        }
        action => {
            let role = server.role(request)?;
            let mut s = server.connect(policy).await?;
            let r = match action {
                Action::Create => create(&mut s, request, &role).await,
                Action::Suspend => suspend(&mut s, &role).await,
                Action::Unsuspend => unsuspend(&mut s, &role).await,
                Action::Terminate => terminate(&mut s, &role).await,
                Action::ChangePassword => change_password(&mut s, request, &role).await,
                Action::ChangePackage => change_package(&mut s, request, &role).await,
                Action::Lookup => lookup(&mut s, request, &role).await,
                other => Err(PgError::InvalidInput(format!(
                    "the postgres module does not support {other}"
                ))),
            };
            s.close().await;
            r
        }
    }
}

/// Creates the database, then — in one transaction — the role, its marker and the
/// database's hand-over to it. The role is the commit point: it never exists without its
/// database, so `lookup` can judge a create by the role alone.
///
/// Repeating a create is safe. A role of this name carrying this service's marker means the
/// create completed before (a retry after an unknown outcome): it is brought to the wanted
/// state (login, password, limit) and the create succeeds. A database carrying the marker
/// but no role yet is an earlier attempt that stopped half-way, and is finished. A role or
/// database without the marker belongs to someone else: a permanent conflict.
async fn create(
    s: &mut Session,
    request: &ActionRequest,
    role: &RoleName,
) -> Result<ActionReply, PgError> {
    let service = request.service.as_ref().expect("checked by Server::role");
    let password = password_literal(service.password.expose_secret())?;
    let limit = connection_limit(&request.product.settings)?;
    let marker = ownership_marker(request);
    let ident = role.ident();
    let mark = quote_literal(&marker);
    let done = || {
        Ok(ActionReply {
            outputs: create_outputs(role),
            ..ActionReply::default()
        })
    };
    let adopt_role = |state: Option<RoleState>| match state {
        Some(state) if state.comment.as_deref() == Some(marker.as_str()) => Ok(()),
        _ => Err(PgError::Conflict(format!(
            "role {:?} already exists and was not created for this service",
            role.as_str()
        ))),
    };

    if let Some(state) = s.role_state(role).await? {
        adopt_role(Some(state))?;
        s.exec(
            "updating the existing role",
            &format!("ALTER ROLE {ident} LOGIN PASSWORD {password} CONNECTION LIMIT {limit}"),
        )
        .await?;
        return done();
    }

    let comment: Option<Option<String>> = bounded(
        s.limit,
        "reading the database",
        Box::pin(
            sqlx::query_scalar(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            )
            .bind(role.as_str())
            .fetch_optional(&mut s.conn),
        ),
    )
    .await?;
    match comment {
        Some(comment) if comment.as_deref() == Some(marker.as_str()) => {}
        Some(_) => {
            return Err(PgError::Conflict(format!(
                "database {:?} already exists and was not created for this service",
                role.as_str()
            )))
        }
        None => {
            // CREATE DATABASE cannot share a transaction; the marker follows at once, with
            // PUBLIC's access taken away before anyone but the admin could use it.
            match s
                .exec("creating the database", &format!("CREATE DATABASE {ident}"))
                .await
            {
                Ok(()) => {}
                Err(PgError::Statement { source, .. })
                    if sqlstate(&source).as_deref() == Some(error::DUPLICATE_DATABASE) =>
                {
                    return Err(PgError::Conflict(format!(
                        "database {:?} was created by someone else meanwhile",
                        role.as_str()
                    )))
                }
                Err(e) => return Err(e),
            }
            s.exec(
                "marking the database",
                &format!(
                    "COMMENT ON DATABASE {ident} IS {mark}; \
                     REVOKE ALL ON DATABASE {ident} FROM PUBLIC"
                ),
            )
            .await?;
        }
    }

    // One simple query with several statements is one transaction.
    let create_role = format!(
        "CREATE ROLE {ident} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
           PASSWORD {password} CONNECTION LIMIT {limit}; \
         COMMENT ON ROLE {ident} IS {mark}; \
         ALTER DATABASE {ident} OWNER TO {ident}; \
         REVOKE ALL ON DATABASE {ident} FROM PUBLIC"
    );
    match s.exec("creating the role", &create_role).await {
        Ok(()) => done(),
        // A concurrent attempt of the same create got there first.
        Err(PgError::Statement { source, .. })
            if sqlstate(&source).as_deref() == Some(error::DUPLICATE_OBJECT) =>
        {
            adopt_role(s.role_state(role).await?)?;
            done()
        }
        Err(e) => Err(e),
    }
}

async fn require_role(s: &mut Session, role: &RoleName) -> Result<RoleState, PgError> {
    s.role_state(role)
        .await?
        .ok_or_else(|| PgError::NotFound(format!("role {:?} does not exist", role.as_str())))
}

/// NOLOGIN first, so the sessions ended next cannot come back; NOLOGIN alone would leave
/// open sessions working.
async fn suspend(s: &mut Session, role: &RoleName) -> Result<ActionReply, PgError> {
    require_role(s, role).await?;
    s.exec(
        "disabling login",
        &format!("ALTER ROLE {} NOLOGIN", role.ident()),
    )
    .await?;
    s.terminate_sessions(role).await?;
    Ok(ActionReply::default())
}

async fn unsuspend(s: &mut Session, role: &RoleName) -> Result<ActionReply, PgError> {
    require_role(s, role).await?;
    s.exec(
        "enabling login",
        &format!("ALTER ROLE {} LOGIN", role.ident()),
    )
    .await?;
    Ok(ActionReply::default())
}

async fn change_password(
    s: &mut Session,
    request: &ActionRequest,
    role: &RoleName,
) -> Result<ActionReply, PgError> {
    let new = request
        .params
        .get("new_password")
        .and_then(Value::as_str)
        .ok_or_else(|| PgError::InvalidInput("change_password needs params.new_password".into()))?;
    let password = password_literal(new)?;
    require_role(s, role).await?;
    s.exec(
        "changing the password",
        &format!("ALTER ROLE {} PASSWORD {password}", role.ident()),
    )
    .await?;
    Ok(ActionReply::default())
}

async fn change_package(
    s: &mut Session,
    request: &ActionRequest,
    role: &RoleName,
) -> Result<ActionReply, PgError> {
    let new_product = request
        .params
        .get("new_product")
        .and_then(Value::as_object)
        .ok_or_else(|| PgError::InvalidInput("change_package needs params.new_product".into()))?;
    let limit = connection_limit(new_product)?;
    require_role(s, role).await?;
    s.exec(
        "changing the connection limit",
        &format!("ALTER ROLE {} CONNECTION LIMIT {limit}", role.ident()),
    )
    .await?;
    Ok(ActionReply::default())
}

/// Drops the database and the role; what is already gone counts as done.
async fn terminate(s: &mut Session, role: &RoleName) -> Result<ActionReply, PgError> {
    let ident = role.ident();
    let exists = s.role_state(role).await?.is_some();
    if exists {
        s.exec("disabling login", &format!("ALTER ROLE {ident} NOLOGIN"))
            .await?;
        s.terminate_sessions(role).await?;
    }
    // FORCE ends any remaining session on the database (an admin's, say).
    s.exec(
        "dropping the database",
        &format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"),
    )
    .await?;
    if exists {
        // Grants the role holds in the admin database would block DROP ROLE.
        match s
            .exec(
                "dropping the role's grants",
                &format!("DROP OWNED BY {ident}"),
            )
            .await
        {
            Ok(()) => {}
            // Dropped concurrently since it was read.
            Err(PgError::Statement { source, .. })
                if sqlstate(&source).as_deref() == Some(error::UNDEFINED_OBJECT) => {}
            Err(e) => return Err(e),
        }
    }
    s.exec("dropping the role", &format!("DROP ROLE IF EXISTS {ident}"))
        .await?;
    Ok(ActionReply::default())
}

async fn lookup(
    s: &mut Session,
    request: &ActionRequest,
    role: &RoleName,
) -> Result<ActionReply, PgError> {
    let username = &request
        .service
        .as_ref()
        .expect("checked by Server::role")
        .username;
    let Some(state) = s.role_state(role).await? else {
        return Ok(ActionReply::default());
    };
    Ok(ActionReply {
        account: Some(RemoteAccount {
            username: username.clone(),
            status: Some(state.status().into()),
            package: Some(package(state.connection_limit)),
        }),
        outputs: create_outputs(role),
        ..ActionReply::default()
    })
}

/// `params.cursor` (the last username of the previous page) and `params.limit`.
fn page(params: &Settings) -> Result<(String, i64), PgError> {
    let cursor = match params.get("cursor") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(c)) => c.clone(),
        Some(_) => {
            return Err(PgError::InvalidInput(
                "params.cursor must be a string".into(),
            ))
        }
    };
    let limit = match params.get("limit") {
        None | Some(Value::Null) => DEFAULT_PAGE,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n >= 1)
            .ok_or_else(|| PgError::InvalidInput("params.limit must be a positive integer".into()))?
            .min(MAX_PAGE),
    };
    Ok((cursor, limit))
}

/// One page of the roles with the server's prefix, by name (bytewise, so that the cursor
/// order does not depend on the database's collation); with `usage`, their databases' sizes
/// and open sessions too.
async fn list(
    s: &mut Session,
    prefix: &str,
    cursor: String,
    limit: i64,
    usage: bool,
) -> Result<ActionReply, PgError> {
    let rows = bounded(
        s.limit,
        "listing roles",
        Box::pin(
            sqlx::query(
                "SELECT r.rolname::text, r.rolcanlogin, r.rolconnlimit, \
                        pg_database_size(d.oid), \
                        (SELECT count(*) FROM pg_stat_activity a WHERE a.usename = r.rolname) \
                 FROM pg_roles r LEFT JOIN pg_database d ON d.datname = r.rolname \
                 WHERE starts_with(r.rolname::text, $1) \
                   AND r.rolname::text COLLATE \"C\" > ($1 || $2) COLLATE \"C\" \
                 ORDER BY r.rolname::text COLLATE \"C\" \
                 LIMIT $3",
            )
            .bind(prefix)
            .bind(&cursor)
            .bind(limit + 1)
            .fetch_all(&mut s.conn),
        ),
    )
    .await?;
    let more = rows.len() as i64 > limit;
    let mut reply = ActionReply::default();
    for row in rows.into_iter().take(limit as usize) {
        let name: String = row.get(0);
        let username = name[prefix.len()..].to_string();
        let can_login: bool = row.get(1);
        let connection_limit: i32 = row.get(2);
        let sessions: i64 = row.get(4);
        if usage {
            let size: Option<i64> = row.get(3);
            let mut metrics = std::collections::BTreeMap::new();
            if let Some(size) = size {
                metrics.insert(
                    "disk".to_string(),
                    Metric {
                        used: size as f64,
                        limit: None,
                        unit: Some("bytes".into()),
                    },
                );
            }
            metrics.insert(
                "connections".to_string(),
                Metric {
                    used: sessions as f64,
                    limit: (connection_limit >= 0).then_some(connection_limit as f64),
                    unit: None,
                },
            );
            reply.usage.push(UsageReport { username, metrics });
        } else {
            let state = RoleState {
                can_login,
                connection_limit,
                comment: None,
                sessions,
            };
            reply.accounts.push(RemoteAccount {
                username,
                status: Some(state.status().into()),
                package: Some(package(connection_limit)),
            });
        }
    }
    if more {
        reply.next = reply
            .accounts
            .last()
            .map(|a| a.username.clone())
            .or_else(|| reply.usage.last().map(|u| u.username.clone()));
    }
    Ok(reply)
}

/// Connects and checks that the admin user may create roles and databases.
async fn test_connection(s: &mut Session) -> Result<ActionReply, PgError> {
    let row = bounded(
        s.limit,
        "reading the admin role",
        Box::pin(
            sqlx::query(
                "SELECT current_setting('server_version'), rolsuper, rolcreaterole, rolcreatedb \
                 FROM pg_roles WHERE rolname = current_user",
            )
            .fetch_one(&mut s.conn),
        ),
    )
    .await?;
    let version: String = row.get(0);
    let (superuser, createrole, createdb): (bool, bool, bool) =
        (row.get(1), row.get(2), row.get(3));
    if !(superuser || (createrole && createdb)) {
        return Err(PgError::Privileges(
            "the admin user needs CREATEROLE and CREATEDB (or to be a superuser)".into(),
        ));
    }
    let mut outputs = Settings::new();
    outputs.insert("server_version".into(), json!(version));
    Ok(ActionReply {
        outputs,
        ..ActionReply::default()
    })
}
