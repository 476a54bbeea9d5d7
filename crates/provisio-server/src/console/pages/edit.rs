//! The edit forms of clients, services, servers and products. Each sends only what the
//! person changed, as the PATCH body of its REST route, to the same engine function
//! (`update_client`, `update_service`, `update_server`, `update_product`); the engine's
//! field messages come back next to the fields. Settings are drawn from the module's
//! schema: a secret is never shown, and a secret field left blank is left unchanged.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::{Extension, Form};
use provisio_core::settings::{FieldKind, Settings, SettingsSchema};
use provisio_core::{ClientId, ServiceId};
use provisio_engine::input::{ClientPatch, ProductPatch, RecordRef, ServerPatch, ServicePatch};
use provisio_engine::patch::Patch;
use serde_json::Value;

use super::form::{messages, problem_fields, unprocessable};
use super::show;
use crate::console::{page, see_other, ConsoleState, PageResult, Session};

/// One input of an edit form.
pub(crate) struct Input {
    /// The form field's name, which is also the engine's field name (`settings.host`).
    name: String,
    label: String,
    /// `text`, `number`, `secret`, `select`, `textarea`.
    kind: &'static str,
    /// What the record holds now, as the input shows it; empty for secrets.
    value: String,
    options: Vec<String>,
    /// A secret that is set (and stays so when its field is left blank).
    secret_set: bool,
    /// The value is JSON (a `json` field, or an undeclared key holding a number, a
    /// boolean or an object), read back as JSON.
    json: bool,
    help: String,
    error: Option<String>,
}

impl Input {
    fn new(name: &str, label: &str, kind: &'static str, value: impl Into<String>) -> Input {
        Input {
            name: name.into(),
            label: label.into(),
            kind,
            value: value.into(),
            options: Vec::new(),
            secret_set: false,
            json: false,
            help: String::new(),
            error: None,
        }
    }
    fn select(name: &str, label: &str, value: &str, options: &[&str]) -> Input {
        let mut i = Input::new(name, label, "select", value);
        i.options = options.iter().map(|o| o.to_string()).collect();
        i
    }
    fn id(&self) -> String {
        format!("f-{}", self.name.replace('.', "-"))
    }
}

#[derive(Template)]
#[template(path = "console/edit.html")]
struct EditPage {
    heading: String,
    action: String,
    back: String,
    csrf: String,
    inputs: Vec<Input>,
    settings: Vec<Input>,
    /// The schema lets undeclared keys through: a new one may be added.
    extra: bool,
    /// Messages about settings no input shows (a new key's).
    other_errors: Option<String>,
    summary: Option<String>,
}

/// The submitted form, by field name.
type Sent = HashMap<String, String>;

fn sent(form: Vec<(String, String)>) -> Sent {
    form.into_iter().collect()
}

/// What was typed into `name`, trimmed, if it differs from what the record holds.
fn changed<'a>(sent: &'a Sent, input: &Input) -> Option<&'a str> {
    let v = sent.get(&input.name).map(|s| s.trim()).unwrap_or("");
    (v != input.value).then_some(v)
}

fn find<'a>(inputs: &'a [Input], name: &str) -> &'a Input {
    inputs
        .iter()
        .find(|i| i.name == name)
        .expect("the form's own input")
}

/// A text field of the record that may be cleared: blank clears it (`null` in the API).
fn patch_text(sent: &Sent, inputs: &[Input], name: &str) -> Patch<String> {
    match changed(sent, find(inputs, name)) {
        None => Patch::Keep,
        Some("") => Patch::Clear,
        Some(v) => Patch::Set(v.to_string()),
    }
}

fn text(sent: &Sent, inputs: &[Input], name: &str) -> Option<String> {
    changed(sent, find(inputs, name)).map(String::from)
}

/// A setting's value as its input shows it.
fn shown(kind: Option<&FieldKind>, v: &Value) -> String {
    match (kind, v) {
        (Some(FieldKind::EmailList), Value::Array(a)) => {
            a.iter().map(show).collect::<Vec<_>>().join(", ")
        }
        (Some(FieldKind::Json), v) => v.to_string(),
        (None, Value::String(s)) => s.clone(),
        (None, v) => v.to_string(),
        (_, v) => show(v),
    }
}

