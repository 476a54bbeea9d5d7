//! Connections to RADIUS databases (one pool per server, SQLite or PostgreSQL through
//! sqlx's `Any` driver, since the statements are the same) and the typed failures of a
//! database call, classed the way the engine needs them.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use provisio_core::module::ModuleError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;

use super::config::ServerConfig;

/// Which SQL dialect a database speaks, where the statements differ (locking, time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A pool and what it talks to.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub dialect: Dialect,
}

/// Pools by server id, rebuilt when a server's connection settings change.
#[derive(Default)]
pub struct Pools {
    by_server: Mutex<HashMap<i64, (PoolKey, Db)>>,
}

#[derive(PartialEq, Eq)]
struct PoolKey {
    url: String,
    timeout: Duration,
    max_connections: u32,
}

impl Pools {
    pub fn get(&self, server_id: i64, config: &ServerConfig) -> Result<Db, DbError> {
        let key = PoolKey {
            url: config.database_url.clone(),
            timeout: config.timeout,
            max_connections: config.max_connections,
        };
        let mut map = self.by_server.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, db)) = map.get(&server_id) {
            if *k == key {
                return Ok(db.clone());
            }
        }
        let db = open(config)?;
        // A replaced pool closes once its last borrowed connection is returned.
        map.insert(server_id, (key, db.clone()));
        Ok(db)
    }
}

/// The scheme of a database URL, without looking at (or ever echoing) the rest of it.
pub fn dialect_of(url: &str) -> Option<Dialect> {
    let scheme = url.split_once(':')?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "sqlite" => Some(Dialect::Sqlite),
        "postgres" | "postgresql" => Some(Dialect::Postgres),
        _ => None,
    }
}

/// The password inside a database URL, to be redacted from anything the module reports.
pub fn url_password(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let raw = parsed.password()?;
    let decoded = percent_decode(raw);
    Some(decoded)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn open(config: &ServerConfig) -> Result<Db, DbError> {
    sqlx::any::install_default_drivers();
    let dialect = dialect_of(&config.database_url).ok_or(DbError::BadUrl)?;
    // sqlx's own parse errors may quote the URL, and with it the password.
    let options = AnyConnectOptions::from_str(&config.database_url).map_err(|_| DbError::BadUrl)?;
    let pool = AnyPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(0)
        .acquire_timeout(config.timeout)
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(options);
    Ok(Db { pool, dialect })
}

/// Where a database call failed, which decides whether it may have taken effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connecting, or statements inside a transaction that was not committed: nothing
    /// took effect (an uncommitted transaction is rolled back when its connection goes).
    BeforeCommit,
    /// The commit was sent: it may have been applied.
    Commit,
}

/// A failed database call.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database_url is not a sqlite:// or postgres:// URL")]
    BadUrl,
    #[error("{1}")]
    Sql(Phase, #[source] sqlx::Error),
    #[error("the database did not answer within {0:?}")]
    TimedOut(Phase, Duration),
}

