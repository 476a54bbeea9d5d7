//! `provisio service ...`: what each client has on a server, its password, and the actions
//! (create, suspend, ...) that the queue carries out on the remote.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use provisio_api::requests::{
    ActionInput, LoginUrlRequest, RecordRef, Secret, ServiceCreate, ServicePatch,
};
use provisio_api::views::{JobView, ServiceView};
use provisio_core::module::Action;
use provisio_core::ClientId;
use secrecy::SecretString;
use serde_json::json;

use super::{
    clearable, queue, read_password, require_changes, Ctx, NewSettings, Paging, Records,
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
    /// Create the account on the remote
    Create {
        id: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Suspend the service on the remote
    Suspend {
        id: i64,
        /// non-payment, holiday, abuse, admin, usage, or free text (default: admin)
        #[arg(long, value_name = "REASON")]
        reason: Option<String>,
        /// Unsuspend by itself at this time (RFC 3339, e.g. 2030-01-31T00:00:00Z)
        #[arg(long, value_name = "RFC3339", value_parser = parse_until)]
        until: Option<DateTime<FixedOffset>>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Lift a suspension on the remote
    Unsuspend {
        id: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove the account from the remote
    Terminate {
        id: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Set a new password on the remote (generated unless --password-stdin)
    ChangePassword {
        id: i64,
        /// Read the new password from one line of standard input
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Move the service to another product on the remote
    ChangePackage {
        id: i64,
        /// The new product, by name or id
        #[arg(long, value_name = "NAME|ID")]
        product: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Renew the service on the remote
    Renew {
        id: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Accept a pending order (runs create for a product set up on acceptance)
    Accept {
        id: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Print a short-lived single sign-on link into the service
    LoginUrl {
        id: i64,
        /// On behalf of this service's holder (a group's master may enter its children)
        #[arg(long, value_name = "SERVICE_ID")]
        from: Option<i64>,
    },
    /// List the jobs of a service, oldest first
    Jobs {
        id: i64,
        #[command(flatten)]
        paging: Paging,
    },
    /// Order many services from a JSON Lines file (one order per line, as `service add`
    /// sends it: client_id, product, and optionally server, username, invoice,
    /// parent_invoice, settings, external_id), up to 1,000 per request; running it again
    /// orders nothing twice
    Import(super::import::ImportArgs),
}

/// `--wait`, for every action.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Wait {
    /// Wait up to SECS seconds (0 to 300) for the job to finish; exit 1 if it failed
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=300))]
    pub wait: Option<u64>,
}

/// An action's optional fields; `None` for each one not given.
#[derive(Debug, Default)]
struct ActionFields {
    reason: Option<String>,
    until: Option<DateTime<FixedOffset>>,
    password: Option<SecretString>,
    product: Option<String>,
}

impl ActionFields {
    /// The request body; the client sends none when no field is given, so the server uses
    /// its defaults.
    fn body(self) -> ActionInput {
        ActionInput {
            reason: self.reason,
            until: self.until.map(|u| u.with_timezone(&Utc)),
            password: self.password.map(Into::into),
            product: self.product.as_deref().map(RecordRef::from_segment),
        }
    }
}

fn parse_until(arg: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(arg.trim())
        .map_err(|e| format!("expected an RFC 3339 time like 2030-01-31T00:00:00Z: {e}"))
}

const SERVICES: Records<ServiceView> = Records {
    base: "/v1/services",
    noun: "service",
    plural: "services",
    columns: COLUMNS,
    answer: std::marker::PhantomData,
};

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
            let mut body =
                ServiceCreate::new(ClientId(client_id), RecordRef::from_segment(&product));
            body.server = server.as_deref().map(RecordRef::from_segment);
            body.username = username;
            body.invoice = invoice;
            body.parent_invoice = parent_invoice;
            body.settings = settings.build()?.unwrap_or_default();
            body.password = password.map(Into::into);
            let service = ctx.api.create_service(&body).await?;
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
            SERVICES.list(ctx, &filters, &paging).await
        }
        ServiceCmd::Show { id } => SERVICES.show(ctx, &id.to_string()).await,
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
            let body = ServicePatch {
                username,
                password: password.map(Secret::from),
                invoice: clearable(invoice, no_invoice),
                parent_invoice: clearable(parent_invoice, no_parent_invoice),
                settings: settings.build()?,
                ..Default::default()
            };
            require_changes(
                &body,
                "--username, --password-stdin, --invoice, --no-invoice, --parent-invoice, \
                 --no-parent-invoice, --set, --unset, --set-stdin",
            )?;
            let changed = ctx.api.update_service(id, &body).await?;
            output::print_record(ctx.output, &changed)
        }
        ServiceCmd::Delete { id } => SERVICES.delete(ctx, &id.to_string()).await,
        ServiceCmd::Password { id } => {
            let answer = ctx.api.service_password(id).await?;
            let password = answer.password.as_str();
            match ctx.output {
                Format::Table => output::emit(password),
                Format::Json => output::print_json(&json!({ "password": password })),
            }
        }
        ServiceCmd::Create { id, wait } => {
            act(
                ctx,
                id,
                &Action::Create.wire_name(),
                Default::default(),
                wait,
            )
            .await
        }
        ServiceCmd::Suspend {
            id,
            reason,
            until,
            wait,
        } => {
            let fields = ActionFields {
                reason,
                until,
                ..Default::default()
            };
            act(ctx, id, &Action::Suspend.wire_name(), fields, wait).await
        }
        ServiceCmd::Unsuspend { id, wait } => {
            act(
                ctx,
                id,
                &Action::Unsuspend.wire_name(),
                Default::default(),
                wait,
            )
            .await
        }
        ServiceCmd::Terminate { id, wait } => {
            act(
                ctx,
                id,
                &Action::Terminate.wire_name(),
                Default::default(),
                wait,
            )
            .await
        }
        ServiceCmd::ChangePassword {
            id,
            password_stdin,
            wait,
        } => {
            // Read standard input before anything is sent, so a missing password stops the
            // command instead of setting a generated one.
            let fields = ActionFields {
                password: password_stdin.then(read_password).transpose()?,
                ..Default::default()
            };
            act(ctx, id, &Action::ChangePassword.wire_name(), fields, wait).await
        }
        ServiceCmd::ChangePackage { id, product, wait } => {
            let fields = ActionFields {
                product: Some(product),
                ..Default::default()
            };
            act(ctx, id, &Action::ChangePackage.wire_name(), fields, wait).await
        }
        ServiceCmd::Renew { id, wait } => {
            act(
                ctx,
                id,
                &Action::Renew.wire_name(),
                Default::default(),
                wait,
            )
            .await
        }
        ServiceCmd::Accept { id, wait } => act(ctx, id, "accept", Default::default(), wait).await,
        ServiceCmd::LoginUrl { id, from } => {
            let body = LoginUrlRequest { from_service: from };
            let r = ctx.api.login_url(id, &body).await?;
            if ctx.output == output::Format::Json {
                output::print_json(&serde_json::to_value(&r)?)
            } else {
                output::emit(&r.url)
            }
        }
        ServiceCmd::Jobs { id, paging } => {
            let path = format!("{}/jobs", path(id));
            let items: Vec<JobView> = ctx.list(&path, &[], &paging).await?;
            output::print_list(ctx.output, &items, queue::SERVICE_COLUMNS, "jobs")
        }
        ServiceCmd::Import(args) => super::import::run(ctx, &super::import::SERVICES, args).await,
    }
}