/// The inputs of a record's settings under `schema`: every declared field, then the
/// undeclared keys the record holds.
fn setting_inputs(schema: &SettingsSchema, current: &Settings) -> Vec<Input> {
    let mut out = Vec::new();
    for f in &schema.fields {
        let name = format!("settings.{}", f.name);
        let now = current.get(&f.name);
        let mut i = match &f.kind {
            FieldKind::Secret => {
                let mut i = Input::new(&name, &f.label, "secret", "");
                i.secret_set = now.is_some();
                i
            }
            FieldKind::Boolean => Input::select(
                &name,
                &f.label,
                &now.map(show).unwrap_or_default(),
                &["", "true", "false"],
            ),
            FieldKind::Enum { values } => {
                let mut opts = vec![""];
                opts.extend(values.iter().map(String::as_str));
                Input::select(&name, &f.label, &now.map(show).unwrap_or_default(), &opts)
            }
            FieldKind::Json => {
                let mut i = Input::new(
                    &name,
                    &f.label,
                    "textarea",
                    now.map(|v| shown(Some(&f.kind), v)).unwrap_or_default(),
                );
                i.json = true;
                i
            }
            k => Input::new(
                &name,
                &f.label,
                "text",
                now.map(|v| shown(Some(k), v)).unwrap_or_default(),
            ),
        };
        i.help = f.help.clone();
        out.push(i);
    }
    for (k, v) in current {
        if schema.field(k).is_some() {
            continue;
        }
        let name = format!("settings.{k}");
        if schema.is_secret_name(k) {
            let mut i = Input::new(&name, k, "secret", "");
            i.secret_set = true;
            out.push(i);
        } else {
            let mut i = Input::new(&name, k, "text", shown(None, v));
            if !v.is_string() {
                i.json = true;
                i.help = "JSON".into();
            }
            out.push(i);
        }
    }
    out
}

/// The settings patch a form asks for: changed values set (as typed: the schema reads
/// numbers, booleans and sizes from text), cleared ones `null`, blank secrets left out,
/// and the new key, if any. JSON that does not parse is the field's error.
fn settings_patch(
    inputs: &[Input],
    sent: &Sent,
) -> Result<Option<Settings>, Vec<(String, String)>> {
    let mut patch = Settings::new();
    let mut errors = Vec::new();
    for i in inputs {
        let key = &i.name["settings.".len()..];
        let Some(v) = changed(sent, i) else { continue };
        if i.kind == "secret" {
            if !v.is_empty() {
                patch.insert(key.to_string(), Value::String(v.to_string()));
            }
            continue;
        }
        if v.is_empty() {
            patch.insert(key.to_string(), Value::Null);
            continue;
        }
        if i.json {
            match serde_json::from_str::<Value>(v) {
                Ok(j) => {
                    patch.insert(key.to_string(), j);
                }
                Err(e) => errors.push((i.name.clone(), format!("{}: must be JSON ({e})", i.name))),
            }
        } else {
            patch.insert(key.to_string(), Value::String(v.to_string()));
        }
    }
    let new_key = sent.get("new_key").map(|s| s.trim()).unwrap_or("");
    if !new_key.is_empty() {
        let raw = sent.get("new_value").map(|s| s.trim()).unwrap_or("");
        // A value that reads as JSON (a number, true, an object) is taken as such.
        let v = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.into()));
        patch.insert(new_key.to_string(), v);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok((!patch.is_empty()).then_some(patch))
}

