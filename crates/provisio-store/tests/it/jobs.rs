//! The job queue's storage rules, on both databases.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use provisio_core::job::{Attempt, JobId, JobState, NewJob};
use provisio_core::module::{Action, ErrorKind};
use provisio_core::page::PageRequest;
use provisio_core::secret::Sealed;
use provisio_core::service::{NewService, ServiceStatus, SuspendReason, Suspension};
use provisio_core::settings::Settings;
use provisio_core::text::Username;
use provisio_core::{ServerId, ServiceId};
use provisio_store::{ClaimRequest, JobFilter, JobUpdate, ServiceChange, Store};

use crate::suite::{new_client, new_product, new_server};

type S = Arc<dyn Store>;

static NO_STANDBY: std::sync::LazyLock<HashMap<ServerId, u32>> =
    std::sync::LazyLock::new(HashMap::new);

fn job(server: ServerId, action: Action) -> NewJob {
    NewJob {
        server_id: server,
        action,
        params: Settings::new(),
        idempotency_key: format!("k-{}", rand::random::<u64>()),
        max_attempts: 3,
        run_after: Utc::now() - Duration::seconds(1),
        trace_id: provisio_core::trace::TraceId::random(),
    }
}

async fn setup(s: &S, max_concurrent: u32) -> (ServerId, Vec<ServiceId>) {
    let c = s
        .insert_client(&new_client("A", "a@a.test"), &[])
        .await
        .unwrap();
    let mut ns = new_server("srv");
    ns.max_concurrent = max_concurrent;
    let srv = s.insert_server(&ns).await.unwrap();
    let p = s.insert_product(&new_product("p", None)).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let (svc, j) = s
            .insert_service_with_job(
                &NewService {
                    order_key: None,
                    external_id: None,
                    client_id: c.id,
                    product_id: p.id,
                    server_id: srv.id,
                    username: Username::parse(&format!("u{i}")).unwrap(),
                    password: Sealed(vec![1]),
                    status: ServiceStatus::Pending,
                    invoice: None,
                    parent_invoice: None,
                    settings: Settings::new(),
                },
                Some(&job(srv.id, Action::Create)),
            )
            .await
            .unwrap();
        assert_eq!(j.unwrap().service_id, svc.id);
        ids.push(svc.id);
    }
    (srv.id, ids)
}

fn claim<'a>(
    owner: &'a str,
    max_total: u32,
    allowance: &'a HashMap<ServerId, u32>,
) -> ClaimRequest<'a> {
    ClaimRequest {
        owner,
        now: Utc::now(),
        lease_until: Utc::now() + Duration::seconds(30),
        max_total,
        allowance,
        finishing: &[],
        standby: &NO_STANDBY,
        started: &[],
    }
}

fn done(j: &provisio_core::job::Job, owner: &str, service: Option<ServiceChange>) -> JobUpdate {
    JobUpdate {
        job_id: j.id,
        service_id: j.service_id,
        owner: owner.into(),
        state: JobState::Done,
        attempts: j.attempts + 1,
        run_after: j.run_after,
        needs_lookup: false,
        last_error: None,
        error_kind: None,
        attempt: Attempt {
            job_id: j.id,
            attempt: j.attempts + 1,
            started_at: Utc::now(),
            duration_ms: 3,
            outcome: "ok".into(),
            message: None,
        },
        service,
        events: Vec::new(),
        handed_to: None,
    }
}

pub async fn jobs_keep_their_trace_id(s: S) {
    let (srv, svcs) = setup(&s, 4).await;
    let one = job(srv, Action::Suspend);
    let stored = s.enqueue_job(svcs[0], &one, &[]).await.unwrap();
    assert_eq!(stored.trace_id, Some(one.trace_id));
    let many = [job(srv, Action::Suspend), job(srv, Action::Suspend)];
    let batch: Vec<_> = svcs[1..3]
        .iter()
        .zip(&many)
        .map(|(svc, j)| (*svc, j.clone(), Vec::new()))
        .collect();
    let queued = s.enqueue_jobs(&batch).await.unwrap();
    for (q, j) in queued.iter().zip(&many) {
        assert_eq!(q.trace_id, Some(j.trace_id));
    }
    // Read back, claimed and finished, a job still has the id it was queued with.
    let read = s.get_job(stored.id).await.unwrap().unwrap();
    assert_eq!(read.trace_id, Some(one.trace_id));
    let none = HashMap::new();
    let claimed = s.claim_jobs(&claim("w1", 100, &none)).await.unwrap();
    assert!(!claimed.is_empty());
    assert!(claimed.iter().all(|j| j.trace_id.is_some()));
}

