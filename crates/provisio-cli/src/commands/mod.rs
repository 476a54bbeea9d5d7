//! The subcommands that manage records and run actions through the REST API (`client`,
//! `server`, `product`, `service`, `module`, `queue`, `handler`, `rule`, `collect`, `group`,
//! `usage`, `audit`) and the argument parsing they share.

pub mod audit;
pub mod client;
pub mod collect;
pub mod handler;
pub mod import;
pub mod key;
pub mod module;
pub mod product;
pub mod queue;
pub mod rule;
pub mod server;
pub mod service;
pub mod usage;

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::{anyhow, bail};
use secrecy::SecretString;
use serde_json::{Map, Value};

use provisio_api::requests::Patch;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{self, Api, Listing};
use crate::output::Format;

/// Global options shared by remote commands (main.rs builds it from its global flags).
pub struct Ctx {
    pub api: Api,
    pub output: Format,
}

impl Ctx {
    /// Fetches a listing as `paging` asks and, in table mode, says on stderr when records
    /// were left out, so a person does not take the first page for the whole list.
    pub async fn list<T: DeserializeOwned>(
        &self,
        path: &str,
        filters: &[(&str, String)],
        paging: &Paging,
    ) -> anyhow::Result<Vec<T>> {
        let Listing { items, more } = self
            .api
            .list(path, filters, paging.page_size(), paging.all)
            .await?;
        if more && self.output == Format::Table {
            eprintln!(
                "(showing the first {}; use --all or a larger --limit for more)",
                items.len()
            );
        }
        Ok(items)
    }
}

/// The commands every kind of record has (list, show, edit, delete): they differ only in
/// the collection's path, the answer type the API sends for one record (`T`), the table's
/// columns and the noun in messages.
pub struct Records<T> {
    /// The collection, `/v1/servers`.
    pub base: &'static str,
    /// One record in messages, `server`; the plural names a listing.
    pub noun: &'static str,
    pub plural: &'static str,
    pub columns: &'static [crate::output::Column],
    pub answer: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + Serialize> Records<T> {
    /// One record's path, by id or name (names are percent-encoded).
    pub fn path(&self, key: &str) -> String {
        format!("{}/{}", self.base, api::segment(key))
    }

    pub async fn list(
        &self,
        ctx: &Ctx,
        filters: &[(&str, String)],
        paging: &Paging,
    ) -> anyhow::Result<()> {
        let items: Vec<T> = ctx.list(self.base, filters, paging).await?;
        crate::output::print_list(ctx.output, &items, self.columns, self.plural)
    }

    pub async fn show(&self, ctx: &Ctx, key: &str) -> anyhow::Result<()> {
        let record: T = ctx.api.get(&self.path(key), &[]).await?;
        crate::output::print_record(ctx.output, &record)
    }

    pub async fn delete(&self, ctx: &Ctx, key: &str) -> anyhow::Result<()> {
        ctx.api.delete(&self.path(key)).await?;
        crate::output::print_deleted(ctx.output, self.noun, key)
    }
}

/// `--limit` and `--all`, for every `list` command.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Paging {
    /// How many records to fetch (1 to 1000; default 50); with --all, how many per request
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Fetch every record, page after page
    #[arg(long)]
    pub all: bool,
}

impl Paging {
    /// With `--all` and no `--limit`, the largest page means the fewest round trips.
    fn page_size(&self) -> u32 {
        match (self.limit, self.all) {
            (Some(limit), _) => limit,
            (None, true) => api::MAX_PAGE,
            (None, false) => api::DEFAULT_PAGE,
        }
    }
}

/// Settings for a new record.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NewSettings {
    /// Set a setting: the value is read as JSON when it is valid JSON (6061, true, "x", [..]),
    /// otherwise as text (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub set: Vec<(String, Value)>,
    /// Settings as one JSON object; --set values override its keys
    #[arg(long, value_name = "JSON")]
    pub settings_json: Option<String>,
    /// Read the value of setting KEY as text from one line of standard input, so a secret
    /// stays out of shell history (repeatable: one line each, in order)
    #[arg(long, value_name = "KEY")]
    pub set_stdin: Vec<String>,
}

/// Changes to the settings of an existing record: the server merges them into what it has.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SettingsChanges {
    /// Set a setting: the value is read as JSON when it is valid JSON (6061, true, "x", [..]),
    /// otherwise as text (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub set: Vec<(String, Value)>,
    /// Remove a setting (repeatable)
    #[arg(long, value_name = "KEY")]
    pub unset: Vec<String>,
    /// Read the value of setting KEY as text from one line of standard input, so a secret
    /// stays out of shell history (repeatable: one line each, in order)
    #[arg(long, value_name = "KEY")]
    pub set_stdin: Vec<String>,
}

impl NewSettings {
    /// The settings object, or `None` when no option gave any.
    pub fn build(self) -> anyhow::Result<Option<Map<String, Value>>> {
        let mut settings = match self.settings_json.as_deref() {
            Some(text) => parse_settings_json(text)?,
            None => Map::new(),
        };
        settings.extend(self.set);
        settings.extend(read_stdin_settings(&self.set_stdin)?);
        Ok((!settings.is_empty()).then_some(settings))
    }
}

