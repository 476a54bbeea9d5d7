//! Events: the log filtered by type patterns, subject and actor since a time, which follows
//! new events live (htmx polls the page and swaps in its table).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method};
use axum::Extension;
use provisio_core::event::EventPattern;
use provisio_core::page::PageRequest;
use provisio_store::EventFilter;
use serde::Deserialize;

use super::form::FormPage;
use super::{given, parse_id, when};
use crate::console::{page, ConsoleState, PageResult, Session};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    subject: Option<String>,
    actor: Option<String>,
    since: Option<String>,
    after: Option<String>,
}

struct EventRow {
    id: i64,
    at: String,
    kind: String,
    subject: String,
    actor: String,
    payload: String,
}

#[derive(Template)]
#[template(path = "console/events.html")]
struct EventsPage {
    q: EventQuery,
    rows: Vec<EventRow>,
    next: Option<String>,
    errors: Vec<(String, String)>,
    query: String,
}

impl FormPage for EventsPage {
    fn field_errors(&self) -> &[(String, String)] {
        &self.errors
    }
}

pub(crate) async fn events(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> PageResult {
    s.need(Method::GET, "/v1/events")?;
    let engine = &state.app.engine;
    let mut errors = Vec::new();
    let mut types = Vec::new();
    for p in given(&q.kind)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match EventPattern::parse(p) {
            Ok(p) => types.push(p),
            Err(e) => errors.push(("type".to_string(), e.message.to_string())),
        }
    }
    let actor = match given(&q.actor) {
        Some(a) => match provisio_core::access::Actor::parse_filter(a) {
            Ok(a) => Some(a),
            Err(m) => {
                errors.push(("actor".into(), m.to_string()));
                None
            }
        },
        None => None,
    };
    let since = match crate::config::parse_duration(given(&q.since).unwrap_or("1h")) {
        Ok(d) => engine.now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX),
        Err(m) => {
            errors.push(("since".into(), m));
            engine.now()
        }
    };
    let after = parse_id("after", given(&q.after))?;
    let (rows, next) = if errors.is_empty() {
        let found = engine
            .list_events(
                &EventFilter {
                    types,
                    actor,
                    subject: given(&q.subject).map(String::from),
                    since: Some(since),
                    until: None,
                    scope: s.caller().scope,
                },
                PageRequest { after, limit: 200 },
            )
            .await?;
        let next = found.next.map(|n| n.to_string());
        let rows = found
            .items
            .into_iter()
            .map(|e| EventRow {
                id: e.id.0,
                at: when(e.at),
                kind: e.kind.as_str().to_string(),
                subject: e.subject,
                actor: e.actor.as_ref().map(super::actor).unwrap_or_default(),
                payload: e.payload.to_string(),
            })
            .collect();
        (rows, next)
    } else {
        (Vec::new(), None)
    };
    let query = serde_urlencoded::to_string([
        ("type", q.kind.as_deref().unwrap_or("")),
        ("subject", q.subject.as_deref().unwrap_or("")),
        ("actor", q.actor.as_deref().unwrap_or("")),
        ("since", q.since.as_deref().unwrap_or("")),
    ])
    .unwrap_or_default();
    let content = EventsPage {
        q,
        rows,
        next,
        errors,
        query,
    };
    page(&s, &headers, "/console/events", "Events", content)
}
