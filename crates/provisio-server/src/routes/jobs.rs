//! `/v1/jobs`: the module queue: what is pending, running, done or failed, with retry and
//! resolve for the failed ones.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use provisio_core::job::{JobId, JobState};
use provisio_core::{ServerId, ServiceId};
use provisio_engine::input::RecordRef;
use provisio_store::JobFilter;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{client_rule, Access, Caller, READ_BILLING, WRITE_SETUP};
use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json, OptionalJson, Query};
use crate::views::{job_detail_view, JobView, List, RetriedView};
use crate::AppState;
use provisio_api::requests::{ResolveBody, RetryFailedBody};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(retry_job))
        .routes(routes!(resolve_job))
        .routes(routes!(retry_failed))
}

pub(crate) const ACCESS: &[Access] = &[
    client_rule(Method::GET, "/v1/jobs", READ_BILLING),
    client_rule(Method::GET, "/v1/jobs/{id}", READ_BILLING),
    // Repairing the queue is the operator's work, not the billing system's.
    crate::access::rule(Method::POST, "/v1/jobs/{id}/retry", WRITE_SETUP),
    crate::access::rule(Method::POST, "/v1/jobs/{id}/resolve", WRITE_SETUP),
    crate::access::rule(Method::POST, "/v1/jobs/retry", WRITE_SETUP),
];

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    state: Option<JobState>,
    /// Server id or name.
    server: Option<String>,
    service: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List jobs.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobQuery),
    responses((status = 200, body = List<JobView>), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn list_jobs(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<JobQuery>,
) -> Result<axum::Json<List<JobView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    if caller.scope.is_some() && q.server.is_some() {
        // Servers are outside every scope; naming one would tell which exist.
        return Err(ApiError::bad_field(
            StatusCode::BAD_REQUEST,
            "server",
            "not_applicable",
            "a scoped key cannot filter by server",
        ));
    }
    let server_id = match &q.server {
        Some(s) => Some(
            app.engine
                .find_server(&RecordRef::from_segment(s))
                .await?
                .id,
        ),
        None => None,
    };
    let filter = JobFilter {
        state: q.state,
        server_id,
        service_id: q.service.map(ServiceId),
        open_only: false,
        scope: caller.scope,
        ..Default::default()
    };
    let found = app.engine.list_jobs(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, JobView::from)))
}

/// Show a job with every attempt. With `?wait=SECONDS` the answer comes once the job is
/// final or the time is up, whichever is first (its `state` says which): a billing system
/// whose first wait ran out asks again without sending the action again.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = i64, Path), super::services::WaitQuery),
    responses((status = 200, body = JobView), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn get_job(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<super::services::WaitQuery>,
) -> Result<axum::Json<JobView>, ApiError> {
    let id = JobId(path_id(&id)?);
    caller.job(&app.engine, id).await?;
    let wait = super::services::checked_wait(&q)?;
    if wait > 0 {
        app.engine
            .wait_for_job(id, std::time::Duration::from_secs(wait))
            .await?;
    }
    let d = app.engine.get_job(id).await?;
    Ok(axum::Json(job_detail_view(d)))
}

/// Run a failed job again, with a fresh set of retries.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = i64, Path)),
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn retry_job(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<JobView>, ApiError> {
    let j = app.engine.retry_job(JobId(path_id(&id)?)).await?;
    Ok(axum::Json(j.into()))
}

/// Mark a failed job handled by a person.
#[utoipa::path(post, path = "/v1/jobs/{id}/resolve", tag = "jobs", params(("id" = i64, Path)), request_body = ResolveBody,
    responses((status = 200, body = JobView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn resolve_job(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<ResolveBody>,
) -> Result<axum::Json<JobView>, ApiError> {
    let j = app
        .engine
        .resolve_job(JobId(path_id(&id)?), &body.note)
        .await?;
    Ok(axum::Json(j.into()))
}

/// Retry every failed job (of one server).
#[utoipa::path(post, path = "/v1/jobs/retry", tag = "jobs", request_body(content = Option<RetryFailedBody>),
    responses((status = 200, body = RetriedView), (status = 404, body = Problem)))]
async fn retry_failed(
    State(app): State<AppState>,
    OptionalJson(body): OptionalJson<RetryFailedBody>,
) -> Result<axum::Json<RetriedView>, ApiError> {
    let server: Option<ServerId> = match &body.server {
        Some(s) => Some(
            app.engine
                .find_server(&RecordRef::from_segment(s))
                .await?
                .id,
        ),
        None => None,
    };
    let retried = app.engine.retry_failed(server).await?;
    Ok(axum::Json(RetriedView { retried }))
}
