//! The console's sessions: found only by their token's hash and only until they expire;
//! expired ones are removed when a new one is stored; sign-out removes one. The breaker
//! states nodes publish: a late write never replaces a newer one, only recently seen nodes
//! show, a stopping node's rows go.

use std::sync::Arc;

use chrono::{Duration, Utc};
use provisio_store::{BreakerRecord, ConsoleSession, NewApiKey, OverviewWindow, Role, Store};

type S = Arc<dyn Store>;

pub async fn console_sessions_expire_and_end(s: S) {
    let key = s
        .insert_api_key(&NewApiKey {
            name: "person".into(),
            prefix: "pvo_abc123".into(),
            hash: "console-h1".into(),
            role: Role::Operator,
            scope: None,
            actions: None,
            reveal_secrets: false,
            expires_at: None,
        })
        .await
        .unwrap();
    let now = Utc::now();
    let session = |hash: &str, created: chrono::DateTime<Utc>, ttl: Duration| ConsoleSession {
        token_hash: hash.into(),
        key_id: key.id,
        csrf: format!("csrf-{hash}"),
        created_at: created,
        expires_at: created + ttl,
    };
    let old = session("old", now - Duration::hours(13), Duration::hours(12));
    s.insert_console_session(&old).await.unwrap();
    let live = session("live", now, Duration::hours(12));
    s.insert_console_session(&live).await.unwrap();
    let found = s.find_console_session("live", now).await.unwrap().unwrap();
    assert_eq!(found.key_id, key.id);
    assert_eq!(found.csrf, "csrf-live");
    assert_eq!(
        found.expires_at.timestamp_micros(),
        live.expires_at.timestamp_micros()
    );
    // Past its end a session is not found, whatever the row says.
    assert!(s
        .find_console_session("live", now + Duration::hours(13))
        .await
        .unwrap()
        .is_none());
    // The expired one was removed when the live one was stored.
    assert!(s
        .find_console_session("old", now - Duration::hours(2))
        .await
        .unwrap()
        .is_none());
    assert!(s
        .find_console_session("nobody", now)
        .await
        .unwrap()
        .is_none());
    s.delete_console_session("live").await.unwrap();
    assert!(s.find_console_session("live", now).await.unwrap().is_none());
    // An empty database's overview: no jobs, each server listed once it exists.
    let window = |at: chrono::DateTime<Utc>| OverviewWindow {
        errors_since: at - Duration::hours(1),
        chart_since: at - Duration::hours(3),
        seen_since: at - Duration::minutes(1),
    };
    let o = s.console_overview(window(now)).await.unwrap();
    assert!(o.by_state.is_empty() && o.failed.is_empty() && o.per_minute.is_empty());
    assert!(o.breakers.is_empty() && o.last_sync.is_none() && o.last_audit.is_none());

    // Breakers: two nodes publish for one server.
    let srv = s
        .insert_server(&crate::suite::new_server("brk-1"))
        .await
        .unwrap();
    let rec = |node: &str, state: &str, seq: i64| BreakerRecord {
        server_id: srv.id,
        node: node.into(),
        state: state.into(),
        since: now,
        open_until: (state == "open").then(|| now + Duration::seconds(30)),
        seq,
    };
    s.record_breaker(&rec("n1", "open", 2), now).await.unwrap();
    // An earlier transition written late changes nothing.
    s.record_breaker(&rec("n1", "closed", 1), now)
        .await
        .unwrap();
    s.record_breaker(&rec("n2", "half-open", 1), now)
        .await
        .unwrap();
    let o = s.console_overview(window(now)).await.unwrap();
    let states: Vec<(&str, &str)> = o
        .breakers
        .iter()
        .map(|b| (b.node.as_str(), b.state.as_str()))
        .collect();
    assert_eq!(states, [("n1", "open"), ("n2", "half-open")]);
    assert!(o.breakers[0].open_until.is_some());
    // A minute on, only the node that marked its rows seen still shows; one gone for longer
    // than `forget_before` is removed.
    let later = now + Duration::minutes(2);
    s.touch_breakers("n2", later, now - Duration::seconds(1))
        .await
        .unwrap();
    let o = s.console_overview(window(later)).await.unwrap();
    assert_eq!(o.breakers.len(), 1, "{:?}", o.breakers);
    assert_eq!(o.breakers[0].node, "n2");
    s.touch_breakers("n2", later, later - Duration::seconds(1))
        .await
        .unwrap();
    let o = s.console_overview(window(now)).await.unwrap();
    assert_eq!(o.breakers.len(), 1, "n1's row was forgotten");
    s.drop_breakers("n2").await.unwrap();
    let o = s.console_overview(window(later)).await.unwrap();
    assert!(o.breakers.is_empty());
}

