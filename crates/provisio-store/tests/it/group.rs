//! Writes that arrive together (committed together on SQLite): each caller's failure is its
//! own, and what a caller was told is written is there the moment it is told.

use std::sync::Arc;

use provisio_core::event::NewEvent;
use provisio_store::{ServiceFilter, Store, StoreError};
use serde_json::json;

use crate::suite::{new_service, world};

type S = Arc<dyn Store>;

pub async fn concurrent_writes_fail_alone_and_are_read_when_answered(s: S) {
    let w = world(&s).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..48 {
        let s = s.clone();
        // Every sixth order takes the same username, so all but one of them must fail
        // while the orders around them, written in the same moments, succeed.
        let name = if i % 6 == 0 {
            "dup".to_string()
        } else {
            format!("u{i}")
        };
        tasks.spawn(async move {
            let placed = s
                .insert_service_with_job(&new_service(w.client, w.product, w.server, &name), None)
                .await;
            if let Ok((service, _)) = &placed {
                // Answered only after the commit: a reader on another connection sees it.
                let read = s.get_service(service.id).await.unwrap();
                assert_eq!(read.map(|r| r.username), Some(service.username.clone()));
                s.insert_events(&[NewEvent::new(
                    "service.noted",
                    format!("service:{}", service.id),
                    json!({ "i": i }),
                )])
                .await
                .unwrap();
            }
            placed.map(|_| ())
        });
    }
    let (mut ok, mut conflicts) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict { field }) => {
                assert_eq!(field, "username");
                conflicts += 1;
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!((ok, conflicts), (41, 7));
    assert_eq!(
        s.count_services(&ServiceFilter::default()).await.unwrap(),
        41
    );
    let events = s
        .list_events(
            &provisio_store::EventFilter::default(),
            provisio_core::page::PageRequest::first(500),
        )
        .await
        .unwrap();
    let noted = events
        .items
        .iter()
        .filter(|e| e.kind.as_str() == "service.noted")
        .count();
    assert_eq!(noted, 41);
}

/// Orders are stored with the events announcing them, made from the stored rows, in one
/// transaction: every announcement names its new service, and a batch that fails stores
/// neither its orders nor their announcements.
pub async fn orders_are_stored_with_their_announcements(s: S) {
    let w = world(&s).await;
    let job = |key: &str| provisio_core::job::NewJob {
        server_id: w.server,
        action: provisio_core::module::Action::Create,
        params: provisio_core::settings::Settings::new(),
        idempotency_key: key.into(),
        max_attempts: 3,
        run_after: chrono::Utc::now(),
        trace_id: provisio_core::trace::TraceId::random(),
    };
    let announce = |svc: &provisio_core::service::Service, j: Option<&provisio_core::job::Job>| {
        vec![NewEvent::new(
            "service.create.before",
            format!("service:{}", svc.id),
            json!({ "job": j.map(|j| j.id.0) }),
        )]
    };
    let orders = [
        (
            new_service(w.client, w.product, w.server, "o1"),
            Some(job("o1")),
        ),
        (new_service(w.client, w.product, w.server, "o2"), None),
    ];
    let stored = s.insert_orders(&orders, announce).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].0.username.as_str(), "o1");
    let first_job = stored[0].1.as_ref().expect("the first order's job").id;
    assert!(stored[1].1.is_none());
    let events = s
        .list_events(
            &provisio_store::EventFilter::default(),
            provisio_core::page::PageRequest::first(100),
        )
        .await
        .unwrap();
    let subjects: Vec<(String, serde_json::Value)> = events
        .items
        .iter()
        .filter(|e| e.kind.as_str() == "service.create.before")
        .map(|e| (e.subject.clone(), e.payload["job"].clone()))
        .collect();
    assert_eq!(
        subjects,
        vec![
            (format!("service:{}", stored[0].0.id), json!(first_job.0)),
            (
                format!("service:{}", stored[1].0.id),
                serde_json::Value::Null
            ),
        ]
    );
    // The second order takes a live username: nothing of this batch is stored.
    let clash = [
        (
            new_service(w.client, w.product, w.server, "o3"),
            Some(job("o3")),
        ),
        (
            new_service(w.client, w.product, w.server, "o1"),
            Some(job("o4")),
        ),
    ];
    match s.insert_orders(&clash, announce).await {
        Err(StoreError::Conflict { field }) => assert_eq!(field, "username"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.count_services(&ServiceFilter::default()).await.unwrap(),
        2
    );
    let after = s
        .list_events(
            &provisio_store::EventFilter::default(),
            provisio_core::page::PageRequest::first(100),
        )
        .await
        .unwrap();
    assert_eq!(
        after.items.len(),
        events.items.len(),
        "no announcement of the failed batch"
    );
}

