//! `Idempotency-Key` on every POST: a retried request gets the first one's answer instead of
//! a second effect; the same key on another request, or while the first still runs, is a 409.
//!
//! Keys belong to the API key that sent them. The first request's answer is kept sealed for
//! `[retention] idempotency_keys` (24 hours by default); only an answer that took effect (a
//! 2xx) is kept: a refused or failed request changed nothing, so its key is let go and a
//! retry runs afresh. The request runs in its own task, so a caller that gives up (a client
//! timeout) does not cancel it half-way: its retry finds the answer kept.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use provisio_store::IdempotencyClaim;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::access::Caller;
use crate::error::ApiError;
use crate::AppState;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer given again from a kept one.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted; Stripe's limit, which billing systems already fit.
pub const MAX_LEN: usize = 255;

/// The key of the request being handled, as handlers see it (an order placed under it).
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    api_key_id: i64,
    key: String,
}

impl IdempotencyKey {
    /// The order key a service created by this request is stored under, so that even a
    /// request cut short by a crash and run again finds the service it placed.
    pub fn order_key(&self) -> String {
        order_key(self.api_key_id, &self.key)
    }
}

/// The order key of an order placed under `key` by API key `api_key_id` (one request's
/// header, or one item of a batch: the same key means the same order either way).
pub fn order_key(api_key_id: i64, key: &str) -> String {
    format!("idem:{api_key_id}:{key}")
}

/// Checks a key as sent: 1 to 255 visible ASCII characters. `status` is what a bad one
/// answers: 400 for the header, 422 for a body field.
pub fn parse_key(status: StatusCode, field: &str, raw: &[u8]) -> Result<String, ApiError> {
    if raw.is_empty() || raw.len() > MAX_LEN || !raw.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_field(
            status,
            field,
            "pattern",
            format!("must be 1 to {MAX_LEN} visible ASCII characters (no spaces)"),
        ));
    }
    Ok(String::from_utf8_lossy(raw).into_owned())
}

#[derive(Clone)]
pub struct Idempotency {
    pub app: AppState,
    /// How long a request may hold its key before another node may take it over: longer
    /// than any request can run.
    pub hold: Duration,
}

/// An answer as kept: enough to give it again byte for byte.
#[derive(Serialize, Deserialize)]
struct Kept {
    status: u16,
    content_type: Option<String>,
    location: Option<String>,
    body: String,
}

fn conflict(detail: String, rule: &str) -> ApiError {
    ApiError::bad_field(StatusCode::CONFLICT, "Idempotency-Key", rule, detail)
        .with_kind("idempotency-conflict", "Idempotency-Key conflict")
}

fn fingerprint(method: &Method, uri: &axum::http::Uri, headers: &HeaderMap, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update([0]);
    h.update(
        uri.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("")
            .as_bytes(),
    );
    h.update([0]);
    // The media type alone: `application/json; charset=utf-8` is the same request.
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    h.update(ct.as_bytes());
    h.update([0]);
    h.update(body);
    format!("{:x}", h.finalize())
}

