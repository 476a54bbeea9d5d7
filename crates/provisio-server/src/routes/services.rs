//! `/v1/services`: what clients have on servers, the actions run on them, and their job history.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use provisio_core::service::ServiceStatus;
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};
use provisio_engine::input::{ServiceCreate, ServicePatch};
use provisio_store::ServiceFilter;
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json, OptionalJson, Query};
use crate::views::{JobView, List, PasswordView, ServiceView};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_services, create_service))
        .routes(routes!(get_service, update_service, delete_service))
        .routes(routes!(service_password))
        .routes(routes!(service_action))
        .routes(routes!(service_jobs))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ServiceQuery {
    status: Option<ServiceStatus>,
    client_id: Option<i64>,
    server_id: Option<i64>,
    product_id: Option<i64>,
    invoice: Option<String>,
    parent_invoice: Option<String>,
    username: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List services.
#[utoipa::path(get, path = "/v1/services", tag = "services", params(ServiceQuery),
    responses((status = 200, body = List<ServiceView>), (status = 400, body = Problem)))]
async fn list_services(
    State(app): State<AppState>,
    Query(q): Query<ServiceQuery>,
) -> Result<axum::Json<List<ServiceView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let filter = ServiceFilter {
        status: q.status,
        client_id: q.client_id.map(ClientId),
        server_id: q.server_id.map(ServerId),
        product_id: q.product_id.map(ProductId),
        invoice: q.invoice,
        parent_invoice: q.parent_invoice,
        username: q.username,
        ..Default::default()
    };
    let found = app.engine.list_services(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, ServiceView::from)))
}

/// Order a service: it is stored `pending` on the named server, or on one chosen from the
/// product's server group.
#[utoipa::path(post, path = "/v1/services", tag = "services", request_body = ServiceCreate,
    responses((status = 201, body = ServiceView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_service(
    State(app): State<AppState>,
    Json(body): Json<ServiceCreate>,
) -> Result<(StatusCode, axum::Json<ServiceView>), ApiError> {
    let s = app.engine.create_service(body).await?;
    Ok((StatusCode::CREATED, axum::Json(s.into())))
}

/// Show a service.
#[utoipa::path(get, path = "/v1/services/{id}", tag = "services", params(("id" = i64, Path)),
    responses((status = 200, body = ServiceView), (status = 404, body = Problem)))]
async fn get_service(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    let s = app.engine.get_service(ServiceId(path_id(&id)?)).await?;
    Ok(axum::Json(s.into()))
}

/// Change a service's invoices or settings (and, while pending, its username or password).
#[utoipa::path(patch, path = "/v1/services/{id}", tag = "services", params(("id" = i64, Path)), request_body = ServicePatch,
    responses((status = 200, body = ServiceView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_service(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<ServicePatch>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    let s = app
        .engine
        .update_service(ServiceId(path_id(&id)?), body)
        .await?;
    Ok(axum::Json(s.into()))
}

/// Remove a pending, failed or terminated service from the records.
#[utoipa::path(delete, path = "/v1/services/{id}", tag = "services", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_service(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.engine.delete_service(ServiceId(path_id(&id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Show a service's password. The only place a stored secret is ever shown.
#[utoipa::path(get, path = "/v1/services/{id}/password", tag = "services", params(("id" = i64, Path)),
    responses((status = 200, body = PasswordView), (status = 404, body = Problem)))]
async fn service_password(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<PasswordView>, ApiError> {
    let id = ServiceId(path_id(&id)?);
    let pw = app.engine.reveal_password(id).await?;
    tracing::info!(service = %id, "service password revealed");
    Ok(axum::Json(PasswordView {
        password: pw.expose_secret().to_string(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait up to this many seconds (at most 300) for the outcome.
    wait: Option<u64>,
}

/// Run an action on a service: `create`, `suspend`, `unsuspend`, `terminate`,
/// `change-password`, `change-package`, `renew`, or a custom action the server's module
/// offers; `accept` accepts a pending order, which runs create for a product set up
/// `on_accept`. Answers 202 with the queued job, or with
/// `?wait=SECONDS` 200 with the finished job (202 if it is still running by then). The
/// service's status changes only once the remote confirmed the action.
#[utoipa::path(post, path = "/v1/services/{id}/{action}", tag = "services",
    params(("id" = i64, Path), ("action" = String, Path, description = "create, suspend, unsuspend, terminate, change-password, change-package, renew, accept, or a custom action of the module"), WaitQuery),
    request_body(content = Option<provisio_engine::ActionInput>, description = "suspend: reason, until; change-password: password; change-package: product"),
    responses((status = 202, body = JobView), (status = 200, body = JobView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn service_action(
    State(app): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    OptionalJson(body): OptionalJson<provisio_engine::ActionInput>,
) -> Result<(StatusCode, axum::Json<JobView>), ApiError> {
    let id = ServiceId(path_id(&id)?);
    // `accept` is the order's acceptance: it runs create for products set up on acceptance.
    let accept = action == "accept";
    let body_given = body.reason.is_some()
        || body.until.is_some()
        || body.password.is_some()
        || body.product.is_some();
    // A custom action's name is only well-formed here; the engine checks the server offers it.
    let action = match action.as_str() {
        "accept" => provisio_core::module::Action::Create,
        other => provisio_core::module::Action::service_action(other)
            .map_err(|_| ApiError::not_found(format!("no action '{other}' on services")))?,
    };
    if q.wait.is_some_and(|w| w > 300) {
        return Err(ApiError::bad_field(
            StatusCode::BAD_REQUEST,
            "wait",
            "range",
            "must be at most 300 seconds",
        ));
    }
    let job = if accept {
        if body_given {
            return Err(ApiError::bad_field(
                StatusCode::UNPROCESSABLE_ENTITY,
                "body",
                "not_applicable",
                "accept takes no body",
            ));
        }
        app.engine.accept_service(id).await?
    } else {
        app.engine.request_action(id, action, body).await?
    };
    match q.wait {
        Some(secs) if secs > 0 => {
            let job = app
                .engine
                .wait_for_job(job.id, std::time::Duration::from_secs(secs))
                .await?;
            let status = if job.state.is_final() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok((status, axum::Json(job.into())))
        }
        _ => Ok((StatusCode::ACCEPTED, axum::Json(job.into()))),
    }
}

/// A service's job history, oldest first.
#[utoipa::path(get, path = "/v1/services/{id}/jobs", tag = "services", params(("id" = i64, Path), ("limit" = Option<u32>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = List<JobView>), (status = 404, body = Problem)))]
async fn service_jobs(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<JobView>>, ApiError> {
    let id = ServiceId(path_id(&id)?);
    app.engine.get_service(id).await?;
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let filter = provisio_store::JobFilter {
        service_id: Some(id),
        ..Default::default()
    };
    let found = app.engine.list_jobs(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, JobView::from)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}