/// A service's page reads its newest jobs (the newest with their attempts) and events,
/// none of another service's, and an older part from a time on.
pub async fn service_timelines_are_newest_first_and_bounded(s: S) {
    use provisio_core::event::NewEvent;
    use provisio_core::module::Action;
    let w = crate::suite::world(&s).await;
    let service = |name: &str| crate::suite::new_service(w.client, w.product, w.server, name);
    let (svc, _) = s
        .insert_service_with_job(&service("timeline"), None)
        .await
        .unwrap();
    let (other, _) = s
        .insert_service_with_job(&service("other"), None)
        .await
        .unwrap();
    let job = || provisio_core::job::NewJob {
        server_id: w.server,
        action: Action::Suspend,
        params: provisio_core::settings::Settings::new(),
        idempotency_key: format!("k-{}", rand::random::<u64>()),
        max_attempts: 3,
        run_after: Utc::now(),
        trace_id: provisio_core::trace::TraceId::random(),
    };
    let mut ids = Vec::new();
    for i in 0..30 {
        // A refused job carries one attempt saying why.
        let j = s
            .insert_refused_job(svc.id, &job(), &format!("refused {i}"))
            .await
            .unwrap();
        ids.push(j.id);
        s.insert_events(&[
            NewEvent::new(
                "service.suspend.before",
                format!("service:{}", svc.id),
                serde_json::json!({"n": i}),
            ),
            NewEvent::new(
                "service.suspend.before",
                format!("service:{}", other.id),
                serde_json::json!({"n": i}),
            ),
        ])
        .await
        .unwrap();
    }
    s.insert_refused_job(other.id, &job(), "not this one")
        .await
        .unwrap();
    let t = s.service_timeline(svc.id, None, 25).await.unwrap();
    let newest: Vec<_> = ids.iter().rev().take(25).copied().collect();
    assert_eq!(t.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), newest);
    let with: std::collections::BTreeSet<_> = t.attempts.iter().map(|a| a.job_id).collect();
    let want: std::collections::BTreeSet<_> = ids
        .iter()
        .rev()
        .take(provisio_store::TIMELINE_ATTEMPTS)
        .copied()
        .collect();
    assert_eq!(with, want);
    assert_eq!(t.events.len(), 25);
    let subject = format!("service:{}", svc.id);
    assert!(t.events.iter().all(|e| e.subject == subject));
    assert!(
        t.events.windows(2).all(|p| p[0].id > p[1].id),
        "newest first"
    );
    assert!(t.deliveries.is_empty());
    // The older part: what was created before the oldest job shown.
    let cut = t.jobs.last().unwrap().created_at;
    let older = s.service_timeline(svc.id, Some(cut), 25).await.unwrap();
    let rest: Vec<_> = ids.iter().rev().skip(25).copied().collect();
    assert_eq!(older.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), rest);
    assert!(older.events.iter().all(|e| e.at < cut));
    let all = s
        .list_events(
            &provisio_store::EventFilter {
                subject: Some(subject.clone()),
                ..Default::default()
            },
            provisio_core::page::PageRequest::first(100),
        )
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 30);
    assert_eq!(
        older.events.len(),
        all.iter().filter(|e| e.at < cut).count().min(25)
    );
}

/// A product's `extends` chain in one read, the product first.
pub async fn product_chains_are_read_up_to_the_root(s: S) {
    use crate::suite::new_product;
    let base = s.insert_product(&new_product("base", None)).await.unwrap();
    let plus = s
        .insert_product(&new_product("plus", Some(base.id)))
        .await
        .unwrap();
    let max = s
        .insert_product(&new_product("max", Some(plus.id)))
        .await
        .unwrap();
    let ids =
        |c: Vec<provisio_core::product::Product>| c.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.product_chain_rows(max.id).await.unwrap()),
        vec![max.id, plus.id, base.id]
    );
    assert_eq!(
        ids(s.product_chain_rows(base.id).await.unwrap()),
        vec![base.id]
    );
    assert!(s
        .product_chain_rows(provisio_core::ProductId(999_999))
        .await
        .unwrap()
        .is_empty());
}
