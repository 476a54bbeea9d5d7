//! `/v1/collect`, `/v1/groups/{invoice}`, `/v1/cleanup` and `/v1/services/{id}/login-url`:
//! many services at once, and single sign-on.

use axum::extract::{Path, State};
use axum::http::Method;
use provisio_core::ServiceId;
use provisio_engine::groups::{
    CleanupRequest, CollectQuery, Collected, GroupOp, GroupRequest, GroupResult, MemberResult,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{client_rule, rule, Access, Caller, READ_BILLING, WRITE_BILLING, WRITE_SETUP};
use crate::error::{ApiError, Problem};
use crate::extract::{Json, OptionalJson, Query};
use crate::views::{GroupMembers, List, LoginUrl};
use crate::AppState;
use provisio_api::requests::{LoginUrlRequest, MembersQuery};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(collect))
        .routes(routes!(group_members))
        .routes(routes!(group_operation))
        .routes(routes!(cleanup))
        .routes(routes!(login_url))
}

pub(crate) const ACCESS: &[Access] = &[
    // Collect only reads, though its filters come in a body.
    rule(Method::POST, "/v1/collect", READ_BILLING),
    rule(Method::GET, "/v1/groups/{invoice}", READ_BILLING),
    rule(
        Method::POST,
        "/v1/groups/{invoice}/{operation}",
        WRITE_BILLING,
    ),
    // The clean-up policy covers the whole instance.
    rule(Method::POST, "/v1/cleanup", WRITE_SETUP),
    client_rule(Method::POST, "/v1/services/{id}/login-url", WRITE_BILLING),
];

/// Chosen fields of the services the filters select (dotted: `service.parent_invoice`, `product.settings.quota`, …), in pages by service id. One request reads at most ten services per `limit`, so when few services match, a page may be short or empty and still carry `next_cursor`: that is normal, keep following it until it is `null`.
#[utoipa::path(post, path = "/v1/collect", tag = "groups", params(super::PageQuery), request_body = CollectQuery,
    responses((status = 200, body = List<Collected>), (status = 422, body = Problem)))]
async fn collect(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<super::PageQuery>,
    Json(mut body): Json<CollectQuery>,
) -> Result<axum::Json<List<Collected>>, ApiError> {
    body.scope = caller.scope;
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let found = app.engine.collect(&body, page).await?;
    Ok(axum::Json(List::from_page(found, |c| c)))
}

/// The live services of an invoice group (`invoice` or `parent_invoice` equal to it), masters first, then children, a page at a time.
#[utoipa::path(get, path = "/v1/groups/{invoice}", tag = "groups", params(("invoice" = String, Path), MembersQuery),
    responses((status = 200, body = GroupMembers), (status = 404, body = Problem)))]
async fn group_members(
    State(app): State<AppState>,
    caller: Caller,
    Path(invoice): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<axum::Json<GroupMembers>, ApiError> {
    let dry = GroupRequest {
        dry_run: true,
        children_only: q.children_only,
        reason: None,
        scope: caller.scope,
        limit: q.limit,
        after: q.after,
        ..Default::default()
    };
    // A dry-run suspend lists every member with its role and status and changes nothing.
    let r = app
        .engine
        .group_operation(&invoice, GroupOp::Suspend, dry)
        .await
        .map_err(|e| ApiError::from(e).in_query())?;
    Ok(axum::Json(GroupMembers {
        invoice,
        next: r.next,
        members: r
            .members
            .into_iter()
            .map(|mut m| {
                m.action = "none".into();
                m.outcome = "listed".into();
                m.detail = None;
                m
            })
            .collect(),
    }))
}

/// Run `edit`, `suspend`, `activate`, `delete` or `transfer` on the members of an invoice group, a page at a time (`limit`, at most 10,000; 1,000 by default): when the response has `next`, send the same request with `after` set to it for the following members. `dry_run` and `wait` apply to the page. Members already in the wanted state are skipped, so running it again retries only the rest.
#[utoipa::path(post, path = "/v1/groups/{invoice}/{operation}", tag = "groups",
    params(("invoice" = String, Path), ("operation" = String, Path, description = "edit, suspend, activate, delete or transfer")),
    request_body(content = Option<GroupRequest>),
    responses((status = 200, body = GroupResult), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn group_operation(
    State(app): State<AppState>,
    caller: Caller,
    Path((invoice, operation)): Path<(String, String)>,
    OptionalJson(mut body): OptionalJson<GroupRequest>,
) -> Result<axum::Json<GroupResult>, ApiError> {
    body.scope = caller.scope;
    let op = GroupOp::parse(&operation).ok_or_else(|| {
        ApiError::not_found(format!(
            "group operation '{operation}' not found (edit, suspend, activate, delete, transfer)"
        ))
    })?;
    let r = app.engine.group_operation(&invoice, op, body).await?;
    Ok(axum::Json(r))
}

/// Terminate services suspended longer than the clean-up threshold (or list them with `dry_run`).
#[utoipa::path(post, path = "/v1/cleanup", tag = "groups", request_body(content = Option<CleanupRequest>),
    responses((status = 200, body = Vec<MemberResult>), (status = 422, body = Problem)))]
async fn cleanup(
    State(app): State<AppState>,
    OptionalJson(body): OptionalJson<CleanupRequest>,
) -> Result<axum::Json<Vec<MemberResult>>, ApiError> {
    let after = match (&body.after, app.engine.options().cleanup_after) {
        (Some(a), _) => provisio_engine::groups::parse_since(a).map_err(|e| {
            ApiError::bad_field(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "after",
                "duration",
                e,
            )
        })?,
        (None, Some(d)) => d,
        (None, None) => {
            return Err(ApiError::bad_field(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "after",
                "required",
                "is required: no cleanup.terminate_suspended_after is configured",
            ))
        }
    };
    Ok(axum::Json(app.engine.cleanup(after, body.dry_run).await?))
}

/// A short-lived single sign-on link into a service, from modules with the `login_url` capability.
#[utoipa::path(post, path = "/v1/services/{id}/login-url", tag = "services", params(("id" = i64, Path)),
    request_body(content = Option<LoginUrlRequest>),
    responses((status = 200, body = LoginUrl), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn login_url(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<LoginUrlRequest>,
) -> Result<axum::Json<LoginUrl>, ApiError> {
    let id = super::services::seen(&app, &caller, &id).await?;
    caller.may_run("login_url")?;
    let from = body.from_service.map(ServiceId);
    if let Some(f) = from {
        caller.service(&app.engine, f).await?;
    }
    let url = app.engine.login_url(id, from).await?;
    Ok(axum::Json(LoginUrl { url }))
}
