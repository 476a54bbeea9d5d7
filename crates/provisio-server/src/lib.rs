//! Provisio's REST API and start-up: [`run`] opens the store, applies the declared config
//! and serves `/v1`, `/healthz` and `/openapi.json` on a listener until shut down.
//!
//! Only this crate knows HTTP.

mod access;
pub mod config;
mod console;
mod contract;
mod error;
mod extract;
mod idempotency;
mod routes;
mod startup;
pub mod telemetry;
mod views;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use provisio_engine::Engine;
use provisio_modules::Registry;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

pub use config::{Config, Overrides};
pub use error::ApiError;
pub use startup::{load_key_ring, prepare, StartError};

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Provisio", description = "Provisioning engine: clients, servers, products and services, and the actions that make remote systems follow them.\n\nEvery error is `application/problem+json` (`Problem`). No string of a request (path, query or body) may contain U+0000; one that does is refused (400 or 422, rule `nul`)."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::Problem, error::FieldProblem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn api_parts() -> (Router<AppState>, serde_json::Value) {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::v1())
        .split_for_parts();
    document_roles(&mut api);
    document_idempotency(&mut api);
    let mut doc = serde_json::to_value(&api).expect("the document serialises");
    contract::complete(&mut doc);
    (router, doc)
}

/// Writes each operation's roles into the document: `x-provisio-roles`, and a line of its
/// description, so that what the access table enforces is what callers read.
fn document_roles(api: &mut utoipa::openapi::OpenApi) {
    let rules: std::collections::HashMap<(String, &str), &access::Access> = routes::access_rules()
        .map(|r| ((r.method.as_str().to_ascii_lowercase(), r.path), r))
        .collect();
    for (path, item) in api.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            let Some(rule) = rules.get(&(method.to_string(), path.as_str())) else {
                continue;
            };
            let roles = access::roles_for(rule);
            let mut line = format!("Roles: {}", roles.join(", "));
            if rule.need == access::Need::Secret {
                line.push_str(" (all but admin only with reveal_secrets)");
            }
            if rule.client || rule.reseller && roles.contains(&"reseller") {
                line.push_str(
                    "; client and reseller keys only on their own records (others answer 404)",
                );
            }
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{line}."),
                _ => format!("{line}."),
            });
            let ext = op.extensions.get_or_insert_with(Default::default);
            ext.insert("x-provisio-roles".into(), serde_json::json!(roles));
        }
    }
}

/// Declares the `Idempotency-Key` header on every POST, which the idempotency layer accepts
/// on all of them.
fn document_idempotency(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    for item in api.paths.paths.values_mut() {
        let Some(op) = item.post.as_mut() else {
            continue;
        };
        let param = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes the request safe to retry: the same key with the same request answers \
                 the first answer again (for `[retention] idempotency_keys`, 24 hours by \
                 default, marked `Idempotent-Replayed: true`); with a different request, or \
                 while the first still runs, 409. Keys belong to the API key that sends them.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(idempotency::MAX_LEN))
                    .pattern(Some("^[!-~]+$")),
            ))
            .build();
        op.parameters.get_or_insert_with(Vec::new).push(param);
    }
}

/// The OpenAPI document of the REST API, as served at `/openapi.json`: utoipa's document
/// completed with the answers every operation shares (`contract`).
pub fn openapi() -> serde_json::Value {
    api_parts().1
}

/// Counts every routed request by its route template (never the path, which holds ids).
async fn http_metrics(req: axum::extract::Request, next: middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    if let Some(route) = route {
        provisio_engine::metrics::http_request(
            &route,
            method.as_str(),
            resp.status().as_u16(),
            t0.elapsed(),
        );
    }
    resp
}

/// The keyless application of `[http] metrics_listen`: `/metrics` and `/readyz` only.
pub fn metrics_router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/metrics", get(routes::metrics::metrics))
        .route("/readyz", get(routes::metrics::readyz))
        .fallback(not_found)
        .with_state(AppState { engine })
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not accept that method",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

/// Bounds every request but `/healthz`: at most `max_concurrent_requests` at once (beyond
/// that, 503 with `Retry-After` rather than an unbounded queue) and `request_timeout_seconds`
/// each (a hung request is answered 503 and its handler dropped).
#[derive(Clone)]
struct Bounds {
    slots: Arc<tokio::sync::Semaphore>,
    timeout: std::time::Duration,
}

async fn bounded(
    State(bounds): State<Bounds>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let busy = |detail: String| {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
        .into_response();
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            "1".parse().expect("a number"),
        );
        r
    };
    let Ok(_slot) = bounds.slots.clone().try_acquire_owned() else {
        return busy("too many requests at once; try again shortly".into());
    };
    match tokio::time::timeout(bounds.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                timeout_seconds = bounds.timeout.as_secs(),
                "a request took too long and was dropped"
            );
            busy(format!(
                "the request took longer than {} s",
                bounds.timeout.as_secs()
            ))
        }
    }
}

/// Sets each request's body limit: `max_batch_body_bytes` for a batch, `max_body_bytes`
/// for everything else.
async fn body_limits(
    State((single, batch)): State<(usize, usize)>,
    mut req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let limit = if req.uri().path().ends_with("/batch") {
        batch
    } else {
        single
    };
    req.extensions_mut().insert(extract::BodyLimit(limit));
    next.run(req).await
}

