//! Handlers: the list, one handler with its delivery log (state, attempts, last error), one
//! delivery with its attempts (live while it is sent), and redelivery after a confirmation,
//! through `Engine::redeliver` like `POST /v1/deliveries/{id}/redeliver`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::Extension;
use provisio_core::handler::{Delivery, DeliveryState, Handler};
use provisio_core::page::PageRequest;
use provisio_core::DeliveryId;
use provisio_engine::input::RecordRef;
use provisio_store::DeliveryFilter;
use serde::Deserialize;

use super::form::FormPage;
use super::queue::Confirm;
use super::{given, parse_id, when, when_opt};
use crate::console::{page, see_other, ConsoleState, PageError, PageResult, Session};

pub(crate) struct HandlerRow {
    id: i64,
    name: String,
    kind: &'static str,
    phase: &'static str,
    status: &'static str,
    target: String,
    events: String,
    failing_since: String,
    disabled_reason: String,
}

impl From<&Handler> for HandlerRow {
    fn from(h: &Handler) -> Self {
        HandlerRow {
            id: h.id.0,
            name: h.name.to_string(),
            kind: h.kind.as_str(),
            phase: h.phase.as_str(),
            status: h.status.as_str(),
            target: h.target.clone(),
            events: h
                .events
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            failing_since: when_opt(h.failing_since),
            disabled_reason: h.disabled_reason.clone().unwrap_or_default(),
        }
    }
}

pub(crate) struct DeliveryRow {
    id: i64,
    handler: String,
    handler_id: i64,
    event: String,
    subject: String,
    state: &'static str,
    attempts: u32,
    last_error: String,
    next: String,
    updated: String,
    /// Finished (succeeded or failed): the only states redelivery accepts.
    finished: bool,
}

