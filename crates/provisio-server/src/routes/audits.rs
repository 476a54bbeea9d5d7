//! `/v1/audits`: start audits (they run in the background), read their reports and export
//! their findings as JSON or CSV.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use provisio_core::audit::{Audit, DriftKind, Finding};
use provisio_engine::audit::AuditInput;
use provisio_engine::input::RecordRef;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{fleet_rule, rule, Access, READ_BILLING, WRITE_SETUP};
use crate::error::{ApiError, Problem};
use crate::extract::{path_id, OptionalJson, Query};
use crate::views::List;
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audits, start_audit))
        .routes(routes!(get_audit))
        .routes(routes!(audit_findings))
}

/// Starting an audit (and so fixing drift) is set-up; its reports are for the billing
/// system too (WHMCS's server sync lists the orphans the last one found), but over the
/// whole instance, so never for a client or reseller key.
pub(crate) const ACCESS: &[Access] = &[
    rule(axum::http::Method::POST, "/v1/audits", WRITE_SETUP),
    fleet_rule(axum::http::Method::GET, "/v1/audits", READ_BILLING),
    fleet_rule(axum::http::Method::GET, "/v1/audits/{id}", READ_BILLING),
    fleet_rule(
        axum::http::Method::GET,
        "/v1/audits/{id}/findings",
        READ_BILLING,
    ),
];

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only audits of this server (id or name).
    server: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Start an audit of one server, or of every enabled server whose module lists accounts.
/// Answers at once with the audits (`running`); poll `GET /v1/audits/{id}`.
#[utoipa::path(post, path = "/v1/audits", tag = "audits", request_body(content = Option<AuditInput>),
    responses((status = 202, body = Vec<Audit>), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn start_audit(
    State(app): State<AppState>,
    OptionalJson(body): OptionalJson<AuditInput>,
) -> Result<(StatusCode, axum::Json<Vec<Audit>>), ApiError> {
    let started = app.engine.start_audits(body).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(started)))
}

/// List audits, oldest first.
#[utoipa::path(get, path = "/v1/audits", tag = "audits", params(AuditQuery),
    responses((status = 200, body = List<Audit>), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn list_audits(
    State(app): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<List<Audit>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let server = q.server.as_deref().map(RecordRef::from_segment);
    let found = app.engine.list_audits(server.as_ref(), page).await?;
    Ok(axum::Json(List::from_page(found, |a| a)))
}

/// Show an audit: state, counts per kind of drift, and why a fix was refused, if it was.
#[utoipa::path(get, path = "/v1/audits/{id}", tag = "audits", params(("id" = i64, Path)),
    responses((status = 200, body = Audit), (status = 404, body = Problem)))]
async fn get_audit(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<Audit>, ApiError> {
    Ok(axum::Json(app.engine.get_audit(path_id(&id)?).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FindingsQuery {
    /// Only findings of this kind.
    kind: Option<DriftKind>,
    /// `json` (default) or `csv`.
    #[param(inline)]
    format: Option<FindingsFormat>,
}

#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FindingsFormat {
    Json,
    Csv,
}

/// An audit's findings, each with the fix taken or (dry run) planned; `format=csv` for a
/// spreadsheet.
#[utoipa::path(get, path = "/v1/audits/{id}/findings", tag = "audits", params(("id" = i64, Path), FindingsQuery),
    responses((status = 200, content((Vec<Finding> = "application/json"), (String = "text/csv"))), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn audit_findings(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FindingsQuery>,
) -> Result<Response, ApiError> {
    let csv = q.format == Some(FindingsFormat::Csv);
    let findings = app.engine.audit_findings(path_id(&id)?, q.kind).await?;
    if !csv {
        return Ok(axum::Json(findings).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        provisio_core::audit::findings_csv(&findings),
    )
        .into_response())
}
