//! Configuration: embedded defaults, then a TOML file, then `PROVISIO_*` environment
//! variables, then command-line flags, parsed once into [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use provisio_engine::Declared;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything `provisio serve` needs to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the REST API listens on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` (or a bare path) or `postgres://…`.
    pub database_url: String,
    /// The 32-byte key that encrypts secrets at rest, as 64 hex characters or base64. When
    /// absent, the key is read from `secret_key_file`, which is created on first start.
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    pub secret_key_file: PathBuf,
    /// Where the first admin API key is written when the database has none.
    pub admin_key_file: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The currency of clients created without one.
    pub default_currency: String,
    /// Log lines as JSON instead of text.
    pub log_json: bool,
    /// Servers and products declared in the file, applied at start.
    #[serde(default)]
    pub servers: Vec<serde_json::Value>,
    #[serde(default)]
    pub products: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct Defaults {
    listen: &'static str,
    database_url: &'static str,
    secret_key_file: &'static str,
    admin_key_file: &'static str,
    max_body_bytes: usize,
    default_currency: &'static str,
    log_json: bool,
}

const DEFAULTS: Defaults = Defaults {
    listen: "127.0.0.1:8470",
    database_url: "sqlite://provisio.db",
    secret_key_file: "provisio.secret-key",
    admin_key_file: "provisio.admin-key",
    max_body_bytes: 1024 * 1024,
    default_currency: "EUR",
    log_json: false,
};

/// The environment variables read (each `PROVISIO_` + the key in upper case).
const ENV_KEYS: &[&str] = &[
    "listen",
    "database_url",
    "secret_key",
    "secret_key_file",
    "admin_key_file",
    "max_body_bytes",
    "default_currency",
    "log_json",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values given on the command line, which win over everything else.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

impl Config {
    /// Reads the layers; `file` is the `--config` path, if any.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(&DEFAULTS));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::Missing(f.to_path_buf()));
            }
            fig = fig.merge(Toml::file_exact(f));
        }
        fig = fig
            .merge(Env::prefixed("PROVISIO_").only(ENV_KEYS))
            .merge(Serialized::defaults(overrides));
        // figment's messages name the key and the source but never echo a value.
        fig.extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Defaults only (plus environment), as `provisio serve` without `--config` uses.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::load(None, &Overrides::default())
    }

    /// The declared servers and products, parsed with the same strictness as the API.
    pub fn declared(&self) -> Result<Declared, ConfigError> {
        let mut d = Declared::default();
        for (i, v) in self.servers.iter().enumerate() {
            d.servers.push(
                serde_json::from_value(v.clone())
                    .map_err(|e| ConfigError::Invalid(format!("servers[{i}]: {e}")))?,
            );
        }
        for (i, v) in self.products.iter().enumerate() {
            d.products.push(
                serde_json::from_value(v.clone())
                    .map_err(|e| ConfigError::Invalid(format!("products[{i}]: {e}")))?,
            );
        }
        Ok(d)
    }
}
