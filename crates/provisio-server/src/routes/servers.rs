//! `/v1/servers`: remote system instances, addressed by id or name.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use provisio_engine::input::{RecordRef, ServerCreate, ServerPatch};
use provisio_store::ServerFilter;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{rule, Access, READ_SETUP, WRITE_SETUP};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Query};
use crate::views::{ConnectionTestView, List, ServerView};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_servers, create_server))
        .routes(routes!(get_server, update_server, delete_server))
        .routes(routes!(test_server))
}

pub(crate) const ACCESS: &[Access] = &[
    rule(axum::http::Method::GET, "/v1/servers", READ_SETUP),
    rule(axum::http::Method::POST, "/v1/servers", WRITE_SETUP),
    rule(axum::http::Method::GET, "/v1/servers/{server}", READ_SETUP),
    rule(
        axum::http::Method::PATCH,
        "/v1/servers/{server}",
        WRITE_SETUP,
    ),
    rule(
        axum::http::Method::DELETE,
        "/v1/servers/{server}",
        WRITE_SETUP,
    ),
    rule(
        axum::http::Method::POST,
        "/v1/servers/{server}/test",
        WRITE_SETUP,
    ),
];

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ServerQuery {
    module: Option<String>,
    group: Option<String>,
    enabled: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List servers.
#[utoipa::path(get, path = "/v1/servers", tag = "servers", params(ServerQuery),
    responses((status = 200, body = List<ServerView>), (status = 400, body = Problem)))]
async fn list_servers(
    State(app): State<AppState>,
    Query(q): Query<ServerQuery>,
) -> Result<axum::Json<List<ServerView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let filter = ServerFilter {
        module: q.module,
        group: q.group,
        enabled: q.enabled,
    };
    let found = app.engine.list_servers(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, ServerView::from)))
}

/// Create a server; its settings are validated against the module's server schema.
#[utoipa::path(post, path = "/v1/servers", tag = "servers", request_body = ServerCreate,
    responses((status = 201, body = ServerView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_server(
    State(app): State<AppState>,
    Json(body): Json<ServerCreate>,
) -> Result<(StatusCode, axum::Json<ServerView>), ApiError> {
    let s = app.engine.create_server(body).await?;
    Ok((StatusCode::CREATED, axum::Json(s.into())))
}

/// Show a server (by id or name).
#[utoipa::path(get, path = "/v1/servers/{server}", tag = "servers", params(("server" = String, Path, description = "id or name")),
    responses((status = 200, body = ServerView), (status = 404, body = Problem)))]
async fn get_server(
    State(app): State<AppState>,
    Path(server): Path<String>,
) -> Result<axum::Json<ServerView>, ApiError> {
    let s = app
        .engine
        .find_server(&RecordRef::from_segment(&server))
        .await?;
    Ok(axum::Json(s.into()))
}

/// Change a server; settings are merged (`null` removes a key) and validated again.
#[utoipa::path(patch, path = "/v1/servers/{server}", tag = "servers", params(("server" = String, Path, description = "id or name")), request_body = ServerPatch,
    responses((status = 200, body = ServerView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_server(
    State(app): State<AppState>,
    Path(server): Path<String>,
    Json(body): Json<ServerPatch>,
) -> Result<axum::Json<ServerView>, ApiError> {
    let s = app
        .engine
        .update_server(&RecordRef::from_segment(&server), body)
        .await?;
    Ok(axum::Json(s.into()))
}

/// Delete a server that has no services.
#[utoipa::path(delete, path = "/v1/servers/{server}", tag = "servers", params(("server" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_server(
    State(app): State<AppState>,
    Path(server): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.engine
        .delete_server(&RecordRef::from_segment(&server))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Check that the server's settings reach a working remote (the module's `test_connection`).
#[utoipa::path(post, path = "/v1/servers/{server}/test", tag = "servers", params(("server" = String, Path, description = "id or name")),
    responses((status = 200, body = ConnectionTestView), (status = 404, body = Problem)))]
async fn test_server(
    State(app): State<AppState>,
    Path(server): Path<String>,
) -> Result<axum::Json<ConnectionTestView>, ApiError> {
    let r = app
        .engine
        .test_connection(&RecordRef::from_segment(&server))
        .await?;
    Ok(axum::Json(ConnectionTestView {
        ok: r.is_ok(),
        error: r.err(),
    }))
}
