//! One HTTP exchange of the `http` module, and what a transport failure means for the
//! engine: nothing was sent (retry), or the request may have arrived (look up first).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, Url};

use crate::outbound::{self, OutboundPolicy};

/// Connecting is bounded separately from `timeout_seconds`, so that a host that does not
/// accept the connection is told apart from one that took the request and went quiet:
/// only the second may have acted on it. Below this, a hanging connect hits the request
/// timeout first and is reported as an unknown outcome, which is safe, just slower.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client whose connections pass `policy`. It follows no redirect: a redirected POST
/// silently becomes a GET, and a provisioning call must not change meaning (or target) on
/// its way, so a 3xx is an answer like any other.
pub(crate) fn client(policy: &OutboundPolicy) -> Client {
    policy
        .http_client()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .expect("the HTTP client (rustls) initialises")
}

/// What to send.
pub(crate) struct Outgoing {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// The remote answered with a status; the body may still have failed to arrive.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Result<Vec<u8>, BodyError>,
}

#[derive(Debug)]
pub(crate) enum BodyError {
    /// Cut or timed out while reading; the text describes the transport, not the data.
    Failed(String),
    TooLarge(usize),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Failed(why) => write!(f, "the response body could not be read: {why}"),
            BodyError::TooLarge(max) => write!(
                f,
                "the response body exceeds {max} bytes ([outbound] max_module_reply_bytes)"
            ),
        }
    }
}

/// No status came back.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The request never left: no connection (refused, DNS, connect timeout, TLS).
    NotSent(String),
    /// The request may have been received: timed out or cut after it was sent.
    Unknown(String),
    /// The outbound policy refused the address; nothing was sent, and retrying cannot
    /// help until the configuration changes.
    Refused(String),
}

/// Sends `out` and reads at most `max_body` bytes of the answer: a larger one is not read,
/// since it would sit in memory while being parsed.
pub(crate) async fn exchange(
    client: &Client,
    policy: &OutboundPolicy,
    max_body: usize,
    mut out: Outgoing,
) -> Result<Answer, Failure> {
    let timeout = out.timeout;
    crate::trace::propagate(&mut out.headers);
    // Address literals reach no resolver, so the policy is asked here.
    policy
        .check_url(&out.url)
        .map_err(|r| Failure::Refused(r.to_string()))?;
    let mut request = client
        .request(out.method, out.url)
        .headers(out.headers)
        .timeout(timeout);
    if let Some(body) = out.body {
        request = request.body(body);
    }
    let mut response = request.send().await.map_err(|e| classify(e, timeout))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    let body = loop {
        match response.chunk().await {
            Ok(None) => break Ok(body),
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_body {
                    break Err(BodyError::TooLarge(max_body));
                }
                body.extend_from_slice(&chunk);
            }
            Err(e) => break Err(BodyError::Failed(describe(&e))),
        }
    };
    Ok(Answer { status, body })
}

fn classify(e: reqwest::Error, timeout: Duration) -> Failure {
    if let Some(refused) = outbound::refusal(&e) {
        return Failure::Refused(refused.to_string());
    }
    // reqwest marks every failure to establish the connection, including the connect
    // timeout, as a connect error; the request has not been written then.
    if e.is_connect() {
        return Failure::NotSent(describe(&e));
    }
    if e.is_timeout() {
        return Failure::Unknown(format!("no answer came within {} s", timeout.as_secs()));
    }
    Failure::Unknown(format!("the connection failed: {}", describe(&e)))
}

/// The error chain as one line, without the URL (whose query may carry a credential).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        // Wrappers often repeat their source's text; keep each piece once.
        if !parts.iter().any(|p: &String| p.contains(&text)) {
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
