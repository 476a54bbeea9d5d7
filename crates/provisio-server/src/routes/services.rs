//! `/v1/services`: what clients have on servers, the actions run on them, and their job history.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use provisio_core::service::ServiceStatus;
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};
use provisio_engine::input::{ServiceCreate, ServicePatch};
use provisio_store::ServiceFilter;
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{client_rule, rule, Access, Caller, Need, READ_BILLING, WRITE_BILLING};
use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json, OptionalJson, Query};
use crate::idempotency::IdempotencyKey;
use crate::views::{
    JobView, List, PasswordView, ServiceActions, ServiceBatchAnswer, ServiceBatchResult,
    ServiceView,
};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_services, create_service))
        .routes(routes!(create_services))
        .routes(routes!(service_by_external_id))
        .routes(routes!(get_service, update_service, delete_service))
        .routes(routes!(service_password))
        .routes(routes!(service_action))
        .routes(routes!(service_jobs))
        .routes(routes!(service_actions))
}

pub(crate) const ACCESS: &[Access] = &[
    client_rule(Method::GET, "/v1/services", READ_BILLING),
    rule(Method::POST, "/v1/services", WRITE_BILLING),
    rule(Method::POST, "/v1/services/batch", WRITE_BILLING),
    client_rule(
        Method::GET,
        "/v1/services/by-external-id/{external_id}",
        READ_BILLING,
    ),
    client_rule(Method::GET, "/v1/services/{id}", READ_BILLING),
    rule(Method::PATCH, "/v1/services/{id}", WRITE_BILLING),
    rule(Method::DELETE, "/v1/services/{id}", WRITE_BILLING),
    client_rule(Method::GET, "/v1/services/{id}/password", Need::Secret),
    // A client key runs only the actions it names; the handler checks which.
    client_rule(Method::POST, "/v1/services/{id}/{action}", WRITE_BILLING),
    client_rule(Method::GET, "/v1/services/{id}/jobs", READ_BILLING),
    client_rule(Method::GET, "/v1/services/{id}/actions", READ_BILLING),
];

/// A service id from the path, if the caller may see that service.
pub(crate) async fn seen(
    app: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<ServiceId, ApiError> {
    let id = ServiceId(path_id(raw)?);
    caller.service(&app.engine, id).await?;
    Ok(id)
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
    /// The billing system's id for the service.
    external_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List services.
#[utoipa::path(get, path = "/v1/services", tag = "services", params(ServiceQuery),
    responses((status = 200, body = List<ServiceView>), (status = 400, body = Problem)))]
async fn list_services(
    State(app): State<AppState>,
    caller: Caller,
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
        external_id: q.external_id,
        scope: caller.scope,
        ..Default::default()
    };
    let found = app.engine.list_services(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, ServiceView::from)))
}

/// A scoped key orders only for the clients it sees.
async fn client_in_scope(
    app: &AppState,
    caller: &Caller,
    body: &ServiceCreate,
) -> Result<(), ApiError> {
    if caller.scope.is_none() {
        return Ok(());
    }
    let inside = match app.engine.get_client(body.client_id).await {
        Ok(c) => caller.sees(&c),
        Err(provisio_engine::EngineError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if inside {
        Ok(())
    } else {
        Err(ApiError::bad_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "client_id",
            "exists",
            format!("no client {}", body.client_id),
        ))
    }
}

/// Order a service: it is stored `pending` on the named server, or on one chosen from the
/// product's server group. Sent with an `Idempotency-Key`, the order is placed under it: a
/// retry answers the first service, even after a crash between the order and its answer.
#[utoipa::path(post, path = "/v1/services", tag = "services", request_body = ServiceCreate,
    responses((status = 201, body = ServiceView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_service(
    State(app): State<AppState>,
    caller: Caller,
    idem: Option<axum::Extension<IdempotencyKey>>,
    Json(mut body): Json<ServiceCreate>,
) -> Result<(StatusCode, axum::Json<ServiceView>), ApiError> {
    client_in_scope(&app, &caller, &body).await?;
    body.order_key = idem.map(|k| k.order_key());
    let s = app.engine.create_service(body).await?;
    Ok((StatusCode::CREATED, axum::Json(s.into())))
}

/// One order of a batch.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceBatchItem {
    /// The order's own idempotency key (1 to 255 visible ASCII characters): the same key
    /// sent again, alone or in another batch, answers the service it placed first.
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    pub order: ServiceCreate,
}

impl super::batch::BatchItem for ServiceBatchItem {
    type Record = ServiceCreate;
    fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }
    fn into_record(mut self, order_key: Option<String>) -> ServiceCreate {
        self.order.order_key = order_key;
        self.order
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceBatch {
    /// 1 to 1000 orders; each is checked on its own.
    #[schema(value_type = Vec<ServiceBatchItem>, min_items = 1, max_items = 1000)]
    pub orders: Vec<serde_json::Value>,
}

/// Order up to 1,000 services at once (an import): each order is checked on its own, the
/// valid ones are stored together in one transaction with their create jobs, and each
/// one's result comes back at its place, the service with its job or the field errors.
/// One bad order does not stop the others.
#[utoipa::path(post, path = "/v1/services/batch", tag = "services", request_body = ServiceBatch,
    responses((status = 200, body = ServiceBatchAnswer), (status = 422, body = Problem)))]
async fn create_services(
    State(app): State<AppState>,
    caller: Caller,
    Json(body): Json<ServiceBatch>,
) -> Result<axum::Json<ServiceBatchAnswer>, ApiError> {
    let items = super::batch::parse::<ServiceBatchItem>("orders", body.orders, caller.key_id)?;
    let mut results: Vec<Option<ServiceBatchResult>> = Vec::with_capacity(items.len());
    let (mut orders, mut at) = (Vec::new(), Vec::new());
    for (i, item) in items.into_iter().enumerate() {
        let checked = match item {
            Ok(order) => client_in_scope(&app, &caller, &order).await.map(|()| order),
            Err(e) => Err(e),
        };
        match checked {
            Ok(order) => {
                at.push(i);
                orders.push(order);
                results.push(None);
            }
            Err(e) => results.push(Some(failed(i, e))),
        }
    }
    let done = app.engine.order_services(orders).await?;
    for (i, r) in at.into_iter().zip(done) {
        results[i] = Some(match r {
            Ok(o) => ServiceBatchResult {
                index: i,
                status: if o.replayed { 200 } else { 201 },
                service: Some(o.service.into()),
                job: o.job.map(Into::into),
                problem: None,
            },
            Err(e) => failed(i, e.into()),
        });
    }
    let results: Vec<ServiceBatchResult> = results.into_iter().flatten().collect();
    let (created, replayed, failed) = super::batch::counts(results.iter().map(|r| r.status));
    Ok(axum::Json(ServiceBatchAnswer {
        results,
        created,
        replayed,
        failed,
    }))
}

fn failed(index: usize, e: ApiError) -> ServiceBatchResult {
    ServiceBatchResult {
        index,
        status: e.status().as_u16(),
        service: None,
        job: None,
        problem: Some(e.into_problem()),
    }
}

/// Show the service with this external id (the billing system's own id for it).
#[utoipa::path(get, path = "/v1/services/by-external-id/{external_id}", tag = "services",
    params(("external_id" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 404, body = Problem)))]
