//! The commands that work on the database directly rather than through the API: `serve`,
//! `migrate` and `key`.

use std::path::PathBuf;

use anyhow::Context;
use provisio_server::{Config, Overrides};

use crate::output::Format;

fn config(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    listen: Option<String>,
) -> anyhow::Result<Config> {
    Ok(Config::load(
        file.as_deref(),
        &Overrides {
            listen,
            database_url: database_url.clone(),
        },
    )?)
}

async fn open_store(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
) -> anyhow::Result<std::sync::Arc<dyn provisio_store::Store>> {
    let cfg = config(file, database_url, None)?;
    let url = provisio_store::redact_url(&cfg.database_url);
    let store = provisio_store::open(&cfg.database_url)
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    store
        .migrate()
        .await
        .with_context(|| format!("cannot migrate the database {url}"))?;
    Ok(store)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

pub async fn serve(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    listen: Option<String>,
    init_logging: fn(bool),
) -> anyhow::Result<()> {
    let cfg = config(file, database_url, listen)?;
    init_logging(cfg.log_json);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    provisio_server::run(cfg, listener, shutdown_signal()).await?;
    Ok(())
}

pub async fn migrate(file: &Option<PathBuf>, database_url: &Option<String>) -> anyhow::Result<()> {
    let store = open_store(file, database_url).await?;
    store.close().await;
    println!("database is up to date");
    Ok(())
}

pub async fn key_create(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    name: &str,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let store = open_store(file, database_url).await?;
    let new = provisio_engine::keys::create_api_key(store.as_ref(), name).await?;
    store.close().await;
    println!("{}", new.key.expose_secret());
    Ok(())
}

pub async fn key_list(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    output: Format,
) -> anyhow::Result<()> {
    let store = open_store(file, database_url).await?;
    let keys = store.list_api_keys().await?;
    store.close().await;
    match output {
        Format::Json => {
            let items: Vec<serde_json::Value> = keys
                .iter()
                .map(|k| {
                    serde_json::json!({
                        "name": k.name, "prefix": k.prefix,
                        "created_at": k.created_at, "last_used_at": k.last_used_at,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        Format::Table => {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            t.set_header(["name", "prefix", "created", "last used"]);
            for k in keys {
                t.add_row([
                    k.name,
                    format!("{}…", k.prefix),
                    k.created_at.format("%Y-%m-%d %H:%M").to_string(),
                    k.last_used_at
                        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_default(),
                ]);
            }
            println!("{t}");
        }
    }
    Ok(())
}

pub async fn key_delete(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    name: &str,
) -> anyhow::Result<()> {
    let store = open_store(file, database_url).await?;
    let deleted = store.delete_api_key(name).await?;
    store.close().await;
    if deleted {
        println!("deleted key {name}");
        Ok(())
    } else {
        anyhow::bail!("no key named '{name}'")
    }
}
