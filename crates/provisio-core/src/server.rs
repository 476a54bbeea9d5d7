//! Servers: remote system instances that a module drives, with credentials and limits.

use chrono::{DateTime, Utc};

use crate::ids::ServerId;
use crate::settings::Settings;
use crate::text::Handle;

/// Default limit of actions run at once against one server.
pub const DEFAULT_MAX_CONCURRENT: u32 = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub id: ServerId,
    pub name: Handle,
    pub module: String,
    /// Servers of one group are interchangeable for placing new services.
    pub group: Handle,
    /// Settings per the module's server schema; secret fields are sealed.
    pub settings: Settings,
    pub max_concurrent: u32,
    /// Actions started per second at most; `None` is unlimited.
    pub max_per_second: Option<u32>,
    /// A disabled server receives no new services.
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewServer {
    pub name: Handle,
    pub module: String,
    pub group: Handle,
    pub settings: Settings,
    pub max_concurrent: u32,
    pub max_per_second: Option<u32>,
    pub enabled: bool,
}
