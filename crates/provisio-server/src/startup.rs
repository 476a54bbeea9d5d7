//! Start-up: the secret key, the store and its migrations, the declared config, and the
//! first admin API key.

use std::io::Write;
use std::path::Path;

use provisio_core::money::Currency;
use provisio_core::page::PageRequest;
use provisio_core::secret::Cipher;
use provisio_engine::{DeclaredError, Engine, EngineOptions};
use provisio_modules::Registry;
use provisio_store::{ServerFilter, ServiceFilter, Store};
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

async fn holds_secrets(store: &dyn Store) -> Result<bool, provisio_store::StoreError> {
    let servers = store
        .list_servers(&ServerFilter::default(), PageRequest::first(1))
        .await?;
    if !servers.items.is_empty() {
        return Ok(true);
    }
    Ok(store.count_services(&ServiceFilter::default()).await? > 0)
}

async fn load_key(
    config: &Config,
    store: &dyn Store,
    url: &str,
) -> Result<SecretBox<[u8; 32]>, StartError> {
    if let Some(k) = &config.secret_key {
        return Cipher::parse_key(k.expose_secret()).map_err(|e| StartError::Key(e.to_string()));
    }
    let path = &config.secret_key_file;
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(file_err(path))?;
        return Cipher::parse_key(&text)
            .map_err(|e| StartError::Key(format!("{}: {e}", path.display())));
    }
    // A new key would make every stored secret unreadable: refuse rather than lose them.
    if holds_secrets(store)
        .await
        .map_err(|source| StartError::Store {
            url: url.to_string(),
            source,
        })?
    {
        return Err(StartError::Key(format!(
            "the key file {} is missing but the database already holds encrypted secrets; restore the file or set PROVISIO_SECRET_KEY",
            path.display()
        )));
    }
    let key = Cipher::generate_key();
    write_private(path, Cipher::format_key(&key).expose_secret())?;
    tracing::info!(file = %path.display(), "created a new secret key; keep it with your backups");
    Ok(key)
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
    let key = load_key(config, store.as_ref(), &url).await?;
    let currency = Currency::parse(&config.default_currency)
        .map_err(|e| ConfigError::Invalid(format!("default_currency: {e}")))?;
    let declared = config.declared()?;
    config.http.check()?;
    let (usage, audit) = config.usage_audit_options()?;
    let engine = Engine::new(
        store.clone(),
        modules,
        Cipher::new(&key),
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
