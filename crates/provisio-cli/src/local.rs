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
    init_logging: fn(bool, Option<&provisio_server::telemetry::Exporter>),
) -> anyhow::Result<()> {
    let cfg = config(file, database_url, listen)?;
    let exporter = provisio_server::telemetry::Exporter::start(&cfg.telemetry)?;
    init_logging(cfg.log_json, exporter.as_ref());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let served = provisio_server::run(cfg, listener, shutdown_signal()).await;
    if let Some(e) = exporter {
        // The last spans (those of the jobs the stop waited for) go out before exit.
        let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    }
    served?;
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
    spec: &crate::commands::key::KeySpec,
) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let input = spec.body()?;
    let store = open_store(file, database_url).await?;
    let new = provisio_engine::keys::create_api_key(store.as_ref(), &input).await;
    store.close().await;
    println!("{}", new?.key.expose_secret());
    Ok(())
}

/// A stored key as the API lists it, so both ways print the same.
fn key_json(k: &provisio_store::ApiKey) -> serde_json::Value {
    use provisio_core::access::Scope;
    let (client, reseller) = match k.scope {
        Some(Scope::Client(c)) => (Some(c.0), None),
        Some(Scope::Reseller(r)) => (None, Some(r.0)),
        None => (None, None),
    };
    serde_json::json!({
        "id": k.id, "name": k.name, "prefix": k.prefix, "role": k.role.as_str(),
        "client_id": client, "reseller_id": reseller, "actions": k.actions,
        "reveal_secrets": k.reveal_secrets, "created_at": k.created_at,
        "last_used_at": k.last_used_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at,
    })
}

pub async fn key_list(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    output: Format,
) -> anyhow::Result<()> {
    let store = open_store(file, database_url).await?;
    let keys = store.list_api_keys().await;
    store.close().await;
    let items: Vec<serde_json::Value> = keys?.iter().map(key_json).collect();
    crate::output::print_list(output, &items, crate::commands::key::COLUMNS, "keys")
}

pub async fn key_revoke(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    name: &str,
) -> anyhow::Result<()> {
    let store = open_store(file, database_url).await?;
    let result = async {
        let keys: Vec<serde_json::Value> =
            store.list_api_keys().await?.iter().map(key_json).collect();
        let id = crate::commands::key::live_key_id(&keys, name)?;
        store.revoke_api_key(id, chrono::Utc::now()).await?;
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result?;
    println!("revoked key {name}");
    Ok(())
}