fn delivery_row(d: Delivery, handlers: &[Handler]) -> DeliveryRow {
    DeliveryRow {
        id: d.id.0,
        handler: handlers
            .iter()
            .find(|h| h.id == d.handler_id)
            .map_or_else(|| d.handler_id.to_string(), |h| h.name.to_string()),
        handler_id: d.handler_id.0,
        event: d.event_type.to_string(),
        subject: d.subject,
        state: d.state.as_str(),
        attempts: d.attempts,
        last_error: d.last_error.unwrap_or_default(),
        next: if d.state == DeliveryState::Pending {
            when(d.next_at)
        } else {
            String::new()
        },
        updated: when(d.updated_at),
        finished: matches!(d.state, DeliveryState::Succeeded | DeliveryState::Failed),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogQuery {
    state: Option<String>,
    after: Option<String>,
}

#[derive(Template)]
#[template(path = "console/handlers.html")]
struct HandlersPage {
    handlers: Vec<HandlerRow>,
    /// The handler whose log this is; every handler's when `None`.
    one: Option<HandlerRow>,
    see_log: bool,
    may_redeliver: bool,
    deliveries: Vec<DeliveryRow>,
    q: LogQuery,
    base: String,
    next: Option<String>,
    errors: Vec<(String, String)>,
}

impl FormPage for HandlersPage {
    fn field_errors(&self) -> &[(String, String)] {
        &self.errors
    }
}

async fn log_page(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    one: Option<Handler>,
    q: LogQuery,
) -> PageResult {
    let engine = &state.app.engine;
    let hs = engine.list_handlers().await?;
    let see_log = s.may(Method::GET, "/v1/deliveries");
    let mut errors = Vec::new();
    let mut filter = DeliveryFilter {
        handler_id: one.as_ref().map(|h| h.id),
        ..Default::default()
    };
    if let Some(st) = given(&q.state) {
        match [
            DeliveryState::Pending,
            DeliveryState::Running,
            DeliveryState::Succeeded,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|x| x.as_str() == st)
        {
            Some(x) => filter.state = Some(x),
            None => errors.push(("state".into(), format!("'{st}' is not a delivery state"))),
        }
    }
    let after = parse_id("after", given(&q.after))?;
    let (deliveries, next) = if see_log && errors.is_empty() {
        let found = engine
            .list_deliveries(&filter, PageRequest { after, limit: 100 })
            .await?;
        (
            found
                .items
                .into_iter()
                .map(|d| delivery_row(d, &hs))
                .collect(),
            found.next.map(|n| n.to_string()),
        )
    } else {
        (Vec::new(), None)
    };
    let base = match &one {
        Some(h) => format!("/console/handlers/{}", h.id),
        None => "/console/handlers".into(),
    };
    let title = match &one {
        Some(h) => format!("Handler {}", h.name),
        None => "Handlers".into(),
    };
    let content = HandlersPage {
        handlers: if one.is_none() {
            hs.iter().map(HandlerRow::from).collect()
        } else {
            Vec::new()
        },
        one: one.as_ref().map(HandlerRow::from),
        see_log,
        may_redeliver: s.may(Method::POST, "/v1/deliveries/{id}/redeliver"),
        deliveries,
        q,
        base,
        next,
        errors,
    };
    page(s, headers, "/console/handlers", &title, content)
}

pub(crate) async fn handlers(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<LogQuery>,
) -> PageResult {
    s.need(Method::GET, "/v1/handlers")?;
    log_page(&state, &s, &headers, None, q).await
}

pub(crate) async fn handler(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> PageResult {
    s.need(Method::GET, "/v1/handlers/{handler}")?;
    let h = state
        .app
        .engine
        .find_handler(&RecordRef::from_segment(&id))
        .await?;
    log_page(&state, &s, &headers, Some(h), q).await
}

struct AttemptRow {
    attempt: u32,
    at: String,
    duration_ms: i64,
    succeeded: bool,
    status_code: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/delivery.html")]
struct DeliveryPage {
    d: DeliveryRow,
    attempts: Vec<AttemptRow>,
    may_redeliver: bool,
}

pub(crate) async fn delivery(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::GET, "/v1/deliveries/{id}")?;
    let engine = &state.app.engine;
    let d = engine
        .get_delivery(DeliveryId(crate::extract::path_id(&id)?))
        .await?;
    let hs = engine.list_handlers().await?;
    let content = DeliveryPage {
        d: delivery_row(d.delivery, &hs),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| AttemptRow {
                attempt: a.attempt,
                at: when(a.at),
                duration_ms: a.duration_ms,
                succeeded: a.succeeded,
                status_code: a.status_code.map(|c| c.to_string()).unwrap_or_default(),
                detail: a.detail.unwrap_or_default(),
            })
            .collect(),
        may_redeliver: s.may(Method::POST, "/v1/deliveries/{id}/redeliver"),
    };
    let title = format!("Delivery {}", content.d.id);
    page(&s, &headers, "/console/handlers", &title, content)
}

async fn finished_delivery(state: &ConsoleState, raw: &str) -> Result<Delivery, PageError> {
    let id = DeliveryId(crate::extract::path_id(raw)?);
    Ok(state.app.engine.get_delivery(id).await?.delivery)
}

pub(crate) async fn confirm_redeliver(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::POST, "/v1/deliveries/{id}/redeliver")?;
    let d = finished_delivery(&state, &id).await?;
    let content = Confirm {
        heading: format!("Redeliver delivery {}?", d.id),
        message: format!(
            "The {} event about {} is sent to handler {} again, under the same message id; it is {} now after {} attempts, which its log keeps.",
            d.event_type,
            d.subject,
            d.handler_id,
            d.state.as_str(),
            d.attempts
        ),
        action: format!("/console/deliveries/{}/redeliver", d.id),
        csrf: s.csrf.clone(),
        hidden: vec![],
        button: "Redeliver".into(),
        danger: false,
        note: false,
        note_error: None,
        back: format!("/console/deliveries/{}", d.id),
    };
    page(
        &s,
        &headers,
        "/console/handlers",
        &format!("Redeliver {}", d.id),
        content,
    )
}

pub(crate) async fn redeliver(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::POST, "/v1/deliveries/{id}/redeliver")?;
    let d = finished_delivery(&state, &id).await?;
    state.app.engine.redeliver(d.id).await?;
    Ok(see_other(
        &headers,
        &format!("/console/deliveries/{}", d.id),
    ))
}
