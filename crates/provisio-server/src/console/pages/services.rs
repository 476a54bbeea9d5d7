//! Services: the search, a service's page (status, suspension, settings with secrets
//! masked, outputs, usage, one timeline of its jobs, attempts, events and deliveries), and
//! a form for each action its module offers, sent through `Engine::request_action` like
//! `POST /v1/services/{id}/{action}`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::{Extension, Form};
use chrono::{DateTime, NaiveDateTime, Utc};
use provisio_core::module::Action;
use provisio_core::page::PageRequest;
use provisio_core::secret::redact_settings;
use provisio_core::service::{Service, ServiceStatus};
use provisio_core::{ClientId, ServiceId};
use provisio_engine::input::RecordRef;
use provisio_engine::ActionInput;
use provisio_store::{ProductFilter, ServiceFilter};
use serde::Deserialize;

use super::form::{problem_fields, unprocessable, FormPage};
use super::{given, parse_id, show, when, when_opt};
use crate::console::{page, see_other, ConsoleState, PageError, PageResult, Session};
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQuery {
    username: Option<String>,
    client: Option<String>,
    invoice: Option<String>,
    external_id: Option<String>,
    status: Option<String>,
    server: Option<String>,
    after: Option<String>,
}

struct ServiceRow {
    id: i64,
    username: String,
    client_id: i64,
    server: String,
    status: String,
    invoice: String,
    external_id: String,
}

#[derive(Template)]
#[template(path = "console/services.html")]
struct SearchPage {
    q: SearchQuery,
    rows: Vec<ServiceRow>,
    next: Option<String>,
    error: Option<(String, String)>,
    statuses: Vec<&'static str>,
    scoped: bool,
}

impl FormPage for SearchPage {
    fn field_errors(&self) -> &[(String, String)] {
        self.error.as_slice()
    }
}

pub(crate) async fn search(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> PageResult {
    s.need(Method::GET, "/v1/services")?;
    let engine = &state.app.engine;
    let see_servers = s.may(Method::GET, "/v1/servers");
    let servers = if see_servers {
        super::all_servers(&state).await?
    } else {
        Vec::new()
    };
    let mut error = None;
    let mut f = ServiceFilter {
        scope: s.caller().scope,
        username: given(&q.username).map(String::from),
        invoice: given(&q.invoice).map(String::from),
        external_id: given(&q.external_id).map(String::from),
        ..Default::default()
    };
    match parse_id("client", given(&q.client)) {
        Ok(c) => f.client_id = c.map(ClientId),
        Err(_) => {
            error = Some((
                "client".into(),
                "must be a client id (a whole number)".into(),
            ))
        }
    }
    if let Some(st) = given(&q.status) {
        match ServiceStatus::ALL.into_iter().find(|x| x.as_str() == st) {
            Some(x) => f.status = Some(x),
            None => error = Some(("status".into(), format!("'{st}' is not a service status"))),
        }
    }
    if let Some(name) = given(&q.server) {
        if !see_servers {
            error = Some(("server".into(), "this key cannot filter by server".into()));
        } else {
            match engine.find_server(&RecordRef::from_segment(name)).await {
                Ok(srv) => f.server_id = Some(srv.id),
                Err(e) => error = Some(("server".into(), ApiError::from(e).into_problem().detail)),
            }
        }
    }
    let after = parse_id("after", given(&q.after))?;
    let (rows, next) = if error.is_none() {
        let found = engine
            .list_services(&f, PageRequest { after, limit: 50 })
            .await?;
        let next = found.next.map(|n| n.to_string());
        let rows = found
            .items
            .into_iter()
            .map(|x| ServiceRow {
                id: x.id.0,
                username: x.username.to_string(),
                client_id: x.client_id.0,
                server: servers
                    .iter()
                    .find(|v| v.id == x.server_id)
                    .map_or_else(|| format!("#{}", x.server_id), |v| v.name.to_string()),
                status: x.status.as_str().to_string(),
                invoice: x
                    .invoice
                    .map(|i| i.as_str().to_string())
                    .unwrap_or_default(),
                external_id: x.external_id.map(|e| e.to_string()).unwrap_or_default(),
            })
            .collect();
        (rows, next)
    } else {
        (Vec::new(), None)
    };
    let content = SearchPage {
        q,
        rows,
        next,
        error,
        statuses: ServiceStatus::ALL.iter().map(|x| x.as_str()).collect(),
        scoped: s.caller().scope.is_some(),
    };
    page(&s, &headers, "/console/services", "Services", content)
}

/// One line of a service's timeline.
struct Moment {
    at: DateTime<Utc>,
    when: String,
    kind: &'static str,
    what: String,
    state: String,
    detail: String,
    link: Option<String>,
}

struct ActionButton {
    wire: String,
    label: String,
}

#[derive(Template)]
#[template(path = "console/service.html")]
struct ServicePage {
    id: i64,
    username: String,
    status: String,
    client_id: i64,
    product: String,
    server: String,
    invoice: String,
    parent_invoice: String,
    external_id: String,
    suspension: Option<(String, String, String)>,
    settings: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    usage: Vec<(String, String, String)>,
    timeline: Vec<Moment>,
    /// The next older part of the timeline, when this one did not reach its start.
    older: Option<String>,
    /// An older part is shown: it is not refreshed, and links back to the newest.
    paged: bool,
    actions: Vec<ActionButton>,
    login: bool,
    may_edit: bool,
    csrf: String,
    login_url: Option<String>,
    login_error: Option<String>,
    created: String,
}

/// The service behind a path id, if the session's key may see it (else 404, as the API).
async fn seen(state: &ConsoleState, s: &Session, raw: &str) -> Result<Service, PageError> {
    let id = ServiceId(crate::extract::path_id(raw)?);
    s.caller().service(&state.app.engine, id).await?;
    Ok(state.app.engine.get_service(id).await?)
}

fn pairs(m: &serde_json::Map<String, serde_json::Value>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), show(v))).collect()
}

