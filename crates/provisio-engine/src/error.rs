//! Engine errors: what the caller did wrong (invalid, not found, conflict) kept apart from
//! what went wrong inside (store, secrets), which callers must not show in detail.

use provisio_core::secret::SecretError;
use provisio_core::settings::FieldError;
use provisio_store::StoreError;

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input broke one or more rules; every problem names its field.
    #[error("invalid input: {}", summary(.0))]
    Invalid(Vec<FieldError>),
    #[error("{what} {key} not found")]
    NotFound { what: &'static str, key: String },
    /// The request clashes with the current state (a taken name, a record still in use).
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    /// A gate said no; `handler` names it and `reason` is what it said.
    #[error("forbidden by handler '{handler}': {reason}")]
    Forbidden { handler: String, reason: String },
    #[error("storage failed")]
    Store(#[source] StoreError),
    #[error("a stored secret could not be decrypted")]
    Secret(#[source] SecretError),
}

fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { field } => EngineError::Conflict {
                message: format!("{field} is already taken"),
                field: Some(field),
            },
            StoreError::Reference => EngineError::Conflict {
                field: None,
                message: "the record is still referenced by other records".into(),
            },
            StoreError::OutOfRange { field } => EngineError::Invalid(vec![field_error(
                &field,
                "range",
                "would take the stored value out of range",
            )]),
            StoreError::NotFound => EngineError::NotFound {
                what: "record",
                key: String::new(),
            },
            other => EngineError::Store(other),
        }
    }
}

impl From<SecretError> for EngineError {
    fn from(e: SecretError) -> Self {
        EngineError::Secret(e)
    }
}

/// A field error with a message that starts with the field's name.
pub(crate) fn field_error(field: &str, rule: &str, message: impl std::fmt::Display) -> FieldError {
    FieldError {
        field: field.to_string(),
        rule: rule.to_string(),
        message: format!("{field}: {message}"),
    }
}

/// Collects field errors while input is parsed, so every problem is reported at once.
#[derive(Default)]
pub(crate) struct Problems(pub Vec<FieldError>);

impl Problems {
    pub fn push(&mut self, field: &str, rule: &str, message: impl std::fmt::Display) {
        self.0.push(field_error(field, rule, message));
    }

    /// Records the error of a parse, if any, under `field` and returns the value if it parsed.
    pub fn take<T>(
        &mut self,
        field: &str,
        r: Result<T, provisio_core::text::TextError>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(field, e.rule, e.message);
                None
            }
        }
    }

    /// Adds schema errors, prefixing their field with `prefix.`.
    pub fn extend_prefixed(&mut self, prefix: &str, errors: Vec<FieldError>) {
        for e in errors {
            let field = format!("{prefix}.{}", e.field);
            let message = if e.message.starts_with(&e.field) {
                format!("{prefix}.{}", e.message)
            } else {
                format!("{field}: {}", e.message)
            };
            self.0.push(FieldError {
                field,
                rule: e.rule,
                message,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(EngineError::Invalid(self.0))
        }
    }
}

/// The error for a record that does not exist, as every room words it.
pub(crate) fn not_found(what: &'static str, key: impl std::fmt::Display) -> EngineError {
    EngineError::NotFound {
        what,
        key: key.to_string(),
    }
}
