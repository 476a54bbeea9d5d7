//! Provisio's engine: the rules between the API (or the config file) and the store.
//!
//! Today it keeps the records: it parses input into domain types, validates settings against
//! module schemas, resolves product inheritance, places services on servers and seals
//! secrets. Jobs, retries, the scheduler, handlers, usage, audit and groups join it later.

mod catalog;
mod declared;
mod error;
pub mod input;
pub mod keys;
pub mod patch;

use std::sync::Arc;

use provisio_core::money::Currency;
use provisio_core::secret::Cipher;
use provisio_modules::Registry;
use provisio_store::Store;

pub use catalog::ProductView;
pub use declared::{Applied, Declared, DeclaredError};
pub use error::{EngineError, Result};

/// Instance-wide choices the engine needs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The currency of clients created without one.
    pub default_currency: Currency,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            default_currency: Currency::parse("EUR").expect("valid"),
        }
    }
}

/// The engine, shared by every request handler.
pub struct Engine {
    store: Arc<dyn Store>,
    modules: Registry,
    cipher: Cipher,
    options: EngineOptions,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        modules: Registry,
        cipher: Cipher,
        options: EngineOptions,
    ) -> Self {
        Self {
            store,
            modules,
            cipher,
            options,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn modules(&self) -> &Registry {
        &self.modules
    }
}