async fn service_by_external_id(
    State(app): State<AppState>,
    caller: Caller,
    Path(external_id): Path<String>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    let filter = ServiceFilter {
        external_id: Some(external_id.clone()),
        scope: caller.scope,
        ..Default::default()
    };
    let found = app
        .engine
        .list_services(&filter, provisio_core::page::PageRequest::first(1))
        .await?;
    match found.items.into_iter().next() {
        Some(s) => Ok(axum::Json(s.into())),
        None => Err(ApiError::not_found(format!(
            "no service with external id '{external_id}'"
        ))),
    }
}

/// Show a service.
#[utoipa::path(get, path = "/v1/services/{id}", tag = "services", params(("id" = i64, Path)),
    responses((status = 200, body = ServiceView), (status = 404, body = Problem)))]
async fn get_service(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    let s = app
        .engine
        .get_service(seen(&app, &caller, &id).await?)
        .await?;
    Ok(axum::Json(s.into()))
}

/// Change a service's invoices or settings (and, while pending, its username or password).
#[utoipa::path(patch, path = "/v1/services/{id}", tag = "services", params(("id" = i64, Path)), request_body = ServicePatch,
    responses((status = 200, body = ServiceView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_service(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<ServicePatch>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    let s = app.engine.update_service(id, body).await?;
    Ok(axum::Json(s.into()))
}

/// Remove a pending, failed or terminated service from the records.
#[utoipa::path(delete, path = "/v1/services/{id}", tag = "services", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_service(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    app.engine.delete_service(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Show a service's password. The only place a stored secret is ever shown.
#[utoipa::path(get, path = "/v1/services/{id}/password", tag = "services", params(("id" = i64, Path)),
    responses((status = 200, body = PasswordView), (status = 404, body = Problem)))]
async fn service_password(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<PasswordView>, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    let pw = app.engine.reveal_password(id).await?;
    tracing::info!(service = %id, key_id = caller.key_id, key = %caller.key_name, "service password revealed");
    Ok(axum::Json(PasswordView {
        password: pw.expose_secret().to_string(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait up to this many seconds (at most 300) for the outcome.
    #[param(maximum = 300)]
    wait: Option<u64>,
}

/// The seconds a caller asked to wait, refused past the bound every wait shares.
pub(crate) fn checked_wait(q: &WaitQuery) -> Result<u64, ApiError> {
    match q.wait {
        Some(w) if w > 300 => Err(ApiError::bad_field(
            StatusCode::BAD_REQUEST,
            "wait",
            "range",
            "must be at most 300 seconds",
        )),
        w => Ok(w.unwrap_or(0)),
    }
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
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    OptionalJson(body): OptionalJson<provisio_engine::ActionInput>,
) -> Result<(StatusCode, axum::Json<JobView>), ApiError> {
    let id = seen(&app, &caller, &id).await?;
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
    caller.may_run(if accept { "accept" } else { action.as_str() })?;
    checked_wait(&q)?;
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
#[utoipa::path(get, path = "/v1/services/{id}/jobs", tag = "services", params(("id" = i64, Path), super::PageQuery),
    responses((status = 200, body = List<JobView>), (status = 404, body = Problem)))]
async fn service_jobs(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<super::PageQuery>,
) -> Result<axum::Json<List<JobView>>, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    app.engine.get_service(id).await?;
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let filter = provisio_store::JobFilter {
        service_id: Some(id),
        ..Default::default()
    };
    let found = app.engine.list_jobs(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, JobView::from)))
}

/// The custom actions that can run on a service (its server's module offers them), so a
/// billing system can show one button each.
#[utoipa::path(get, path = "/v1/services/{id}/actions", tag = "services", params(("id" = i64, Path)),
    responses((status = 200, body = ServiceActions), (status = 404, body = Problem)))]
async fn service_actions(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ServiceActions>, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    let custom = app.engine.service_custom_actions(id).await?;
    Ok(axum::Json(ServiceActions { custom }))
}
