//! The live-service counts per server the database keeps for placement: equal to counting
//! the services after every kind of change, including many at once from many tasks.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use provisio_core::job::{Attempt, JobState, NewJob};
use provisio_core::module::Action;
use provisio_core::service::{NewService, ServiceStatus};
use provisio_core::settings::Settings;
use provisio_core::{ClientId, ProductId, ServerId};
use provisio_store::{ClaimRequest, JobUpdate, ServiceChange, ServiceFilter, Store};

use crate::suite::{new_client, new_product, new_server, new_service};

type S = Arc<dyn Store>;

/// Asserts that the kept count of every server is the number of its live services.
async fn assert_counts_match(s: &S, servers: &[ServerId], when: &str) -> HashMap<ServerId, i64> {
    let loads = s.server_loads(servers).await.unwrap();
    for id in servers {
        let counted = s
            .count_services(&ServiceFilter {
                server_id: Some(*id),
                live_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(loads.get(id).copied(), Some(counted), "server {id} {when}");
    }
    loads
}

static NO_STANDBY: std::sync::LazyLock<HashMap<ServerId, u32>> =
    std::sync::LazyLock::new(HashMap::new);

fn svc(c: ClientId, p: ProductId, srv: ServerId, name: &str, status: ServiceStatus) -> NewService {
    let mut n = new_service(c, p, srv, name);
    n.status = status;
    n
}

fn finished(j: &provisio_core::job::Job, change: ServiceChange) -> JobUpdate {
    JobUpdate {
        job_id: j.id,
        service_id: j.service_id,
        owner: "w".into(),
        state: JobState::Done,
        attempts: 1,
        run_after: j.run_after,
        needs_lookup: false,
        last_error: None,
        error_kind: None,
        attempt: Attempt {
            job_id: j.id,
            attempt: 1,
            started_at: Utc::now(),
            duration_ms: 1,
            outcome: "ok".into(),
            message: None,
        },
        service: Some(change),
        events: Vec::new(),
        handed_to: None,
    }
}

pub async fn server_loads_match_counts_after_every_change(s: S) {
    let c = s
        .insert_client(&new_client("Loads", "l@l.test"), &[])
        .await
        .unwrap()
        .id;
    let p = s.insert_product(&new_product("p", None)).await.unwrap().id;
    let mut servers = Vec::new();
    for i in 0..3 {
        let mut ns = new_server(&format!("load-{i}"));
        ns.max_concurrent = 100;
        servers.push(s.insert_server(&ns).await.unwrap().id);
    }
    let (a, b, z) = (servers[0], servers[1], servers[2]);
    let loads = assert_counts_match(&s, &servers, "when new").await;
    assert_eq!(loads[&a], 0);
    assert!(s.server_loads(&[]).await.unwrap().is_empty());
    assert!(!s
        .server_loads(&[ServerId(999_999)])
        .await
        .unwrap()
        .contains_key(&ServerId(999_999)));

    // Single inserts, one of them already terminated (an import of an old account).
    let mut ids = Vec::new();
    for i in 0..6 {
        let st = if i == 5 {
            ServiceStatus::Terminated
        } else {
            ServiceStatus::Active
        };
        let srv = servers[i % 2];
        ids.push(
            s.insert_service(&svc(c, p, srv, &format!("s{i}"), st))
                .await
                .unwrap(),
        );
    }
    let loads = assert_counts_match(&s, &servers, "after single inserts").await;
    assert_eq!((loads[&a], loads[&b], loads[&z]), (3, 2, 0));

    // A batch across all three servers.
    let batch: Vec<_> = (0..30)
        .map(|i| {
            (
                svc(
                    c,
                    p,
                    servers[i % 3],
                    &format!("b{i}"),
                    ServiceStatus::Pending,
                ),
                None,
            )
        })
        .collect();
    s.insert_services_with_jobs(&batch).await.unwrap();
    assert_counts_match(&s, &servers, "after a batch").await;

    // Terminated, moved to another server, un-terminated, and changed without moving.
    let mut t = ids[0].clone();
    t.status = ServiceStatus::Terminated;
    s.update_service(&t).await.unwrap();
    let mut m = ids[1].clone();
    m.server_id = z;
    s.update_service(&m).await.unwrap();
    let mut back = ids[5].clone();
    back.status = ServiceStatus::Active;
    s.update_service(&back).await.unwrap();
    let mut same = ids[2].clone();
    same.status = ServiceStatus::Suspended;
    s.update_service(&same).await.unwrap();
    assert_counts_match(&s, &servers, "after updates").await;

    // Deleted: one terminated (no change), one live.
    assert!(s.delete_service(t.id).await.unwrap());
    assert!(s.delete_service(ids[3].id).await.unwrap());
    assert_counts_match(&s, &servers, "after deletes").await;

    // Outcomes written by the worker: terminations and a move, in one batch.
    let victims = [ids[4].id, m.id, back.id];
    let mut jobs = Vec::new();
    for id in victims {
        let srv = s.get_service(id).await.unwrap().unwrap().server_id;
        let nj = NewJob {
            server_id: srv,
            action: Action::Terminate,
            params: Settings::new(),
            idempotency_key: format!("t-{id}"),
            max_attempts: 1,
            run_after: Utc::now() - Duration::seconds(1),
            trace_id: provisio_core::trace::TraceId::random(),
        };
        jobs.push(s.enqueue_job(id, &nj, &[]).await.unwrap());
    }
    let none = HashMap::new();
    // A claim hands its whole budget to the first server with work: claim until all are.
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let got = s
            .claim_jobs(&ClaimRequest {
                owner: "w",
                now: Utc::now(),
                lease_until: Utc::now() + Duration::seconds(30),
                max_total: 3,
                allowance: &none,
                finishing: &[],
                standby: &NO_STANDBY,
                started: &[],
            })
            .await
            .unwrap();
        claimed.extend(got);
    }
    assert_eq!(claimed.len(), 3);
    let updates: Vec<_> = claimed
        .iter()
        .map(|j| {
            if j.service_id == m.id {
                finished(
                    j,
                    ServiceChange {
                        server_id: Some(a),
                        ..Default::default()
                    },
                )
            } else {
                finished(
                    j,
                    ServiceChange {
                        status: Some(ServiceStatus::Terminated),
                        ..Default::default()
                    },
                )
            }
        })
        .collect();
    assert_eq!(s.finish_jobs(&updates).await.unwrap(), vec![true; 3]);
    assert_counts_match(&s, &servers, "after outcomes").await;

    // Many tasks at once: single inserts on every server, and batches spanning the
    // servers in opposite orders (which must neither lose a count nor deadlock).
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..12usize {
        let (s, servers) = (s.clone(), servers.clone());
        tasks.spawn(async move {
            for i in 0..10usize {
                if t % 3 == 0 {
                    let mut batch: Vec<_> = (0..6)
                        .map(|k| {
                            let n = format!("c{t}x{i}x{k}");
                            (svc(c, p, servers[k % 3], &n, ServiceStatus::Pending), None)
                        })
                        .collect();
                    if t % 2 == 1 {
                        batch.reverse();
                    }
                    s.insert_services_with_jobs(&batch).await.unwrap();
                } else {
                    let n = format!("c{t}x{i}");
                    s.insert_service(&svc(c, p, servers[(t + i) % 3], &n, ServiceStatus::Active))
                        .await
                        .unwrap();
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let loads = assert_counts_match(&s, &servers, "after concurrent inserts").await;
    let total: i64 = loads.values().sum();
    let live = s
        .count_services(&ServiceFilter {
            live_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total, live);
}

/// On PostgreSQL, two transactions ordering on the same server do not wait for each
/// other's commit: each connection adds to its own shard of the count (migration 0022).
/// With one row per server the second insert waited on the first's row lock until that
/// commit, so orders for one server were written one at a time.
#[tokio::test]
async fn orders_on_one_server_do_not_wait_for_each_other_on_postgres() {
    use sqlx::{Connection, PgConnection};
    let url = crate::harness::fresh_pg_url().await;
    let store = provisio_store::PgStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let s: S = Arc::new(store);
    let c = s
        .insert_client(&new_client("Shards", "sh@l.test"), &[])
        .await
        .unwrap()
        .id;
    let p = s.insert_product(&new_product("p", None)).await.unwrap().id;
    let srv = s.insert_server(&new_server("one")).await.unwrap().id;
    // Two connections whose backends add to different shards (process id modulo 16).
    let mut conns: Vec<(PgConnection, i32)> = Vec::new();
    while conns.len() < 2 {
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if conns.iter().all(|(_, other)| other % 16 != pid % 16) {
            conns.push((conn, pid));
        }
    }
    let (mut first, _) = conns.remove(0);
    let (mut second, _) = conns.remove(0);
    let insert = |name: &'static str| {
        sqlx::query(
            "INSERT INTO services (client_id, product_id, server_id, username, password, status, \
             settings, outputs, created_at, updated_at) VALUES ($1, $2, $3, $4, 'sealed', 'active', '{}', '{}', 0, 0)",
        )
        .bind(c.0)
        .bind(p.0)
        .bind(srv.0)
        .bind(name)
    };
    sqlx::query("BEGIN").execute(&mut first).await.unwrap();
    insert("first").execute(&mut first).await.unwrap();
    // Left open: the second insert must not wait for it (it would fail after the timeout).
    sqlx::query("BEGIN").execute(&mut second).await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '3s'")
        .execute(&mut second)
        .await
        .unwrap();
    insert("second")
        .execute(&mut second)
        .await
        .expect("an order on the same server waited for another transaction's commit");
    sqlx::query("COMMIT").execute(&mut second).await.unwrap();
    assert_counts_match(&s, &[srv], "with one order committed and one open").await;
    sqlx::query("COMMIT").execute(&mut first).await.unwrap();
    let loads = assert_counts_match(&s, &[srv], "after both commits").await;
    assert_eq!(loads[&srv], 2);
    // A change rolled back leaves the count as it was.
    sqlx::query("BEGIN").execute(&mut first).await.unwrap();
    sqlx::query("UPDATE services SET status = 'terminated' WHERE username = 'first'")
        .execute(&mut first)
        .await
        .unwrap();
    sqlx::query("ROLLBACK").execute(&mut first).await.unwrap();
    let loads = assert_counts_match(&s, &[srv], "after a rolled-back change").await;
    assert_eq!(loads[&srv], 2);
}
