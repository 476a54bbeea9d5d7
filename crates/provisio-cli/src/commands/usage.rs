//! `provisio usage ...`: run a usage sync (server-side, with a progress bar per server while
//! it runs and a table per server at the end), show a service's usage and history, and add
//! top-ups.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use provisio_api::requests::{RecordRef, SyncInput, TopupInput};
use provisio_api::views::{SyncReport, UsageReading};
use serde::Serialize;

use super::Ctx;
use crate::output::{self, col, Column, Format};

#[derive(clap::Subcommand, Debug)]
pub enum UsageCmd {
    /// Sync usage from every server whose module reports it (or one server), in parallel;
    /// shows progress per server, then a table per server
    Sync {
        #[arg(long, value_name = "NAME|ID")]
        server: Option<String>,
        /// Start the sync and print its id without waiting for it
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a sync run (e.g. one the schedule started)
    Run { id: i64 },
    /// Show a service's current usage per metric and its top-ups
    Show { service: i64 },
    /// List a service's usage readings (one per change), oldest first
    History {
        service: i64,
        #[arg(long)]
        metric: Option<String>,
    },
    /// Add a once-off top-up: quota used only after the recurring quota, kept across periods
    Topup {
        service: i64,
        #[arg(long)]
        metric: String,
        /// How much, in the metric's unit
        #[arg(long)]
        amount: f64,
        #[arg(long)]
        note: Option<String>,
        /// The same key again adds nothing (safe to retry)
        #[arg(long)]
        key: Option<String>,
    },
}

const SERVER_COLUMNS: &[Column] = &[
    col("SERVER", "/server"),
    col("STATE", "/state"),
    col("SERVICES UPDATED", "/services_updated"),
    col("UNKNOWN USERNAMES", "/unknown_usernames"),
    col("EXCEEDED", "/exceeded"),
    col("PAGES", "/pages"),
    col("ERRORS", "/error_count"),
    col("DURATION", "/duration"),
];

const METRIC_COLUMNS: &[Column] = &[
    col("METRIC", "/metric"),
    col("USED", "/used"),
    col("LIMIT", "/limit").or("unlimited"),
    col("UNIT", "/unit"),
    col("TOP-UP USED", "/topup_used"),
    col("TOP-UP LEFT", "/topup_left"),
    col("QUOTA", "/quota").or("unlimited"),
    col("EXCEEDED", "/exceeded"),
    col("PERIOD", "/period_start"),
];

const TOPUP_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("METRIC", "/metric"),
    col("AMOUNT", "/amount"),
    col("CONSUMED", "/consumed"),
    col("NOTE", "/note"),
    col("CREATED", "/created_at"),
];

const READING_COLUMNS: &[Column] = &[
    col("AT", "/at"),
    col("METRIC", "/metric"),
    col("USED", "/used"),
    col("LIMIT", "/limit"),
    col("PERIOD", "/period_start"),
];

pub async fn run(cmd: UsageCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        UsageCmd::Sync { server, no_wait } => {
            let body = SyncInput {
                server: server.as_deref().map(RecordRef::from_segment),
            };
            let run = ctx.api.start_usage_sync(&body).await?;
            let id = run.id;
            if no_wait {
                return match ctx.output {
                    Format::Json => output::print_json(&serde_json::to_value(&run)?),
                    Format::Table => output::emit(&format!(
                        "usage sync {id} started; follow it with: provisio usage run {id}"
                    )),
                };
            }
            let report = follow(ctx, id).await?;
            print_report(ctx.output, &report)?;
            if report.state != "done" {
                bail!("usage sync {id} ended {}", report.state);
            }
            Ok(())
        }
        UsageCmd::Run { id } => {
            let report = ctx.api.get_usage_sync(id).await?;
            print_report(ctx.output, &report)
        }
        UsageCmd::Show { service } => {
            let u = ctx.api.service_usage(service).await?;
            match ctx.output {
                Format::Json => output::print_json(&serde_json::to_value(&u)?),
                Format::Table => {
                    let metrics = values(&u.metrics)?;
                    let topups = values(&u.topups)?;
                    let mut text = if metrics.is_empty() {
                        "no usage reported yet".to_string()
                    } else {
                        output::render_list(&metrics, METRIC_COLUMNS)
                    };
                    if !topups.is_empty() {
                        text.push_str("\n\ntop-ups:\n");
                        text.push_str(&output::render_list(&topups, TOPUP_COLUMNS));
                    }
                    output::emit(&text)
                }
            }
        }
        UsageCmd::History { service, metric } => {
            let items: Vec<UsageReading> = ctx
                .list(
                    &format!("/v1/services/{service}/usage/history"),
                    &[("metric", metric.unwrap_or_default())],
                    &super::Paging {
                        limit: None,
                        all: true,
                    },
                )
                .await?;
            output::print_list(ctx.output, &items, READING_COLUMNS, "readings")
        }
        UsageCmd::Topup {
            service,
            metric,
            amount,
            note,
            key,
        } => {
            let body = TopupInput {
                metric,
                amount,
                note,
                idempotency_key: key,
            };
            let t = ctx.api.add_topup(service, &body).await?;
            output::print_record(ctx.output, &t)
        }
    }
}

/// Polls a sync until it ends, drawing a bar per server on stderr (people only: with
/// `-o json`, or when stderr is not a terminal, nothing is drawn).
async fn follow(ctx: &Ctx, id: i64) -> anyhow::Result<SyncReport> {
    let multi = MultiProgress::new();
    if ctx.output == Format::Json {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(
        "{prefix:>16} [{bar:30}] {pos}/{len} accounts {msg} ({elapsed})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let mut bars: HashMap<i64, ProgressBar> = HashMap::new();
    loop {
        let r = ctx.api.get_usage_sync(id).await?;
        for s in &r.servers {
            let bar = bars.entry(s.server_id).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(style.clone());
                b.set_prefix(s.server.clone());
                b
            });
            // Local services are the estimate; the remote may report more.
            bar.set_length(s.expected.max(s.reported));
            bar.set_position(s.reported);
            let state = s.state.as_str();
            bar.set_message(format!(
                "{state}, {} updated, {} unknown",
                s.services_updated, s.unknown_usernames
            ));
            if matches!(state, "done" | "failed") && !bar.is_finished() {
                bar.finish();
            }
        }
        if r.state != "running" {
            for b in bars.values() {
                if !b.is_finished() {
                    b.finish();
                }
            }
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_report(format: Format, report: &SyncReport) -> anyhow::Result<()> {
    if format == Format::Json {
        return output::print_json(&serde_json::to_value(report)?);
    }
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for s in &report.servers {
        let mut row = serde_json::to_value(s)?;
        row["error_count"] = json!(s.errors.len());
        row["duration"] = json!(format!("{:.1}s", s.duration_ms as f64 / 1000.0));
        rows.push(row);
        let name = &s.server;
        for e in s.errors.iter().take(5) {
            problems.push(format!("{name}: {e}"));
        }
        if !s.unknown_sample.is_empty() {
            problems.push(format!(
                "{name}: unknown usernames include {}",
                s.unknown_sample.join(", ")
            ));
        }
    }
    let mut text = format!(
        "usage sync {} {}\n{}",
        report.id,
        report.state,
        output::render_list(&rows, SERVER_COLUMNS)
    );
    for p in problems {
        text.push('\n');
        text.push_str(&output::one_line(&p));
    }
    output::emit(&text)
}

/// Records as the JSON values the table renderer reads.
fn values<T: Serialize>(records: &[T]) -> anyhow::Result<Vec<Value>> {
    Ok(records
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?)
}
