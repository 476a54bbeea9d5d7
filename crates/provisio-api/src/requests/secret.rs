//! A secret a request carries (a service's password): the client writes it as the plain
//! string the API takes, the server reads it into a `SecretString`, and `Debug` never
//! shows it, so a body that reaches a log through `{:?}` carries no secret.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn into_secret(self) -> SecretString {
        self.0
    }

    pub fn as_secret(&self) -> &SecretString {
        &self.0
    }
}

impl ExposeSecret<str> for Secret {
    fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<SecretString> for Secret {
    fn from(s: SecretString) -> Self {
        Secret(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(SecretString::from(s))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(SecretString::from(s))
    }
}

impl From<Secret> for SecretString {
    fn from(s: Secret) -> Self {
        s.0
    }
}

// Exposed only here: the body is on its way to the server that needs it.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_in_full_shown_never() {
        let s = Secret::from("hunter2-long");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2-long\"");
        assert!(!format!("{s:?}").contains("hunter2"));
        let back: Secret = serde_json::from_str("\"hunter2-long\"").unwrap();
        assert_eq!(back.expose_secret(), "hunter2-long");
    }
}
