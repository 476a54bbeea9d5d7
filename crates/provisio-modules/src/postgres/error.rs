//! The `postgres` module's errors and how each one is classed for the engine: could not
//! connect (retry), refused or invalid (a person must look), or lost while a statement was
//! under way (look the account up before retrying).

use std::time::Duration;

use provisio_core::module::ModuleError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
    /// No session was established, so nothing was done.
    #[error("could not connect to PostgreSQL: {}", describe(.0))]
    Connect(sqlx::Error),
    #[error("could not connect to PostgreSQL within {} s", .0.as_secs())]
    ConnectTimeout(Duration),
    /// The outbound policy refused the address; nothing was sent.
    #[error("could not connect to PostgreSQL: {0}")]
    Refused(crate::outbound::Refused),
    /// The host name did not resolve; nothing was sent.
    #[error("could not connect to PostgreSQL: {0}")]
    Unresolved(String),
    /// A statement failed or its session broke; `what` names the step.
    #[error("{what}: {}", describe(.source))]
    Statement {
        what: &'static str,
        source: sqlx::Error,
    },
    /// No answer within the statement timeout (plus a margin); the statement may still run.
    #[error("{what}: no answer within {} s", .after.as_secs())]
    StatementTimeout { what: &'static str, after: Duration },
    /// Settings or input that no retry will fix.
    #[error("{0}")]
    InvalidInput(String),
    /// The account the action is about does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken by something that is not this service's.
    #[error("{0}")]
    Conflict(String),
    /// The admin user may not do what the module needs.
    #[error("{0}")]
    Privileges(String),
}

/// SQLSTATE classes and codes, from the PostgreSQL manual's appendix A.
mod code {
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const DUPLICATE_DATABASE: &str = "42P04";
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// Class 08: connection exception.
    pub const CONNECTION_CLASS: &str = "08";
    /// Class 28: invalid authorization specification (bad password, no such user).
    pub const AUTH_CLASS: &str = "28";
    /// Class 53: insufficient resources (too many connections, disk full, out of memory).
    pub const RESOURCES_CLASS: &str = "53";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    pub const OBJECT_IN_USE: &str = "55006";
    pub const QUERY_CANCELED: &str = "57014";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CRASH_SHUTDOWN: &str = "57P02";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
}

pub(crate) use code::{DUPLICATE_DATABASE, DUPLICATE_OBJECT, UNDEFINED_OBJECT};

/// The SQLSTATE of a database error.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The error without the statement text (which may hold a password verifier) and without the
/// connection URL: the server's message, or the transport's.
fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        sqlx::Error::Io(io) => format!("connection error: {io}"),
        sqlx::Error::Tls(tls) => format!("TLS error: {tls}"),
        sqlx::Error::Protocol(p) => format!("protocol error: {p}"),
        sqlx::Error::Configuration(_) => "invalid connection settings".into(),
        other => other.to_string(),
    }
}

impl PgError {
    /// `changes`: whether the action changes the remote. A read that broke off has changed
    /// nothing, so it can simply be retried.
    pub(crate) fn into_module_error(self, changes: bool) -> ModuleError {
        let message = self.to_string();
        let maybe_acted = if changes {
            ModuleError::unknown(format!("{message}; the change may have been applied"))
        } else {
            ModuleError::transient(message.clone())
        };
        match &self {
            PgError::Connect(e) => match e {
                sqlx::Error::Database(_) => match sqlstate(e).as_deref() {
                    Some(c) if c.starts_with(code::AUTH_CLASS) => ModuleError::permanent(message),
                    Some(c)
                        if c.starts_with(code::RESOURCES_CLASS)
                            || c.starts_with(code::CONNECTION_CLASS)
                            || c == code::CANNOT_CONNECT_NOW
                            || c == code::ADMIN_SHUTDOWN
                            || c == code::CRASH_SHUTDOWN =>
                    {
                        ModuleError::transient(message)
                    }
                    // e.g. 3D000: the admin database does not exist.
                    _ => ModuleError::permanent(message),
                },
                sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => {
                    ModuleError::permanent(message)
                }
                // Refused, reset, unreachable, DNS: nothing was sent yet.
                _ => ModuleError::transient(message),
            },
            PgError::ConnectTimeout(_) | PgError::Unresolved(_) => ModuleError::transient(message),
            PgError::Refused(_) => ModuleError::permanent(message),
            PgError::Statement { source, .. } => match source {
                sqlx::Error::Database(_) => match sqlstate(source).as_deref() {
                    // The statement was rolled back: retrying is safe.
                    Some(
                        code::SERIALIZATION_FAILURE
                        | code::DEADLOCK_DETECTED
                        | code::LOCK_NOT_AVAILABLE
                        | code::OBJECT_IN_USE
                        | code::QUERY_CANCELED
                        | code::CANNOT_CONNECT_NOW,
                    ) => ModuleError::transient(message),
                    Some(c) if c.starts_with(code::RESOURCES_CLASS) => {
                        ModuleError::transient(message)
                    }
                    // The server went away while the statement ran.
                    Some(code::ADMIN_SHUTDOWN | code::CRASH_SHUTDOWN) => maybe_acted,
                    Some(c) if c.starts_with(code::CONNECTION_CLASS) => maybe_acted,
                    _ => ModuleError::permanent(message),
                },
                // The session broke after the statement may have been sent.
                _ => maybe_acted,
            },
            PgError::StatementTimeout { .. } => maybe_acted,
            PgError::InvalidInput(_)
            | PgError::NotFound(_)
            | PgError::Conflict(_)
            | PgError::Privileges(_) => ModuleError::permanent(message),
        }
    }
}
