//! Checked text newtypes: names, emails, usernames and custom-field keys, parsed once at the boundary.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a piece of text was refused; `rule` is a stable machine-readable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TextError {
    pub rule: &'static str,
    pub message: String,
}

fn err(rule: &'static str, message: impl Into<String>) -> TextError {
    TextError {
        rule,
        message: message.into(),
    }
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = TextError;
            fn try_from(v: String) -> Result<Self, TextError> {
                Self::parse(&v)
            }
        }
    };
}

text_type!(
    /// A person's or company's display name: 1 to 200 characters, no control characters.
    DisplayName
);
text_type!(
    /// A record name used as a handle (servers, products): 1 to 100 of `a-z A-Z 0-9 . _ -`,
    /// starting with a letter or digit, so it is safe in URLs, config files and shells.
    Handle
);
text_type!(
    /// An email address (one `@`, a dotted domain, no spaces), at most 254 characters.
    Email
);
text_type!(
    /// A service's login on the remote system: 1 to 64 of `a-z A-Z 0-9 . _ - @`, starting
    /// with a letter or digit. Modules with stricter rules check them themselves.
    Username
);

text_type!(
    /// The billing system's own id for a record (WHMCS's `userid` or `serviceid`): 1 to 128
    /// of `a-z A-Z 0-9 . _ - : @`, starting with a letter or digit, unique per kind, so it is
    /// safe as a path segment and a query value.
    ExternalId
);

impl ExternalId {
    pub const PATTERN: &'static str = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$";

    pub fn parse(s: &str) -> Result<Self, TextError> {
        handle_like(
            s,
            128,
            &['.', '_', '-', ':', '@'],
            "letters, digits, '.', '_', '-', ':' and '@'",
        )
        .map(Self)
    }
}

impl DisplayName {
    pub fn parse(s: &str) -> Result<Self, TextError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(err("required", "must not be empty"));
        }
        if t.chars().count() > 200 {
            return Err(err("max_length", "must be at most 200 characters"));
        }
        if t.chars().any(char::is_control) {
            return Err(err("pattern", "must not contain control characters"));
        }
        Ok(Self(t.to_string()))
    }
}

fn handle_like(s: &str, max: usize, extra: &[char], what: &str) -> Result<String, TextError> {
    if s.is_empty() {
        return Err(err("required", "must not be empty"));
    }
    if s.len() > max {
        return Err(err(
            "max_length",
            format!("must be at most {max} characters"),
        ));
    }
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c));
    if !first_ok || !rest_ok {
        return Err(err(
            "pattern",
            format!("must start with a letter or digit and contain only {what}"),
        ));
    }
    Ok(s.to_string())
}

impl Handle {
    pub fn parse(s: &str) -> Result<Self, TextError> {
        handle_like(
            s,
            100,
            &['.', '_', '-'],
            "letters, digits, '.', '_' and '-'",
        )
        .map(Self)
    }
}

impl Username {
    pub fn parse(s: &str) -> Result<Self, TextError> {
        handle_like(
            s,
            64,
            &['.', '_', '-', '@'],
            "letters, digits, '.', '_', '-' and '@'",
        )
        .map(Self)
    }
}

impl Email {
    pub fn parse(s: &str) -> Result<Self, TextError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(err("required", "must not be empty"));
        }
        if t.len() > 254 {
            return Err(err("max_length", "must be at most 254 characters"));
        }
        let bad = || err("email", format!("'{t}' is not a valid email address"));
        let (local, domain) = t.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        Ok(Self(t.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(Email::parse("a@example.com").is_ok());
        assert_eq!(Email::parse("nope").unwrap_err().rule, "email");
        assert_eq!(Email::parse("a@b").unwrap_err().rule, "email");
        assert_eq!(Email::parse("a b@c.com").unwrap_err().rule, "email");
        assert_eq!(Email::parse("").unwrap_err().rule, "required");
    }

    #[test]
    fn handles_and_usernames() {
        assert!(Handle::parse("radius-1.eu").is_ok());
        assert_eq!(Handle::parse("-x").unwrap_err().rule, "pattern");
        assert_eq!(Handle::parse("a b").unwrap_err().rule, "pattern");
        assert!(Username::parse("joe@example.com").is_ok());
        assert_eq!(
            Username::parse(&"a".repeat(65)).unwrap_err().rule,
            "max_length"
        );
    }

    #[test]
    fn external_ids() {
        assert!(ExternalId::parse("1042").is_ok());
        assert!(ExternalId::parse("whmcs:user@eu-1").is_ok());
        assert_eq!(ExternalId::parse("a/b").unwrap_err().rule, "pattern");
        assert_eq!(ExternalId::parse("").unwrap_err().rule, "required");
        assert_eq!(
            ExternalId::parse(&"1".repeat(129)).unwrap_err().rule,
            "max_length"
        );
        // The documented pattern says what parse accepts.
        let re = regex::Regex::new(ExternalId::PATTERN).unwrap();
        for s in ["1042", "a.b_c-d:e@f", "-x", "a b", "", "x/y"] {
            assert_eq!(re.is_match(s), ExternalId::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn display_names_trim() {
        assert_eq!(DisplayName::parse("  Acme ").unwrap().as_str(), "Acme");
        assert_eq!(DisplayName::parse("a\u{7}").unwrap_err().rule, "pattern");
    }
}