impl SettingsChanges {
    /// The merge patch for the settings (`null` removes a key), or `None` when nothing changes.
    pub fn build(self) -> anyhow::Result<Option<Map<String, Value>>> {
        let mut changes = Map::new();
        changes.extend(self.set);
        changes.extend(read_stdin_settings(&self.set_stdin)?);
        for key in self.unset {
            if changes.contains_key(&key) {
                bail!("setting '{key}' is both set and unset");
            }
            changes.insert(key, Value::Null);
        }
        Ok((!changes.is_empty()).then_some(changes))
    }
}

fn parse_settings_json(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => bail!("--settings-json must be a JSON object, like {{\"port\": 6061}}"),
        Err(e) => bail!("--settings-json is not valid JSON: {e}"),
    }
}

fn read_stdin_settings(keys: &[String]) -> anyhow::Result<Vec<(String, Value)>> {
    keys.iter()
        .map(|key| {
            check_key(key, "--set-stdin")?;
            let value = read_stdin_line(&format!("the value of '{key}'"))?;
            Ok((key.clone(), Value::String(value)))
        })
        .collect()
}

/// Reads `--set KEY=VALUE`. A value is JSON when it parses as JSON, so numbers, booleans and
/// lists arrive typed; anything else is text, so `storage=10 GB` needs no extra quoting.
pub fn parse_setting(arg: &str) -> Result<(String, Value), String> {
    let (key, value) = split_key_value(arg)?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

/// Reads `--field KEY=VALUE` for client custom fields, whose values are always text.
pub fn parse_field(arg: &str) -> Result<(String, String), String> {
    let (key, value) = split_key_value(arg)?;
    Ok((key.to_string(), value.to_string()))
}

fn split_key_value(arg: &str) -> Result<(&str, &str), String> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err("expected KEY=VALUE, e.g. port=6061".into());
    };
    let key = key.trim();
    if key.is_empty() {
        return Err("the key before '=' is empty".into());
    }
    Ok((key, value))
}

fn check_key(key: &str, flag: &str) -> anyhow::Result<()> {
    if key.trim().is_empty() {
        bail!("{flag} needs a setting name");
    }
    Ok(())
}

/// Reads one line from standard input without its line ending. For passwords and secret
/// settings, which must not be command-line arguments (they would land in shell history and
/// be visible to other users in the process list).
pub fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "reading {what} from standard input (it will be shown as you type); end with Enter:"
        );
    }
    let mut line = String::new();
    let read = stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| anyhow!("cannot read {what} from standard input: {e}"))?;
    if read == 0 {
        bail!("expected {what} on standard input, but it is empty");
    }
    let value = line.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        bail!("{what} read from standard input is empty");
    }
    Ok(value.to_string())
}

/// Reads a password from standard input, kept out of debug output until it is sent.
pub fn read_password() -> anyhow::Result<SecretString> {
    read_stdin_line("the password").map(SecretString::from)
}

/// Reads an option's value (one clap has already checked against the wire names, such as
/// `--status archived`) as the API's enum of those names.
pub fn wire_name<T: DeserializeOwned>(flag: &str, value: &str) -> anyhow::Result<T> {
    use serde::de::value::{Error, StrDeserializer};
    T::deserialize(StrDeserializer::<Error>::new(value))
        .map_err(|e| anyhow!("{flag} {value:?}: {e}"))
}

/// Fails with a message listing the options when an edit would change nothing, rather than
/// sending an empty PATCH that looks like success. A typed patch leaves out what it keeps,
/// so one that changes nothing is written as `{}`.
pub fn require_changes<P: Serialize>(patch: &P, options: &str) -> anyhow::Result<()> {
    let written = serde_json::to_value(patch)?;
    if written.as_object().is_some_and(Map::is_empty) {
        bail!("nothing to change: give at least one of {options}");
    }
    Ok(())
}

