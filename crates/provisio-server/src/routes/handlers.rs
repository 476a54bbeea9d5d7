//! `/v1/handlers` and `/v1/deliveries`: gates and notify handlers, their signing secrets
//! (shown once), and the delivery log with manual redelivery.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use provisio_core::handler::DeliveryState;
use provisio_core::DeliveryId;
use provisio_engine::input::RecordRef;
use provisio_engine::{HandlerCreate, HandlerPatch};
use provisio_store::DeliveryFilter;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{rule, Access, READ_SETUP, WRITE_SETUP};
use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json, Query};
use crate::views::{handler_view, DeliveryDetailView, DeliveryView, HandlerView, List};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_handlers, create_handler))
        .routes(routes!(get_handler, update_handler, delete_handler))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(redeliver))
}

pub(crate) const ACCESS: &[Access] = &[
    rule(axum::http::Method::GET, "/v1/handlers", READ_SETUP),
    rule(axum::http::Method::POST, "/v1/handlers", WRITE_SETUP),
    rule(
        axum::http::Method::GET,
        "/v1/handlers/{handler}",
        READ_SETUP,
    ),
    rule(
        axum::http::Method::PATCH,
        "/v1/handlers/{handler}",
        WRITE_SETUP,
    ),
    rule(
        axum::http::Method::DELETE,
        "/v1/handlers/{handler}",
        WRITE_SETUP,
    ),
    rule(
        axum::http::Method::POST,
        "/v1/handlers/{handler}/rotate-secret",
        WRITE_SETUP,
    ),
    rule(axum::http::Method::GET, "/v1/deliveries", READ_SETUP),
    rule(axum::http::Method::GET, "/v1/deliveries/{id}", READ_SETUP),
    rule(
        axum::http::Method::POST,
        "/v1/deliveries/{id}/redeliver",
        WRITE_SETUP,
    ),
];

/// List handlers, gates by their order first.
#[utoipa::path(get, path = "/v1/handlers", tag = "handlers",
    responses((status = 200, body = List<HandlerView>)))]
async fn list_handlers(
    State(app): State<AppState>,
) -> Result<axum::Json<List<HandlerView>>, ApiError> {
    let all = app.engine.list_handlers().await?;
    Ok(axum::Json(List {
        items: all.into_iter().map(Into::into).collect(),
        next_cursor: None,
    }))
}

/// Create a handler. An `http` handler's signing secret is generated unless given, and shown in this answer only.
#[utoipa::path(post, path = "/v1/handlers", tag = "handlers", request_body = HandlerCreate,
    responses((status = 201, body = HandlerView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_handler(
    State(app): State<AppState>,
    Json(body): Json<HandlerCreate>,
) -> Result<(StatusCode, axum::Json<HandlerView>), ApiError> {
    let h = app.engine.create_handler(body).await?;
    Ok((StatusCode::CREATED, axum::Json(handler_view(h))))
}

/// Show a handler (by id or name).
#[utoipa::path(get, path = "/v1/handlers/{handler}", tag = "handlers", params(("handler" = String, Path, description = "id or name")),
    responses((status = 200, body = HandlerView), (status = 404, body = Problem)))]
async fn get_handler(
    State(app): State<AppState>,
    Path(handler): Path<String>,
) -> Result<axum::Json<HandlerView>, ApiError> {
    let h = app
        .engine
        .find_handler(&RecordRef::from_segment(&handler))
        .await?;
    Ok(axum::Json(h.into()))
}

/// Change a handler; `status: enabled` re-enables one the engine disabled and clears its failure record.
#[utoipa::path(patch, path = "/v1/handlers/{handler}", tag = "handlers", params(("handler" = String, Path, description = "id or name")), request_body = HandlerPatch,
    responses((status = 200, body = HandlerView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_handler(
    State(app): State<AppState>,
    Path(handler): Path<String>,
    Json(body): Json<HandlerPatch>,
) -> Result<axum::Json<HandlerView>, ApiError> {
    let h = app
        .engine
        .update_handler(&RecordRef::from_segment(&handler), body)
        .await?;
    Ok(axum::Json(h.into()))
}

/// Delete a handler and its deliveries.
#[utoipa::path(delete, path = "/v1/handlers/{handler}", tag = "handlers", params(("handler" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_handler(
    State(app): State<AppState>,
    Path(handler): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.engine
        .delete_handler(&RecordRef::from_segment(&handler))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Give an `http` handler a new signing secret, shown in this answer only; the old one keeps signing alongside it for `hooks.rotation_overlap`.
#[utoipa::path(post, path = "/v1/handlers/{handler}/rotate-secret", tag = "handlers", params(("handler" = String, Path, description = "id or name")),
    responses((status = 200, body = HandlerView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn rotate_secret(
    State(app): State<AppState>,
    Path(handler): Path<String>,
) -> Result<axum::Json<HandlerView>, ApiError> {
    let h = app
        .engine
        .rotate_handler_secret(&RecordRef::from_segment(&handler))
        .await?;
    Ok(axum::Json(handler_view(h)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only deliveries to this handler (id or name).
    handler: Option<String>,
    state: Option<DeliveryState>,
    event_id: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List deliveries of events to notify handlers, oldest first.
#[utoipa::path(get, path = "/v1/deliveries", tag = "handlers", params(DeliveryQuery),
    responses((status = 200, body = List<DeliveryView>), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn list_deliveries(
    State(app): State<AppState>,
    Query(q): Query<DeliveryQuery>,
) -> Result<axum::Json<List<DeliveryView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let handler_id = match &q.handler {
        Some(h) => Some(
            app.engine
                .find_handler(&RecordRef::from_segment(h))
                .await?
                .id,
        ),
        None => None,
    };
    let filter = DeliveryFilter {
        handler_id,
        state: q.state,
        event_id: q.event_id.map(provisio_core::event::EventId),
    };
    let found = app.engine.list_deliveries(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, DeliveryView::from)))
}

/// Show a delivery with its attempt log.
#[utoipa::path(get, path = "/v1/deliveries/{id}", tag = "handlers", params(("id" = i64, Path)),
    responses((status = 200, body = DeliveryDetailView), (status = 404, body = Problem)))]
async fn get_delivery(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<DeliveryDetailView>, ApiError> {
    let d = app.engine.get_delivery(DeliveryId(path_id(&id)?)).await?;
    Ok(axum::Json(DeliveryDetailView {
        delivery: d.delivery.into(),
        log: d.attempts,
    }))
}

/// Send a succeeded or failed delivery again, now.
#[utoipa::path(post, path = "/v1/deliveries/{id}/redeliver", tag = "handlers", params(("id" = i64, Path)),
    responses((status = 202, body = DeliveryView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn redeliver(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<DeliveryView>), ApiError> {
    let d = app.engine.redeliver(DeliveryId(path_id(&id)?)).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(d.into())))
}
