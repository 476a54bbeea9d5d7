//! What every store must do, whatever the database.

use std::sync::Arc;

use chrono::{Duration, Utc};
use provisio_core::client::{ClientStatus, NewClient};
use provisio_core::money::Currency;
use provisio_core::page::PageRequest;
use provisio_core::product::{AutoSetup, NewProduct};
use provisio_core::secret::Sealed;
use provisio_core::server::NewServer;
use provisio_core::service::{InvoiceRef, NewService, ServiceStatus, SuspendReason, Suspension};
use provisio_core::settings::Settings;
use provisio_core::text::{DisplayName, Email, Handle, Username};
use provisio_core::{ClientId, ProductId, ServerId};
use provisio_store::{
    ClientFilter, NewApiKey, ProductFilter, ResellerStatus, Role, Scope, ServerFilter,
    ServiceFilter, Store, StoreError,
};
use serde_json::json;

type S = Arc<dyn Store>;

fn settings(v: serde_json::Value) -> Settings {
    v.as_object().unwrap().clone()
}

pub fn new_client(name: &str, email: &str) -> NewClient {
    NewClient {
        name: DisplayName::parse(name).unwrap(),
        email: Email::parse(email).unwrap(),
        status: ClientStatus::Active,
        balance_minor: 0,
        currency: Currency::parse("EUR").unwrap(),
        custom_fields: Default::default(),
        reseller_id: None,
        external_id: None,
        order_key: None,
    }
}

pub fn new_server(name: &str) -> NewServer {
    NewServer {
        name: Handle::parse(name).unwrap(),
        module: "script".into(),
        group: Handle::parse("default").unwrap(),
        settings: settings(json!({"executable": "x.sh"})),
        max_concurrent: 10,
        max_per_second: None,
        enabled: true,
    }
}

pub fn new_product(name: &str, extends: Option<ProductId>) -> NewProduct {
    NewProduct {
        name: Handle::parse(name).unwrap(),
        module: "script".into(),
        extends,
        server_group: None,
        settings: settings(json!({"quota": 100})),
        auto_setup: AutoSetup::OnOrder,
        client_fields: Default::default(),
    }
}

pub fn new_service(
    client: ClientId,
    product: ProductId,
    server: ServerId,
    username: &str,
) -> NewService {
    NewService {
        order_key: None,
        external_id: None,
        client_id: client,
        product_id: product,
        server_id: server,
        username: Username::parse(username).unwrap(),
        password: Sealed(vec![1, 2, 3]),
        status: ServiceStatus::Pending,
        invoice: None,
        parent_invoice: None,
        settings: Settings::new(),
    }
}

pub struct World {
    pub client: ClientId,
    pub product: ProductId,
    pub server: ServerId,
}

pub async fn world(s: &S) -> World {
    let client = s
        .insert_client(&new_client("Acme", "ops@acme.test"), &[])
        .await
        .unwrap();
    let server = s.insert_server(&new_server("srv-1")).await.unwrap();
    let product = s.insert_product(&new_product("basic", None)).await.unwrap();
    World {
        client: client.id,
        product: product.id,
        server: server.id,
    }
}

pub async fn migrations_are_idempotent(s: S) {
    s.migrate().await.unwrap();
    s.migrate().await.unwrap();
}

