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