/// A patch of a field that `--no-X` clears: the new value, a clearing, or no change.
pub fn clearable(value: Option<String>, clear: bool) -> Patch<String> {
    match (value, clear) {
        (_, true) => Patch::Clear,
        (Some(v), false) => Patch::Set(v),
        (None, false) => Patch::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_values_are_json_when_they_parse() {
        assert_eq!(
            parse_setting("port=6061").unwrap(),
            ("port".into(), json!(6061))
        );
        assert_eq!(parse_setting("on=true").unwrap().1, json!(true));
        assert_eq!(parse_setting("ips=[1,2]").unwrap().1, json!([1, 2]));
        assert_eq!(parse_setting(r#"o={"a":1}"#).unwrap().1, json!({"a": 1}));
        assert_eq!(parse_setting(r#"q="6061""#).unwrap().1, json!("6061"));
        assert_eq!(parse_setting("n=null").unwrap().1, Value::Null);
    }

    #[test]
    fn set_values_are_text_otherwise() {
        assert_eq!(parse_setting("storage=10 GB").unwrap().1, json!("10 GB"));
        assert_eq!(
            parse_setting("host=db.example").unwrap().1,
            json!("db.example")
        );
        assert_eq!(parse_setting("empty=").unwrap().1, json!(""));
        // Only the first '=' separates: the rest belongs to the value.
        assert_eq!(parse_setting("q=a=b").unwrap(), ("q".into(), json!("a=b")));
    }

    #[test]
    fn set_without_a_key_or_equals_sign_is_refused() {
        assert!(parse_setting("port").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_setting("=1").unwrap_err().contains("key"));
    }

    #[test]
    fn fields_stay_text() {
        assert_eq!(
            parse_field("code=0042").unwrap(),
            ("code".into(), "0042".into())
        );
    }

    #[test]
    fn a_bad_set_names_the_flag() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            settings: NewSettings,
        }
        let e = Cli::try_parse_from(["x", "--set", "port"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set") && e.contains("KEY=VALUE"), "{e}");
    }

    #[test]
    fn new_settings_merge_set_over_json() {
        let settings = NewSettings {
            set: vec![("port".into(), json!(1))],
            settings_json: Some(r#"{"port": 2, "host": "h"}"#.into()),
            set_stdin: vec![],
        };
        assert_eq!(
            Value::Object(settings.build().unwrap().unwrap()),
            json!({"port": 1, "host": "h"})
        );
        assert_eq!(NewSettings::default().build().unwrap(), None);
        let bad = NewSettings {
            settings_json: Some("[1]".into()),
            ..Default::default()
        };
        assert!(bad.build().unwrap_err().to_string().contains("JSON object"));
    }

    #[test]
    fn unset_sends_null_and_clashes_with_set() {
        let changes = SettingsChanges {
            set: vec![("a".into(), json!(1))],
            unset: vec!["b".into()],
            set_stdin: vec![],
        };
        assert_eq!(
            Value::Object(changes.build().unwrap().unwrap()),
            json!({"a": 1, "b": null})
        );
        let clash = SettingsChanges {
            set: vec![("a".into(), json!(1))],
            unset: vec!["a".into()],
            set_stdin: vec![],
        };
        assert!(clash.build().is_err());
    }

    /// Every subcommand as main.rs mounts them, so clap's own checks (unknown ids in
    /// `conflicts_with`, clashing flags) run in the tests rather than at a user's first call.
    #[derive(clap::Parser, Debug)]
    enum All {
        #[command(subcommand)]
        Client(client::ClientCmd),
        #[command(subcommand)]
        Server(server::ServerCmd),
        #[command(subcommand)]
        Product(product::ProductCmd),
        #[command(subcommand)]
        Service(service::ServiceCmd),
        #[command(subcommand)]
        Module(module::ModuleCmd),
        #[command(subcommand)]
        Queue(queue::QueueCmd),
        #[command(subcommand)]
        Handler(handler::HandlerCmd),
        #[command(subcommand)]
        Rule(rule::RuleCmd),
        Collect(collect::CollectArgs),
        #[command(subcommand)]
        Group(collect::GroupCmd),
        Cleanup(collect::CleanupArgs),
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::{CommandFactory as _, Parser as _};
        All::command().debug_assert();
        let edit = All::try_parse_from(["x", "server", "edit", "r1", "--unset", "a", "--disable"]);
        assert!(edit.is_ok(), "{edit:?}");
        let clash = All::try_parse_from(["x", "server", "edit", "r1", "--enable", "--disable"]);
        assert!(clash.is_err());
        let negative = All::try_parse_from([
            "x",
            "client",
            "add",
            "--name",
            "A",
            "--email",
            "a@b.c",
            "--balance-minor",
            "-500",
        ]);
        assert!(negative.is_ok(), "{negative:?}");
    }

    #[test]
    fn wire_names_read_as_the_api_enums() {
        use provisio_core::client::ClientStatus;
        let s: ClientStatus = wire_name("--status", "archived").unwrap();
        assert_eq!(s, ClientStatus::Archived);
        let e = wire_name::<ClientStatus>("--status", "gone").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--status \"gone\": unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn clearing_wins_and_nothing_keeps() {
        assert_eq!(clearable(Some("g".into()), false), Patch::Set("g".into()));
        assert_eq!(clearable(Some("g".into()), true), Patch::Clear);
        assert_eq!(clearable(None, false), Patch::Keep);
    }

    #[test]
    fn an_empty_patch_is_refused_and_a_clearing_is_not() {
        use provisio_api::requests::ProductPatch;
        let e = require_changes(&ProductPatch::default(), "--name").unwrap_err();
        assert_eq!(
            e.to_string(),
            "nothing to change: give at least one of --name"
        );
        let clear = ProductPatch {
            extends: Patch::Clear,
            ..Default::default()
        };
        assert!(require_changes(&clear, "--name").is_ok());
    }

    #[test]
    fn list_pages_default_sensibly() {
        let paging = |limit, all| Paging { limit, all }.page_size();
        assert_eq!(paging(None, false), 50);
        assert_eq!(paging(None, true), 1000);
        assert_eq!(paging(Some(10), true), 10);
    }
}
