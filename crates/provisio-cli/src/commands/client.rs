//! `provisio client ...`: the customers whose services Provisio provisions.

use std::collections::BTreeMap;

use provisio_api::requests::{ClientCreate, ClientPatch, TransactionCreate};
use provisio_api::views::{ClientView, TransactionView};
use provisio_core::client::TransactionKind;

use super::{parse_field, require_changes, wire_name, Ctx, Paging, Records};
use crate::output::{self, col, Column};

#[derive(clap::Subcommand, Debug)]
pub enum ClientCmd {
    /// Create a client
    Add {
        /// The client's name (a person or a company)
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        /// ISO 4217 code; the instance default when not given
        #[arg(long)]
        currency: Option<String>,
        /// Opening balance in minor units (cents), may be negative
        #[arg(long, allow_negative_numbers = true)]
        balance_minor: Option<i64>,
        /// A custom field (repeatable)
        #[arg(long = "field", value_name = "KEY=VALUE", value_parser = parse_field)]
        fields: Vec<(String, String)>,
    },
    /// List clients
    List {
        #[arg(long, value_parser = ["active", "archived"])]
        status: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one client
    Show { id: i64 },
    /// Change a client
    Edit {
        id: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long, value_parser = ["active", "archived"])]
        status: Option<String>,
        /// Set a custom field (repeatable)
        #[arg(long = "field", value_name = "KEY=VALUE", value_parser = parse_field)]
        fields: Vec<(String, String)>,
        /// Remove a custom field (repeatable)
        #[arg(long = "unset-field", value_name = "KEY")]
        unset_fields: Vec<String>,
    },
    /// Archive a client (its records stay; it is no longer active)
    Archive { id: i64 },
    /// Delete a client
    Delete { id: i64 },
    /// Record a payment from the client (increases the balance)
    Pay(TransactionArgs),
    /// Charge the client (decreases the balance)
    Charge(TransactionArgs),
    /// Credit the client (increases the balance)
    Credit(TransactionArgs),
    /// Record a refund paid back to the client (decreases the balance)
    Refund(TransactionArgs),
    /// List a client's balance transactions, oldest first
    Transactions {
        id: i64,
        #[command(flatten)]
        paging: Paging,
    },
    /// Create many clients from a JSON Lines file (one client per line: name, email, and
    /// optionally currency, balance_minor, status, custom_fields, reseller_id,
    /// external_id), up to 1,000 per request; running it again creates nothing twice
    Import(super::import::ImportArgs),
}

/// A balance transaction; the same --key again replays it instead of applying it twice.
#[derive(clap::Args, Debug, Clone)]
pub struct TransactionArgs {
    id: i64,
    /// The amount in minor units (cents), positive
    #[arg(long)]
    amount_minor: i64,
    /// Idempotency key (1 to 100 characters, unique per client), e.g. the invoice number
    #[arg(long)]
    key: String,
    #[arg(long)]
    description: Option<String>,
}

const TRANSACTION_COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("KIND", "/kind"),
    col("AMOUNT (MINOR)", "/amount_minor"),
    col("BALANCE AFTER", "/balance_after"),
    col("KEY", "/idempotency_key"),
    col("DESCRIPTION", "/description"),
    col("CREATED", "/created_at"),
];

const CLIENTS: Records<ClientView> = Records {
    base: "/v1/clients",
    noun: "client",
    plural: "clients",
    columns: COLUMNS,
    answer: std::marker::PhantomData,
};

const COLUMNS: &[Column] = &[
    col("ID", "/id"),
    col("NAME", "/name"),
    col("EMAIL", "/email"),
    col("STATUS", "/status"),
    col("BALANCE (MINOR)", "/balance_minor"),
    col("CURRENCY", "/currency"),
];

