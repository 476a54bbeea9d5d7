//! `provisio audit ...`: run audits (server-side; a spinner per server while they run, then a
//! table of drift per server and, for a fix or a dry run, every action taken or planned),
//! and show or export a stored report as a table, JSON or CSV.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use provisio_api::requests::{AuditInput, RecordRef};
use provisio_api::views::Audit;
use provisio_core::audit::AuditState;

use super::Ctx;
use crate::output::{self, col, Column, Format};

#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// Compare each server's remote accounts with the local services (all servers whose
    /// module lists accounts, or one) and report the drift; optionally fix it
    Run {
        #[arg(long, value_name = "NAME|ID")]
        server: Option<String>,
        /// local: records follow the remote (import orphans, mark missing failed, adopt
        /// status and package); remote: the remote follows the records (queued actions)
        #[arg(long, value_parser = ["local", "remote"])]
        fix: Option<String>,
        /// With --fix: print exactly the actions a fix would take, change nothing
        #[arg(long, requires = "fix")]
        dry_run: bool,
        /// With --fix: fix even when the remote listing was empty or ended early
        #[arg(long, requires = "fix")]
        force: bool,
        /// With --fix local: the client orphan accounts are imported under
        #[arg(long, value_name = "ID")]
        client: Option<i64>,
        /// With --fix local: the product for imported orphans whose package matches none
        #[arg(long, value_name = "NAME|ID")]
        product: Option<String>,
    },
    /// Show a stored audit and its findings
    Show {
        id: i64,
        /// Print the findings as CSV (RFC 4180) instead
        #[arg(long, conflicts_with = "summary")]
        csv: bool,
        /// Only findings of this kind
        #[arg(long, value_parser = ["orphan_remote", "missing_remote", "status_mismatch", "package_mismatch"])]
        kind: Option<String>,
        /// Show only the summary, not the findings
        #[arg(long)]
        summary: bool,
    },
    /// List stored audits
    List {
        #[arg(long, value_name = "NAME|ID")]
        server: Option<String>,
        #[command(flatten)]
        paging: super::Paging,
    },
}

const SUMMARY_COLUMNS: &[Column] = &[
    col("AUDIT", "/id"),
    col("SERVER", "/server"),
    col("STATE", "/state"),
    col("REMOTE", "/remote_accounts"),
    col("LOCAL", "/local_services"),
    col("ORPHAN REMOTE", "/counts/orphan_remote"),
    col("MISSING REMOTE", "/counts/missing_remote"),
    col("STATUS MISMATCH", "/counts/status_mismatch"),
    col("PACKAGE MISMATCH", "/counts/package_mismatch"),
    col("FIX", "/fix_shown"),
    col("NOTE", "/note").cut(80),
];

const FINDING_COLUMNS: &[Column] = &[
    col("KIND", "/kind"),
    col("USERNAME", "/username"),
    col("SERVICE", "/service_id"),
    col("LOCAL", "/local_status"),
    col("REMOTE", "/remote_status"),
    col("LOCAL PACKAGE", "/local_package"),
    col("REMOTE PACKAGE", "/remote_package"),
    col("FIX", "/fix"),
];

