//! Retention of what reacts to events, on both databases: finished deliveries (with their
//! attempt log) and rule runs are trimmed in bounded batches; open and young ones stay; a
//! delivery lease is renewed by its holder only.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use provisio_core::event::{EventId, EventPattern, EventType};
use provisio_core::handler::{
    DeliveryAttempt, DeliveryState, HandlerKind, HandlerStatus, NewHandler, OnError, Phase,
};
use provisio_core::page::PageRequest;
use provisio_core::rule::{NewRule, RuleAction, RuleRunState};
use provisio_core::text::Handle;
use provisio_core::{DeliveryId, HandlerId, RuleId};
use provisio_store::{DeliveryUpdate, HandlerHealth, NewDelivery, NewRuleRun, Store};

type S = Arc<dyn Store>;

const OWNER: &str = "w";

async fn handler(s: &S) -> HandlerId {
    s.insert_handler(&NewHandler {
        name: Handle::parse("notify-trim").unwrap(),
        kind: HandlerKind::Http,
        target: "https://hooks.example.test/in".into(),
        status: HandlerStatus::Enabled,
        phase: Phase::Notify,
        events: vec![EventPattern::parse("service.*").unwrap()],
        timeout: StdDuration::from_secs(5),
        order: 0,
        on_error: OnError::Forbid,
        secret: None,
        email: None,
        disable_after: StdDuration::from_secs(86_400),
    })
    .await
    .unwrap()
    .id
}

async fn rule(s: &S) -> RuleId {
    s.insert_rule(&NewRule {
        name: Handle::parse("suspend-trim").unwrap(),
        on: EventType::parse("client.balance.below").unwrap(),
        action: RuleAction::SuspendServices {
            reason: "non-payment".into(),
        },
        delay: StdDuration::ZERO,
        enabled: true,
    })
    .await
    .unwrap()
    .id
}

/// Plans one delivery and one rule run per event id, each of its own subject (so none
/// waits for another), due at `due`.
async fn plan(s: &S, h: HandlerId, r: RuleId, events: &[i64], due: DateTime<Utc>) {
    let ty = EventType::parse("service.suspend.succeeded").unwrap();
    let deliveries: Vec<NewDelivery> = events
        .iter()
        .map(|e| NewDelivery {
            handler_id: h,
            event_id: EventId(*e),
            event_type: ty.clone(),
            subject: format!("service:{e}"),
            next_at: due,
        })
        .collect();
    let runs: Vec<NewRuleRun> = events
        .iter()
        .map(|e| NewRuleRun {
            rule_id: r,
            event_id: EventId(*e),
            subject: format!("client:{e}"),
            due_at: due,
        })
        .collect();
    s.dispatch(&[], &deliveries, &runs).await.unwrap();
}

/// Claims every due delivery and rule run; returns them by event id.
async fn claim_all(s: &S) -> (Vec<(i64, DeliveryId)>, Vec<(i64, i64)>) {
    let lease = Utc::now() + Duration::seconds(60);
    let d = s
        .claim_deliveries(OWNER, Utc::now(), lease, 100)
        .await
        .unwrap();
    let r = s.claim_rule_runs(Utc::now(), lease, 100).await.unwrap();
    (
        d.iter().map(|d| (d.event_id.0, d.id)).collect(),
        r.iter().map(|r| (r.event_id.0, r.id)).collect(),
    )
}

async fn finish_delivery(s: &S, id: DeliveryId, state: DeliveryState) {
    let ok = state == DeliveryState::Succeeded;
    let health = s
        .finish_delivery(&DeliveryUpdate {
            id,
            owner: OWNER.into(),
            state,
            attempts: 1,
            next_at: Utc::now(),
            last_error: (!ok).then(|| "503".into()),
            attempt: DeliveryAttempt {
                attempt: 1,
                at: Utc::now(),
                duration_ms: 4,
                succeeded: ok,
                status_code: Some(if ok { 200 } else { 503 }),
                detail: None,
            },
        })
        .await
        .unwrap();
    assert_ne!(health, HandlerHealth::LeaseLost);
}

