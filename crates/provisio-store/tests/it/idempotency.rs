//! Idempotency keys and batch inserts: one claim wins, a kept answer is given again, a dead
//! node's claim is taken over only by the same request, expired keys serve afresh; a batch
//! of services or clients is stored all or none.

use std::sync::Arc;

use chrono::{Duration, Utc};
use provisio_core::secret::Sealed;
use provisio_store::{IdempotencyClaim, Store, StoreError};

use crate::suite::{new_client, new_service};

type S = Arc<dyn Store>;

pub async fn idempotency_keys_claim_keep_and_expire(s: S) {
    let now = Utc::now();
    let hold = now + Duration::seconds(60);
    let long_ago = now - Duration::days(1);
    let claim = |key: &'static str, fp: &'static str, at: chrono::DateTime<Utc>| {
        let s = s.clone();
        async move {
            s.claim_idempotency_key(
                7,
                key,
                fp,
                at,
                at + Duration::seconds(60),
                at - Duration::days(1),
            )
            .await
            .unwrap()
        }
    };
    assert_eq!(claim("k1", "fp-a", now).await, IdempotencyClaim::Claimed);
    // While it runs: the same request and another one both see it running.
    match claim("k1", "fp-a", now).await {
        IdempotencyClaim::Running {
            fingerprint,
            locked_until,
        } => {
            assert_eq!(fingerprint, "fp-a");
            assert_eq!(locked_until.timestamp(), hold.timestamp());
        }
        other => panic!("{other:?}"),
    }
    // Keys belong to their API key.
    assert_eq!(
        s.claim_idempotency_key(8, "k1", "fp-a", now, hold, long_ago)
            .await
            .unwrap(),
        IdempotencyClaim::Claimed
    );
    s.finish_idempotency_key(7, "k1", 201, &Sealed(b"sealed-answer".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        claim("k1", "fp-a", now).await,
        IdempotencyClaim::Done {
            fingerprint: "fp-a".into(),
            status: 201,
            response: Sealed(b"sealed-answer".to_vec()),
        }
    );
    // A released key runs afresh.
    assert_eq!(claim("k2", "fp-b", now).await, IdempotencyClaim::Claimed);
    s.release_idempotency_key(7, "k2").await.unwrap();
    assert_eq!(claim("k2", "fp-b", now).await, IdempotencyClaim::Claimed);
    // Past its hold (its node died), only the same request takes it over.
    let later = now + Duration::seconds(120);
    assert!(matches!(
        claim("k2", "fp-other", later).await,
        IdempotencyClaim::Running { .. }
    ));
    assert_eq!(claim("k2", "fp-b", later).await, IdempotencyClaim::Claimed);
    // After its lifetime a key serves a new request.
    let next_day = now + Duration::days(2);
    assert_eq!(
        claim("k1", "fp-new", next_day).await,
        IdempotencyClaim::Claimed
    );
    // Trimmed by age, in batches.
    assert_eq!(
        s.trim_idempotency_keys(now + Duration::hours(1), 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.trim_idempotency_keys(now + Duration::hours(1), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.trim_idempotency_keys(now + Duration::hours(1), 10)
            .await
            .unwrap(),
        0
    );
}

pub async fn concurrent_claims_of_one_key_have_one_winner(s: S) {
    let now = Utc::now();
    let tries = (0..50).map(|_| {
        let s = s.clone();
        tokio::spawn(async move {
            s.claim_idempotency_key(
                1,
                "same",
                "fp",
                now,
                now + Duration::seconds(60),
                now - Duration::days(1),
            )
            .await
            .unwrap()
        })
    });
    let mut won = 0;
    for t in tries.collect::<Vec<_>>() {
        if t.await.unwrap() == IdempotencyClaim::Claimed {
            won += 1;
        }
    }
    assert_eq!(won, 1);
}

pub async fn batches_are_stored_all_or_none(s: S) {
    let w = crate::suite::world(&s).await;
    let (c, prod, srv) = (w.client, w.product, w.server);
    let mut a = new_service(c, prod, srv, "batch-a");
    a.external_id = Some(provisio_core::text::ExternalId::parse("ext-1").unwrap());
    let b = new_service(c, prod, srv, "batch-b");
    let stored = s
        .insert_services_with_jobs(&[(a.clone(), None), (b, None)])
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].0.external_id.as_ref().unwrap().as_str(), "ext-1");
    // A taken external id fails the whole batch, naming the field; the other is not stored.
    let mut dup = new_service(c, prod, srv, "batch-c");
    dup.external_id = a.external_id.clone();
    let fresh = new_service(c, prod, srv, "batch-d");
    match s
        .insert_services_with_jobs(&[(fresh, None), (dup, None)])
        .await
    {
        Err(StoreError::Conflict { field }) => assert_eq!(field, "external_id"),
        other => panic!("{other:?}"),
    }
    let live = s
        .count_services(&provisio_store::ServiceFilter::default())
        .await
        .unwrap();
    assert_eq!(live, 2, "nothing of the failed batch was stored");
    // Clients too, and found again by the key they were made under.
    let mut one = new_client("One", "1@a.test");
    one.order_key = Some("idem:1:u1".into());
    let two = new_client("Two", "2@a.test");
    let made = s
        .insert_clients(&[one, two], &["client.created"])
        .await
        .unwrap();
    assert_eq!(made.len(), 2);
    let found = s
        .find_client_by_order_key("idem:1:u1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, made[0].id);
}