/// Parses a whole number a PATCH field takes, or the field's message.
fn number(
    errors: &mut Vec<(String, String)>,
    sent: &Sent,
    inputs: &[Input],
    name: &str,
) -> Patch<u32> {
    match changed(sent, find(inputs, name)) {
        None => Patch::Keep,
        Some("") => Patch::Clear,
        Some(v) => match v.parse::<u32>() {
            Ok(n) => Patch::Set(n),
            Err(_) => {
                errors.push((name.into(), format!("{name}: must be a whole number")));
                Patch::Keep
            }
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn render(
    s: &Session,
    headers: &HeaderMap,
    current: &str,
    (heading, action, back): (String, String, String),
    mut inputs: Vec<Input>,
    mut settings: Vec<Input>,
    extra: bool,
    (errors, summary): (Vec<(String, String)>, Option<String>),
) -> PageResult {
    for i in inputs.iter_mut().chain(settings.iter_mut()) {
        i.error = errors
            .iter()
            .filter(|e| e.0 == i.name || e.0.starts_with(&format!("{}.", i.name)))
            .map(|e| e.1.clone())
            .reduce(|a, b| format!("{a}; {b}"));
    }
    let shown: Vec<(String, String)> = errors
        .iter()
        .filter(|e| e.0.starts_with("settings.") && !settings.iter().any(|i| i.name == e.0))
        .cloned()
        .collect();
    let content = EditPage {
        heading: heading.clone(),
        action,
        back,
        csrf: s.csrf.clone(),
        inputs,
        settings,
        extra,
        other_errors: messages(&shown, "settings"),
        summary,
    };
    let r = page(s, headers, current, &heading, content)?;
    Ok(if errors.is_empty() {
        r
    } else {
        unprocessable(r)
    })
}

// ---- clients ----

fn client_inputs(c: &provisio_core::client::Client) -> Vec<Input> {
    let mut custom = Input::new(
        "custom_fields",
        "Custom fields (one key=value a line)",
        "textarea",
        c.custom_fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    custom.help = "A line removed removes its field.".into();
    vec![
        Input::new("name", "Name", "text", c.name.as_str()),
        Input::new("email", "Email", "text", c.email.as_str()),
        Input::select(
            "status",
            "Status",
            c.status.as_str(),
            &["active", "archived"],
        ),
        Input::new(
            "external_id",
            "External id (blank removes it)",
            "text",
            c.external_id
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        ),
        custom,
    ]
}

fn client_labels(id: ClientId) -> (String, String, String) {
    (
        format!("Edit client {id}"),
        format!("/console/clients/{id}/edit"),
        format!("/console/clients/{id}"),
    )
}

pub(crate) async fn client_form(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::PATCH, "/v1/clients/{id}")?;
    let id = ClientId(crate::extract::path_id(&id)?);
    let c = s.caller().client(&state.app.engine, id).await?;
    let inputs = client_inputs(&c);
    render(
        &s,
        &headers,
        "/console/clients",
        client_labels(id),
        inputs,
        vec![],
        false,
        (vec![], None),
    )
}

pub(crate) async fn client_save(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    s.need(Method::PATCH, "/v1/clients/{id}")?;
    let id = ClientId(crate::extract::path_id(&id)?);
    let engine = &state.app.engine;
    let c = s.caller().client(engine, id).await?;
    let inputs = client_inputs(&c);
    let sent = sent(form);
    let mut errors = Vec::new();
    let status = match text(&sent, &inputs, "status") {
        None => None,
        Some(v) => match provisio_core::client::ClientStatus::parse(&v) {
            Some(st) => Some(st),
            None => {
                errors.push((
                    "status".into(),
                    format!("status: '{v}' is not active or archived"),
                ));
                None
            }
        },
    };
    let custom_fields = text(&sent, &inputs, "custom_fields").map(|v| {
        let mut next: std::collections::BTreeMap<String, Option<String>> = v
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
                None => (l.trim().to_string(), Some(String::new())),
            })
            .collect();
        for k in c.custom_fields.keys() {
            next.entry(k.clone()).or_insert(None);
        }
        next
    });
    let patch = ClientPatch {
        name: text(&sent, &inputs, "name"),
        email: text(&sent, &inputs, "email"),
        status,
        custom_fields,
        reseller_id: None,
        external_id: patch_text(&sent, &inputs, "external_id"),
    };
    let result = if errors.is_empty() {
        engine
            .update_client(id, patch)
            .await
            .map_err(problem_fields)
    } else {
        Err((errors, "the form has errors".to_string()))
    };
    match result {
        Ok(_) => Ok(see_other(&headers, &format!("/console/clients/{id}"))),
        Err((errors, detail)) => render(
            &s,
            &headers,
            "/console/clients",
            client_labels(id),
            inputs_with(inputs, &sent),
            vec![],
            false,
            (errors, Some(detail)),
        ),
    }
}

/// The inputs showing what was sent, so a refused form keeps what the person typed
/// (never a secret).
fn inputs_with(mut inputs: Vec<Input>, sent: &Sent) -> Vec<Input> {
    for i in &mut inputs {
        if i.kind != "secret" {
            if let Some(v) = sent.get(&i.name) {
                i.value = v.trim().to_string();
            }
        }
    }
    inputs
}

// ---- services ----

fn module_schema(
    state: &ConsoleState,
    module: &str,
    scope: provisio_core::module::SchemaScope,
) -> SettingsSchema {
    state
        .app
        .engine
        .modules()
        .info(module)
        .map(|m| m.schema(scope).clone())
        .unwrap_or_default()
}

fn service_inputs(svc: &provisio_core::service::Service) -> Vec<Input> {
    let mut v = vec![
        Input::new(
            "invoice",
            "Invoice (blank removes it)",
            "text",
            svc.invoice
                .as_ref()
                .map(|i| i.as_str().to_string())
                .unwrap_or_default(),
        ),
        Input::new(
            "parent_invoice",
            "Parent invoice (blank removes it)",
            "text",
            svc.parent_invoice
                .as_ref()
                .map(|i| i.as_str().to_string())
                .unwrap_or_default(),
        ),
        Input::new(
            "external_id",
            "External id (blank removes it)",
            "text",
            svc.external_id
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default(),
        ),
    ];
    if svc.status == provisio_core::service::ServiceStatus::Pending {
        v.push(Input::new(
            "username",
            "Username (while pending)",
            "text",
            svc.username.as_str(),
        ));
        let mut p = Input::new(
            "password",
            "Password (while pending; blank keeps it)",
            "secret",
            "",
        );
        p.secret_set = true;
        v.push(p);
    }
    v
}

async fn service_parts(
    state: &ConsoleState,
    s: &Session,
    raw: &str,
) -> Result<(provisio_core::service::Service, SettingsSchema), crate::console::PageError> {
    let id = ServiceId(crate::extract::path_id(raw)?);
    s.caller().service(&state.app.engine, id).await?;
    let svc = state.app.engine.get_service(id).await?;
    let server = state
        .app
        .engine
        .find_server(&RecordRef::Id(svc.server_id.0))
        .await?;
    let schema = module_schema(
        state,
        &server.module,
        provisio_core::module::SchemaScope::Service,
    );
    Ok((svc, schema))
}

fn service_labels(svc: &provisio_core::service::Service) -> (String, String, String) {
    (
        format!("Edit service {}", svc.username),
        format!("/console/services/{}/edit", svc.id),
        format!("/console/services/{}", svc.id),
    )
}

pub(crate) async fn service_form(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::PATCH, "/v1/services/{id}")?;
    let (svc, schema) = service_parts(&state, &s, &id).await?;
    let settings = setting_inputs(&schema, &svc.settings);
    render(
        &s,
        &headers,
        "/console/services",
        service_labels(&svc),
        service_inputs(&svc),
        settings,
        schema.allow_extra,
        (vec![], None),
    )
}

