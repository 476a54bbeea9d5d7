//! The `scim` module's HTTP side: one request to the SCIM service provider with the bearer
//! token, and what each kind of failure means for the engine (RFC 7644 §3.12 errors).

use std::time::Duration;

use provisio_core::module::ModuleError;
use reqwest::{Client, Method, StatusCode, Url};
use serde_json::Value;

use crate::outbound::{self, OutboundPolicy};

/// Connecting is bounded apart from the request timeout, so that "nothing was sent" (retry)
/// is told apart from "sent, no answer" (look up first).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest error detail kept from an answer.
const DETAIL_CHARS: usize = 300;

pub(crate) const SCIM_JSON: &str = "application/scim+json";

/// A client whose connections pass `policy`; it follows no redirect, since a redirected
/// PATCH or DELETE must not silently become something else (or go somewhere else).
pub(crate) fn http_client(policy: &OutboundPolicy) -> Client {
    policy
        .http_client()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .expect("the HTTP client (rustls) initialises")
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ScimError {
    /// The outbound policy refused the address: nothing was sent, and nothing will be
    /// until the configuration changes.
    #[error("{target}: nothing was sent: {why}")]
    Refused { target: String, why: String },
    /// No connection: the request was not sent.
    #[error("{target}: could not connect, nothing was sent: {why}")]
    NotSent { target: String, why: String },
    /// Sent, but no (complete) answer came back.
    #[error("{target}: the request was sent but {why}")]
    NoAnswer { target: String, why: String },
    /// The service provider answered with an error status.
    #[error("{target}: HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        target: String,
        status: StatusCode,
        detail: Option<String>,
    },
    /// A 2xx answer that is not what SCIM promises.
    #[error("{target}: unexpected answer: {why}")]
    BadAnswer { target: String, why: String },
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The provider took a change but did not keep it (an attribute it does not support).
    #[error("{0}")]
    NotKept(String),
}

impl ScimError {
    pub(crate) fn status(&self) -> Option<StatusCode> {
        match self {
            ScimError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// `changes`: whether the action changes the remote; a read that broke off changed
    /// nothing and is simply retried.
    pub(crate) fn into_module_error(self, changes: bool) -> ModuleError {
        let message = self.to_string();
        match &self {
            ScimError::Refused { .. } => ModuleError::permanent(message),
            ScimError::NotSent { .. } => ModuleError::transient(message),
            ScimError::NoAnswer { .. } if changes => {
                ModuleError::unknown(format!("{message}; the change may have been applied"))
            }
            ScimError::NoAnswer { .. } => ModuleError::transient(message),
            ScimError::Status { status, .. } => match status.as_u16() {
                408 | 429 | 500..=599 => ModuleError::transient(message),
                401 | 403 => ModuleError::permanent(format!(
                    "{message} (the service provider refused the token)"
                )),
                _ => ModuleError::permanent(message),
            },
            // A success status was given, so the change happened; what came back cannot be
            // read, so look before doing it again.
            ScimError::BadAnswer { .. } if changes => ModuleError::unknown(message),
            ScimError::BadAnswer { .. } => ModuleError::transient(message),
            ScimError::InvalidInput(_)
            | ScimError::NotFound(_)
            | ScimError::Conflict(_)
            | ScimError::NotKept(_) => ModuleError::permanent(message),
        }
    }
}

/// A SCIM service provider as one server's settings describe it.
pub(crate) struct Remote<'a> {
    pub client: &'a Client,
    pub policy: &'a OutboundPolicy,
    /// The most of one answer that is read.
    pub max_reply_bytes: usize,
    pub base: Url,
    pub token: &'a str,
    pub timeout: Duration,
}

/// A successful answer: its status and JSON body (`Null` when empty, as for 204).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Remote<'_> {
    /// `base` + the path segments, each percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("base_url is an http(s) URL, which has a path");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    /// Sends one request; any status outside 2xx is a [`ScimError::Status`].
    pub(crate) async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Answer, ScimError> {
        let url = self.url(segments);
        // Names the operation without host or query (the filter holds a username, harmless,
        // but a base URL may carry a credential in its userinfo).
        let target = format!("{method} /{}", segments.first().copied().unwrap_or(""));
        // Address literals reach no resolver, so the policy is asked here.
        self.policy
            .check_url(&url)
            .map_err(|r| ScimError::Refused {
                target: target.clone(),
                why: r.to_string(),
            })?;
        let mut request = self
            .client
            .request(method, url)
            .bearer_auth(self.token)
            .header(reqwest::header::ACCEPT, SCIM_JSON)
            .timeout(self.timeout);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            let bytes = serde_json::to_vec(body).map_err(|_| {
                ScimError::InvalidInput("the request body could not be encoded".into())
            })?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, SCIM_JSON)
                .body(bytes);
        }
        let mut response = request.send().await.map_err(|e| {
            if let Some(refused) = outbound::refusal(&e) {
                ScimError::Refused {
                    target: target.clone(),
                    why: refused.to_string(),
                }
            } else if e.is_connect() {
                ScimError::NotSent {
                    target: target.clone(),
                    why: describe(&e),
                }
            } else if e.is_timeout() {
                ScimError::NoAnswer {
                    target: target.clone(),
                    why: format!("no answer came within {} s", self.timeout.as_secs()),
                }
            } else {
                ScimError::NoAnswer {
                    target: target.clone(),
                    why: format!("the connection failed: {}", describe(&e)),
                }
            }
        })?;
        let status = response.status();
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(None) => break,
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > self.max_reply_bytes {
                        return Err(ScimError::NoAnswer {
                            target,
                            why: format!(
                                "the answer exceeds {} bytes ([outbound] max_module_reply_bytes) and was not read",
                                self.max_reply_bytes
                            ),
                        });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(e) => {
                    return Err(ScimError::NoAnswer {
                        target,
                        why: format!("the answer could not be read: {}", describe(&e)),
                    })
                }
            }
        }
        if !status.is_success() {
            return Err(ScimError::Status {
                target,
                status,
                detail: error_detail(&bytes),
            });
        }
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| ScimError::BadAnswer {
                target,
                why: "the body is not JSON".into(),
            })?
        };
        Ok(Answer { status, body })
    }
}

