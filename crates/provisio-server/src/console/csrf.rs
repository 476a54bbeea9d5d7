//! The CSRF check of every console form: a POST must carry its session's token in the
//! `csrf` field, or it is refused with a 403 page before any handler sees it.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::session::same_token;
use super::{problem_response, ConsoleState, Session};

/// The largest form the console accepts.
const MAX_FORM: usize = 256 * 1024;

pub(crate) async fn check_posts(
    State(_): State<ConsoleState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(expected) = req.extensions().get::<Session>().map(|s| s.csrf.clone()) else {
        return problem_response(
            StatusCode::FORBIDDEN,
            "Not signed in",
            "sign in first",
            vec![],
        );
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return problem_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Form too large",
            &format!("a console form may be at most {MAX_FORM} bytes"),
            vec![],
        );
    };
    let sent = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    match sent {
        Some(t) if same_token(&t, &expected) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        _ => {
            tracing::warn!(path = %parts.uri.path(), "console form refused: CSRF token missing or wrong");
            problem_response(
                StatusCode::FORBIDDEN,
                "Form refused",
                "the form's CSRF token is missing or wrong: reload the page and send the form again",
                vec![("csrf".into(), "must be the token of this session's forms".into())],
            )
        }
    }
}
