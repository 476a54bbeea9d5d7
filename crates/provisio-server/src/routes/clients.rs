//! `/v1/clients`: the billing system's customers.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use provisio_core::client::ClientStatus;
use provisio_core::ClientId;
use provisio_engine::input::{ClientCreate, ClientPatch};
use provisio_store::ClientFilter;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json, Query};
use crate::views::{ClientView, List};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clients, create_client))
        .routes(routes!(get_client, update_client, delete_client))
        .routes(routes!(archive_client))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClientQuery {
    status: Option<ClientStatus>,
    email: Option<String>,
    /// 1 to 1000; 50 when absent.
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List clients.
#[utoipa::path(get, path = "/v1/clients", tag = "clients", params(ClientQuery),
    responses((status = 200, body = List<ClientView>), (status = 400, body = Problem)))]
async fn list_clients(
    State(app): State<AppState>,
    Query(q): Query<ClientQuery>,
) -> Result<axum::Json<List<ClientView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let filter = ClientFilter {
        status: q.status,
        email: q.email,
    };
    let found = app.engine.list_clients(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, ClientView::from)))
}

/// Create a client.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", request_body = ClientCreate,
    responses((status = 201, body = ClientView), (status = 422, body = Problem)))]
async fn create_client(
    State(app): State<AppState>,
    Json(body): Json<ClientCreate>,
) -> Result<(StatusCode, axum::Json<ClientView>), ApiError> {
    let c = app.engine.create_client(body).await?;
    Ok((StatusCode::CREATED, axum::Json(c.into())))
}

/// Show a client.
#[utoipa::path(get, path = "/v1/clients/{id}", tag = "clients", params(("id" = i64, Path)),
    responses((status = 200, body = ClientView), (status = 404, body = Problem)))]
async fn get_client(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let c = app.engine.get_client(ClientId(path_id(&id)?)).await?;
    Ok(axum::Json(c.into()))
}

/// Change a client's name, email, status or custom fields.
#[utoipa::path(patch, path = "/v1/clients/{id}", tag = "clients", params(("id" = i64, Path)), request_body = ClientPatch,
    responses((status = 200, body = ClientView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_client(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<ClientPatch>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let c = app
        .engine
        .update_client(ClientId(path_id(&id)?), body)
        .await?;
    Ok(axum::Json(c.into()))
}

/// Delete a client that has no services.
#[utoipa::path(delete, path = "/v1/clients/{id}", tag = "clients", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_client(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.engine.delete_client(ClientId(path_id(&id)?)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Archive a client.
#[utoipa::path(post, path = "/v1/clients/{id}/archive", tag = "clients", params(("id" = i64, Path)),
    responses((status = 200, body = ClientView), (status = 404, body = Problem)))]
async fn archive_client(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let c = app.engine.archive_client(ClientId(path_id(&id)?)).await?;
    Ok(axum::Json(c.into()))
}
