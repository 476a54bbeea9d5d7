//! The `/v1` routes, one file per resource, each handler documented for the OpenAPI document.

pub mod audits;
mod batch;
pub mod clients;
pub mod events;
pub mod groups;
pub mod handlers;
pub mod jobs;
pub mod keys;
pub mod metrics;
pub mod modules;
pub mod products;
pub mod resellers;
pub mod rules;
pub mod servers;
pub mod services;
pub mod usage;

use axum::http::StatusCode;
use provisio_core::page::PageRequest;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::AppState;

pub fn v1() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(clients::router())
        .merge(servers::router())
        .merge(products::router())
        .merge(services::router())
        .merge(modules::router())
        .merge(jobs::router())
        .merge(events::router())
        .merge(handlers::router())
        .merge(rules::router())
        .merge(groups::router())
        .merge(usage::router())
        .merge(audits::router())
        .merge(keys::router())
        .merge(resellers::router())
}

/// Every operation's access rule, from the tables beside the routes.
pub fn access_rules() -> impl Iterator<Item = &'static crate::access::Access> {
    [
        clients::ACCESS,
        servers::ACCESS,
        products::ACCESS,
        services::ACCESS,
        modules::ACCESS,
        jobs::ACCESS,
        events::ACCESS,
        handlers::ACCESS,
        rules::ACCESS,
        groups::ACCESS,
        usage::ACCESS,
        audits::ACCESS,
        keys::ACCESS,
        metrics::ACCESS,
        resellers::ACCESS,
    ]
    .into_iter()
    .flatten()
}

/// The paging parameters of a listing with no filters of its own.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 1000; 50 when absent.
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Turns `limit` and `cursor` query parameters into a page request.
pub(crate) fn page(limit: Option<u32>, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(PageRequest::DEFAULT_LIMIT);
    if limit == 0 || limit > PageRequest::MAX_LIMIT {
        return Err(ApiError::bad_field(
            StatusCode::BAD_REQUEST,
            "limit",
            "range",
            format!("must be between 1 and {}", PageRequest::MAX_LIMIT),
        ));
    }
    let after = match cursor {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_field(
                StatusCode::BAD_REQUEST,
                "cursor",
                "type",
                "is not a cursor this server returned",
            )
        })?),
    };
    Ok(PageRequest { after, limit })
}
