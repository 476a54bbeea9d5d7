//! The admin console at `/console`: server-rendered pages (askama templates embedded at
//! compile time, htmx for partial updates) over the same engine calls and access rules as
//! the REST API. A page is a full document, or only its `<main>` content when htmx asks
//! (`HX-Request`).

mod csrf;
mod pages;
mod session;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::access::{permits, Access, AuthFailures, Caller};
use crate::error::ApiError;
use crate::AppState;

pub(crate) use pages::OverviewCache;
pub(crate) use session::Session;

/// What every console handler shares.
#[derive(Clone)]
pub(crate) struct ConsoleState {
    pub app: AppState,
    pub ttl: chrono::Duration,
    pub secure_cookie: bool,
    /// The overview's aggregates, read at most once per its few seconds.
    pub overview: Arc<OverviewCache>,
    pub failures: Arc<AuthFailures>,
    pub rules: Arc<HashMap<(Method, &'static str), Access>>,
}

/// The console's routes, every one under `/console`, merged by [`crate::router`].
pub(crate) fn router(state: ConsoleState) -> Router<AppState> {
    let signed_in = pages::routes()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            csrf::check_posts,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::require_session,
        ));
    Router::new()
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/static/{file}", get(asset))
        .route(
            "/console",
            get(|| async { axum::response::Redirect::permanent("/console/") }),
        )
        .merge(signed_in)
        .with_state(state)
}

/// The vendored htmx and the console's CSS, embedded in the binary; their URLs carry the
/// version, so they may be cached for a year.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "htmx.min.js" => (
            include_bytes!("../../static/console/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "console.css" => (
            include_bytes!("../../static/console/console.css"),
            "text/css; charset=utf-8",
        ),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// The version in asset URLs, so a new build's files are fetched anew.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Whether htmx sent the request (and wants only the page's content).
pub(crate) fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request") && !headers.contains_key("hx-history-restore-request")
}

/// A page's failure, shown as a page with the status it deserves.
#[derive(Debug)]
pub(crate) enum PageError {
    /// The engine's or the boundary's own error, with its field messages.
    Api(ApiError),
    /// The key's role or scope does not allow this.
    Forbidden(String),
    /// A template failed to render (a bug): logged, shown as an internal error.
    Render(askama::Error),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError::Api(e)
    }
}

impl From<provisio_engine::EngineError> for PageError {
    fn from(e: provisio_engine::EngineError) -> Self {
        PageError::Api(e.into())
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        PageError::Render(e)
    }
}

#[derive(Template)]
#[template(path = "console/problem.html")]
struct ProblemPage<'a> {
    title: &'a str,
    detail: &'a str,
    fields: Vec<(String, String)>,
}

/// A minimal document around a problem: error pages do not depend on a session.
#[derive(Template)]
#[template(
    source = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{{ title }} · Provisio console</title><link rel=\"stylesheet\" href=\"/console/static/console.css?v={{ version }}\"></head><body><main id=\"main\">{{ content|safe }}</main></body></html>",
    ext = "html"
)]
struct Bare<'a> {
    title: &'a str,
    version: &'a str,
    content: &'a str,
}

pub(crate) fn problem_response(
    status: StatusCode,
    title: &str,
    detail: &str,
    fields: Vec<(String, String)>,
) -> Response {
    let content = ProblemPage {
        title,
        detail,
        fields,
    }
    .render()
    .unwrap_or_else(|_| "internal error".into());
    let html = Bare {
        title,
        version: VERSION,
        content: &content,
    }
    .render()
    .unwrap_or(content);
    html_response(status, html)
}

pub(crate) fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Pages hold records a person is allowed to see; they are not for shared caches.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Api(e) => {
                let p = e.into_problem();
                let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_REQUEST);
                let fields = p.errors.into_iter().map(|f| (f.field, f.message)).collect();
                problem_response(status, &p.title, &p.detail, fields)
            }
            PageError::Forbidden(detail) => {
                problem_response(StatusCode::FORBIDDEN, "Not allowed", &detail, vec![])
            }
            PageError::Render(e) => {
                tracing::error!(error = %e, "a console template failed to render");
                problem_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error",
                    "the page could not be drawn; the error is logged",
                    vec![],
                )
            }
        }
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

