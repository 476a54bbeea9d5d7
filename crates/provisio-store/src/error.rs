//! Store errors: conflicts and references are told apart from database failures so callers
//! can answer 409 rather than 500.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique rule was broken; `field` names the column (`name`, `username`).
    #[error("{field} is already taken")]
    Conflict { field: String },
    /// A row still refers to the one being removed, or a referenced row does not exist.
    #[error("the record is referenced by, or refers to, a record that prevents this change")]
    Reference,
    /// The record to update does not exist (any more).
    #[error("record not found")]
    NotFound,
    /// The change would take a number past what the database holds; `field` names the
    /// input that would (`amount_minor`).
    #[error("{field} would take a stored value out of range")]
    OutOfRange { field: String },
    /// A stored value no longer parses; a bug or a hand-edited database.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::RowNotFound = e {
            return StoreError::NotFound;
        }
        if let Some(db) = e.as_database_error() {
            match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => {
                    return StoreError::Conflict {
                        field: conflict_field(db.constraint(), db.message()),
                    }
                }
                sqlx::error::ErrorKind::ForeignKeyViolation => return StoreError::Reference,
                _ => {}
            }
        }
        StoreError::Database(e)
    }
}

/// PostgreSQL names the index (`ux_services_server_username`); SQLite names the columns
/// (`UNIQUE constraint failed: services.server_id, services.username`). Either way the
/// last column is the one a person chose.
fn conflict_field(constraint: Option<&str>, message: &str) -> String {
    if let Some(c) = constraint {
        return match c {
            "ux_services_server_username" => "username".into(),
            c if c.ends_with("_external_id") => "external_id".into(),
            c if c.ends_with("_name") => "name".into(),
            c if c.ends_with("_hash") => "key".into(),
            other => other.to_string(),
        };
    }
    message
        .rsplit(['.', ' '])
        .next()
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s == "hash" {
                "key".into()
            } else {
                s.to_string()
            }
        })
        .unwrap_or_else(|| "value".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn conflict_fields() {
        assert_eq!(super::conflict_field(Some("ux_servers_name"), ""), "name");
        assert_eq!(
            super::conflict_field(
                None,
                "UNIQUE constraint failed: services.server_id, services.username"
            ),
            "username"
        );
    }
}
