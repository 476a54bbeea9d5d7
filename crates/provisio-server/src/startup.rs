//! Start-up: the secret key, the store and its migrations, the declared config, and the
//! first admin API key.

use std::io::Write;
use std::path::Path;

use provisio_core::money::Currency;
use provisio_core::secret::Cipher;
use provisio_engine::secret_keys::{self, SecretKeyError};
use provisio_engine::{DeclaredError, Engine, EngineOptions};
use provisio_modules::Registry;
use provisio_store::Store;
use secrecy::{ExposeSecret, SecretBox};

use crate::config::{Config, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot open the database {url}")]
    Store {
        url: String,
        #[source]
        source: provisio_store::StoreError,
    },
    #[error("the secret key is not valid: {0}")]
    Key(String),
    /// The key file or the keys in it do not fit: the message names the problem and the fix.
    #[error("secret key: {0}")]
    KeyRefused(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("declared config entry {0}")]
    Declared(#[from] DeclaredError),
    #[error(transparent)]
    Io(std::io::Error),
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a file readable by its owner only, replacing any old one.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), StartError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(file_err(path))?;
    f.write_all(contents.as_bytes()).map_err(file_err(path))?;
    f.write_all(b"\n").map_err(file_err(path))?;
    Ok(())
}

/// Refuses a key file that anyone but its owner may read or write, as ssh does with
/// private keys: the file opens every secret in the database.
#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(file_err(path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(StartError::KeyRefused(format!(
            "the key file {} may be read or written by others (mode {mode:04o}); it must be private to its owner: run chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path) -> Result<(), StartError> {
    Ok(())
}

/// The keys this node was given, from `secret_key` or the key file: one or more, one a
/// line; which of them new secrets are sealed under is the database's choice (see
/// `provisio_engine::secret_keys`). `None` when neither is there.
pub fn load_key_ring(config: &Config) -> Result<Option<Vec<SecretBox<[u8; 32]>>>, StartError> {
    if let Some(k) = &config.secret_key {
        return Cipher::parse_keys(k.expose_secret())
            .map(Some)
            .map_err(|e| StartError::Key(format!("secret_key: {e}")));
    }
    let path = &config.secret_key_file;
    if !path.exists() {
        return Ok(None);
    }
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(file_err(path))?;
    Cipher::parse_keys(&text)
        .map(Some)
        .map_err(|e| StartError::Key(format!("{}: {e}", path.display())))
}

async fn load_key(config: &Config, store: &dyn Store, url: &str) -> Result<Cipher, StartError> {
    let store_err = |source| StartError::Store {
        url: url.to_string(),
        source,
    };
    let keys = match load_key_ring(config)? {
        Some(keys) => keys,
        None => {
            let path = &config.secret_key_file;
            // A new key would make every stored secret unreadable: refuse rather than lose them.
            if secret_keys::holds_secrets(store).await.map_err(store_err)? {
                return Err(StartError::KeyRefused(format!(
                    "the key file {} is missing but the database already holds encrypted secrets; restore the file or set PROVISIO_SECRET_KEY",
                    path.display()
                )));
            }
            let key = Cipher::generate_key();
            write_private(path, Cipher::format_key(&key).expose_secret())?;
            tracing::info!(file = %path.display(), "created a new secret key; keep it with your backups");
            vec![key]
        }
    };
    let cipher = Cipher::with_keys(&keys).expect("at least one key was parsed");
    let found = secret_keys::check(store, &cipher)
        .await
        .map_err(|e| match e {
            SecretKeyError::Refused(m) => StartError::KeyRefused(m),
            SecretKeyError::Store(source) => store_err(source),
        })?;
    if !found.retiring.is_empty() {
        tracing::info!(current = %found.current, "a secret key rotation is under way");
    }
    for k in &found.new {
        tracing::info!(key = %k, "the key file holds a secret key the database does not use yet; `provisio key rotate-secret-key` re-seals every secret under it");
    }
    for k in &found.retired {
        tracing::info!(key = %k, "nothing is sealed under this secret key any more; it may be removed from the key file");
    }
    Ok(cipher)
}

/// Opens the store, migrates it, loads the key, applies the declared servers and products
/// and makes sure an admin API key exists. Everything `serve` does before it listens.
pub async fn prepare(config: &Config, modules: Registry) -> Result<Engine, StartError> {
    let url = provisio_store::redact_url(&config.database_url);
    let store_err = |source| StartError::Store {
        url: url.clone(),
        source,
    };
    let store = provisio_store::open(&config.database_url)
        .await
        .map_err(store_err)?;
    store.migrate().await.map_err(store_err)?;
    let cipher = load_key(config, store.as_ref(), &url).await?;
    let currency = Currency::parse(&config.default_currency)
        .map_err(|e| ConfigError::Invalid(format!("default_currency: {e}")))?;
    let declared = config.declared()?;
    config.http.check()?;
    config.telemetry.check()?;
    config.console.ttl()?;
    let (usage, audit) = config.usage_audit_options()?;
    let engine = Engine::new(
        store.clone(),
        modules,
        cipher,
        EngineOptions {
            default_currency: currency,
            jobs: config.jobs.to_options()?,
            event_retention: std::time::Duration::from_secs(
                u64::from(config.event_retention_days.max(1)) * 86400,
            ),
            hooks: config.hook_options()?,
            cleanup_after: config.cleanup.after()?,
            usage,
            audit,
            retention: config.retention.to_options()?,
            outbound: config.outbound.policy()?,
            templates: config.templates.limits()?,
        },
    );
    let applied = provisio_store::acting(
        provisio_core::access::Actor::Config,
        engine.apply_declared(&declared),
    )
    .await?;
    if applied.created + applied.updated > 0 {
        tracing::info!(
            created = applied.created,
            updated = applied.updated,
            "applied declared servers and products"
        );
    }
    if store.list_api_keys().await.map_err(store_err)?.is_empty() {
        let new = engine
            .create_api_key(&provisio_engine::keys::KeyCreate::named(
                "admin",
                provisio_core::access::Role::Admin,
            ))
            .await
            .map_err(|e| StartError::Key(e.to_string()))?;
        write_private(&config.admin_key_file, new.key.expose_secret())?;
        tracing::info!(file = %config.admin_key_file.display(), "created the first admin API key; the CLI reads it from that file");
    }
    Ok(engine)
}
