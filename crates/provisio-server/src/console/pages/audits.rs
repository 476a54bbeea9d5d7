//! Audits: the list and the form that starts one (for a server, or every server that can
//! list accounts), one audit's report with its findings (live while it runs), and fixes
//! that always show their dry run first: a fix is started only as a preview, and its
//! report offers to apply the same fix after a confirmation. Both go through
//! `Engine::start_audits`, like `POST /v1/audits`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::{Extension, Form};
use provisio_core::audit::{Audit, FixMode};
use provisio_core::page::PageRequest;
use provisio_engine::audit::AuditInput;
use provisio_engine::input::RecordRef;
use serde::Deserialize;

use super::form::{problem_fields, unprocessable, FormPage};
use super::queue::Confirm;
use super::{given, parse_id, when, when_opt};
use crate::console::{page, see_other, ConsoleState, PageError, PageResult, Session};

/// The start form, and what a preview carries on to its apply.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StartForm {
    server: Option<String>,
    fix: Option<String>,
    client: Option<String>,
    product: Option<String>,
    force: Option<String>,
}

struct AuditRow {
    id: i64,
    server: String,
    state: &'static str,
    fix: String,
    counts: String,
    note: String,
    started: String,
    finished: String,
}

fn audit_row(a: &Audit, servers: &[provisio_core::server::Server]) -> AuditRow {
    AuditRow {
        id: a.id,
        server: servers
            .iter()
            .find(|s| s.id == a.server_id)
            .map_or_else(|| format!("#{}", a.server_id), |s| s.name.to_string()),
        state: a.state.as_str(),
        fix: match (a.fix, a.dry_run) {
            (None, _) => "report only".into(),
            (Some(f), true) => format!("{} (dry run)", f.as_str()),
            (Some(f), false) => format!("{} (applied)", f.as_str()),
        },
        counts: a
            .counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        note: a.note.clone().unwrap_or_default(),
        started: when(a.started_at),
        finished: when_opt(a.finished_at),
    }
}

#[derive(Template)]
#[template(path = "console/audits.html")]
struct AuditsPage {
    audits: Vec<AuditRow>,
    servers: Vec<String>,
    may_start: bool,
    csrf: String,
    form: StartForm,
    errors: Vec<(String, String)>,
    summary: Option<String>,
    next: Option<String>,
}

