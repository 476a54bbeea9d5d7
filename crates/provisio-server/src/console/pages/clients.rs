//! Clients: the list, and a client's page with its services, balance and transactions and
//! the form that records a balance transaction through `Engine::apply_transaction`, like
//! `POST /v1/clients/{id}/transactions`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::{Extension, Form};
use provisio_core::client::{Client, TransactionKind};
use provisio_core::page::PageRequest;
use provisio_core::ClientId;
use provisio_engine::input::TransactionCreate;
use provisio_store::{ClientFilter, ServiceFilter};
use serde::Deserialize;

use super::form::{problem_fields, unprocessable, FormPage};
use super::{given, when, wire};
use crate::console::{page, ConsoleState, PageResult, Session};

struct ClientRow {
    id: i64,
    name: String,
    email: String,
    status: &'static str,
    balance: String,
}

fn balance(c: &Client) -> String {
    format!("{} {}", c.balance_minor, c.currency.as_str())
}

#[derive(Template)]
#[template(path = "console/clients.html")]
struct ClientsPage {
    rows: Vec<ClientRow>,
    more: bool,
}

pub(crate) async fn clients(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/clients")?;
    let found = state
        .app
        .engine
        .list_clients(
            &ClientFilter {
                scope: s.caller().scope,
                ..Default::default()
            },
            PageRequest::first(200),
        )
        .await?;
    let content = ClientsPage {
        more: found.next.is_some(),
        rows: found
            .items
            .into_iter()
            .map(|c| ClientRow {
                id: c.id.0,
                balance: balance(&c),
                name: c.name.to_string(),
                email: c.email.to_string(),
                status: c.status.as_str(),
            })
            .collect(),
    };
    page(&s, &headers, "/console/clients", "Clients", content)
}

/// The transaction form as sent.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TransactionForm {
    kind: Option<String>,
    amount_minor: Option<String>,
    description: Option<String>,
    /// Made when the form is drawn, so that a form sent twice records one transaction.
    idempotency_key: Option<String>,
}

struct TxRow {
    id: i64,
    kind: String,
    amount: i64,
    balance_after: i64,
    description: String,
    actor: String,
    at: String,
}

struct ServiceRow {
    id: i64,
    username: String,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "console/client.html")]
struct ClientPage {
    id: i64,
    name: String,
    email: String,
    status: &'static str,
    balance: String,
    external_id: String,
    custom_fields: Vec<(String, String)>,
    created: String,
    services: Vec<ServiceRow>,
    transactions: Option<Vec<TxRow>>,
    /// The cursor of the next page of transactions (oldest first, as the API lists them).
    tx_next: Option<String>,
    may_edit: bool,
    may_charge: bool,
    csrf: String,
    kinds: Vec<&'static str>,
    form: TransactionForm,
    key: String,
    errors: Vec<(String, String)>,
    summary: Option<String>,
    notice: Option<String>,
}

impl FormPage for ClientPage {
    fn field_errors(&self) -> &[(String, String)] {
        &self.errors
    }
}

/// What the page shows besides the client: the transaction form as sent, its field
/// errors and problem, or the notice of a recorded transaction.
#[derive(Default)]
struct Outcome {
    form: TransactionForm,
    errors: Vec<(String, String)>,
    summary: Option<String>,
    notice: Option<String>,
}

fn new_key() -> String {
    format!("console-{:032x}", rand::random::<u128>())
}