pub(crate) async fn service_save(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    s.need(Method::PATCH, "/v1/services/{id}")?;
    let (svc, schema) = service_parts(&state, &s, &id).await?;
    let inputs = service_inputs(&svc);
    let settings = setting_inputs(&schema, &svc.settings);
    let sent = sent(form);
    let pending = svc.status == provisio_core::service::ServiceStatus::Pending;
    let result = match settings_patch(&settings, &sent) {
        Err(errors) => Err((errors, "the form has errors".to_string())),
        Ok(patch_settings) => {
            let patch = ServicePatch {
                username: if pending {
                    text(&sent, &inputs, "username")
                } else {
                    None
                },
                password: if pending {
                    sent.get("password")
                        .filter(|p| !p.is_empty())
                        .map(|p| secrecy::SecretString::from(p.clone()).into())
                } else {
                    None
                },
                invoice: patch_text(&sent, &inputs, "invoice"),
                parent_invoice: patch_text(&sent, &inputs, "parent_invoice"),
                settings: patch_settings,
                external_id: patch_text(&sent, &inputs, "external_id"),
            };
            state
                .app
                .engine
                .update_service(svc.id, patch)
                .await
                .map_err(problem_fields)
        }
    };
    match result {
        Ok(_) => Ok(see_other(
            &headers,
            &format!("/console/services/{}", svc.id),
        )),
        Err((errors, detail)) => render(
            &s,
            &headers,
            "/console/services",
            service_labels(&svc),
            inputs_with(inputs, &sent),
            inputs_with(settings, &sent),
            schema.allow_extra,
            (errors, Some(detail)),
        ),
    }
}

