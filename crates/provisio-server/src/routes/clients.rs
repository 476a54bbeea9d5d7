//! `/v1/clients`: the billing system's customers.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use provisio_core::client::ClientStatus;
use provisio_core::ClientId;
use provisio_engine::input::{ClientCreate, ClientPatch, TransactionCreate};
use provisio_store::ClientFilter;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::access::{client_rule, rule, Access, Caller, READ_BILLING, WRITE_BILLING};
use crate::error::{ApiError, Problem};
use crate::extract::{path_id, Json, Query};
use crate::idempotency::IdempotencyKey;
use crate::views::{ClientBatchAnswer, ClientBatchResult, ClientView, List, TransactionView};
use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clients, create_client))
        .routes(routes!(create_clients))
        .routes(routes!(client_by_external_id))
        .routes(routes!(get_client, update_client, delete_client))
        .routes(routes!(archive_client))
        .routes(routes!(list_transactions, create_transaction))
}

pub(crate) const ACCESS: &[Access] = &[
    client_rule(Method::GET, "/v1/clients", READ_BILLING),
    rule(Method::POST, "/v1/clients", WRITE_BILLING),
    rule(Method::POST, "/v1/clients/batch", WRITE_BILLING),
    client_rule(
        Method::GET,
        "/v1/clients/by-external-id/{external_id}",
        READ_BILLING,
    ),
    client_rule(Method::GET, "/v1/clients/{id}", READ_BILLING),
    rule(Method::PATCH, "/v1/clients/{id}", WRITE_BILLING),
    rule(Method::DELETE, "/v1/clients/{id}", WRITE_BILLING),
    rule(Method::POST, "/v1/clients/{id}/archive", WRITE_BILLING),
    client_rule(Method::GET, "/v1/clients/{id}/transactions", READ_BILLING),
    rule(Method::POST, "/v1/clients/{id}/transactions", WRITE_BILLING),
];

/// A client id from the path, if the caller may see that client.
async fn seen(app: &AppState, caller: &Caller, raw: &str) -> Result<ClientId, ApiError> {
    let id = ClientId(path_id(raw)?);
    if caller.scope.is_some() {
        caller.client(&app.engine, id).await?;
    }
    Ok(id)
}

/// A reseller key creates and keeps clients inside its own reseller.
fn reseller_field(caller: &Caller, given: &mut Option<i64>, create: bool) -> Result<(), ApiError> {
    let Some(provisio_core::access::Scope::Reseller(r)) = caller.scope else {
        return Ok(());
    };
    match *given {
        Some(x) if x != r.0 => Err(ApiError::bad_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reseller_id",
            "scope",
            "a reseller key keeps its clients in its own reseller",
        )),
        _ => {
            if create {
                *given = Some(r.0);
            }
            Ok(())
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClientQuery {
    status: Option<ClientStatus>,
    email: Option<String>,
    /// The billing system's id for the client.
    external_id: Option<String>,
    /// 1 to 1000; 50 when absent.
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List clients.
#[utoipa::path(get, path = "/v1/clients", tag = "clients", params(ClientQuery),
    responses((status = 200, body = List<ClientView>), (status = 400, body = Problem)))]
async fn list_clients(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<ClientQuery>,
) -> Result<axum::Json<List<ClientView>>, ApiError> {
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let filter = ClientFilter {
        status: q.status,
        email: q.email,
        external_id: q.external_id,
        scope: caller.scope,
    };
    let found = app.engine.list_clients(&filter, page).await?;
    Ok(axum::Json(List::from_page(found, ClientView::from)))
}

/// Create a client. Sent with an `Idempotency-Key`, the client is created under it: a retry
/// answers the first client.
#[utoipa::path(post, path = "/v1/clients", tag = "clients", request_body = ClientCreate,
    responses((status = 201, body = ClientView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_client(
    State(app): State<AppState>,
    caller: Caller,
    idem: Option<axum::Extension<IdempotencyKey>>,
    Json(mut body): Json<ClientCreate>,
) -> Result<(StatusCode, axum::Json<ClientView>), ApiError> {
    reseller_field(&caller, &mut body.reseller_id, true)?;
    body.order_key = idem.map(|k| k.order_key());
    let c = app.engine.create_client(body).await?;
    Ok((StatusCode::CREATED, axum::Json(c.into())))
}

/// One client of a batch.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientBatchItem {
    /// The client's own idempotency key (1 to 255 visible ASCII characters): the same key
    /// sent again answers the client it created first.
    #[schema(min_length = 1, max_length = 255)]
    pub idempotency_key: Option<String>,
    pub client: ClientCreate,
}

impl super::batch::BatchItem for ClientBatchItem {
    type Record = ClientCreate;
    fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }
    fn into_record(mut self, order_key: Option<String>) -> ClientCreate {
        self.client.order_key = order_key;
        self.client
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientBatch {
    /// 1 to 1000 clients; each is checked on its own.
    #[schema(value_type = Vec<ClientBatchItem>, min_items = 1, max_items = 1000)]
    pub clients: Vec<serde_json::Value>,
}

/// Create up to 1,000 clients at once (an import): each is checked on its own, the valid
/// ones are stored together in one transaction, and each one's result comes back at its
/// place.
#[utoipa::path(post, path = "/v1/clients/batch", tag = "clients", request_body = ClientBatch,
    responses((status = 200, body = ClientBatchAnswer), (status = 422, body = Problem)))]
async fn create_clients(
    State(app): State<AppState>,
    caller: Caller,
    Json(body): Json<ClientBatch>,
) -> Result<axum::Json<ClientBatchAnswer>, ApiError> {
    let items = super::batch::parse::<ClientBatchItem>("clients", body.clients, caller.key_id)?;
    let mut results: Vec<Option<ClientBatchResult>> = Vec::with_capacity(items.len());
    let (mut inputs, mut at) = (Vec::new(), Vec::new());
    for (i, item) in items.into_iter().enumerate() {
        let checked = item.and_then(|mut c| {
            reseller_field(&caller, &mut c.reseller_id, true)?;
            Ok(c)
        });
        match checked {
            Ok(c) => {
                at.push(i);
                inputs.push(c);
                results.push(None);
            }
            Err(e) => results.push(Some(failed(i, e))),
        }
    }
    let done = app.engine.create_clients(inputs).await?;
    for (i, r) in at.into_iter().zip(done) {
        results[i] = Some(match r {
            Ok((c, replayed)) => ClientBatchResult {
                index: i,
                status: if replayed { 200 } else { 201 },
                client: Some(c.into()),
                problem: None,
            },
            Err(e) => failed(i, e.into()),
        });
    }
    let results: Vec<ClientBatchResult> = results.into_iter().flatten().collect();
    let (created, replayed, failed) = super::batch::counts(results.iter().map(|r| r.status));
    Ok(axum::Json(ClientBatchAnswer {
        results,
        created,
        replayed,
        failed,
    }))
}

fn failed(index: usize, e: ApiError) -> ClientBatchResult {
    ClientBatchResult {
        index,
        status: e.status().as_u16(),
        client: None,
        problem: Some(e.into_problem()),
    }
}

/// Show the client with this external id (the billing system's own id for it).
#[utoipa::path(get, path = "/v1/clients/by-external-id/{external_id}", tag = "clients",
    params(("external_id" = String, Path)),
    responses((status = 200, body = ClientView), (status = 404, body = Problem)))]
