//! `/v1/keys`: API keys, their roles and scopes; only an admin key reaches them. A new key
//! is shown once, in the answer that makes it.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use provisio_api::views::{KeyView, NewKeyView};
use provisio_core::access::Scope;
use provisio_engine::keys::KeyCreate;
use secrecy::ExposeSecret;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{rule, Access, Caller, Need};
use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

pub(crate) const ACCESS: &[Access] = &[
    rule(Method::GET, "/v1/keys", Need::Keys),
    rule(Method::POST, "/v1/keys", Need::Keys),
    rule(Method::DELETE, "/v1/keys/{id}", Need::Keys),
];

fn key_view(k: provisio_store::ApiKey) -> KeyView {
    let (client_id, reseller_id) = match k.scope {
        Some(Scope::Client(c)) => (Some(c.0), None),
        Some(Scope::Reseller(r)) => (None, Some(r.0)),
        None => (None, None),
    };
    KeyView {
        id: k.id,
        name: k.name,
        prefix: k.prefix,
        role: k.role,
        client_id,
        reseller_id,
        actions: k.actions,
        reveal_secrets: k.reveal_secrets,
        created_at: k.created_at,
        last_used_at: k.last_used_at,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
    }
}

/// List keys, revoked ones included.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = Vec<KeyView>), (status = 403, body = Problem)))]
async fn list_keys(State(app): State<AppState>) -> Result<axum::Json<Vec<KeyView>>, ApiError> {
    let keys = app.engine.list_api_keys().await?;
    Ok(axum::Json(keys.into_iter().map(key_view).collect()))
}

/// Make a key with a role (and, for `client` and `reseller`, its scope). The answer holds
/// the key; it is stored only as a hash and cannot be shown again.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = KeyCreate,
    responses((status = 201, body = NewKeyView), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_key(
    State(app): State<AppState>,
    caller: Caller,
    Json(body): Json<KeyCreate>,
) -> Result<(StatusCode, axum::Json<NewKeyView>), ApiError> {
    let made = app.engine.create_api_key(&body).await?;
    tracing::info!(key = %made.record.name, role = made.record.role.as_str(), by = %caller.key_name, "API key created");
    Ok((
        StatusCode::CREATED,
        axum::Json(NewKeyView {
            key: made.key.expose_secret().to_string(),
            record: key_view(made.record),
        }),
    ))
}

/// Revoke a key: its next request is refused. The record stays, since jobs and events name
/// the key that caused them.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = i64, Path)),
    responses((status = 200, body = KeyView), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_key(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, ApiError> {
    let k = app.engine.revoke_api_key(path_id(&id)?).await?;
    tracing::info!(key = %k.name, by = %caller.key_name, "API key revoked");
    Ok(axum::Json(key_view(k)))
}