async fn client_page(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    raw: &str,
    tx_after: Option<i64>,
    shown: Outcome,
) -> PageResult {
    let Outcome {
        form,
        errors,
        summary,
        notice,
    } = shown;
    let engine = &state.app.engine;
    let id = ClientId(crate::extract::path_id(raw)?);
    let c = s.caller().client(engine, id).await?;
    let services = engine
        .list_services(
            &ServiceFilter {
                client_id: Some(c.id),
                scope: s.caller().scope,
                ..Default::default()
            },
            PageRequest::first(200),
        )
        .await?;
    let mut tx_next = None;
    let transactions = if s.may(Method::GET, "/v1/clients/{id}/transactions") {
        let tx = engine
            .list_transactions(
                c.id,
                PageRequest {
                    after: tx_after,
                    limit: 200,
                },
            )
            .await?;
        tx_next = tx.next.map(|n| n.to_string());
        Some(
            tx.items
                .into_iter()
                .map(|x| TxRow {
                    id: x.id.0,
                    kind: wire(x.kind),
                    amount: x.amount_minor,
                    balance_after: x.balance_after,
                    description: x.description.unwrap_or_default(),
                    actor: x.actor.as_ref().map(super::actor).unwrap_or_default(),
                    at: when(x.created_at),
                })
                .collect(),
        )
    } else {
        None
    };
    // A refused form keeps its key: the same transaction sent again is still one.
    let key = given(&form.idempotency_key)
        .filter(|_| !errors.is_empty())
        .map(String::from)
        .unwrap_or_else(new_key);
    let content = ClientPage {
        id: c.id.0,
        name: c.name.to_string(),
        email: c.email.to_string(),
        status: c.status.as_str(),
        balance: balance(&c),
        external_id: c.external_id.map(|e| e.to_string()).unwrap_or_default(),
        custom_fields: c.custom_fields.into_iter().collect(),
        created: when(c.created_at),
        services: services
            .items
            .into_iter()
            .map(|x| ServiceRow {
                id: x.id.0,
                username: x.username.to_string(),
                status: x.status.as_str(),
            })
            .collect(),
        transactions,
        tx_next,
        may_edit: s.may(Method::PATCH, "/v1/clients/{id}"),
        may_charge: s.may(Method::POST, "/v1/clients/{id}/transactions"),
        csrf: s.csrf.clone(),
        kinds: TransactionKind::ALL.iter().map(|k| k.as_str()).collect(),
        form,
        key,
        errors,
        summary,
        notice,
    };
    let title = format!("Client {}", content.name);
    page(s, headers, "/console/clients", &title, content)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ClientQuery {
    tx_after: Option<String>,
}

pub(crate) async fn client(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ClientQuery>,
) -> PageResult {
    s.need(Method::GET, "/v1/clients/{id}")?;
    let tx_after = super::parse_id("tx_after", given(&q.tx_after))?;
    client_page(&state, &s, &headers, &id, tx_after, Outcome::default()).await
}

pub(crate) async fn add_transaction(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<TransactionForm>,
) -> PageResult {
    s.need(Method::POST, "/v1/clients/{id}/transactions")?;
    let engine = &state.app.engine;
    let client = ClientId(crate::extract::path_id(&id)?);
    s.caller().client(engine, client).await?;
    let mut errors = Vec::new();
    let kind = match given(&form.kind) {
        Some(k) => match TransactionKind::parse(k) {
            Some(k) => Some(k),
            None => {
                errors.push((
                    "kind".to_string(),
                    format!("kind: '{k}' is not charge, payment, credit or refund"),
                ));
                None
            }
        },
        None => {
            errors.push(("kind".to_string(), "kind: is required".to_string()));
            None
        }
    };
    // The engine says what a number must be; text that is no number at all is refused
    // here, in the words the engine uses for a number out of range.
    let amount = match given(&form.amount_minor).map(str::parse::<i64>) {
        Some(Ok(a)) => Some(a),
        _ => {
            errors.push((
                "amount_minor".to_string(),
                "amount_minor: must be a positive integer".to_string(),
            ));
            None
        }
    };
    if let (Some(kind), Some(amount_minor), true) = (kind, amount, errors.is_empty()) {
        let input = TransactionCreate {
            kind,
            amount_minor,
            idempotency_key: given(&form.idempotency_key).unwrap_or_default().to_string(),
            description: given(&form.description).map(String::from),
        };
        match engine.apply_transaction(client, input).await {
            Ok(done) => {
                let t = done.transaction;
                let notice = if done.replayed {
                    format!(
                        "Transaction {} was already recorded; nothing changed.",
                        t.id.0
                    )
                } else {
                    format!(
                        "Recorded transaction {}: {} of {}; the balance is now {}.",
                        t.id.0,
                        t.kind.as_str(),
                        t.amount_minor,
                        t.balance_after
                    )
                };
                return client_page(
                    &state,
                    &s,
                    &headers,
                    &id,
                    None,
                    Outcome {
                        notice: Some(notice),
                        ..Default::default()
                    },
                )
                .await;
            }
            Err(e) => {
                let (fields, detail) = problem_fields(e);
                return client_page(
                    &state,
                    &s,
                    &headers,
                    &id,
                    None,
                    Outcome {
                        form,
                        errors: fields,
                        summary: Some(detail),
                        notice: None,
                    },
                )
                .await
                .map(unprocessable);
            }
        }
    }
    client_page(
        &state,
        &s,
        &headers,
        &id,
        None,
        Outcome {
            form,
            errors,
            summary: Some("the transaction was not recorded".into()),
            notice: None,
        },
    )
    .await
    .map(unprocessable)
}