impl FormPage for AuditsPage {
    fn field_errors(&self) -> &[(String, String)] {
        &self.errors
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    after: Option<String>,
}

async fn list_page(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    after: Option<i64>,
    (form, errors, summary): (StartForm, Vec<(String, String)>, Option<String>),
) -> PageResult {
    let engine = &state.app.engine;
    let servers = super::all_servers(state).await?;
    let found = engine
        .list_audits(None, PageRequest { after, limit: 100 })
        .await?;
    let content = AuditsPage {
        audits: found.items.iter().map(|a| audit_row(a, &servers)).collect(),
        servers: servers.iter().map(|s| s.name.to_string()).collect(),
        may_start: s.may(Method::POST, "/v1/audits"),
        csrf: s.csrf.clone(),
        form,
        errors,
        summary,
        next: found.next.map(|n| n.to_string()),
    };
    page(s, headers, "/console/audits", "Audits", content)
}

pub(crate) async fn audits(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> PageResult {
    s.need(Method::GET, "/v1/audits")?;
    let after = parse_id("after", given(&q.after))?;
    list_page(
        &state,
        &s,
        &headers,
        after,
        (StartForm::default(), vec![], None),
    )
    .await
}

/// The engine's input for a form: a fix is a dry run unless `apply` (which only the
/// confirmation of a previewed fix sends). Fields that are not numbers are refused here
/// with the messages the API's body parser would give.
fn input(form: &StartForm, apply: bool) -> Result<AuditInput, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let fix = match given(&form.fix) {
        None => None,
        Some("local") => Some(FixMode::Local),
        Some("remote") => Some(FixMode::Remote),
        Some(other) => {
            errors.push((
                "fix".to_string(),
                format!("'{other}' is not a fix: local or remote"),
            ));
            None
        }
    };
    let client = match given(&form.client) {
        None => None,
        Some(c) => match c.parse::<i64>() {
            Ok(c) => Some(c),
            Err(_) => {
                errors.push((
                    "client".into(),
                    "must be a client id (a whole number)".into(),
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(AuditInput {
        server: given(&form.server).map(RecordRef::from_segment),
        fix,
        dry_run: fix.is_some() && !apply,
        force: given(&form.force).is_some(),
        client,
        product: given(&form.product).map(RecordRef::from_segment),
    })
}

/// What a preview carries on to its apply, as a query (`?client=4`, or empty).
fn carried(form: &StartForm) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("client", &form.client),
        ("product", &form.product),
        ("force", &form.force),
    ] {
        if let Some(v) = given(v) {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

/// Where a started audit is shown: its report, carrying what its apply needs again.
fn report_url(a: &Audit, form: &StartForm) -> String {
    format!("/console/audits/{}{}", a.id, carried(form))
}

async fn start(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    form: StartForm,
    apply: bool,
) -> PageResult {
    s.need(Method::POST, "/v1/audits")?;
    let input = match input(&form, apply) {
        Ok(i) => i,
        Err(errors) => {
            return list_page(state, s, headers, None, (form, errors, None))
                .await
                .map(unprocessable)
        }
    };
    match state.app.engine.start_audits(input).await {
        Ok(started) => match started.as_slice() {
            [one] => Ok(see_other(headers, &report_url(one, &form))),
            _ => Ok(see_other(headers, "/console/audits")),
        },
        Err(e) => {
            let (errors, detail) = problem_fields(e);
            list_page(state, s, headers, None, (form, errors, Some(detail)))
                .await
                .map(unprocessable)
        }
    }
}

pub(crate) async fn start_audit(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<StartForm>,
) -> PageResult {
    start(&state, &s, &headers, form, false).await
}

struct FindingRow {
    kind: &'static str,
    username: String,
    service_id: Option<i64>,
    local: String,
    remote: String,
    fix: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    a: AuditRow,
    running: bool,
    findings: Vec<FindingRow>,
    /// A finished dry run of a fix that this key may apply: the apply link's query.
    apply: Option<String>,
    /// What the report's URL carries for its apply, kept while the report refreshes.
    carried: String,
    preview: bool,
}

pub(crate) async fn audit(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(form): Query<StartForm>,
) -> PageResult {
    s.need(Method::GET, "/v1/audits/{id}")?;
    let engine = &state.app.engine;
    let a = engine.get_audit(crate::extract::path_id(&id)?).await?;
    let findings = engine.audit_findings(a.id, None).await?;
    let servers = super::all_servers(&state).await?;
    let preview = a.fix.is_some() && a.dry_run;
    let apply = (preview
        && a.state == provisio_core::audit::AuditState::Done
        && s.may(Method::POST, "/v1/audits"))
    .then(|| carried(&form));
    let content = AuditPage {
        running: a.state == provisio_core::audit::AuditState::Running,
        a: audit_row(&a, &servers),
        findings: findings
            .into_iter()
            .map(|f| FindingRow {
                kind: f.kind.as_str(),
                username: f.username,
                service_id: f.service_id,
                local: [f.local_status, f.local_package]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", "),
                remote: [f.remote_status, f.remote_package]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", "),
                fix: f.fix.unwrap_or_default(),
            })
            .collect(),
        apply,
        carried: carried(&form),
        preview,
    };
    let title = format!("Audit {}", a.id);
    page(&s, &headers, "/console/audits", &title, content)
}

/// The previewed audit an apply repeats without its dry run, or why it cannot be.
async fn previewed(state: &ConsoleState, raw: &str) -> Result<Audit, PageError> {
    let a = state
        .app
        .engine
        .get_audit(crate::extract::path_id(raw)?)
        .await?;
    if a.fix.is_none() || !a.dry_run || a.state != provisio_core::audit::AuditState::Done {
        return Err(crate::error::ApiError::bad_field(
            axum::http::StatusCode::CONFLICT,
            "audit",
            "state",
            format!(
                "audit {} is not a finished dry run of a fix: only a preview's fixes are applied",
                a.id
            ),
        )
        .into());
    }
    Ok(a)
}

pub(crate) async fn confirm_apply(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(form): Query<StartForm>,
) -> PageResult {
    s.need(Method::POST, "/v1/audits")?;
    let a = previewed(&state, &id).await?;
    let fix = a.fix.map(|f| f.as_str()).unwrap_or_default();
    let planned: i64 = a.counts.values().sum();
    let mut hidden = vec![
        ("server".to_string(), a.server_id.to_string()),
        ("fix".to_string(), fix.to_string()),
    ];
    for (k, v) in [
        ("client", &form.client),
        ("product", &form.product),
        ("force", &form.force),
    ] {
        if let Some(v) = given(v) {
            hidden.push((k.to_string(), v.to_string()));
        }
    }
    let content = Confirm {
        heading: format!("Apply the fixes of audit {}?", a.id),
        message: format!(
            "A new audit of server {} lists the remote again and fixes its drift ({fix}): the dry run planned {planned} fixes. The new report shows what was done.",
            a.server_id
        ),
        action: format!("/console/audits/{}/apply", a.id),
        csrf: s.csrf.clone(),
        hidden,
        button: "Apply fixes".into(),
        danger: true,
        note: false,
        note_error: None,
        back: format!("/console/audits/{}", a.id),
    };
    page(
        &s,
        &headers,
        "/console/audits",
        &format!("Apply audit {}", a.id),
        content,
    )
}

pub(crate) async fn apply(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<StartForm>,
) -> PageResult {
    s.need(Method::POST, "/v1/audits")?;
    let a = previewed(&state, &id).await?;
    // The server and fix are the preview's own, whatever the form says.
    let form = StartForm {
        server: Some(a.server_id.to_string()),
        fix: a.fix.map(|f| f.as_str().to_string()),
        ..form
    };
    start(&state, &s, &headers, form, true).await
}
