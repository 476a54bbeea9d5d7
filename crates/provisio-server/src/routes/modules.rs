//! `/v1/modules`: the modules this instance knows, with capabilities and settings schemas.

use axum::extract::{Path, State};
use provisio_core::module::ModuleInfo;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{rule, Access, READ_SETUP};
use crate::error::{ApiError, Problem};
use crate::views::ModuleList;
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_modules))
        .routes(routes!(get_module))
}

pub(crate) const ACCESS: &[Access] = &[
    rule(axum::http::Method::GET, "/v1/modules", READ_SETUP),
    rule(axum::http::Method::GET, "/v1/modules/{name}", READ_SETUP),
];

/// List modules.
#[utoipa::path(get, path = "/v1/modules", tag = "modules", responses((status = 200, body = ModuleList)))]
async fn list_modules(State(app): State<AppState>) -> axum::Json<ModuleList> {
    axum::Json(ModuleList {
        items: app.engine.modules().infos().cloned().collect(),
    })
}

/// Show a module.
#[utoipa::path(get, path = "/v1/modules/{name}", tag = "modules", params(("name" = String, Path)),
    responses((status = 200, body = ModuleInfo), (status = 404, body = Problem)))]
async fn get_module(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<axum::Json<ModuleInfo>, ApiError> {
    app.engine
        .modules()
        .info(&name)
        .cloned()
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("module '{name}' not found")))
}
