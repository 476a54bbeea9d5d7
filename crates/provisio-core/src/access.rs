//! Who may call the API: the role every key has, the scope a client or reseller key is held
//! to, and the reseller record such keys can belong to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::text::DisplayName;
use crate::{ClientId, ResellerId};

/// What a key may do. Each route names the least it needs; see the server's access table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including keys and the secret key.
    Admin,
    /// Everything but keys; service passwords only with `reveal_secrets`.
    Operator,
    /// What a billing system needs: clients, services and their actions, groups, usage.
    Billing,
    /// Every read but secrets.
    Readonly,
    /// One client's own records and the actions its key names.
    Client,
    /// The billing role's rights over one reseller's clients.
    Reseller,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Operator,
        Role::Billing,
        Role::Readonly,
        Role::Client,
        Role::Reseller,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Billing => "billing",
            Role::Readonly => "readonly",
            Role::Client => "client",
            Role::Reseller => "reseller",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a key of this role must name the client or reseller it is held to.
    pub fn is_scoped(self) -> bool {
        matches!(self, Role::Client | Role::Reseller)
    }
}

/// The records a scoped key is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Client(ClientId),
    Reseller(ResellerId),
}

/// What a client key may run when its key names nothing: change its password, sign on, and
/// read its usage.
pub const CLIENT_DEFAULT_ACTIONS: [&str; 3] = ["change_password", "login_url", "usage"];

/// Names a key's `actions` list may hold besides service actions: signing on and reading usage.
pub const NON_ACTION_GRANTS: [&str; 2] = ["login_url", "usage"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResellerStatus {
    Active,
    /// Its keys are refused until it is active again; its clients' services run on.
    Suspended,
}

impl ResellerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

/// A company selling on to its own clients; a reseller key sees only those clients.
#[derive(Debug, Clone, PartialEq)]
pub struct Reseller {
    pub id: ResellerId,
    pub name: DisplayName,
    pub status: ResellerStatus,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_back() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
        assert!(Role::Client.is_scoped() && !Role::Billing.is_scoped());
    }
}