pub async fn claims_respect_order_and_capacity(s: S) {
    let (srv, svcs) = setup(&s, 2).await;
    // A second job for the first service must wait for its create.
    let suspend = s
        .enqueue_job(svcs[0], &job(srv, Action::Suspend), &[])
        .await
        .unwrap();
    let none = HashMap::new();
    let first = s.claim_jobs(&claim("w1", 100, &none)).await.unwrap();
    assert_eq!(first.len(), 2, "max_concurrent caps the claim");
    assert!(first
        .iter()
        .all(|j| j.action == Action::Create && j.state == JobState::Running));
    let more = s.claim_jobs(&claim("w2", 100, &none)).await.unwrap();
    assert!(
        more.is_empty(),
        "two are running: the server is full for every worker"
    );

    let applied = s
        .finish_jobs(&[done(
            &first[0],
            "w1",
            Some(ServiceChange {
                status: Some(ServiceStatus::Active),
                outputs: Some(
                    serde_json::json!({"pass_key": "PK"})
                        .as_object()
                        .unwrap()
                        .clone(),
                ),
                ..Default::default()
            }),
        )])
        .await
        .unwrap();
    assert_eq!(applied, vec![true]);
    let svc = s.get_service(first[0].service_id).await.unwrap().unwrap();
    assert_eq!(svc.status, ServiceStatus::Active);
    assert_eq!(svc.outputs["pass_key"], "PK");
    // A stale owner cannot finish a job it no longer holds.
    assert_eq!(
        s.finish_jobs(&[done(&first[1], "someone-else", None)])
            .await
            .unwrap(),
        vec![false]
    );

    let next = s.claim_jobs(&claim("w1", 100, &none)).await.unwrap();
    assert_eq!(next.len(), 1);
    // The suspend of service 0 is now claimable only if its create is done, which it is
    // when first[0] was service 0; otherwise the next create comes first.
    let ids: Vec<_> = next
        .iter()
        .map(|j| (j.service_id, j.action.clone()))
        .collect();
    assert!(
        ids.iter()
            .all(|(sid, a)| *a == Action::Create || *sid == svcs[0]),
        "{ids:?}"
    );
    let _ = suspend;
    let attempts = s.job_attempts(first[0].id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "ok");
}

pub async fn allowance_and_total_cap_claims(s: S) {
    let (srv, _) = setup(&s, 10).await;
    let mut allow = HashMap::new();
    allow.insert(srv, 1);
    assert_eq!(
        s.claim_jobs(&claim("w", 100, &allow)).await.unwrap().len(),
        1
    );
    let none = HashMap::new();
    assert_eq!(s.claim_jobs(&claim("w", 2, &none)).await.unwrap().len(), 2);
}

pub async fn finishing_jobs_free_their_slots(s: S) {
    let (_, _) = setup(&s, 2).await;
    let none = HashMap::new();
    let claim_finishing = |owner: &'static str, f: Vec<provisio_core::job::JobId>| {
        let s = s.clone();
        async move {
            let none = HashMap::new();
            let mut req = claim(owner, 100, &none);
            req.finishing = &f;
            s.claim_jobs(&req).await.unwrap()
        }
    };
    let j1 = s
        .claim_jobs(&claim("w1", 1, &none))
        .await
        .unwrap()
        .remove(0);
    let j2 = s
        .claim_jobs(&claim("w2", 1, &none))
        .await
        .unwrap()
        .remove(0);
    assert!(s
        .claim_jobs(&claim("w1", 100, &none))
        .await
        .unwrap()
        .is_empty());
    // Another worker's job frees nothing for w1.
    assert!(claim_finishing("w1", vec![j2.id]).await.is_empty());
    // w1's own job, past its remote call: its slot is free before the outcome lands.
    let j3 = claim_finishing("w1", vec![j1.id]).await;
    assert_eq!(j3.len(), 1);
    // Three running now, one of them finishing: nothing more.
    assert!(claim_finishing("w1", vec![j1.id]).await.is_empty());
    // Once written, the job frees nothing twice.
    assert_eq!(
        s.finish_jobs(&[done(&j1, "w1", None)]).await.unwrap(),
        vec![true]
    );
    assert!(claim_finishing("w1", vec![j1.id]).await.is_empty());
}

