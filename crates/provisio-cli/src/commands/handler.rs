//! `provisio handler ...`: gates and notify handlers, their signing secrets and the delivery
//! log (`deliveries`, `delivery`, `redeliver`).

use anyhow::Context as _;
use provisio_api::requests::{HandlerCreate, HandlerPatch};
use provisio_api::views::{DeliveryView, HandlerView};
use provisio_core::handler::{EmailTemplate, HandlerStatus};

use super::{require_changes, wire_name, Ctx, Paging, Records};
use crate::output::{self, col, Column};

#[derive(clap::Subcommand, Debug)]
pub enum HandlerCmd {
    /// Create a handler; an http handler's signing secret is printed once
    Add {
        name: String,
        #[arg(long, value_parser = ["http", "script", "email"])]
        kind: String,
        /// gate: asked before the action; notify: told after the event
        #[arg(long, value_parser = ["gate", "notify"])]
        phase: String,
        /// Event types or patterns, comma-separated (e.g. `service.*,client.created`)
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// http: where to POST (`--url` is the address of Provisio itself)
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// script: the executable, relative to the handlers directory
        #[arg(long)]
        script: Option<String>,
        /// email: the recipient template (e.g. `{{ client.email }}`)
        #[arg(long)]
        email_to: Option<String>,
        /// email: the subject template
        #[arg(long)]
        email_subject: Option<String>,
        /// email: a file holding the body template
        #[arg(long, value_name = "FILE")]
        email_body_file: Option<std::path::PathBuf>,
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Gates: run order (ascending)
        #[arg(long, allow_negative_numbers = true)]
        order: Option<i32>,
        /// Gates: what an error or timeout means
        #[arg(long, value_parser = ["allow", "forbid"])]
        on_error: Option<String>,
        /// Notify: seconds of failing before the engine disables it
        #[arg(long)]
        disable_after_secs: Option<u64>,
        /// Create it disabled
        #[arg(long)]
        disabled: bool,
    },
    /// List handlers
    List,
    /// Show one handler
    Show {
        #[arg(value_name = "NAME|ID")]
        handler: String,
    },
    /// Change a handler (`--enable` also clears an automatic disabling)
    Edit {
        #[arg(value_name = "NAME|ID")]
        handler: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// http: where to POST
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        #[arg(long)]
        script: Option<String>,
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[arg(long, allow_negative_numbers = true)]
        order: Option<i32>,
        #[arg(long, value_parser = ["allow", "forbid"])]
        on_error: Option<String>,
        #[arg(long)]
        disable_after_secs: Option<u64>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Delete a handler and its deliveries
    Delete {
        #[arg(value_name = "NAME|ID")]
        handler: String,
    },
    /// Give an http handler a new signing secret (printed once); the old one keeps signing
    /// for the configured overlap
    RotateSecret {
        #[arg(value_name = "NAME|ID")]
        handler: String,
    },
    /// List deliveries, oldest first
    Deliveries {
        /// Only to this handler
        #[arg(value_name = "NAME|ID")]
        handler: Option<String>,
        #[arg(long, value_parser = ["pending", "running", "succeeded", "failed"])]
        state: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one delivery with its attempt log
    Delivery { id: i64 },
    /// Send a succeeded or failed delivery again
    Redeliver { id: i64 },
}

const HANDLERS: Records<HandlerView> = Records {
    base: "/v1/handlers",
    noun: "handler",
    plural: "handlers",
    columns: COLUMNS,
    answer: std::marker::PhantomData,
};

const COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("NAME", "/name"),
    col("KIND", "/kind"),
    col("PHASE", "/phase"),
    col("STATUS", "/status"),
    col("EVENTS", "/events"),
    col("ORDER", "/order"),
];

const DELIVERY_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("HANDLER", "/handler_id"),
    col("EVENT", "/event_type"),
    col("SUBJECT", "/subject"),
    col("STATE", "/state"),
    col("ATTEMPTS", "/attempts"),
    col("NEXT", "/next_attempt_at"),
    col("LAST ERROR", "/last_error"),
];

