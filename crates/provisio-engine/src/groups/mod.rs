//! Seeing and acting on many services at once: `collect` (chosen fields of the services a
//! filter selects), operations on an invoice group (its services whose `invoice` or
//! `parent_invoice` is the given value), and the clean-up of long-suspended services.
//!
//! Group operations go through the normal action path one member at a time, so gates,
//! lifecycle rules and server limits apply to each; they are idempotent (a member already
//! in the wanted state is skipped), so running one again retries only what did not happen.

mod cleanup;
mod collect;
mod sign_on;

pub use crate::durations::{describe, parse_since};
// The bodies and answers are the API's wire types, defined once in `provisio-api`.
pub use provisio_api::requests::{CleanupRequest, CollectQuery, GroupRequest};
pub use provisio_api::views::{Collected, GroupOp, GroupResult, MemberResult};

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use provisio_core::job::JobState;
use provisio_core::module::{Action, SchemaScope};
use provisio_core::page::{Page, PageRequest};
use provisio_core::secret::redact_settings;
use provisio_core::service::{Service, ServiceStatus};
use provisio_core::settings::{Mode, Settings};
use provisio_core::{ClientId, ProductId, ServerId, ServiceId};
use provisio_store::ServiceFilter;
use serde_json::{json, Map, Value};

use crate::error::Problems;
use crate::input::ActionInput;
use crate::input::RecordRef;
use crate::jobs::plan;
use crate::{Engine, EngineError, Result};

use crate::durations::since_cutoff;

/// Members queued at once by a group operation.
const GROUP_PARALLELISM: usize = 32;

/// Members one group request takes when it names no `limit`, and the most it may name: a
/// very large group is acted on a page at a time, so no request loads it whole.
pub const GROUP_DEFAULT_LIMIT: u32 = 1_000;
pub const GROUP_MAX_LIMIT: u32 = 10_000;

/// Where a page of a group's members ended. Members come masters first, then children,
/// each by id, so the cursor says which of the two it is in: `m<id>` or `c<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCursor {
    Master(ServiceId),
    Child(ServiceId),
}

impl GroupCursor {
    pub fn parse(s: &str) -> Option<Self> {
        let id = |rest: &str| {
            rest.parse::<i64>()
                .ok()
                .filter(|i| *i >= 0 && !rest.starts_with('+'))
                .map(ServiceId)
        };
        match s.split_at_checked(1)? {
            ("m", rest) => id(rest).map(Self::Master),
            ("c", rest) => id(rest).map(Self::Child),
            _ => None,
        }
    }
}

impl std::fmt::Display for GroupCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Master(id) => write!(f, "m{}", id.0),
            Self::Child(id) => write!(f, "c{}", id.0),
        }
    }
}

/// One page of a group's members.
#[derive(Debug, Clone)]
pub struct MemberPage {
    pub members: Vec<Service>,
    /// Where the next page starts; `None` when no member is left.
    pub next: Option<GroupCursor>,
}

fn member(
    s: &Service,
    invoice: &str,
    action: &str,
    outcome: &str,
    detail: Option<String>,
) -> MemberResult {
    MemberResult {
        service_id: s.id.0,
        username: s.username.to_string(),
        role: if s.invoice.as_ref().is_some_and(|i| i.as_str() == invoice) {
            "master".into()
        } else {
            "child".into()
        },
        status: s.status.as_str().into(),
        action: action.into(),
        outcome: outcome.into(),
        job_id: None,
        detail,
    }
}

/// Whether a scoped key may see `client`; every client when there is no scope.
pub fn in_scope(
    scope: Option<provisio_core::access::Scope>,
    client: &provisio_core::client::Client,
) -> bool {
    use provisio_core::access::Scope;
    match scope {
        None => true,
        Some(Scope::Client(c)) => client.id == c,
        Some(Scope::Reseller(r)) => client.reseller_id == Some(r),
    }
}