pub async fn standby_jobs_take_no_place_until_handed_one(s: S) {
    let (srv, _) = setup(&s, 2).await;
    let none = HashMap::new();
    let ahead = |owner: &'static str, standby: u32, finishing: Vec<JobId>, started: Vec<JobId>| {
        let s = s.clone();
        async move {
            let none = HashMap::new();
            let ahead = HashMap::from([(srv, standby)]);
            let mut req = claim(owner, 100, &none);
            req.standby = &ahead;
            req.finishing = &finishing;
            req.started = &started;
            s.claim_ahead(&req).await.unwrap()
        }
    };
    // Two places: two to run, two more held ahead, all four leased to w1.
    let first = ahead("w1", 5, vec![], vec![]).await;
    assert_eq!(first.run.len(), 2, "max_concurrent caps what runs");
    assert_eq!(
        first.standby.len(),
        2,
        "standby is capped by the fair share (2), not by 5"
    );
    for j in first.run.iter().chain(&first.standby) {
        let stored = s.get_job(j.id).await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Running);
        assert_eq!(stored.lease_owner.as_deref(), Some("w1"));
    }
    assert!(
        first.run[1].id < first.standby[0].id,
        "the oldest run first"
    );
    // Standby jobs take no place, but the server is full and nothing is pending.
    let other = ahead("w2", 5, vec![], vec![]).await;
    assert!(other.run.is_empty() && other.standby.is_empty());

    // The first call ends and hands its place to the first standby job (begun at once).
    let (r0, r1) = (&first.run[0], &first.run[1]);
    let (h0, h1) = (&first.standby[0], &first.standby[1]);
    // Before the handing over is written, a claim that knows h0 began finds no free
    // place (r0's is h0's) and does not promote h0.
    let mid = ahead("w1", 5, vec![], vec![h0.id]).await;
    assert!(mid.run.is_empty() && mid.standby.is_empty(), "{mid:?}");
    let mut handed = done(r0, "w1", None);
    handed.handed_to = Some(h0.id);
    assert_eq!(s.finish_jobs(&[handed]).await.unwrap(), vec![true]);
    // r1 and h0 take the two places; h1 is still held.
    let full = ahead("w1", 5, vec![], vec![]).await;
    assert!(full.run.is_empty() && full.standby.is_empty(), "{full:?}");
    assert!(s
        .claim_jobs(&claim("w2", 100, &none))
        .await
        .unwrap()
        .is_empty());

    // r1 ends with no handing over: its place is free, and the held job is promoted into
    // it before anything newer.
    let extra = s
        .enqueue_job(r1.service_id, &job(srv, Action::Suspend), &[])
        .await
        .unwrap();
    let promoted = ahead("w1", 5, vec![r1.id], vec![]).await;
    assert_eq!(
        promoted.run.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![h1.id],
        "the held job first; r1's service's next job waits for r1's outcome"
    );
    assert!(promoted.standby.is_empty());
    assert_eq!(
        s.finish_jobs(&[done(r1, "w1", None)]).await.unwrap(),
        vec![true]
    );
    // Both places taken (h0, h1): the suspend is held ahead, then handed back unbegun.
    let held = ahead("w1", 5, vec![], vec![]).await;
    assert!(held.run.is_empty());
    assert_eq!(
        held.standby.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![extra.id]
    );
    assert_eq!(
        s.release_standby("w1", &[extra.id, h0.id], Utc::now())
            .await
            .unwrap(),
        1,
        "only a job still on standby goes back (h0 took a place)"
    );
    let back = s.get_job(extra.id).await.unwrap().unwrap();
    assert_eq!(back.state, JobState::Pending);
    assert!(
        back.lease_owner.is_none() && !back.needs_lookup,
        "never begun: no lookup"
    );
}