/// The actions the service's module and server offer, that this key may run.
async fn offered(
    state: &ConsoleState,
    s: &Session,
    svc: &Service,
) -> Result<Vec<Action>, PageError> {
    if !s.may(Method::POST, "/v1/services/{id}/{action}") {
        return Ok(Vec::new());
    }
    let engine = &state.app.engine;
    let server = engine.find_server(&RecordRef::Id(svc.server_id.0)).await?;
    let Some(module) = engine.modules().get(&server.module) else {
        return Ok(Vec::new());
    };
    let info = module.info();
    let mut out: Vec<Action> = Action::STANDARD
        .into_iter()
        .filter(|a| a.is_service_action() && *a != Action::Create)
        .filter(|a| {
            a.capability()
                .is_some_and(|c| info.capabilities.contains(&c))
        })
        .collect();
    for c in module.custom_actions(&server.settings) {
        if let Ok(a) = Action::service_action(&c) {
            out.push(a);
        }
    }
    Ok(out
        .into_iter()
        .filter(|a| s.caller().may_run(a.as_str()).is_ok())
        .collect())
}

/// How many of each kind (jobs, events, deliveries) one look at a timeline reads.
const TIMELINE_LIMIT: u32 = 50;

/// A timeline page older than the newest: moments before this time (microseconds).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TimelineQuery {
    before: Option<String>,
}

