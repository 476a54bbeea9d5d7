//! `provisio queue ...`: the jobs that carry actions to the remotes: what is pending, running,
//! done or failed, and retry or resolve for the failed ones. Also how a job is shown, for
//! `provisio service` actions too.

use anyhow::bail;
use provisio_api::views::{JobView, RetriedView};
use serde_json::Value;

use super::{Ctx, Paging};
use crate::output::{self, cell, col, Column, Format};

const STATES: [&str; 6] = [
    "pending",
    "running",
    "done",
    "failed",
    "resolved",
    "cancelled",
];

#[derive(clap::Subcommand, Debug)]
pub enum QueueCmd {
    /// List jobs, newest last
    List {
        #[arg(long, value_parser = STATES)]
        state: Option<String>,
        /// Only jobs against this server
        #[arg(long, value_name = "NAME|ID")]
        server: Option<String>,
        /// Only jobs of this service
        #[arg(long, value_name = "ID")]
        service: Option<i64>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show a job and every attempt at it
    Show { id: i64 },
    /// Run a failed job again, with a fresh set of attempts
    Retry {
        /// The job to retry
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// Retry every failed job instead (of one server with --server)
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// With --all: only this server's failed jobs
        #[arg(long, value_name = "NAME|ID", conflicts_with = "id")]
        server: Option<String>,
    },
    /// Mark a failed job as handled by a person, saying what was done
    Resolve {
        id: i64,
        /// What was done about it (kept with the job)
        #[arg(long)]
        note: String,
    },
}

/// The columns of job listings (`queue list`, `service jobs`).
pub const COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("SERVICE", "/service_id"),
    col("SERVER", "/server_id"),
    col("ACTION", "/action"),
    col("STATE", "/state"),
    col("ATTEMPTS", "/attempts"),
    col("LAST ERROR", "/last_error").cut(LAST_ERROR_CHARS),
    col("CREATED", "/created_at"),
];

/// The columns of a service's jobs: the service and server are the same on every row.
pub const SERVICE_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("ACTION", "/action"),
    col("STATE", "/state"),
    col("ATTEMPTS", "/attempts"),
    col("LAST ERROR", "/last_error").cut(LAST_ERROR_CHARS),
    // Who asked: a key (by name), a rule (by id), the scheduler or the config file.
    col("BY", "/actor/kind"),
    col("BY NAME", "/actor/name"),
    col("BY ID", "/actor/id"),
    col("CREATED", "/created_at"),
];

const LAST_ERROR_CHARS: usize = 60;

const HISTORY_COLUMNS: &[Column] = &[
    col("ATTEMPT", "/attempt"),
    col("STARTED", "/started_at"),
    col("DURATION MS", "/duration_ms"),
    col("OUTCOME", "/outcome"),
    col("MESSAGE", "/message"),
];

pub async fn run(cmd: QueueCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        QueueCmd::List {
            state,
            server,
            service,
            paging,
        } => {
            let filters = [
                ("state", state.unwrap_or_default()),
                ("server", server.unwrap_or_default()),
                (
                    "service",
                    service.map(|s| s.to_string()).unwrap_or_default(),
                ),
            ];
            let items: Vec<JobView> = ctx.list("/v1/jobs", &filters, &paging).await?;
            output::print_list(ctx.output, &items, COLUMNS, "jobs")
        }
        QueueCmd::Show { id } => {
            let job = ctx.api.get_job(id).await?;
            print_job(ctx.output, &serde_json::to_value(&job)?)
        }
        QueueCmd::Retry {
            id: Some(id),
            all: false,
            server: _,
        } => {
            let job = ctx.api.retry_job(id).await?;
            print_job(ctx.output, &serde_json::to_value(&job)?)
        }
        QueueCmd::Retry { server, .. } => {
            let answer = ctx.api.retry_failed(server.as_deref()).await?;
            match ctx.output {
                Format::Json => output::print_json(&serde_json::to_value(&answer)?),
                Format::Table => output::emit(&retried_line(&answer)),
            }
        }
        QueueCmd::Resolve { id, note } => {
            let job = ctx.api.resolve_job(id, &note).await?;
            print_job(ctx.output, &serde_json::to_value(&job)?)
        }
    }
}

