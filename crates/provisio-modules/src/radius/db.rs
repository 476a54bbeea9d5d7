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
use crate::outbound::{self, OutboundError, OutboundPolicy};

/// Where the module may connect: the outbound policy for PostgreSQL databases, the
/// directory for SQLite ones.
#[derive(Debug, Clone)]
pub struct Reach {
    pub policy: OutboundPolicy,
    pub sqlite_dir: Option<std::path::PathBuf>,
}

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
    /// The pool for a server. The URL is checked (and a PostgreSQL host resolved) at every
    /// call, and the pool connects to what was checked: a name that now points elsewhere
    /// gets a new pool, never a connection to an address that was not checked.
    pub async fn get(
        &self,
        server_id: i64,
        config: &ServerConfig,
        reach: &Reach,
    ) -> Result<Db, DbError> {
        let url = checked_url(&config.database_url, reach).await?;
        let key = PoolKey {
            url: url.clone(),
            timeout: config.timeout,
            max_connections: config.max_connections,
        };
        let mut map = self.by_server.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, db)) = map.get(&server_id) {
            if *k == key {
                return Ok(db.clone());
            }
        }
        let db = open(config, &url)?;
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

/// The URL to connect to: a SQLite file confined to the configured directory (its real
/// path), or a PostgreSQL URL whose host is replaced by an address the policy allows.
async fn checked_url(url: &str, reach: &Reach) -> Result<String, DbError> {
    match dialect_of(url).ok_or(DbError::BadUrl)? {
        Dialect::Sqlite => {
            // As sqlx reads it: the scheme, then the percent-encoded path, then options.
            let rest = &url["sqlite:".len()..];
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let (path, params) = match rest.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (rest, None),
            };
            let in_memory = params.is_some_and(|q| {
                url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "mode" && v == "memory")
            });
            let decoded = percent_encoding::percent_decode_str(path)
                .decode_utf8()
                .map_err(|_| DbError::BadUrl)?;
            if in_memory {
                return Ok(url.to_string());
            }
            match outbound::confine_sqlite(reach.sqlite_dir.as_deref(), &decoded)
                .map_err(|e| DbError::Refused(e.to_string()))?
            {
                None => Ok(url.to_string()),
                Some(real) => {
                    let real = real.to_str().ok_or(DbError::BadUrl)?;
                    let encoded =
                        percent_encoding::utf8_percent_encode(real, SQLITE_PATH).to_string();
                    Ok(match params {
                        Some(q) => format!("sqlite://{encoded}?{q}"),
                        None => format!("sqlite://{encoded}"),
                    })
                }
            }
        }
        Dialect::Postgres => {
            let mut parsed = url::Url::parse(url).map_err(|_| DbError::BadUrl)?;
            // The address to check is the URL's own host; a query may not move it.
            if parsed
                .query_pairs()
                .any(|(k, _)| matches!(&*k, "host" | "hostaddr" | "port"))
            {
                return Err(DbError::Refused(
                    "database_url: the host and port must be in the URL itself, not in its host, hostaddr or port options".into(),
                ));
            }
            let host = parsed
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| DbError::Refused("database_url: names no database host".into()))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = parsed.port().unwrap_or(5432);
            let verify_name = host.parse::<std::net::IpAddr>().is_err()
                && parsed.query_pairs().any(|(k, v)| {
                    matches!(&*k, "sslmode" | "ssl-mode") && v.eq_ignore_ascii_case("verify-full")
                });
            let addrs = reach
                .policy
                .resolve(&host, port)
                .await
                .map_err(|e| match e {
                    OutboundError::Refused(r) => DbError::Refused(r.to_string()),
                    other => DbError::Unresolved(other.to_string()),
                })?;
            if verify_name {
                // The certificate must name the host, which a connection by address cannot
                // check: every address of the name must pass, and a name that moves in
                // between cannot present the host's certificate before the password goes.
                let all = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .map_err(|e| DbError::Unresolved(format!("{host}: {e}")))?;
                for a in all {
                    reach
                        .policy
                        .check(a.ip(), Some(&host))
                        .map_err(|r| DbError::Refused(r.to_string()))?;
                }
                return Ok(url.to_string());
            }
            let ip = addrs
                .first()
                .ok_or_else(|| DbError::Unresolved(format!("{host} has no address")))?
                .ip();
            parsed.set_ip_host(ip).map_err(|_| DbError::BadUrl)?;
            Ok(parsed.to_string())
        }
    }
}

/// What must be escaped in a SQLite path inside a URL: the characters sqlx decodes or
/// splits on.
const SQLITE_PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b'%')
    .add(b'?')
    .add(b'#')
    .add(b' ');

fn open(config: &ServerConfig, url: &str) -> Result<Db, DbError> {
    sqlx::any::install_default_drivers();
    let dialect = dialect_of(url).ok_or(DbError::BadUrl)?;
    // sqlx's own parse errors may quote the URL, and with it the password.
    let options = AnyConnectOptions::from_str(url).map_err(|_| DbError::BadUrl)?;
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
    /// The outbound guard refused the database: nothing was sent.
    #[error("{0}")]
    Refused(String),
    /// The database host did not resolve: nothing was sent.
    #[error("{0}")]
    Unresolved(String),
    #[error("{1}")]
    Sql(Phase, #[source] sqlx::Error),
    #[error("the database did not answer within {0:?}")]
    TimedOut(Phase, Duration),
}

impl DbError {
    /// The module error for this failure, its message prefixed with `context`.
    pub fn into_module_error(self, context: &str) -> ModuleError {
        match self {
            DbError::BadUrl | DbError::Refused(_) => {
                ModuleError::permanent(format!("{context}: {self}"))
            }
            DbError::Unresolved(_) => ModuleError::transient(format!("{context}: {self}")),
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
