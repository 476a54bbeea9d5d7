//! `/v1/events`: what happened, newest last, filtered by type (with wildcards), subject and time.

use axum::extract::State;
use axum::http::Method;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use provisio_core::event::EventPattern;
use provisio_store::EventFilter;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{client_rule, Access, Caller, READ_BILLING};
use crate::error::{ApiError, Problem};
use crate::extract::Query;
use crate::views::{EventView, List};
use crate::AppState;

pub(crate) const ACCESS: &[Access] = &[client_rule(Method::GET, "/v1/events", READ_BILLING)];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Comma-separated types or patterns: `service.*`, `client.created,client.deleted`,
    /// `service.*.failed`. A trailing `*` matches one or more segments.
    #[serde(rename = "type")]
    #[param(
        rename = "type",
        pattern = r"^\s*(([a-z][a-z0-9_]*|\*)(\.([a-z][a-z0-9_]*|\*))*)?\s*(,\s*(([a-z][a-z0-9_]*|\*)(\.([a-z][a-z0-9_]*|\*))*)?\s*)*$"
    )]
    kind: Option<String>,
    /// `client:7`, `service:12`.
    subject: Option<String>,
    /// RFC 3339; events at or after.
    since: Option<DateTime<Utc>>,
    /// RFC 3339; events before.
    until: Option<DateTime<Utc>>,
    /// Who caused them: `key:ID`, `rule:ID`, `scheduler` or `config`.
    #[param(pattern = "^((key|rule):-?[0-9]{1,18}|scheduler|config)$")]
    actor: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List events, oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = List<EventView>), (status = 400, body = Problem)))]
async fn list_events(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<EventQuery>,
) -> Result<axum::Json<List<EventView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let mut types = Vec::new();
    for p in q
        .kind
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        types.push(EventPattern::parse(p).map_err(|e| {
            ApiError::bad_field(StatusCode::BAD_REQUEST, "type", e.rule, e.message)
        })?);
    }
    let actor = match q.actor.as_deref() {
        Some(a) => Some(
            provisio_core::access::Actor::parse_filter(a)
                .map_err(|m| ApiError::bad_field(StatusCode::BAD_REQUEST, "actor", "pattern", m))?,
        ),
        None => None,
    };
    let filter = EventFilter {
        types,
        actor,
        subject: q.subject,
        since: q.since,
        until: q.until,
        scope: caller.scope,
    };
    let found = app.engine.list_events(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, EventView::from)))
}
