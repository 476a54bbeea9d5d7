//! The one error type of the HTTP boundary: every failure becomes an RFC 9457
//! `application/problem+json` response; internal causes are logged, never shown.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use provisio_core::settings::FieldError;
use provisio_engine::EngineError;

pub use provisio_api::problem::{FieldProblem, Problem};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    forbidden_by: Option<Box<(String, String)>>,
    roles: Option<Vec<String>>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            forbidden_by: None,
            roles: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            slug: "validation",
            title: "The request has invalid fields",
            detail,
            errors,
            forbidden_by: None,
            roles: None,
        }
    }

    /// A single bad field in the path, query or body.
    pub fn bad_field(
        status: StatusCode,
        field: &str,
        rule: &str,
        message: impl std::fmt::Display,
    ) -> Self {
        let message = format!("{field}: {message}");
        Self {
            status,
            slug: "validation",
            title: "The request has invalid fields",
            detail: message.clone(),
            errors: vec![FieldError {
                field: field.into(),
                rule: rule.into(),
                message,
            }],
            forbidden_by: None,
            roles: None,
        }
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// The key's role may not make this request; `roles` are those that may.
    pub fn forbidden_role(detail: impl Into<String>, roles: Vec<String>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail);
        e.roles = Some(roles);
        e
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed to handle the request; the cause is in its log",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A field problem of a GET's query: 400, as every query parameter answers, not the
    /// 422 of a body field.
    pub fn in_query(mut self) -> Self {
        if self.status == StatusCode::UNPROCESSABLE_ENTITY {
            self.status = StatusCode::BAD_REQUEST;
        }
        self
    }

    /// The same error under another problem type.
    pub fn with_kind(mut self, slug: &'static str, title: &'static str) -> Self {
        self.slug = slug;
        self.title = title;
        self
    }
}

/// Logs the whole cause chain of an internal error; the response says only that one happened.
fn log_internal(e: &(dyn std::error::Error + 'static)) {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(error = %chain, "internal error");
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(errors) => ApiError::validation(errors),
            EngineError::NotFound { what, key } => {
                ApiError::not_found(format!("{what} {key} not found"))
            }
            EngineError::Conflict { field, message } => {
                let mut err = ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "Conflict",
                    message.clone(),
                );
                if let Some(f) = field {
                    err.errors.push(FieldError {
                        message: format!("{f}: {message}"),
                        field: f,
                        rule: "unique".into(),
                    });
                }
                err
            }
            EngineError::Forbidden { handler, reason } => {
                let mut err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "forbidden-by-handler",
                    "Forbidden by a handler",
                    format!("handler '{handler}' forbade this: {reason}"),
                );
                err.forbidden_by = Some(Box::new((handler, reason)));
                err
            }
            e @ (EngineError::Store(_) | EngineError::Secret(_)) => {
                log_internal(&e);
                ApiError::internal()
            }
        }
    }
}

impl ApiError {
    /// The problem document this error answers, for answers that hold several (a batch).
    pub fn into_problem(self) -> Problem {
        Problem {
            kind: format!("https://provisio.dev/problems/{}", self.slug),
            title: self.title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
            handler: self.forbidden_by.as_ref().map(|f| f.0.clone()),
            reason: self.forbidden_by.map(|f| f.1.clone()),
            roles: self.roles,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut resp = (status, axum::Json(self.into_problem())).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
