//! `provisio product ...`: what is sold, its module settings, and the plans that extend it.

use std::collections::BTreeMap;

use provisio_api::requests::{ProductCreate, ProductPatch};
use provisio_api::views::{ProductView, UsagePolicy};
use provisio_core::usage::OnExceed;

use super::{
    clearable, require_changes, wire_name, Ctx, NewSettings, Paging, Records, SettingsChanges,
};
use crate::output::{self, col, Column};

const AUTO_SETUP: [&str; 3] = ["on_order", "on_accept", "manual"];

#[derive(clap::Subcommand, Debug)]
pub enum ProductCmd {
    /// Create a product
    Add {
        name: String,
        /// The module that provisions it
        #[arg(long)]
        module: String,
        /// The product whose settings this one inherits (it overrides only what it sets)
        #[arg(long, value_name = "PRODUCT")]
        extends: Option<String>,
        /// Place new services on servers of this group (default: any server of the module)
        #[arg(long, value_name = "GROUP")]
        server_group: Option<String>,
        #[command(flatten)]
        settings: NewSettings,
        /// When the create action runs
        #[arg(long, value_parser = AUTO_SETUP)]
        auto_setup: Option<String>,
    },
    /// List products
    List {
        /// Only products of this module
        #[arg(long)]
        module: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one product, with its own and its effective (inherited) settings
    Show {
        #[arg(value_name = "NAME|ID")]
        product: String,
    },
    /// Change a product
    Edit {
        #[arg(value_name = "NAME|ID")]
        product: String,
        /// A new name
        #[arg(long)]
        name: Option<String>,
        /// Inherit the settings of this product instead
        #[arg(long, value_name = "PRODUCT", conflicts_with = "no_extends")]
        extends: Option<String>,
        /// Stop inheriting from another product
        #[arg(long)]
        no_extends: bool,
        /// Place new services on servers of this group
        #[arg(long, value_name = "GROUP", conflicts_with = "no_server_group")]
        server_group: Option<String>,
        /// Place services on any server of the module
        #[arg(long)]
        no_server_group: bool,
        // Here --unset removes an override, so the parent's value applies again.
        #[command(flatten)]
        settings: SettingsChanges,
        /// When the create action runs
        #[arg(long, value_parser = AUTO_SETUP)]
        auto_setup: Option<String>,
    },
    /// Delete a product
    Delete {
        #[arg(value_name = "NAME|ID")]
        product: String,
    },
    /// Show a product's usage policy
    UsagePolicy {
        #[arg(value_name = "NAME|ID")]
        product: String,
    },
    /// Set a product's usage policy (limits come from `<metric>_limit` settings unless mapped)
    SetUsagePolicy {
        #[arg(value_name = "NAME|ID")]
        product: String,
        /// METRIC=SETTING: the product setting that holds a metric's limit; repeatable
        #[arg(long = "limit", value_name = "METRIC=SETTING")]
        limits: Vec<String>,
        /// Only these metrics trigger --on-exceed (default: every metric)
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
        /// What exceeding does: suspend (reason `usage`) or change_package
        #[arg(long, value_parser = ["suspend", "change_package"])]
        on_exceed: Option<String>,
        /// change_package: the product to move the service to
        #[arg(
            long = "to-product",
            value_name = "PRODUCT",
            required_if_eq("on_exceed", "change_package")
        )]
        to_product: Option<String>,
    },
    /// Remove a product's usage policy
    DeleteUsagePolicy {
        #[arg(value_name = "NAME|ID")]
        product: String,
    },
}

const PRODUCTS: Records<ProductView> = Records {
    base: "/v1/products",
    noun: "product",
    plural: "products",
    columns: COLUMNS,
    answer: std::marker::PhantomData,
};

const COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("NAME", "/name"),
    col("MODULE", "/module"),
    col("EXTENDS", "/extends"),
    col("SERVER GROUP", "/server_group"),
    col("AUTO SETUP", "/auto_setup"),
];

pub async fn run(cmd: ProductCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        ProductCmd::Add {
            name,
            module,
            extends,
            server_group,
            settings,
            auto_setup,
        } => {
            let body = ProductCreate {
                name,
                module,
                extends,
                server_group,
                settings: settings.build()?.unwrap_or_default(),
                auto_setup: auto_setup
                    .map(|a| wire_name("--auto-setup", &a))
                    .transpose()?,
                client_fields: None,
            };
            let product = ctx.api.create_product(&body).await?;
            output::print_record(ctx.output, &product)
        }
        ProductCmd::List { module, paging } => {
            let filters = [("module", module.unwrap_or_default())];
            PRODUCTS.list(ctx, &filters, &paging).await
        }
        ProductCmd::Show { product } => PRODUCTS.show(ctx, &product).await,
        ProductCmd::Edit {
            product,
            name,
            extends,
            no_extends,
            server_group,
            no_server_group,
            settings,
            auto_setup,
        } => {
            let body = ProductPatch {
                name,
                extends: clearable(extends, no_extends),
                server_group: clearable(server_group, no_server_group),
                settings: settings.build()?,
                auto_setup: auto_setup
                    .map(|a| wire_name("--auto-setup", &a))
                    .transpose()?,
                client_fields: None,
            };
            require_changes(
                &body,
                "--name, --extends, --no-extends, --server-group, --no-server-group, \
                 --set, --unset, --set-stdin, --auto-setup",
            )?;
            let changed = ctx.api.update_product(&product, &body).await?;
            output::print_record(ctx.output, &changed)
        }
        ProductCmd::UsagePolicy { product } => {
            let p = ctx.api.get_usage_policy(&product).await?;
            output::print_record(ctx.output, &p)
        }
        ProductCmd::SetUsagePolicy {
            product,
            limits,
            metrics,
            on_exceed,
            to_product,
        } => {
            let body = usage_policy(limits, metrics, on_exceed.as_deref(), to_product)?;
            let p = ctx.api.set_usage_policy(&product, &body).await?;
            output::print_record(ctx.output, &p)
        }
        ProductCmd::DeleteUsagePolicy { product } => {
            ctx.api.delete_usage_policy(&product).await?;
            output::print_deleted(ctx.output, "usage policy of product", &product)
        }
        ProductCmd::Delete { product } => PRODUCTS.delete(ctx, &product).await,
    }
}

/// The policy `set-usage-policy` sends; clap has checked `--on-exceed` and that
/// `change_package` names its product.
fn usage_policy(
    limits: Vec<String>,
    metrics: Vec<String>,
    on_exceed: Option<&str>,
    to_product: Option<String>,
) -> anyhow::Result<UsagePolicy> {
    let mut map = BTreeMap::new();
    for l in limits {
        let (metric, setting) = l
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--limit {l:?}: expected METRIC=SETTING"))?;
        map.insert(metric.to_string(), setting.to_string());
    }
    let on_exceed = match on_exceed {
        None => None,
        Some("suspend") => Some(OnExceed::Suspend),
        Some(_) => Some(OnExceed::ChangePackage {
            product: to_product.unwrap_or_default(),
        }),
    };
    Ok(UsagePolicy {
        limits: map,
        metrics,
        on_exceed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_usage_policy_names_its_limits_and_action() {
        let p = usage_policy(
            vec!["data=data_cap".into()],
            vec!["data".into()],
            Some("change_package"),
            Some("throttled".into()),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"limits": {"data": "data_cap"}, "metrics": ["data"],
                   "on_exceed": {"action": "change_package", "product": "throttled"}})
        );
        let e = usage_policy(vec!["data".into()], vec![], None, None).unwrap_err();
        assert!(e.to_string().contains("METRIC=SETTING"), "{e}");
    }
}
