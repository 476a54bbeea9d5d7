//! What a module declares about itself: name, version, capabilities and settings schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::settings::SettingsSchema;

/// Something a module can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Create,
    Suspend,
    Unsuspend,
    Terminate,
    ChangePassword,
    ChangePackage,
    Renew,
    /// Ask the remote for one account's state (needed after an unknown outcome).
    Lookup,
    /// Page through every remote account (audit).
    ListAccounts,
    /// Report usage for many services per call.
    Usage,
    /// Produce a short-lived single sign-on link.
    LoginUrl,
    /// Check that the server's settings reach a working remote.
    TestConnection,
}

/// Which record a settings schema applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchemaScope {
    Server,
    Product,
    Service,
}

impl SchemaScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Product => "product",
            Self::Service => "service",
        }
    }
}

/// A module's declaration, as listed by `GET /v1/modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModuleInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Vec<Capability>,
    /// Module-specific actions beyond the standard ones.
    #[serde(default)]
    pub custom_actions: Vec<String>,
    pub server_schema: SettingsSchema,
    pub product_schema: SettingsSchema,
    pub service_schema: SettingsSchema,
}

impl ModuleInfo {
    pub fn schema(&self, scope: SchemaScope) -> &SettingsSchema {
        match scope {
            SchemaScope::Server => &self.server_schema,
            SchemaScope::Product => &self.product_schema,
            SchemaScope::Service => &self.service_schema,
        }
    }

    pub fn can(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

/// A module: code that talks to one kind of remote system. Actions arrive with the
/// action engine; for now a module declares itself.
pub trait Module: Send + Sync + 'static {
    fn info(&self) -> &ModuleInfo;
}