// ---- servers ----

fn server_inputs(x: &provisio_core::server::Server) -> Vec<Input> {
    vec![
        Input::new("name", "Name", "text", x.name.as_str()),
        Input::new("group", "Group", "text", x.group.as_str()),
        Input::new(
            "max_concurrent",
            "Max concurrent",
            "number",
            x.max_concurrent.to_string(),
        ),
        Input::new(
            "max_per_second",
            "Max per second (blank: no limit)",
            "number",
            x.max_per_second.map(|n| n.to_string()).unwrap_or_default(),
        ),
        Input::select(
            "enabled",
            "Enabled",
            if x.enabled { "true" } else { "false" },
            &["true", "false"],
        ),
    ]
}

fn server_labels(x: &provisio_core::server::Server) -> (String, String, String) {
    (
        format!("Edit server {}", x.name),
        format!("/console/servers/{}/edit", x.id),
        "/console/servers".to_string(),
    )
}

pub(crate) async fn server_form(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::PATCH, "/v1/servers/{server}")?;
    let x = state
        .app
        .engine
        .find_server(&RecordRef::from_segment(&id))
        .await?;
    let schema = module_schema(
        &state,
        &x.module,
        provisio_core::module::SchemaScope::Server,
    );
    let settings = setting_inputs(&schema, &x.settings);
    render(
        &s,
        &headers,
        "/console/servers",
        server_labels(&x),
        server_inputs(&x),
        settings,
        schema.allow_extra,
        (vec![], None),
    )
}

pub(crate) async fn server_save(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    s.need(Method::PATCH, "/v1/servers/{server}")?;
    let x = state
        .app
        .engine
        .find_server(&RecordRef::from_segment(&id))
        .await?;
    let schema = module_schema(
        &state,
        &x.module,
        provisio_core::module::SchemaScope::Server,
    );
    let inputs = server_inputs(&x);
    let settings = setting_inputs(&schema, &x.settings);
    let sent = sent(form);
    let mut errors = Vec::new();
    let max_concurrent = match number(&mut errors, &sent, &inputs, "max_concurrent") {
        Patch::Set(n) => Some(n),
        Patch::Clear => {
            errors.push((
                "max_concurrent".into(),
                "max_concurrent: is required".into(),
            ));
            None
        }
        Patch::Keep => None,
    };
    let max_per_second = number(&mut errors, &sent, &inputs, "max_per_second");
    let enabled = text(&sent, &inputs, "enabled").map(|v| v == "true");
    let patch_settings = match settings_patch(&settings, &sent) {
        Ok(p) => p,
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    let result = if errors.is_empty() {
        let patch = ServerPatch {
            name: text(&sent, &inputs, "name"),
            group: text(&sent, &inputs, "group"),
            settings: patch_settings,
            max_concurrent,
            max_per_second,
            enabled,
        };
        state
            .app
            .engine
            .update_server(&RecordRef::Id(x.id.0), patch)
            .await
            .map_err(problem_fields)
    } else {
        Err((errors, "the form has errors".to_string()))
    };
    match result {
        Ok(_) => Ok(see_other(&headers, "/console/servers")),
        Err((errors, detail)) => render(
            &s,
            &headers,
            "/console/servers",
            server_labels(&x),
            inputs_with(inputs, &sent),
            inputs_with(settings, &sent),
            schema.allow_extra,
            (errors, Some(detail)),
        ),
    }
}

// ---- products ----

async fn product_inputs(
    state: &ConsoleState,
    p: &provisio_core::product::Product,
) -> Result<Vec<Input>, crate::console::PageError> {
    let extends = match p.extends {
        Some(e) => state
            .app
            .engine
            .find_product(&RecordRef::Id(e.0))
            .await?
            .name
            .to_string(),
        None => String::new(),
    };
    Ok(vec![
        Input::new("name", "Name", "text", p.name.as_str()),
        Input::new(
            "extends",
            "Extends (a product's name; blank: stands alone)",
            "text",
            extends,
        ),
        Input::new(
            "server_group",
            "Server group (blank: the default)",
            "text",
            p.server_group
                .as_ref()
                .map(|g| g.to_string())
                .unwrap_or_default(),
        ),
        Input::select(
            "auto_setup",
            "Set up",
            p.auto_setup.as_str(),
            &AUTO_SETUP.map(|a| a.as_str()),
        ),
        client_fields_input(&p.client_fields),
    ])
}

const AUTO_SETUP: [provisio_core::product::AutoSetup; 3] = [
    provisio_core::product::AutoSetup::OnOrder,
    provisio_core::product::AutoSetup::OnAccept,
    provisio_core::product::AutoSetup::Manual,
];

fn client_fields_input(map: &provisio_core::product::ClientFieldMap) -> Input {
    let mut i = Input::new(
        "client_fields",
        "Client fields (one client_field=module_output a line)",
        "textarea",
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    i.help = "Outputs copied into the client's custom fields when an action succeeds; \
              the lines replace the whole map."
        .into();
    i
}

/// The `auto_setup` a form asks for, or the field's message.
fn auto_setup(
    errors: &mut Vec<(String, String)>,
    sent: &Sent,
    inputs: &[Input],
) -> Option<provisio_core::product::AutoSetup> {
    let v = text(sent, inputs, "auto_setup")?;
    let found = provisio_core::product::AutoSetup::parse(&v);
    if found.is_none() {
        errors.push((
            "auto_setup".into(),
            format!("auto_setup: '{v}' is not on_order, on_accept or manual"),
        ));
    }
    found
}

/// The `client_fields` map the textarea holds, when it changed. A line without `=` maps
/// to an empty output, which the engine refuses with its own message for that field.
fn client_fields(sent: &Sent, inputs: &[Input]) -> Option<provisio_core::product::ClientFieldMap> {
    text(sent, inputs, "client_fields").map(|v| {
        v.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => (l.trim().to_string(), String::new()),
            })
            .collect()
    })
}

