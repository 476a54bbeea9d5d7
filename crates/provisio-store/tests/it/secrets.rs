//! The secret keys' check values and the compare-and-set rewrites of sealed cells.

use std::sync::Arc;

use provisio_store::{SealedCell, SealedColumn, SecretKeyState, Store};
use serde_json::json;

use crate::suite::{new_service, world};

type S = Arc<dyn Store>;

pub async fn secret_keys_record_once_and_rotate(s: S) {
    assert!(s.secret_keys().await.unwrap().is_empty());
    let keys = s.record_first_secret_key("aaaa", "check-a").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].kid.as_str(), keys[0].state),
        ("aaaa", SecretKeyState::Current)
    );
    // A second node with another key does not replace the first.
    let keys = s.record_first_secret_key("bbbb", "check-b").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].check_value, "check-a");

    s.begin_secret_key_rotation("bbbb", "check-b")
        .await
        .unwrap();
    // Resuming changes nothing.
    s.begin_secret_key_rotation("bbbb", "check-b")
        .await
        .unwrap();
    let keys = s.secret_keys().await.unwrap();
    let states: Vec<_> = keys.iter().map(|k| (k.kid.as_str(), k.state)).collect();
    assert_eq!(
        states,
        [
            ("bbbb", SecretKeyState::Current),
            ("aaaa", SecretKeyState::Retiring)
        ]
    );
    assert_eq!(s.retire_secret_keys().await.unwrap(), 1);
    assert_eq!(s.retire_secret_keys().await.unwrap(), 0);
    let keys = s.secret_keys().await.unwrap();
    assert_eq!(keys[1].state, SecretKeyState::Retired);
}

pub async fn sealed_cells_are_found_and_rewritten_only_while_unchanged(s: S) {
    let w = world(&s).await;
    let mut a = new_service(w.client, w.product, w.server, "alice");
    a.password = provisio_core::secret::Sealed(vec![2, 9, 9, 9, 9, 9, 9, 9, 9, 1, 1]);
    a.settings = json!({"plain": 1, "tok": {"$sealed": "QUJD"}})
        .as_object()
        .unwrap()
        .clone();
    let a = s.insert_service(&a).await.unwrap();
    let mut b = new_service(w.client, w.product, w.server, "bob");
    b.password = provisio_core::secret::Sealed(vec![2, 7, 7, 7, 7, 7, 7, 7, 7, 1, 1]);
    let b = s.insert_service(&b).await.unwrap();

    // Passwords already under key 7777… are skipped by the query itself.
    let skip = [2, 7, 7, 7, 7, 7, 7, 7, 7];
    let cells = s
        .sealed_cells(SealedColumn::ServicePassword, &skip, 0, 100)
        .await
        .unwrap();
    assert_eq!(cells.len(), 1);
    assert_eq!(cells[0].0, a.id.0);
    // Settings without a marker are not returned.
    let cells = s
        .sealed_cells(SealedColumn::ServiceSettings, &skip, 0, 100)
        .await
        .unwrap();
    assert_eq!(cells.len(), 1, "{cells:?}");
    let (id, old) = cells[0].clone();
    assert_eq!(id, a.id.0);
    let new = SealedCell::Json(json!({"plain": 1, "tok": {"$sealed": "REVG"}}).to_string());
    let once = [(id, old.clone(), new.clone())];
    assert_eq!(
        s.replace_sealed(SealedColumn::ServiceSettings, &once)
            .await
            .unwrap(),
        1
    );
    // The old text no longer matches: a second rewrite from it is refused.
    assert_eq!(
        s.replace_sealed(SealedColumn::ServiceSettings, &once)
            .await
            .unwrap(),
        0
    );
    let got = s.get_service(a.id).await.unwrap().unwrap();
    assert_eq!(got.settings["tok"], json!({"$sealed": "REVG"}));
    assert_eq!(got.updated_at, a.updated_at, "resealing is not a change");

    let old = SealedCell::Bytes(a.password.0.clone());
    let new = SealedCell::Bytes(vec![2, 7, 7, 7, 7, 7, 7, 7, 7, 3, 3]);
    // In one call: a's cell still holds `old`, b's does not.
    let both = [(a.id.0, old.clone(), new.clone()), (b.id.0, old, new)];
    assert_eq!(
        s.replace_sealed(SealedColumn::ServicePassword, &both)
            .await
            .unwrap(),
        1
    );
    assert!(s
        .sealed_cells(SealedColumn::ServicePassword, &skip, 0, 100)
        .await
        .unwrap()
        .is_empty());
    // Paging by id.
    let all = s
        .sealed_cells(SealedColumn::ServicePassword, &[0], a.id.0, 100)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|c| c.0).collect::<Vec<_>>(), [b.id.0]);
    // An empty prefix skips nothing.
    let all = s
        .sealed_cells(SealedColumn::ServicePassword, &[], 0, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    // Every column's query runs on this database.
    for column in SealedColumn::ALL {
        s.sealed_cells(column, &skip, 0, 10).await.unwrap();
    }
}
