//! The action vocabulary: every action the engine knows, with its names, the capability it
//! needs and whether it changes anything, and the one rule a module's custom action names
//! follow. Every other part of Provisio asks this type instead of keeping a list of names.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::module::Capability;

/// What the engine asks a module to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Suspend,
    Unsuspend,
    Terminate,
    ChangePassword,
    ChangePackage,
    Renew,
    Lookup,
    ListAccounts,
    Usage,
    LoginUrl,
    TestConnection,
    /// A module-specific action named in `ModuleInfo::custom_actions`; its name follows
    /// [`Action::parse`]'s rule.
    #[serde(untagged)]
    Custom(String),
}

/// Why a name is not an action a caller may ask for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionNameError {
    /// Neither a standard action nor a well-formed custom action name.
    #[error(
        "'{0}' is not an action name: a letter a-z, then a-z, 0-9 or _, at most {max} characters",
        max = Action::CUSTOM_NAME_MAX
    )]
    Malformed(String),
    /// A standard action that only the engine runs (lookup, usage, …), not a service action.
    #[error("'{0}' is not a service action")]
    Internal(String),
}

impl Action {
    /// Every standard action, the seven of a service's lifecycle first.
    pub const STANDARD: [Action; 12] = [
        Action::Create,
        Action::Suspend,
        Action::Unsuspend,
        Action::Terminate,
        Action::ChangePassword,
        Action::ChangePackage,
        Action::Renew,
        Action::Lookup,
        Action::ListAccounts,
        Action::Usage,
        Action::LoginUrl,
        Action::TestConnection,
    ];

    /// The actions of a service's lifecycle: the standard actions a caller may queue.
    pub const LIFECYCLE: [Action; 7] = [
        Action::Create,
        Action::Suspend,
        Action::Unsuspend,
        Action::Terminate,
        Action::ChangePassword,
        Action::ChangePackage,
        Action::Renew,
    ];

    /// Longest custom action name, in characters.
    pub const CUSTOM_NAME_MAX: usize = 64;

    /// The snake_case name: as stored, in event types (`service.change_password.before`)
    /// and in module settings.
    pub fn as_str(&self) -> &str {
        match self {
            Action::Create => "create",
            Action::Suspend => "suspend",
            Action::Unsuspend => "unsuspend",
            Action::Terminate => "terminate",
            Action::ChangePassword => "change_password",
            Action::ChangePackage => "change_package",
            Action::Renew => "renew",
            Action::Lookup => "lookup",
            Action::ListAccounts => "list_accounts",
            Action::Usage => "usage",
            Action::LoginUrl => "login_url",
            Action::TestConnection => "test_connection",
            Action::Custom(s) => s,
        }
    }

    /// The name in URLs and CLI commands: `change-password`.
    pub fn wire_name(&self) -> String {
        self.as_str().replace('_', "-")
    }

    /// The standard action of this snake_case name.
    pub fn standard(name: &str) -> Option<Action> {
        Self::STANDARD.into_iter().find(|a| a.as_str() == name)
    }

    /// The one parse rule for action names (snake_case): a standard name is that action;
    /// any other name is a custom action if it is a letter a-z followed by a-z, 0-9 or `_`,
    /// at most [`Action::CUSTOM_NAME_MAX`] characters.
    pub fn parse(name: &str) -> Result<Action, ActionNameError> {
        if let Some(a) = Self::standard(name) {
            return Ok(a);
        }
        let mut chars = name.chars();
        let well_formed = name.len() <= Self::CUSTOM_NAME_MAX
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if well_formed {
            Ok(Action::Custom(name.to_string()))
        } else {
            Err(ActionNameError::Malformed(name.to_string()))
        }
    }

    /// An action a caller asks a service for, by its wire name (dashes or underscores):
    /// a lifecycle action or a custom one, never one the engine keeps to itself.
    pub fn service_action(wire: &str) -> Result<Action, ActionNameError> {
        let action = Self::parse(&wire.replace('-', "_"))
            .map_err(|_| ActionNameError::Malformed(wire.to_string()))?;
        if action.is_service_action() {
            Ok(action)
        } else {
            Err(ActionNameError::Internal(wire.to_string()))
        }
    }

