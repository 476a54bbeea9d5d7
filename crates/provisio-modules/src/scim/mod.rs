//! The `scim` module: user accounts of a SaaS application over SCIM 2.0 (RFC 7643, RFC 7644)
//! with a bearer token. Each service is one User; suspend clears `active`, the package is
//! written to one User attribute. The reference is `docs/modules/scim.md`.

mod client;

use std::time::Duration;

use provisio_core::module::{
    Action, ActionReply, ActionRequest, Capability, Module, ModuleError, ModuleInfo, RemoteAccount,
};
use provisio_core::settings::{Field, Settings, SettingsSchema};
use reqwest::{Method, StatusCode, Url};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use client::{Remote, ScimError};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const DEFAULT_TIMEOUT_SECONDS: i64 = 30;
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// The output that keeps the User's `id` on the service.
const ID_OUTPUT: &str = "scim_id";

pub struct ScimModule {
    info: ModuleInfo,
    client: reqwest::Client,
    policy: crate::outbound::OutboundPolicy,
    max_reply_bytes: usize,
}

impl ScimModule {
    /// With the default outbound policy and reply cap.
    pub fn new() -> Self {
        Self::with(&crate::ModuleOptions::default())
    }

    pub fn with(options: &crate::ModuleOptions) -> Self {
        Self {
            info: info(),
            client: client::http_client(&options.outbound),
            policy: options.outbound.clone(),
            max_reply_bytes: options.max_reply_bytes,
        }
    }
}

impl Default for ScimModule {
    fn default() -> Self {
        Self::new()
    }
}

fn info() -> ModuleInfo {
    let server_schema = SettingsSchema::new(vec![
        Field::url("base_url", "Base URL")
            .required()
            .help("The SCIM endpoint, e.g. https://app.example.com/scim/v2; /Users is appended."),
        Field::secret("token", "Bearer token")
            .required()
            .help("Sent as Authorization: Bearer <token>; stored encrypted."),
        Field::integer("timeout_seconds", "Timeout (seconds)", Some(1), Some(300))
            .default_value(DEFAULT_TIMEOUT_SECONDS)
            .help("How long one request may take; a change that times out after it was sent is an unknown outcome."),
        Field::enumeration("package_attribute", "Package attribute", &["userType", "title", "none"])
            .default_value("userType")
            .help("The User attribute that carries the package (the product's `package` setting); none: packages are not sent."),
    ]);
    let product_schema = SettingsSchema::new(vec![Field::string("package", "Package")
        .max_length(200)
        .help("The value written to the package attribute; the product's name when unset.")]);
    ModuleInfo {
        name: "scim".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        description: "SaaS user accounts over SCIM 2.0 with a bearer token.".into(),
        capabilities: vec![
            Capability::Create,
            Capability::Suspend,
            Capability::Unsuspend,
            Capability::Terminate,
            Capability::ChangePassword,
            Capability::ChangePackage,
            Capability::Lookup,
            Capability::ListAccounts,
            Capability::TestConnection,
        ],
        custom_actions: vec![],
        server_schema,
        product_schema,
        service_schema: SettingsSchema::new(vec![]),
    }
}

#[async_trait::async_trait]
impl Module for ScimModule {
    fn info(&self) -> &ModuleInfo {
        &self.info
    }

    async fn call(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        // The registry's layer redacts and logs what leaves.
        self.run(request)
            .await
            .map_err(|e| e.into_module_error(!request.action.is_read_only()))
    }
}

/// The User attribute that carries the package, if any.
fn package_attribute(settings: &Settings) -> Option<&str> {
    match settings.get("package_attribute").and_then(Value::as_str) {
        Some("none") => None,
        Some(other) => Some(other),
        None => Some("userType"),
    }
}

/// The package of a product: its `package` setting, else its name.
fn package_of<'a>(settings: &'a Settings, name: &'a str) -> &'a str {
    settings
        .get("package")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .unwrap_or(name)
}

/// What `create` sets as `externalId`, so that a repeated create recognises its own User.
fn external_id(request: &ActionRequest) -> String {
    let service = request.service.as_ref().map(|s| s.id).unwrap_or_default();
    format!("provisio:{}:{service}", request.server.id)
}

