//! What a module declares about itself: name, version, capabilities and settings schemas.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use secrecy::SecretString;

use crate::settings::{Settings, SettingsSchema};

/// Something a module can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Create,
    Suspend,
    Unsuspend,
    Terminate,
    ChangePassword,
    ChangePackage,
    Renew,
    /// Ask the remote for one account's state (needed after an unknown outcome).
    Lookup,
    /// Page through every remote account (audit).
    ListAccounts,
    /// Report usage for many services per call.
    Usage,
    /// Produce a short-lived single sign-on link.
    LoginUrl,
    /// Check that the server's settings reach a working remote.
    TestConnection,
}

impl Capability {
    /// The seven actions of a service's lifecycle.
    pub const LIFECYCLE: [Capability; 7] = [
        Capability::Create,
        Capability::Suspend,
        Capability::Unsuspend,
        Capability::Terminate,
        Capability::ChangePassword,
        Capability::ChangePackage,
        Capability::Renew,
    ];

    /// The lifecycle capabilities and `more`.
    pub fn lifecycle_and(more: &[Capability]) -> Vec<Capability> {
        Self::LIFECYCLE.iter().chain(more).copied().collect()
    }
}

/// Which record a settings schema applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchemaScope {
    Server,
    Product,
    Service,
}

impl SchemaScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Product => "product",
            Self::Service => "service",
        }
    }
}

/// A module's declaration, as listed by `GET /v1/modules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModuleInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub capabilities: Vec<Capability>,
    /// Module-specific actions beyond the standard ones.
    #[serde(default)]
    pub custom_actions: Vec<String>,
    pub server_schema: SettingsSchema,
    pub product_schema: SettingsSchema,
    pub service_schema: SettingsSchema,
}

impl ModuleInfo {
    pub fn schema(&self, scope: SchemaScope) -> &SettingsSchema {
        match scope {
            SchemaScope::Server => &self.server_schema,
            SchemaScope::Product => &self.product_schema,
            SchemaScope::Service => &self.service_schema,
        }
    }

    pub fn can(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

pub use crate::action::{Action, ActionNameError};

/// The server an action runs against, secrets opened.
#[derive(Clone, Default, Serialize)]
pub struct ServerContext {
    pub id: i64,
    pub name: String,
    pub settings: Settings,
}

/// The product (effective settings, secrets opened).
#[derive(Clone, Default, Serialize)]
pub struct ProductContext {
    pub id: i64,
    pub name: String,
    pub settings: Settings,
}

/// The service an action is about.
#[derive(Clone, Serialize)]
pub struct ServiceContext {
    pub id: i64,
    pub username: String,
    #[serde(serialize_with = "expose")]
    pub password: SecretString,
    pub status: String,
    pub settings: Settings,
    pub outputs: Settings,
}

/// The client who has the service.
#[derive(Clone, Serialize)]
pub struct ClientContext {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub custom_fields: std::collections::BTreeMap<String, String>,
}

fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> Result<S::Ok, S::Error> {
    use secrecy::ExposeSecret;
    ser.serialize_str(s.expose_secret())
}

/// Everything a module gets for one call. Serialised, it is the `script` module's stdin
/// (`{"action", "idempotency_key", "server", "product", "service", "client", "params"}`), so
/// it holds secrets in clear: its `Debug` shows only the action and ids.
#[derive(Clone, Serialize)]
pub struct ActionRequest {
    pub action: Action,
    /// The same for every attempt of one job; modules pass it on where the remote supports it.
    pub idempotency_key: String,
    pub server: ServerContext,
    pub product: ProductContext,
    pub service: Option<ServiceContext>,
    pub client: Option<ClientContext>,
    /// Action parameters: `reason`, `until`, `new_password`, `new_product` (settings),
    /// `cursor`, …
    pub params: Settings,
}

/// The clear-text secrets one module call carries, to be taken out of every message that
/// leaves the module (errors, excerpts, logs): the string settings of server, product and
/// service that the module's schemas declare secret (or that look like credentials where a
/// schema passes undeclared keys through), the service's password, a new
/// password, what the module adds ([`Module::more_secrets`]), and the JSON-escaped form of
/// each (a remote echoing one inside JSON escapes quotes and backslashes). Kept longest
/// first, so that a secret containing a shorter one is removed whole.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets of `request` for a module declaring `info`.
    pub fn of(request: &ActionRequest, info: &ModuleInfo) -> Self {
        use secrecy::ExposeSecret;
        let mut out = Self::default();
        let declared = [
            (&info.server_schema, &request.server.settings),
            (&info.product_schema, &request.product.settings),
        ];
        let service = request.service.as_ref();
        for (schema, settings) in declared
            .into_iter()
            .chain(service.map(|s| (&info.service_schema, &s.settings)))
        {
            for name in schema.secret_names(settings) {
                if let Some(serde_json::Value::String(v)) = settings.get(name) {
                    out.push(v);
                }
            }
        }
        if let Some(s) = service {
            out.push(s.password.expose_secret());
        }
        if let Some(serde_json::Value::String(pw)) = request.params.get("new_password") {
            out.push(pw);
        }
        out
    }

    /// Adds one more secret (empty and very short values are never redacted: they would
    /// eat ordinary text).
    pub fn push(&mut self, secret: &str) {
        let mut add = |s: String| {
            if !self.0.contains(&s) {
                self.0.push(s);
            }
        };
        if let Ok(json) = serde_json::to_string(secret) {
            let inner = &json[1..json.len() - 1];
            if inner != secret {
                add(inner.to_string());
            }
        }
        add(secret.to_string());
        self.0
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    pub fn extend<I: IntoIterator<Item = S>, S: AsRef<str>>(&mut self, more: I) {
        for s in more {
            self.push(s.as_ref());
        }
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let refs: Vec<&str> = self.0.iter().map(String::as_str).collect();
        redact(text, &refs)
    }

    pub fn as_strs(&self) -> Vec<&str> {
        self.0.iter().map(String::as_str).collect()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.0.len())
    }
}

impl std::fmt::Debug for ActionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionRequest")
            .field("action", &self.action)
            .field("server", &self.server.id)
            .field("service", &self.service.as_ref().map(|s| s.id))
            .finish_non_exhaustive()
    }
}

