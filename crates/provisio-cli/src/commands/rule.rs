//! `provisio rule ...`: automation rules (on an event, after a grace period, act on the
//! client's services) and the record of their firings (`runs`).

use provisio_api::requests::{RuleCreate, RulePatch};
use provisio_api::views::{RuleRun, RuleView};
use provisio_core::rule::RuleAction as Action;

use super::{require_changes, Ctx, Paging, Records};
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
    /// The action `--action` names (clap has checked it is one of the three), with the
    /// options that belong to it; a missing product goes as empty, so the server names it.
    fn build(self) -> Option<Action> {
        Some(match self.action?.as_str() {
            "create_service" => Action::CreateService {
                product: self.product.unwrap_or_default(),
                server: self.server,
            },
            "suspend_services" => Action::SuspendServices {
                reason: self.reason.unwrap_or_else(|| "non-payment".into()),
            },
            _ => Action::UnsuspendServices {
                only_reason: self.only_reason,
            },
        })
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
            let body = RuleCreate {
                name,
                on,
                action,
                delay_secs,
                enabled: disabled.then_some(false),
            };
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
            let body = RulePatch {
                name,
                on,
                action: action.build(),
                delay_secs,
                enabled: (enable || disable).then_some(enable),
            };
            require_changes(
                &body,
                "--name, --on, --delay-secs, --action, --enable, --disable",
            )?;
            let changed = ctx.api.update_rule(&rule, &body).await?;
            output::print_record(ctx.output, &changed)
        }
        RuleCmd::Delete { rule } => RULES.delete(ctx, &rule).await,
        RuleCmd::Runs { rule, paging } => {
            let filters = [("rule", rule.unwrap_or_default())];
            let items: Vec<RuleRun> = ctx.list("/v1/rule-runs", &filters, &paging).await?;
            output::print_list(ctx.output, &items, RUN_COLUMNS, "rule runs")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_takes_only_its_own_options() {
        let order = RuleAction {
            action: Some("create_service".into()),
            product: Some("basic".into()),
            reason: Some("ignored".into()),
            ..Default::default()
        };
        assert_eq!(
            order.build(),
            Some(Action::CreateService {
                product: "basic".into(),
                server: None
            })
        );
        let suspend = RuleAction {
            action: Some("suspend_services".into()),
            ..Default::default()
        };
        assert_eq!(
            suspend.build(),
            Some(Action::SuspendServices {
                reason: "non-payment".into()
            })
        );
        let lift = RuleAction {
            action: Some("unsuspend_services".into()),
            only_reason: Some("non-payment".into()),
            ..Default::default()
        };
        assert_eq!(
            lift.build(),
            Some(Action::UnsuspendServices {
                only_reason: Some("non-payment".into())
            })
        );
        assert_eq!(RuleAction::default().build(), None);
    }
}
