//! The action path at the engine: what may be queued, in what order, with which input, and
//! what the module is sent and may say back.

use std::time::Duration;

use provisio_core::job::JobState;
use provisio_core::module::Action;
use provisio_core::service::ServiceStatus;
use provisio_engine::{ActionInput, EngineError};
use serde_json::json;

use crate::harness::{TestEngine, TOKEN};

fn rules(e: &EngineError) -> Vec<String> {
    match e {
        EngineError::Invalid(list) => list
            .iter()
            .map(|f| format!("{}:{}", f.field, f.rule))
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

#[tokio::test]
async fn actions_queue_against_the_projected_status() {
    let t = TestEngine::new().await;
    let s = t.order("basic", "alice", json!({})).await;
    assert_eq!(s.status, ServiceStatus::Pending);
    // Nothing but a create applies to a pending service with no open job.
    let e = t
        .engine
        .request_action(s.id, Action::Suspend, ActionInput::default())
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::Conflict { .. }), "{e:?}");
    t.engine
        .request_action(s.id, Action::Create, ActionInput::default())
        .await
        .unwrap();
    // The queued create makes it active-to-be: a suspend may queue behind it, a second
    // create may not.
    let e = t
        .engine
        .request_action(s.id, Action::Create, ActionInput::default())
        .await
        .unwrap_err();
    assert!(matches!(e, EngineError::Conflict { .. }), "{e:?}");
    let suspend = t
        .engine
        .request_action(s.id, Action::Suspend, ActionInput::default())
        .await
        .unwrap();
    assert_eq!(suspend.params["reason"], "admin");
    let e = t
        .engine
        .request_action(s.id, Action::Suspend, ActionInput::default())
        .await
        .unwrap_err();
    assert!(
        matches!(e, EngineError::Conflict { .. }),
        "suspended-to-be: {e:?}"
    );
    // Nothing ran: no worker is started in this test.
    assert!(t.calls().is_empty());
}

#[tokio::test]
async fn the_module_decides_which_actions_exist() {
    let t = TestEngine::new().await;
    let s = t.order("auto", "bob", json!({})).await;
    let e = t
        .engine
        .request_action(s.id, Action::Renew, ActionInput::default())
        .await
        .unwrap_err();
    match &e {
        EngineError::Conflict { message, .. } => {
            assert_eq!(message, "module 'recording' cannot renew")
        }
        other => panic!("{other:?}"),
    }
    let e = t
        .engine
        .request_action(s.id, Action::Custom("wipe".into()), ActionInput::default())
        .await
        .unwrap_err();
    match &e {
        EngineError::NotFound { what, key } => {
            assert_eq!(*what, "action");
            assert!(key.contains("'wipe'") && key.contains("reboot"), "{key}");
        }
        other => panic!("{other:?}"),
    }
    let job = t
        .engine
        .request_action(
            s.id,
            Action::Custom("reboot".into()),
            ActionInput::default(),
        )
        .await
        .unwrap();
    assert_eq!(job.action, Action::Custom("reboot".into()));
    // Lookups are the engine's own, never a caller's.
    let e = t
        .engine
        .request_action(s.id, Action::Lookup, ActionInput::default())
        .await
        .unwrap_err();
    assert_eq!(rules(&e), ["action:enum"]);
}

async fn change_package(
    t: &TestEngine,
    service: provisio_core::ServiceId,
    product: &str,
) -> Result<provisio_core::job::Job, EngineError> {
    let input = ActionInput {
        product: Some(provisio_engine::input::RecordRef::Name(product.into())),
        ..Default::default()
    };
    t.engine
        .request_action(service, Action::ChangePackage, input)
        .await
}

