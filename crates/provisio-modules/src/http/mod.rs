//! The `http` module: declarative JSON/REST. Each server lists, per action, the request to
//! send (method, URL, headers, query and body templates) and how to read the answer
//! (success rule, error classes, outputs and reply mappings), so a REST API can be
//! integrated without code. The reference is `docs/modules/http.md`.

mod exchange;
mod reply;
mod spec;
mod template;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use provisio_core::module::{
    Action, ActionReply, ActionRequest, Capability, Module, ModuleError, ModuleInfo, SchemaScope,
};
use provisio_core::settings::{Field, FieldError, Settings, SettingsSchema};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use serde_json::Value;

use crate::outbound::OutboundPolicy;
use crate::render::off_runtime;
use exchange::{Failure, Outgoing};
use spec::ActionSpec;
use template::{Context, Templates};

pub use spec::rule;

const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

/// The `http` module. One instance serves every server that uses it: the HTTP client (and
/// so its connection pool) and the template environment are shared.
pub struct HttpModule {
    info: ModuleInfo,
    templates: Arc<Templates>,
    client: reqwest::Client,
    policy: OutboundPolicy,
    max_reply_bytes: usize,
}

impl HttpModule {
    /// With the default outbound policy and reply cap.
    pub fn new() -> Self {
        Self::with(&crate::ModuleOptions::default())
    }

    pub fn with(options: &crate::ModuleOptions) -> Self {
        Self {
            info: info(),
            templates: Arc::new(Templates::with_limits(options.templates)),
            client: exchange::client(&options.outbound),
            policy: options.outbound.clone(),
            max_reply_bytes: options.max_reply_bytes,
        }
    }
}

impl Default for HttpModule {
    fn default() -> Self {
        Self::new()
    }
}

