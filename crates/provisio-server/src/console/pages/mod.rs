//! The console's pages, one file per area, each calling the engine functions its REST
//! routes call and asking the REST access rules what the session may see and do.

mod audits;
mod clients;
mod edit;
mod events;
mod form;
mod groups;
mod handlers;
mod overview;
mod products;
mod queue;
mod records;
mod services;
mod usage;

pub(crate) use overview::OverviewCache;

use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::ConsoleState;

/// Every server, as the pages that name or pick servers list them (one page of the
/// listing's largest size: more servers than that is beyond what a person picks from).
pub(crate) async fn all_servers(
    state: &ConsoleState,
) -> Result<Vec<provisio_core::server::Server>, crate::console::PageError> {
    Ok(state
        .app
        .engine
        .list_servers(
            &provisio_store::ServerFilter::default(),
            provisio_core::page::PageRequest::first(provisio_core::page::PageRequest::MAX_LIMIT),
        )
        .await?
        .items)
}

pub(crate) fn routes() -> Router<ConsoleState> {
    Router::new()
        .route(&at("/"), get(overview::overview))
        .route(&at("/sign-out"), post(super::session::sign_out))
        .route(&at("/queue"), get(queue::queue))
        .route(
            &at("/queue/retry-all"),
            get(queue::confirm_retry_all).post(queue::retry_all),
        )
        .route(&at("/queue/{id}"), get(queue::job))
        .route(
            &at("/queue/{id}/retry"),
            get(queue::confirm_retry).post(queue::retry),
        )
        .route(
            &at("/queue/{id}/resolve"),
            get(queue::confirm_resolve).post(queue::resolve),
        )
        .route(&at("/services"), get(services::search))
        .route(&at("/services/{id}"), get(services::service))
        .route(&at("/services/{id}/login-url"), post(services::login_url))
        .route(
            &at("/services/{id}/act/{action}"),
            get(services::action_form).post(services::act),
        )
        .route(&at("/groups"), get(groups::groups))
        .route(&at("/groups/dry-run"), post(groups::dry_run))
        .route(&at("/groups/run"), post(groups::run))
        .route(&at("/groups/collect"), get(groups::collect))
        .route(&at("/events"), get(events::events))
        .route(&at("/clients"), get(clients::clients))
        .route(&at("/clients/{id}"), get(clients::client))
        .route(
            &at("/clients/{id}/transactions"),
            post(clients::add_transaction),
        )
        .route(
            &at("/clients/{id}/edit"),
            get(edit::client_form).post(edit::client_save),
        )
        .route(
            &at("/services/{id}/edit"),
            get(edit::service_form).post(edit::service_save),
        )
        .route(&at("/servers"), get(records::servers))
        .route(&at("/servers/{id}/test"), post(records::test_server))
        .route(
            &at("/servers/{id}/edit"),
            get(edit::server_form).post(edit::server_save),
        )
        .route(&at("/products"), get(products::products))
        .route(&at("/products/{id}"), get(products::product))
        .route(
            &at("/products/{id}/edit"),
            get(edit::product_form).post(edit::product_save),
        )
        .route(&at("/handlers"), get(handlers::handlers))
        .route(&at("/handlers/{id}"), get(handlers::handler))
        .route(&at("/deliveries/{id}"), get(handlers::delivery))
        .route(
            &at("/deliveries/{id}/redeliver"),
            get(handlers::confirm_redeliver).post(handlers::redeliver),
        )
        .route(&at("/rules"), get(records::rules))
        .route(
            &at("/audits"),
            get(audits::audits).post(audits::start_audit),
        )
        .route(&at("/audits/{id}"), get(audits::audit))
        .route(
            &at("/audits/{id}/apply"),
            get(audits::confirm_apply).post(audits::apply),
        )
        .route(&at("/usage"), get(usage::syncs))
        .route(&at("/usage/{id}"), get(usage::sync))
}

/// A console path under `/console`, spelled out so that `/console/` itself is a route.
pub(crate) fn at(p: &str) -> String {
    format!("/console{p}")
}

/// A time as a person reads it on the console.
pub(crate) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub(crate) fn when_opt(t: Option<DateTime<Utc>>) -> String {
    t.map(when).unwrap_or_else(|| "—".into())
}

/// The wire name of an enum that serialises as a string (`failed`, `permanent`).
pub(crate) fn wire(v: impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Who caused a job or event, as a person reads it: `key admin (#1)`, `rule 4`, `scheduler`.
pub(crate) fn actor(a: &provisio_core::access::Actor) -> String {
    let v = serde_json::to_value(a).unwrap_or_default();
    let kind = v["kind"].as_str().unwrap_or("");
    match (v["name"].as_str(), v["id"].as_i64()) {
        (Some(n), Some(i)) => format!("{kind} {n} (#{i})"),
        (None, Some(i)) => format!("{kind} {i}"),
        _ => kind.to_string(),
    }
}

/// A form or query field that was left empty counts as absent.
pub(crate) fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A JSON value as one line for a table cell.
pub(crate) fn show(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A query's problem for a field (a number that is not one), as the REST API says it.
pub(crate) fn bad_query(field: &str, message: &str) -> super::PageError {
    super::PageError::Api(crate::error::ApiError::bad_field(
        axum::http::StatusCode::BAD_REQUEST,
        field,
        "type",
        message,
    ))
}

pub(crate) fn parse_id(field: &str, v: Option<&str>) -> Result<Option<i64>, super::PageError> {
    match v {
        None => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .map(Some)
            .map_err(|_| bad_query(field, "must be a whole number")),
    }
}