impl Engine {
    /// Up to `limit` live services of a group after `after`: its masters (`invoice` is the
    /// group's) by id, then its children (`parent_invoice` is, `invoice` is not) by id.
    pub async fn group_members(
        &self,
        invoice: &str,
        children_only: bool,
        scope: Option<provisio_core::access::Scope>,
        after: Option<GroupCursor>,
        limit: u32,
    ) -> Result<MemberPage> {
        let limit = limit.max(1) as usize;
        let mut members: Vec<Service> = Vec::new();
        // One more than the page holds, so a full page knows whether anything follows.
        let want = limit + 1;
        let phases = [
            (
                false,
                ServiceFilter {
                    invoice: Some(invoice.to_string()),
                    live_only: true,
                    scope,
                    ..Default::default()
                },
            ),
            (
                true,
                ServiceFilter {
                    parent_invoice: Some(invoice.to_string()),
                    live_only: true,
                    scope,
                    ..Default::default()
                },
            ),
        ];
        for (child, filter) in phases {
            if !child && children_only {
                continue;
            }
            let mut page = match (after, child) {
                (Some(GroupCursor::Child(_)), false) => continue,
                (Some(GroupCursor::Master(id)), false) | (Some(GroupCursor::Child(id)), true) => {
                    PageRequest {
                        after: Some(id.0),
                        limit: 0,
                    }
                }
                _ => PageRequest::first(0),
            };
            while members.len() < want {
                page.limit = ((want - members.len()) as u32).min(PageRequest::MAX_LIMIT);
                let got = self.store.list_services(&filter, page).await?;
                members.extend(got.items.into_iter().filter(|s| {
                    // A service naming the group as both is a master, taken already.
                    !child || s.invoice.as_ref().is_none_or(|i| i.as_str() != invoice)
                }));
                match got.next {
                    Some(c) => page.after = Some(c),
                    None => break,
                }
            }
            if members.len() >= want {
                break;
            }
        }
        let next = if members.len() > limit {
            members.truncate(limit);
            members.last().map(|s| {
                if s.invoice.as_ref().is_some_and(|i| i.as_str() == invoice) {
                    GroupCursor::Master(s.id)
                } else {
                    GroupCursor::Child(s.id)
                }
            })
        } else {
            None
        };
        Ok(MemberPage { members, next })
    }

