//! The bodies that see and act on many services at once: `collect`, the operations on an
//! invoice group (and the query that lists its members), and the clean-up.

use std::collections::BTreeMap;

use provisio_core::access::Scope;
use provisio_core::settings::Settings;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::RecordRef;

/// What `collect` selects and shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CollectQuery {
    /// Dotted fields to show (`service.username`, `product.settings.quota`, `client.email`);
    /// empty: a summary of each service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Dotted field → value, all of which must match: `service.parent_invoice`,
    /// `service.status`, `client.id`, `product.name`, `server.name`, `service.settings.X`,
    /// `product.settings.X`, `client.custom_fields.X`, `service.suspended_since` (a duration
    /// such as `30d`, or `now`: suspended at least that long).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filters: BTreeMap<String, String>,
    /// The records the caller's key is held to. Set by the server from the key, never read
    /// from the body.
    #[serde(skip)]
    pub scope: Option<Scope>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    /// Say what each member would undergo; change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Leave out the master (the service whose `invoice` is the group's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub children_only: bool,
    /// delete: only members suspended at least this long (`now`, `30d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// suspend: the reason (`admin` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// edit: product settings to override on each member (`{"quota": 5000}`); `null`
    /// removes an override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Settings>,
    /// transfer: the client that gets the members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<RecordRef>,
    /// transfer: the server (same module) the members move to: each is created there, and
    /// removed from its source only after that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<RecordRef>,
    /// Wait up to this many seconds (at most 300) for the members' jobs and report how
    /// they ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    /// Members this request acts on: 1 to 10,000; 1,000 when absent. A larger group is
    /// acted on a page at a time: repeat the request with `after` set to `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Continue after this point: the `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// The records the caller's key is held to: members and the transfer's client must be
    /// inside it. Set by the server from the key, never read from the body.
    #[serde(skip)]
    pub scope: Option<Scope>,
}

/// `GET /v1/groups/{invoice}`: which members, a page at a time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// Leave out the master.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub children_only: bool,
    /// Members per page: 1 to 10,000; 1,000 when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl MembersQuery {
    /// The query string's pairs; unset fields are left out.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.children_only {
            out.push(("children_only", "true".to_string()));
        }
        if let Some(l) = self.limit {
            out.push(("limit", l.to_string()));
        }
        if let Some(a) = &self.after {
            out.push(("after", a.clone()));
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CleanupRequest {
    /// Say what would be terminated; change nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Suspended at least this long (`30 days`); the configured
    /// `cleanup.terminate_suspended_after` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::checks::{refused, refuses_unknown, round_trips};
    use super::*;

    #[test]
    fn collect_reads_and_writes_fields_and_filters() {
        let body = json!({
            "fields": ["service.username", "product.settings.quota"],
            "filters": {"service.parent_invoice": "INV-1", "service.status": "active"},
        });
        let q: CollectQuery = round_trips(body.clone());
        assert_eq!(q.filters["service.status"], "active");
        refuses_unknown::<CollectQuery>(body);
        // The key's scope is the server's to set, never the body's.
        refused::<CollectQuery>(json!({"scope": null}), "scope");
        assert_eq!(
            serde_json::to_value(CollectQuery::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn group_operations_read_and_write_every_field() {
        let body = json!({
            "dry_run": true, "children_only": true, "since": "30d", "reason": "overdue",
            "settings": {"quota": 5000, "old": null}, "client": 7, "server": "r2",
            "wait": 30, "limit": 500, "after": "m12",
        });
        let g: GroupRequest = round_trips(body.clone());
        assert_eq!(g.client, Some(RecordRef::Id(7)));
        assert_eq!(g.server, Some(RecordRef::Name("r2".into())));
        assert_eq!(
            serde_json::from_value::<GroupRequest>(serde_json::to_value(&g).unwrap()).unwrap(),
            g
        );
        refuses_unknown::<GroupRequest>(body);
        refused::<GroupRequest>(json!({"scope": null}), "scope");
        assert_eq!(
            serde_json::to_value(GroupRequest::default()).unwrap(),
            json!({})
        );
    }

    #[test]
    fn members_queries_and_cleanups_read_and_write() {
        let q: MembersQuery =
            round_trips(json!({"children_only": true, "limit": 10, "after": "c4"}));
        assert_eq!(
            q.pairs(),
            [
                ("children_only", "true".to_string()),
                ("limit", "10".to_string()),
                ("after", "c4".to_string())
            ]
        );
        assert!(MembersQuery::default().pairs().is_empty());
        refuses_unknown::<MembersQuery>(json!({"limit": 10}));
        let body = json!({"dry_run": true, "after": "now"});
        let c: CleanupRequest = round_trips(body.clone());
        assert_eq!(c.after.as_deref(), Some("now"));
        refuses_unknown::<CleanupRequest>(body);
    }
}