fn by_event<T: Copy>(rows: &[(i64, T)], event: i64) -> T {
    rows.iter().find(|(e, _)| *e == event).unwrap().1
}

async fn rule_run_ids(s: &S, r: RuleId) -> Vec<i64> {
    let mut ids: Vec<i64> = s
        .list_rule_runs(Some(r), PageRequest::first(100))
        .await
        .unwrap()
        .items
        .iter()
        .map(|x| x.id)
        .collect();
    ids.sort_unstable();
    ids
}

pub async fn old_deliveries_and_rule_runs_are_trimmed_in_batches(s: S) {
    let h = handler(&s).await;
    let r = rule(&s).await;
    let now = Utc::now();
    // Events 1 to 4 are due now; event 5 only tomorrow, so it stays pending.
    plan(&s, h, r, &[1, 2, 3, 4], now - Duration::seconds(1)).await;
    plan(&s, h, r, &[5], now + Duration::days(1)).await;
    let (d, runs) = claim_all(&s).await;
    assert_eq!(d.len(), 4, "{d:?}");
    assert_eq!(runs.len(), 4, "{runs:?}");
    // Old and finished: deliveries 1 (succeeded), 2 (failed) and 3 (succeeded); rule
    // runs 1 (done), 2 (skipped) and 3 (failed). Event 4's stay running.
    finish_delivery(&s, by_event(&d, 1), DeliveryState::Succeeded).await;
    finish_delivery(&s, by_event(&d, 2), DeliveryState::Failed).await;
    finish_delivery(&s, by_event(&d, 3), DeliveryState::Succeeded).await;
    for (e, state) in [
        (1, RuleRunState::Done),
        (2, RuleRunState::Skipped),
        (3, RuleRunState::Failed),
    ] {
        s.finish_rule_run(by_event(&runs, e), state, "ran")
            .await
            .unwrap();
    }
    let pending_delivery = s
        .list_deliveries(&Default::default(), PageRequest::first(100))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|x| x.event_id == EventId(5))
        .unwrap();
    assert_eq!(pending_delivery.state, DeliveryState::Pending);
    tokio::time::sleep(StdDuration::from_millis(5)).await;
    let mid = Utc::now();
    tokio::time::sleep(StdDuration::from_millis(5)).await;
    // Young and finished: event 6's delivery and rule run.
    plan(&s, h, r, &[6], Utc::now() - Duration::seconds(1)).await;
    let (d6, runs6) = claim_all(&s).await;
    assert_eq!(d6.len(), 1);
    finish_delivery(&s, by_event(&d6, 6), DeliveryState::Succeeded).await;
    s.finish_rule_run(by_event(&runs6, 6), RuleRunState::Done, "ran")
        .await
        .unwrap();
    for e in [1, 2, 3] {
        assert_eq!(s.delivery_attempts(by_event(&d, e)).await.unwrap().len(), 1);
    }

    // Deliveries: at most a batch per statement, then nothing more is old and finished.
    assert_eq!(s.trim_deliveries(mid, 2).await.unwrap(), 2);
    assert_eq!(s.trim_deliveries(mid, 2).await.unwrap(), 1);
    assert_eq!(s.trim_deliveries(mid, 2).await.unwrap(), 0);
    for e in [1, 2, 3] {
        let id = by_event(&d, e);
        assert!(s.get_delivery(id).await.unwrap().is_none(), "{id:?}");
        assert!(
            s.delivery_attempts(id).await.unwrap().is_empty(),
            "the attempts go with their delivery"
        );
    }
    let running = s.get_delivery(by_event(&d, 4)).await.unwrap().unwrap();
    assert_eq!(running.state, DeliveryState::Running);
    assert!(s.get_delivery(pending_delivery.id).await.unwrap().is_some());
    let young = by_event(&d6, 6);
    assert!(s.get_delivery(young).await.unwrap().is_some());
    assert_eq!(s.delivery_attempts(young).await.unwrap().len(), 1);
    // Even with a cut in the future, open deliveries stay: only the young finished one goes.
    let later = Utc::now() + Duration::days(2);
    assert_eq!(s.trim_deliveries(later, 500).await.unwrap(), 1);
    assert!(s.get_delivery(young).await.unwrap().is_none());
    assert!(s.get_delivery(by_event(&d, 4)).await.unwrap().is_some());
    assert!(s.get_delivery(pending_delivery.id).await.unwrap().is_some());

    // Rule runs, the same way.
    let all = rule_run_ids(&s, r).await;
    assert_eq!(all.len(), 6);
    assert_eq!(s.trim_rule_runs(mid, 2).await.unwrap(), 2);
    assert_eq!(s.trim_rule_runs(mid, 2).await.unwrap(), 1);
    assert_eq!(s.trim_rule_runs(mid, 2).await.unwrap(), 0);
    let old: Vec<i64> = [1, 2, 3].map(|e| by_event(&runs, e)).into();
    let left = rule_run_ids(&s, r).await;
    assert!(old.iter().all(|id| !left.contains(id)), "{left:?}");
    let mut kept = vec![by_event(&runs, 4), by_event(&runs6, 6)];
    let pending_run = all
        .iter()
        .copied()
        .find(|id| !old.contains(id) && !kept.contains(id))
        .unwrap();
    kept.push(pending_run);
    kept.sort_unstable();
    assert_eq!(left, kept, "running, pending and young runs stay");
    assert_eq!(s.trim_rule_runs(later, 500).await.unwrap(), 1);
    let left = rule_run_ids(&s, r).await;
    assert_eq!(
        left.len(),
        2,
        "the running and the pending run stay: {left:?}"
    );
    assert!(left.contains(&by_event(&runs, 4)) && left.contains(&pending_run));
}

