//! Usage, top-ups, sync runs and audits in the store, on both databases: readings land as
//! recurring use against the limit, top-ups are drawn only beyond it and survive the
//! period, exceeding is announced once per period, and every change is announced in its
//! own transaction.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use provisio_core::audit::{AuditState, DriftKind, Finding, FixMode};
use provisio_core::event::EventPattern;
use provisio_core::page::PageRequest;
use provisio_core::service::ServiceStatus;
use provisio_core::usage::{NewReading, NewTopup, OnExceed, UsagePolicy};
use provisio_core::ServiceId;
use provisio_store::{AuditFinish, EventFilter, NewAudit, Store};

use crate::suite::{new_service, world};

type S = Arc<dyn Store>;

fn reading(id: ServiceId, used: f64, limit: Option<f64>, month: u32) -> NewReading {
    NewReading {
        service_id: id,
        metric: "data".into(),
        used,
        limit,
        unit: Some("bytes".into()),
        period_start: Utc.with_ymd_and_hms(2026, month, 1, 0, 0, 0).unwrap(),
    }
}

async fn count(s: &S, kind: &str, id: ServiceId) -> usize {
    let f = EventFilter {
        types: vec![EventPattern::parse(kind).unwrap()],
        subject: Some(format!("service:{id}")),
        ..Default::default()
    };
    s.list_events(&f, PageRequest::first(1000))
        .await
        .unwrap()
        .items
        .len()
}

pub async fn usage_readings_topups_and_exceeding(s: S) {
    let w = world(&s).await;
    let svc = s
        .insert_service(&new_service(w.client, w.product, w.server, "joe"))
        .await
        .unwrap();
    let id = svc.id;

    // Recurring use below the limit: nothing drawn from top-ups.
    let (t, replay) = s
        .add_topup(
            id,
            &NewTopup {
                metric: "data".into(),
                amount: 50.0,
                note: Some("extra".into()),
                idempotency_key: Some("k1".into()),
            },
        )
        .await
        .unwrap();
    assert!(!replay);
    let (again, replay) = s
        .add_topup(
            id,
            &NewTopup {
                metric: "data".into(),
                amount: 999.0,
                note: None,
                idempotency_key: Some("k1".into()),
            },
        )
        .await
        .unwrap();
    assert!(replay);
    assert_eq!(again.id, t.id);
    assert_eq!(again.amount, 50.0);

    let a = s
        .apply_usage(&[reading(id, 80.0, Some(100.0), 1)])
        .await
        .unwrap();
    assert!(a[0].changed && !a[0].exceeded_now);
    assert_eq!(s.list_topups(id).await.unwrap()[0].consumed, 0.0);

    // Beyond the limit: the top-up is drawn.
    let a = s
        .apply_usage(&[reading(id, 130.0, Some(100.0), 1)])
        .await
        .unwrap();
    assert!(!a[0].exceeded_now);
    assert_eq!(s.list_topups(id).await.unwrap()[0].consumed, 30.0);
    // The same reading again changes nothing and stores no reading.
    let a = s
        .apply_usage(&[reading(id, 130.0, Some(100.0), 1)])
        .await
        .unwrap();
    assert!(!a[0].changed);

    // Past limit + top-ups: exceeded, announced once.
    let a = s
        .apply_usage(&[reading(id, 160.0, Some(100.0), 1)])
        .await
        .unwrap();
    assert!(a[0].exceeded_now);
    assert_eq!(s.list_topups(id).await.unwrap()[0].consumed, 50.0);
    let a = s
        .apply_usage(&[reading(id, 170.0, Some(100.0), 1)])
        .await
        .unwrap();
    assert!(!a[0].exceeded_now);
    assert_eq!(count(&s, "service.usage_exceeded", id).await, 1);

    // A new period: recurring use starts again, the consumed top-up stays consumed.
    let a = s
        .apply_usage(&[reading(id, 10.0, Some(100.0), 2)])
        .await
        .unwrap();
    assert!(a[0].changed && !a[0].exceeded_now);
    let cur = s.service_usage(id).await.unwrap();
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].used, 10.0);
    assert_eq!(cur[0].topup_used, 0.0);
    assert_eq!(s.list_topups(id).await.unwrap()[0].consumed, 50.0);
    let a = s
        .apply_usage(&[reading(id, 101.0, Some(100.0), 2)])
        .await
        .unwrap();
    assert!(a[0].exceeded_now, "once per period: again in the next");
    assert_eq!(count(&s, "service.usage_exceeded", id).await, 2);

    // History: one reading per change (80, 130, 160, 170, 10, 101).
    let h = s
        .usage_readings(id, Some("data"), PageRequest::first(100))
        .await
        .unwrap();
    let used: Vec<f64> = h.items.iter().map(|r| r.used).collect();
    assert_eq!(used, vec![80.0, 130.0, 160.0, 170.0, 10.0, 101.0]);
    assert_eq!(count(&s, "service.usage_updated", id).await, 6);
    assert_eq!(
        s.purge_usage_readings(Utc::now() + chrono::Duration::seconds(1))
            .await
            .unwrap(),
        6
    );

    // Policies.
    let p = UsagePolicy {
        limits: [("data".to_string(), "data_cap".to_string())].into(),
        metrics: vec![],
        on_exceed: Some(OnExceed::Suspend),
    };
    s.set_usage_policy(w.product, &p).await.unwrap();
    s.set_usage_policy(w.product, &p).await.unwrap();
    let all = s.usage_policies().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].policy, p);
    assert!(s.delete_usage_policy(w.product).await.unwrap());
    assert!(s.usage_policies().await.unwrap().is_empty());
}