/// `scimType` and `detail` of a SCIM error body (RFC 7644 §3.12), shortened.
fn error_detail(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let detail = value.get("detail").and_then(Value::as_str);
    let scim_type = value.get("scimType").and_then(Value::as_str);
    let text = match (scim_type, detail) {
        (Some(t), Some(d)) => format!("{t}: {d}"),
        (Some(t), None) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => return None,
    };
    Some(text.chars().take(DETAIL_CHARS).collect())
}

/// The error chain as one line, without the URL.
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts: Vec<String> = Vec::new();
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    if parts.is_empty() {
        let mut top = e.to_string();
        if let Some(url) = e.url() {
            top = top.replace(url.as_str(), "");
        }
        parts.push(top);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisio_core::module::ErrorKind;

    fn kind_of(status: u16, changes: bool) -> ErrorKind {
        ScimError::Status {
            target: "PATCH /Users".into(),
            status: StatusCode::from_u16(status).unwrap(),
            detail: None,
        }
        .into_module_error(changes)
        .kind
    }

    /// The statuses the scim2-server cannot be made to answer (429, 5xx) are classed like
    /// the rest of the table in docs/modules/scim.md.
    #[test]
    fn statuses_are_classed_per_rfc_7644() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(kind_of(status, true), ErrorKind::Transient, "{status}");
        }
        for status in [400, 401, 403, 404, 409, 412, 413] {
            assert_eq!(kind_of(status, true), ErrorKind::Permanent, "{status}");
        }
    }

    #[test]
    fn error_details_are_read_and_shortened() {
        let body = br#"{"status": "409", "scimType": "uniqueness", "detail": "taken"}"#;
        assert_eq!(error_detail(body).as_deref(), Some("uniqueness: taken"));
        let long = format!(r#"{{"detail": "{}"}}"#, "x".repeat(1000));
        assert_eq!(error_detail(long.as_bytes()).unwrap().len(), DETAIL_CHARS);
        assert_eq!(error_detail(b"<html>"), None);
    }
}
