//! The record pages: clients (services, balance, transactions), servers (settings with
//! secrets masked, test connection), handlers (delivery log), rules (runs) and audits. Each
//! is a few tables drawn by one template (products and usage syncs have pages of their own).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::Extension;
use provisio_core::page::PageRequest;
use provisio_core::ClientId;
use provisio_engine::input::RecordRef;
use provisio_store::{ClientFilter, DeliveryFilter, ServerFilter, ServiceFilter};

use super::{show, when, when_opt, wire};
use crate::console::{page, ConsoleState, PageResult, Session};

pub(crate) struct Cell {
    text: String,
    href: Option<String>,
    /// A button posting to this URL.
    post: Option<String>,
}

fn t(s: impl ToString) -> Cell {
    Cell {
        text: s.to_string(),
        href: None,
        post: None,
    }
}

fn link(s: impl ToString, href: String) -> Cell {
    Cell {
        text: s.to_string(),
        href: Some(href),
        post: None,
    }
}

pub(crate) struct Table {
    heading: String,
    id: String,
    headers: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
    note: Option<String>,
}

#[derive(Template)]
#[template(path = "console/records.html")]
struct RecordsPage {
    title: String,
    notice: Option<String>,
    tables: Vec<Table>,
    csrf: String,
}

fn settings_text(m: &serde_json::Map<String, serde_json::Value>) -> String {
    let (m, _) = provisio_core::secret::redact_settings(m);
    m.iter()
        .map(|(k, v)| format!("{k}={}", show(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render(
    s: &Session,
    headers: &HeaderMap,
    current: &str,
    title: &str,
    tables: Vec<Table>,
    notice: Option<String>,
) -> PageResult {
    page(
        s,
        headers,
        current,
        title,
        RecordsPage {
            title: title.to_string(),
            notice,
            tables,
            csrf: s.csrf.clone(),
        },
    )
}

pub(crate) async fn clients(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/clients")?;
    let found = state
        .app
        .engine
        .list_clients(
            &ClientFilter {
                scope: s.caller().scope,
                ..Default::default()
            },
            PageRequest::first(200),
        )
        .await?;
    let rows = found
        .items
        .into_iter()
        .map(|c| {
            vec![
                link(c.id, format!("/console/clients/{}", c.id)),
                t(c.name.as_str()),
                t(c.email.as_str()),
                t(c.status.as_str()),
                t(format!("{} {}", c.balance_minor, c.currency.as_str())),
            ]
        })
        .collect();
    let note = found
        .next
        .map(|_| "The first 200 clients; search services by client id for others.".to_string());
    render(
        &s,
        &headers,
        "/console/clients",
        "Clients",
        vec![Table {
            heading: "Clients".into(),
            id: "clients".into(),
            headers: vec!["Id", "Name", "Email", "Status", "Balance (minor units)"],
            rows,
            note,
        }],
        None,
    )
}

pub(crate) async fn client(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::GET, "/v1/clients/{id}")?;
    let engine = &state.app.engine;
    let id = ClientId(crate::extract::path_id(&id)?);
    let c = s.caller().client(engine, id).await?;
    let services = engine
        .list_services(
            &ServiceFilter {
                client_id: Some(c.id),
                scope: s.caller().scope,
                ..Default::default()
            },
            PageRequest::first(200),
        )
        .await?;
    let mut tables = vec![Table {
        heading: format!("{} <{}>", c.name.as_str(), c.email.as_str()),
        id: "client".into(),
        headers: vec!["Status", "Balance (minor units)", "Currency", "Created"],
        rows: vec![vec![
            t(c.status.as_str()),
            t(c.balance_minor),
            t(c.currency.as_str()),
            t(when(c.created_at)),
        ]],
        note: None,
    }];
    tables.push(Table {
        heading: "Services".into(),
        id: "client-services".into(),
        headers: vec!["Id", "Username", "Status"],
        rows: services
            .items
            .into_iter()
            .map(|x| {
                vec![
                    t(x.id),
                    link(x.username.as_str(), format!("/console/services/{}", x.id)),
                    t(x.status.as_str()),
                ]
            })
            .collect(),
        note: None,
    });
    if s.may(Method::GET, "/v1/clients/{id}/transactions") {
        let tx = engine
            .list_transactions(c.id, PageRequest::first(200))
            .await?;
        tables.push(Table {
            heading: "Transactions".into(),
            id: "transactions".into(),
            headers: vec!["Id", "Kind", "Amount", "Balance after", "Description"],
            rows: tx
                .items
                .into_iter()
                .map(|x| {
                    vec![
                        t(x.id.0),
                        t(wire(x.kind)),
                        t(x.amount_minor),
                        t(x.balance_after),
                        t(x.description.unwrap_or_default()),
                    ]
                })
                .collect(),
            note: None,
        });
    }
    render(
        &s,
        &headers,
        "/console/clients",
        &format!("Client {}", c.id),
        tables,
        None,
    )
}

async fn servers_page(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    notice: Option<String>,
) -> PageResult {
    s.need(Method::GET, "/v1/servers")?;
    let may_test = s.may(Method::POST, "/v1/servers/{server}/test");
    let found = state
        .app
        .engine
        .list_servers(
            &ServerFilter::default(),
            PageRequest::first(PageRequest::MAX_LIMIT),
        )
        .await?;
    let rows = found
        .items
        .into_iter()
        .map(|x| {
            let mut row = vec![
                t(x.name.as_str()),
                t(&x.module),
                t(x.group.as_str()),
                t(x.max_concurrent),
                t(if x.enabled { "yes" } else { "no" }),
                t(settings_text(&x.settings)),
            ];
            if may_test {
                row.push(Cell {
                    text: "Test connection".into(),
                    href: None,
                    post: Some(format!("/console/servers/{}/test", x.id)),
                });
            }
            row
        })
        .collect();
    let mut headers_row = vec![
        "Name",
        "Module",
        "Group",
        "Max concurrent",
        "Enabled",
        "Settings (secrets masked)",
    ];
    if may_test {
        headers_row.push("Check");
    }
    render(
        s,
        headers,
        "/console/servers",
        "Servers",
        vec![Table {
            heading: "Servers".into(),
            id: "servers".into(),
            headers: headers_row,
            rows,
            note: None,
        }],
        notice,
    )
}

pub(crate) async fn servers(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    servers_page(&state, &s, &headers, None).await
}

pub(crate) async fn test_server(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::POST, "/v1/servers/{server}/test")?;
    let r = RecordRef::from_segment(&id);
    let server = state.app.engine.find_server(&r).await?;
    let notice = match state.app.engine.test_connection(&r).await? {
        Ok(()) => format!("Server {}: the connection works.", server.name),
        Err(e) => format!("Server {}: the connection failed: {e}", server.name),
    };
    servers_page(&state, &s, &headers, Some(notice)).await
}

pub(crate) async fn handlers(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/handlers")?;
    let engine = &state.app.engine;
    let hs = engine.list_handlers().await?;
    let mut tables = vec![Table {
        heading: "Handlers".into(),
        id: "handlers".into(),
        headers: vec!["Name", "Kind", "Target", "Events"],
        rows: hs
            .iter()
            .map(|h| {
                vec![
                    t(h.name.as_str()),
                    t(h.kind.as_str()),
                    t(&h.target),
                    t(h.events
                        .iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")),
                ]
            })
            .collect(),
        note: None,
    }];
    if s.may(Method::GET, "/v1/deliveries") {
        let ds = engine
            .list_deliveries(&DeliveryFilter::default(), PageRequest::first(200))
            .await?;
        tables.push(Table {
            heading: "Delivery log".into(),
            id: "deliveries".into(),
            headers: vec!["Id", "Handler", "Event", "Subject", "State", "Attempts", "Last error"],
            rows: ds
                .items
                .into_iter()
                .map(|d| {
                    vec![
                        t(d.id),
                        t(hs.iter().find(|h| h.id == d.handler_id).map_or_else(|| d.handler_id.to_string(), |h| h.name.to_string())),
                        t(d.event_type.as_str()),
                        t(d.subject),
                        t(d.state.as_str()),
                        t(d.attempts),
                        t(d.last_error.unwrap_or_default()),
                    ]
                })
                .collect(),
            note: Some("Redeliver with POST /v1/deliveries/{id}/redeliver or `provisio delivery redeliver`.".into()),
        });
    }
    render(&s, &headers, "/console/handlers", "Handlers", tables, None)
}

pub(crate) async fn rules(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/rules")?;
    let engine = &state.app.engine;
    let rs = engine.list_rules().await?;
    let runs = engine.list_rule_runs(None, PageRequest::first(200)).await?;
    let tables = vec![
        Table {
            heading: "Rules".into(),
            id: "rules".into(),
            headers: vec!["Name", "On", "Enabled", "Created"],
            rows: rs
                .iter()
                .map(|r| {
                    vec![
                        t(r.name.as_str()),
                        t(r.on.as_str()),
                        t(r.enabled),
                        t(when(r.created_at)),
                    ]
                })
                .collect(),
            note: None,
        },
        Table {
            heading: "Runs".into(),
            id: "rule-runs".into(),
            headers: vec!["Id", "Rule", "Subject", "Due", "State", "Result"],
            rows: runs
                .items
                .into_iter()
                .map(|r| {
                    vec![
                        t(r.id),
                        t(rs.iter()
                            .find(|x| x.id == r.rule_id)
                            .map_or_else(|| r.rule_id.to_string(), |x| x.name.to_string())),
                        t(r.subject),
                        t(when(r.due_at)),
                        t(wire(r.state)),
                        t(r.result.unwrap_or_default()),
                    ]
                })
                .collect(),
            note: None,
        },
    ];
    render(&s, &headers, "/console/rules", "Rules", tables, None)
}

pub(crate) async fn audits(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/audits")?;
    let engine = &state.app.engine;
    let found = engine.list_audits(None, PageRequest::first(200)).await?;
    let rows = found
        .items
        .into_iter()
        .map(|a| {
            vec![
                t(a.id),
                t(a.server_id),
                t(wire(a.state)),
                t(if a.dry_run { "dry run" } else { "applied" }),
                t(a.counts
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")),
                t(when_opt(a.finished_at)),
            ]
        })
        .collect();
    render(&s, &headers, "/console/audits", "Audits", vec![Table {
        heading: "Audits".into(),
        id: "audits".into(),
        headers: vec!["Id", "Server", "State", "Fix", "Findings", "Finished"],
        rows,
        note: Some("Start an audit with its fix as a dry run first: `provisio audit run --fix … --dry-run`.".into()),
    }], None)
}
