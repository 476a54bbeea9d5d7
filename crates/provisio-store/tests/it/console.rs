//! The console's sessions: found only by their token's hash and only until they expire;
//! expired ones are removed when a new one is stored; sign-out removes one.

use std::sync::Arc;

use chrono::{Duration, Utc};
use provisio_store::{ConsoleSession, NewApiKey, Role, Store};

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
    let o = s
        .console_overview(now - Duration::hours(1), now - Duration::hours(3))
        .await
        .unwrap();
    assert!(o.by_state.is_empty() && o.failed.is_empty() && o.per_minute.is_empty());
}
