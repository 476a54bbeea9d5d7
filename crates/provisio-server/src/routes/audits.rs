//! `/v1/audits`: start audits (they run in the background), read their reports and export
//! their findings as JSON or CSV.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use provisio_core::audit::{Audit, DriftKind, Finding};
use provisio_engine::audit::AuditInput;
use provisio_engine::input::RecordRef;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

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
    responses((status = 200, body = List<Audit>), (status = 400, body = Problem)))]
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
    format: Option<String>,
}

/// An audit's findings, each with the fix taken or (dry run) planned; `format=csv` for a
/// spreadsheet.
#[utoipa::path(get, path = "/v1/audits/{id}/findings", tag = "audits", params(("id" = i64, Path), FindingsQuery),
    responses((status = 200, body = Vec<Finding>), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn audit_findings(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FindingsQuery>,
) -> Result<Response, ApiError> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::bad_field(
                StatusCode::BAD_REQUEST,
                "format",
                "enum",
                "must be json or csv",
            ))
        }
    };
    let findings = app.engine.audit_findings(path_id(&id)?, q.kind).await?;
    if !csv {
        return Ok(axum::Json(findings).into_response());
    }
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        findings_csv(&findings),
    )
        .into_response())
}

/// RFC 4180 CSV: fields with a comma, quote or line break are quoted, quotes doubled. A
/// field starting with `=`, `+`, `-` or `@` gets a leading apostrophe so a spreadsheet does
/// not run a remote-supplied username as a formula.
pub fn findings_csv(findings: &[Finding]) -> String {
    fn field(s: &str) -> String {
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_string()
        };
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    }
    let mut out = String::from(
        "kind,username,service_id,local_status,remote_status,local_package,remote_package,fix\r\n",
    );
    for f in findings {
        let cols = [
            f.kind.as_str().to_string(),
            f.username.clone(),
            f.service_id.map(|i| i.to_string()).unwrap_or_default(),
            f.local_status.clone().unwrap_or_default(),
            f.remote_status.clone().unwrap_or_default(),
            f.local_package.clone().unwrap_or_default(),
            f.remote_package.clone().unwrap_or_default(),
            f.fix.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = cols.iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}