/// `userName eq "…"`, the value as a JSON string (RFC 7644 §3.4.2.2).
fn username_filter(username: &str) -> String {
    format!("userName eq {}", Value::String(username.to_string()))
}

fn patch(operations: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": operations})
}

/// The fields of a User the module reads.
struct User {
    id: String,
    username: String,
    active: bool,
    external_id: Option<String>,
    package: Option<String>,
}

impl User {
    fn parse(value: &Value, package_attribute: Option<&str>) -> Option<User> {
        Some(User {
            id: value.get("id")?.as_str()?.to_string(),
            username: value.get("userName")?.as_str()?.to_string(),
            // RFC 7643: absent means the provider does not say; treat as active.
            active: value.get("active").and_then(Value::as_bool).unwrap_or(true),
            external_id: value
                .get("externalId")
                .and_then(Value::as_str)
                .map(str::to_string),
            package: package_attribute
                .and_then(|a| value.get(a))
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    fn account(&self) -> RemoteAccount {
        RemoteAccount {
            username: self.username.clone(),
            status: Some(if self.active { "active" } else { "suspended" }.into()),
            package: self.package.clone(),
        }
    }
}

impl ScimModule {
    fn remote<'a>(&'a self, settings: &'a Settings) -> Result<Remote<'a>, ScimError> {
        let base = settings
            .get("base_url")
            .and_then(Value::as_str)
            .and_then(|u| Url::parse(u).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| ScimError::InvalidInput("the server's base_url is not a URL".into()))?;
        let token = settings
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::InvalidInput("the server has no token".into()))?;
        let timeout = settings
            .get("timeout_seconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
            .clamp(1, 300) as u64;
        Ok(Remote {
            client: &self.client,
            policy: &self.policy,
            max_reply_bytes: self.max_reply_bytes,
            base,
            token,
            timeout: Duration::from_secs(timeout),
        })
    }

    async fn run(&self, request: &ActionRequest) -> Result<ActionReply, ScimError> {
        let settings = &request.server.settings;
        let remote = self.remote(settings)?;
        let attribute = package_attribute(settings);
        match &request.action {
            Action::TestConnection => {
                // /ServiceProviderConfig may be served without authentication (RFC 7644
                // §4), so it would not prove the token; a one-item page of /Users does.
                // A connection test reports whether the remote works, not what it says:
                // whoever may test a server is not necessarily meant to read its answers.
                remote
                    .send(Method::GET, &["Users"], &[("count", "1".into())], None)
                    .await
                    .map_err(|e| match e {
                        ScimError::Status { target, status, .. } => ScimError::Status {
                            target,
                            status,
                            detail: None,
                        },
                        other => other,
                    })?;
                Ok(ActionReply::default())
            }
            Action::ListAccounts => list(&remote, &request.params, attribute).await,
            Action::Lookup => {
                let username = &service(request)?.username;
                let ours = external_id(request);
                // A User whose externalId names another owner is not this service's account,
                // even with the same userName: reporting it would let the engine take a
                // create whose answer was lost as done with someone else's User. A User
                // without externalId (made in the application, imported) cannot be told
                // apart and is reported.
                let Some(user) = find(&remote, username, attribute)
                    .await?
                    .filter(|u| u.external_id.as_deref().is_none_or(|e| e == ours))
                else {
                    return Ok(ActionReply::default());
                };
                // The engine keeps these in place of the outputs of a create whose answer
                // was lost, so later actions address the User by id as after any create.
                Ok(ActionReply {
                    account: Some(user.account()),
                    outputs: id_output(&user.id),
                    ..ActionReply::default()
                })
            }
            Action::Create => create(&remote, request, attribute).await,
            Action::Suspend => set_active(&remote, request, false).await,
            Action::Unsuspend => set_active(&remote, request, true).await,
            Action::ChangePassword => {
                let new = request
                    .params
                    .get("new_password")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        ScimError::InvalidInput("change_password needs params.new_password".into())
                    })?;
                let ops = json!([{"op": "replace", "path": "password", "value": new}]);
                modify(&remote, request, ops, &[]).await?;
                Ok(ActionReply::default())
            }
            Action::ChangePackage => {
                let Some(attribute) = attribute else {
                    return Ok(ActionReply::default());
                };
                let new_product = request
                    .params
                    .get("new_product")
                    .and_then(Value::as_object)
                    .ok_or_else(|| {
                        ScimError::InvalidInput("change_package needs params.new_product".into())
                    })?;
                let name = request
                    .params
                    .get("new_product_name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let package = package_of(new_product, name);
                if package.is_empty() {
                    return Err(ScimError::InvalidInput(
                        "the new product has neither a package setting nor a name".into(),
                    ));
                }
                let ops = json!([{"op": "replace", "path": attribute, "value": package}]);
                // Asking for the attribute back makes the provider answer 200 with it
                // (RFC 7644 §3.5.2), which shows whether it kept the value: some ignore
                // attributes they do not support.
                let answer = modify(
                    &remote,
                    request,
                    ops,
                    &[("attributes", attribute.to_string())],
                )
                .await?;
                if let Some(body) = answer.filter(|b| !b.is_null()) {
                    let kept = body.get(attribute).and_then(Value::as_str);
                    if kept != Some(package) {
                        return Err(ScimError::NotKept(format!(
                            "the service provider accepted the change but its {attribute} is {}, not {package:?}",
                            kept.map(|k| format!("{k:?}")).unwrap_or_else(|| "unset".into())
                        )));
                    }
                }
                Ok(ActionReply::default())
            }
            Action::Terminate => terminate(&remote, request).await,
            other => Err(ScimError::InvalidInput(format!(
                "the scim module does not support {other}"
            ))),
        }
    }
}

fn service(request: &ActionRequest) -> Result<&provisio_core::module::ServiceContext, ScimError> {
    request
        .service
        .as_ref()
        .ok_or_else(|| ScimError::InvalidInput(format!("{} needs a service", request.action)))
}

/// The User whose `userName` is `username`, if any.
async fn find(
    remote: &Remote<'_>,
    username: &str,
    attribute: Option<&str>,
) -> Result<Option<User>, ScimError> {
    let answer = remote
        .send(
            Method::GET,
            &["Users"],
            &[("filter", username_filter(username))],
            None,
        )
        .await?;
    let resources = answer
        .body
        .get("Resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // Providers compare userName case-insensitively (RFC 7643 §4.1.1); keep the exact one
    // when several come back.
    let users: Vec<User> = resources
        .iter()
        .filter_map(|r| User::parse(r, attribute))
        .filter(|u| u.username.eq_ignore_ascii_case(username))
        .collect();
    let exact = users.iter().position(|u| u.username == username);
    Ok(match exact {
        Some(i) => users.into_iter().nth(i),
        None => users.into_iter().next(),
    })
}

/// The User's `id`: the one `create` (or a lookup standing in for it) stored, else found by
/// `userName` (a service settled by a lookup before lookups answered the id has none).
async fn user_id(
    remote: &Remote<'_>,
    request: &ActionRequest,
) -> Result<Option<String>, ScimError> {
    let service = service(request)?;
    if let Some(id) = service.outputs.get(ID_OUTPUT).and_then(Value::as_str) {
        return Ok(Some(id.to_string()));
    }
    Ok(find(remote, &service.username, None).await?.map(|u| u.id))
}

/// Creates the User. A 409 (`uniqueness`) is this service's own earlier create when the
/// existing User carries this service's `externalId` (a retry after an unknown outcome),
/// and is then answered as a success; any other holder of the name is a permanent conflict.
async fn create(
    remote: &Remote<'_>,
    request: &ActionRequest,
    attribute: Option<&str>,
) -> Result<ActionReply, ScimError> {
    let service = service(request)?;
    if service.username.is_empty() {
        return Err(ScimError::InvalidInput("the username is empty".into()));
    }
    let external_id = external_id(request);
    let mut user = json!({
        "schemas": [USER_SCHEMA],
        "userName": service.username,
        "password": service.password.expose_secret(),
        "active": true,
        "externalId": external_id,
    });
    if let Some(client) = &request.client {
        user["displayName"] = json!(client.name);
        user["name"] = json!({"formatted": client.name});
        if !client.email.is_empty() {
            user["emails"] = json!([{"value": client.email, "type": "work", "primary": true}]);
        }
    }
    if let Some(attribute) = attribute {
        user[attribute] = json!(package_of(&request.product.settings, &request.product.name));
    }
    let id = match remote
        .send(Method::POST, &["Users"], &[], Some(&user))
        .await
    {
        Ok(answer) => answer
            .body
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ScimError::BadAnswer {
                target: "POST /Users".into(),
                why: format!("HTTP {} without the new User's id", answer.status),
            })?,
        Err(e) if e.status() == Some(StatusCode::CONFLICT) => {
            match find(remote, &service.username, attribute).await? {
                Some(existing) if existing.external_id.as_deref() == Some(external_id.as_str()) => {
                    existing.id
                }
                _ => {
                    return Err(ScimError::Conflict(format!(
                        "userName {:?} is already taken by a User not created for this service",
                        service.username
                    )))
                }
            }
        }
        Err(e) => return Err(e),
    };
    Ok(ActionReply {
        outputs: id_output(&id),
        ..ActionReply::default()
    })
}

/// The outputs of create, and of a lookup that finds the User.
fn id_output(id: &str) -> Settings {
    let mut outputs = Settings::new();
    outputs.insert(ID_OUTPUT.into(), json!(id));
    outputs
}

async fn set_active(
    remote: &Remote<'_>,
    request: &ActionRequest,
    active: bool,
) -> Result<ActionReply, ScimError> {
    let ops = json!([{"op": "replace", "path": "active", "value": active}]);
    modify(remote, request, ops, &[]).await?;
    Ok(ActionReply::default())
}

/// PATCHes the User; 200 with the resource and 204 without are both success. Returns the
/// resource when one came back.
async fn modify(
    remote: &Remote<'_>,
    request: &ActionRequest,
    operations: Value,
    query: &[(&str, String)],
) -> Result<Option<Value>, ScimError> {
    let username = &service(request)?.username;
    let not_found = || ScimError::NotFound(format!("no SCIM User {username:?}"));
    let id = user_id(remote, request).await?.ok_or_else(not_found)?;
    match remote
        .send(
            Method::PATCH,
            &["Users", &id],
            query,
            Some(&patch(operations)),
        )
        .await
    {
        Ok(answer) => Ok(Some(answer.body)),
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Err(not_found()),
        Err(e) => Err(e),
    }
}

/// DELETEs the User; one that is already gone (404, or none by that name) counts as done.
async fn terminate(remote: &Remote<'_>, request: &ActionRequest) -> Result<ActionReply, ScimError> {
    let Some(id) = user_id(remote, request).await? else {
        return Ok(ActionReply::default());
    };
    match remote
        .send(Method::DELETE, &["Users", &id], &[], None)
        .await
    {
        Ok(_) => Ok(ActionReply::default()),
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(ActionReply::default()),
        Err(e) => Err(e),
    }
}

/// One page of Users; the cursor is the `startIndex` of the next page (1-based).
async fn list(
    remote: &Remote<'_>,
    params: &Settings,
    attribute: Option<&str>,
) -> Result<ActionReply, ScimError> {
    let start = match params.get("cursor") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| v.as_i64())
            .filter(|n| *n >= 1)
            .ok_or_else(|| ScimError::InvalidInput("params.cursor is not a start index".into()))?,
    };
    let count = match params.get("limit") {
        None | Some(Value::Null) => DEFAULT_PAGE,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                ScimError::InvalidInput("params.limit must be a positive integer".into())
            })?
            .min(MAX_PAGE),
    };
    let answer = remote
        .send(
            Method::GET,
            &["Users"],
            &[
                ("startIndex", start.to_string()),
                ("count", count.to_string()),
            ],
            None,
        )
        .await?;
    let bad = |why: &str| ScimError::BadAnswer {
        target: "GET /Users".into(),
        why: why.into(),
    };
    let total = answer
        .body
        .get("totalResults")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("no totalResults in the list response"))?;
    let resources = match answer.body.get("Resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(r)) => r.clone(),
        Some(_) => return Err(bad("Resources is not a list")),
    };
    let mut reply = ActionReply::default();
    for r in &resources {
        let user = User::parse(r, attribute).ok_or_else(|| bad("a User without id or userName"))?;
        reply.accounts.push(user.account());
    }
    // A provider may return fewer than asked (its own maximum): continue after what came.
    let next = start + resources.len() as i64;
    if !resources.is_empty() && next <= total {
        reply.next = Some(next.to_string());
    }
    Ok(reply)
}
