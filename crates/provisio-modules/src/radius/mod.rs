//! The `radius` module: ISP subscribers in a FreeRADIUS SQL database (SQLite or
//! PostgreSQL). A subscriber is a password in `radcheck` and a package group in
//! `radusergroup`; the group's `radgroupreply` rows come from the product. The reference
//! is `docs/modules/radius.md`.

mod config;
mod db;
mod password;
mod sql;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use provisio_core::module::{
    Action, ActionReply, ActionRequest, Capability, Metric, Module, ModuleError, ModuleInfo,
    RemoteAccount, SchemaScope, UsageReport,
};
use provisio_core::settings::{FieldError, Settings};
use secrecy::ExposeSecret;
use serde_json::Value;
use sqlx::AnyConnection;

use config::{BadSettings, Package, ServerConfig, SuspendMethod};
use db::{timed, Db, DbError, Phase, Pools, Reach};

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// The `radius` module. One instance serves every server; each server gets its own pool.
pub struct RadiusModule {
    info: ModuleInfo,
    pools: Pools,
    reach: Reach,
}

impl RadiusModule {
    /// With the default outbound policy and no SQLite directory (so no SQLite database).
    pub fn new() -> Self {
        Self::with(&crate::ModuleOptions::default())
    }

    pub fn with(options: &crate::ModuleOptions) -> Self {
        Self {
            info: ModuleInfo {
                name: "radius".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "ISP subscribers in a FreeRADIUS SQL database (SQLite or PostgreSQL): password, package group, suspension, accounting usage.".into(),
                capabilities: Capability::lifecycle_and(&[
                    Capability::Lookup,
                    Capability::ListAccounts,
                    Capability::Usage,
                    Capability::TestConnection,
                ]),
                custom_actions: vec![],
                server_schema: config::server_schema(),
                product_schema: config::product_schema(),
                service_schema: config::service_schema(),
            },
            pools: Pools::default(),
            reach: Reach {
                policy: options.outbound.clone(),
                sqlite_dir: options.radius_sqlite_dir.clone(),
            },
        }
    }
}

impl Default for RadiusModule {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Module for RadiusModule {
    fn info(&self) -> &ModuleInfo {
        &self.info
    }

    fn check_settings(&self, scope: SchemaScope, settings: &Settings) -> Vec<FieldError> {
        match scope {
            SchemaScope::Server => match settings.get("database_url") {
                // A sealed secret arrives as an object and was checked when it was given.
                Some(Value::String(url)) if db::dialect_of(url).is_none() => vec![FieldError {
                    field: "database_url".into(),
                    rule: provisio_core::settings::rule::URL_SCHEME.into(),
                    message: "database_url must start with sqlite:, postgres: or postgresql:"
                        .into(),
                }],
                _ => Vec::new(),
            },
            SchemaScope::Product => {
                let mut errors = config::check_attributes(settings, "reply_attributes");
                errors.extend(config::check_attributes(settings, "check_attributes"));
                errors
            }
            SchemaScope::Service => config::check_attributes(settings, "reply_attributes"),
        }
    }

    /// The password inside the database URL, in the forms a driver may report it.
    fn more_secrets(&self, request: &ActionRequest) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(url) = request
            .server
            .settings
            .get("database_url")
            .and_then(Value::as_str)
        {
            if let Ok(parsed) = url::Url::parse(url) {
                if let Some(p) = parsed.password() {
                    out.push(p.to_string());
                }
            }
            out.extend(db::url_password(url));
        }
        out
    }

    async fn call(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        // The registry's layer redacts what leaves.
        self.run(request).await
    }
}

fn bad(e: BadSettings) -> ModuleError {
    ModuleError::permanent(e.0)
}

/// What one lifecycle action writes, decided before the transaction starts.
enum Write {
    Create {
        password: String,
        package: Package,
        reply: Vec<config::AttributeRow>,
    },
    Suspend,
    Unsuspend,
    Terminate,
    ChangePassword {
        password: String,
    },
    ChangePackage {
        package: Package,
    },
}

