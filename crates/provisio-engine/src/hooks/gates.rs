//! Gates: handlers asked, in order, before an action or client change whether it may go
//! ahead. Each may allow it, forbid it with a reason, or allow it with changes to a few
//! documented input fields, and each sees the changes of the gates before it.
//!
//! A gate runs in the task of the request that asked for the action and holds no lock or
//! transaction while it thinks, so a slow gate delays only its own action.

use provisio_core::handler::{GateDecision, Handler, HandlerStatus, OnError, Phase};
use provisio_core::module::Action;
use provisio_core::webhook;
use provisio_store::HandlerFilter;
use serde_json::{json, Map, Value};

use crate::{Engine, EngineError, Result};

/// Checks one gate's changes and applies them to the caller's input and to the payload
/// the next gate sees; the error says which field may not be changed or why a value is bad.
pub(crate) type ApplyChanges<'a> =
    dyn FnMut(&Map<String, Value>, &mut Value) -> std::result::Result<(), String> + Send + 'a;

impl Engine {
    /// Asks every enabled gate listening to `event`, in order. `Ok` means go ahead (with
    /// whatever `apply` took in); [`EngineError::Forbidden`] names the gate that said no.
    pub(crate) async fn run_gates(
        &self,
        event: &str,
        payload: Value,
        apply: &mut ApplyChanges<'_>,
    ) -> Result<()> {
        let gates = self.gates_listening(event).await?;
        self.ask_gates(&gates, event, payload, apply).await
    }

    /// The enabled gates that hear `event`, in order; none for a custom action whose name
    /// is not an event segment (it has no gate event).
    pub(crate) async fn gates_listening(&self, event: &str) -> Result<Vec<Handler>> {
        let Ok(kind) = provisio_core::event::EventType::parse(event) else {
            return Ok(Vec::new());
        };
        let seen = self.catalog_now().await?;
        let mut gates = match self.catalog.get(seen, |c| c.gates.clone()) {
            Some(g) => g,
            None => {
                let g = self
                    .store
                    .list_handlers(&HandlerFilter {
                        phase: Some(Phase::Gate),
                        status: Some(HandlerStatus::Enabled),
                    })
                    .await?;
                self.catalog.put(seen, |c| c.gates = Some(g.clone()));
                g
            }
        };
        gates.retain(|g| g.listens_to(&kind));
        Ok(gates)
    }

    /// [`Engine::run_gates`] with the gates already read (by [`Engine::gates_listening`]), so
    /// a caller with none to ask builds no payload for them.
    pub(crate) async fn ask_gates(
        &self,
        gates: &[Handler],
        event: &str,
        mut payload: Value,
        apply: &mut ApplyChanges<'_>,
    ) -> Result<()> {
        for gate in gates {
            let msg_id = webhook::new_message_id();
            let body = serde_json::to_vec(&json!({
                "id": msg_id,
                "type": event,
                "timestamp": self.now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "phase": "gate",
                "data": payload,
            }))
            .unwrap_or_default();
            let t0 = std::time::Instant::now();
            let verdict = match self.call_handler(gate, &msg_id, &body).await {
                Ok(answer) => match serde_json::from_slice::<Value>(&answer.body) {
                    Ok(v) => GateDecision::parse(&v).map_err(|e| e.0),
                    Err(_) => Err("the answer is not JSON".to_string()),
                },
                Err(f) => Err(f.detail),
            };
            let took = t0.elapsed();
            let name = gate.name.as_str();
            match &verdict {
                Ok(GateDecision::Forbid { .. }) => crate::metrics::gate(name, "forbid", took),
                Ok(GateDecision::Allow { data }) if data.is_empty() => {
                    crate::metrics::gate(name, "allow", took)
                }
                Ok(GateDecision::Allow { .. }) => crate::metrics::gate(name, "change", took),
                Err(_) => crate::metrics::gate(name, "error", took),
            }
            let failure = match verdict {
                Ok(GateDecision::Forbid { reason }) => {
                    tracing::info!(gate = %gate.name, event, reason, "gate forbade the action");
                    return Err(EngineError::Forbidden {
                        handler: gate.name.to_string(),
                        reason,
                    });
                }
                Ok(GateDecision::Allow { data }) if data.is_empty() => continue,
                Ok(GateDecision::Allow { data }) => match apply(&data, &mut payload) {
                    Ok(()) => continue,
                    Err(e) => format!("its changes were refused: {e}"),
                },
                Err(e) => e,
            };
            match gate.on_error {
                OnError::Allow => {
                    tracing::warn!(gate = %gate.name, event, error = %failure, "gate failed; its policy allows the action");
                }
                OnError::Forbid => {
                    tracing::warn!(gate = %gate.name, event, error = %failure, "gate failed; its policy forbids the action");
                    return Err(EngineError::Forbidden {
                        handler: gate.name.to_string(),
                        reason: format!(
                            "the gate failed ({failure}) and its on_error policy is forbid"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Refuses every change: for events whose input gates may not alter.
pub(crate) fn no_changes(
    what: &'static str,
) -> impl FnMut(&Map<String, Value>, &mut Value) -> std::result::Result<(), String> + Send {
    move |data, _| {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        Err(format!(
            "gates may not change {what} (the reply's data had: {})",
            keys.join(", ")
        ))
    }
}

/// The fields a gate may change for an action, for messages.
pub(crate) fn changeable(action: &Action) -> &'static [&'static str] {
    match action {
        Action::Create => &["username", "password", "settings"],
        Action::Suspend => &["reason"],
        Action::ChangePassword => &["password"],
        _ => &[],
    }
}

/// Refuses keys outside `allowed`.
pub(crate) fn check_keys(
    data: &Map<String, Value>,
    action: &Action,
) -> std::result::Result<(), String> {
    let allowed = changeable(action);
    for k in data.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(if allowed.is_empty() {
                format!("'{k}': gates may not change anything for {action}")
            } else {
                format!(
                    "'{k}': for {action} gates may change only {}",
                    allowed.join(", ")
                )
            });
        }
    }
    Ok(())
}