#[tokio::test]
async fn input_is_checked_against_the_action() {
    let t = TestEngine::new().await;
    let s = t.order("auto", "carol", json!({})).await;
    let e = t
        .engine
        .request_action(
            s.id,
            Action::Terminate,
            ActionInput {
                reason: Some("holiday".into()),
                password: Some("long enough pw".to_string().into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        rules(&e),
        ["reason:not_applicable", "password:not_applicable"]
    );
    let e = change_package(&t, s.id, "auto").await.unwrap_err();
    assert_eq!(rules(&e), ["product:same"]);
    let e = change_package(&t, s.id, "platinum").await.unwrap_err();
    assert_eq!(rules(&e), ["product:exists"]);
    let job = change_package(&t, s.id, "gold").await.unwrap();
    assert!(job.params["product_id"].is_i64());
}

#[tokio::test]
async fn the_worker_sends_one_request_per_job_and_no_secret_comes_back() {
    let t = TestEngine::new().await;
    let ok = t.order("auto", "dave", json!({})).await;
    let loud = t.order("auto", "erin", json!({"echo_secrets": true})).await;
    let worker = provisio_engine::worker::spawn(t.engine.clone(), "engine-test".into());
    let jobs = t
        .engine
        .list_jobs(
            &Default::default(),
            provisio_core::page::PageRequest::first(100),
        )
        .await
        .unwrap()
        .items;
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let done = t
        .engine
        .wait_for_jobs(&ids, Duration::from_secs(20))
        .await
        .unwrap();
    let of = |service| {
        jobs.iter()
            .find(|j| j.service_id == service)
            .map(|j| done[&j.id].clone())
            .unwrap()
    };
    assert_eq!(of(ok.id).state, JobState::Done);
    let failed = of(loud.id);
    assert_eq!(failed.state, JobState::Failed);
    let message = failed.last_error.clone().unwrap();
    assert!(message.contains("[redacted]"), "{message}");
    for secret in [TOKEN, "client-password-5b1d"] {
        assert!(!message.contains(secret), "{message}");
    }
    // The attempt record carries the same redacted message.
    let detail = t.engine.get_job(failed.id).await.unwrap();
    for a in &detail.attempts {
        assert!(!a.message.clone().unwrap_or_default().contains(TOKEN));
    }
    // A connection test builds a server-only request through the same builder and layer.
    let tested = t
        .engine
        .test_connection(&provisio_engine::input::RecordRef::Name("edge-1".into()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        tested.contains("[redacted]") && !tested.contains(TOKEN),
        "{tested}"
    );
    // One create per service, each with its own idempotency key.
    let calls = t.calls();
    let creates: Vec<_> = calls.iter().filter(|c| c.0 == "create").collect();
    assert_eq!(creates.len(), 2, "{calls:?}");
    assert_ne!(creates[0].2, creates[1].2);
    assert_eq!(
        t.engine.get_service(ok.id).await.unwrap().status,
        ServiceStatus::Active
    );
    assert!(t.actions_called().contains(&Action::TestConnection));
    worker.shutdown().await;
}

#[tokio::test]
async fn a_panicking_module_costs_one_attempt_and_frees_its_slot() {
    let t = TestEngine::new().await;
    // One slot on the server: a slot lost to the panic would keep the next create waiting.
    t.engine
        .update_server(
            &provisio_engine::input::RecordRef::Name("edge-1".into()),
            provisio_engine::input::ServerPatch {
                max_concurrent: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let bad = t.order("auto", "frank", json!({"panic": true})).await;
    let worker = provisio_engine::worker::spawn(t.engine.clone(), "engine-test".into());
    let first = t
        .engine
        .list_jobs(
            &Default::default(),
            provisio_core::page::PageRequest::first(10),
        )
        .await
        .unwrap()
        .items
        .remove(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let job = loop {
        let j = t.engine.get_job(first.id).await.unwrap().job;
        if j.attempts >= 1 || std::time::Instant::now() > deadline {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job.service_id, bad.id);
    assert_eq!(job.attempts, 1, "{job:?}");
    assert_eq!(job.state, JobState::Pending, "retried, not stuck running");
    assert!(
        job.needs_lookup,
        "the module may have acted: look it up first"
    );
    assert_eq!(
        job.error_kind,
        Some(provisio_core::module::ErrorKind::Unknown)
    );
    let message = job.last_error.clone().unwrap_or_default();
    assert!(message.contains("panicked"), "{message}");
    let attempts = t.engine.get_job(job.id).await.unwrap().attempts;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "unknown");
    // The slot is free again and the worker goes on.
    let good = t.order("auto", "grace", json!({})).await;
    let next = t
        .engine
        .list_jobs(
            &provisio_store::JobFilter {
                service_id: Some(good.id),
                ..Default::default()
            },
            provisio_core::page::PageRequest::first(10),
        )
        .await
        .unwrap()
        .items
        .remove(0);
    let done = t
        .engine
        .wait_for_job(next.id, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Done, "{done:?}");
    worker.shutdown().await;
}