    /// An action read back from the store, which wrote only names [`Action::parse`]
    /// accepted; anything else is kept as a custom name rather than lost.
    pub fn from_stored(name: &str) -> Action {
        Self::parse(name).unwrap_or_else(|_| Action::Custom(name.to_string()))
    }

    pub fn is_custom(&self) -> bool {
        matches!(self, Action::Custom(_))
    }

    /// Whether a service's job may run it: the lifecycle actions and custom actions.
    pub fn is_service_action(&self) -> bool {
        self.is_custom() || Self::LIFECYCLE.contains(self)
    }

    /// Whether it leaves the remote as it was (lookups, listings, usage, sign-on links,
    /// connection tests). A custom action may do anything, so it is not read-only.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Action::Lookup
                | Action::ListAccounts
                | Action::Usage
                | Action::LoginUrl
                | Action::TestConnection
        )
    }

    /// The capability a module needs to run this action; a custom action needs the
    /// module (or its server) to offer it by name instead.
    pub fn capability(&self) -> Option<Capability> {
        Some(match self {
            Action::Create => Capability::Create,
            Action::Suspend => Capability::Suspend,
            Action::Unsuspend => Capability::Unsuspend,
            Action::Terminate => Capability::Terminate,
            Action::ChangePassword => Capability::ChangePassword,
            Action::ChangePackage => Capability::ChangePackage,
            Action::Renew => Capability::Renew,
            Action::Lookup => Capability::Lookup,
            Action::ListAccounts => Capability::ListAccounts,
            Action::Usage => Capability::Usage,
            Action::LoginUrl => Capability::LoginUrl,
            Action::TestConnection => Capability::TestConnection,
            Action::Custom(_) => return None,
        })
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_standard_name_round_trips() {
        for a in Action::STANDARD {
            assert_eq!(Action::parse(a.as_str()), Ok(a.clone()));
            assert!(!a.is_custom());
            assert!(a.capability().is_some());
            assert_eq!(a.is_read_only(), !Action::LIFECYCLE.contains(&a));
        }
        assert_eq!(Action::ChangePassword.wire_name(), "change-password");
        let json = serde_json::to_value(Action::ChangePackage).unwrap();
        assert_eq!(json, serde_json::json!("change_package"));
        let back: Action = serde_json::from_value(serde_json::json!("reboot")).unwrap();
        assert_eq!(back, Action::Custom("reboot".into()));
    }

    #[test]
    fn custom_names_follow_one_rule() {
        assert_eq!(
            Action::parse("reset_quota"),
            Ok(Action::Custom("reset_quota".into()))
        );
        for bad in ["", "Reset", "9lives", "reset-quota", "a b", "é"] {
            assert!(
                matches!(Action::parse(bad), Err(ActionNameError::Malformed(_))),
                "{bad}"
            );
        }
        let longest = "a".repeat(Action::CUSTOM_NAME_MAX);
        assert!(Action::parse(&longest).is_ok());
        assert!(Action::parse(&format!("{longest}a")).is_err());
    }

    #[test]
    fn callers_ask_for_service_actions_by_wire_name() {
        assert_eq!(
            Action::service_action("change-password"),
            Ok(Action::ChangePassword)
        );
        assert_eq!(
            Action::service_action("reset-quota"),
            Ok(Action::Custom("reset_quota".into()))
        );
        for internal in [
            "lookup",
            "list-accounts",
            "usage",
            "login-url",
            "test_connection",
        ] {
            assert!(
                matches!(
                    Action::service_action(internal),
                    Err(ActionNameError::Internal(_))
                ),
                "{internal}"
            );
        }
        assert!(matches!(
            Action::service_action("Reboot!"),
            Err(ActionNameError::Malformed(_))
        ));
        assert_eq!(
            Action::from_stored("odd-name"),
            Action::Custom("odd-name".into())
        );
    }
}
