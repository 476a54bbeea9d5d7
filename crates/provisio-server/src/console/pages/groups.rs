//! Groups: the collect form (dotted fields and `field=value` filters, as the seed notation
//! writes them) and group operations, which always show the dry run first and run only
//! when the person confirms it, through `Engine::group_operation` like the REST route.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::{Extension, Form};
use provisio_core::page::PageRequest;
use provisio_engine::groups::{CollectQuery, GroupOp, GroupRequest, MemberResult};
use provisio_engine::input::RecordRef;
use serde::Deserialize;

use super::form::{messages, FormPage};
use super::{given, show};
use crate::console::{page, ConsoleState, PageResult, Session};
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize, Clone)]
pub(crate) struct GroupForm {
    invoice: Option<String>,
    operation: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    settings: Option<String>,
    client: Option<String>,
    server: Option<String>,
    children_only: Option<String>,
}

/// One collected service: its id, whether it is active, and its fields flattened.
type CollectedRow = (i64, bool, Vec<(String, String)>);

#[derive(Template)]
#[template(path = "console/groups.html")]
struct GroupsPage {
    form: GroupForm,
    csrf: String,
    may_run: bool,
    errors: Vec<(String, String)>,
    summary: Option<String>,
    collect_fields: String,
    collect_filters: String,
    collected: Option<Vec<CollectedRow>>,
    collect_errors: Vec<(String, String)>,
}

impl FormPage for GroupsPage {
    fn field_errors(&self) -> &[(String, String)] {
        &self.errors
    }
}

impl GroupsPage {
    fn collect_err(&self, field: &str) -> Option<String> {
        messages(&self.collect_errors, field)
    }
}

fn blank(s: &Session, form: GroupForm) -> GroupsPage {
    GroupsPage {
        form,
        csrf: s.csrf.clone(),
        may_run: s.may(Method::POST, "/v1/groups/{invoice}/{operation}"),
        errors: vec![],
        summary: None,
        collect_fields: String::new(),
        collect_filters: String::new(),
        collected: None,
        collect_errors: vec![],
    }
}

pub(crate) async fn groups(
    State(_): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/groups/{invoice}")?;
    page(
        &s,
        &headers,
        "/console/groups",
        "Groups",
        blank(&s, GroupForm::default()),
    )
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CollectForm {
    fields: Option<String>,
    filters: Option<String>,
}

pub(crate) async fn collect(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(f): Query<CollectForm>,
) -> PageResult {
    s.need(Method::POST, "/v1/collect")?;
    let fields_text = f.fields.clone().unwrap_or_default();
    let filters_text = f.filters.clone().unwrap_or_default();
    let mut p = blank(&s, GroupForm::default());
    p.collect_fields = fields_text.clone();
    p.collect_filters = filters_text.clone();
    let mut filters = BTreeMap::new();
    for (n, line) in filters_text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                filters.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => p.collect_errors.push((
                "filters".into(),
                format!(
                    "line {}: must be field=value, such as service.parent_invoice=INV-7",
                    n + 1
                ),
            )),
        }
    }
    let q = CollectQuery {
        fields: fields_text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(String::from)
            .collect(),
        filters,
        scope: s.caller().scope,
    };
    if p.collect_errors.is_empty() {
        match state.app.engine.collect(&q, PageRequest::first(200)).await {
            Ok(found) => {
                p.collected = Some(
                    found
                        .items
                        .into_iter()
                        .map(|c| {
                            let mut flat = Vec::new();
                            flatten("", &c.values, &mut flat);
                            (c.service_id, c.active, flat)
                        })
                        .collect(),
                )
            }
            Err(e) => {
                let prob = ApiError::from(e).into_problem();
                if prob.errors.is_empty() {
                    p.collect_errors.push(("filters".into(), prob.detail));
                }
                for fe in prob.errors {
                    let field = if fe.field.starts_with("fields") {
                        "fields"
                    } else {
                        "filters"
                    };
                    p.collect_errors.push((field.into(), fe.message));
                }
            }
        }
    }
    page(&s, &headers, "/console/groups", "Collect", p)
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, x, out);
            }
        }
        other => out.push((prefix.to_string(), show(other))),
    }
}

