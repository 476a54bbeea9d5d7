//! The queue: failed, pending and running jobs filtered by server, action, error kind and
//! age; one job with its attempts; retry or resolve one, or every failed job of a server,
//! each after a confirmation page.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::{Extension, Form};
use provisio_core::job::{JobId, JobState};
use provisio_core::page::PageRequest;
use provisio_core::ServiceId;
use provisio_engine::input::RecordRef;
use provisio_store::JobFilter;
use serde::Deserialize;

use super::form::FormPage;
use super::{given, parse_id, when, when_opt, wire};
use crate::console::{page, see_other, ConsoleState, PageError, PageResult, Session};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct QueueQuery {
    state: Option<String>,
    server: Option<String>,
    action: Option<String>,
    error_kind: Option<String>,
    older_than: Option<String>,
    service: Option<String>,
    after: Option<String>,
    notice: Option<String>,
}

pub(crate) struct JobRow {
    pub id: i64,
    pub service_id: i64,
    pub server: String,
    pub action: String,
    pub state: String,
    pub attempts: String,
    pub error: String,
    pub created: String,
    pub finished: String,
    pub failed: bool,
}

#[derive(Template)]
#[template(path = "console/queue.html")]
struct QueuePage {
    q: QueueQuery,
    state: String,
    servers: Vec<String>,
    jobs: Vec<JobRow>,
    next: Option<String>,
    may_retry: bool,
    error: Option<(String, String)>,
    notice: Option<String>,
}

impl FormPage for QueuePage {
    fn field_errors(&self) -> &[(String, String)] {
        self.error.as_slice()
    }
}

pub(crate) fn job_row(
    j: provisio_core::job::Job,
    servers: &[provisio_core::server::Server],
) -> JobRow {
    JobRow {
        id: j.id.0,
        service_id: j.service_id.0,
        server: servers
            .iter()
            .find(|s| s.id == j.server_id)
            .map_or_else(|| format!("#{}", j.server_id), |s| s.name.to_string()),
        action: j.action.as_str().to_string(),
        state: j.state.as_str().to_string(),
        attempts: format!("{}/{}", j.attempts, j.max_attempts),
        error: j.last_error.unwrap_or_default(),
        created: when(j.created_at),
        finished: when_opt(j.finished_at),
        failed: j.state == JobState::Failed,
    }
}

pub(crate) async fn queue(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<QueueQuery>,
) -> PageResult {
    s.need(Method::GET, "/v1/jobs")?;
    let engine = &state.app.engine;
    let servers = if s.may(Method::GET, "/v1/servers") {
        super::all_servers(&state).await?
    } else {
        Vec::new()
    };
    let st = given(&q.state).unwrap_or("failed").to_string();
    let mut error = None;
    let mut filter = JobFilter {
        scope: s.caller().scope,
        ..Default::default()
    };
    match st.as_str() {
        "open" => filter.open_only = true,
        "all" => {}
        other => match JobState::parse(other) {
            Some(js) => filter.state = Some(js),
            None => error = Some(("state".into(), format!("'{other}' is not a job state"))),
        },
    }
    if let Some(name) = given(&q.server) {
        if s.caller().scope.is_some() {
            error = Some((
                "server".into(),
                "a scoped key cannot filter by server".into(),
            ));
        } else {
            match engine.find_server(&RecordRef::from_segment(name)).await {
                Ok(srv) => filter.server_id = Some(srv.id),
                Err(e) => {
                    error = Some((
                        "server".into(),
                        crate::ApiError::from(e).into_problem().detail,
                    ))
                }
            }
        }
    }
    if let Some(a) = given(&q.action) {
        match provisio_core::module::Action::parse(&a.replace('-', "_")) {
            Ok(a) => filter.action = Some(a.as_str().to_string()),
            Err(_) => error = Some(("action".into(), format!("'{a}' is not an action name"))),
        }
    }
    if let Some(k) = given(&q.error_kind) {
        if ["transient", "permanent", "unknown"].contains(&k) {
            filter.error_kind = Some(k.to_string());
        } else {
            error = Some((
                "error_kind".into(),
                "must be transient, permanent or unknown".into(),
            ));
        }
    }
    if let Some(d) = given(&q.older_than) {
        match crate::config::parse_duration(d) {
            Ok(d) => {
                filter.created_before = Some(
                    engine.now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX),
                )
            }
            Err(m) => error = Some(("older_than".into(), m)),
        }
    }
    filter.service_id = parse_id("service", given(&q.service))?.map(ServiceId);
    let after = parse_id("after", given(&q.after))?;
    let (jobs, next) = if error.is_none() {
        let found = engine
            .list_jobs(&filter, PageRequest { after, limit: 50 })
            .await?;
        let next = found.next.map(|c| c.to_string());
        (
            found
                .items
                .into_iter()
                .map(|j| job_row(j, &servers))
                .collect(),
            next,
        )
    } else {
        (Vec::new(), None)
    };
    let content = QueuePage {
        state: st,
        servers: servers.iter().map(|x| x.name.to_string()).collect(),
        jobs,
        next,
        may_retry: s.may(Method::POST, "/v1/jobs/{id}/retry"),
        error,
        notice: q.notice.clone(),
        q,
    };
    page(&s, &headers, "/console/queue", "Queue", content)
}

