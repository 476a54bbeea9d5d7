//! `provisio service import` and `provisio client import`: a JSON Lines file sent through the
//! batch endpoints, a batch at a time, with a progress bar; safe to run again.
//!
//! Each line gets an idempotency key made of the prefix (the file's name unless given), its
//! line number and a hash of its text, so running the same file again (after a crash, or
//! with its failed lines fixed) finds what the first run placed instead of placing it twice.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use provisio_api::Problem;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Ctx;
use crate::output::Format;

/// What to import and how.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// A JSON Lines file: one record per line (blank lines and lines starting with `#` are
    /// skipped), as `POST /v1/services` or `/v1/clients` takes it
    pub file: PathBuf,
    /// Records per request (at most 1000)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,
    /// Starts every line's idempotency key; the file's name when not given. Use the same
    /// prefix to resume an import of the same data from another file name.
    #[arg(long)]
    pub key_prefix: Option<String>,
}

/// One kind of record the batch endpoints take.
pub struct Kind {
    /// The body's list (`orders`, `clients`) and each item's record field (`order`,
    /// `client`).
    pub list: &'static str,
    pub item: &'static str,
}

/// Each item's place in the batch, status and problem, from either batch answer.
async fn send(
    ctx: &Ctx,
    kind: &Kind,
    items: &[Value],
) -> anyhow::Result<Vec<(usize, u16, Option<Problem>)>> {
    Ok(if kind.list == CLIENTS.list {
        let answer = ctx.api.create_clients_batch(items).await?;
        answer
            .results
            .into_iter()
            .map(|r| (r.index, r.status, r.problem))
            .collect()
    } else {
        let answer = ctx.api.create_services_batch(items).await?;
        answer
            .results
            .into_iter()
            .map(|r| (r.index, r.status, r.problem))
            .collect()
    })
}

pub const SERVICES: Kind = Kind {
    list: "orders",
    item: "order",
};

pub const CLIENTS: Kind = Kind {
    list: "clients",
    item: "client",
};

struct Line {
    number: usize,
    key: String,
    record: Value,
}

/// The key a line is imported under: stable for the same text at the same place.
fn line_key(prefix: &str, number: usize, text: &str) -> String {
    let hash = Sha256::digest(text.as_bytes());
    let short: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let mut key = format!("{prefix}:{number}:{short}");
    // The API takes up to 255 visible ASCII characters.
    key.retain(|c| c.is_ascii_graphic());
    key.truncate(255);
    key
}

fn read_lines(path: &Path, prefix: &str) -> anyhow::Result<Vec<Line>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let record: Value = serde_json::from_str(t)
            .map_err(|e| anyhow::anyhow!("{}:{number}: not a JSON record: {e}", path.display()))?;
        if !record.is_object() {
            anyhow::bail!("{}:{number}: must be a JSON object", path.display());
        }
        lines.push(Line {
            number,
            key: line_key(prefix, number, t),
            record,
        });
    }
    Ok(lines)
}

/// Imports the file; fails (after sending everything) when any line was refused.
pub async fn run(ctx: &Ctx, kind: &Kind, args: ImportArgs) -> anyhow::Result<()> {
    let prefix = args.key_prefix.clone().unwrap_or_else(|| {
        args.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "import".into())
    });
    let lines = read_lines(&args.file, &prefix)?;
    let bar = ProgressBar::new(lines.len() as u64);
    if ctx.output == Format::Json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {pos}/{len} {msg} ({elapsed}, {per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let (mut created, mut replayed) = (0u64, 0u64);
    let mut failures: Vec<Value> = Vec::new();
    for chunk in lines.chunks(usize::from(args.batch_size)) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|l| json!({"idempotency_key": l.key, kind.item: l.record}))
            .collect();
        for (index, status, problem) in send(ctx, kind, &items).await? {
            let Some(line) = chunk.get(index) else {
                continue;
            };
            match status {
                201 => created += 1,
                200 => replayed += 1,
                status => failures.push(json!({
                    "line": line.number,
                    "status": status,
                    "detail": on_the_line(kind, problem.as_ref().map_or("refused", |p| p.detail.as_str())),
                    "errors": problem.as_ref().filter(|p| !p.errors.is_empty()).map(|p| {
                        p.errors
                            .iter()
                            .map(|e| {
                                json!({
                                    "field": on_the_line(kind, &e.field),
                                    "rule": e.rule,
                                    "message": on_the_line(kind, &e.message),
                                })
                            })
                            .collect::<Vec<_>>()
                    }),
                })),
            }
        }
        bar.inc(chunk.len() as u64);
        bar.set_message(format!(
            "{created} created, {replayed} already there, {} failed",
            failures.len()
        ));
    }
    bar.finish_and_clear();
    let summary = json!({
        "lines": lines.len(),
        "created": created,
        "already_there": replayed,
        "failed": failures.len(),
        "failures": failures,
    });
    match ctx.output {
        Format::Json => println!("{summary}"),
        _ => {
            println!(
                "{} lines: {created} created, {replayed} already there (imported before), {} failed",
                lines.len(),
                failures.len()
            );
            for f in &failures {
                println!(
                    "  line {}: {}",
                    f["line"],
                    f["detail"].as_str().unwrap_or("refused")
                );
            }
        }
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "{} of {} lines were refused; fix them and run the same command again (what was imported is found, not doubled)",
            failures.len(),
            lines.len()
        );
    }
    Ok(())
}

/// The API names a field inside the batch item (`order.colour`); a person reads the line,
/// which holds the record itself (`colour`).
fn on_the_line(kind: &Kind, text: &str) -> String {
    text.replace(&format!("{}.", kind.item), "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_as_the_line_holds_them() {
        assert_eq!(
            on_the_line(&SERVICES, "order.colour: is not a known field"),
            "colour: is not a known field"
        );
        assert_eq!(on_the_line(&CLIENTS, "client.email: bad"), "email: bad");
    }

    #[test]
    fn keys_are_stable_and_bounded() {
        let a = line_key("orders.jsonl", 3, r#"{"client_id":1}"#);
        assert_eq!(a, line_key("orders.jsonl", 3, r#"{"client_id":1}"#));
        assert_ne!(a, line_key("orders.jsonl", 4, r#"{"client_id":1}"#));
        assert_ne!(a, line_key("orders.jsonl", 3, r#"{"client_id":2}"#));
        let long = line_key(&"p x".repeat(200), 1, "{}");
        assert!(long.len() <= 255 && long.bytes().all(|b| b.is_ascii_graphic()));
    }
}
