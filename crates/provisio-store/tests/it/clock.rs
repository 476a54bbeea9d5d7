//! The store's clock: opened with a local clock that is off, a store measures the
//! database's offset at connect and stamps what it writes on the database's time.

use std::sync::Arc;

use chrono::{Duration, Utc};
use provisio_core::event::NewEvent;
use provisio_core::page::PageRequest;
use provisio_store::{Clock, EventFilter, PgStore, SqliteStore, Store};

/// Loopback round trips are well under this; the correction's error is half of one.
const CLOSE: Duration = Duration::milliseconds(500);

async fn corrects_the_skew(store: Arc<dyn Store>, skew: Duration) {
    let off = store.clock().offset() + skew;
    assert!(off.abs() < CLOSE, "measured at connect: {off}");
    assert!((store.clock().local_now() - Utc::now() - skew).abs() < CLOSE);
    assert!((store.clock().now() - Utc::now()).abs() < CLOSE);
    // Measured again, the offset stays where it was.
    let again = store.sync_clock().await.unwrap();
    assert!((again + skew).abs() < CLOSE, "measured again: {again}");
    // What the store stamps is on the database's time, not the node's.
    store
        .insert_events(&[NewEvent::new(
            "client.created",
            "client:1",
            serde_json::json!({}),
        )])
        .await
        .unwrap();
    let events = store
        .list_events(&EventFilter::default(), PageRequest::first(10))
        .await
        .unwrap()
        .items;
    let at = events.last().expect("the event").at;
    assert!(
        (at - Utc::now()).abs() < Duration::seconds(2),
        "stamped {at}"
    );
}

#[tokio::test]
async fn sqlite_measures_its_clock_and_stamps_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clock.db");
    let skew = Duration::seconds(90);
    let store = SqliteStore::open_with_clock(path.to_str().unwrap(), Clock::skewed(skew))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    // A local file's clock is this machine's: the correction is exact.
    assert_eq!(store.clock().offset(), -skew);
    corrects_the_skew(Arc::new(store), skew).await;
}

#[tokio::test]
async fn postgres_measures_its_clock_and_stamps_on_it() {
    let url = crate::harness::fresh_pg_url().await;
    for skew in [Duration::seconds(90), Duration::seconds(-90)] {
        let store = PgStore::connect_with_clock(&url, Clock::skewed(skew))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        corrects_the_skew(Arc::new(store), skew).await;
    }
}

/// A clock told not to correct still measures (for the warning) but keeps its own time.
#[tokio::test]
async fn an_uncorrected_clock_measures_but_keeps_its_time() {
    let url = crate::harness::fresh_pg_url().await;
    let skew = Duration::seconds(90);
    let store = PgStore::connect_with_clock(&url, Clock::skewed(skew).uncorrected())
        .await
        .unwrap();
    let measured = store.sync_clock().await.unwrap();
    assert!((measured + skew).abs() < CLOSE, "{measured}");
    assert_eq!(store.clock().offset(), Duration::zero());
    assert!((store.clock().now() - Utc::now() - skew).abs() < CLOSE);
}