/// `--enable` and `--disable` (clap keeps them apart): the status to set, if any.
fn status(enable: bool, disable: bool) -> Option<HandlerStatus> {
    match (enable, disable) {
        (true, _) => Some(HandlerStatus::Enabled),
        (false, true) => Some(HandlerStatus::Disabled),
        (false, false) => None,
    }
}

pub async fn run(cmd: HandlerCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        HandlerCmd::Add {
            name,
            kind,
            phase,
            events,
            endpoint,
            script,
            email_to,
            email_subject,
            email_body_file,
            timeout_ms,
            order,
            on_error,
            disable_after_secs,
            disabled,
        } => {
            let mut body = HandlerCreate::new(
                &name,
                wire_name("--kind", &kind)?,
                wire_name("--phase", &phase)?,
                events,
            );
            body.url = endpoint;
            body.script = script;
            body.timeout_ms = timeout_ms;
            body.order = order;
            body.on_error = on_error.map(|o| wire_name("--on-error", &o)).transpose()?;
            body.disable_after_secs = disable_after_secs;
            body.status = disabled.then_some(HandlerStatus::Disabled);
            if email_to.is_some() || email_subject.is_some() || email_body_file.is_some() {
                let text = match &email_body_file {
                    Some(f) => std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                    None => String::new(),
                };
                // Missing parts go as empty, so the server names each one that is required.
                body.email = Some(EmailTemplate {
                    to: email_to.unwrap_or_default(),
                    subject: email_subject.unwrap_or_default(),
                    body: text,
                });
            }
            let h = ctx.api.create_handler(&body).await?;
            if h.secret.is_some() && ctx.output == output::Format::Table {
                eprintln!(
                    "The signing secret is shown only now; keep it where the receiver can read it."
                );
            }
            output::print_record(ctx.output, &h)
        }
        HandlerCmd::List => {
            HANDLERS
                .list(
                    ctx,
                    &[],
                    &Paging {
                        limit: None,
                        all: true,
                    },
                )
                .await
        }
        HandlerCmd::Show { handler } => HANDLERS.show(ctx, &handler).await,
        HandlerCmd::Edit {
            handler,
            name,
            events,
            endpoint,
            script,
            timeout_ms,
            order,
            on_error,
            disable_after_secs,
            enable,
            disable,
        } => {
            let body = HandlerPatch {
                name,
                url: endpoint,
                script,
                email: None,
                events,
                status: status(enable, disable),
                timeout_ms,
                order,
                on_error: on_error.map(|o| wire_name("--on-error", &o)).transpose()?,
                disable_after_secs,
            };
            require_changes(
                &body,
                "--name, --events, --endpoint, --script, --timeout-ms, --order, --on-error, \
                 --disable-after-secs, --enable, --disable",
            )?;
            let changed = ctx.api.update_handler(&handler, &body).await?;
            output::print_record(ctx.output, &changed)
        }
        HandlerCmd::Delete { handler } => HANDLERS.delete(ctx, &handler).await,
        HandlerCmd::RotateSecret { handler } => {
            let h = ctx.api.rotate_handler_secret(&handler).await?;
            output::print_record(ctx.output, &h)
        }
        HandlerCmd::Deliveries {
            handler,
            state,
            paging,
        } => {
            let filters = [
                ("handler", handler.unwrap_or_default()),
                ("state", state.unwrap_or_default()),
            ];
            let items: Vec<DeliveryView> = ctx.list("/v1/deliveries", &filters, &paging).await?;
            output::print_list(ctx.output, &items, DELIVERY_COLUMNS, "deliveries")
        }
        HandlerCmd::Delivery { id } => {
            output::print_record(ctx.output, &ctx.api.get_delivery(id).await?)
        }
        HandlerCmd::Redeliver { id } => {
            output::print_record(ctx.output, &ctx.api.redeliver(id).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_and_disable_set_the_status_and_neither_keeps_it() {
        assert_eq!(status(true, false), Some(HandlerStatus::Enabled));
        assert_eq!(status(false, true), Some(HandlerStatus::Disabled));
        assert_eq!(status(false, false), None);
        let patch = HandlerPatch {
            status: status(false, false),
            ..Default::default()
        };
        assert!(require_changes(&patch, "--enable").is_err());
    }
}
