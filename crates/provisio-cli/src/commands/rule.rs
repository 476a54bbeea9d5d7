//! `provisio rule ...`: automation rules (on an event, after a grace period, act on the
//! client's services) and the record of their firings (`runs`).

use provisio_api::views::{RuleRun, RuleView};
use serde_json::{json, Map, Value};

use super::{Ctx, Paging, Records};
use crate::output::{self, col, Column};

#[derive(clap::Args, Debug, Default)]
pub struct RuleAction {
    /// What it does
    #[arg(long, value_parser = ["create_service", "suspend_services", "unsuspend_services"])]
    action: Option<String>,
    /// create_service: the product to order
    #[arg(long)]
    product: Option<String>,
    /// create_service: the server (default: placed like any order)
    #[arg(long)]
    server: Option<String>,
    /// suspend_services: the suspension reason (default non-payment)
    #[arg(long)]
    reason: Option<String>,
    /// unsuspend_services: lift only suspensions with this reason
    #[arg(long)]
    only_reason: Option<String>,
}

impl RuleAction {
    fn build(self) -> Option<Value> {
        let kind = self.action?;
        let mut a = Map::new();
        a.insert("kind".into(), kind.clone().into());
        match kind.as_str() {
            "create_service" => {
                a.insert("product".into(), self.product.unwrap_or_default().into());
                if let Some(s) = self.server {
                    a.insert("server".into(), s.into());
                }
            }
            "suspend_services" => {
                a.insert(
                    "reason".into(),
                    self.reason.unwrap_or_else(|| "non-payment".into()).into(),
                );
            }
            _ => {
                if let Some(r) = self.only_reason {
                    a.insert("only_reason".into(), r.into());
                }
            }
        }
        Some(Value::Object(a))
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum RuleCmd {
    /// Create a rule, e.g. `rule add dunning --on client.balance_nonpositive --delay-secs 604800 --action suspend_services`
    Add {
        name: String,
        /// The event that fires it
        #[arg(long)]
        on: String,
        /// Seconds to wait after the event (a grace period)
        #[arg(long)]
        delay_secs: Option<u64>,
        #[command(flatten)]
        action: RuleAction,
        /// Create it disabled
        #[arg(long)]
        disabled: bool,
    },
    /// List rules
    List,
    /// Show one rule
    Show {
        #[arg(value_name = "NAME|ID")]
        rule: String,
    },
    /// Change a rule
    Edit {
        #[arg(value_name = "NAME|ID")]
        rule: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        on: Option<String>,
        #[arg(long)]
        delay_secs: Option<u64>,
        #[command(flatten)]
        action: RuleAction,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Delete a rule
    Delete {
        #[arg(value_name = "NAME|ID")]
        rule: String,
    },
    /// List firings, oldest first: when each is due and what it did
    Runs {
        #[arg(value_name = "NAME|ID")]
        rule: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
}

const RULES: Records<RuleView> = Records {
    base: "/v1/rules",
    noun: "rule",
    plural: "rules",
    columns: COLUMNS,
    answer: std::marker::PhantomData,
};

const COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("NAME", "/name"),
    col("ON", "/on"),
    col("ACTION", "/action/kind"),
    col("DELAY S", "/delay_secs"),
    col("ENABLED", "/enabled"),
];

const RUN_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("RULE", "/rule_id"),
    col("SUBJECT", "/subject"),
    col("DUE", "/due_at"),
    col("STATE", "/state"),
    col("RESULT", "/result"),
];

pub async fn run(cmd: RuleCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        RuleCmd::Add {
            name,
            on,
            delay_secs,
            action,
            disabled,
        } => {
            let action = action
                .build()
                .ok_or_else(|| anyhow::anyhow!("--action is required"))?;
            let mut body = json!({"name": name, "on": on, "action": action});
            if let Some(d) = delay_secs {
                body["delay_secs"] = d.into();
            }
            if disabled {
                body["enabled"] = false.into();
            }
            let rule = ctx.api.create_rule(&body).await?;
            output::print_record(ctx.output, &rule)
        }
        RuleCmd::List => {
            RULES
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
        RuleCmd::Show { rule } => RULES.show(ctx, &rule).await,
        RuleCmd::Edit {
            rule,
            name,
            on,
            delay_secs,
            action,
            enable,
            disable,
        } => {
            let mut body = Map::new();
            if let Some(n) = name {
                body.insert("name".into(), n.into());
            }
            if let Some(o) = on {
                body.insert("on".into(), o.into());
            }
            if let Some(d) = delay_secs {
                body.insert("delay_secs".into(), d.into());
            }
            if let Some(a) = action.build() {
                body.insert("action".into(), a);
            }
            if enable || disable {
                body.insert("enabled".into(), enable.into());
            }
            RULES
                .edit(
                    ctx,
                    &rule,
                    body,
                    "--name, --on, --delay-secs, --action, --enable, --disable",
                )
                .await
        }
        RuleCmd::Delete { rule } => RULES.delete(ctx, &rule).await,
        RuleCmd::Runs { rule, paging } => {
            let filters = [("rule", rule.unwrap_or_default())];
            let items: Vec<RuleRun> = ctx.list("/v1/rule-runs", &filters, &paging).await?;
            output::print_list(ctx.output, &items, RUN_COLUMNS, "rule runs")
        }
    }
}
