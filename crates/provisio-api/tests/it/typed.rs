//! Every body the typed client writes is one the server reads: each create, patch and
//! many-services request goes out typed and comes back as the change it asked for.

use std::collections::BTreeMap;
use std::time::Duration;

use provisio_api::requests::{
    ActionInput, CleanupRequest, ClientPatch, CollectQuery, GroupRequest, HandlerCreate,
    HandlerPatch, KeyCreate, MembersQuery, Patch, ProductPatch, RecordRef, ResellerCreate,
    ResellerInput, RuleCreate, RulePatch, ServerPatch, ServiceCreate, ServicePatch,
};
use provisio_api::views::GroupOp;
use provisio_core::access::{ResellerStatus, Role};
use provisio_core::client::ClientStatus;
use provisio_core::handler::{HandlerKind, HandlerStatus, Phase};
use provisio_core::rule::RuleAction;
use serde_json::json;

use crate::app::spawn;

#[tokio::test]
async fn record_patches_change_what_they_name() {
    let app = spawn().await;
    let c = app.client();
    let (client_id, product) = app.catalog(&c).await;

    let changed = c
        .update_client(
            client_id,
            &ClientPatch {
                status: Some(ClientStatus::Archived),
                custom_fields: Some(BTreeMap::from([("vat_id".into(), Some("DE1".into()))])),
                external_id: Patch::Set("whmcs-1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.status, ClientStatus::Archived);
    assert_eq!(changed.custom_fields["vat_id"], "DE1");
    assert_eq!(changed.external_id.as_deref(), Some("whmcs-1"));
    let cleared = c
        .update_client(
            client_id,
            &ClientPatch {
                status: Some(ClientStatus::Active),
                custom_fields: Some(BTreeMap::from([("vat_id".into(), None)])),
                external_id: Patch::Clear,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(cleared.custom_fields.is_empty(), "{cleared:?}");
    assert_eq!(cleared.external_id, None);

    let server = c
        .update_server(
            "noop-1",
            &ServerPatch {
                max_concurrent: Some(3),
                max_per_second: Patch::Set(9),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((server.max_concurrent, server.max_per_second), (3, Some(9)));
    let server = c
        .update_server(
            "noop-1",
            &ServerPatch {
                max_per_second: Patch::Clear,
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((server.max_per_second, server.enabled), (None, false));
    c.update_server(
        "noop-1",
        &ServerPatch {
            enabled: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let p = c
        .update_product(
            &product,
            &ProductPatch {
                server_group: Patch::Set("default".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.server_group.as_deref(), Some("default"));
    let p = c
        .update_product(
            &product,
            &ProductPatch {
                server_group: Patch::Clear,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(p.server_group, None);

    let order = ServiceCreate::new(
        provisio_core::ClientId(client_id),
        RecordRef::Name(product.clone()),
    );
    let service = c.create_service(&order).await.unwrap();
    let s = c
        .update_service(
            service.id,
            &ServicePatch {
                invoice: Patch::Set("INV-9".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.invoice.as_deref(), Some("INV-9"));
}

#[tokio::test]
async fn hooks_keys_and_resellers_go_out_typed() {
    let app = spawn().await;
    let c = app.client();

    let mut hook = HandlerCreate::new(
        "hook-1",
        HandlerKind::Http,
        Phase::Notify,
        vec!["client.*".into()],
    );
    hook.url = Some("http://127.0.0.1:9/hook".into());
    hook.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    let h = c.create_handler(&hook).await.unwrap();
    assert_eq!(
        (h.kind, h.status),
        (HandlerKind::Http, HandlerStatus::Enabled)
    );
    // A secret the caller chose is not shown back.
    assert!(h.secret.is_none());
    let h = c
        .update_handler(
            "hook-1",
            &HandlerPatch {
                status: Some(HandlerStatus::Disabled),
                timeout_ms: Some(700),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((h.status, h.timeout_ms), (HandlerStatus::Disabled, 700));

    let rule = RuleCreate {
        name: "dunning".into(),
        on: "client.balance_nonpositive".into(),
        action: RuleAction::SuspendServices {
            reason: "non-payment".into(),
        },
        delay_secs: Some(60),
        enabled: Some(false),
    };
    let r = c.create_rule(&rule).await.unwrap();
    assert_eq!((r.delay_secs, r.enabled), (60, false));
    let r = c
        .update_rule(
            "dunning",
            &RulePatch {
                action: Some(RuleAction::UnsuspendServices { only_reason: None }),
                enabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(r.action.kind(), "unsuspend_services");
    assert!(r.enabled);

    let reseller = c
        .create_reseller(&ResellerCreate {
            name: "Resell Co".into(),
            status: None,
        })
        .await
        .unwrap();
    assert_eq!(reseller.status, ResellerStatus::Active);
    let reseller = c
        .update_reseller(
            reseller.id,
            &ResellerInput {
                status: Some(ResellerStatus::Suspended),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(reseller.status, ResellerStatus::Suspended);

    let mut key = KeyCreate::named("resell-1", Role::Reseller);
    key.reseller_id = Some(reseller.id);
    let made = c.create_key(&key).await.unwrap();
    assert_eq!(made.record.reseller_id, Some(reseller.id));
    assert!(made.key.starts_with("pvo_"));
    let e = c
        .create_key(&KeyCreate::named("lost-1", Role::Reseller))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
}

#[tokio::test]
async fn many_services_at_once_go_out_typed() {
    let app = spawn().await;
    let c = app.client();
    let (client_id, product) = app.catalog(&c).await;
    for (invoice, parent) in [(Some("INV-1"), None), (None, Some("INV-1"))] {
        let mut order = ServiceCreate::new(
            provisio_core::ClientId(client_id),
            RecordRef::Name(product.clone()),
        );
        order.invoice = invoice.map(Into::into);
        order.parent_invoice = parent.map(Into::into);
        let s = c.create_service(&order).await.unwrap();
        let create = c.service_jobs(s.id, &[]).await.unwrap().items[0].id;
        c.wait_job(create, Duration::from_secs(10)).await.unwrap();
    }

    let query = CollectQuery {
        fields: vec!["service.parent_invoice".into(), "client.email".into()],
        filters: BTreeMap::from([("service.parent_invoice".into(), "INV-1".into())]),
        ..Default::default()
    };
    let found = c.collect(&query, &[]).await.unwrap();
    assert_eq!(found.items.len(), 1, "{found:?}");
    assert_eq!(
        found.items[0].values,
        json!({"service": {"parent_invoice": "INV-1"}, "client": {"email": "ada@example.com"}})
    );

    let children = c
        .group_members(
            "INV-1",
            &MembersQuery {
                children_only: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(children.members.len(), 1);
    assert_eq!(children.members[0].role, "child");
    let first = c
        .group_members(
            "INV-1",
            &MembersQuery {
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(first.members[0].role, "master");
    assert!(first.next.is_some());

    let suspended = c
        .group_operation(
            "INV-1",
            GroupOp::Suspend,
            &GroupRequest {
                reason: Some("overdue".into()),
                wait: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(suspended.members.len(), 2);
    assert!(
        suspended.members.iter().all(|m| m.outcome == "done"),
        "{suspended:?}"
    );

    let planned = c
        .cleanup(&CleanupRequest {
            dry_run: true,
            after: Some("now".into()),
        })
        .await
        .unwrap();
    assert_eq!(planned.len(), 2, "{planned:?}");
    assert!(planned.iter().all(|m| m.outcome == "planned"));
    // A dry run changed nothing: the members can still be lifted by a plain action.
    let lifted = c
        .service_action(
            planned[0].service_id,
            "unsuspend",
            &ActionInput::default(),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(lifted.state, provisio_core::job::JobState::Done);
}