pub async fn run(cmd: AuditCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Run {
            server,
            fix,
            dry_run,
            force,
            client,
            product,
        } => {
            let body = AuditInput {
                server: server.as_deref().map(RecordRef::from_segment),
                // clap has checked the value against the names.
                fix: fix
                    .clone()
                    .map(|f| serde_json::from_value(Value::String(f)))
                    .transpose()?,
                dry_run,
                force,
                client,
                product: product.as_deref().map(RecordRef::from_segment),
            };
            let started = ctx.api.start_audits(&body).await?;
            let ids: Vec<i64> = started.iter().map(|a| a.id).collect();
            if ids.is_empty() {
                return match ctx.output {
                    Format::Json => output::print_json(&json!([])),
                    Format::Table => output::emit(
                        "no server to audit (no enabled server's module lists accounts)",
                    ),
                };
            }
            let names = server_names(ctx).await?;
            let audits = follow(ctx, &ids, &names).await?;
            let mut all = Vec::new();
            for a in &audits {
                let findings = ctx.api.audit_findings(a.id, &[]).await?;
                all.push((a.clone(), findings));
            }
            if ctx.output == Format::Json {
                let out: Vec<Value> = all
                    .iter()
                    .map(|(a, f)| json!({"audit": a, "findings": f}))
                    .collect();
                return output::print_json(&json!(out));
            }
            let rows = all
                .iter()
                .map(|(a, _)| summary_row(a, &names))
                .collect::<anyhow::Result<Vec<Value>>>()?;
            let mut text = output::render_list(&rows, SUMMARY_COLUMNS);
            if fix.is_some() {
                for (a, f) in &all {
                    if f.is_empty() || a.note.as_deref().is_some_and(|n| n.contains("fix refused"))
                    {
                        continue;
                    }
                    text.push_str(&format!(
                        "\n\naudit {} ({}): {}\n",
                        a.id,
                        name_of(a, &names),
                        if dry_run {
                            "actions a fix would take (nothing was changed)"
                        } else {
                            "actions taken"
                        }
                    ));
                    text.push_str(&output::render_list(&values(f)?, FINDING_COLUMNS));
                }
            } else if all.iter().any(|(_, f)| !f.is_empty()) {
                text.push_str("\n(details: provisio audit show ID; fix with --fix local|remote, try --dry-run first)");
            }
            output::emit(&text)?;
            if audits.iter().any(|a| a.state == AuditState::Failed) {
                bail!("an audit failed; see its note");
            }
            Ok(())
        }
        AuditCmd::Show {
            id,
            csv,
            kind,
            summary,
        } => {
            let a = ctx.api.get_audit(id).await?;
            let f = ctx
                .api
                .audit_findings(id, &[("kind", kind.unwrap_or_default())])
                .await?;
            if csv {
                let text = provisio_core::audit::findings_csv(&f);
                return output::emit(text.trim_end());
            }
            if ctx.output == Format::Json {
                return output::print_json(&json!({"audit": a, "findings": f}));
            }
            let names = server_names(ctx).await?;
            let mut text = output::render_list(&[summary_row(&a, &names)?], SUMMARY_COLUMNS);
            if !summary && !f.is_empty() {
                text.push('\n');
                text.push_str(&output::render_list(&values(&f)?, FINDING_COLUMNS));
            }
            output::emit(&text)
        }
        AuditCmd::List { server, paging } => {
            let items: Vec<Audit> = ctx
                .list(
                    "/v1/audits",
                    &[("server", server.unwrap_or_default())],
                    &paging,
                )
                .await?;
            let names = server_names(ctx).await?;
            if ctx.output == Format::Json {
                return output::print_json(&json!(items));
            }
            let rows = items
                .iter()
                .map(|a| summary_row(a, &names))
                .collect::<anyhow::Result<Vec<Value>>>()?;
            output::print_list(ctx.output, &rows, SUMMARY_COLUMNS, "audits")
        }
    }
}

async fn server_names(ctx: &Ctx) -> anyhow::Result<HashMap<i64, String>> {
    let servers: Vec<provisio_api::views::ServerView> = ctx
        .list(
            "/v1/servers",
            &[],
            &super::Paging {
                limit: None,
                all: true,
            },
        )
        .await?;
    Ok(servers.into_iter().map(|s| (s.id, s.name)).collect())
}

fn name_of(a: &Audit, names: &HashMap<i64, String>) -> String {
    let id = a.server_id.0;
    names.get(&id).cloned().unwrap_or_else(|| id.to_string())
}

/// The audit as a table row: its fields, the server's name and the fix as shown.
fn summary_row(a: &Audit, names: &HashMap<i64, String>) -> anyhow::Result<Value> {
    let mut row = serde_json::to_value(a)?;
    row["server"] = json!(name_of(a, names));
    row["fix_shown"] = match (a.fix, a.dry_run) {
        (Some(f), true) => json!(format!("{} (dry run)", f.as_str())),
        (Some(f), false) => json!(f.as_str()),
        (None, _) => Value::Null,
    };
    Ok(row)
}

/// Records as the JSON values the table renderer reads.
fn values<T: serde::Serialize>(records: &[T]) -> anyhow::Result<Vec<Value>> {
    Ok(records
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?)
}

/// Polls the audits until each has ended, with a spinner per server on stderr.
async fn follow(
    ctx: &Ctx,
    ids: &[i64],
    names: &HashMap<i64, String>,
) -> anyhow::Result<Vec<Audit>> {
    let multi = MultiProgress::new();
    if ctx.output == Format::Json {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{spinner} {prefix:>16} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<i64, ProgressBar> = HashMap::new();
    let mut done: HashMap<i64, Audit> = HashMap::new();
    while done.len() < ids.len() {
        for id in ids {
            if done.contains_key(id) {
                continue;
            }
            let a = ctx.api.get_audit(*id).await?;
            let bar = bars.entry(*id).or_insert_with(|| {
                let b = multi.add(ProgressBar::new_spinner());
                b.set_style(style.clone());
                b.set_prefix(name_of(&a, names));
                b.enable_steady_tick(Duration::from_millis(120));
                b
            });
            if a.state == AuditState::Running {
                bar.set_message("listing remote accounts and comparing");
            } else {
                let c = |kind: &str| a.counts.get(kind).copied().unwrap_or(0);
                bar.finish_with_message(format!(
                    "{}: {} orphan, {} missing, {} status, {} package",
                    a.state.as_str(),
                    c("orphan_remote"),
                    c("missing_remote"),
                    c("status_mismatch"),
                    c("package_mismatch")
                ));
                done.insert(*id, a);
            }
        }
        if done.len() < ids.len() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    Ok(ids.iter().filter_map(|i| done.remove(i)).collect())
}