/// Concurrent callers of `insert_orders` (on SQLite written together by the order lane):
/// each caller's orders are stored all or none, a caller whose order takes a username
/// fails alone, and every stored job and event carries its own caller's actor and depth.
pub async fn concurrent_orders_keep_their_cause_and_fail_alone(s: S) {
    use provisio_core::access::Actor;
    let w = world(&s).await;
    let announce = |svc: &provisio_core::service::Service, _: Option<&provisio_core::job::Job>| {
        vec![NewEvent::new(
            "service.create.before",
            format!("service:{}", svc.id),
            json!({}),
        )]
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30u32 {
        let s = s.clone();
        // Every fifth caller's second order takes the same username: one of those six
        // callers is stored, the other five fail with both their orders.
        let second = if i % 5 == 0 {
            "dup".to_string()
        } else {
            format!("b{i}")
        };
        let actor = if i % 2 == 0 {
            Actor::Rule { id: i64::from(i) }
        } else {
            Actor::Scheduler
        };
        let depth = i % 3;
        let job = |key: String| create_job(w.server, key);
        let orders = vec![
            (
                new_service(w.client, w.product, w.server, &format!("a{i}")),
                Some(job(format!("a{i}"))),
            ),
            (
                new_service(w.client, w.product, w.server, &second),
                Some(job(format!("b{i}"))),
            ),
        ];
        tasks.spawn(provisio_store::acting_at(
            actor.clone(),
            depth,
            async move {
                let stored = s.insert_orders(&orders, announce).await;
                (i, actor, depth, stored)
            },
        ));
    }
    let (mut ok, mut conflicts) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (i, actor, depth, stored) = r.unwrap();
        match stored {
            Ok(stored) => {
                ok += 1;
                assert_eq!(stored.len(), 2);
                assert_eq!(stored[0].0.username.as_str(), format!("a{i}"));
                for (service, job) in &stored {
                    // Answered only after the commit: another connection reads it back.
                    let read = s.get_service(service.id).await.unwrap().expect("stored");
                    assert_eq!(read.username, service.username);
                    let job = job.as_ref().expect("a create job");
                    assert_eq!(job.service_id, service.id);
                    assert_eq!(job.actor.as_ref().map(Actor::stored), Some(actor.stored()));
                    let events = s
                        .list_events(
                            &provisio_store::EventFilter {
                                subject: Some(format!("service:{}", service.id)),
                                ..Default::default()
                            },
                            provisio_core::page::PageRequest::first(10),
                        )
                        .await
                        .unwrap();
                    assert_eq!(events.items.len(), 1);
                    assert_eq!(
                        events.items[0].actor.as_ref().map(Actor::stored),
                        Some(actor.stored())
                    );
                    assert_eq!(events.items[0].depth, depth);
                }
            }
            Err(StoreError::Conflict { field }) => {
                assert_eq!(field, "username");
                assert_eq!(i % 5, 0, "only a caller with the shared username fails");
                conflicts += 1;
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!((ok, conflicts), (25, 5));
    assert_eq!(
        s.count_services(&ServiceFilter::default()).await.unwrap(),
        50
    );
}

/// Every job is stored with its own order's service, also where a live service has the
/// same username on the same server as a terminated one ordered beside it (an imported
/// history, say), and whether the orders arrive alone or together.
pub async fn jobs_are_stored_with_their_own_service(s: S) {
    let w = world(&s).await;
    let job = |key: String| create_job(w.server, key);
    let (live, _) = s
        .insert_service_with_job(&new_service(w.client, w.product, w.server, "twin"), None)
        .await
        .unwrap();
    let mut gone = new_service(w.client, w.product, w.server, "twin");
    gone.status = provisio_core::service::ServiceStatus::Terminated;
    let (stored, job_of_gone) = s
        .insert_service_with_job(&gone, Some(&job("gone".into())))
        .await
        .unwrap();
    assert_ne!(stored.id, live.id);
    assert_eq!(job_of_gone.expect("its job").service_id, stored.id);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let s = s.clone();
        let orders = vec![
            (
                new_service(w.client, w.product, w.server, &format!("p{i}")),
                Some(job(format!("p{i}"))),
            ),
            (
                new_service(w.client, w.product, w.server, &format!("q{i}")),
                None,
            ),
            (
                new_service(w.client, w.product, w.server, &format!("r{i}")),
                Some(job(format!("r{i}"))),
            ),
        ];
        tasks.spawn(async move {
            s.insert_orders(&orders, |_, _| Vec::new())
                .await
                .map(|stored| (i, stored))
        });
    }
    while let Some(r) = tasks.join_next().await {
        let (i, stored) = r.unwrap().unwrap();
        let names: Vec<&str> = stored.iter().map(|(s, _)| s.username.as_str()).collect();
        assert_eq!(names, [format!("p{i}"), format!("q{i}"), format!("r{i}")]);
        for (service, job) in &stored {
            match job {
                Some(job) => {
                    assert_eq!(job.service_id, service.id);
                    assert_eq!(job.idempotency_key, service.username.as_str());
                    let read = s.get_job(job.id).await.unwrap().expect("stored");
                    assert_eq!(read.service_id, service.id);
                }
                None => assert!(service.username.as_str().starts_with('q')),
            }
        }
    }
}

/// A SQLite store opened in one runtime and used in another after the first has ended
/// (its lane and flusher ended with it): orders are still stored, and answered only once
/// committed.
#[test]
fn orders_are_stored_after_the_opening_runtime_ends() {
    let first = tokio::runtime::Runtime::new().unwrap();
    let (db, w) = first.block_on(async {
        let db = crate::harness::sqlite().await;
        let w = world(&db.store).await;
        (db, w)
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let s = db.store.clone();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let s = s.clone();
            tasks.spawn(async move {
                s.insert_service_with_job(
                    &new_service(w.client, w.product, w.server, &format!("late{i}")),
                    None,
                )
                .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            let (service, _) = r.unwrap().unwrap();
            assert!(s.get_service(service.id).await.unwrap().is_some());
        }
        assert_eq!(
            s.count_services(&ServiceFilter::default()).await.unwrap(),
            8
        );
    });
}

/// A create job on `server` under `key`, due now.
fn create_job(server: provisio_core::ServerId, key: String) -> provisio_core::job::NewJob {
    provisio_core::job::NewJob {
        server_id: server,
        action: provisio_core::module::Action::Create,
        params: provisio_core::settings::Settings::new(),
        idempotency_key: key,
        max_attempts: 3,
        run_after: chrono::Utc::now(),
        trace_id: provisio_core::trace::TraceId::random(),
    }
}