    /// Runs `op` on every member of the group `invoice`.
    pub async fn group_operation(
        &self,
        invoice: &str,
        op: GroupOp,
        req: GroupRequest,
    ) -> Result<GroupResult> {
        let mut p = Problems::default();
        if invoice.trim().is_empty() || invoice.len() > 200 {
            p.push("invoice", "length", "must be 1 to 200 characters");
        }
        let stray = [
            ("since", req.since.is_some() && op != GroupOp::Delete),
            ("reason", req.reason.is_some() && op != GroupOp::Suspend),
            ("settings", req.settings.is_some() && op != GroupOp::Edit),
            ("client", req.client.is_some() && op != GroupOp::Transfer),
            ("server", req.server.is_some() && op != GroupOp::Transfer),
        ];
        for (field, bad) in stray {
            if bad {
                p.push(field, "not_applicable", "does not apply to this operation");
            }
        }
        let since = match req.since.as_deref().map(parse_since) {
            Some(Ok(d)) => Some(since_cutoff(self.now(), d)),
            Some(Err(e)) => {
                p.push("since", "duration", e);
                None
            }
            None => None,
        };
        if op == GroupOp::Edit && req.settings.as_ref().is_none_or(|s| s.is_empty()) {
            p.push(
                "settings",
                "required",
                "is required for edit: the product settings to override",
            );
        }
        let target_client = match (&req.client, op) {
            (Some(r), _) => match r {
                RecordRef::Id(i) => match self.store.get_client(ClientId(*i)).await? {
                    Some(c) if in_scope(req.scope, &c) => Some(c.id),
                    _ => {
                        p.push("client", "exists", format!("no client {i}"));
                        None
                    }
                },
                RecordRef::Name(_) => {
                    p.push("client", "type", "must be a client id");
                    None
                }
            },
            (None, GroupOp::Transfer) if req.server.is_none() => {
                p.push(
                    "client",
                    "required",
                    "transfer needs client or server: where the members go",
                );
                None
            }
            _ => None,
        };
        if let Some(r) = &req.server {
            match self.find_server(r).await {
                Ok(_) => {}
                Err(EngineError::NotFound { .. }) => {
                    p.push("server", "exists", format!("no server {r}"))
                }
                Err(e) => return Err(e),
            }
        }
        if req.wait.is_some_and(|w| w > 300) {
            p.push("wait", "range", "must be at most 300 seconds");
        }
        let limit = req.limit.unwrap_or(GROUP_DEFAULT_LIMIT);
        if !(1..=GROUP_MAX_LIMIT).contains(&limit) {
            p.push(
                "limit",
                "range",
                format!("must be between 1 and {GROUP_MAX_LIMIT}"),
            );
        }
        let after = match req.after.as_deref() {
            None | Some("") => None,
            Some(a) => {
                let c = GroupCursor::parse(a);
                if c.is_none() {
                    p.push("after", "cursor", "is not a `next` this server returned");
                }
                c
            }
        };
        p.finish()?;

        let MemberPage { members, next } = self
            .group_members(invoice, req.children_only, req.scope, after, limit)
            .await?;
        // A later page may find nothing left (members ended meanwhile): that is the end,
        // not an unknown group.
        if members.is_empty() && after.is_none() {
            return Err(EngineError::NotFound {
                what: "group",
                key: format!("'{invoice}' (no live service has it as invoice or parent_invoice)"),
            });
        }
        // Members a plain lifecycle action applies to, with no gate to ask and no job
        // already queued, are stored in batches; the rest go one by one through the full
        // action path, several at once. Results keep the members' order.
        let fast = self.fast_lane(op, &req, since, &members).await?;
        let mut batch: Vec<(
            usize,
            ServiceId,
            provisio_core::job::NewJob,
            Vec<provisio_core::event::NewEvent>,
        )> = Vec::new();
        let mut slots: Vec<Option<MemberResult>> = vec![None; members.len()];
        let mut slow: Vec<(usize, Service)> = Vec::new();
        let count = members.len();
        for (i, s) in members.into_iter().enumerate() {
            match fast.get(&s.id) {
                Some((action, params)) => {
                    let before = crate::events::before(params, action.as_str(), &s);
                    let job = self.new_job(s.server_id, action.clone(), params.clone(), self.now());
                    let mut r = member(&s, invoice, action.as_str(), "queued", None);
                    if let (Action::Terminate, Some(x)) = (action, s.suspension.as_ref()) {
                        r.detail = Some(format!("suspended since {}", x.since.date_naive()));
                    }
                    slots[i] = Some(r);
                    batch.push((i, s.id, job, vec![before]));
                }
                None => slow.push((i, s)),
            }
            // Store as we go, so the worker starts on the first members while the rest
            // are prepared.
            if batch.len() == 1000 || (i + 1 == count && !batch.is_empty()) {
                let rows: Vec<_> = batch
                    .iter()
                    .map(|(_, id, job, ev)| (*id, job.clone(), ev.clone()))
                    .collect();
                let stored = self.store.enqueue_jobs(&rows).await?;
                self.count_enqueued(stored.iter().collect()).await;
                for ((i, ..), job) in batch.iter().zip(stored) {
                    if let Some(r) = slots[*i].as_mut() {
                        r.job_id = Some(job.id.0);
                    }
                }
                batch.clear();
                self.wake.notify_one();
            }
        }
        use futures::StreamExt as _;
        let req_ref = &req;
        // Owned items: a closure over borrowed ones would need a higher-ranked lifetime
        // the compiler cannot prove `Send` for.
        let done: Vec<(usize, Result<MemberResult>)> = futures::stream::iter(slow)
            .map(|(i, s)| async move {
                let r = self
                    .group_member(&s, invoice, op, req_ref, since, target_client)
                    .await;
                (i, r)
            })
            .buffered(GROUP_PARALLELISM)
            .collect()
            .await;
        for (i, r) in done {
            slots[i] = Some(r?);
        }
        let mut results: Vec<MemberResult> = slots.into_iter().flatten().collect();
        if let (Some(wait), false) = (req.wait, req.dry_run) {
            let ids: Vec<provisio_core::job::JobId> = results
                .iter()
                .filter_map(|r| r.job_id.map(provisio_core::job::JobId))
                .collect();
            let jobs = self.wait_for_jobs(&ids, Duration::from_secs(wait)).await?;
            for r in results.iter_mut() {
                let Some(j) = r
                    .job_id
                    .and_then(|id| jobs.get(&provisio_core::job::JobId(id)))
                else {
                    continue;
                };
                r.outcome = match j.state {
                    JobState::Done => "done".into(),
                    JobState::Failed | JobState::Cancelled | JobState::Resolved => {
                        r.detail = j.last_error.clone();
                        "failed".into()
                    }
                    _ => "queued".into(),
                };
            }
        }
        Ok(GroupResult {
            invoice: invoice.to_string(),
            operation: op,
            dry_run: req.dry_run,
            members: results,
            next: next.map(|c| c.to_string()),
        })
    }

