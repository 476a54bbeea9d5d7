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

/// Who caused a change: a key, a rule, the scheduler, or the config file. Jobs, events and
/// balance transactions store it, so a person can answer "who suspended this, and when?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A request made with this API key.
    Key { id: i64, name: String },
    /// A rule reacting to an event.
    Rule { id: i64 },
    /// The engine's own schedule: due unsuspensions, timed syncs and audits, clean-up.
    Scheduler,
    /// The config file's declared servers and products, applied at start.
    Config,
}

impl Actor {
    /// The stored form: `key:12:whmcs`, `rule:5`, `scheduler`, `config`. Key names hold no
    /// `:`, so the form parses back.
    pub fn stored(&self) -> String {
        match self {
            Actor::Key { id, name } => format!("key:{id}:{name}"),
            Actor::Rule { id } => format!("rule:{id}"),
            Actor::Scheduler => "scheduler".into(),
            Actor::Config => "config".into(),
        }
    }

    pub fn from_stored(s: &str) -> Option<Actor> {
        let mut parts = s.splitn(3, ':');
        match (parts.next()?, parts.next(), parts.next()) {
            ("key", Some(id), Some(name)) => Some(Actor::Key {
                id: id.parse().ok()?,
                name: name.into(),
            }),
            ("rule", Some(id), None) => Some(Actor::Rule {
                id: id.parse().ok()?,
            }),
            ("scheduler", None, None) => Some(Actor::Scheduler),
            ("config", None, None) => Some(Actor::Config),
            _ => None,
        }
    }

    /// Checks an `actor=` filter: `key:ID`, `rule:ID`, `scheduler` or `config`.
    pub fn parse_filter(s: &str) -> Result<String, &'static str> {
        let ok = match s.split_once(':') {
            Some(("key" | "rule", id)) => id.parse::<i64>().is_ok(),
            None => matches!(s, "scheduler" | "config"),
            _ => false,
        };
        if ok {
            Ok(s.to_string())
        } else {
            Err("must be key:ID, rule:ID, scheduler or config")
        }
    }
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

    #[test]
    fn actors_parse_back() {
        for a in [
            Actor::Key {
                id: 12,
                name: "whmcs-1.prod".into(),
            },
            Actor::Rule { id: 5 },
            Actor::Scheduler,
            Actor::Config,
        ] {
            assert_eq!(Actor::from_stored(&a.stored()), Some(a));
        }
        assert_eq!(Actor::from_stored("key:x:y"), None);
        assert_eq!(Actor::from_stored("rule:1:2"), None);
        assert!(Actor::parse_filter("key:12").is_ok());
        assert!(Actor::parse_filter("scheduler").is_ok());
        assert!(Actor::parse_filter("key:twelve").is_err());
        assert!(Actor::parse_filter("root").is_err());
    }
}
