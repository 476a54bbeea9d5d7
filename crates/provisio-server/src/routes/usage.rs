//! `/v1/usage` and the usage parts of services and products: sync runs (started here, run
//! in the background, polled for progress), a service's usage and history, top-ups, and
//! product usage policies.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use provisio_core::usage::{Topup, UsagePolicy, UsageReading};
use provisio_core::ServiceId;
use provisio_engine::input::RecordRef;
use provisio_engine::usage::{ServiceUsage, ServiceUsageLine, SyncInput, SyncReport, TopupInput};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{
    client_rule, fleet_rule, rule, Access, Caller, READ_BILLING, READ_SETUP, WRITE_BILLING,
    WRITE_SETUP,
};
use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json, OptionalJson, Query};
use crate::views::List;
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_syncs, start_sync))
        .routes(routes!(get_sync))
        .routes(routes!(service_usage))
        .routes(routes!(usage_of_services))
        .routes(routes!(usage_history))
        .routes(routes!(list_topups, add_topup))
        .routes(routes!(get_policy, set_policy, delete_policy))
}

pub(crate) const ACCESS: &[Access] = &[
    // A sync reads every server: no scoped key starts or reads one.
    fleet_rule(Method::POST, "/v1/usage/syncs", WRITE_BILLING),
    fleet_rule(Method::GET, "/v1/usage/syncs", READ_BILLING),
    fleet_rule(Method::GET, "/v1/usage/syncs/{id}", READ_BILLING),
    client_rule(Method::GET, "/v1/services/{id}/usage", READ_BILLING),
    client_rule(Method::GET, "/v1/usage/services", READ_BILLING),
    client_rule(Method::GET, "/v1/services/{id}/usage/history", READ_BILLING),
    client_rule(Method::GET, "/v1/services/{id}/topups", READ_BILLING),
    rule(Method::POST, "/v1/services/{id}/topups", WRITE_BILLING),
    rule(
        Method::GET,
        "/v1/products/{product}/usage-policy",
        READ_SETUP,
    ),
    rule(
        Method::PUT,
        "/v1/products/{product}/usage-policy",
        WRITE_SETUP,
    ),
    rule(
        Method::DELETE,
        "/v1/products/{product}/usage-policy",
        WRITE_SETUP,
    ),
];

/// A service id from the path whose usage the caller may read.
async fn readable(app: &AppState, caller: &Caller, raw: &str) -> Result<ServiceId, ApiError> {
    let id = super::services::seen(app, caller, raw).await?;
    caller.may_run("usage")?;
    Ok(id)
}

/// Start a usage sync of every server whose module reports usage (or of one server). The
/// sync runs in the background; poll `GET /v1/usage/syncs/{id}` for per-server progress.
#[utoipa::path(post, path = "/v1/usage/syncs", tag = "usage",
    request_body(content = Option<SyncInput>),
    responses((status = 202, body = SyncReport), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn start_sync(
    State(app): State<AppState>,
    OptionalJson(body): OptionalJson<SyncInput>,
) -> Result<(StatusCode, axum::Json<SyncReport>), ApiError> {
    let run = app.engine.start_usage_sync(body).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(run)))
}

/// List usage sync runs, oldest first.
#[utoipa::path(get, path = "/v1/usage/syncs", tag = "usage", params(super::PageQuery),
    responses((status = 200, body = List<SyncReport>), (status = 400, body = Problem)))]
async fn list_syncs(
    State(app): State<AppState>,
    Query(q): Query<super::PageQuery>,
) -> Result<axum::Json<List<SyncReport>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let found = app.engine.usage_syncs(page).await?;
    Ok(axum::Json(List::from_page(found, |r| r)))
}

/// Show a usage sync: per server its state, progress, services updated, unknown usernames,
/// errors and duration.
#[utoipa::path(get, path = "/v1/usage/syncs/{id}", tag = "usage", params(("id" = i64, Path)),
    responses((status = 200, body = SyncReport), (status = 404, body = Problem)))]
async fn get_sync(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<SyncReport>, ApiError> {
    Ok(axum::Json(app.engine.usage_sync(path_id(&id)?).await?))
}

/// Show a service's current usage per metric (recurring against the limit, top-ups, quota).
#[utoipa::path(get, path = "/v1/services/{id}/usage", tag = "usage", params(("id" = i64, Path)),
    responses((status = 200, body = ServiceUsage), (status = 404, body = Problem)))]