struct AttemptRow {
    attempt: u32,
    started: String,
    duration_ms: i64,
    outcome: String,
    message: String,
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct JobPage {
    job: JobRow,
    kind: String,
    note: String,
    params: Vec<(String, String)>,
    attempts: Vec<AttemptRow>,
    may_retry: bool,
}

async fn seen_job(state: &ConsoleState, s: &Session, raw: &str) -> Result<JobId, PageError> {
    let id = JobId(crate::extract::path_id(raw)?);
    s.caller().job(&state.app.engine, id).await?;
    Ok(id)
}

pub(crate) async fn job(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::GET, "/v1/jobs/{id}")?;
    let id = seen_job(&state, &s, &id).await?;
    let d = state.app.engine.get_job(id).await?;
    let servers = if s.may(Method::GET, "/v1/servers") {
        super::all_servers(&state).await?
    } else {
        Vec::new()
    };
    let (params, _) = provisio_core::secret::redact_settings(&d.job.params);
    let kind = d.job.error_kind.map(wire).unwrap_or_default();
    let note = d.job.note.clone().unwrap_or_default();
    let content = JobPage {
        kind,
        note,
        params: params
            .iter()
            .map(|(k, v)| (k.clone(), super::show(v)))
            .collect(),
        attempts: d
            .attempts
            .into_iter()
            .map(|a| AttemptRow {
                attempt: a.attempt,
                started: when(a.started_at),
                duration_ms: a.duration_ms,
                outcome: a.outcome,
                message: a.message.unwrap_or_default(),
            })
            .collect(),
        job: job_row(d.job, &servers),
        may_retry: s.may(Method::POST, "/v1/jobs/{id}/retry"),
    };
    page(&s, &headers, "/console/queue", "Job", content)
}

/// A confirmation page: what will happen, and the form that does it.
#[derive(Template)]
#[template(path = "console/confirm.html")]
pub(crate) struct Confirm {
    pub heading: String,
    pub message: String,
    pub action: String,
    pub csrf: String,
    pub hidden: Vec<(String, String)>,
    pub button: String,
    pub danger: bool,
    pub note: bool,
    pub note_error: Option<String>,
    pub back: String,
}

pub(crate) async fn confirm_retry(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::POST, "/v1/jobs/{id}/retry")?;
    let id = seen_job(&state, &s, &id).await?;
    let j = state.app.engine.get_job(id).await?.job;
    let content = Confirm {
        heading: format!("Retry job {id}?"),
        message: format!(
            "Job {id} ({} of service {}) runs again from its first attempt, under the same idempotency key.",
            j.action.as_str(),
            j.service_id
        ),
        action: format!("/console/queue/{id}/retry"),
        csrf: s.csrf.clone(),
        hidden: vec![],
        button: "Retry the job".into(),
        danger: false,
        note: false,
        note_error: None,
        back: format!("/console/queue/{id}"),
    };
    page(&s, &headers, "/console/queue", "Retry job", content)
}

