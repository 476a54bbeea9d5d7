//! Client balance transactions: atomic arithmetic, idempotent replays and zero crossings,
//! on both databases.

use std::sync::Arc;

use provisio_core::client::{NewTransaction, TransactionKind};
use provisio_core::event::EventPattern;
use provisio_core::page::PageRequest;
use provisio_core::ClientId;
use provisio_store::{EventFilter, Store, StoreError, TransactionOutcome};

use crate::suite::new_client;

type S = Arc<dyn Store>;

fn tx(kind: TransactionKind, amount: i64, key: &str) -> NewTransaction {
    NewTransaction {
        kind,
        amount_minor: amount,
        idempotency_key: key.into(),
        description: None,
    }
}

async fn apply(
    s: &S,
    c: ClientId,
    kind: TransactionKind,
    amount: i64,
    key: &str,
) -> TransactionOutcome {
    s.apply_transaction(c, &tx(kind, amount, key))
        .await
        .unwrap()
}

async fn client(s: &S, balance: i64) -> ClientId {
    let mut nc = new_client("Payer", "payer@example.com");
    nc.balance_minor = balance;
    s.insert_client(&nc, &[]).await.unwrap().id
}

/// The balance events of a client, as (type, before, after).
async fn crossings(s: &S, c: ClientId) -> Vec<(String, i64, i64)> {
    let f = EventFilter {
        types: ["client.balance_nonnegative", "client.balance_nonpositive"]
            .iter()
            .map(|p| EventPattern::parse(p).unwrap())
            .collect(),
        subject: Some(format!("client:{c}")),
        ..Default::default()
    };
    s.list_events(&f, PageRequest::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.kind.as_str().to_string(),
                e.payload["balance_before"].as_i64().unwrap(),
                e.payload["balance_after"].as_i64().unwrap(),
            )
        })
        .collect()
}

pub async fn balance_transactions_move_the_balance(s: S) {
    use TransactionKind::*;
    let c = client(&s, 100).await;
    let o = apply(&s, c, Payment, 50, "p1").await;
    assert!(!o.replayed);
    assert_eq!(o.client.balance_minor, 150);
    assert_eq!(o.transaction.balance_after, 150);
    assert_eq!(o.transaction.client_id, c);
    assert_eq!(
        apply(&s, c, Credit, 5, "c1").await.client.balance_minor,
        155
    );
    assert_eq!(
        apply(&s, c, Charge, 30, "ch1").await.client.balance_minor,
        125
    );
    let mut with_text = tx(Refund, 25, "r1");
    with_text.description = Some("goodwill".into());
    let o = s.apply_transaction(c, &with_text).await.unwrap();
    assert_eq!(o.client.balance_minor, 100);
    assert_eq!(o.transaction.description.as_deref(), Some("goodwill"));
    assert_eq!(s.get_client(c).await.unwrap().unwrap().balance_minor, 100);

    // Listed oldest first, page by page; another client's stay apart.
    let other = client(&s, 0).await;
    apply(&s, other, Payment, 1, "p1").await;
    let first = s.list_transactions(c, PageRequest::first(3)).await.unwrap();
    let kinds: Vec<_> = first.items.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [Payment, Credit, Charge]);
    let rest = s
        .list_transactions(
            c,
            PageRequest {
                after: first.next,
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0], o.transaction);
    assert!(rest.next.is_none());

    // An edit of the client never writes the balance back.
    let mut stale = s.get_client(c).await.unwrap().unwrap();
    apply(&s, c, Payment, 7, "p2").await;
    stale.email = provisio_core::text::Email::parse("new@example.com").unwrap();
    assert_eq!(
        s.update_client(&stale, &[]).await.unwrap().balance_minor,
        107
    );

    // A missing client, and a balance that would overflow, change nothing.
    assert!(matches!(
        s.apply_transaction(ClientId(999_999), &tx(Payment, 1, "x"))
            .await,
        Err(StoreError::NotFound)
    ));
    let rich = client(&s, i64::MAX - 1).await;
    assert!(matches!(
        s.apply_transaction(rich, &tx(Payment, 2, "x")).await,
        Err(StoreError::OutOfRange { .. })
    ));
    assert_eq!(
        s.get_client(rich).await.unwrap().unwrap().balance_minor,
        i64::MAX - 1
    );
    assert!(s
        .list_transactions(rich, PageRequest::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        apply(&s, rich, Payment, 1, "x").await.client.balance_minor,
        i64::MAX
    );
}

