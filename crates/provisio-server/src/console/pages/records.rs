//! The record pages: servers (settings with secrets masked, test connection) and rules
//! (runs). Each is a few tables drawn by one template; products, usage syncs, clients,
//! handlers and audits have pages of their own.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::Extension;
use provisio_core::page::PageRequest;
use provisio_engine::input::RecordRef;

use super::{show, when, wire};
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

async fn servers_page(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    notice: Option<String>,
) -> PageResult {
    s.need(Method::GET, "/v1/servers")?;
    let may_test = s.may(Method::POST, "/v1/servers/{server}/test");
    let may_edit = s.may(Method::PATCH, "/v1/servers/{server}");
    let rows = super::all_servers(state)
        .await?
        .into_iter()
        .map(|x| {
            let mut row = vec![
                if may_edit {
                    link(x.name.as_str(), format!("/console/servers/{}/edit", x.id))
                } else {
                    t(x.name.as_str())
                },
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