impl RadiusModule {
    async fn run(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        let action = request.action.as_str();
        let server = ServerConfig::parse(&request.server.settings).map_err(bad)?;
        let db = self
            .pools
            .get(request.server.id, &server, &self.reach)
            .await
            .map_err(|e| e.into_module_error(action))?;
        match &request.action {
            Action::Lookup => lookup(&db, &server, username(request)?).await,
            Action::Renew => renew(&db, &server, username(request)?).await,
            Action::ListAccounts => list_accounts(&db, &server, &request.params).await,
            Action::Usage => usage(&db, &server, request).await,
            Action::TestConnection => test_connection(&db, &server).await,
            Action::Create
            | Action::Suspend
            | Action::Unsuspend
            | Action::Terminate
            | Action::ChangePassword
            | Action::ChangePackage => {
                let user = username(request)?;
                let write = plan(request, &server)?;
                let context = format!("{action} {user}");
                write_action(&db, &server, user, write)
                    .await
                    .map_err(|e| match e {
                        Failed::Db(e) => e.into_module_error(&context),
                        Failed::Refused(m) => ModuleError::permanent(format!("{context}: {m}")),
                    })?;
                Ok(ActionReply::default())
            }
            other => Err(ModuleError::permanent(format!(
                "the radius module has no action {other}"
            ))),
        }
    }
}

fn username(request: &ActionRequest) -> Result<&str, ModuleError> {
    let service = request.service.as_ref().ok_or_else(|| {
        ModuleError::permanent(format!("{}: the request has no service", request.action))
    })?;
    config::check_name("the username", &service.username)
        .map_err(|m| ModuleError::permanent(format!("{}: {m}", request.action)))?;
    Ok(&service.username)
}

fn check_password(action: &str, password: &str) -> Result<(), ModuleError> {
    if password.is_empty() || password.len() > config::MAX_VALUE_LEN {
        return Err(ModuleError::permanent(format!(
            "{action}: the password must be 1 to {} bytes",
            config::MAX_VALUE_LEN
        )));
    }
    if password.chars().any(char::is_control) {
        return Err(ModuleError::permanent(format!(
            "{action}: the password contains control characters"
        )));
    }
    Ok(())
}

/// Checks the input of a lifecycle action and turns it into the writes to make.
fn plan(request: &ActionRequest, server: &ServerConfig) -> Result<Write, ModuleError> {
    let action = request.action.as_str();
    let package_of = |settings: &Settings, what: &str| -> Result<Package, ModuleError> {
        let p = Package::parse(settings, what).map_err(bad)?;
        if p.group == server.suspend_group {
            return Err(ModuleError::permanent(format!(
                "{action}: {what}.group is the server's suspend group"
            )));
        }
        Ok(p)
    };
    Ok(match &request.action {
        Action::Create => {
            let service = request.service.as_ref().expect("checked by username()");
            let password = service.password.expose_secret().to_string();
            check_password(action, &password)?;
            Write::Create {
                password,
                package: package_of(&request.product.settings, "product")?,
                reply: config::service_reply(&service.settings).map_err(bad)?,
            }
        }
        Action::Suspend => Write::Suspend,
        Action::Unsuspend => Write::Unsuspend,
        Action::Terminate => Write::Terminate,
        Action::ChangePassword => {
            let password = request
                .params
                .get("new_password")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ModuleError::permanent("change_password: params.new_password is missing")
                })?
                .to_string();
            check_password(action, &password)?;
            Write::ChangePassword { password }
        }
        Action::ChangePackage => {
            let settings = request
                .params
                .get("new_product")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    ModuleError::permanent("change_package: params.new_product is missing")
                })?;
            Write::ChangePackage {
                package: package_of(settings, "params.new_product")?,
            }
        }
        _ => unreachable!("only lifecycle actions are planned"),
    })
}

/// Why a write did not happen.
enum Failed {
    Db(DbError),
    /// The tables' state forbids it (no such account, someone else's account).
    Refused(String),
}

impl From<DbError> for Failed {
    fn from(e: DbError) -> Self {
        Failed::Db(e)
    }
}