fn info() -> ModuleInfo {
    let server_schema = SettingsSchema::new(vec![
        Field::url("base_url", "Base URL")
            .required()
            .help("Prefix of every relative action URL, e.g. https://api.example.com/v2."),
        Field::enumeration("auth", "Authentication", &["none", "basic", "bearer", "header"])
            .default_value("none")
            .help("basic: username and password; bearer: token; header: header_name and header_value."),
        Field::string("username", "Username")
            .required_when("auth", "basic")
            .help("The basic authentication user."),
        Field::secret("password", "Password")
            .required_when("auth", "basic")
            .help("The basic authentication password; stored encrypted."),
        Field::secret("token", "Bearer token")
            .required_when("auth", "bearer")
            .help("Sent as Authorization: Bearer <token>; stored encrypted."),
        Field::string("header_name", "Header name")
            .pattern(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
            .required_when("auth", "header")
            .help("The header that carries the credential, e.g. X-Api-Key."),
        Field::secret("header_value", "Header value")
            .required_when("auth", "header")
            .help("The credential sent in header_name; stored encrypted."),
        Field::integer("timeout_seconds", "Timeout (seconds)", Some(1), Some(300))
            .default_value(DEFAULT_TIMEOUT_SECONDS as i64)
            .help("How long one request may take; a request that times out after it was sent is an unknown outcome."),
        Field::json("actions", "Actions")
            .required()
            .help("An object keyed by action name; each value describes the request and how to read its answer (see docs/modules/http.md)."),
    ]);
    // Product and service settings are whatever the action templates refer to.
    let product_schema = SettingsSchema::new(vec![]).allow_extra();
    let service_schema = SettingsSchema::new(vec![]).allow_extra();
    ModuleInfo {
        name: "http".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "Declarative JSON/REST: per action a request template, a success rule and output mappings.".into(),
        // Which actions work depends on each server's `actions`; an unconfigured one fails
        // with a permanent error that says so.
        capabilities: Capability::lifecycle_and(&[Capability::Lookup, Capability::ListAccounts, Capability::Usage, Capability::LoginUrl, Capability::TestConnection]),
        custom_actions: vec![],
        server_schema,
        product_schema,
        service_schema,
    }
}

#[async_trait::async_trait]
impl Module for HttpModule {
    fn info(&self) -> &ModuleInfo {
        &self.info
    }

    fn check_settings(&self, scope: SchemaScope, settings: &Settings) -> Vec<FieldError> {
        match (scope, settings.get("actions")) {
            (SchemaScope::Server, Some(actions)) => spec::check_actions(&self.templates, actions),
            _ => Vec::new(),
        }
    }

    /// Every key of the server's `actions` that is not a standard action.
    fn custom_actions(&self, server_settings: &Settings) -> Vec<String> {
        server_settings
            .get("actions")
            .and_then(|a| a.as_object())
            .map(|a| {
                a.keys()
                    .filter(|k| Action::standard(k).is_none())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The basic `Authorization` value as sent, which a remote may echo.
    fn more_secrets(&self, request: &ActionRequest) -> Vec<String> {
        let setting = |key: &str| request.server.settings.get(key).and_then(Value::as_str);
        match (setting("username"), setting("password")) {
            (Some(user), Some(password)) => {
                vec![base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))]
            }
            _ => Vec::new(),
        }
    }

    async fn call(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        // Secrets are taken out where excerpts are cut, before the cut could split one; the
        // registry's layer redacts whatever else leaves.
        let secrets = crate::secrets_of(self, request);
        self.run(request, &secrets).await
    }
}

impl HttpModule {
    async fn run(
        &self,
        request: &ActionRequest,
        secrets: &Secrets,
    ) -> Result<ActionReply, ModuleError> {
        let name = request.action.as_str();
        let settings = &request.server.settings;
        let Some(raw) = settings.get("actions").and_then(|a| a.get(name)) else {
            return Err(ModuleError::permanent(format!(
                "action {name} is not configured for this server"
            )));
        };
        let spec = spec::parse_action(&self.templates, name, raw).map_err(|errors| {
            let list: Vec<_> = errors.iter().map(|e| e.message.as_str()).collect();
            ModuleError::permanent(format!(
                "{name}: the server's action settings are invalid: {}",
                list.join("; ")
            ))
        })?;
        let connection = Connection::from_settings(settings)
            .map_err(|why| ModuleError::permanent(format!("{name}: {why}")))?;
        let request_json = Arc::new(
            serde_json::to_value(request)
                .map_err(|_| ModuleError::permanent(format!("{name}: the request is not JSON")))?,
        );
        let spec = Arc::new(spec);
        // Templates run on the blocking pool: a heavy one (up to its fuel) must never hold
        // an async worker that the API and the engine's loops need.
        let outgoing = {
            let (templates, spec, json) =
                (self.templates.clone(), spec.clone(), request_json.clone());
            let key = request.idempotency_key.clone();
            let action = name.to_string();
            off_runtime(move || {
                let ctx = Context::new(json.as_ref().clone());
                prepare(&templates, &action, &spec, &connection, &key, &ctx)
            })
            .await
            .map_err(|why| ModuleError::transient(format!("{name}: {why}")))??
        };

        let target = secrets.redact(&format!("{} {}", outgoing.method, outgoing.url.path()));
        let started = Instant::now();
        let answer =
            exchange::exchange(&self.client, &self.policy, self.max_reply_bytes, outgoing).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let answer = match answer {
            Ok(answer) => answer,
            Err(Failure::NotSent(why)) => {
                tracing::debug!(action = name, %target, elapsed_ms, "http: not sent");
                return Err(ModuleError::transient(format!(
                    "{name}: {target}: could not connect, nothing was sent: {why}"
                )));
            }
            Err(Failure::Refused(why)) => {
                tracing::debug!(action = name, %target, "http: refused by the outbound policy");
                return Err(ModuleError::permanent(format!(
                    "{name}: {target}: nothing was sent: {why}"
                )));
            }
            Err(Failure::Unknown(why)) => {
                tracing::debug!(action = name, %target, elapsed_ms, "http: no answer");
                return Err(ModuleError::unknown(format!(
                    "{name}: {target}: the request was sent but {why}; the outcome is unknown"
                )));
            }
        };
        tracing::debug!(action = name, %target, status = answer.status, elapsed_ms, "http: answered");
        // Parsing a large answer and rendering `next_template` are work of the same kind.
        let read_only = is_read_only(&request.action);
        // A connection test reports whether the remote works, not what it says: its
        // answer goes to whoever may test a server, who may not be meant to read it.
        let show_body = !matches!(request.action, Action::TestConnection);
        let (templates, secrets) = (self.templates.clone(), secrets.clone());
        let action = name.to_string();
        off_runtime(move || {
            let reading = reply::Reading {
                action: &action,
                target,
                read_only,
                spec: &spec,
                secrets: &secrets,
                templates: &templates,
                request: &request_json,
                show_body,
            };
            reading.read(answer)
        })
        .await
        .map_err(|why| ModuleError::unknown(format!("{name}: {why}")))?
    }
}

/// Renders the request: URL and query, headers (defaults, auth, then the spec's own,
/// which win), and the body.
fn prepare(
    templates: &Templates,
    name: &str,
    spec: &ActionSpec,
    connection: &Connection,
    idempotency_key: &str,
    ctx: &Context,
) -> Result<Outgoing, ModuleError> {
    let template_error = |field: &str, e: &dyn std::fmt::Display| {
        ModuleError::permanent(format!("{name}: template actions.{name}.{field}: {e}"))
    };
    let rendered = templates
        .render_url(&spec.url, ctx)
        .map_err(|e| template_error("url", &e))?;
    let mut url = resolve(&connection.base_url, &rendered).ok_or_else(|| {
        ModuleError::permanent(format!(
            "{name}: actions.{name}.url does not render an http(s) URL"
        ))
    })?;
    let mut pairs = Vec::new();
    for (key, template) in &spec.query {
        let value = templates
            .render(template, ctx)
            .map_err(|e| template_error(&format!("query.{key}"), &e))?;
        // An empty value means "not this time" (a first page has no cursor).
        if !value.is_empty() {
            pairs.push((key, value));
        }
    }
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }

    let body = match &spec.body {
        None => None,
        Some(template) => {
            let value = templates.render_json(template, ctx).map_err(|(path, e)| {
                let field = if path.is_empty() {
                    "body".into()
                } else {
                    format!("body.{path}")
                };
                template_error(&field, &e)
            })?;
            let bytes = serde_json::to_vec(&value).map_err(|_| {
                ModuleError::permanent(format!("{name}: the body cannot be written as JSON"))
            })?;
            // Each leaf is capped; together they are held to the same bound.
            let max = templates.limits().max_output_bytes;
            if bytes.len() > max {
                return Err(ModuleError::permanent(format!(
                    "{name}: template actions.{name}.body: the rendered body exceeds {max} bytes"
                )));
            }
            Some(bytes)
        }
    };

    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if body.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let key = HeaderValue::from_str(idempotency_key).map_err(|_| {
        ModuleError::permanent(format!(
            "{name}: the idempotency key is not a valid header value"
        ))
    })?;
    headers.insert("idempotency-key", key);
    if let Some((header_name, value)) = connection.auth.header() {
        headers.insert(header_name, value);
    }
    for (header_name, template) in &spec.headers {
        let field = format!("headers.{header_name}");
        let value = templates
            .render(template, ctx)
            .map_err(|e| template_error(&field, &e))?;
        let header_name = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
            ModuleError::permanent(format!(
                "{name}: actions.{name}.{field} is not a valid header name"
            ))
        })?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ModuleError::permanent(format!(
                "{name}: actions.{name}.{field} renders a value HTTP does not allow in a header"
            ))
        })?;
        // The value may carry a credential; keep it out of any debug output.
        value.set_sensitive(true);
        headers.insert(header_name, value);
    }

    Ok(Outgoing {
        method: spec.method.clone(),
        url,
        headers,
        body,
        timeout: connection.timeout,
    })
}