pub async fn many_readings_in_one_batch(s: S) {
    let w = world(&s).await;
    let mut ids = Vec::new();
    for i in 0..1200 {
        let svc = s
            .insert_service(&new_service(
                w.client,
                w.product,
                w.server,
                &format!("u{i}"),
            ))
            .await
            .unwrap();
        ids.push(svc.id);
    }
    let mut batch: Vec<NewReading> = ids
        .iter()
        .map(|id| reading(*id, 5.0, Some(10.0), 3))
        .collect();
    // The same service twice in one batch: the later reading wins.
    batch.push(reading(ids[0], 20.0, Some(10.0), 3));
    let out = s.apply_usage(&batch).await.unwrap();
    assert_eq!(out.len(), 1201);
    assert!(out[1200].exceeded_now);
    assert_eq!(s.service_usage(ids[0]).await.unwrap()[0].used, 20.0);
    assert_eq!(s.service_usage(ids[1199]).await.unwrap()[0].used, 5.0);
    let accounts = s.server_accounts(w.server).await.unwrap();
    assert_eq!(accounts.len(), 1200);
}

pub async fn sync_runs_and_audits(s: S) {
    let w = world(&s).await;
    let run = s
        .insert_sync_run(Some("usage:slot-1"), &serde_json::json!({"servers": []}))
        .await
        .unwrap()
        .unwrap();
    assert!(s
        .insert_sync_run(Some("usage:slot-1"), &serde_json::json!({}))
        .await
        .unwrap()
        .is_none());
    s.update_sync_run(run.id, "done", &serde_json::json!({"servers": [1]}), true)
        .await
        .unwrap();
    let got = s.get_sync_run(run.id).await.unwrap().unwrap();
    assert_eq!(got.state, "done");
    assert!(got.finished_at.is_some());
    assert_eq!(
        s.list_sync_runs(PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let a = s
        .insert_audit(&NewAudit {
            server_id: w.server,
            slot: None,
            fix: Some(FixMode::Local),
            dry_run: true,
            force: false,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.state, AuditState::Running);
    let finding = Finding {
        kind: DriftKind::OrphanRemote,
        username: "ghost".into(),
        service_id: None,
        local_status: None,
        remote_status: Some("active".into()),
        local_package: None,
        remote_package: Some("gold".into()),
        fix: Some("import".into()),
    };
    let done = s
        .finish_audit(
            a.id,
            &AuditFinish {
                state: AuditState::Done,
                remote_accounts: 1,
                local_services: 0,
                counts: [("orphan_remote".to_string(), 1)].into(),
                note: None,
                findings: vec![finding.clone()],
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(done.state, AuditState::Done);
    assert_eq!(done.fix, Some(FixMode::Local));
    assert!(done.dry_run);
    assert_eq!(
        s.audit_findings(a.id).await.unwrap().unwrap(),
        vec![finding]
    );
    assert_eq!(
        s.list_audits(Some(w.server), PageRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Corrections only apply to the status the audit saw, and are announced.
    let mut ns = new_service(w.client, w.product, w.server, "joe");
    ns.status = ServiceStatus::Active;
    let svc = s.insert_service(&ns).await.unwrap();
    assert!(s
        .audit_correct(
            svc.id,
            ServiceStatus::Suspended,
            Some(ServiceStatus::Failed),
            None,
            a.id
        )
        .await
        .unwrap()
        .is_none());
    let c = s
        .audit_correct(
            svc.id,
            ServiceStatus::Active,
            Some(ServiceStatus::Suspended),
            None,
            a.id,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status, ServiceStatus::Suspended);
    assert_eq!(c.suspension.unwrap().reason.as_str(), "audit");
    assert_eq!(count(&s, "service.status_corrected", svc.id).await, 1);

    let mut imported = new_service(w.client, w.product, w.server, "ghost");
    imported.status = ServiceStatus::Active;
    let i = s.audit_import(&imported, a.id).await.unwrap();
    assert_eq!(i.status, ServiceStatus::Active);
    assert_eq!(count(&s, "service.imported", i.id).await, 1);
}

pub async fn old_sync_runs_and_audits_are_trimmed(s: S) {
    let w = world(&s).await;
    let sync = |slot: &'static str| {
        let s = s.clone();
        async move {
            s.insert_sync_run(Some(slot), &serde_json::json!({}))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let audit = || {
        let s = s.clone();
        async move {
            s.insert_audit(&NewAudit {
                server_id: w.server,
                slot: None,
                fix: None,
                dry_run: true,
                force: false,
            })
            .await
            .unwrap()
            .unwrap()
        }
    };
    let finish = |id: i64| {
        let s = s.clone();
        async move {
            s.finish_audit(
                id,
                &AuditFinish {
                    state: AuditState::Done,
                    remote_accounts: 0,
                    local_services: 0,
                    counts: Default::default(),
                    note: None,
                    findings: Vec::new(),
                },
                &[],
            )
            .await
            .unwrap();
        }
    };
    // Old: two finished and one still running of each.
    let (s1, s2, s3) = (sync("a").await, sync("b").await, sync("c").await);
    for r in [&s1, &s2] {
        s.update_sync_run(r.id, "done", &serde_json::json!({}), true)
            .await
            .unwrap();
    }
    let (a1, a2, a3) = (audit().await, audit().await, audit().await);
    finish(a1.id).await;
    finish(a2.id).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mid = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // New: one finished of each.
    let s4 = sync("d").await;
    s.update_sync_run(s4.id, "done", &serde_json::json!({}), true)
        .await
        .unwrap();
    let a4 = audit().await;
    finish(a4.id).await;

    assert_eq!(s.trim_sync_runs(mid, 1).await.unwrap(), 1);
    assert_eq!(s.trim_sync_runs(mid, 5).await.unwrap(), 1);
    assert_eq!(s.trim_sync_runs(mid, 5).await.unwrap(), 0);
    assert!(s.get_sync_run(s1.id).await.unwrap().is_none());
    assert!(s.get_sync_run(s2.id).await.unwrap().is_none());
    assert!(s.get_sync_run(s3.id).await.unwrap().is_some(), "running");
    assert!(s.get_sync_run(s4.id).await.unwrap().is_some(), "new");

    assert_eq!(s.trim_audits(mid, 1).await.unwrap(), 1);
    assert_eq!(s.trim_audits(mid, 5).await.unwrap(), 1);
    assert_eq!(s.trim_audits(mid, 5).await.unwrap(), 0);
    assert!(s.get_audit(a1.id).await.unwrap().is_none());
    assert!(s.audit_findings(a2.id).await.unwrap().is_none());
    assert!(s.get_audit(a3.id).await.unwrap().is_some(), "running");
    assert!(s.get_audit(a4.id).await.unwrap().is_some(), "new");
}