pub async fn run(cmd: ClientCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        ClientCmd::Add {
            name,
            email,
            currency,
            balance_minor,
            fields,
        } => {
            let body = ClientCreate {
                name,
                email,
                currency,
                balance_minor,
                custom_fields: fields.into_iter().collect(),
                ..Default::default()
            };
            let client = ctx.api.create_client(&body).await?;
            output::print_record(ctx.output, &client)
        }
        ClientCmd::List {
            status,
            email,
            paging,
        } => {
            let filters = [
                ("status", status.unwrap_or_default()),
                ("email", email.unwrap_or_default()),
            ];
            CLIENTS.list(ctx, &filters, &paging).await
        }
        ClientCmd::Show { id } => CLIENTS.show(ctx, &id.to_string()).await,
        ClientCmd::Edit {
            id,
            name,
            email,
            status,
            fields,
            unset_fields,
        } => {
            let body = edit_body(name, email, status, fields, unset_fields)?;
            let client = ctx.api.update_client(id, &body).await?;
            output::print_record(ctx.output, &client)
        }
        ClientCmd::Archive { id } => {
            let client = ctx.api.archive_client(id).await?;
            output::print_record(ctx.output, &client)
        }
        ClientCmd::Delete { id } => CLIENTS.delete(ctx, &id.to_string()).await,
        ClientCmd::Pay(args) => transaction(ctx, TransactionKind::Payment, args).await,
        ClientCmd::Charge(args) => transaction(ctx, TransactionKind::Charge, args).await,
        ClientCmd::Credit(args) => transaction(ctx, TransactionKind::Credit, args).await,
        ClientCmd::Refund(args) => transaction(ctx, TransactionKind::Refund, args).await,
        ClientCmd::Import(args) => super::import::run(ctx, &super::import::CLIENTS, args).await,
        ClientCmd::Transactions { id, paging } => {
            let items: Vec<TransactionView> = ctx
                .list(&format!("{}/transactions", path(id)), &[], &paging)
                .await?;
            output::print_list(ctx.output, &items, TRANSACTION_COLUMNS, "transactions")
        }
    }
}

async fn transaction(
    ctx: &Ctx,
    kind: TransactionKind,
    args: TransactionArgs,
) -> anyhow::Result<()> {
    let id = args.id;
    let t = ctx
        .api
        .add_transaction(id, &transaction_body(kind, args))
        .await?;
    output::print_record(ctx.output, &t)
}

fn transaction_body(kind: TransactionKind, args: TransactionArgs) -> TransactionCreate {
    TransactionCreate {
        kind,
        amount_minor: args.amount_minor,
        idempotency_key: args.key,
        description: args.description,
    }
}

fn path(id: i64) -> String {
    CLIENTS.path(&id.to_string())
}

fn edit_body(
    name: Option<String>,
    email: Option<String>,
    status: Option<String>,
    fields: Vec<(String, String)>,
    unset_fields: Vec<String>,
) -> anyhow::Result<ClientPatch> {
    let mut custom: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (key, value) in fields {
        custom.insert(key, Some(value));
    }
    for key in unset_fields {
        if custom.contains_key(&key) {
            anyhow::bail!("custom field '{key}' is both set and unset");
        }
        // None is written as null, which removes the key on the server.
        custom.insert(key, None);
    }
    let body = ClientPatch {
        name,
        email,
        status: status.map(|s| wire_name("--status", &s)).transpose()?,
        custom_fields: (!custom.is_empty()).then_some(custom),
        ..Default::default()
    };
    require_changes(&body, "--name, --email, --status, --field, --unset-field")?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn edits_send_only_what_changes() {
        let body = edit_body(
            None,
            Some("a@b.example".into()),
            None,
            vec![("pass_key".into(), "k1".into())],
            vec!["old".into()],
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"email": "a@b.example", "custom_fields": {"pass_key": "k1", "old": null}})
        );
        let archived = edit_body(None, None, Some("archived".into()), vec![], vec![]).unwrap();
        assert_eq!(
            serde_json::to_value(&archived).unwrap(),
            json!({"status": "archived"})
        );
    }

    #[test]
    fn transactions_send_kind_amount_and_key() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: ClientCmd,
        }
        let cli = Cli::try_parse_from([
            "client",
            "refund",
            "7",
            "--amount-minor",
            "250",
            "--key",
            "rf-1",
            "--description",
            "goodwill",
        ])
        .unwrap();
        let ClientCmd::Refund(args) = cli.cmd else {
            panic!("parsed as refund")
        };
        assert_eq!(args.id, 7);
        assert_eq!(
            serde_json::to_value(transaction_body(TransactionKind::Refund, args)).unwrap(),
            json!({"kind": "refund", "amount_minor": 250, "idempotency_key": "rf-1",
                   "description": "goodwill"})
        );
        let cli = Cli::try_parse_from(["client", "pay", "7", "--amount-minor", "5", "--key", "k"])
            .unwrap();
        let ClientCmd::Pay(args) = cli.cmd else {
            panic!("parsed as pay")
        };
        assert_eq!(
            serde_json::to_value(transaction_body(TransactionKind::Payment, args)).unwrap(),
            json!({"kind": "payment", "amount_minor": 5, "idempotency_key": "k"})
        );
        assert!(Cli::try_parse_from(["client", "pay", "7", "--key", "k"]).is_err());
        assert!(Cli::try_parse_from(["client", "transactions", "7", "--all"]).is_ok());
    }

    #[test]
    fn an_empty_edit_is_refused() {
        let e = edit_body(None, None, None, vec![], vec![]).unwrap_err();
        assert!(e.to_string().starts_with("nothing to change"));
    }
}
