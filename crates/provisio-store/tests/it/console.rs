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
