//! The request shapes the engine reads, from the REST API (JSON) and the config file
//! (TOML). They are defined once in `provisio_api::requests`, where the typed client writes
//! them too; the engine's rooms name them through this module.

pub use provisio_api::requests::{
    schemas, ActionInput, ClientCreate, ClientPatch, ProductCreate, ProductPatch, RecordRef,
    Secret, ServerCreate, ServerPatch, ServiceCreate, ServicePatch, TransactionCreate,
};
