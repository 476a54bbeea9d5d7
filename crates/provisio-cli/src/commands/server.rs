//! `provisio server ...`: the remote systems that modules drive, with their credentials and limits.

use serde_json::{Map, Value};

use super::{require_changes, Ctx, NewSettings, Paging, SettingsChanges};
use crate::api::segment;
use crate::output::{self, col, Column};

#[derive(clap::Subcommand, Debug)]
pub enum ServerCmd {
    /// Create a server
    Add {
        name: String,
        /// The module that drives it
        #[arg(long)]
        module: String,
        /// Servers of one group are interchangeable for new services (default: `default`)
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        settings: NewSettings,
        /// Actions run at once against this server at most
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Actions started per second at most (default: unlimited)
        #[arg(long)]
        max_per_second: Option<u32>,
        /// Create it disabled: it receives no new services
        #[arg(long)]
        disabled: bool,
    },
    /// List servers
    List {
        /// Only servers of this module
        #[arg(long)]
        module: Option<String>,
        /// Only servers of this group
        #[arg(long)]
        group: Option<String>,
        /// Only enabled (true) or disabled (false) servers
        #[arg(long, value_name = "BOOL")]
        enabled: Option<bool>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one server
    Show {
        #[arg(value_name = "NAME|ID")]
        server: String,
    },
    /// Change a server
    Edit {
        #[arg(value_name = "NAME|ID")]
        server: String,
        /// A new name
        #[arg(long)]
        name: Option<String>,
        /// Move it to another group
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        settings: SettingsChanges,
        /// Actions run at once against this server at most
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Actions started per second at most
        #[arg(long, conflicts_with = "unlimited")]
        max_per_second: Option<u32>,
        /// Remove the per-second limit
        #[arg(long)]
        unlimited: bool,
        /// Let the server receive new services
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop new services from being placed on the server
        #[arg(long)]
        disable: bool,
    },
    /// Delete a server
    Delete {
        #[arg(value_name = "NAME|ID")]
        server: String,
    },
}

const COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("NAME", "/name"),
    col("MODULE", "/module"),
    col("GROUP", "/group"),
    col("ENABLED", "/enabled"),
    col("MAX CONCURRENT", "/max_concurrent"),
    col("MAX PER SECOND", "/max_per_second").or("unlimited"),
];

pub async fn run(cmd: ServerCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        ServerCmd::Add {
            name,
            module,
            group,
            settings,
            max_concurrent,
            max_per_second,
            disabled,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), name.into());
            body.insert("module".into(), module.into());
            if let Some(group) = group {
                body.insert("group".into(), group.into());
            }
            if let Some(settings) = settings.build()? {
                body.insert("settings".into(), Value::Object(settings));
            }
            if let Some(n) = max_concurrent {
                body.insert("max_concurrent".into(), n.into());
            }
            if let Some(n) = max_per_second {
                body.insert("max_per_second".into(), n.into());
            }
            if disabled {
                body.insert("enabled".into(), false.into());
            }
            let server = ctx.api.post("/v1/servers", &Value::Object(body)).await?;
            output::print_record(ctx.output, &server)
        }
        ServerCmd::List {
            module,
            group,
            enabled,
            paging,
        } => {
            let filters = [
                ("module", module.unwrap_or_default()),
                ("group", group.unwrap_or_default()),
                (
                    "enabled",
                    enabled.map(|e| e.to_string()).unwrap_or_default(),
                ),
            ];
            let items = ctx.list("/v1/servers", &filters, &paging).await?;
            output::print_list(ctx.output, &items, COLUMNS, "servers")
        }
        ServerCmd::Show { server } => {
            let server = ctx.api.get(&path(&server)).await?;
            output::print_record(ctx.output, &server)
        }
        ServerCmd::Edit {
            server,
            name,
            group,
            settings,
            max_concurrent,
            max_per_second,
            unlimited,
            enable,
            disable,
        } => {
            let mut body = Map::new();
            if let Some(name) = name {
                body.insert("name".into(), name.into());
            }
            if let Some(group) = group {
                body.insert("group".into(), group.into());
            }
            if let Some(settings) = settings.build()? {
                body.insert("settings".into(), Value::Object(settings));
            }
            if let Some(n) = max_concurrent {
                body.insert("max_concurrent".into(), n.into());
            }
            if unlimited {
                body.insert("max_per_second".into(), Value::Null);
            } else if let Some(n) = max_per_second {
                body.insert("max_per_second".into(), n.into());
            }
            if enable || disable {
                body.insert("enabled".into(), enable.into());
            }
            require_changes(
                &body,
                "--name, --group, --set, --unset, --set-stdin, --max-concurrent, \
                 --max-per-second, --unlimited, --enable, --disable",
            )?;
            let server = ctx.api.patch(&path(&server), &Value::Object(body)).await?;
            output::print_record(ctx.output, &server)
        }
        ServerCmd::Delete { server } => {
            ctx.api.delete(&path(&server)).await?;
            output::print_deleted(ctx.output, "server", &server)
        }
    }
}

fn path(server: &str) -> String {
    format!("/v1/servers/{}", segment(server))
}