/// Runs one lifecycle action's writes in one transaction. Every action converges on its
/// end state, so a retry after an attempt whose commit went unanswered writes nothing twice.
async fn write_action(
    db: &Db,
    server: &ServerConfig,
    user: &str,
    write: Write,
) -> Result<(), Failed> {
    let t = server.timeout;
    let before = Phase::BeforeCommit;
    let mut tx = timed(
        t,
        before,
        db.pool.begin_with(sql::begin_statement(db.dialect)),
    )
    .await?;
    let conn: &mut AnyConnection = &mut tx;
    timed(
        t,
        before,
        sql::lock(conn, db.dialect, &format!("user:{user}")),
    )
    .await?;
    let exists = timed(t, before, sql::user_exists(conn, user)).await?;
    let missing = || Failed::Refused("there is no such account".into());
    match write {
        Write::Create {
            password,
            package,
            reply,
        } => {
            if exists {
                // Only an earlier attempt of this create (same password) may be converged;
                // anything else is somebody else's account.
                let stored = timed(t, before, sql::passwords(conn, user)).await?;
                if !stored
                    .iter()
                    .any(|(attr, value)| password::matches(attr, value, &password))
                {
                    return Err(Failed::Refused(
                        "the account already exists with another password".into(),
                    ));
                }
            }
            sync_package(conn, db, &package, t).await?;
            let value = password::encode(server.password_attribute, &password);
            timed(
                t,
                before,
                sql::set_password(conn, user, server.password_attribute, &value),
            )
            .await?;
            timed(
                t,
                before,
                sql::set_package_group(conn, user, &package.group, None),
            )
            .await?;
            timed(t, before, sql::set_user_reply(conn, user, &reply)).await?;
        }
        Write::Suspend => {
            if !exists {
                return Err(missing());
            }
            match server.suspend_method {
                SuspendMethod::Group => {
                    let group = &server.suspend_group;
                    timed(
                        t,
                        before,
                        sql::lock(conn, db.dialect, &format!("group:{group}")),
                    )
                    .await?;
                    timed(t, before, sql::suspend_by_group(conn, user, group)).await?;
                }
                SuspendMethod::Check => {
                    timed(t, before, sql::suspend_by_check(conn, user)).await?;
                }
            }
        }
        Write::Unsuspend => {
            if !exists {
                return Err(missing());
            }
            timed(t, before, sql::unsuspend(conn, user, &server.suspend_group)).await?;
        }
        Write::Terminate => {
            // Already gone is done: a retried terminate succeeds.
            timed(t, before, sql::delete_user(conn, user)).await?;
        }
        Write::ChangePassword { password } => {
            if !exists {
                return Err(missing());
            }
            let value = password::encode(server.password_attribute, &password);
            timed(
                t,
                before,
                sql::set_password(conn, user, server.password_attribute, &value),
            )
            .await?;
        }
        Write::ChangePackage { package } => {
            if !exists {
                return Err(missing());
            }
            sync_package(conn, db, &package, t).await?;
            timed(
                t,
                before,
                sql::set_package_group(conn, user, &package.group, Some(&server.suspend_group)),
            )
            .await?;
        }
    }
    timed(t, Phase::Commit, tx.commit()).await?;
    Ok(())
}

/// Writes the package group's attribute rows from the product, unless the product leaves
/// the group to an administrator.
async fn sync_package(
    conn: &mut AnyConnection,
    db: &Db,
    package: &Package,
    t: std::time::Duration,
) -> Result<(), DbError> {
    if !package.manage_group {
        return Ok(());
    }
    let before = Phase::BeforeCommit;
    let group = &package.group;
    timed(
        t,
        before,
        sql::lock(conn, db.dialect, &format!("group:{group}")),
    )
    .await?;
    timed(
        t,
        before,
        sql::sync_group(conn, sql::GroupTable::Reply, group, &package.reply),
    )
    .await?;
    timed(
        t,
        before,
        sql::sync_group(conn, sql::GroupTable::Check, group, &package.check),
    )
    .await?;
    Ok(())
}

/// A read-only connection; its failures are never unknown.
async fn read_conn(
    db: &Db,
    server: &ServerConfig,
) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, DbError> {
    timed(server.timeout, Phase::BeforeCommit, db.pool.acquire()).await
}

