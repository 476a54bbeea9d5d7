//! The overview: the queue by state, failed jobs by server and error, each server's health,
//! actions per minute as an SVG drawn here, failing deliveries, the last usage sync and audit.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::Extension;
use provisio_core::page::PageRequest;
use provisio_store::ServerFilter;

use super::{when, when_opt, wire};
use crate::console::{page, see_other, ConsoleState, PageResult, Session};

/// How far back the chart reaches.
const CHART_MINUTES: i64 = 180;

struct ServerLine {
    name: String,
    module: String,
    running: i64,
    max_concurrent: u32,
    errors: i64,
    last_success: String,
    enabled: bool,
}

struct Bar {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    label: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview {
    by_state: Vec<(String, i64)>,
    finished: Vec<(String, i64)>,
    failed: Vec<(String, String, String, i64)>,
    servers: Vec<ServerLine>,
    bars: Vec<Bar>,
    chart_max: i64,
    chart_total: i64,
    chart_from: String,
    chart_to: String,
    deliveries: Vec<(String, i64, String)>,
    last_sync: Option<(i64, String, String)>,
    last_audit: Option<(i64, String, String, String)>,
    may_queue: bool,
}

pub(crate) async fn overview(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    // People without the setup area start at what they may see.
    if !s.may(Method::GET, "/v1/servers") {
        return Ok(see_other(&headers, "/console/services"));
    }
    let engine = &state.app.engine;
    let now = engine.now();
    let from = now - chrono::Duration::minutes(CHART_MINUTES);
    let o = engine
        .store()
        .console_overview(now - chrono::Duration::hours(1), from)
        .await
        .map_err(provisio_engine::EngineError::from)?;
    let servers = engine
        .list_servers(
            &ServerFilter::default(),
            PageRequest::first(PageRequest::MAX_LIMIT),
        )
        .await?
        .items;
    let name = |id: provisio_core::ServerId| {
        servers
            .iter()
            .find(|x| x.id == id)
            .map_or_else(|| format!("#{id}"), |x| x.name.to_string())
    };
    let lines = o
        .servers
        .iter()
        .filter_map(|a| {
            let srv = servers.iter().find(|x| x.id == a.server_id)?;
            Some(ServerLine {
                name: srv.name.to_string(),
                module: srv.module.clone(),
                running: a.running,
                max_concurrent: srv.max_concurrent,
                errors: a.errors,
                last_success: when_opt(a.last_success),
                enabled: srv.enabled,
            })
        })
        .collect();
    // One bar per minute over a 720 × 140 drawing; empty minutes draw nothing.
    let chart_max = o.per_minute.iter().map(|m| m.1).max().unwrap_or(0);
    let w = 720.0 / CHART_MINUTES as f64;
    let bars = o
        .per_minute
        .iter()
        .map(|(m, n)| {
            let at = (*m - from).num_seconds() as f64 / 60.0;
            let h = if chart_max == 0 {
                0.0
            } else {
                130.0 * *n as f64 / chart_max as f64
            };
            Bar {
                x: (at * w).clamp(0.0, 720.0 - w),
                y: 140.0 - h,
                w: (w - 0.5).max(0.5),
                h,
                label: format!("{}: {n}", m.format("%H:%M")),
            }
        })
        .collect();
    let mut last_sync = None;
    if s.may(Method::GET, "/v1/usage/syncs") {
        let syncs = engine
            .usage_syncs(PageRequest::first(PageRequest::MAX_LIMIT))
            .await?;
        last_sync = syncs
            .items
            .into_iter()
            .max_by_key(|r| r.id)
            .map(|r| (r.id, r.state, when(r.started_at)));
    }
    let mut last_audit = None;
    if s.may(Method::GET, "/v1/audits") {
        let audits = engine
            .list_audits(None, PageRequest::first(PageRequest::MAX_LIMIT))
            .await?;
        last_audit = audits.items.into_iter().max_by_key(|a| a.id).map(|a| {
            (
                a.id,
                name(a.server_id),
                wire(a.state),
                when_opt(a.finished_at),
            )
        });
    }
    let handlers = engine.list_handlers().await?;
    let content = Overview {
        by_state: o.by_state,
        finished: o.finished,
        failed: o
            .failed
            .iter()
            .map(|(srv, kind, err, n)| (name(*srv), kind.clone(), err.clone(), *n))
            .collect(),
        servers: lines,
        chart_total: o.per_minute.iter().map(|m| m.1).sum(),
        bars,
        chart_max,
        chart_from: from.format("%H:%M").to_string(),
        chart_to: now.format("%H:%M").to_string(),
        deliveries: o
            .failing_deliveries
            .into_iter()
            .map(|(h, n, e)| {
                let hn = handlers
                    .iter()
                    .find(|x| x.id.0 == h)
                    .map_or_else(|| format!("#{h}"), |x| x.name.to_string());
                (hn, n, e)
            })
            .collect(),
        last_sync,
        last_audit,
        may_queue: s.may(Method::GET, "/v1/jobs"),
    };
    page(&s, &headers, "/console/", "Overview", content)
}
