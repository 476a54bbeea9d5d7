//! `/v1/resellers`: companies that sell on to their own clients; a reseller key sees only
//! the clients that belong to its reseller.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use provisio_api::requests::ResellerCreate;
use provisio_core::ResellerId;
use provisio_engine::keys::ResellerInput;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{rule, Access, READ_SETUP, WRITE_SETUP};
use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json, Query};
use crate::views::{List, ResellerView};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_resellers, create_reseller))
        .routes(routes!(get_reseller, update_reseller))
}

pub(crate) const ACCESS: &[Access] = &[
    rule(Method::GET, "/v1/resellers", READ_SETUP),
    rule(Method::POST, "/v1/resellers", WRITE_SETUP),
    rule(Method::GET, "/v1/resellers/{id}", READ_SETUP),
    rule(Method::PATCH, "/v1/resellers/{id}", WRITE_SETUP),
];

/// List resellers.
#[utoipa::path(get, path = "/v1/resellers", tag = "resellers", params(super::PageQuery),
    responses((status = 200, body = List<ResellerView>), (status = 400, body = Problem)))]
async fn list_resellers(
    State(app): State<AppState>,
    Query(q): Query<super::PageQuery>,
) -> Result<axum::Json<List<ResellerView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let found = app.engine.list_resellers(page).await?;
    Ok(axum::Json(List::from_page(found, ResellerView::from)))
}

/// Create a reseller (`active` when no status is given).
#[utoipa::path(post, path = "/v1/resellers", tag = "resellers", request_body = ResellerCreate,
    responses((status = 201, body = ResellerView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_reseller(
    State(app): State<AppState>,
    Json(body): Json<ResellerCreate>,
) -> Result<(StatusCode, axum::Json<ResellerView>), ApiError> {
    let input = ResellerInput {
        name: Some(body.name),
        status: body.status,
    };
    let r = app.engine.create_reseller(input).await?;
    Ok((StatusCode::CREATED, axum::Json(r.into())))
}

/// Show a reseller.
#[utoipa::path(get, path = "/v1/resellers/{id}", tag = "resellers", params(("id" = i64, Path)),
    responses((status = 200, body = ResellerView), (status = 404, body = Problem)))]
async fn get_reseller(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ResellerView>, ApiError> {
    let r = app.engine.get_reseller(ResellerId(path_id(&id)?)).await?;
    Ok(axum::Json(r.into()))
}

/// Rename a reseller or change its status; a suspended reseller's keys are refused.
#[utoipa::path(patch, path = "/v1/resellers/{id}", tag = "resellers", params(("id" = i64, Path)),
    request_body = ResellerInput,
    responses((status = 200, body = ResellerView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_reseller(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<ResellerInput>,
) -> Result<axum::Json<ResellerView>, ApiError> {
    let r = app
        .engine
        .update_reseller(ResellerId(path_id(&id)?), body)
        .await?;
    Ok(axum::Json(r.into()))
}