async fn service_usage(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ServiceUsage>, ApiError> {
    let id = readable(&app, &caller, &id).await?;
    Ok(axum::Json(app.engine.service_usage(id).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageListQuery {
    status: Option<provisio_core::service::ServiceStatus>,
    server_id: Option<i64>,
    product_id: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List the current usage of many services, a page at a time (up to 1,000 per page), in
/// service id order: what a billing system's daily usage update reads in one request.
#[utoipa::path(get, path = "/v1/usage/services", tag = "usage", params(UsageListQuery),
    responses((status = 200, body = List<ServiceUsageLine>), (status = 400, body = Problem)))]
async fn usage_of_services(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<UsageListQuery>,
) -> Result<axum::Json<List<ServiceUsageLine>>, ApiError> {
    caller.may_run("usage")?;
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let filter = provisio_store::ServiceFilter {
        status: q.status,
        server_id: q.server_id.map(provisio_core::ServerId),
        product_id: q.product_id.map(provisio_core::ProductId),
        scope: caller.scope,
        ..Default::default()
    };
    let found = app.engine.usage_of_services(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, |l| l)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    metric: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List a service's usage readings (one per change of a value), oldest first.
#[utoipa::path(get, path = "/v1/services/{id}/usage/history", tag = "usage",
    params(("id" = i64, Path), HistoryQuery),
    responses((status = 200, body = List<UsageReading>), (status = 404, body = Problem)))]
async fn usage_history(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<axum::Json<List<UsageReading>>, ApiError> {
    let id = readable(&app, &caller, &id).await?;
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let found = app
        .engine
        .usage_history(id, q.metric.as_deref(), page)
        .await?;
    Ok(axum::Json(List::from_page(found, |r| r)))
}

/// List a service's top-ups.
#[utoipa::path(get, path = "/v1/services/{id}/topups", tag = "usage", params(("id" = i64, Path)),
    responses((status = 200, body = Vec<Topup>), (status = 404, body = Problem)))]
async fn list_topups(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Vec<Topup>>, ApiError> {
    let id = readable(&app, &caller, &id).await?;
    Ok(axum::Json(app.engine.service_usage(id).await?.topups))
}

/// Add a once-off top-up: quota consumed only after the recurring quota, kept across
/// periods. The same `idempotency_key` again answers 200 with the first top-up.
#[utoipa::path(post, path = "/v1/services/{id}/topups", tag = "usage", params(("id" = i64, Path)),
    request_body = TopupInput,
    responses((status = 201, body = Topup), (status = 200, body = Topup), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn add_topup(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<TopupInput>,
) -> Result<(StatusCode, axum::Json<Topup>), ApiError> {
    let id = super::services::seen(&app, &caller, &id).await?;
    let (t, replayed) = app.engine.add_topup(id, body).await?;
    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(t)))
}

/// Show a product's usage policy (404 when it has none; products extending it inherit it).
#[utoipa::path(get, path = "/v1/products/{product}/usage-policy", tag = "usage",
    params(("product" = String, Path, description = "id or name")),
    responses((status = 200, body = UsagePolicy), (status = 404, body = Problem)))]
async fn get_policy(
    State(app): State<AppState>,
    Path(product): Path<String>,
) -> Result<axum::Json<UsagePolicy>, ApiError> {
    app.engine
        .usage_policy(&RecordRef::from_segment(&product))
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("product {product} has no usage policy")))
}

/// Set a product's usage policy: which setting holds each metric's limit and what happens
/// when a service exceeds it (`suspend` with reason `usage`, or `change_package`).
#[utoipa::path(put, path = "/v1/products/{product}/usage-policy", tag = "usage",
    params(("product" = String, Path, description = "id or name")), request_body = UsagePolicy,
    responses((status = 200, body = UsagePolicy), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn set_policy(
    State(app): State<AppState>,
    Path(product): Path<String>,
    Json(body): Json<UsagePolicy>,
) -> Result<axum::Json<UsagePolicy>, ApiError> {
    Ok(axum::Json(
        app.engine
            .set_usage_policy(&RecordRef::from_segment(&product), body)
            .await?,
    ))
}

/// Remove a product's usage policy.
#[utoipa::path(delete, path = "/v1/products/{product}/usage-policy", tag = "usage",
    params(("product" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_policy(
    State(app): State<AppState>,
    Path(product): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app
        .engine
        .delete_usage_policy(&RecordRef::from_segment(&product))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "product {product} has no usage policy"
        )))
    }
}