pub async fn balance_transactions_replay_by_key(s: S) {
    use TransactionKind::*;
    let c = client(&s, 0).await;
    let first = apply(&s, c, Payment, 500, "inv-1").await;
    let again = apply(&s, c, Payment, 500, "inv-1").await;
    assert!(again.replayed);
    assert_eq!(again.transaction, first.transaction);
    assert_eq!(again.client.balance_minor, 500);
    // A different request under the same key is not applied; the stored one comes back
    // for the caller to tell the difference.
    let clash = apply(&s, c, Charge, 500, "inv-1").await;
    assert!(clash.replayed);
    assert_eq!(clash.transaction, first.transaction);
    assert!(!clash.transaction.is_replay_of(&tx(Charge, 500, "inv-1")));
    assert_eq!(s.get_client(c).await.unwrap().unwrap().balance_minor, 500);
    // Keys are per client.
    let other = client(&s, 0).await;
    assert!(!apply(&s, other, Payment, 1, "inv-1").await.replayed);
    assert_eq!(
        s.list_transactions(c, PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

pub async fn balance_crossings_are_announced(s: S) {
    use TransactionKind::*;
    let c = client(&s, -100).await;
    apply(&s, c, Payment, 40, "a").await; // -100 → -60: still negative
    assert!(crossings(&s, c).await.is_empty());
    apply(&s, c, Payment, 60, "b").await; // -60 → 0: crosses into nonnegative
    apply(&s, c, Credit, 5, "c").await; // 0 → 5: was nonnegative already
    apply(&s, c, Charge, 5, "d").await; // 5 → 0: crosses into nonpositive
    apply(&s, c, Charge, 5, "e").await; // 0 → -5: was nonpositive already
    apply(&s, c, Payment, 10, "f").await; // -5 → 5: nonnegative
    apply(&s, c, Refund, 20, "g").await; // 5 → -15: nonpositive
    apply(&s, c, Refund, 20, "g").await; // replay: nothing
    assert_eq!(
        crossings(&s, c).await,
        [
            ("client.balance_nonnegative".to_string(), -60, 0),
            ("client.balance_nonpositive".to_string(), 5, 0),
            ("client.balance_nonnegative".to_string(), -5, 5),
            ("client.balance_nonpositive".to_string(), 5, -15),
        ]
    );
    let f = EventFilter {
        types: vec![EventPattern::parse("client.balance_nonpositive").unwrap()],
        ..Default::default()
    };
    let last = s
        .list_events(&f, PageRequest::default())
        .await
        .unwrap()
        .items
        .pop()
        .unwrap();
    assert_eq!(last.subject, format!("client:{c}"));
    assert_eq!(last.payload["client"]["id"], c.0);
    assert_eq!(last.payload["client"]["balance_minor"], -15);
    assert_eq!(last.payload["transaction"]["kind"], "refund");
    assert_eq!(last.payload["transaction"]["amount_minor"], 20);
    assert_eq!(last.payload["transaction"]["idempotency_key"], "g");
}

pub async fn concurrent_balance_transactions_add_up(s: S) {
    let c = client(&s, -10).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.apply_transaction(c, &tx(TransactionKind::Payment, 1, &format!("k{i}")))
                .await
                .unwrap()
        }));
    }
    // And the same key sent ten times at once is applied once.
    for _ in 0..10 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.apply_transaction(c, &tx(TransactionKind::Payment, 100, "same"))
                .await
                .unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        if !t.await.unwrap().replayed {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 21);
    assert_eq!(s.get_client(c).await.unwrap().unwrap().balance_minor, 110);
    let all = s
        .list_transactions(c, PageRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 21);
    // Every balance_after is distinct: each saw the one before it.
    let mut afters: Vec<i64> = all.iter().map(|t| t.balance_after).collect();
    afters.sort();
    afters.dedup();
    assert_eq!(afters.len(), 21);
    // Exactly one crossing into nonnegative: -10 → 0 somewhere on the way, or the large
    // payment jumping over zero.
    assert_eq!(crossings(&s, c).await.len(), 1);
}