pub async fn standby_is_not_held_where_a_cap_decides(s: S) {
    let (srv, _) = setup(&s, 2).await;
    let capped = HashMap::from([(srv, 1)]);
    let ahead = HashMap::from([(srv, 5)]);
    let mut req = claim("w1", 100, &capped);
    req.standby = &ahead;
    let c = s.claim_ahead(&req).await.unwrap();
    assert_eq!(c.run.len(), 1, "the allowance caps the claim");
    assert!(
        c.standby.is_empty(),
        "a rate or breaker decides each start: none held ahead"
    );
    // Not asked for: nothing held ahead either.
    let none = HashMap::new();
    let c = s.claim_ahead(&claim("w1", 100, &none)).await.unwrap();
    assert_eq!((c.run.len(), c.standby.len()), (1, 0));
}

pub async fn batched_outcomes_write_every_row(s: S) {
    let (srv, svcs) = setup(&s, 10).await;
    let none = HashMap::new();
    let taken = s.claim_jobs(&claim("w", 4, &none)).await.unwrap();
    assert_eq!(taken.len(), 4);
    let mut updates = Vec::new();
    for (i, j) in taken.iter().enumerate() {
        let mut u = done(
            j,
            if i == 3 { "stale-owner" } else { "w" },
            Some(ServiceChange {
                status: Some(ServiceStatus::Active),
                outputs: Some(serde_json::json!({"n": i}).as_object().unwrap().clone()),
                ..Default::default()
            }),
        );
        if i == 1 {
            u.state = JobState::Pending;
            u.needs_lookup = true;
            u.last_error = Some("transient: busy".into());
            u.error_kind = Some(ErrorKind::Transient);
            u.service = None;
        }
        u.events = vec![
            provisio_core::event::NewEvent::new(
                "service.create.succeeded",
                format!("service:{}", j.service_id.0),
                serde_json::json!({"n": i, "first": true}),
            ),
            provisio_core::event::NewEvent::new(
                "service.create.succeeded",
                format!("service:{}", j.service_id.0),
                serde_json::json!({"n": i, "first": false}),
            ),
        ];
        updates.push(u);
    }
    let applied = s.finish_jobs(&updates).await.unwrap();
    assert_eq!(applied, vec![true, true, true, false]);
    let states: Vec<_> = {
        let mut v = Vec::new();
        for j in &taken {
            v.push(s.get_job(j.id).await.unwrap().unwrap());
        }
        v
    };
    assert_eq!(states[0].state, JobState::Done);
    assert!(states[0].finished_at.is_some() && states[0].lease_owner.is_none());
    assert_eq!(states[1].state, JobState::Pending);
    assert!(states[1].needs_lookup && states[1].finished_at.is_none());
    assert_eq!(states[1].error_kind, Some(ErrorKind::Transient));
    assert_eq!(states[1].last_error.as_deref(), Some("transient: busy"));
    assert_eq!(
        states[3].state,
        JobState::Running,
        "a stale owner changes nothing"
    );
    assert_eq!(s.job_attempts(taken[3].id).await.unwrap().len(), 0);
    assert_eq!(s.job_attempts(taken[2].id).await.unwrap().len(), 1);
    let found = s
        .get_services(&taken.iter().map(|j| j.service_id).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(found.len(), 4);
    for svc in &found {
        let i = taken.iter().position(|j| j.service_id == svc.id).unwrap();
        match i {
            0 | 2 => {
                assert_eq!(svc.status, ServiceStatus::Active);
                assert_eq!(svc.outputs["n"], i);
            }
            _ => assert_eq!(svc.status, ServiceStatus::Pending, "service {i} unchanged"),
        }
    }
    let clients = s
        .get_clients(&[found[0].client_id, provisio_core::ClientId(i64::MAX)])
        .await
        .unwrap();
    assert_eq!(clients.len(), 1);
    let events = s
        .list_events(&Default::default(), PageRequest::default())
        .await
        .unwrap();
    let order: Vec<(u64, bool)> = events
        .items
        .iter()
        .filter(|e| e.kind.as_str() == "service.create.succeeded")
        .map(|e| {
            (
                e.payload["n"].as_u64().unwrap(),
                e.payload["first"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (0, true),
            (0, false),
            (1, true),
            (1, false),
            (2, true),
            (2, false)
        ],
        "events of held jobs only, in order"
    );
    let _ = (srv, svcs);
}

pub async fn many_jobs_queue_in_one_call(s: S) {
    let (srv, svcs) = setup(&s, 10).await;
    // More than one statement's worth, two jobs sharing a key, each with its event.
    let mut rows = Vec::new();
    for i in 0..450usize {
        let mut j = job(srv, Action::Suspend);
        if i == 7 || i == 300 {
            j.idempotency_key = "shared".into();
        }
        j.params.insert("i".into(), serde_json::json!(i));
        let svc = svcs[i % svcs.len()];
        let ev = provisio_core::event::NewEvent::new(
            "service.suspend.before",
            format!("service:{}", svc.0),
            serde_json::json!({ "i": i }),
        );
        rows.push((svc, j, vec![ev]));
    }
    let stored = s.enqueue_jobs(&rows).await.unwrap();
    assert_eq!(stored.len(), 450);
    for (i, (job, (svc, new, _))) in stored.iter().zip(&rows).enumerate() {
        assert_eq!(job.params["i"], i, "results keep the input's order");
        assert_eq!(
            (job.service_id, &job.idempotency_key),
            (*svc, &new.idempotency_key)
        );
        assert_eq!(job.state, JobState::Pending);
    }
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
    let events = s
        .list_events(
            &provisio_store::EventFilter {
                types: vec![
                    provisio_core::event::EventPattern::parse("service.suspend.before").unwrap(),
                ],
                ..Default::default()
            },
            PageRequest::first(PageRequest::MAX_LIMIT),
        )
        .await
        .unwrap();
    let order: Vec<u64> = events
        .items
        .iter()
        .map(|e| e.payload["i"].as_u64().unwrap())
        .collect();
    assert_eq!(order.len(), PageRequest::MAX_LIMIT.min(450) as usize);
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "events in the jobs' order"
    );
}

pub async fn expired_leases_come_back_for_lookup(s: S) {
    let (_, _) = setup(&s, 10).await;
    let none = HashMap::new();
    let mut req = claim("dead", 1, &none);
    req.lease_until = Utc::now() - Duration::seconds(1);
    let taken = s.claim_jobs(&req).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(s.requeue_expired(Utc::now()).await.unwrap(), 1);
    let back = s.get_job(taken[0].id).await.unwrap().unwrap();
    assert_eq!(back.state, JobState::Pending);
    assert!(back.needs_lookup);
    assert!(back.lease_owner.is_none());
    // Renewal keeps a live lease.
    let again = s.claim_jobs(&claim("live", 10, &none)).await.unwrap();
    assert!(!again.is_empty());
    let ids: Vec<_> = again.iter().map(|j| j.id).collect();
    assert_eq!(
        s.renew_leases("live", &ids, Utc::now() + Duration::seconds(60))
            .await
            .unwrap() as usize,
        ids.len()
    );
    assert_eq!(s.renew_leases("other", &ids, Utc::now()).await.unwrap(), 0);
}

pub async fn failed_jobs_retry_or_resolve(s: S) {
    let (_, _) = setup(&s, 10).await;
    let none = HashMap::new();
    let taken = s.claim_jobs(&claim("w", 2, &none)).await.unwrap();
    let mut fail = done(
        &taken[0],
        "w",
        Some(ServiceChange {
            status: Some(ServiceStatus::Failed),
            ..Default::default()
        }),
    );
    fail.state = JobState::Failed;
    fail.last_error = Some("permanent: nope".into());
    fail.error_kind = Some(ErrorKind::Permanent);
    fail.attempt.outcome = "permanent".into();
    let mut fail2 = done(&taken[1], "w", None);
    fail2.state = JobState::Failed;
    s.finish_jobs(&[fail, fail2]).await.unwrap();
    let failed = s
        .list_jobs(
            &JobFilter {
                state: Some(JobState::Failed),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 2);
    assert_eq!(failed.items[0].error_kind, Some(ErrorKind::Permanent));
    assert!(failed.items[0].finished_at.is_some());
    let retried = s
        .retry_job(taken[0].id, Utc::now(), 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retried.state, JobState::Pending);
    assert_eq!(retried.max_attempts, retried.attempts + 3);
    assert!(
        s.retry_job(taken[0].id, Utc::now(), 3)
            .await
            .unwrap()
            .is_none(),
        "only failed jobs"
    );
    let resolved = s
        .resolve_job(taken[1].id, "fixed by hand", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resolved.state, JobState::Resolved);
    assert_eq!(resolved.note.as_deref(), Some("fixed by hand"));
}

pub async fn due_unsuspends_are_found(s: S) {
    let (srv, svcs) = setup(&s, 10).await;
    let mut svc = s.get_service(svcs[0]).await.unwrap().unwrap();
    svc.status = ServiceStatus::Suspended;
    svc.suspension = Some(Suspension {
        reason: SuspendReason::Holiday,
        since: Utc::now() - Duration::days(2),
        until: Some(Utc::now() - Duration::minutes(1)),
    });
    s.update_service(&svc).await.unwrap();
    // Its create job is still open: not due until that is done.
    assert!(s.due_unsuspends(Utc::now(), 10).await.unwrap().is_empty());
    let none = HashMap::new();
    loop {
        let taken = s.claim_jobs(&claim("w", 10, &none)).await.unwrap();
        if taken.is_empty() {
            break;
        }
        let ups: Vec<_> = taken.iter().map(|j| done(j, "w", None)).collect();
        s.finish_jobs(&ups).await.unwrap();
    }
    let due = s.due_unsuspends(Utc::now(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, svcs[0]);
    let _ = srv;
}

pub async fn events_filter_page_and_purge(s: S) {
    use provisio_core::event::{EventPattern, NewEvent};
    use provisio_store::EventFilter;
    let events = vec![
        NewEvent::new("client.created", "client:1", serde_json::json!({"n": 1})),
        NewEvent::new(
            "service.suspend.before",
            "service:5",
            serde_json::json!({"n": 2}),
        ),
        NewEvent::new(
            "service.suspend.succeeded",
            "service:5",
            serde_json::json!({"n": 3}),
        ),
        NewEvent::new(
            "service.change_password.failed",
            "service:6",
            serde_json::json!({"n": 4}),
        ),
        NewEvent::new(
            "service.usage_updated",
            "service:5",
            serde_json::json!({"n": 5}),
        ),
    ];
    s.insert_events(&events).await.unwrap();
    let pats = |p: &[&str]| {
        p.iter()
            .map(|x| EventPattern::parse(x).unwrap())
            .collect::<Vec<_>>()
    };
    let kinds = |f: EventFilter| {
        let s = s.clone();
        async move {
            s.list_events(&f, PageRequest::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|e| e.kind.as_str().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(kinds(EventFilter::default()).await.len(), 5);
    assert_eq!(
        kinds(EventFilter {
            types: pats(&["service.*"]),
            ..Default::default()
        })
        .await,
        [
            "service.suspend.before",
            "service.suspend.succeeded",
            "service.change_password.failed",
            "service.usage_updated"
        ]
    );
    assert_eq!(
        kinds(EventFilter {
            types: pats(&["service.*.failed", "client.created"]),
            ..Default::default()
        })
        .await,
        ["client.created", "service.change_password.failed"]
    );
    // `_` in a type is not a LIKE wildcard once the exact rules apply.
    assert_eq!(
        kinds(EventFilter {
            types: pats(&["service.change_password.*"]),
            ..Default::default()
        })
        .await,
        ["service.change_password.failed"]
    );
    assert_eq!(
        kinds(EventFilter {
            subject: Some("service:5".into()),
            ..Default::default()
        })
        .await
        .len(),
        3
    );
    // Paging with a filter still reaches every match.
    let mut page = PageRequest::first(1);
    let mut seen = Vec::new();
    loop {
        let p = s
            .list_events(
                &EventFilter {
                    types: pats(&["service.suspend.*"]),
                    ..Default::default()
                },
                page,
            )
            .await
            .unwrap();
        seen.extend(
            p.items
                .into_iter()
                .map(|e| e.payload["n"].as_i64().unwrap()),
        );
        match p.next {
            Some(n) => page.after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, [2, 3]);
    let future = Utc::now() + Duration::seconds(5);
    assert_eq!(
        kinds(EventFilter {
            since: Some(future),
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    assert_eq!(
        s.purge_events(Utc::now() - Duration::days(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(s.purge_events(future).await.unwrap(), 5);
    assert!(kinds(EventFilter::default()).await.is_empty());
}

pub async fn old_finished_jobs_are_trimmed_in_batches(s: S) {
    let (srv, svcs) = setup(&s, 10).await;
    let refused = |svc: ServiceId, action: Action| {
        let s = s.clone();
        async move {
            s.insert_refused_job(svc, &job(srv, action), "no")
                .await
                .unwrap()
        }
    };
    // Old: three suspends and an unsuspend (the latest of its action) on the first
    // service, two renews on the second, and two open renews on the third.
    let a1 = refused(svcs[0], Action::Suspend).await;
    let a2 = refused(svcs[0], Action::Suspend).await;
    let a3 = refused(svcs[0], Action::Suspend).await;
    let u1 = refused(svcs[0], Action::Unsuspend).await;
    let r1 = refused(svcs[1], Action::Renew).await;
    let r2 = refused(svcs[1], Action::Renew).await;
    let o1 = s
        .enqueue_job(svcs[2], &job(srv, Action::Renew), &[])
        .await
        .unwrap();
    let o2 = s
        .enqueue_job(svcs[2], &job(srv, Action::Renew), &[])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let mid = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // New: the latest suspend of the first service.
    let a4 = refused(svcs[0], Action::Suspend).await;
    assert_eq!(s.job_attempts(a1.id).await.unwrap().len(), 1);

    assert_eq!(s.trim_jobs(mid, 2).await.unwrap(), 2);
    assert_eq!(s.trim_jobs(mid, 2).await.unwrap(), 2);
    assert_eq!(s.trim_jobs(mid, 2).await.unwrap(), 0);
    for gone in [&a1, &a2, &a3, &r1] {
        assert!(s.get_job(gone.id).await.unwrap().is_none(), "{:?}", gone.id);
        assert!(s.job_attempts(gone.id).await.unwrap().is_empty());
    }
    for kept in [&u1, &r2, &o1, &o2, &a4] {
        assert!(s.get_job(kept.id).await.unwrap().is_some(), "{:?}", kept.id);
    }
    // The open creates of every service stay too, however old.
    let all = s
        .list_jobs(&JobFilter::default(), PageRequest::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 4 + 5);
    // A failed job waits for a person however old it is, even behind a later job.
    let taken = s.claim_jobs(&claim("w", 1, &HashMap::new())).await.unwrap();
    let mut fail = done(&taken[0], "w", None);
    fail.state = JobState::Failed;
    s.finish_jobs(&[fail]).await.unwrap();
    let later = s
        .enqueue_job(taken[0].service_id, &job(srv, taken[0].action.clone()), &[])
        .await
        .unwrap();
    s.insert_refused_job(later.service_id, &job(srv, taken[0].action.clone()), "no")
        .await
        .unwrap();
    assert_eq!(
        s.trim_jobs(Utc::now() + Duration::days(1), 500)
            .await
            .unwrap(),
        0,
        "the failed job stays"
    );
    assert!(s.get_job(taken[0].id).await.unwrap().is_some());
    // With everything old, still only what has a later job of its kind could go: nothing.
    assert_eq!(
        s.trim_jobs(Utc::now() + Duration::days(1), 500)
            .await
            .unwrap(),
        0
    );
}

pub async fn queue_gauges_and_migrations_are_read(s: S) {
    assert!(
        s.pending_migrations().await.unwrap().is_empty(),
        "a store that opened is migrated"
    );
    let empty = s.job_gauges().await.unwrap();
    assert!(empty.by_state.is_empty() && empty.oldest_pending_due.is_none());
    let (srv, svcs) = setup(&s, 10).await;
    let g = s.job_gauges().await.unwrap();
    assert_eq!(g.by_state, vec![("pending".to_string(), 4)]);
    // A job due longer ago is the oldest, whatever its id.
    let mut overdue = job(srv, Action::Suspend);
    overdue.run_after = Utc::now() - Duration::minutes(10);
    s.enqueue_job(svcs[0], &overdue, &[]).await.unwrap();
    let g = s.job_gauges().await.unwrap();
    assert_eq!(g.by_state, vec![("pending".to_string(), 5)]);
    assert_eq!(
        g.oldest_pending_due.unwrap().timestamp_micros(),
        overdue.run_after.timestamp_micros()
    );
}