/// Actions that change nothing remotely, so repeating them is always safe.
fn is_read_only(action: &Action) -> bool {
    matches!(
        action,
        Action::Lookup
            | Action::ListAccounts
            | Action::Usage
            | Action::LoginUrl
            | Action::TestConnection
    )
}

/// An absolute URL as given, or the base URL joined with a relative one. Joining keeps the
/// base's path (`…/v2` + `/users` is `…/v2/users`), unlike RFC 3986 resolution.
fn resolve(base: &str, rendered: &str) -> Option<Url> {
    let lower = rendered.trim_start().to_ascii_lowercase();
    let text = if lower.starts_with("http://") || lower.starts_with("https://") {
        rendered.trim().to_string()
    } else if rendered.trim().is_empty() {
        base.to_string()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            rendered.trim().trim_start_matches('/')
        )
    };
    Url::parse(&text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// Where and how to connect, from the server settings.
struct Connection {
    base_url: String,
    auth: Auth,
    timeout: Duration,
}

enum Auth {
    None,
    /// The ready `Authorization` (basic or bearer) or custom header.
    Header(HeaderName, HeaderValue),
}

impl Auth {
    fn header(&self) -> Option<(HeaderName, HeaderValue)> {
        match self {
            Auth::None => None,
            Auth::Header(name, value) => Some((name.clone(), value.clone())),
        }
    }
}

impl Connection {
    /// The settings were validated when stored, so failures here mean they were changed
    /// behind the engine's back or a secret was not opened; messages name the setting only.
    fn from_settings(settings: &Settings) -> Result<Self, String> {
        let text = |key: &str| -> Result<&str, String> {
            match settings.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s),
                Some(Value::Object(_)) => Err(format!("server setting {key} is still sealed")),
                _ => Err(format!("server setting {key} is missing")),
            }
        };
        let base_url = text("base_url")?.to_string();
        let timeout = settings
            .get("timeout_seconds")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
            .clamp(1, 300);
        let auth_kind = match settings.get("auth") {
            None => "none",
            Some(_) => text("auth")?,
        };
        let secret_value = |text: String| -> Result<HeaderValue, String> {
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| "a credential contains characters HTTP does not allow".to_string())?;
            value.set_sensitive(true);
            Ok(value)
        };
        let auth = match auth_kind {
            "none" => Auth::None,
            "basic" => {
                let pair = format!("{}:{}", text("username")?, text("password")?);
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                Auth::Header(
                    header::AUTHORIZATION,
                    secret_value(format!("Basic {encoded}"))?,
                )
            }
            "bearer" => Auth::Header(
                header::AUTHORIZATION,
                secret_value(format!("Bearer {}", text("token")?))?,
            ),
            "header" => {
                let name = HeaderName::from_bytes(text("header_name")?.as_bytes())
                    .map_err(|_| "server setting header_name is not a header name".to_string())?;
                Auth::Header(name, secret_value(text("header_value")?.to_string())?)
            }
            _ => return Err("server setting auth is not none, basic, bearer or header".into()),
        };
        Ok(Connection {
            base_url,
            auth,
            timeout: Duration::from_secs(timeout),
        })
    }
}

pub(crate) use provisio_core::module::Secrets;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_check_out() {
        let info = info();
        for scope in [
            SchemaScope::Server,
            SchemaScope::Product,
            SchemaScope::Service,
        ] {
            info.schema(scope).check().unwrap();
        }
    }

    #[test]
    fn relative_urls_keep_the_base_path() {
        let base = "https://api.example.com/v2/";
        let joined = |r: &str| resolve(base, r).map(|u| u.to_string());
        assert_eq!(
            joined("/users").as_deref(),
            Some("https://api.example.com/v2/users")
        );
        assert_eq!(
            joined("users/7").as_deref(),
            Some("https://api.example.com/v2/users/7")
        );
        assert_eq!(joined("").as_deref(), Some("https://api.example.com/v2/"));
        assert_eq!(
            joined("HTTPS://other.example/x").as_deref(),
            Some("https://other.example/x")
        );
        assert_eq!(resolve("not a url", "/x"), None);
    }
}