/// `retried 3 jobs`, from the answer to `POST /v1/jobs/retry`.
fn retried_line(answer: &RetriedView) -> String {
    match answer.retried {
        1 => "retried 1 job".to_string(),
        n => format!("retried {n} jobs"),
    }
}

/// Prints a job: a summary line, its fields, and its attempts when the answer has them; or
/// its JSON.
pub fn print_job(format: Format, job: &Value) -> anyhow::Result<()> {
    let job = output::redacted(job);
    match format {
        Format::Json => output::print_json(&job),
        Format::Table => output::emit(&render_job(&job)),
    }
}

fn text(job: &Value, key: &str) -> String {
    job.get(key)
        .map_or_else(|| "?".to_string(), |v| cell(v, "?"))
}

/// `job 12 suspend: done`
pub fn summary(job: &Value) -> String {
    format!(
        "job {} {}: {}",
        text(job, "id"),
        text(job, "action"),
        text(job, "state")
    )
}

fn render_job(job: &Value) -> String {
    let mut fields = job.clone();
    let history = fields
        .as_object_mut()
        .and_then(|f| f.remove("history"))
        .map(|h| match h {
            Value::Array(items) => items,
            _ => Vec::new(),
        });
    let mut out = format!("{}\n{}", summary(job), output::render_record(&fields));
    match history {
        Some(attempts) if attempts.is_empty() => out.push_str("\nno attempts yet"),
        Some(attempts) => {
            out.push_str("\nattempts:\n");
            out.push_str(&output::render_list(&attempts, HISTORY_COLUMNS));
        }
        None => {}
    }
    out
}

/// What a waited-for job's state means for the command's exit.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done, or resolved by a person: exit 0.
    Finished,
    /// Still pending or running when the wait ended: exit 0 with this note.
    Unfinished(String),
    /// Failed or cancelled: exit 1 with this error.
    Failed(String),
}

/// How a job answered to `?wait=` ended, e.g. `job 12 suspend failed: connection refused`.
pub fn outcome(job: &Value) -> Outcome {
    let state = job.get("state").and_then(Value::as_str).unwrap_or("");
    match state {
        "done" | "resolved" => Outcome::Finished,
        "failed" | "cancelled" => {
            let mut line = format!("job {} {} {state}", text(job, "id"), text(job, "action"));
            let why = ["last_error", "note"]
                .iter()
                .find_map(|k| job.get(*k).and_then(Value::as_str))
                .map(output::one_line)
                .filter(|s| !s.is_empty());
            if let Some(why) = why {
                line.push_str(&format!(": {why}"));
            }
            Outcome::Failed(line)
        }
        _ => Outcome::Unfinished(format!(
            "still running; see provisio queue show {}",
            text(job, "id")
        )),
    }
}

