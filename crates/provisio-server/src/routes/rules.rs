//! `/v1/rules`: automation rules (on an event about a client, after a grace period, act on
//! its services) and the record of each time one fired.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use provisio_core::rule::RuleRun;
use provisio_engine::input::RecordRef;
use provisio_engine::{RuleCreate, RulePatch};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{rule, Access, READ_SETUP, WRITE_SETUP};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Query};
use crate::views::{List, RuleView};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, update_rule, delete_rule))
        .routes(routes!(list_runs))
}

pub(crate) const ACCESS: &[Access] = &[
    rule(axum::http::Method::GET, "/v1/rules", READ_SETUP),
    rule(axum::http::Method::POST, "/v1/rules", WRITE_SETUP),
    rule(axum::http::Method::GET, "/v1/rules/{rule}", READ_SETUP),
    rule(axum::http::Method::PATCH, "/v1/rules/{rule}", WRITE_SETUP),
    rule(axum::http::Method::DELETE, "/v1/rules/{rule}", WRITE_SETUP),
    rule(axum::http::Method::GET, "/v1/rule-runs", READ_SETUP),
];

/// List rules by name.
#[utoipa::path(get, path = "/v1/rules", tag = "rules",
    responses((status = 200, body = List<RuleView>)))]
async fn list_rules(State(app): State<AppState>) -> Result<axum::Json<List<RuleView>>, ApiError> {
    let all = app.engine.list_rules().await?;
    Ok(axum::Json(List {
        items: all.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}

/// Create a rule.
#[utoipa::path(post, path = "/v1/rules", tag = "rules", request_body = RuleCreate,
    responses((status = 201, body = RuleView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_rule(
    State(app): State<AppState>,
    Json(body): Json<RuleCreate>,
) -> Result<(StatusCode, axum::Json<RuleView>), ApiError> {
    let r = app.engine.create_rule(body).await?;
    Ok((StatusCode::CREATED, axum::Json(r.into())))
}

/// Show a rule (by id or name).
#[utoipa::path(get, path = "/v1/rules/{rule}", tag = "rules", params(("rule" = String, Path, description = "id or name")),
    responses((status = 200, body = RuleView), (status = 404, body = Problem)))]
async fn get_rule(
    State(app): State<AppState>,
    Path(rule): Path<String>,
) -> Result<axum::Json<RuleView>, ApiError> {
    let r = app
        .engine
        .find_rule(&RecordRef::from_segment(&rule))
        .await?;
    Ok(axum::Json(r.into()))
}

/// Change a rule.
#[utoipa::path(patch, path = "/v1/rules/{rule}", tag = "rules", params(("rule" = String, Path, description = "id or name")), request_body = RulePatch,
    responses((status = 200, body = RuleView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_rule(
    State(app): State<AppState>,
    Path(rule): Path<String>,
    Json(body): Json<RulePatch>,
) -> Result<axum::Json<RuleView>, ApiError> {
    let r = app
        .engine
        .update_rule(&RecordRef::from_segment(&rule), body)
        .await?;
    Ok(axum::Json(r.into()))
}

/// Delete a rule; firings not yet run are dropped.
#[utoipa::path(delete, path = "/v1/rules/{rule}", tag = "rules", params(("rule" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_rule(
    State(app): State<AppState>,
    Path(rule): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.engine
        .delete_rule(&RecordRef::from_segment(&rule))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Only firings of this rule (id or name).
    rule: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List rule firings, oldest first: when each is due, and what it did.
#[utoipa::path(get, path = "/v1/rule-runs", tag = "rules", params(RunQuery),
    responses((status = 200, body = List<RuleRun>), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn list_runs(
    State(app): State<AppState>,
    Query(q): Query<RunQuery>,
) -> Result<axum::Json<List<RuleRun>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let rule = q.rule.as_deref().map(RecordRef::from_segment);
    let found = app.engine.list_rule_runs(rule.as_ref(), page).await?;
    Ok(axum::Json(List::from_page(found, |r| r)))
}