async fn service_page(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    svc: Service,
    before: Option<DateTime<Utc>>,
    (login_url, login_error): (Option<String>, Option<String>),
) -> PageResult {
    let engine = &state.app.engine;
    let id = svc.id;
    let see_setup = s.may(Method::GET, "/v1/servers");
    let server = if see_setup {
        engine
            .find_server(&RecordRef::Id(svc.server_id.0))
            .await
            .map(|x| x.name.to_string())
            .unwrap_or_else(|_| format!("#{}", svc.server_id))
    } else {
        format!("#{}", svc.server_id)
    };
    let product = if s.may(Method::GET, "/v1/products") {
        engine
            .find_product(&RecordRef::Id(svc.product_id.0))
            .await
            .map(|p| p.name.to_string())
            .unwrap_or_else(|_| format!("#{}", svc.product_id))
    } else {
        format!("#{}", svc.product_id)
    };
    let see_events = s.may(Method::GET, "/v1/events");
    let see_deliveries = see_events && s.may(Method::GET, "/v1/deliveries");
    // The newest of each kind, read together by their own indexes: a service with years
    // of history costs what one with a week does.
    let read = engine
        .store()
        .service_timeline(id, before, TIMELINE_LIMIT)
        .await
        .map_err(provisio_engine::EngineError::from)?;
    // Where a kind filled its share, older rows of the other kinds may be missing too:
    // the page shows what is newer than the latest such cut, the "older" link the rest.
    let full = |n: usize| n >= TIMELINE_LIMIT as usize;
    let cut = [
        full(read.jobs.len()).then(|| read.jobs.last().map(|j| j.created_at)),
        (see_events && full(read.events.len())).then(|| read.events.last().map(|e| e.at)),
        (see_deliveries && full(read.deliveries.len()))
            .then(|| read.deliveries.last().map(|d| d.updated_at)),
    ]
    .into_iter()
    .flatten()
    .flatten()
    .max();
    let mut attempts: std::collections::HashMap<_, Vec<_>> = std::collections::HashMap::new();
    for a in read.attempts {
        attempts.entry(a.job_id).or_default().push(a);
    }
    let mut timeline = Vec::new();
    for j in &read.jobs {
        timeline.push(Moment {
            at: j.created_at,
            when: when(j.created_at),
            kind: "job",
            what: format!("job {} {}", j.id, j.action.as_str()),
            state: j.state.as_str().to_string(),
            detail: j.last_error.clone().unwrap_or_default(),
            link: Some(format!("/console/queue/{}", j.id)),
        });
        for a in attempts.remove(&j.id).unwrap_or_default() {
            timeline.push(Moment {
                at: a.started_at,
                when: when(a.started_at),
                kind: "attempt",
                what: format!("job {} attempt {} ({} ms)", j.id, a.attempt, a.duration_ms),
                state: a.outcome,
                detail: a.message.unwrap_or_default(),
                link: None,
            });
        }
    }
    if see_events {
        for e in &read.events {
            timeline.push(Moment {
                at: e.at,
                when: when(e.at),
                kind: "event",
                what: e.kind.as_str().to_string(),
                state: String::new(),
                detail: e
                    .actor
                    .as_ref()
                    .map(|a| format!("by {}", super::actor(a)))
                    .unwrap_or_default(),
                link: None,
            });
        }
    }
    if see_deliveries {
        for d in read.deliveries {
            timeline.push(Moment {
                at: d.updated_at,
                when: when(d.updated_at),
                kind: "delivery",
                what: format!(
                    "delivery {} of {} to handler {}",
                    d.id,
                    d.event_type.as_str(),
                    d.handler_id
                ),
                state: d.state.as_str().to_string(),
                detail: d.last_error.unwrap_or_default(),
                link: Some(format!("/console/deliveries/{}", d.id)),
            });
        }
    }
    if let Some(cut) = cut {
        timeline.retain(|m| m.at >= cut);
    }
    let older = cut.map(|c| format!("/console/services/{}?before={}", id, c.timestamp_micros()));
    timeline.sort_by_key(|m| std::cmp::Reverse(m.at));
    let mut usage = Vec::new();
    if s.may(Method::GET, "/v1/services/{id}/usage") {
        if let Ok(u) = engine.service_usage(id).await {
            usage = u
                .metrics
                .into_iter()
                .map(|m| {
                    (
                        m.metric,
                        m.used.to_string(),
                        m.limit.map(|l| l.to_string()).unwrap_or_else(|| "—".into()),
                    )
                })
                .collect();
        }
    }
    let (settings, _) = redact_settings(&svc.settings);
    let (outputs, _) = redact_settings(&svc.outputs);
    let actions = offered(state, s, &svc)
        .await?
        .into_iter()
        .map(|a| ActionButton {
            wire: a.wire_name(),
            label: a.as_str().replace('_', " "),
        })
        .collect();
    let login = s.may(Method::POST, "/v1/services/{id}/login-url")
        && s.caller().may_run("login_url").is_ok()
        && svc.status == ServiceStatus::Active;
    let content = ServicePage {
        id: id.0,
        username: svc.username.to_string(),
        status: svc.status.as_str().to_string(),
        client_id: svc.client_id.0,
        product,
        server,
        invoice: svc
            .invoice
            .map(|i| i.as_str().to_string())
            .unwrap_or_default(),
        parent_invoice: svc
            .parent_invoice
            .map(|i| i.as_str().to_string())
            .unwrap_or_default(),
        external_id: svc.external_id.map(|e| e.to_string()).unwrap_or_default(),
        suspension: svc.suspension.map(|x| {
            (
                x.reason.as_str().to_string(),
                when(x.since),
                when_opt(x.until),
            )
        }),
        settings: pairs(&settings),
        outputs: pairs(&outputs),
        usage,
        timeline,
        older,
        paged: before.is_some(),
        actions,
        login,
        may_edit: s.may(Method::PATCH, "/v1/services/{id}"),
        csrf: s.csrf.clone(),
        login_url,
        login_error,
        created: when(svc.created_at),
    };
    page(
        s,
        headers,
        "/console/services",
        &format!("Service {}", content.username),
        content,
    )
}

