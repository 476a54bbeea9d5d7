//! Fresh databases for each test: a SQLite file in a temporary folder, or a new database in
//! the PostgreSQL cluster that `scripts/test` started (`PROVISIO_TEST_PG_URL`).

use std::sync::Arc;

use provisio_store::{PgStore, SqliteStore, Store};
use sqlx::Connection;

pub struct TestDb {
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
    store.migrate().await.unwrap();
    TestDb {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

/// The URL of a new, empty database in the test cluster.
pub async fn fresh_pg_url() -> String {
    let admin = std::env::var("PROVISIO_TEST_PG_URL").expect(
        "PROVISIO_TEST_PG_URL is not set: run scripts/test, which starts a throwaway PostgreSQL",
    );
    let name = format!("t_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

pub async fn postgres() -> TestDb {
    let store = PgStore::connect(&fresh_pg_url().await).await.unwrap();
    store.migrate().await.unwrap();
    TestDb {
        store: Arc::new(store),
        _dir: None,
    }
}