/// Requests `action` on service `id` and prints the job; with `--wait`, the job as it is
/// when the wait ends, failing when it failed.
async fn act(
    ctx: &Ctx,
    id: i64,
    action: &str,
    fields: ActionFields,
    Wait { wait }: Wait,
) -> anyhow::Result<()> {
    let job = ctx
        .api
        .service_action(id, action, &fields.body(), wait.map(Duration::from_secs))
        .await?;
    let job = serde_json::to_value(&job)?;
    if wait.is_some() {
        queue::finish_waited(ctx.output, &job)
    } else {
        queue::print_job(ctx.output, &job)
    }
}

fn path(id: i64) -> String {
    SERVICES.path(&id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use serde_json::Value;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: ServiceCmd,
    }

    impl ActionFields {
        fn body_json(self) -> Option<Value> {
            let body = self.body();
            (!body.is_empty()).then(|| serde_json::to_value(body).unwrap())
        }
    }

    fn parse(args: &[&str]) -> Result<ServiceCmd, clap::Error> {
        Cli::try_parse_from([&["x"], args].concat()).map(|c| c.cmd)
    }

    #[test]
    fn actions_without_fields_send_no_body() {
        assert_eq!(ActionFields::default().body_json(), None);
        let cmd = parse(&["change-password", "5"]).unwrap();
        assert!(matches!(
            cmd,
            ServiceCmd::ChangePassword {
                id: 5,
                password_stdin: false,
                wait: Wait { wait: None }
            }
        ));
    }

    #[test]
    fn suspend_sends_its_reason_and_until() {
        let ServiceCmd::Suspend {
            id, reason, until, ..
        } = parse(&[
            "suspend",
            "5",
            "--reason",
            "non-payment",
            "--until",
            "2030-01-31T00:00:00+01:00",
        ])
        .unwrap()
        else {
            panic!("not a suspend");
        };
        assert_eq!(id, 5);
        let body = ActionFields {
            reason,
            until,
            ..Default::default()
        }
        .body_json();
        assert_eq!(
            body,
            Some(json!({"reason": "non-payment", "until": "2030-01-30T23:00:00Z"}))
        );
        let free = ActionFields {
            reason: Some("asked by phone".into()),
            ..Default::default()
        };
        assert_eq!(free.body_json(), Some(json!({"reason": "asked by phone"})));
        let e = parse(&["suspend", "5", "--until", "tomorrow"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--until") && e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn change_package_names_the_product_by_id_or_name() {
        let product = |p: &str| {
            ActionFields {
                product: Some(p.into()),
                ..Default::default()
            }
            .body_json()
        };
        assert_eq!(product("12"), Some(json!({"product": 12})));
        assert_eq!(product("gold"), Some(json!({"product": "gold"})));
        assert!(parse(&["change-package", "5"]).is_err());
    }

    #[test]
    fn a_password_goes_only_in_the_body() {
        let body = ActionFields {
            password: Some(SecretString::from("s3cret")),
            ..Default::default()
        }
        .body_json();
        assert_eq!(body, Some(json!({"password": "s3cret"})));
        // There is no way to give the password as an argument.
        assert!(parse(&["change-password", "5", "--password", "s3cret"]).is_err());
        assert!(parse(&["change-password", "5", "s3cret"]).is_err());
    }

    #[test]
    fn wait_is_bounded() {
        assert!(matches!(
            parse(&["renew", "5", "--wait", "300"]),
            Ok(ServiceCmd::Renew {
                wait: Wait { wait: Some(300) },
                ..
            })
        ));
        assert!(parse(&["renew", "5", "--wait", "301"]).is_err());
        assert!(parse(&["renew", "5", "--wait", "-1"]).is_err());
        assert!(matches!(
            parse(&["jobs", "5", "--all"]),
            Ok(ServiceCmd::Jobs { id: 5, .. })
        ));
    }
}