/// A NUL in a path segment would reach the database as a name to look up; PostgreSQL
/// refuses it (a 500), so it is refused here as bad input, as bodies and queries refuse it.
async fn refuse_nul_in_path(req: axum::extract::Request, next: middleware::Next) -> Response {
    if req.uri().path().to_ascii_lowercase().contains("%00") {
        return extract::nul_problem(StatusCode::BAD_REQUEST, "path").into_response();
    }
    next.run(req).await
}

/// The whole HTTP application over an engine.
pub fn router(engine: Arc<Engine>, config: &Config) -> Router {
    // The served application always records: `/metrics` is part of it.
    provisio_engine::metrics::install();
    let bounds = Bounds {
        slots: Arc::new(tokio::sync::Semaphore::new(
            config.http.max_concurrent_requests.max(1),
        )),
        timeout: std::time::Duration::from_secs(config.http.request_timeout_seconds.max(1)),
    };
    let state = AppState { engine };
    let (v1, api) = api_parts();
    let gate = access::Gate {
        app: state.clone(),
        failures: Arc::new(access::AuthFailures::new(
            config.http.auth_failures_per_minute,
            std::time::Duration::from_secs(60),
        )),
        rules: Arc::new(
            routes::access_rules()
                .map(|r| ((r.method.clone(), r.path), r.clone()))
                .collect(),
        ),
    };
    let idem = idempotency::Idempotency {
        app: state.clone(),
        hold: bounds.timeout + std::time::Duration::from_secs(30),
    };
    // The key is checked first (the outer layer), so an idempotency key belongs to it.
    let v1 = v1
        .route_layer(middleware::from_fn_with_state(
            idem,
            idempotency::idempotent,
        ))
        .route_layer(middleware::from_fn_with_state(
            gate.clone(),
            access::require_key,
        ));
    let console = console::router(console::ConsoleState {
        app: state.clone(),
        // `prepare` refused a bad value at start; a router built without it gets the default.
        ttl: config
            .console
            .ttl()
            .ok()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .unwrap_or_else(|| chrono::Duration::hours(12)),
        secure_cookie: config.console.secure_cookie,
        overview: Arc::new(console::OverviewCache::new(std::time::Duration::from_secs(
            config.console.overview_cache_seconds.min(60),
        ))),
        failures: gate.failures.clone(),
        rules: gate.rules.clone(),
    });
    let metrics = Router::new()
        .route("/metrics", get(routes::metrics::metrics))
        .route_layer(middleware::from_fn_with_state(gate, access::require_key));
    let api = Arc::new(api);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(routes::metrics::readyz))
        .merge(metrics)
        .route(
            "/openapi.json",
            get(move || {
                let api = api.clone();
                async move { axum::Json(api.as_ref().clone()) }
            }),
        )
        .merge(v1)
        .merge(console)
        .route_layer(middleware::from_fn(http_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            (config.max_body_bytes, config.http.max_batch_body_bytes),
            body_limits,
        ))
        .layer(DefaultBodyLimit::max(
            config.max_body_bytes.max(config.http.max_batch_body_bytes),
        ))
        .layer(middleware::from_fn(refuse_nul_in_path))
        .layer(middleware::from_fn_with_state(bounds, bounded))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Starts Provisio with the built-in modules: prepares the store and engine, then serves on
/// `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let modules = Registry::builtin_with(&config.module_options()?);
    run_with(config, modules, listener, shutdown).await
}

/// [`run`] with a chosen set of modules (tests add their own).
pub async fn run_with(
    config: Config,
    modules: Registry,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let engine = Arc::new(prepare(&config, modules).await?);
    let worker = config
        .worker
        .then(|| provisio_engine::worker::spawn(engine.clone(), worker_name()));
    // An API-only node seals secrets too, so it follows key rotations without a worker.
    let follower =
        (!config.worker).then(|| provisio_engine::secret_keys::spawn_follow(engine.clone()));
    let clock = (!config.worker).then(|| provisio_engine::clock::spawn(engine.clone()));
    let app = router(engine.clone(), &config);
    tracing::info!(addr = %listener.local_addr().map_err(StartError::Io)?, worker = config.worker, "provisio listening");
    // The worker stops claiming at the signal, not after the last request: requests still
    // waiting for an outcome are answered by the end of the drain.
    let stopper = worker.as_ref().map(|w| w.stopper());
    let draining = engine.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!(
            drain_seconds = draining.options().jobs.drain.as_secs(),
            "stopping: no new jobs are claimed; running ones may finish"
        );
        match stopper {
            Some(s) => s.stop(),
            None => draining.begin_drain(),
        }
    };
    let metrics_server = match config.http.metrics_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.map_err(StartError::Io)?;
            tracing::info!(addr = %addr, "metrics listening (no key)");
            let app = metrics_router(engine.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            }))
        }
        None => None,
    };
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(w) = worker {
        w.shutdown().await;
    }
    if let Some(f) = follower {
        f.abort();
    }
    if let Some(c) = clock {
        c.abort();
    }
    if let Some(m) = metrics_server {
        m.abort();
    }
    engine.store().close().await;
    served.map_err(StartError::Io)
}

/// Names this process in job leases: host, pid and a random part, so a restarted process
/// never mistakes its predecessor's leases for its own.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