async fn lookup(db: &Db, server: &ServerConfig, user: &str) -> Result<ActionReply, ModuleError> {
    let err = |e: DbError| e.into_module_error(&format!("lookup {user}"));
    let t = server.timeout;
    let mut conn = read_conn(db, server).await.map_err(err)?;
    let exists = timed(t, Phase::BeforeCommit, sql::user_exists(&mut conn, user))
        .await
        .map_err(err)?;
    if !exists {
        return Ok(ActionReply::default());
    }
    let states = timed(t, Phase::BeforeCommit, sql::states(&mut conn, user, user))
        .await
        .map_err(err)?;
    let state = states.get(user).cloned().unwrap_or_default();
    Ok(ActionReply {
        account: Some(account(user, &state, server)),
        ..Default::default()
    })
}

/// RADIUS has no expiry of its own to extend (the engine suspends and unsuspends), so a
/// renewal only confirms that the account is there.
async fn renew(db: &Db, server: &ServerConfig, user: &str) -> Result<ActionReply, ModuleError> {
    let err = |e: DbError| e.into_module_error(&format!("renew {user}"));
    let mut conn = read_conn(db, server).await.map_err(err)?;
    let exists = timed(
        server.timeout,
        Phase::BeforeCommit,
        sql::user_exists(&mut conn, user),
    )
    .await
    .map_err(err)?;
    if exists {
        Ok(ActionReply::default())
    } else {
        Err(ModuleError::permanent(format!(
            "renew {user}: there is no such account"
        )))
    }
}

fn account(user: &str, state: &sql::AccountState, server: &ServerConfig) -> RemoteAccount {
    let suspended = state.suspended(&server.suspend_group);
    RemoteAccount {
        username: user.to_string(),
        status: Some(if suspended { "suspended" } else { "active" }.into()),
        package: state.package(&server.suspend_group),
    }
}

/// `params.cursor` (a username, exclusive) and `params.limit`.
fn page_params(params: &Settings) -> Result<(String, i64), ModuleError> {
    let cursor = match params.get("cursor") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ModuleError::permanent("params.cursor must be text")),
    };
    let limit = match params.get("limit") {
        None | Some(Value::Null) => DEFAULT_PAGE,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ModuleError::permanent(format!("params.limit must be 1 to {MAX_PAGE}"))
            })?,
    };
    Ok((cursor, limit))
}

async fn list_accounts(
    db: &Db,
    server: &ServerConfig,
    params: &Settings,
) -> Result<ActionReply, ModuleError> {
    let err = |e: DbError| e.into_module_error("list_accounts");
    let (cursor, limit) = page_params(params)?;
    let t = server.timeout;
    let mut conn = read_conn(db, server).await.map_err(err)?;
    let users = timed(
        t,
        Phase::BeforeCommit,
        sql::account_page(&mut conn, &cursor, limit),
    )
    .await
    .map_err(err)?;
    let (Some(first), Some(last)) = (users.first(), users.last()) else {
        return Ok(ActionReply::default());
    };
    let states = timed(t, Phase::BeforeCommit, sql::states(&mut conn, first, last))
        .await
        .map_err(err)?;
    let none = sql::AccountState::default();
    let accounts = users
        .iter()
        .map(|u| account(u, states.get(u).unwrap_or(&none), server))
        .collect();
    Ok(ActionReply {
        accounts,
        next: next_cursor(&users, limit),
        ..Default::default()
    })
}

/// A full page may have a successor; a short one is the last.
fn next_cursor(users: &[String], limit: i64) -> Option<String> {
    (users.len() as i64 == limit)
        .then(|| users.last().cloned())
        .flatten()
}

/// The start of the usage period: `params.since` (RFC 3339), or the first instant of the
/// current month, UTC.
fn period_start(params: &Settings, now: DateTime<Utc>) -> Result<i64, ModuleError> {
    match params.get("since") {
        None | Some(Value::Null) => Ok(Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .map(|d| d.timestamp())
            .unwrap_or(0)),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp())
            .map_err(|_| ModuleError::permanent("params.since must be an RFC 3339 time")),
        Some(_) => Err(ModuleError::permanent(
            "params.since must be an RFC 3339 time",
        )),
    }
}

