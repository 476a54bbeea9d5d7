//! `provisio service ...`: what each client has on a server, and its password.

use secrecy::ExposeSecret as _;
use serde_json::{json, Map, Value};

use super::{
    clearable, id_or_name, read_password, require_changes, Ctx, NewSettings, Paging,
    SettingsChanges,
};
use crate::output::{self, col, Column, Format};

const STATUSES: [&str; 5] = ["pending", "active", "suspended", "terminated", "failed"];

#[derive(clap::Subcommand, Debug)]
pub enum ServiceCmd {
    /// Create a service (it starts pending; the product says when create runs)
    Add {
        /// The client's id
        #[arg(long = "client", value_name = "ID")]
        client_id: i64,
        /// The product, by name or id
        #[arg(long, value_name = "NAME|ID")]
        product: String,
        /// Default: the enabled server of the product's module and group with the fewest services
        #[arg(long, value_name = "NAME|ID")]
        server: Option<String>,
        /// Generated when not given
        #[arg(long)]
        username: Option<String>,
        /// Read the password from one line of standard input, before any --set-stdin lines
        /// (generated when not given)
        #[arg(long)]
        password_stdin: bool,
        /// The invoice that groups services operated on as one unit
        #[arg(long)]
        invoice: Option<String>,
        /// The invoice of the group this service belongs to
        #[arg(long)]
        parent_invoice: Option<String>,
        #[command(flatten)]
        settings: NewSettings,
    },
    /// List services
    List {
        #[arg(long, value_parser = STATUSES)]
        status: Option<String>,
        #[arg(long = "client", value_name = "ID")]
        client_id: Option<i64>,
        #[arg(long = "server", value_name = "ID")]
        server_id: Option<i64>,
        #[arg(long = "product", value_name = "ID")]
        product_id: Option<i64>,
        #[arg(long)]
        invoice: Option<String>,
        #[arg(long)]
        parent_invoice: Option<String>,
        #[arg(long)]
        username: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one service
    Show { id: i64 },
    /// Change a service (username and password only while it is pending)
    Edit {
        id: i64,
        /// A new username
        #[arg(long)]
        username: Option<String>,
        /// Read a new password from one line of standard input, before any --set-stdin lines
        #[arg(long)]
        password_stdin: bool,
        /// Put the service in this invoice group
        #[arg(long, conflicts_with = "no_invoice")]
        invoice: Option<String>,
        /// Take the service out of its invoice group
        #[arg(long)]
        no_invoice: bool,
        /// Attach the service to this parent invoice
        #[arg(long, conflicts_with = "no_parent_invoice")]
        parent_invoice: Option<String>,
        /// Clear the parent invoice
        #[arg(long)]
        no_parent_invoice: bool,
        #[command(flatten)]
        settings: SettingsChanges,
    },
    /// Delete a pending, failed or terminated service from the records
    Delete { id: i64 },
    /// Print a service's password, alone on one line
    Password { id: i64 },
}

const COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("CLIENT", "/client_id"),
    col("PRODUCT", "/product_id"),
    col("SERVER", "/server_id"),
    col("USERNAME", "/username"),
    col("STATUS", "/status"),
    col("SUSPENDED FOR", "/suspension/reason"),
    col("INVOICE", "/invoice"),
    col("PARENT INVOICE", "/parent_invoice"),
];

pub async fn run(cmd: ServiceCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        ServiceCmd::Add {
            client_id,
            product,
            server,
            username,
            password_stdin,
            invoice,
            parent_invoice,
            settings,
        } => {
            // Read standard input before anything is sent, so a missing password stops the
            // command instead of creating a service with a generated one.
            let password = password_stdin.then(read_password).transpose()?;
            let mut body = Map::new();
            body.insert("client_id".into(), client_id.into());
            body.insert("product".into(), id_or_name(&product));
            if let Some(server) = server {
                body.insert("server".into(), id_or_name(&server));
            }
            let optional = [
                ("username", username),
                ("invoice", invoice),
                ("parent_invoice", parent_invoice),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    body.insert(key.into(), value.into());
                }
            }
            if let Some(settings) = settings.build()? {
                body.insert("settings".into(), Value::Object(settings));
            }
            if let Some(password) = password {
                body.insert("password".into(), password.expose_secret().into());
            }
            let service = ctx.api.post("/v1/services", &Value::Object(body)).await?;
            output::print_record(ctx.output, &service)
        }
        ServiceCmd::List {
            status,
            client_id,
            server_id,
            product_id,
            invoice,
            parent_invoice,
            username,
            paging,
        } => {
            let id = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
            let filters = [
                ("status", status.unwrap_or_default()),
                ("client_id", id(client_id)),
                ("server_id", id(server_id)),
                ("product_id", id(product_id)),
                ("invoice", invoice.unwrap_or_default()),
                ("parent_invoice", parent_invoice.unwrap_or_default()),
                ("username", username.unwrap_or_default()),
            ];
            let items = ctx.list("/v1/services", &filters, &paging).await?;
            output::print_list(ctx.output, &items, COLUMNS, "services")
        }
        ServiceCmd::Show { id } => {
            let service = ctx.api.get(&path(id)).await?;
            output::print_record(ctx.output, &service)
        }
        ServiceCmd::Edit {
            id,
            username,
            password_stdin,
            invoice,
            no_invoice,
            parent_invoice,
            no_parent_invoice,
            settings,
        } => {
            let password = password_stdin.then(read_password).transpose()?;
            let mut body = Map::new();
            if let Some(username) = username {
                body.insert("username".into(), username.into());
            }
            if let Some(password) = password {
                body.insert("password".into(), password.expose_secret().into());
            }
            if let Some(value) = clearable(invoice, no_invoice) {
                body.insert("invoice".into(), value);
            }
            if let Some(value) = clearable(parent_invoice, no_parent_invoice) {
                body.insert("parent_invoice".into(), value);
            }
            if let Some(settings) = settings.build()? {
                body.insert("settings".into(), Value::Object(settings));
            }
            require_changes(
                &body,
                "--username, --password-stdin, --invoice, --no-invoice, --parent-invoice, \
                 --no-parent-invoice, --set, --unset, --set-stdin",
            )?;
            let service = ctx.api.patch(&path(id), &Value::Object(body)).await?;
            output::print_record(ctx.output, &service)
        }
        ServiceCmd::Delete { id } => {
            ctx.api.delete(&path(id)).await?;
            output::print_deleted(ctx.output, "service", &id.to_string())
        }
        ServiceCmd::Password { id } => {
            let answer = ctx.api.get(&format!("{}/password", path(id))).await?;
            let Some(password) = answer.get("password").and_then(Value::as_str) else {
                anyhow::bail!("Provisio sent no password for service {id}");
            };
            match ctx.output {
                Format::Table => output::emit(password),
                Format::Json => output::print_json(&json!({ "password": password })),
            }
        }
    }
}

fn path(id: i64) -> String {
    format!("/v1/services/{id}")
}