pub async fn idempotent(State(idem): State<Idempotency>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match parse_key(StatusCode::BAD_REQUEST, "Idempotency-Key", raw.as_bytes()) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        // Only keyed routes get here; without a caller there is no one to scope the key to.
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let limit = parts
        .extensions
        .get::<crate::extract::BodyLimit>()
        .map_or(usize::MAX, |l| l.0);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Body too large",
                "the request body is larger than this server accepts (max_body_bytes)",
            )
            .into_response()
        }
    };
    let fp = fingerprint(&parts.method, &parts.uri, &parts.headers, &bytes);
    let engine = idem.app.engine.clone();
    let store = engine.store().clone();
    let now = engine.now();
    let hold = chrono::Duration::from_std(idem.hold).unwrap_or(chrono::Duration::hours(1));
    let expired_before = match engine.options().retention.idempotency_keys {
        Some(ttl) => now - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        None => chrono::DateTime::<chrono::Utc>::MIN_UTC,
    };
    let claim = store
        .claim_idempotency_key(caller.key_id, &key, &fp, now, now + hold, expired_before)
        .await;
    match claim {
        Err(e) => return ApiError::from(provisio_engine::EngineError::from(e)).into_response(),
        Ok(IdempotencyClaim::Done {
            fingerprint,
            status,
            response,
        }) => {
            if fingerprint != fp {
                return reused(&key).into_response();
            }
            return match engine
                .open_secret(&response)
                .ok()
                .and_then(|t| serde_json::from_str::<Kept>(t.expose_secret()).ok())
            {
                Some(kept) if kept.status == status => replay(kept),
                _ => {
                    tracing::error!(
                        key_id = caller.key_id,
                        "a kept idempotent answer could not be opened"
                    );
                    ApiError::internal().into_response()
                }
            };
        }
        Ok(IdempotencyClaim::Running { fingerprint, .. }) => {
            if fingerprint != fp {
                return reused(&key).into_response();
            }
            let mut r = conflict(
                format!("a request with Idempotency-Key '{key}' is still running; retry shortly"),
                "in_progress",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Ok(IdempotencyClaim::Claimed) => {}
    }
    parts.extensions.insert(IdempotencyKey {
        api_key_id: caller.key_id,
        key: key.clone(),
    });
    let req = Request::from_parts(parts, Body::from(bytes));
    // Its own task, keeping the answer too: a caller that hangs up (a client timeout) drops
    // this future, and must not cut the request off between its effect and the keeping of
    // its answer. The actor it acts as goes with it.
    let limit = idem.hold;
    let api_key_id = caller.key_id;
    let task = tokio::spawn(provisio_engine::inherit_catalog(provisio_store::inherit(
        async move {
            let answered = tokio::time::timeout(limit, next.run(req)).await;
            let answered = match answered {
                Ok(resp) => {
                    let (parts, body) = resp.into_parts();
                    axum::body::to_bytes(body, usize::MAX)
                        .await
                        .ok()
                        .map(|b| (parts, b))
                }
                Err(_) => None,
            };
            let kept = answered.as_ref().and_then(|(parts, bytes)| {
                let text = std::str::from_utf8(bytes).ok()?;
                parts.status.is_success().then(|| Kept {
                    status: parts.status.as_u16(),
                    content_type: header_text(&parts.headers, header::CONTENT_TYPE),
                    location: header_text(&parts.headers, header::LOCATION),
                    body: text.to_string(),
                })
            });
            match kept {
                Some(kept) => {
                    let sealed = engine.seal_secret(&SecretString::from(
                        serde_json::to_string(&kept).expect("plain data serializes"),
                    ));
                    if let Err(e) = store
                        .finish_idempotency_key(api_key_id, &key, kept.status, &sealed)
                        .await
                    {
                        // The effect stands; a retry finds the key running until its hold
                        // ends, then runs again, and an order finds the service it placed.
                        tracing::error!(error = %e, "keeping an idempotent answer failed");
                    }
                }
                // Refused or failed: it changed nothing, so a retry may run afresh.
                None => {
                    if let Err(e) = store.release_idempotency_key(api_key_id, &key).await {
                        tracing::warn!(error = %e, "letting an idempotency key go failed");
                    }
                }
            }
            answered
        },
    )));
    match task.await {
        Ok(Some((parts, bytes))) => Response::from_parts(parts, Body::from(bytes)),
        _ => ApiError::internal().into_response(),
    }
}

fn reused(key: &str) -> ApiError {
    conflict(
        format!(
            "Idempotency-Key '{key}' was already used by this API key for a different request \
             (method, path or body); use a new key for a new request"
        ),
        "reused",
    )
}

fn header_text(h: &HeaderMap, name: HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

fn replay(kept: Kept) -> Response {
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut r = (status, Bytes::from(kept.body)).into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, kept.content_type),
        (header::LOCATION, kept.location),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            h.insert(name, v);
        }
    }
    h.insert(REPLAYED, HeaderValue::from_static("true"));
    r
}