pub(crate) async fn retry(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::POST, "/v1/jobs/{id}/retry")?;
    let id = seen_job(&state, &s, &id).await?;
    state.app.engine.retry_job(id).await?;
    Ok(see_other(&headers, &format!("/console/queue/{id}")))
}

#[derive(Deserialize)]
pub(crate) struct NoteForm {
    #[serde(default)]
    note: Option<String>,
}

pub(crate) async fn confirm_resolve(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> PageResult {
    s.need(Method::POST, "/v1/jobs/{id}/resolve")?;
    let id = seen_job(&state, &s, &id).await?;
    page(
        &s,
        &headers,
        "/console/queue",
        "Resolve job",
        resolve_form(&s, id, None),
    )
}

fn resolve_form(s: &Session, id: JobId, note_error: Option<String>) -> Confirm {
    Confirm {
        heading: format!("Resolve job {id}?"),
        message: "The job is marked handled by a person and is not run again. Say what was done."
            .into(),
        action: format!("/console/queue/{id}/resolve"),
        csrf: s.csrf.clone(),
        hidden: vec![],
        button: "Mark resolved".into(),
        danger: true,
        note: true,
        note_error,
        back: format!("/console/queue/{id}"),
    }
}

pub(crate) async fn resolve(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<NoteForm>,
) -> PageResult {
    s.need(Method::POST, "/v1/jobs/{id}/resolve")?;
    let id = seen_job(&state, &s, &id).await?;
    let Some(note) = given(&f.note) else {
        return page(
            &s,
            &headers,
            "/console/queue",
            "Resolve job",
            resolve_form(
                &s,
                id,
                Some("is required: what the person did about it".into()),
            ),
        );
    };
    if note.chars().count() > 2000 {
        return page(
            &s,
            &headers,
            "/console/queue",
            "Resolve job",
            resolve_form(&s, id, Some("must be at most 2000 characters".into())),
        );
    }
    state.app.engine.resolve_job(id, note).await?;
    Ok(see_other(&headers, &format!("/console/queue/{id}")))
}

#[derive(Deserialize)]
pub(crate) struct ServerForm {
    #[serde(default)]
    server: Option<String>,
}

pub(crate) async fn confirm_retry_all(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(f): Query<ServerForm>,
) -> PageResult {
    s.need(Method::POST, "/v1/jobs/retry")?;
    let server = match given(&f.server) {
        Some(n) => Some(
            state
                .app
                .engine
                .find_server(&RecordRef::from_segment(n))
                .await?,
        ),
        None => None,
    };
    let (message, hidden, back) = match &server {
        Some(srv) => (
            format!("Every failed job of server {} runs again.", srv.name),
            vec![("server".to_string(), srv.name.to_string())],
            format!("/console/queue?state=failed&server={}", srv.name),
        ),
        None => (
            "Every failed job of every server runs again.".to_string(),
            vec![],
            "/console/queue?state=failed".to_string(),
        ),
    };
    let content = Confirm {
        heading: "Retry all failed jobs?".into(),
        message,
        action: "/console/queue/retry-all".into(),
        csrf: s.csrf.clone(),
        hidden,
        button: "Retry them all".into(),
        danger: true,
        note: false,
        note_error: None,
        back,
    };
    page(&s, &headers, "/console/queue", "Retry all", content)
}

pub(crate) async fn retry_all(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<ServerForm>,
) -> PageResult {
    s.need(Method::POST, "/v1/jobs/retry")?;
    let engine = &state.app.engine;
    let server = match given(&f.server) {
        Some(n) => Some(engine.find_server(&RecordRef::from_segment(n)).await?),
        None => None,
    };
    let n = engine.retry_failed(server.as_ref().map(|x| x.id)).await?;
    let mut to = format!("/console/queue?state=open&notice={n}+failed+jobs+queued+again");
    if let Some(srv) = server {
        to.push_str(&format!("&server={}", srv.name));
    }
    Ok(see_other(&headers, &to))
}