pub async fn clients_roundtrip_filter_and_page(s: S) {
    let mut nc = new_client("Zoë Ltd", "zoe@example.com");
    nc.balance_minor = -1250;
    nc.custom_fields.insert("pass_key".into(), "abc".into());
    let c = s.insert_client(&nc, &[]).await.unwrap();
    let got = s.get_client(c.id).await.unwrap().unwrap();
    assert_eq!(got, c);
    assert_eq!(got.name.as_str(), "Zoë Ltd");
    assert_eq!(got.balance_minor, -1250);
    assert_eq!(got.custom_fields["pass_key"], "abc");

    let mut changed = got.clone();
    changed.status = ClientStatus::Archived;
    changed.email = Email::parse("new@example.com").unwrap();
    let updated = s.update_client(&changed, &[]).await.unwrap();
    assert_eq!(updated.status, ClientStatus::Archived);
    assert_eq!(updated.created_at, c.created_at);
    assert!(updated.updated_at >= c.updated_at);

    for i in 0..5 {
        s.insert_client(
            &new_client(&format!("c{i}"), &format!("c{i}@example.com")),
            &[],
        )
        .await
        .unwrap();
    }
    let active = ClientFilter {
        status: Some(ClientStatus::Active),
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    let mut pages = 0;
    loop {
        let p = s.list_clients(&active, page).await.unwrap();
        pages += 1;
        assert!(p.items.len() <= 2);
        seen.extend(p.items.iter().map(|c| c.id));
        match p.next {
            Some(n) => page.after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(pages, 3);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending ids");
    let by_email = s
        .list_clients(
            &ClientFilter {
                email: Some("new@example.com".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(by_email.items.len(), 1);
    assert!(s.delete_client(c.id, &[]).await.unwrap());
    assert!(s.get_client(c.id).await.unwrap().is_none());
    assert!(!s.delete_client(c.id, &[]).await.unwrap());
    assert!(matches!(
        s.update_client(&changed, &[]).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn servers_names_are_unique(s: S) {
    let a = s.insert_server(&new_server("radius-1")).await.unwrap();
    match s.insert_server(&new_server("radius-1")).await {
        Err(StoreError::Conflict { field }) => assert_eq!(field, "name"),
        other => panic!("expected a name conflict, got {other:?}"),
    }
    let mut b = s.insert_server(&new_server("radius-2")).await.unwrap();
    b.name = Handle::parse("radius-1").unwrap();
    assert!(matches!(
        s.update_server(&b).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        s.get_server_by_name("radius-1").await.unwrap().unwrap().id,
        a.id
    );
    let mut a2 = a.clone();
    a2.enabled = false;
    a2.max_per_second = Some(50);
    s.update_server(&a2).await.unwrap();
    let enabled = s
        .list_servers(
            &ServerFilter {
                enabled: Some(true),
                module: Some("script".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(enabled.items.len(), 1);
    assert_eq!(enabled.items[0].name.as_str(), "radius-2");
    let got = s.get_server(a.id).await.unwrap().unwrap();
    assert_eq!(got.max_per_second, Some(50));
    assert!(!got.enabled);
}

pub async fn products_extend_and_filter(s: S) {
    let base = s.insert_product(&new_product("base", None)).await.unwrap();
    let plus = s
        .insert_product(&new_product("plus", Some(base.id)))
        .await
        .unwrap();
    assert_eq!(plus.extends, Some(base.id));
    let children = s
        .list_products(
            &ProductFilter {
                extends: Some(base.id),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(children.items.len(), 1);
    assert_eq!(children.items[0].id, plus.id);
    // A parent that others extend cannot be removed from under them.
    assert!(matches!(
        s.delete_product(base.id).await,
        Err(StoreError::Reference)
    ));
    assert_eq!(
        s.get_product_by_name("plus").await.unwrap().unwrap().id,
        plus.id
    );
}

pub async fn services_roundtrip_with_suspension(s: S) {
    let w = world(&s).await;
    let mut ns = new_service(w.client, w.product, w.server, "joe");
    ns.invoice = Some(InvoiceRef::parse("master-invoice-123").unwrap());
    ns.settings = settings(json!({"domain": "joe.example"}));
    let svc = s.insert_service(&ns).await.unwrap();
    assert_eq!(svc.status, ServiceStatus::Pending);
    assert!(svc.outputs.is_empty());
    assert_eq!(svc.password, Sealed(vec![1, 2, 3]));

    let mut changed = svc.clone();
    let since = Utc::now() - Duration::days(3);
    let until = Utc::now() + Duration::days(7);
    changed.status = ServiceStatus::Suspended;
    changed.suspension = Some(Suspension {
        reason: SuspendReason::Holiday,
        since,
        until: Some(until),
    });
    changed.outputs = settings(json!({"pass_key": "PK-1"}));
    let saved = s.update_service(&changed).await.unwrap();
    let got = s.get_service(svc.id).await.unwrap().unwrap();
    assert_eq!(got, saved);
    let susp = got.suspension.clone().unwrap();
    assert_eq!(susp.reason, SuspendReason::Holiday);
    // Stored with microsecond precision.
    assert_eq!(susp.since.timestamp_micros(), since.timestamp_micros());
    assert_eq!(
        susp.until.unwrap().timestamp_micros(),
        until.timestamp_micros()
    );
    assert_eq!(got.outputs["pass_key"], "PK-1");

    let mut other = got.clone();
    other.suspension = Some(Suspension {
        reason: SuspendReason::Other("moving house".into()),
        since,
        until: None,
    });
    let saved = s.update_service(&other).await.unwrap();
    assert_eq!(
        saved.suspension.unwrap().reason,
        SuspendReason::Other("moving house".into())
    );
}

pub async fn usernames_unique_per_server_among_live_services(s: S) {
    let w = world(&s).await;
    let first = s
        .insert_service(&new_service(w.client, w.product, w.server, "joe"))
        .await
        .unwrap();
    match s
        .insert_service(&new_service(w.client, w.product, w.server, "joe"))
        .await
    {
        Err(StoreError::Conflict { field }) => assert_eq!(field, "username"),
        other => panic!("expected a username conflict, got {other:?}"),
    }
    // Another server may have its own joe.
    let other = s.insert_server(&new_server("srv-2")).await.unwrap();
    s.insert_service(&new_service(w.client, w.product, other.id, "joe"))
        .await
        .unwrap();
    // A terminated joe frees the name.
    let mut gone = first.clone();
    gone.status = ServiceStatus::Terminated;
    s.update_service(&gone).await.unwrap();
    s.insert_service(&new_service(w.client, w.product, w.server, "joe"))
        .await
        .unwrap();
}

pub async fn service_filters_and_counts(s: S) {
    let w = world(&s).await;
    let other_client = s
        .insert_client(&new_client("Other", "o@example.com"), &[])
        .await
        .unwrap();
    let mut master = new_service(w.client, w.product, w.server, "master");
    master.invoice = Some(InvoiceRef::parse("inv-1").unwrap());
    s.insert_service(&master).await.unwrap();
    for i in 0..2 {
        let mut child = new_service(w.client, w.product, w.server, &format!("child{i}"));
        child.parent_invoice = Some(InvoiceRef::parse("inv-1").unwrap());
        s.insert_service(&child).await.unwrap();
    }
    let mut t = s
        .insert_service(&new_service(other_client.id, w.product, w.server, "gone"))
        .await
        .unwrap();
    t.status = ServiceStatus::Terminated;
    s.update_service(&t).await.unwrap();

    let count = |f: ServiceFilter| {
        let s = s.clone();
        async move { s.count_services(&f).await.unwrap() }
    };
    assert_eq!(count(ServiceFilter::default()).await, 4);
    assert_eq!(
        count(ServiceFilter {
            live_only: true,
            ..Default::default()
        })
        .await,
        3
    );
    assert_eq!(
        count(ServiceFilter {
            invoice: Some("inv-1".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(ServiceFilter {
            parent_invoice: Some("inv-1".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(ServiceFilter {
            client_id: Some(other_client.id),
            status: Some(ServiceStatus::Terminated),
            ..Default::default()
        })
        .await,
        1
    );
    let by_name = s
        .list_services(
            &ServiceFilter {
                username: Some("child1".into()),
                server_id: Some(w.server),
                product_id: Some(w.product),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    assert_eq!(
        by_name.items[0].parent_invoice.as_ref().unwrap().as_str(),
        "inv-1"
    );
}

pub async fn referenced_records_cannot_be_deleted(s: S) {
    let w = world(&s).await;
    let svc = s
        .insert_service(&new_service(w.client, w.product, w.server, "joe"))
        .await
        .unwrap();
    assert!(matches!(
        s.delete_client(w.client, &[]).await,
        Err(StoreError::Reference)
    ));
    assert!(matches!(
        s.delete_server(w.server).await,
        Err(StoreError::Reference)
    ));
    assert!(matches!(
        s.delete_product(w.product).await,
        Err(StoreError::Reference)
    ));
    // A service for a client that does not exist is refused by the database itself.
    assert!(matches!(
        s.insert_service(&new_service(ClientId(999_999), w.product, w.server, "x"))
            .await,
        Err(StoreError::Reference)
    ));
    assert!(s.delete_service(svc.id).await.unwrap());
    assert!(s.delete_client(w.client, &[]).await.unwrap());
}

fn new_key(name: &str, hash: &str, role: Role, scope: Option<Scope>) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        prefix: "pvo_abc123".into(),
        hash: hash.into(),
        role,
        scope,
        actions: None,
        reveal_secrets: false,
        expires_at: None,
    }
}

pub async fn api_keys_by_hash(s: S) {
    let k = s
        .insert_api_key(&new_key("admin", "h1", Role::Admin, None))
        .await
        .unwrap();
    assert!(k.last_used_at.is_none() && k.revoked_at.is_none());
    assert!(matches!(
        s.insert_api_key(&new_key("admin", "h2", Role::Billing, None))
            .await,
        Err(StoreError::Conflict { .. })
    ));
    let found = s.find_api_key("h1").await.unwrap().unwrap();
    assert_eq!((found.name.as_str(), found.role), ("admin", Role::Admin));
    assert!(s.find_api_key("nope").await.unwrap().is_none());
    let now = Utc::now();
    s.touch_api_key(k.id, now).await.unwrap();
    let found = s.find_api_key("h1").await.unwrap().unwrap();
    assert_eq!(
        found.last_used_at.unwrap().timestamp_micros(),
        now.timestamp_micros()
    );
    assert_eq!(s.list_api_keys().await.unwrap().len(), 1);
    // A revoked key stays on record and its name can be given again.
    let revoked = s.revoke_api_key(k.id, now).await.unwrap().unwrap();
    assert!(!revoked.is_live(Utc::now()));
    let again = s
        .revoke_api_key(k.id, now + chrono::Duration::hours(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "the first revocation stands"
    );
    assert!(s.revoke_api_key(999_999, now).await.unwrap().is_none());
    s.insert_api_key(&new_key("admin", "h3", Role::Readonly, None))
        .await
        .unwrap();
    assert_eq!(s.list_api_keys().await.unwrap().len(), 2);

    // Scoped keys keep their scope, actions and expiry.
    let r = s
        .insert_reseller(
            &DisplayName::parse("Hosts R Us").unwrap(),
            ResellerStatus::Active,
        )
        .await
        .unwrap();
    let mut spec = new_key("shop", "h4", Role::Reseller, Some(Scope::Reseller(r.id)));
    spec.expires_at = Some(now + chrono::Duration::days(1));
    let shop = s.insert_api_key(&spec).await.unwrap();
    assert_eq!(shop.scope, Some(Scope::Reseller(r.id)));
    assert!(shop.is_live(now) && !shop.is_live(now + chrono::Duration::days(2)));
    let c = s
        .insert_client(&new_client("Jo", "jo@example.com"), &[])
        .await
        .unwrap();
    let mut spec = new_key("jo", "h5", Role::Client, Some(Scope::Client(c.id)));
    spec.actions = Some(vec!["change_password".into()]);
    spec.reveal_secrets = true;
    let jo = s.insert_api_key(&spec).await.unwrap();
    let found = s.get_api_key(jo.id).await.unwrap().unwrap();
    assert_eq!(found.scope, Some(Scope::Client(c.id)));
    assert_eq!(
        found.actions.as_deref(),
        Some(&["change_password".to_string()][..])
    );
    assert!(found.reveal_secrets);
}

async fn client_ids(s: &S, scope: Option<Scope>) -> Vec<ClientId> {
    let f = ClientFilter {
        scope,
        ..Default::default()
    };
    let page = s.list_clients(&f, PageRequest::first(10)).await.unwrap();
    page.items.iter().map(|c| c.id).collect()
}

async fn service_ids(s: &S, scope: Option<Scope>) -> Vec<provisio_core::ServiceId> {
    let f = ServiceFilter {
        scope,
        ..Default::default()
    };
    let page = s.list_services(&f, PageRequest::first(10)).await.unwrap();
    page.items.iter().map(|x| x.id).collect()
}

pub async fn resellers_hold_clients_and_scope_lists(s: S) {
    let w = world(&s).await;
    let r = s
        .insert_reseller(
            &DisplayName::parse("Resold").unwrap(),
            ResellerStatus::Active,
        )
        .await
        .unwrap();
    let other = s
        .insert_reseller(
            &DisplayName::parse("Elsewhere").unwrap(),
            ResellerStatus::Active,
        )
        .await
        .unwrap();
    assert!(matches!(
        s.insert_reseller(
            &DisplayName::parse("Resold").unwrap(),
            ResellerStatus::Active
        )
        .await,
        Err(StoreError::Conflict { .. })
    ));
    let mut suspended = other.clone();
    suspended.status = ResellerStatus::Suspended;
    assert_eq!(
        s.update_reseller(&suspended).await.unwrap().status,
        ResellerStatus::Suspended
    );
    assert_eq!(
        s.list_resellers(PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    let mut nc = new_client("Sold On", "sold@example.com");
    nc.reseller_id = Some(r.id);
    let sold = s.insert_client(&nc, &[]).await.unwrap();
    assert_eq!(sold.reseller_id, Some(r.id));
    let mine = s
        .insert_service(&new_service(sold.id, w.product, w.server, "mine"))
        .await
        .unwrap();
    let theirs = s
        .insert_service(&new_service(w.client, w.product, w.server, "theirs"))
        .await
        .unwrap();

    let as_reseller = Some(Scope::Reseller(r.id));
    assert_eq!(client_ids(&s, as_reseller).await, [sold.id]);
    assert_eq!(service_ids(&s, as_reseller).await, [mine.id]);
    let as_client = Some(Scope::Client(w.client));
    assert_eq!(service_ids(&s, as_client).await, [theirs.id]);
    assert_eq!(client_ids(&s, as_client).await, [w.client]);
    assert!(client_ids(&s, Some(Scope::Reseller(other.id)))
        .await
        .is_empty());

    // Moving a client to another reseller moves its services with it.
    let mut moved = sold.clone();
    moved.reseller_id = Some(other.id);
    s.update_client(&moved, &[]).await.unwrap();
    assert!(service_ids(&s, as_reseller).await.is_empty());
}

pub async fn settings_json_roundtrips(s: S) {
    let mut ns = new_server("json");
    ns.settings = settings(json!({
        "port": 6061,
        "emails": ["a@example.com", "b@example.com"],
        "nested": {"deep": [1, 2.5, null, true]},
        "password": {"$sealed": "AAEC"},
        "unicode": "Grüße ✓",
    }));
    let srv = s.insert_server(&ns).await.unwrap();
    let got = s.get_server(srv.id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::Value::Object(got.settings),
        serde_json::Value::Object(ns.settings)
    );
}