/// The request a form describes, or the field errors that stop it.
fn request(
    s: &Session,
    f: &GroupForm,
    dry_run: bool,
) -> Result<(String, GroupOp, GroupRequest), Vec<(String, String)>> {
    let mut errors = Vec::new();
    let invoice = given(&f.invoice).unwrap_or("").to_string();
    if invoice.is_empty() {
        errors.push(("invoice".into(), "is required: the group's invoice".into()));
    }
    let op = given(&f.operation).and_then(GroupOp::parse);
    if op.is_none() {
        errors.push((
            "operation".into(),
            "must be suspend, activate, delete, edit or transfer".into(),
        ));
    }
    let settings = match given(&f.settings) {
        None => None,
        Some(t) => match serde_json::from_str::<provisio_core::settings::Settings>(t) {
            Ok(m) => Some(m),
            Err(_) => {
                errors.push((
                    "settings".into(),
                    "must be a JSON object, such as {\"quota\": 5000}".into(),
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let req = GroupRequest {
        dry_run,
        children_only: given(&f.children_only).is_some(),
        since: given(&f.since).map(String::from),
        reason: given(&f.reason).map(String::from),
        settings,
        client: given(&f.client).map(RecordRef::from_segment),
        server: given(&f.server).map(RecordRef::from_segment),
        scope: s.caller().scope,
        ..Default::default()
    };
    Ok((invoice, op.expect("checked"), req))
}

#[derive(Template)]
#[template(path = "console/group_result.html")]
struct ResultPage {
    invoice: String,
    operation: String,
    dry_run: bool,
    members: Vec<MemberResult>,
    more: bool,
    form: GroupForm,
    csrf: String,
}

impl FormPage for ResultPage {
    fn field_errors(&self) -> &[(String, String)] {
        &[]
    }
}

impl ResultPage {
    fn job(&self, m: &MemberResult) -> String {
        m.job_id.map(|j| j.to_string()).unwrap_or_default()
    }
    fn detail(&self, m: &MemberResult) -> String {
        m.detail.clone().unwrap_or_default()
    }
}

async fn operate(
    state: &ConsoleState,
    s: &Session,
    headers: &HeaderMap,
    f: GroupForm,
    dry_run: bool,
) -> PageResult {
    s.need(Method::POST, "/v1/groups/{invoice}/{operation}")?;
    let (invoice, op, req) = match request(s, &f, dry_run) {
        Ok(r) => r,
        Err(errors) => {
            let mut p = blank(s, f);
            p.errors = errors;
            let mut r = page(s, headers, "/console/groups", "Groups", p)?;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(r);
        }
    };
    match state.app.engine.group_operation(&invoice, op, req).await {
        Ok(r) => {
            let content = ResultPage {
                invoice: r.invoice,
                operation: super::wire(r.operation),
                dry_run: r.dry_run,
                more: r.next.is_some(),
                members: r.members,
                form: f,
                csrf: s.csrf.clone(),
            };
            let title = if dry_run {
                "Dry run"
            } else {
                "Group operation"
            };
            page(s, headers, "/console/groups", title, content)
        }
        Err(e) => {
            let prob = ApiError::from(e).into_problem();
            let mut p = blank(s, f);
            p.summary = Some(prob.detail);
            p.errors = prob
                .errors
                .into_iter()
                .map(|x| (x.field, x.message))
                .collect();
            let mut r = page(s, headers, "/console/groups", "Groups", p)?;
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(r)
        }
    }
}

pub(crate) async fn dry_run(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<GroupForm>,
) -> PageResult {
    operate(&state, &s, &headers, f, true).await
}

pub(crate) async fn run(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Form(f): Form<GroupForm>,
) -> PageResult {
    operate(&state, &s, &headers, f, false).await
}
