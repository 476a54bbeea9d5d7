//! The bodies that make API keys and make or change resellers.

use chrono::{DateTime, Utc};
use provisio_core::access::{ResellerStatus, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a key is made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyCreate {
    /// 1 to 100 of `a-z A-Z 0-9 . _ -`, unique among keys in use.
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    pub role: Role,
    /// The client a `client` key is held to (required for that role, refused otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<i64>,
    /// The reseller a `reseller` key is held to (required for that role, refused otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseller_id: Option<i64>,
    /// For `client` keys: the actions it may run (service actions in snake_case, plus
    /// `login_url` and `usage`); by default change_password, login_url and usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    /// Whether the key may read service passwords; not for `readonly` keys.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reveal_secrets: bool,
    /// When the key stops working; it never does when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl KeyCreate {
    /// A key of `role` with nothing else set: how `provisio key create NAME` starts.
    pub fn named(name: &str, role: Role) -> Self {
        Self {
            name: name.into(),
            role,
            client_id: None,
            reseller_id: None,
            actions: None,
            reveal_secrets: false,
            expires_at: None,
        }
    }
}

/// A new reseller: unlike a change, it must be named.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResellerCreate {
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResellerStatus>,
}

/// Checks a reseller's name and status for create and change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResellerInput {
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ResellerStatus>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::checks::{refuses_unknown, round_trips};
    use super::*;

    #[test]
    fn a_key_reads_and_writes_its_scope() {
        let body = json!({
            "name": "portal-7", "role": "client", "client_id": 7,
            "actions": ["change_password", "login_url"], "reveal_secrets": true,
            "expires_at": "2027-01-31T00:00:00Z",
        });
        let k: KeyCreate = round_trips(body.clone());
        assert_eq!((k.role, k.client_id), (Role::Client, Some(7)));
        refuses_unknown::<KeyCreate>(body);
        // The server read `reveal_secrets: false` as absent; the client leaves it out.
        let plain = KeyCreate::named("billing-1", Role::Billing);
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            json!({"name": "billing-1", "role": "billing"})
        );
        let read: KeyCreate = serde_json::from_value(
            json!({"name": "billing-1", "role": "billing", "reveal_secrets": false}),
        )
        .unwrap();
        assert_eq!(read, plain);
    }

    #[test]
    fn resellers_read_and_write_name_and_status() {
        let body = json!({"name": "Resell Co", "status": "suspended"});
        let r: ResellerCreate = round_trips(body.clone());
        assert_eq!(r.status, Some(ResellerStatus::Suspended));
        refuses_unknown::<ResellerCreate>(body);
        let e = serde_json::from_value::<ResellerCreate>(json!({"status": "active"})).unwrap_err();
        assert!(e.to_string().contains("missing field `name`"), "{e}");
        let change = json!({"status": "active"});
        let c: ResellerInput = round_trips(change.clone());
        assert_eq!(c.name, None);
        refuses_unknown::<ResellerInput>(change);
    }
}