/// Decides what a session may see and do by the REST API's own access rules: a console
/// page or button is allowed exactly when the key could call the REST operation behind it.
impl Session {
    pub fn may(&self, method: Method, path: &str) -> bool {
        self.rules
            .get(&(method, path))
            .is_some_and(|r| permits(self.caller.role, self.reveal, r))
    }

    /// Refuses with a 403 page unless the key could call `method path`.
    pub fn need(&self, method: Method, path: &str) -> Result<(), PageError> {
        if self.may(method.clone(), path) {
            Ok(())
        } else {
            Err(PageError::Forbidden(format!(
                "this {} key may not do this ({} {} of the REST API)",
                self.caller.role.as_str(),
                method,
                path
            )))
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

struct NavItem {
    href: &'static str,
    label: &'static str,
    current: bool,
}

#[derive(Template)]
#[template(path = "console/layout.html")]
struct Layout<'a> {
    title: &'a str,
    version: &'a str,
    nav: Vec<NavItem>,
    key_name: &'a str,
    role: &'a str,
    csrf: &'a str,
    content: &'a str,
}

#[derive(Template)]
#[template(path = "console/partial.html")]
struct Partial<'a> {
    title: &'a str,
    content: &'a str,
}

/// The pages of the menu, each shown only to keys that may read what it shows.
const MENU: &[(&str, &str, &str)] = &[
    ("/console/", "Overview", "/v1/servers"),
    ("/console/queue", "Queue", "/v1/jobs"),
    ("/console/services", "Services", "/v1/services"),
    ("/console/clients", "Clients", "/v1/clients"),
    ("/console/groups", "Groups", "/v1/groups/{invoice}"),
    ("/console/events", "Events", "/v1/events"),
    ("/console/servers", "Servers", "/v1/servers"),
    ("/console/products", "Products", "/v1/products"),
    ("/console/handlers", "Handlers", "/v1/handlers"),
    ("/console/rules", "Rules", "/v1/rules"),
    ("/console/audits", "Audits", "/v1/audits"),
    ("/console/usage", "Usage syncs", "/v1/usage/syncs"),
];

/// Renders `content` as a page: the whole document, or only the content for htmx.
pub(crate) fn page(
    s: &Session,
    headers: &HeaderMap,
    current: &str,
    title: &str,
    content: impl Template,
) -> PageResult {
    let content = content.render()?;
    let html = if is_htmx(headers) {
        Partial {
            title,
            content: &content,
        }
        .render()?
    } else {
        let nav = MENU
            .iter()
            .filter(|(_, _, rest)| s.may(Method::GET, rest))
            .map(|(href, label, _)| NavItem {
                href,
                label,
                current: *href == current,
            })
            .collect();
        Layout {
            title,
            version: VERSION,
            nav,
            key_name: &s.caller.key_name,
            role: s.caller.role.as_str(),
            csrf: &s.csrf,
            content: &content,
        }
        .render()?
    };
    Ok(html_response(StatusCode::OK, html))
}

/// Where a form sends the person after it acted: a 303 to the page, or for htmx the same
/// page fetched into `<main>` (and put in the address bar).
pub(crate) fn see_other(headers: &HeaderMap, to: &str) -> Response {
    if is_htmx(headers) {
        let loc = serde_json::json!({"path": to, "target": "#main"}).to_string();
        let mut r = StatusCode::OK.into_response();
        if let Ok(v) = HeaderValue::from_str(&loc) {
            r.headers_mut().insert("hx-location", v);
        }
        r
    } else {
        let mut r = StatusCode::SEE_OTHER.into_response();
        if let Ok(v) = HeaderValue::from_str(to) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }
}