/// Prints a job that a command waited for, then fails when it failed.
pub fn finish_waited(format: Format, job: &Value) -> anyhow::Result<()> {
    print_job(format, job)?;
    match outcome(job) {
        Outcome::Finished => Ok(()),
        Outcome::Unfinished(note) => {
            eprintln!("{note}");
            Ok(())
        }
        Outcome::Failed(error) => bail!(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(state: &str, last_error: Value) -> Value {
        json!({
            "id": 12, "service_id": 4, "server_id": 1, "action": "suspend", "state": state,
            "params": {"reason": "non-payment"}, "idempotency_key": "ab12", "attempts": 2,
            "max_attempts": 5, "run_after": "2030-01-01T00:00:00Z", "needs_lookup": false,
            "last_error": last_error, "error_kind": null, "note": null,
            "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:00:05Z",
            "finished_at": null, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        })
    }

    #[test]
    fn a_job_shows_a_summary_its_fields_and_its_attempts() {
        let mut j = job("failed", json!("HTTP 503 from the remote"));
        j["history"] = json!([
            {"attempt": 1, "started_at": "2030-01-01T00:00:00Z", "duration_ms": 120,
             "outcome": "transient", "message": "connection refused"},
            {"attempt": 2, "started_at": "2030-01-01T00:00:04Z", "duration_ms": 87,
             "outcome": "permanent", "message": "HTTP 503 from the remote"},
        ]);
        let text = render_job(&j);
        assert!(text.starts_with("job 12 suspend: failed\n"), "{text}");
        assert!(
            text.contains("idempotency_key") && text.contains("ab12"),
            "{text}"
        );
        assert!(text.contains(r#"{"reason":"non-payment"}"#), "{text}");
        // The trace id, to find the job's calls in a remote's logs.
        assert!(
            text.lines()
                .any(|l| l.contains("trace_id") && l.contains("4bf92f3577b34da6a3ce929d0e0e4736")),
            "{text}"
        );
        let (fields, attempts) = text.split_once("\nattempts:\n").expect(&text);
        assert!(!fields.contains("history"), "{text}");
        let rows: Vec<&str> = attempts.lines().filter(|l| l.contains('│')).collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].contains("DURATION MS") && rows[0].contains("OUTCOME"));
        assert!(rows[1].contains("120") && rows[1].contains("connection refused"));
        assert!(rows[2].contains("permanent"), "{text}");
    }

    #[test]
    fn a_job_without_history_has_no_attempts_table() {
        let text = render_job(&job("pending", Value::Null));
        assert!(text.starts_with("job 12 suspend: pending\n"), "{text}");
        assert!(!text.contains("attempts:") && !text.contains("no attempts"));
        let mut j = job("pending", Value::Null);
        j["history"] = json!([]);
        assert!(render_job(&j).ends_with("\nno attempts yet"));
    }

    #[test]
    fn waited_jobs_fail_only_when_they_failed_or_were_cancelled() {
        assert_eq!(outcome(&job("done", Value::Null)), Outcome::Finished);
        assert_eq!(outcome(&job("resolved", Value::Null)), Outcome::Finished);
        assert_eq!(
            outcome(&job("failed", json!("connection refused\nby remote"))),
            Outcome::Failed("job 12 suspend failed: connection refused by remote".into())
        );
        assert_eq!(
            outcome(&job("cancelled", Value::Null)),
            Outcome::Failed("job 12 suspend cancelled".into())
        );
        for state in ["pending", "running"] {
            assert_eq!(
                outcome(&job(state, Value::Null)),
                Outcome::Unfinished("still running; see provisio queue show 12".into())
            );
        }
    }

    #[test]
    fn listings_cut_long_errors() {
        let long = "x".repeat(200);
        let text = output::render_list(&[job("failed", json!(long))], COLUMNS);
        assert!(!text.contains(&long), "{text}");
        assert!(text.contains('…'), "{text}");
    }

    #[test]
    fn retry_all_says_how_many() {
        let retried = |n| retried_line(&RetriedView { retried: n });
        assert_eq!(retried(3), "retried 3 jobs");
        assert_eq!(retried(1), "retried 1 job");
        assert_eq!(retried(0), "retried 0 jobs");
    }

    #[test]
    fn retry_takes_an_id_or_all() {
        use clap::Parser as _;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            cmd: QueueCmd,
        }
        let parse = |args: &[&str]| Cli::try_parse_from([&["x"], args].concat()).map(|c| c.cmd);
        assert!(matches!(
            parse(&["retry", "7"]),
            Ok(QueueCmd::Retry {
                id: Some(7),
                all: false,
                server: None
            })
        ));
        assert!(matches!(
            parse(&["retry", "--all", "--server", "r1"]),
            Ok(QueueCmd::Retry {
                id: None,
                all: true,
                server: Some(_)
            })
        ));
        assert!(parse(&["retry"]).is_err());
        assert!(parse(&["retry", "7", "--all"]).is_err());
        assert!(parse(&["retry", "7", "--server", "r1"]).is_err());
        assert!(parse(&["retry", "--server", "r1"]).is_err());
        assert!(parse(&["resolve", "7"]).is_err());
        assert!(parse(&["list", "--state", "stuck"]).is_err());
        assert!(matches!(
            parse(&["list", "--state", "failed", "--server", "r1", "--all"]),
            Ok(QueueCmd::List { .. })
        ));
    }
}
