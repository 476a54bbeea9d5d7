//! `/v1/products`: what is sold, addressed by id or name; a product may extend another.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use provisio_engine::input::{ProductCreate, ProductPatch, RecordRef};
use provisio_store::ProductFilter;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{rule, Access, READ_SETUP, WRITE_SETUP};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, Query};
use crate::views::{product_view, List, ProductView};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product, delete_product))
}

pub(crate) const ACCESS: &[Access] = &[
    rule(axum::http::Method::GET, "/v1/products", READ_SETUP),
    rule(axum::http::Method::POST, "/v1/products", WRITE_SETUP),
    rule(
        axum::http::Method::GET,
        "/v1/products/{product}",
        READ_SETUP,
    ),
    rule(
        axum::http::Method::PATCH,
        "/v1/products/{product}",
        WRITE_SETUP,
    ),
    rule(
        axum::http::Method::DELETE,
        "/v1/products/{product}",
        WRITE_SETUP,
    ),
];

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductQuery {
    module: Option<String>,
    /// Only products that extend this one (by name).
    extends: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List products.
#[utoipa::path(get, path = "/v1/products", tag = "products", params(ProductQuery),
    responses((status = 200, body = List<ProductView>), (status = 400, body = Problem), (status = 404, body = Problem)))]
async fn list_products(
    State(app): State<AppState>,
    Query(q): Query<ProductQuery>,
) -> Result<axum::Json<List<ProductView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let extends = match &q.extends {
        Some(name) => Some(
            app.engine
                .find_product(&RecordRef::Name(name.clone()))
                .await?
                .id,
        ),
        None => None,
    };
    let filter = ProductFilter {
        module: q.module,
        extends,
    };
    let found = app.engine.list_products(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, product_view)))
}

/// Create a product; its own settings, and the settings it inherits merged with them, are validated against the module's product schema.
#[utoipa::path(post, path = "/v1/products", tag = "products", request_body = ProductCreate,
    responses((status = 201, body = ProductView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_product(
    State(app): State<AppState>,
    Json(body): Json<ProductCreate>,
) -> Result<(StatusCode, axum::Json<ProductView>), ApiError> {
    let s = app.engine.create_product(body).await?;
    Ok((StatusCode::CREATED, axum::Json(product_view(s))))
}

/// Show a product (by id or name).
#[utoipa::path(get, path = "/v1/products/{product}", tag = "products", params(("product" = String, Path, description = "id or name")),
    responses((status = 200, body = ProductView), (status = 404, body = Problem)))]
async fn get_product(
    State(app): State<AppState>,
    Path(product): Path<String>,
) -> Result<axum::Json<ProductView>, ApiError> {
    let s = app
        .engine
        .get_product(&RecordRef::from_segment(&product))
        .await?;
    Ok(axum::Json(product_view(s)))
}

/// Change a product; settings are merged (`null` removes an override) and validated again, with every product that extends it.
#[utoipa::path(patch, path = "/v1/products/{product}", tag = "products", params(("product" = String, Path, description = "id or name")), request_body = ProductPatch,
    responses((status = 200, body = ProductView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_product(
    State(app): State<AppState>,
    Path(product): Path<String>,
    Json(body): Json<ProductPatch>,
) -> Result<axum::Json<ProductView>, ApiError> {
    let s = app
        .engine
        .update_product(&RecordRef::from_segment(&product), body)
        .await?;
    Ok(axum::Json(product_view(s)))
}

/// Delete a product that has no services and that no product extends.
#[utoipa::path(delete, path = "/v1/products/{product}", tag = "products", params(("product" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_product(
    State(app): State<AppState>,
    Path(product): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.engine
        .delete_product(&RecordRef::from_segment(&product))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
