//! A small client for Provisio's REST API: requests with the API key, one-line errors from
//! `application/problem+json` answers, and cursor-following listings.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

/// Long enough for a busy server, short enough that a hung one does not hang a script forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest page the API serves, used when every page is wanted anyway.
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_PAGE: u32 = 50;

/// A connection to one Provisio instance.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    /// The base URL as given, without a trailing slash, so paths can be appended as text.
    base: String,
    key: Option<SecretString>,
}

/// The records of a listing and whether the server holds more than were fetched.
#[derive(Debug, Default)]
pub struct Listing {
    pub items: Vec<Value>,
    pub more: bool,
}

impl Api {
    /// Checks the base URL now, so a typo fails before any request with a message naming it.
    pub fn new(base_url: String, api_key: Option<String>) -> anyhow::Result<Api> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let url = Url::parse(&base).map_err(|e| anyhow!("invalid --url '{base_url}': {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("invalid --url '{base_url}': the scheme must be http or https");
        }
        if url.query().is_some() || url.fragment().is_some() {
            bail!("invalid --url '{base_url}': it must not have a query or fragment");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("provisio-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        let key = api_key
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .map(SecretString::from);
        Ok(Api { http, base, key })
    }

    /// The base URL requests go to, for messages.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET path`; `path` starts with `/v1/` and has its variable segments encoded with
    /// [`segment`].
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, &[], None, REQUEST_TIMEOUT)
            .await
    }

    /// `GET path?query`; pairs with an empty value are left out, so unset filters can be
    /// passed through as they are.
    pub async fn get_with(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.send(Method::GET, path, query, None, REQUEST_TIMEOUT)
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(Method::POST, path, &[], Some(body), REQUEST_TIMEOUT)
            .await
    }

    /// `POST path` without a body, and so without a Content-Type: the server takes its
    /// defaults.
    pub async fn post_empty(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::POST, path, &[], None, REQUEST_TIMEOUT)
            .await
    }

    /// `POST path?query` with a body or none, for a request the server may hold open for up
    /// to `hold` on purpose (`?wait=SECS`): the usual timeout is extended by that much.
    pub async fn post_held(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        hold: Duration,
    ) -> anyhow::Result<Value> {
        self.send(Method::POST, path, query, body, REQUEST_TIMEOUT + hold)
            .await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(Method::PATCH, path, &[], Some(body), REQUEST_TIMEOUT)
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(Method::PUT, path, &[], Some(body), REQUEST_TIMEOUT)
            .await
    }

    /// `DELETE path`; `Value::Null` when the server answers 204 without a body.
    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::DELETE, path, &[], None, REQUEST_TIMEOUT)
            .await
    }

    /// Fetches `limit` records of a listing, or with `all` every record, `limit` per request.
    pub async fn list(
        &self,
        path: &str,
        filters: &[(&str, String)],
        limit: u32,
        all: bool,
    ) -> anyhow::Result<Listing> {
        let mut listing = Listing::default();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = filters.to_vec();
            query.push(("limit", limit.to_string()));
            if let Some(c) = cursor.take() {
                query.push(("cursor", c));
            }
            let page = self.get_with(path, &query).await?;
            let (items, next) = split_page(page)
                .ok_or_else(|| anyhow!("Provisio at {} sent a listing without items", self.base))?;
            listing.items.extend(items);
            match next {
                Some(next) if all => cursor = Some(next),
                next => {
                    listing.more = next.is_some();
                    return Ok(listing);
                }
            }
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let url = self.url(path, query)?;
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(key) = &self.key {
            // bearer_auth marks the header sensitive, which keeps it out of debug output.
            request = request.bearer_auth(key.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, timeout))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e, timeout))?;
        if !status.is_success() {
            let mut line = problem_line(status, &bytes);
            if status == StatusCode::UNAUTHORIZED && self.key.is_none() {
                line.push_str(" (no API key given: use --api-key or PROVISIO_API_KEY)");
            }
            bail!(line);
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|_| {
            anyhow!(
                "Provisio at {} answered {} with a body that is not JSON: is --url right?",
                self.base,
                status.as_u16()
            )
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Url> {
        let mut url = Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| anyhow!("cannot build a URL from '{}{path}': {e}", self.base))?;
        let pairs: Vec<_> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !pairs.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn transport_error(&self, e: &reqwest::Error, timeout: Duration) -> anyhow::Error {
        let root = root_cause(e);
        if e.is_connect() {
            if is_refused(e) {
                anyhow!(
                    "cannot reach Provisio at {}: is 'provisio serve' running?",
                    self.base
                )
            } else {
                anyhow!("cannot reach Provisio at {}: {root}", self.base)
            }
        } else if e.is_timeout() {
            anyhow!(
                "Provisio at {} did not answer within {} seconds",
                self.base,
                timeout.as_secs()
            )
        } else {
            anyhow!("request to Provisio at {} failed: {root}", self.base)
        }
    }
}

/// Encodes one variable path segment (a name may hold characters that mean something in a URL).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The items and next cursor of one listing page, or `None` if the page has no `items` array.
fn split_page(mut page: Value) -> Option<(Vec<Value>, Option<String>)> {
    let next = match page.get("next_cursor") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        // Tolerate a numeric cursor: it is opaque to us either way.
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match page.get_mut("items")?.take() {
        Value::Array(items) => Some((items, next)),
        _ => None,
    }
}

/// One line describing an error response: the status code, the problem's `detail` (or
/// `title`), and for validation errors every field message, e.g.
/// `422 invalid input: settings.port: must be at most 65535; name: must not be empty`.
pub fn problem_line(status: StatusCode, body: &[u8]) -> String {
    let code = status.as_u16();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let problem: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        // Not a problem document (a proxy's page, plain text): show its first line, briefly.
        _ => {
            let text = String::from_utf8_lossy(body);
            let first = text.lines().map(str::trim).find(|l| !l.is_empty());
            return match first {
                Some(line) => format!("{code} {}", truncate(line, 200)),
                None => format!("{code} {reason}"),
            };
        }
    };
    let text = |key: &str| {
        problem
            .get(key)
            .and_then(Value::as_str)
            .map(one_line)
            .filter(|s| !s.is_empty())
    };
    let detail = text("detail");
    let messages: Vec<String> = problem
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(field_message)
        .collect();
    if messages.is_empty() {
        let base = detail.or_else(|| text("title")).unwrap_or(reason);
        return format!("{code} {base}");
    }
    // The server may already have put the messages into `detail`; never say them twice,
    // but keep a detail that adds something ("invalid input").
    let prefix = detail
        .filter(|d| !messages.iter().any(|m| d.contains(m.as_str())))
        .unwrap_or_else(|| "invalid input".to_string());
    format!("{code} {prefix}: {}", messages.join("; "))
}