async fn usage(
    db: &Db,
    server: &ServerConfig,
    request: &ActionRequest,
) -> Result<ActionReply, ModuleError> {
    let err = |e: DbError| e.into_module_error("usage");
    let (cursor, limit) = page_params(&request.params)?;
    let since = period_start(&request.params, Utc::now())?;
    // The data cap is known for the accounts in the request's product's group.
    let cap = Package::parse(&request.product.settings, "product")
        .ok()
        .and_then(|p| p.data_cap.map(|c| (p.group, c)));
    let t = server.timeout;
    let mut conn = read_conn(db, server).await.map_err(err)?;
    let users = timed(
        t,
        Phase::BeforeCommit,
        sql::usage_page(&mut conn, db.dialect, &cursor, limit, since),
    )
    .await
    .map_err(err)?;
    let (Some(first), Some(last)) = (users.first(), users.last()) else {
        return Ok(ActionReply::default());
    };
    let octets = timed(
        t,
        Phase::BeforeCommit,
        sql::octets(&mut conn, db.dialect, first, last, since),
    )
    .await
    .map_err(err)?;
    let states = if cap.is_some() {
        timed(t, Phase::BeforeCommit, sql::states(&mut conn, first, last))
            .await
            .map_err(err)?
    } else {
        Default::default()
    };
    let usage = users
        .iter()
        .map(|u| {
            let limit = cap.as_ref().and_then(|(group, c)| {
                let package = states.get(u).and_then(|s| s.package(&server.suspend_group));
                (package.as_deref() == Some(group.as_str())).then_some(*c as f64)
            });
            let used = octets.get(u).copied().unwrap_or(0).max(0) as f64;
            UsageReport {
                username: u.clone(),
                metrics: [(
                    "data".to_string(),
                    Metric {
                        used,
                        limit,
                        unit: Some("bytes".into()),
                    },
                )]
                .into(),
            }
        })
        .collect();
    Ok(ActionReply {
        usage,
        next: next_cursor(&users, limit),
        ..Default::default()
    })
}

async fn test_connection(db: &Db, server: &ServerConfig) -> Result<ActionReply, ModuleError> {
    let err = |e: DbError| e.into_module_error("test_connection");
    let t = server.timeout;
    let mut conn = read_conn(db, server).await.map_err(err)?;
    let mut missing = Vec::new();
    for (table, columns) in sql::TABLES {
        let statement = format!("SELECT {columns} FROM {table} WHERE 1 = 0");
        let probe = sqlx::query(&statement).fetch_all(&mut *conn);
        match timed(t, Phase::BeforeCommit, probe).await {
            Ok(_) => {}
            Err(DbError::Sql(_, sqlx::Error::Database(e))) => {
                missing.push(format!("{table} ({})", e.message()))
            }
            Err(e) => return Err(err(e)),
        }
    }
    if missing.is_empty() {
        Ok(ActionReply::default())
    } else {
        Err(ModuleError::permanent(format!(
            "test_connection: the FreeRADIUS schema is incomplete: {}",
            missing.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_check_out_and_the_registry_has_the_module() {
        let module = RadiusModule::new();
        for scope in [
            SchemaScope::Server,
            SchemaScope::Product,
            SchemaScope::Service,
        ] {
            module.info().schema(scope).check().unwrap();
        }
        assert!(crate::Registry::builtin().get("radius").is_some());
    }

    #[test]
    fn period_defaults_to_the_month() {
        let now = Utc.with_ymd_and_hms(2026, 3, 17, 12, 30, 0).unwrap();
        let start = period_start(&Settings::new(), now).unwrap();
        assert_eq!(
            start,
            Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0)
                .unwrap()
                .timestamp()
        );
        let mut p = Settings::new();
        p.insert("since".into(), "2026-02-01T00:00:00+01:00".into());
        assert_eq!(
            period_start(&p, now).unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 31, 23, 0, 0)
                .unwrap()
                .timestamp()
        );
        p.insert("since".into(), "yesterday".into());
        assert!(period_start(&p, now).is_err());
    }
}