pub(crate) async fn service(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> PageResult {
    s.need(Method::GET, "/v1/services/{id}")?;
    let before = parse_id("before", given(&q.before))?
        .map(|t| {
            DateTime::<Utc>::from_timestamp_micros(t)
                .ok_or_else(|| super::bad_query("before", "must be a time in microseconds"))
        })
        .transpose()?;
    let svc = seen(&state, &s, &id).await?;
    service_page(&state, &s, &headers, svc, before, (None, None)).await
}

pub(crate) async fn login_url(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::POST, "/v1/services/{id}/login-url")?;
    let svc = seen(&state, &s, &id).await?;
    s.caller().may_run("login_url")?;
    match state.app.engine.login_url(svc.id, None).await {
        Ok(url) => service_page(&state, &s, &headers, svc, None, (Some(url), None)).await,
        Err(e) => {
            let p = ApiError::from(e).into_problem();
            service_page(&state, &s, &headers, svc, None, (None, Some(p.detail))).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ActionForm {
    reason: Option<String>,
    until: Option<String>,
    product: Option<String>,
    password: Option<String>,
    confirm: Option<String>,
}

#[derive(Template)]
#[template(path = "console/action.html")]
struct ActionPage {
    id: i64,
    username: String,
    wire: String,
    label: String,
    csrf: String,
    form: ActionForm,
    products: Vec<(String, String)>,
    errors: Vec<(String, String)>,
    summary: Option<String>,
}

impl FormPage for ActionPage {
    fn field_errors(&self) -> &[(String, String)] {
        &self.errors
    }
}

/// The action a path names, as the REST route parses it, and refused unless offered.
async fn chosen(
    state: &ConsoleState,
    s: &Session,
    svc: &Service,
    wire: &str,
) -> Result<Action, PageError> {
    let a = Action::service_action(wire)
        .map_err(|_| ApiError::not_found(format!("no action '{wire}' on services")))?;
    s.caller().may_run(a.as_str())?;
    if !offered(state, s, svc).await?.contains(&a) {
        return Err(ApiError::not_found(format!(
            "service {} has no action '{wire}' this key may run",
            svc.id
        ))
        .into());
    }
    Ok(a)
}

async fn action_page(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    svc: &Service,
    action: &Action,
    (form, errors, summary): (ActionForm, Vec<(String, String)>, Option<String>),
) -> PageResult {
    let mut products = Vec::new();
    if *action == Action::ChangePackage {
        // Products of the same module: the only ones a package change may go to.
        let engine = &state.app.engine;
        let current = engine
            .find_product(&RecordRef::Id(svc.product_id.0))
            .await?;
        let found = engine
            .list_products(
                &ProductFilter {
                    module: Some(current.module.clone()),
                    ..Default::default()
                },
                PageRequest::first(PageRequest::MAX_LIMIT),
            )
            .await?;
        products = found
            .items
            .into_iter()
            .filter(|p| p.product.id != current.id)
            .map(|p| (p.product.id.0.to_string(), p.product.name.to_string()))
            .collect();
    }
    let content = ActionPage {
        id: svc.id.0,
        username: svc.username.to_string(),
        wire: action.wire_name(),
        label: action.as_str().replace('_', " "),
        csrf: s.csrf.clone(),
        form,
        products,
        errors,
        summary,
    };
    let title = format!("{} {}", content.label, content.username);
    page(s, headers, "/console/services", &title, content)
}

pub(crate) async fn action_form(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path((id, wire)): Path<(String, String)>,
) -> PageResult {
    s.need(Method::POST, "/v1/services/{id}/{action}")?;
    let svc = seen(&state, &s, &id).await?;
    let action = chosen(&state, &s, &svc, &wire).await?;
    action_page(
        &state,
        &s,
        &headers,
        &svc,
        &action,
        (ActionForm::default(), vec![], None),
    )
    .await
}

/// A `datetime-local` value (or RFC 3339) as UTC.
fn parse_until(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .map(|n| n.and_utc())
}

pub(crate) async fn act(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path((id, wire)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> PageResult {
    s.need(Method::POST, "/v1/services/{id}/{action}")?;
    let svc = seen(&state, &s, &id).await?;
    let action = chosen(&state, &s, &svc, &wire).await?;
    let mut errors = Vec::new();
    let mut input = ActionInput::default();
    // Only the fields of this action's form are sent, so the engine's rule on fields that
    // do not apply is never met from here; what does apply is checked by the engine.
    match action {
        Action::Suspend => {
            input.reason = given(&form.reason).map(String::from);
            if let Some(u) = given(&form.until) {
                match parse_until(u) {
                    Some(t) => input.until = Some(t),
                    None => errors.push((
                        "until".to_string(),
                        "must be a date and time (UTC), such as 2026-12-31T18:00".to_string(),
                    )),
                }
            }
        }
        Action::ChangePackage => match given(&form.product) {
            Some(p) => input.product = Some(RecordRef::from_segment(p)),
            None => errors.push((
                "product".into(),
                "is required: the product to change to".into(),
            )),
        },
        Action::ChangePassword => {
            input.password =
                given(&form.password).map(|p| secrecy::SecretString::from(p.to_string()).into());
        }
        Action::Terminate if given(&form.confirm) != Some(svc.username.as_str()) => {
            errors.push((
                "confirm".into(),
                format!(
                    "type the username '{}' to terminate this service",
                    svc.username
                ),
            ));
        }
        _ => {}
    }
    // A password is never sent back into the form.
    let form = ActionForm {
        password: None,
        ..form
    };
    if !errors.is_empty() {
        return action_page(&state, &s, &headers, &svc, &action, (form, errors, None))
            .await
            .map(unprocessable);
    }
    match state
        .app
        .engine
        .request_action(svc.id, action.clone(), input)
        .await
    {
        Ok(_) => Ok(see_other(
            &headers,
            &format!("/console/services/{}", svc.id),
        )),
        Err(e) => {
            let (errors, detail) = problem_fields(e);
            let summary = Some(detail);
            action_page(&state, &s, &headers, &svc, &action, (form, errors, summary))
                .await
                .map(unprocessable)
        }
    }
}
