//! The usage sync pages: the newest syncs with their progress (servers done, pending and
//! failed, accounts read), and one sync's progress per server, followed live while it runs.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::Extension;
use provisio_engine::usage::{ServerSync, SyncReport};

use super::{parse_id, when, when_opt};
use crate::console::{page, ConsoleState, PageResult, Session};

/// How many syncs the listing shows, newest first.
const RECENT: u32 = 200;

/// A sync's progress over its servers.
struct Progress {
    done: usize,
    /// Not started yet, or running.
    pending: usize,
    failed: usize,
    /// Accounts the remotes reported so far, against the live services expected.
    read: u64,
    expected: u64,
}

fn progress(servers: &[ServerSync]) -> Progress {
    let count = |st: &str| servers.iter().filter(|s| s.state == st).count();
    Progress {
        done: count("done"),
        failed: count("failed"),
        pending: servers.len() - count("done") - count("failed"),
        read: servers.iter().map(|s| s.reported).sum(),
        expected: servers.iter().map(|s| s.expected).sum(),
    }
}

struct Line {
    id: i64,
    state: String,
    p: Progress,
    started: String,
    finished: String,
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct Syncs {
    lines: Vec<Line>,
    recent: u32,
}

pub(crate) async fn syncs(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/usage/syncs")?;
    let lines = state
        .app
        .engine
        .recent_usage_syncs(RECENT)
        .await?
        .into_iter()
        .map(|r| Line {
            id: r.id,
            p: progress(&r.servers),
            state: r.state,
            started: when(r.started_at),
            finished: when_opt(r.finished_at),
        })
        .collect();
    page(
        &s,
        &headers,
        "/console/usage",
        "Usage syncs",
        Syncs {
            lines,
            recent: RECENT,
        },
    )
}

#[derive(Template)]
#[template(path = "console/usage_sync.html")]
struct SyncPage {
    sync: SyncReport,
    p: Progress,
    running: bool,
    started: String,
    finished: String,
}

pub(crate) async fn sync(
    State(state): State<ConsoleState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    s.need(Method::GET, "/v1/usage/syncs/{id}")?;
    let id = parse_id("id", Some(&id))?.unwrap_or_default();
    let sync = state.app.engine.usage_sync(id).await?;
    let content = SyncPage {
        p: progress(&sync.servers),
        running: sync.state == "running",
        started: when(sync.started_at),
        finished: when_opt(sync.finished_at),
        sync,
    };
    page(
        &s,
        &headers,
        "/console/usage",
        &format!("Usage sync {id}"),
        content,
    )
}
