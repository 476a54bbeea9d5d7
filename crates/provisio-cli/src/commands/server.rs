//! `provisio server ...`: the remote systems that modules drive, with their credentials and limits.

use provisio_api::requests::{Patch, ServerCreate, ServerPatch};
use provisio_api::views::ServerView;
use serde_json::Value;

use super::{require_changes, Ctx, NewSettings, Paging, Records, SettingsChanges};
use crate::output::{self, col, Column, Format};

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
    /// Check that the server's settings reach a working remote; exit 1 if they do not
    Test {
        #[arg(value_name = "NAME|ID")]
        server: String,
    },
}

const SERVERS: Records<ServerView> = Records {
    base: "/v1/servers",
    noun: "server",
    plural: "servers",
    columns: COLUMNS,
    answer: std::marker::PhantomData,
};

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
            let body = ServerCreate {
                name,
                module,
                group,
                settings: settings.build()?.unwrap_or_default(),
                max_concurrent,
                max_per_second,
                enabled: disabled.then_some(false),
            };
            let server = ctx.api.create_server(&body).await?;
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
            SERVERS.list(ctx, &filters, &paging).await
        }
        ServerCmd::Show { server } => SERVERS.show(ctx, &server).await,
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
            let body = ServerPatch {
                name,
                group,
                settings: settings.build()?,
                max_concurrent,
                max_per_second: match (unlimited, max_per_second) {
                    (true, _) => Patch::Clear,
                    (false, Some(n)) => Patch::Set(n),
                    (false, None) => Patch::Keep,
                },
                enabled: (enable || disable).then_some(enable),
            };
            require_changes(
                &body,
                "--name, --group, --set, --unset, --set-stdin, --max-concurrent, \
                 --max-per-second, --unlimited, --enable, --disable",
            )?;
            let changed = ctx.api.update_server(&server, &body).await?;
            output::print_record(ctx.output, &changed)
        }
        ServerCmd::Delete { server } => SERVERS.delete(ctx, &server).await,
        ServerCmd::Test { server } => {
            let answer = ctx.api.test_server(&server).await?;
            let answer = serde_json::to_value(&answer)?;
            let verdict = test_verdict(&server, &answer);
            match (ctx.output, verdict) {
                (Format::Json, verdict) => {
                    output::print_json(&answer)?;
                    verdict.map(drop)
                }
                (Format::Table, Ok(line)) => output::emit(&line),
                (Format::Table, Err(e)) => Err(e),
            }
        }
    }
}

/// `server r1: connection ok`, or the error `server r1: connection test failed: ...`.
fn test_verdict(server: &str, answer: &Value) -> anyhow::Result<String> {
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(format!("server {server}: connection ok"));
    }
    let error = answer
        .get("error")
        .and_then(Value::as_str)
        .map(output::one_line)
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "no reason given".into());
    anyhow::bail!("server {server}: connection test failed: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_connection_test_passes_only_when_ok() {
        let ok = test_verdict("r1", &json!({"ok": true, "error": null})).unwrap();
        assert_eq!(ok, "server r1: connection ok");
        let failed = test_verdict("r1", &json!({"ok": false, "error": "auth\nrejected"}));
        assert_eq!(
            failed.unwrap_err().to_string(),
            "server r1: connection test failed: auth rejected"
        );
        let silent = test_verdict("7", &json!({"ok": false, "error": null}));
        assert_eq!(
            silent.unwrap_err().to_string(),
            "server 7: connection test failed: no reason given"
        );
    }
}