    /// The members a batch may take: a lifecycle operation (not a dry run) whose action the
    /// member's module can do and whose transition its current status allows, no enabled
    /// gate listening to its `.before` event, and no job of the member still open (so its
    /// status is what it will be). Returns each one's action and job params.
    async fn fast_lane(
        &self,
        op: GroupOp,
        req: &GroupRequest,
        since: Option<DateTime<Utc>>,
        members: &[Service],
    ) -> Result<HashMap<ServiceId, (Action, Settings)>> {
        let mut out = HashMap::new();
        let (action, input) = match op {
            GroupOp::Suspend => (
                Action::Suspend,
                ActionInput {
                    reason: Some(req.reason.clone().unwrap_or_else(|| "admin".into())),
                    ..Default::default()
                },
            ),
            GroupOp::Activate => (Action::Unsuspend, ActionInput::default()),
            GroupOp::Delete => (Action::Terminate, ActionInput::default()),
            _ => return Ok(out),
        };
        if req.dry_run {
            return Ok(out);
        }
        let event =
            provisio_core::event::EventType::parse(&format!("service.{}.before", action.as_str()))
                .expect("lifecycle events are valid");
        let gated = self
            .store
            .list_handlers(&provisio_store::HandlerFilter {
                phase: Some(provisio_core::handler::Phase::Gate),
                status: Some(provisio_core::handler::HandlerStatus::Enabled),
            })
            .await?
            .iter()
            .any(|h| h.listens_to(&event));
        if gated {
            return Ok(out);
        }
        let mut open = std::collections::HashSet::new();
        let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
        loop {
            let got = self
                .store
                .list_jobs(
                    &provisio_store::JobFilter {
                        open_only: true,
                        ..Default::default()
                    },
                    page,
                )
                .await?;
            open.extend(got.items.iter().map(|j| j.service_id));
            match got.next {
                Some(c) => page.after = Some(c),
                None => break,
            }
        }
        // Each member passes the action path's own checks, against its current status
        // (it has no open job) and its server, loaded once per server.
        let mut servers: HashMap<ServerId, Option<(provisio_core::server::Server, Vec<String>)>> =
            HashMap::new();
        let mut params = None;
        for s in members {
            if open.contains(&s.id) {
                continue;
            }
            if action == Action::Terminate {
                if let Some(cut) = since {
                    let at = s.suspension.as_ref().map(|x| x.since);
                    if s.status != ServiceStatus::Suspended || at.is_none_or(|t| t > cut) {
                        continue;
                    }
                }
            }
            let loaded = match servers.entry(s.server_id) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let server = self.store.get_server(s.server_id).await?;
                    e.insert(server.map(|server| {
                        let offered = self
                            .modules
                            .get(&server.module)
                            .map(|m| m.custom_actions(&server.settings))
                            .unwrap_or_default();
                        (server, offered)
                    }))
                }
            };
            let Some((server, offered)) = loaded.as_ref() else {
                continue;
            };
            let target = plan::Target {
                server,
                module: self.modules.info(&server.module),
                offered,
                status: s.status,
                product_id: s.product_id,
            };
            if plan::check_runnable(&target, &action).is_err() {
                continue;
            }
            // The same input for every member: checked once. Bad input leaves every member
            // to the one-by-one path, which reports it.
            let p = params.get_or_insert_with(|| {
                plan::params(
                    &self.cipher,
                    self.now(),
                    &target,
                    &action,
                    &input,
                    plan::NewProduct::None,
                )
                .ok()
            });
            match p {
                Some(p) => {
                    out.insert(s.id, (action.clone(), p.clone()));
                }
                None => return Ok(HashMap::new()),
            }
        }
        Ok(out)
    }

    async fn group_member(
        &self,
        s: &Service,
        invoice: &str,
        op: GroupOp,
        req: &GroupRequest,
        since: Option<DateTime<Utc>>,
        target_client: Option<ClientId>,
    ) -> Result<MemberResult> {
        let skip = |why: String| Ok(member(s, invoice, "nothing", "skipped", Some(why)));
        let (action, input) = match op {
            GroupOp::Suspend if s.status != ServiceStatus::Active => {
                return skip(format!("it is {}", s.status.as_str()))
            }
            GroupOp::Suspend => (
                Action::Suspend,
                ActionInput {
                    reason: Some(req.reason.clone().unwrap_or_else(|| "admin".into())),
                    ..Default::default()
                },
            ),
            GroupOp::Activate if s.status != ServiceStatus::Suspended => {
                return skip(format!("it is {}", s.status.as_str()))
            }
            GroupOp::Activate => (Action::Unsuspend, ActionInput::default()),
            GroupOp::Delete => {
                if let Some(cut) = since {
                    let suspended_at = s.suspension.as_ref().map(|x| x.since);
                    if s.status != ServiceStatus::Suspended || suspended_at.is_none_or(|t| t > cut)
                    {
                        return skip("not suspended long enough for --since".into());
                    }
                }
                (Action::Terminate, ActionInput::default())
            }
            GroupOp::Transfer => {
                let mut steps = Vec::new();
                if let Some(to) = target_client.filter(|to| *to != s.client_id) {
                    steps.push(format!("move to client {to}"));
                }
                let server = match &req.server {
                    Some(r) => {
                        let target = self.find_server(r).await?;
                        (target.id != s.server_id).then_some(target)
                    }
                    None => None,
                };
                if let Some(t) = &server {
                    let source = self.store.get_server(s.server_id).await?;
                    if source.as_ref().is_some_and(|src| src.module != t.module) {
                        return Ok(member(
                            s,
                            invoice,
                            "nothing",
                            "refused",
                            Some(format!(
                                "server '{}' runs module '{}', not this service's",
                                t.name, t.module
                            )),
                        ));
                    }
                    if s.status != ServiceStatus::Active {
                        return Ok(member(
                            s,
                            invoice,
                            "nothing",
                            "skipped",
                            Some(format!(
                                "it is {}; only active services move between servers",
                                s.status.as_str()
                            )),
                        ));
                    }
                    steps.push(format!(
                        "create on server '{}', then terminate on the source",
                        t.name
                    ));
                }
                if steps.is_empty() {
                    return skip("it is already where the transfer would put it".into());
                }
                let label = steps.join("; ");
                if req.dry_run {
                    return Ok(member(s, invoice, &label, "planned", None));
                }
                let mut r = member(s, invoice, &label, "done", None);
                if let Some(to) = target_client.filter(|to| *to != s.client_id) {
                    let mut moved = s.clone();
                    moved.client_id = to;
                    self.store.update_service(&moved).await?;
                    r.detail = Some(format!("from client {}", s.client_id));
                }
                if let Some(t) = server {
                    // The create runs against the target; only when it succeeded does the
                    // engine move the service and queue the terminate on the source, so a
                    // failed transfer leaves the source untouched.
                    let mut params = Settings::new();
                    params.insert("transfer_to".into(), Value::from(t.id.0));
                    params.insert("transfer_from".into(), Value::from(s.server_id.0));
                    let before = crate::events::before(&params, "create", s);
                    let job = self.new_job(t.id, Action::Create, params, self.now());
                    let stored = self.store.enqueue_job(s.id, &job, &[before]).await?;
                    self.wake.notify_one();
                    self.count_enqueued(vec![&stored]).await;
                    r.outcome = "queued".into();
                    r.job_id = Some(stored.id.0);
                }
                return Ok(r);
            }
            GroupOp::Edit => return self.edit_member(s, invoice, req).await,
        };
        let mut r = member(s, invoice, action.as_str(), "planned", None);
        if let Some(detail) = match (action.clone(), since, s.suspension.as_ref()) {
            (Action::Terminate, _, Some(x)) => {
                Some(format!("suspended since {}", x.since.date_naive()))
            }
            (Action::Terminate, _, None) => Some("no suspension date".into()),
            _ => None,
        } {
            r.detail = Some(detail);
        }
        if req.dry_run {
            return Ok(r);
        }
        match self.request_action(s.id, action, input).await {
            Ok(job) => {
                r.outcome = "queued".into();
                r.job_id = Some(job.id.0);
            }
            Err(
                e @ (EngineError::Conflict { .. }
                | EngineError::Forbidden { .. }
                | EngineError::Invalid(_)),
            ) => {
                r.outcome = "refused".into();
                r.detail = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
        Ok(r)
    }

    /// Sets product-setting overrides on one member and, when its module can change
    /// packages and the account exists, queues a change_package so the remote follows.
    async fn edit_member(
        &self,
        s: &Service,
        invoice: &str,
        req: &GroupRequest,
    ) -> Result<MemberResult> {
        let changes = req.settings.clone().unwrap_or_default();
        let product = self.get_product(&RecordRef::Id(s.product_id.0)).await?;
        let info = self
            .modules
            .info(&product.product.module)
            .cloned()
            .ok_or_else(|| EngineError::Conflict {
                field: None,
                message: format!("module '{}' is not installed", product.product.module),
            })?;
        let schema = info.schema(SchemaScope::Product);
        let mut overrides = self.cipher.open_settings(&s.product_overrides)?;
        for (k, v) in &changes {
            if v.is_null() {
                overrides.remove(k);
            } else {
                overrides.insert(k.clone(), v.clone());
            }
        }
        let mut p = Problems::default();
        let mut checked = match schema.validate(&overrides, Mode::Partial) {
            Ok(s) => s,
            Err(errors) => {
                p.extend_prefixed("settings", errors);
                Settings::new()
            }
        };
        if p.is_empty() {
            let mut merged = self.cipher.open_settings(&product.effective)?;
            for (k, v) in &checked {
                merged.insert(k.clone(), v.clone());
            }
            if let Err(errors) = schema.validate(&merged, Mode::Complete) {
                p.extend_prefixed("settings", errors);
            }
        }
        p.finish()?;
        self.cipher.seal_settings(schema, &mut checked);
        let same = self.cipher.open_settings(&s.product_overrides)?
            == self.cipher.open_settings(&checked)?;
        let remote = info.can(provisio_core::module::Capability::ChangePackage)
            && matches!(s.status, ServiceStatus::Active | ServiceStatus::Suspended);
        let label = if remote {
            "change_package"
        } else {
            "edit settings"
        };
        if same {
            return Ok(member(
                s,
                invoice,
                "nothing",
                "skipped",
                Some("the overrides are already set".into()),
            ));
        }
        if req.dry_run {
            let (shown, _) = redact_settings(&checked);
            return Ok(member(
                s,
                invoice,
                label,
                "planned",
                Some(format!("overrides {}", Value::Object(shown))),
            ));
        }
        let mut edited = s.clone();
        edited.product_overrides = checked;
        self.store.update_service(&edited).await?;
        let mut r = member(s, invoice, label, "done", None);
        if remote {
            // The same product again, with the new overrides: the module applies them.
            let mut params = Settings::new();
            params.insert("product_id".into(), Value::from(s.product_id.0));
            let before = crate::events::before(&params, "change_package", &edited);
            let job = self.new_job(s.server_id, Action::ChangePackage, params, self.now());
            let stored = self.store.enqueue_job(s.id, &job, &[before]).await?;
            self.wake.notify_one();
            self.count_enqueued(vec![&stored]).await;
            r.outcome = "queued".into();
            r.job_id = Some(stored.id.0);
        }
        Ok(r)
    }
}
