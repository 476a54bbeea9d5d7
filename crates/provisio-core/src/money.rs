//! Money as integer minor units with an ISO 4217 currency code, so balances are exact.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::text::TextError;

/// A three-letter upper-case ISO 4217 currency code such as `EUR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "EUR")]
pub struct Currency(String);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, TextError> {
        if s.len() == 3 && s.chars().all(|c| c.is_ascii_uppercase()) {
            Ok(Self(s.to_string()))
        } else {
            Err(TextError {
                rule: "pattern",
                message: format!(
                    "'{s}' is not a three-letter upper-case currency code such as EUR"
                ),
            })
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = TextError;
    fn try_from(v: String) -> Result<Self, TextError> {
        Self::parse(&v)
    }
}
impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}
impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
