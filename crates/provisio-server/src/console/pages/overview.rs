//! The overview: the queue by state, failed jobs by server and error, each server's health
//! with the breaker state every worker node published, actions per minute as an SVG drawn
//! here, failing deliveries, the last usage sync and audit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, Method};
use axum::Extension;
use provisio_store::{ConsoleOverview, OverviewWindow};

use super::{when, when_opt};
use crate::console::{page, see_other, ConsoleState, PageResult, Session};

/// How far back the chart reaches.
const CHART_MINUTES: i64 = 180;

/// The overview's aggregates as last read, kept for a few seconds: every look at the page
/// would otherwise count the queue again, and several people (or one impatient one) look
/// at once. The lock is held while a read runs, so looks that arrive together share it.
pub(crate) struct OverviewCache {
    keep: Duration,
    last: tokio::sync::Mutex<Option<Kept>>,
}

/// When the aggregates were read (monotonic, for their age; the engine's clock, to show).
type Kept = (Instant, Arc<ConsoleOverview>, chrono::DateTime<chrono::Utc>);

impl OverviewCache {
    pub(crate) fn new(keep: Duration) -> Self {
        Self {
            keep,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The aggregates and when they were read: the kept ones while fresh, else read anew.
    async fn get(
        &self,
        engine: &provisio_engine::Engine,
    ) -> Result<(Arc<ConsoleOverview>, chrono::DateTime<chrono::Utc>), provisio_engine::EngineError>
    {
        let mut last = self.last.lock().await;
        if let Some((at, o, read)) = last.as_ref() {
            if at.elapsed() < self.keep {
                return Ok((o.clone(), *read));
            }
        }
        let now = engine.now();
        let seen = chrono::Duration::from_std(provisio_engine::worker::BREAKERS_SEEN_WITHIN)
            .unwrap_or_default();
        let o = Arc::new(
            engine
                .store()
                .console_overview(OverviewWindow {
                    errors_since: now - chrono::Duration::hours(1),
                    chart_since: now - chrono::Duration::minutes(CHART_MINUTES),
                    seen_since: now - seen,
                })
                .await?,
        );
        *last = Some((Instant::now(), o.clone(), now));
        Ok((o, now))
    }
}

struct ServerLine {
    id: i64,
    name: String,
    module: String,
    running: i64,
    max_concurrent: u32,
    errors: i64,
    last_success: String,
    enabled: bool,
    /// Each node's breaker: `(state, what to add, node)`; none published is closed.
    breakers: Vec<(String, String, String)>,
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
    /// When the counts were read (they are kept a few seconds).
    as_of: String,
    count_cap: i64,
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
    let (o, read_at) = state.overview.get(engine).await?;
    let from = read_at - chrono::Duration::minutes(CHART_MINUTES);
    let now = read_at;
    let servers = super::all_servers(&state).await?;
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
            let breakers = o
                .breakers
                .iter()
                .filter(|b| b.server_id == a.server_id)
                .map(|b| {
                    let extra = match (b.state.as_str(), b.open_until) {
                        ("open", Some(u)) => format!(
                            "since {}, probe at {}",
                            b.since.format("%H:%M:%S"),
                            u.format("%H:%M:%S")
                        ),
                        _ => format!("since {}", b.since.format("%H:%M:%S")),
                    };
                    (b.state.clone(), extra, b.node.clone())
                })
                .collect();
            Some(ServerLine {
                id: a.server_id.0,
                breakers,
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
    let last_sync = if s.may(Method::GET, "/v1/usage/syncs") {
        o.last_sync
            .as_ref()
            .map(|(id, st, at)| (*id, st.clone(), when(*at)))
    } else {
        None
    };
    let last_audit = if s.may(Method::GET, "/v1/audits") {
        o.last_audit
            .as_ref()
            .map(|(id, srv, st, at)| (*id, name(*srv), st.clone(), when_opt(*at)))
    } else {
        None
    };
    let handlers = engine.list_handlers().await?;
    let content = Overview {
        by_state: o.by_state.clone(),
        finished: o.finished.clone(),
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
            .iter()
            .map(|(h, n, e)| {
                let hn = handlers
                    .iter()
                    .find(|x| x.id.0 == *h)
                    .map_or_else(|| format!("#{h}"), |x| x.name.to_string());
                (hn, *n, e.clone())
            })
            .collect(),
        last_sync,
        last_audit,
        may_queue: s.may(Method::GET, "/v1/jobs"),
        as_of: read_at.format("%H:%M:%S").to_string(),
        count_cap: provisio_store::COUNT_CAP,
    };
    page(&s, &headers, "/console/", "Overview", content)
}
