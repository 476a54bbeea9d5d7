//! Placement: an order without a server goes to the enabled server with the fewest live
//! services, read from the counts the store keeps (terminations free a place at once).

use std::collections::HashMap;

use provisio_core::service::ServiceStatus;
use provisio_core::ServerId;
use provisio_engine::input::{RecordRef, ServerCreate, ServiceCreate};
use serde_json::json;

use crate::harness::{settings, TestEngine, TOKEN};

fn order(t: &TestEngine, n: usize, server: Option<&str>) -> ServiceCreate {
    ServiceCreate {
        order_key: None,
        external_id: None,
        client_id: t.client,
        product: RecordRef::Name("basic".into()),
        server: server.map(|s| RecordRef::Name(s.into())),
        username: Some(format!("p{n}")),
        password: None,
        invoice: None,
        parent_invoice: None,
        settings: settings(json!({})),
    }
}

async fn loads(t: &TestEngine) -> HashMap<ServerId, usize> {
    let mut out = HashMap::new();
    for s in t
        .engine
        .list_services(
            &Default::default(),
            provisio_core::page::PageRequest::first(1000),
        )
        .await
        .unwrap()
        .items
    {
        if s.status != ServiceStatus::Terminated {
            *out.entry(s.server_id).or_default() += 1;
        }
    }
    out
}

#[tokio::test]
async fn orders_go_to_the_server_with_fewest_live_services() {
    let t = TestEngine::new().await;
    let mut ids = vec![
        t.engine
            .find_server(&RecordRef::Name("edge-1".into()))
            .await
            .unwrap()
            .id,
    ];
    for name in ["edge-2", "edge-3"] {
        let s = t
            .engine
            .create_server(ServerCreate {
                name: name.into(),
                module: "recording".into(),
                group: None,
                settings: settings(json!({ "token": TOKEN })),
                max_concurrent: None,
                max_per_second: None,
                enabled: None,
            })
            .await
            .unwrap();
        ids.push(s.id);
    }
    for n in 0..3 {
        t.engine
            .create_service(order(&t, n, Some("edge-1")))
            .await
            .unwrap();
    }
    // Six unplaced orders fill the two empty servers up to edge-1.
    for n in 3..9 {
        t.engine.create_service(order(&t, n, None)).await.unwrap();
    }
    let l = loads(&t).await;
    assert_eq!((l[&ids[0]], l[&ids[1]], l[&ids[2]]), (3, 3, 3));
    // A batch counts its own orders as it places them: one more on each.
    let batch = (9..12).map(|n| order(&t, n, None)).collect();
    let done = t.engine.order_services(batch).await.unwrap();
    assert!(done.iter().all(|r| r.is_ok()));
    let l = loads(&t).await;
    assert_eq!((l[&ids[0]], l[&ids[1]], l[&ids[2]]), (4, 4, 4));
    // Two terminated on edge-3 free two places there, and the next two orders take them.
    let on3 = t
        .engine
        .list_services(
            &provisio_store::ServiceFilter {
                server_id: Some(ids[2]),
                ..Default::default()
            },
            provisio_core::page::PageRequest::first(2),
        )
        .await
        .unwrap()
        .items;
    for mut s in on3 {
        s.status = ServiceStatus::Terminated;
        t.engine.store().update_service(&s).await.unwrap();
    }
    for n in 12..14 {
        let s = t.engine.create_service(order(&t, n, None)).await.unwrap();
        assert_eq!(s.server_id, ids[2], "order {n}");
    }
}
