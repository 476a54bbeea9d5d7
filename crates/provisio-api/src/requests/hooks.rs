//! The bodies that make and change handlers (gates and notify hooks) and automation rules,
//! as the server reads them from the API and the config file and the client writes them.

use provisio_core::handler::{EmailTemplate, HandlerKind, HandlerStatus, OnError, Phase};
use provisio_core::rule::RuleAction;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{schemas, Secret};

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandlerCreate {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    pub kind: HandlerKind,
    /// `http`: where the JSON is POSTed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `script`: the executable, relative to the handlers directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// `email`: the templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailTemplate>,
    /// Event types or wildcard patterns (`service.*`).
    #[schema(schema_with = schemas::event_patterns)]
    pub events: Vec<String>,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HandlerStatus>,
    /// 100 to 60000; 5000 for gates and 15000 for notify handlers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 100, maximum = 60000)]
    pub timeout_ms: Option<u64>,
    /// Gates run in ascending order; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    /// Gates only: what a failing or silent gate means; `forbid` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
    /// Notify only: a handler failing this long (seconds) without a success is disabled;
    /// the instance default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2592000)]
    pub disable_after_secs: Option<u64>,
    /// `http`: the signing secret (`whsec_` and base64 of 24 to 64 bytes); generated when
    /// absent and shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = r"^whsec_(([A-Za-z0-9+/]{4}){8,20}([A-Za-z0-9+/]{4}|[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?|([A-Za-z0-9+/]{4}){21}[A-Za-z0-9+/][AQgw]==)$")]
    pub secret: Option<Secret>,
}

impl HandlerCreate {
    /// A handler of `kind` run in `phase` on `events`, every other field left to the
    /// defaults.
    pub fn new(name: &str, kind: HandlerKind, phase: Phase, events: Vec<String>) -> Self {
        Self {
            name: name.into(),
            kind,
            url: None,
            script: None,
            email: None,
            events,
            phase,
            status: None,
            timeout_ms: None,
            order: None,
            on_error: None,
            disable_after_secs: None,
            secret: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandlerPatch {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailTemplate>,
    #[schema(schema_with = schemas::event_patterns_patch)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<HandlerStatus>,
    #[schema(minimum = 100, maximum = 60000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
    #[schema(minimum = 1, maximum = 2592000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_after_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleCreate {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    pub name: String,
    /// The event that fires it: a `client.*` event, or a `service.*` one (acting on the
    /// service's client).
    #[schema(schema_with = schemas::rule_on)]
    pub on: String,
    pub action: RuleAction,
    /// Seconds to wait after the event (grace period); 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 31_622_400)]
    pub delay_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    #[schema(max_length = 100, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[schema(schema_with = schemas::rule_on_patch)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<RuleAction>,
    #[schema(maximum = 31_622_400)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret as _;
    use serde_json::json;

    use super::super::checks::{refused, refuses_unknown, round_trips};
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_handler_sends_its_secret_but_never_shows_it() {
        let body = json!({
            "name": "hook-1", "kind": "http", "url": "https://billing.example/hook",
            "events": ["service.*", "client.created"], "phase": "notify",
            "status": "disabled", "timeout_ms": 2000, "disable_after_secs": 3600,
            "secret": SECRET,
        });
        let h: HandlerCreate = round_trips(body.clone());
        assert_eq!(h.kind, HandlerKind::Http);
        assert_eq!(h.secret.as_ref().map(|s| s.expose_secret()), Some(SECRET));
        let shown = format!("{h:?}");
        assert!(
            !shown.contains(SECRET) && !shown.contains("MfKQ9r8G"),
            "{shown}"
        );
        refuses_unknown::<HandlerCreate>(body);
        // A gate with an email template and none of the optional fields.
        let gate = json!({
            "name": "gate-1", "kind": "email", "phase": "gate", "events": ["service.create.before"],
            "email": {"to": "{{ client.email }}", "subject": "s", "body": "b"},
            "order": -1, "on_error": "allow",
        });
        let g: HandlerCreate = round_trips(gate);
        assert_eq!(g.order, Some(-1));
        let built = HandlerCreate::new("n", HandlerKind::Script, Phase::Notify, vec!["x.y".into()]);
        assert_eq!(
            serde_json::to_value(&built).unwrap(),
            json!({"name": "n", "kind": "script", "events": ["x.y"], "phase": "notify"})
        );
    }

    #[test]
    fn a_handler_patch_writes_only_what_it_changes() {
        let body = json!({"events": ["client.*"], "status": "enabled", "timeout_ms": 500});
        let p: HandlerPatch = round_trips(body.clone());
        assert_eq!(
            serde_json::from_value::<HandlerPatch>(serde_json::to_value(&p).unwrap()).unwrap(),
            p
        );
        assert_eq!(
            serde_json::to_value(HandlerPatch::default()).unwrap(),
            json!({})
        );
        refuses_unknown::<HandlerPatch>(body);
        // The secret is rotated, never patched.
        refused::<HandlerPatch>(json!({"secret": SECRET}), "secret");
    }

    #[test]
    fn rules_read_and_write_their_action() {
        let body = json!({
            "name": "dunning", "on": "client.balance_nonpositive",
            "action": {"kind": "suspend_services", "reason": "non-payment"},
            "delay_secs": 604800, "enabled": false,
        });
        let r: RuleCreate = round_trips(body.clone());
        assert_eq!(
            r.action,
            RuleAction::SuspendServices {
                reason: "non-payment".into()
            }
        );
        refuses_unknown::<RuleCreate>(body);
        let patch =
            json!({"action": {"kind": "create_service", "product": "basic", "server": "r1"}});
        let p: RulePatch = round_trips(patch.clone());
        assert_eq!(p.name, None);
        refuses_unknown::<RulePatch>(patch);
        assert_eq!(
            serde_json::to_value(RulePatch::default()).unwrap(),
            json!({})
        );
    }
}
