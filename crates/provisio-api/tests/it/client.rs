//! One method per operation, typed answers, the typed error, and the idempotent retry.

use std::time::Duration;

use provisio_api::requests::{ActionInput, ClientCreate, RecordRef, ServiceCreate};
use provisio_api::{ApiError, Client, ClientOptions};
use provisio_core::job::JobState;
use provisio_core::service::ServiceStatus;

use crate::app::{lagging_proxy, spawn};

#[tokio::test]
async fn order_act_and_follow_the_jobs() {
    let app = spawn().await;
    let c = app.client();
    let (client_id, product) = app.catalog(&c).await;
    assert_eq!(c.get_client(client_id).await.unwrap().name, "Ada Lovelace");

    let service = c
        .create_service(&ServiceCreate::new(
            provisio_core::ClientId(client_id),
            RecordRef::Name(product),
        ))
        .await
        .unwrap();
    assert_eq!(service.client_id, client_id);
    // The product sets up on order: the create job is queued with the service.
    let queued = c.service_jobs(service.id, &[]).await.unwrap();
    assert_eq!(queued.items.len(), 1);
    assert_eq!(queued.items[0].action, "create");
    let create = c
        .wait_job(queued.items[0].id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(create.state, JobState::Done, "{create:?}");
    assert_eq!(
        c.get_service(service.id).await.unwrap().status,
        ServiceStatus::Active
    );

    let suspend = ActionInput {
        reason: Some("overdue".into()),
        ..Default::default()
    };
    let queued = c
        .service_action(service.id, "suspend", &suspend, None)
        .await
        .unwrap();
    assert_eq!(queued.params["reason"], "overdue");
    let done = c
        .wait_job(queued.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Done);
    let shown = c.get_job(queued.id).await.unwrap();
    let history = shown.history.expect("the single-job view has the attempts");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].outcome, "ok");
    let service = c.get_service(service.id).await.unwrap();
    assert_eq!(service.status, ServiceStatus::Suspended);
    assert_eq!(service.suspension.unwrap().reason, "overdue");

    // Held until the job ends.
    let unsuspend = c
        .service_action(
            service.id,
            "unsuspend",
            &ActionInput::default(),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(unsuspend.state, JobState::Done, "{unsuspend:?}");
    assert_eq!(
        c.get_service(service.id).await.unwrap().status,
        ServiceStatus::Active
    );

    let jobs = c.service_jobs(service.id, &[]).await.unwrap();
    let ids: Vec<i64> = jobs.items.iter().map(|j| j.id).collect();
    assert!(
        ids.contains(&create.id) && ids.contains(&queued.id),
        "{ids:?}"
    );
}

#[tokio::test]
async fn field_errors_arrive_in_the_typed_error() {
    let app = spawn().await;
    let c = app.client();
    let e = c
        .create_client(&ClientCreate {
            name: "Bad".into(),
            email: "not-an-email".into(),
            currency: Some("euro".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    let problem = e.problem().expect("a problem document");
    assert_eq!(problem.status, 422);
    let fields: Vec<&str> = e.field_errors().iter().map(|f| f.field.as_str()).collect();
    assert!(fields.contains(&"email"), "{fields:?}");
    assert!(fields.contains(&"currency"), "{fields:?}");
    assert!(e
        .field_errors()
        .iter()
        .all(|f| !f.rule.is_empty() && !f.message.is_empty()));
    assert!(e.to_string().starts_with("422 "), "{e}");

    let missing = c.get_service(987_654).await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
    assert!(missing.field_errors().is_empty());

    let keyless = Client::new(&app.base, None).unwrap();
    let e = keyless.list_clients(&[]).await.unwrap_err();
    assert_eq!(e.status(), Some(401));
    assert!(e.to_string().contains("no API key given"), "{e}");
}

/// The first attempt reaches the server but its answer comes too late; the client sends
/// the order again under the same `Idempotency-Key` and gets the first answer back.
#[tokio::test]
async fn a_timed_out_order_is_sent_again_and_places_one_service() {
    let app = spawn().await;
    let direct = app.client();
    let (client_id, product) = app.catalog(&direct).await;
    let (proxy, heads) = lagging_proxy(&app.base, Duration::from_millis(2500)).await;
    let options = ClientOptions {
        timeout: Duration::from_millis(1000),
        retries: 2,
        ..Default::default()
    };
    let c = Client::with_options(&proxy, Some(&app.key), options).unwrap();
    let mut order =
        ServiceCreate::new(provisio_core::ClientId(client_id), RecordRef::Name(product));
    order.username = Some("ada1".into());
    let service = c.create_service(&order).await.unwrap();
    assert_eq!(service.username, "ada1");

    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "one lost answer, one retry: {heads:?}");
    let key = |h: &str| {
        h.lines()
            .find_map(|l| l.strip_prefix("idempotency-key:"))
            .map(|k| k.trim().to_string())
            .expect("every POST carries an Idempotency-Key")
    };
    assert_eq!(key(&heads[0]), key(&heads[1]));
    assert!(heads.iter().all(|h| h.contains("authorization: bearer")));

    let all = direct
        .list_services(&[("client_id", client_id.to_string())])
        .await
        .unwrap();
    assert_eq!(all.items.len(), 1, "the retry placed nothing twice");
    assert_eq!(all.items[0].id, service.id);
}

#[tokio::test]
async fn a_refused_connection_names_the_url_and_the_fix() {
    // Bind then drop a listener to get a local port that nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let c = Client::new(&base, None).unwrap();
    let e = c.list_clients(&[]).await.unwrap_err();
    assert!(matches!(e, ApiError::Unreachable { refused: true, .. }));
    assert_eq!(
        e.to_string(),
        format!("cannot reach Provisio at {base}: is 'provisio serve' running?")
    );
    let e = Client::new("ftp://x", None).unwrap_err().to_string();
    assert!(e.starts_with("invalid --url 'ftp://x'"), "{e}");
}
