//! Single orders that arrive together are stored through the order lane, several in one
//! write: each caller still gets its own order's result, only after it is stored, and
//! under its own cause.

use provisio_core::access::Actor;
use provisio_core::job::JobState;
use provisio_engine::input::{RecordRef, ServiceCreate};
use provisio_engine::EngineError;
use serde_json::json;

use crate::harness::{settings, TestEngine};

fn order(t: &TestEngine, username: &str) -> ServiceCreate {
    ServiceCreate {
        order_key: None,
        external_id: None,
        client_id: t.client,
        product: RecordRef::Name("auto".into()),
        server: None,
        username: Some(username.into()),
        password: None,
        invoice: None,
        parent_invoice: None,
        settings: settings(json!({})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_fail_alone_and_are_stored_when_answered() {
    let t = TestEngine::new().await;
    for n in 0..7 {
        t.engine
            .create_service(order(&t, &format!("taken{n}")))
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..48usize {
        let engine = t.engine.clone();
        // Every seventh order asks for a username already taken on the only server.
        let username = if n % 7 == 0 {
            format!("taken{}", n / 7)
        } else {
            format!("fresh{n}")
        };
        let input = order(&t, &username);
        // Two causes, so the lane must keep each order's actor apart.
        let actor = Actor::Key {
            id: (n % 2) as i64 + 1,
            name: format!("key-{}", n % 2),
        };
        tasks.spawn(async move {
            let answered = provisio_store::acting(actor.clone(), engine.order_service(input)).await;
            // Read back the moment the caller is answered, through a reader connection.
            let seen = match &answered {
                Ok(o) => {
                    let s = engine.store().get_service(o.service.id).await.unwrap();
                    let j = engine
                        .store()
                        .get_job(o.job.as_ref().unwrap().id)
                        .await
                        .unwrap();
                    Some((s, j))
                }
                Err(_) => None,
            };
            (n, username, actor, answered, seen)
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let (n, username, actor, answered, seen) = r.unwrap();
        if n % 7 == 0 {
            match answered {
                Err(EngineError::Conflict { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("username"), "order {n}")
                }
                other => panic!("order {n} with a taken username answered {other:?}"),
            }
            continue;
        }
        let o = answered.unwrap_or_else(|e| panic!("order {n} failed: {e}"));
        assert_eq!(o.service.username.as_str(), username);
        let (s, j) = seen.unwrap();
        assert_eq!(s.expect("stored when answered").username.as_str(), username);
        let j = j.expect("its job stored when answered");
        assert_eq!(j.service_id, o.service.id);
        assert_eq!(j.state, JobState::Pending);
        assert_eq!(
            j.actor.map(|a| a.stored()),
            Some(actor.stored()),
            "order {n}"
        );
        ok += 1;
    }
    assert_eq!(ok, 48 - 7);
    // Every stored order announced its create, under its own cause.
    let mut announced = 0;
    for actor in ["key:1", "key:2"] {
        let events = t
            .engine
            .store()
            .list_events(
                &provisio_store::EventFilter {
                    actor: Some(actor.into()),
                    ..Default::default()
                },
                provisio_core::page::PageRequest::first(1000),
            )
            .await
            .unwrap()
            .items;
        assert!(events
            .iter()
            .all(|e| e.kind.as_str() == "service.create.before"));
        announced += events.len();
    }
    assert_eq!(announced, 41);
}