/// A delivery's lease is extended only by the node that holds it: a renewed lease is not
/// taken back at its old end, one left alone is, and another node's renewal changes nothing.
pub async fn delivery_leases_are_renewed_by_their_holder_only(s: S) {
    let h = handler(&s).await;
    let r = rule(&s).await;
    let now = Utc::now();
    plan(&s, h, r, &[1, 2], now - Duration::seconds(1)).await;
    let d = s
        .claim_deliveries(OWNER, now, now + Duration::seconds(2), 100)
        .await
        .unwrap();
    assert_eq!(d.len(), 2, "{d:?}");
    let (renewed, lapsed) = (d[0].id, d[1].id);
    let later = now + Duration::seconds(60);
    assert_eq!(
        s.renew_deliveries("another-node", &[renewed, lapsed], later)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.renew_deliveries(OWNER, &[renewed], later).await.unwrap(),
        1
    );
    // Past the claim's lease, before the renewed one's end: only the lapsed one goes back.
    let after = now + Duration::seconds(30);
    assert_eq!(s.requeue_expired_deliveries(after).await.unwrap(), 1);
    let state = |id: DeliveryId| {
        let s = s.clone();
        async move { s.get_delivery(id).await.unwrap().unwrap().state }
    };
    assert_eq!(state(renewed).await, DeliveryState::Running);
    assert_eq!(state(lapsed).await, DeliveryState::Pending);
    // The holder lost the lapsed one: renewing it now changes nothing.
    assert_eq!(
        s.renew_deliveries(OWNER, &[lapsed], later).await.unwrap(),
        0
    );
    finish_delivery(&s, renewed, DeliveryState::Succeeded).await;
    assert_eq!(
        s.renew_deliveries(OWNER, &[renewed], later).await.unwrap(),
        0,
        "a finished delivery holds no lease"
    );
}