fn product_labels(p: &provisio_core::product::Product) -> (String, String, String) {
    (
        format!("Edit product {}", p.name),
        format!("/console/products/{}/edit", p.id),
        "/console/products".to_string(),
    )
}

pub(crate) async fn product_form(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::PATCH, "/v1/products/{product}")?;
    let p = state
        .app
        .engine
        .find_product(&RecordRef::from_segment(&id))
        .await?;
    let schema = module_schema(
        &state,
        &p.module,
        provisio_core::module::SchemaScope::Product,
    );
    let settings = setting_inputs(&schema, &p.settings);
    let inputs = product_inputs(&state, &p).await?;
    render(
        &s,
        &headers,
        "/console/products",
        product_labels(&p),
        inputs,
        settings,
        schema.allow_extra,
        (vec![], None),
    )
}

pub(crate) async fn product_save(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    s.need(Method::PATCH, "/v1/products/{product}")?;
    let p = state
        .app
        .engine
        .find_product(&RecordRef::from_segment(&id))
        .await?;
    let schema = module_schema(
        &state,
        &p.module,
        provisio_core::module::SchemaScope::Product,
    );
    let inputs = product_inputs(&state, &p).await?;
    let settings = setting_inputs(&schema, &p.settings);
    let sent = sent(form);
    let mut errors = Vec::new();
    let auto_setup = auto_setup(&mut errors, &sent, &inputs);
    let result = match settings_patch(&settings, &sent) {
        Err(mut more) => {
            errors.append(&mut more);
            Err((errors, "the form has errors".to_string()))
        }
        Ok(_) if !errors.is_empty() => Err((errors, "the form has errors".to_string())),
        Ok(patch_settings) => {
            let patch = ProductPatch {
                name: text(&sent, &inputs, "name"),
                extends: patch_text(&sent, &inputs, "extends"),
                server_group: patch_text(&sent, &inputs, "server_group"),
                settings: patch_settings,
                auto_setup,
                client_fields: client_fields(&sent, &inputs),
            };
            state
                .app
                .engine
                .update_product(&RecordRef::Id(p.id.0), patch)
                .await
                .map_err(problem_fields)
        }
    };
    match result {
        Ok(_) => Ok(see_other(&headers, "/console/products")),
        Err((errors, detail)) => render(
            &s,
            &headers,
            "/console/products",
            product_labels(&p),
            inputs_with(inputs, &sent),
            inputs_with(settings, &sent),
            schema.allow_extra,
            (errors, Some(detail)),
        ),
    }
}