async fn client_by_external_id(
    State(app): State<AppState>,
    caller: Caller,
    Path(external_id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let filter = ClientFilter {
        external_id: Some(external_id.clone()),
        scope: caller.scope,
        ..Default::default()
    };
    let found = app
        .engine
        .list_clients(&filter, provisio_core::page::PageRequest::first(1))
        .await?;
    match found.items.into_iter().next() {
        Some(c) => Ok(axum::Json(c.into())),
        None => Err(ApiError::not_found(format!(
            "no client with external id '{external_id}'"
        ))),
    }
}

/// Show a client.
#[utoipa::path(get, path = "/v1/clients/{id}", tag = "clients", params(("id" = i64, Path)),
    responses((status = 200, body = ClientView), (status = 404, body = Problem)))]
async fn get_client(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let c = caller.client(&app.engine, ClientId(path_id(&id)?)).await?;
    Ok(axum::Json(c.into()))
}

/// Change a client's name, email, status or custom fields.
#[utoipa::path(patch, path = "/v1/clients/{id}", tag = "clients", params(("id" = i64, Path)), request_body = ClientPatch,
    responses((status = 200, body = ClientView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_client(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(mut body): Json<ClientPatch>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    reseller_field(&caller, &mut body.reseller_id, false)?;
    let c = app.engine.update_client(id, body).await?;
    Ok(axum::Json(c.into()))
}

/// Delete a client that has no services.
#[utoipa::path(delete, path = "/v1/clients/{id}", tag = "clients", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_client(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    app.engine.delete_client(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Archive a client.
#[utoipa::path(post, path = "/v1/clients/{id}/archive", tag = "clients", params(("id" = i64, Path)),
    responses((status = 200, body = ClientView), (status = 404, body = Problem)))]
async fn archive_client(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    let c = app.engine.archive_client(id).await?;
    Ok(axum::Json(c.into()))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransactionQuery {
    /// 1 to 1000; 50 when absent.
    limit: Option<u32>,
    cursor: Option<String>,
}

/// List a client's balance transactions, oldest first.
#[utoipa::path(get, path = "/v1/clients/{id}/transactions", tag = "clients",
    params(("id" = i64, Path), TransactionQuery),
    responses((status = 200, body = List<TransactionView>), (status = 400, body = Problem),
        (status = 404, body = Problem)))]
async fn list_transactions(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<TransactionQuery>,
) -> Result<axum::Json<List<TransactionView>>, ApiError> {
    let id = seen(&app, &caller, &id).await?;
    let page = super::page(q.limit, q.cursor.as_deref())?;
    let found = app.engine.list_transactions(id, page).await?;
    Ok(axum::Json(List::from_page(found, TransactionView::from)))
}

/// Record a balance transaction: `payment` and `credit` increase the client's balance by
/// `amount_minor`; `charge` and `refund` (money paid back to the client) decrease it. The
/// balance changes atomically with the stored transaction, and crossing zero is announced
/// (`client.balance_nonnegative` when it rises from below zero to zero or above,
/// `client.balance_nonpositive` when it falls from above zero to zero or below). Archived
/// clients accept transactions too. Sending the same `idempotency_key` again answers 200
/// with the transaction stored first and changes nothing; the same key with a different
/// `kind` or `amount_minor` is a 409.
#[utoipa::path(post, path = "/v1/clients/{id}/transactions", tag = "clients",
    params(("id" = i64, Path)), request_body = TransactionCreate,
    responses((status = 201, body = TransactionView, description = "Applied"),
        (status = 200, body = TransactionView, description = "Already applied under this idempotency key; nothing changed"),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_transaction(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<TransactionCreate>,
) -> Result<(StatusCode, axum::Json<TransactionView>), ApiError> {
    let id = seen(&app, &caller, &id).await?;
    let outcome = app.engine.apply_transaction(id, body).await?;
    let status = if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(outcome.transaction.into())))
}
