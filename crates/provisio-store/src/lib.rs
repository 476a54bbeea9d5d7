//! Provisio's storage: the [`Store`] trait and its SQLite and PostgreSQL implementations.
//!
//! The store keeps records as the engine hands them over. It never sees plaintext secrets:
//! they arrive sealed (see `provisio_core::secret`).

mod error;
mod postgres;
mod rows;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use provisio_core::client::{Client, ClientStatus, NewClient};
use provisio_core::page::{Page, PageRequest};
use provisio_core::product::{NewProduct, Product};
use provisio_core::server::{NewServer, Server};
use provisio_core::service::{NewService, Service, ServiceStatus};
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};

pub use error::StoreError;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientFilter {
    pub status: Option<ClientStatus>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerFilter {
    pub module: Option<String>,
    pub group: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductFilter {
    pub module: Option<String>,
    pub extends: Option<ProductId>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceFilter {
    pub status: Option<ServiceStatus>,
    pub client_id: Option<ClientId>,
    pub server_id: Option<ServerId>,
    pub product_id: Option<ProductId>,
    pub invoice: Option<String>,
    pub parent_invoice: Option<String>,
    pub username: Option<String>,
    /// Leave out terminated services (for counting live accounts).
    pub live_only: bool,
}

/// An API key as stored: only a hash of the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    /// The first characters of the key, shown so a person can tell keys apart.
    pub prefix: String,
    /// Hex SHA-256 of the whole key.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Durable storage for Provisio's records. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    /// Applies pending migrations; safe to call on every start.
    async fn migrate(&self) -> Result<()>;
    /// Closes the connections.
    async fn close(&self);

    async fn insert_client(&self, new: &NewClient) -> Result<Client>;
    async fn get_client(&self, id: ClientId) -> Result<Option<Client>>;
    /// Writes every field of `client` but `created_at`; sets `updated_at` to now.
    async fn update_client(&self, client: &Client) -> Result<Client>;
    async fn delete_client(&self, id: ClientId) -> Result<bool>;
    async fn list_clients(&self, filter: &ClientFilter, page: PageRequest) -> Result<Page<Client>>;

    async fn insert_server(&self, new: &NewServer) -> Result<Server>;
    async fn get_server(&self, id: ServerId) -> Result<Option<Server>>;
    async fn get_server_by_name(&self, name: &str) -> Result<Option<Server>>;
    async fn update_server(&self, server: &Server) -> Result<Server>;
    async fn delete_server(&self, id: ServerId) -> Result<bool>;
    async fn list_servers(&self, filter: &ServerFilter, page: PageRequest) -> Result<Page<Server>>;

    async fn insert_product(&self, new: &NewProduct) -> Result<Product>;
    async fn get_product(&self, id: ProductId) -> Result<Option<Product>>;
    async fn get_product_by_name(&self, name: &str) -> Result<Option<Product>>;
    async fn update_product(&self, product: &Product) -> Result<Product>;
    async fn delete_product(&self, id: ProductId) -> Result<bool>;
    async fn list_products(
        &self,
        filter: &ProductFilter,
        page: PageRequest,
    ) -> Result<Page<Product>>;

    async fn insert_service(&self, new: &NewService) -> Result<Service>;
    async fn get_service(&self, id: ServiceId) -> Result<Option<Service>>;
    async fn update_service(&self, service: &Service) -> Result<Service>;
    async fn delete_service(&self, id: ServiceId) -> Result<bool>;
    async fn list_services(
        &self,
        filter: &ServiceFilter,
        page: PageRequest,
    ) -> Result<Page<Service>>;
    async fn count_services(&self, filter: &ServiceFilter) -> Result<i64>;

    async fn insert_api_key(&self, name: &str, prefix: &str, hash: &str) -> Result<ApiKey>;
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    async fn touch_api_key(&self, id: i64, at: DateTime<Utc>) -> Result<()>;
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>>;
    async fn delete_api_key(&self, name: &str) -> Result<bool>;
}

/// Opens the store a database URL names: `postgres://…` or `postgresql://…` for PostgreSQL;
/// `sqlite://PATH`, `sqlite:PATH` or a bare file path for SQLite (created if missing).
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        Ok(Arc::new(SqliteStore::open(url).await?))
    }
}

/// A database URL with any password replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            super::redact_url("postgres://app:s3cret@127.0.0.1:5432/db"),
            "postgres://app:***@127.0.0.1:5432/db"
        );
        assert_eq!(super::redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