impl DbError {
    /// The module error for this failure, its message prefixed with `context`.
    pub fn into_module_error(self, context: &str) -> ModuleError {
        match self {
            DbError::BadUrl => ModuleError::permanent(format!("{context}: {self}")),
            DbError::TimedOut(Phase::BeforeCommit, t) => ModuleError::transient(format!(
                "{context}: the database did not answer within {}s; nothing was committed",
                t.as_secs()
            )),
            DbError::TimedOut(Phase::Commit, t) => ModuleError::unknown(format!(
                "{context}: the commit got no answer within {}s; it may have been applied",
                t.as_secs()
            )),
            DbError::Sql(phase, e) => {
                let (class, what) = classify(&e);
                let message = format!("{context}: {what}");
                match (class, phase) {
                    (Class::Permanent, _) => ModuleError::permanent(message),
                    (Class::Transient, Phase::BeforeCommit) => ModuleError::transient(message),
                    // The database refused the commit: it answered, so nothing was applied.
                    (Class::Refused, _) => ModuleError::transient(message),
                    (Class::Transient, Phase::Commit) => {
                        ModuleError::unknown(format!("{message}; the commit may have been applied"))
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Lost contact or resources: try again.
    Transient,
    /// The database answered with an error worth retrying (a lock, a serialisation
    /// failure): whatever the phase, the transaction did not commit.
    Refused,
    /// Wrong schema, wrong credentials, bad data: a person must look.
    Permanent,
}

/// The class of an sqlx error and a description without any value from the URL.
fn classify(e: &sqlx::Error) -> (Class, String) {
    use sqlx::Error as E;
    match e {
        E::PoolTimedOut => (
            Class::Transient,
            "could not get a database connection in time (is the database up?)".into(),
        ),
        E::PoolClosed | E::WorkerCrashed => {
            (Class::Transient, "the database connection closed".into())
        }
        E::Io(io) => (
            Class::Transient,
            format!("database connection failed: {io}"),
        ),
        E::Tls(_) => (Class::Transient, "TLS to the database failed".into()),
        E::Protocol(p) => (Class::Transient, format!("database protocol error: {p}")),
        E::Configuration(_) => (
            Class::Permanent,
            "the database_url options are invalid".into(),
        ),
        E::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let what = format!("database error {code}: {}", db.message());
            let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
            (class_of_code(sqlite, &code), what)
        }
        other => (Class::Permanent, format!("database error: {other}")),
    }
}

/// PostgreSQL SQLSTATEs are five characters (some all digits); SQLite codes are numbers
/// whose low byte is the primary code.
fn class_of_code(sqlite: bool, code: &str) -> Class {
    if sqlite {
        let n = code.parse::<i64>().unwrap_or(1);
        return match n & 0xff {
            // SQLITE_BUSY, SQLITE_LOCKED: FreeRADIUS or another writer holds the lock.
            5 | 6 => Class::Refused,
            // SQLITE_IOERR, SQLITE_FULL (disk), SQLITE_PROTOCOL.
            10 | 13 | 15 => Class::Transient,
            _ => Class::Permanent,
        };
    }
    match code.get(..2) {
        // Serialisation failure, deadlock, lock not available.
        Some("40") | Some("55") => Class::Refused,
        // Connection exceptions, insufficient resources, operator intervention, system errors.
        Some("08") | Some("53") | Some("57") | Some("58") => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Runs `f` with `timeout`, as a failure of `phase` when it runs out.
pub async fn timed<T>(
    timeout: Duration,
    phase: Phase,
    f: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DbError::Sql(phase, e)),
        Err(_) => Err(DbError::TimedOut(phase, timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_found_decoded() {
        assert_eq!(
            url_password("postgres://radius:p%40ss%2Fw0rd@127.0.0.1:5432/radius").as_deref(),
            Some("p@ss/w0rd")
        );
        assert_eq!(url_password("sqlite:///var/lib/radius.db"), None);
        assert_eq!(dialect_of("PostgreSQL://x"), Some(Dialect::Postgres));
        assert_eq!(dialect_of("mysql://x"), None);
    }

    #[test]
    fn only_an_unanswered_commit_is_unknown() {
        use provisio_core::module::ErrorKind;
        let reset = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let t = Duration::from_secs(3);
        let kind = |e: DbError| e.into_module_error("create alice").kind;
        assert_eq!(
            kind(DbError::Sql(Phase::Commit, sqlx::Error::Io(reset()))),
            ErrorKind::Unknown
        );
        assert_eq!(
            kind(DbError::TimedOut(Phase::Commit, t)),
            ErrorKind::Unknown
        );
        assert_eq!(
            kind(DbError::Sql(Phase::BeforeCommit, sqlx::Error::Io(reset()))),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(DbError::TimedOut(Phase::BeforeCommit, t)),
            ErrorKind::Transient
        );
        assert_eq!(
            kind(DbError::Sql(Phase::BeforeCommit, sqlx::Error::PoolTimedOut)),
            ErrorKind::Transient
        );
        assert_eq!(kind(DbError::BadUrl), ErrorKind::Permanent);
    }

    #[test]
    fn codes_are_classed() {
        assert_eq!(class_of_code(true, "5"), Class::Refused);
        assert_eq!(class_of_code(true, "517"), Class::Refused);
        assert_eq!(class_of_code(true, "1"), Class::Permanent);
        assert_eq!(class_of_code(false, "40001"), Class::Refused);
        assert_eq!(class_of_code(false, "08006"), Class::Transient);
        assert_eq!(class_of_code(false, "42P01"), Class::Permanent);
        assert_eq!(class_of_code(false, "28P01"), Class::Permanent);
    }
}
