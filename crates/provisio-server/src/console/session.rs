//! Console sign-in: an API key, checked as the REST API checks it, opens a session whose
//! random token lives only in an HttpOnly, SameSite=Strict cookie; the database keeps the
//! token's SHA-256, the key's id and the session's CSRF token, never the key.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use provisio_store::ConsoleSession;
use sha2::{Digest, Sha256};

use super::{html_response, ConsoleState, PageError, VERSION};
use crate::access::{client_ip, Caller};

/// The session cookie.
pub(crate) const COOKIE: &str = "provisio_console";
/// The sign-in form's CSRF cookie (double submit: there is no session yet to hold it).
const SIGN_IN_COOKIE: &str = "provisio_console_signin";

/// The signed-in person behind a console request.
#[derive(Clone)]
pub(crate) struct Session {
    pub(super) caller: Caller,
    pub(super) reveal: bool,
    pub csrf: String,
    pub(super) token_hash: String,
    pub(super) rules:
        Arc<std::collections::HashMap<(axum::http::Method, &'static str), crate::access::Access>>,
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash_token(t: &str) -> String {
    Sha256::digest(t.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of cookie `name` in the request, if sent.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Tokens are compared in constant time, so their characters cannot be guessed by timing.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn set_cookie(
    state: &ConsoleState,
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: i64,
) -> HeaderValue {
    let forwarded_tls = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let secure = if state.secure_cookie || forwarded_tls {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("tokens are hex")
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignIn<'a> {
    version: &'a str,
    csrf: &'a str,
    error: Option<&'a str>,
}

fn sign_in_form(
    state: &ConsoleState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let csrf = random_token();
    let html = SignIn {
        version: VERSION,
        csrf: &csrf,
        error,
    }
    .render()
    .map_err(PageError::from);
    match html {
        Ok(html) => {
            let mut r = html_response(status, html);
            r.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(state, headers, SIGN_IN_COOKIE, &csrf, 3600),
            );
            r
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn sign_in_page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
) -> Response {
    sign_in_form(&state, &headers, StatusCode::OK, None)
}

#[derive(serde::Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn sign_in(State(state): State<ConsoleState>, req: Request) -> Response {
    let ip = client_ip(&req);
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return sign_in_form(
                &state,
                &headers,
                StatusCode::BAD_REQUEST,
                Some("the form is too large"),
            )
        }
    };
    let form: SignInForm = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => {
            return sign_in_form(
                &state,
                &headers,
                StatusCode::BAD_REQUEST,
                Some("the form could not be read"),
            )
        }
    };
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same_token(expected, &form.csrf) {
        return super::problem_response(
            StatusCode::FORBIDDEN,
            "Form refused",
            "the form's CSRF token is missing or does not match: reload the sign-in page and try again",
            vec![],
        );
    }
    let now = std::time::Instant::now();
    if let Some(wait) = state.failures.blocked(ip, now) {
        return sign_in_form(
            &state,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "too many failed sign-ins from this address; try again in {wait} s"
            )),
        );
    }
    let key = match state.app.engine.authenticate(form.key.trim()).await {
        Ok(Ok(k)) => k,
        Ok(Err(refusal)) => {
            state.failures.failed(ip, now);
            tracing::warn!(client = %ip, reason = refusal.message(), "console sign-in failed");
            return sign_in_form(
                &state,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some(refusal.message()),
            );
        }
        Err(e) => return PageError::from(e).into_response(),
    };
    let token = random_token();
    let at = state.app.engine.now();
    let session = ConsoleSession {
        token_hash: hash_token(&token),
        key_id: key.id,
        csrf: random_token(),
        created_at: at,
        expires_at: at + state.ttl,
    };
    if let Err(e) = state
        .app
        .engine
        .store()
        .insert_console_session(&session)
        .await
    {
        return PageError::from(provisio_engine::EngineError::from(e)).into_response();
    }
    tracing::info!(key_id = key.id, key = %key.name, "console sign-in");
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/console/"));
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, &headers, COOKIE, &token, state.ttl.num_seconds()),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, &headers, SIGN_IN_COOKIE, "", 0),
    );
    r
}

fn to_sign_in(headers: &HeaderMap) -> Response {
    if super::is_htmx(headers) {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/console/sign-in"));
        r
    } else {
        let mut r = StatusCode::SEE_OTHER.into_response();
        r.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_static("/console/sign-in"),
        );
        r
    }
}

/// Finds the request's session and its key, checked again as on every REST request (a key
/// revoked or expired since sign-in ends the session), and runs the page as that key.
pub(crate) async fn require_session(
    State(state): State<ConsoleState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(token) = cookie(req.headers(), COOKIE).filter(|t| !t.is_empty()) else {
        return to_sign_in(req.headers());
    };
    let hash = hash_token(token);
    let engine = &state.app.engine;
    let found = match engine
        .store()
        .find_console_session(&hash, engine.now())
        .await
    {
        Ok(f) => f,
        Err(e) => return PageError::from(provisio_engine::EngineError::from(e)).into_response(),
    };
    let Some(found) = found else {
        return to_sign_in(req.headers());
    };
    let key = match engine.authenticate_id(found.key_id).await {
        Ok(Ok(k)) => k,
        Ok(Err(refusal)) => {
            tracing::info!(
                key_id = found.key_id,
                reason = refusal.message(),
                "console session ended"
            );
            let _ = engine.store().delete_console_session(&hash).await;
            return to_sign_in(req.headers());
        }
        Err(e) => return PageError::from(e).into_response(),
    };
    let actor = provisio_core::access::Actor::Key {
        id: key.id,
        name: key.name.clone(),
    };
    req.extensions_mut().insert(Session {
        reveal: key.reveal_secrets,
        caller: Caller::from_key(key),
        csrf: found.csrf,
        token_hash: hash,
        rules: state.rules.clone(),
    });
    provisio_store::acting(actor, next.run(req)).await
}

pub(crate) async fn sign_out(
    State(state): State<ConsoleState>,
    axum::Extension(s): axum::Extension<Session>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = state
        .app
        .engine
        .store()
        .delete_console_session(&s.token_hash)
        .await
    {
        return PageError::from(provisio_engine::EngineError::from(e)).into_response();
    }
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_static("/console/sign-in"),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, &headers, COOKIE, "", 0),
    );
    r
}