/// One account as the remote reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RemoteAccount {
    pub username: String,
    /// `active`, `suspended`, or what the remote calls it.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub package: Option<String>,
}

/// One metric of one account's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metric {
    pub used: f64,
    #[serde(default)]
    pub limit: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
}

/// Usage of one account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    pub username: String,
    pub metrics: std::collections::BTreeMap<String, Metric>,
}

/// What a module answers; which fields are filled depends on the action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionReply {
    /// Values to keep on the service (e.g. a pass key).
    #[serde(default)]
    pub outputs: Settings,
    /// `lookup`: the account, or `None` when the remote has none.
    #[serde(default)]
    pub account: Option<RemoteAccount>,
    /// `list_accounts`: one page.
    #[serde(default)]
    pub accounts: Vec<RemoteAccount>,
    /// `list_accounts`: the cursor of the next page.
    #[serde(default)]
    pub next: Option<String>,
    /// `usage`.
    #[serde(default)]
    pub usage: Vec<UsageReport>,
    /// `login_url`.
    #[serde(default)]
    pub url: Option<String>,
}

/// How the engine treats a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Try again later (timeouts before sending, 5xx, 429, connection refused).
    Transient,
    /// Stop; a person must look (bad credentials, 4xx, invalid data).
    Permanent,
    /// The request may or may not have taken effect: look the account up before retrying.
    Unknown,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Unknown => "unknown",
        }
    }
}

/// A failed module call. The message must never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} error: {message}", kind.as_str())]
pub struct ModuleError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ModuleError {
    pub fn transient(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: m.into(),
        }
    }
    pub fn permanent(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: m.into(),
        }
    }
    pub fn unknown(m: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unknown,
            message: m.into(),
        }
    }
}

/// A module: code that talks to one kind of remote system.
///
/// The engine calls [`Module::call`] only for actions whose capability the module declares,
/// with a timeout of its own around the call. Modules never touch the store.
#[async_trait::async_trait]
pub trait Module: Send + Sync + 'static {
    fn info(&self) -> &ModuleInfo;

    /// Rules a schema cannot express (e.g. the shape of a `json` setting), checked after the
    /// schema passed; errors name the setting as the schema does (`actions.create.url`).
    fn check_settings(
        &self,
        _scope: SchemaScope,
        _settings: &Settings,
    ) -> Vec<crate::settings::FieldError> {
        Vec::new()
    }

    /// The custom actions a server of this module offers. Most modules have a fixed list
    /// (`ModuleInfo::custom_actions`); a declarative one (`http`) reads it from the server.
    fn custom_actions(&self, _server_settings: &Settings) -> Vec<String> {
        self.info().custom_actions.clone()
    }

    /// Secrets of a call beyond those its schemas declare (a password inside a URL
    /// setting, the encoded form of credentials the module sends), for [`Secrets`].
    fn more_secrets(&self, _request: &ActionRequest) -> Vec<String> {
        Vec::new()
    }

    async fn call(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError>;
}

/// Removes every occurrence of the given secrets from a text (module messages, stderr
/// excerpts) before it is stored or logged.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "[redacted]");
        }
    }
    out
}