/// A validation error's message, prefixed with its field unless the message names it already.
fn field_message(error: &Value) -> Option<String> {
    let message = error.get("message").and_then(Value::as_str).map(one_line);
    let field = error.get("field").and_then(Value::as_str).unwrap_or("");
    match message {
        Some(m) if field.is_empty() || m.starts_with(field) => Some(m),
        Some(m) => Some(format!("{field}: {m}")),
        None if !field.is_empty() => {
            let rule = error
                .get("rule")
                .and_then(Value::as_str)
                .unwrap_or("invalid");
            Some(format!("{field}: {rule}"))
        }
        None => None,
    }
}

/// Main prints errors as one line; a multi-line server message must not break that.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(status: u16, body: &Value) -> String {
        let status = StatusCode::from_u16(status).unwrap();
        problem_line(status, body.to_string().as_bytes())
    }

    #[test]
    fn validation_errors_are_joined_after_the_detail() {
        let body = json!({
            "type": "about:blank", "title": "Unprocessable Entity", "status": 422,
            "detail": "invalid input",
            "errors": [
                {"field": "settings.port", "rule": "max", "message": "settings.port: must be at most 65535"},
                {"field": "name", "rule": "required", "message": "must not be empty"},
            ]
        });
        assert_eq!(
            line(422, &body),
            "422 invalid input: settings.port: must be at most 65535; name: must not be empty"
        );
    }

    #[test]
    fn messages_already_in_the_detail_are_not_repeated() {
        let body = json!({
            "title": "Unprocessable Entity", "status": 422,
            "detail": "invalid input: name: must not be empty",
            "errors": [{"field": "name", "rule": "required", "message": "name: must not be empty"}]
        });
        assert_eq!(
            line(422, &body),
            "422 invalid input: name: must not be empty"
        );
    }

    #[test]
    fn plain_problems_show_their_detail_or_title() {
        let not_found =
            json!({"title": "Not Found", "status": 404, "detail": "client 7 not found"});
        assert_eq!(line(404, &not_found), "404 client 7 not found");
        let conflict =
            json!({"title": "Conflict", "status": 409, "detail": "name is already taken"});
        assert_eq!(line(409, &conflict), "409 name is already taken");
        let untitled = json!({"title": "Unauthorized", "status": 401});
        assert_eq!(line(401, &untitled), "401 Unauthorized");
    }

    #[test]
    fn multi_line_details_become_one_line() {
        let body = json!({"status": 500, "detail": "storage\n  failed"});
        assert_eq!(line(500, &body), "500 storage failed");
    }

    #[test]
    fn bodies_that_are_not_problems_still_give_one_line() {
        let status = StatusCode::BAD_GATEWAY;
        assert_eq!(problem_line(status, b""), "502 bad gateway");
        assert_eq!(
            problem_line(status, b"\n<html>upstream down</html>\nmore"),
            "502 <html>upstream down</html>"
        );
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("radius-1.eu"), "radius-1.eu");
        assert_eq!(segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn pages_split_into_items_and_cursor() {
        let (items, next) = split_page(json!({"items": [1, 2], "next_cursor": "abc"})).unwrap();
        assert_eq!((items.len(), next.as_deref()), (2, Some("abc")));
        let (_, next) = split_page(json!({"items": [], "next_cursor": null})).unwrap();
        assert_eq!(next, None);
        assert!(split_page(json!({"nope": 1})).is_none());
    }

    #[test]
    fn urls_keep_a_base_path_and_skip_empty_filters() {
        let api = Api::new("http://example.test/provisio/".into(), None).unwrap();
        let url = api
            .url(
                "/v1/clients",
                &[("status", "active".into()), ("email", String::new())],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://example.test/provisio/v1/clients?status=active"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_with_the_flag_named() {
        let e = Api::new("ftp://x".into(), None).unwrap_err().to_string();
        assert!(e.starts_with("invalid --url 'ftp://x'"), "{e}");
        assert!(Api::new("not a url".into(), None).is_err());
    }

    /// Answers one request per canned `(status, body)` on a local port, closing each
    /// connection, and returns the base URL and the request heads it received.
    async fn canned(
        answers: Vec<(u16, &'static str)>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for (status, body) in answers {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before the request ended");
                    head.extend_from_slice(&buf[..n]);
                }
                heads.push(String::from_utf8_lossy(&head).to_lowercase());
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(response.as_bytes()).await.unwrap();
            }
            heads
        });
        (base, server)
    }

    #[tokio::test]
    async fn all_follows_the_cursor_and_sends_the_key() {
        let (base, server) = canned(vec![
            (
                200,
                r#"{"items": [{"id": 1}, {"id": 2}], "next_cursor": "c2"}"#,
            ),
            (200, r#"{"items": [{"id": 3}], "next_cursor": null}"#),
        ])
        .await;
        let api = Api::new(base, Some("k123".into())).unwrap();
        let filters = [("status", "active".to_string()), ("email", String::new())];
        let listing = api.list("/v1/clients", &filters, 2, true).await.unwrap();
        assert_eq!(listing.items.len(), 3);
        assert!(!listing.more);
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("get /v1/clients?status=active&limit=2 "),
            "{}",
            heads[0]
        );
        assert!(
            heads[1].starts_with("get /v1/clients?status=active&limit=2&cursor=c2 "),
            "{}",
            heads[1]
        );
        assert!(heads
            .iter()
            .all(|h| h.contains("authorization: bearer k123")));
    }

    #[tokio::test]
    async fn one_page_says_whether_more_remain() {
        let (base, server) = canned(vec![(
            200,
            r#"{"items": [{"id": 1}], "next_cursor": "c1"}"#,
        )])
        .await;
        let api = Api::new(base, None).unwrap();
        let listing = api.list("/v1/servers", &[], 1, false).await.unwrap();
        assert_eq!((listing.items.len(), listing.more), (1, true));
        let heads = server.await.unwrap();
        assert!(!heads[0].contains("authorization"));
    }

    #[tokio::test]
    async fn posts_without_a_body_send_no_content_type() {
        let (base, server) = canned(vec![
            (202, r#"{"id": 1, "state": "pending"}"#),
            (200, r#"{"id": 2, "state": "done"}"#),
            (200, r#"{"ok": true, "error": null}"#),
        ])
        .await;
        let api = Api::new(base, None).unwrap();
        let queued = api
            .post_held("/v1/services/5/renew", &[], None, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(queued["state"], "pending");
        let body = serde_json::json!({"reason": "holiday"});
        let wait = [("wait", "30".to_string())];
        let done = api
            .post_held(
                "/v1/services/5/suspend",
                &wait,
                Some(&body),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert_eq!(done["state"], "done");
        api.post_empty("/v1/servers/r1/test").await.unwrap();
        let heads = server.await.unwrap();
        assert!(
            heads[0].starts_with("post /v1/services/5/renew "),
            "{}",
            heads[0]
        );
        assert!(!heads[0].contains("content-type"), "{}", heads[0]);
        assert!(
            heads[1].starts_with("post /v1/services/5/suspend?wait=30 "),
            "{}",
            heads[1]
        );
        assert!(heads[1].contains("content-type: application/json"));
        assert!(!heads[2].contains("content-type"), "{}", heads[2]);
    }

    #[tokio::test]
    async fn errors_and_empty_answers_come_back_as_expected() {
        let (base, _server) = canned(vec![
            (204, ""),
            (
                404,
                r#"{"title": "Not Found", "status": 404, "detail": "client 7 not found"}"#,
            ),
            (
                401,
                r#"{"title": "Unauthorized", "status": 401, "detail": "missing API key"}"#,
            ),
        ])
        .await;
        let api = Api::new(base, None).unwrap();
        assert_eq!(api.delete("/v1/clients/7").await.unwrap(), Value::Null);
        let e = api.get("/v1/clients/7").await.unwrap_err();
        assert_eq!(e.to_string(), "404 client 7 not found");
        let e = api.get("/v1/clients").await.unwrap_err().to_string();
        assert!(
            e.starts_with("401 missing API key (no API key given"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url_and_the_fix() {
        // Bind then drop a listener to get a local port that nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let api = Api::new(base.clone(), None).unwrap();
        let e = api.get("/v1/clients").await.unwrap_err().to_string();
        assert_eq!(
            e,
            format!("cannot reach Provisio at {base}: is 'provisio serve' running?")
        );
    }
}
