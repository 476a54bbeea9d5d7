//! The chaos run's notify receiver: a local HTTP endpoint that checks each delivery's
//! Standard Webhooks signature and counts deliveries per `webhook-id`, so the run can tell
//! every event arrived and how many arrived more than once (and so needed deduplicating).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use provisio_core::webhook;

#[derive(Default)]
pub struct Received {
    /// Deliveries per `webhook-id`.
    pub by_id: HashMap<String, u32>,
    /// Deliveries whose signature did not verify (answered 400, so the engine retries).
    pub bad_signatures: u64,
}

pub struct Receiver {
    pub url: String,
    secret: Arc<webhook::Secret>,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // The receiver's own secret, given to the handler when it is created, so that it
        // verifies from the first delivery on.
        let secret = Arc::new(webhook::Secret::generate());
        let received: Arc<Mutex<Received>> = Arc::default();
        let (s, r) = (secret.clone(), received.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (s, r) = (s.clone(), r.clone());
                async move { receive(&s, &r, &headers, &body) }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            url: format!("http://{addr}/hook"),
            secret,
            received,
            task,
        })
    }

    /// The signing secret for the handler, as `whsec_…`.
    pub fn secret_text(&self) -> secrecy::SecretString {
        self.secret.encode()
    }

    pub fn with<R>(&self, f: impl FnOnce(&Received) -> R) -> R {
        f(&self.received.lock().expect("receiver state"))
    }
}

fn receive(
    secret: &webhook::Secret,
    received: &Mutex<Received>,
    headers: &HeaderMap,
    body: &[u8],
) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let id = header(webhook::HEADER_ID);
    let verified = webhook::verify(
        secret,
        id,
        header(webhook::HEADER_TIMESTAMP),
        header(webhook::HEADER_SIGNATURE),
        body,
        chrono::Utc::now().timestamp(),
        webhook::DEFAULT_TOLERANCE_SECS,
    )
    .is_ok();
    let mut r = received.lock().expect("receiver state");
    if !verified || id.is_empty() {
        r.bad_signatures += 1;
        return StatusCode::BAD_REQUEST;
    }
    *r.by_id.entry(id.to_string()).or_default() += 1;
    StatusCode::NO_CONTENT
}
