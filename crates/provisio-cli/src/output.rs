//! How remote commands print: readable tables for people, pretty JSON for scripts.

use std::io::Write as _;

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;
use serde_json::{json, Value};

/// The `-o/--output` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// One column of a list table: a header and where the value sits in each record.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub header: &'static str,
    /// A JSON pointer into the record, e.g. `/suspension/reason`.
    pub pointer: &'static str,
    /// Shown when the value is null or absent (`unlimited` reads better than `-` for limits).
    pub missing: &'static str,
    /// Longer values are cut to this many characters, on one line (0: shown whole).
    pub max_chars: usize,
}

/// A column that shows `-` for a missing value.
pub const fn col(header: &'static str, pointer: &'static str) -> Column {
    Column {
        header,
        pointer,
        missing: "-",
        max_chars: 0,
    }
}

impl Column {
    pub const fn or(self, missing: &'static str) -> Column {
        Column { missing, ..self }
    }

    /// Cuts long values (error messages) so one record stays one readable row.
    pub const fn cut(self, max_chars: usize) -> Column {
        Column { max_chars, ..self }
    }
}

/// Shown in place of a secret value that a record should not have carried.
const HIDDEN: &str = "(secret)";

/// Prints one record: a field/value table, or its pretty JSON.
pub fn print_record<T: Serialize + ?Sized>(format: Format, record: &T) -> anyhow::Result<()> {
    let record = redacted(&serde_json::to_value(record)?);
    match format {
        Format::Json => print_json(&record),
        Format::Table => emit(&render_record(&record)),
    }
}

/// Prints the records of a listing: a table of `columns`, or the JSON array of the records.
/// `noun` names the records (`clients`) for the line shown when there are none.
pub fn print_list<T: Serialize>(
    format: Format,
    items: &[T],
    columns: &[Column],
    noun: &str,
) -> anyhow::Result<()> {
    let items = items
        .iter()
        .map(|i| serde_json::to_value(i).map(|v| redacted(&v)))
        .collect::<Result<Vec<Value>, _>>()?;
    match format {
        Format::Json => print_json(&Value::Array(items)),
        Format::Table if items.is_empty() => emit(&format!("no {noun}")),
        Format::Table => emit(&render_list(&items, columns)),
    }
}

/// Confirms a deletion: `deleted client 7`, or `{"deleted": true}`.
pub fn print_deleted(format: Format, what: &str, key: &str) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&json!({ "deleted": true })),
        Format::Table => emit(&format!("deleted {what} {key}")),
    }
}

pub fn print_json(value: &Value) -> anyhow::Result<()> {
    emit(&serde_json::to_string_pretty(value)?)
}

/// Writes `text` and a newline to stdout. A closed pipe (`provisio client list | head`) is
/// the reader's choice, not an error worth reporting.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// A new table in the house style; columns fit the terminal when there is one.
pub fn table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table
}

/// A two-column field/value table of a record's top-level fields, nested values as compact JSON.
pub fn render_record(record: &Value) -> String {
    let mut t = table();
    match record {
        Value::Object(fields) => {
            for (name, value) in fields {
                t.add_row(vec![name.clone(), cell(value, "-")]);
            }
        }
        other => {
            t.add_row(vec![cell(other, "-")]);
        }
    }
    t.to_string()
}

/// A table with one row per record.
pub fn render_list(items: &[Value], columns: &[Column]) -> String {
    let mut t = table();
    t.set_header(columns.iter().map(|c| c.header));
    for item in items {
        t.add_row(columns.iter().map(|c| {
            let text = cell_or_missing(item.pointer(c.pointer), c.missing);
            if c.max_chars > 0 {
                truncate(&one_line(&text), c.max_chars)
            } else {
                text
            }
        }));
    }
    t.to_string()
}

fn cell_or_missing(value: Option<&Value>, missing: &str) -> String {
    value.map_or_else(|| missing.to_string(), |v| cell(v, missing))
}

/// `s` with every run of whitespace, line breaks included, made one space.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `s` cut to `max_chars` characters, with `…` when something was cut.
pub fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A value as table text: strings without quotes, everything nested as compact JSON.
pub fn cell(value: &Value, missing: &str) -> String {
    match value {
        Value::Null => missing.to_string(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        // An empty list reads as "nothing", like null, rather than as JSON punctuation.
        Value::Array(items) if items.is_empty() => missing.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// A copy of `record` with secret setting values hidden. The API should never send them,
/// but the CLI promises not to print secrets, so it does not rely on that: values of the
/// keys listed in `secrets`, sealed `{"$sealed": ...}` values, and a job's password
/// parameters are replaced.
pub fn redacted(record: &Value) -> Value {
    let mut record = record.clone();
    let secret_names: Vec<String> = record
        .get("secrets")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for key in ["settings", "effective_settings", "params"] {
        if let Some(Value::Object(settings)) = record.get_mut(key) {
            for (name, value) in settings.iter_mut() {
                let sealed = value.get("$sealed").is_some();
                let listed = secret_names.contains(name) && !value.is_null();
                let password = key == "params" && name.contains("password") && !value.is_null();
                if sealed || listed || password {
                    *value = Value::String(HIDDEN.into());
                }
            }
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_show_strings_bare_and_nested_values_compact() {
        assert_eq!(cell(&json!("abc"), "-"), "abc");
        assert_eq!(cell(&json!(42), "-"), "42");
        assert_eq!(cell(&json!(true), "-"), "true");
        assert_eq!(cell(&Value::Null, "unlimited"), "unlimited");
        assert_eq!(cell(&json!(["create", "suspend"]), "-"), "create, suspend");
        assert_eq!(cell(&json!([]), "-"), "-");
        assert_eq!(
            cell(&json!({"port": 6061, "a": [1]}), "-"),
            r#"{"port":6061,"a":[1]}"#
        );
    }

    #[test]
    fn record_tables_have_one_row_per_field() {
        let text = render_record(&json!({
            "id": 7, "name": "Acme", "suspension": null, "settings": {"port": 6061}
        }));
        let lines: Vec<&str> = text.lines().filter(|l| l.contains('│')).collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("id") && lines[0].contains('7'), "{text}");
        assert!(lines[1].contains("Acme"), "{text}");
        assert!(
            lines[2].contains("suspension") && lines[2].contains('-'),
            "{text}"
        );
        assert!(lines[3].contains(r#"{"port":6061}"#), "{text}");
    }

    #[test]
    fn list_tables_follow_the_columns() {
        let columns = [
            col("ID", "/id"),
            col("REASON", "/suspension/reason"),
            col("RATE", "/max_per_second").or("unlimited"),
        ];
        let items = [
            json!({"id": 1, "suspension": {"reason": "non-payment"}, "max_per_second": 5}),
            json!({"id": 2, "suspension": null, "max_per_second": null}),
        ];
        let text = render_list(&items, &columns);
        let rows: Vec<&str> = text.lines().filter(|l| l.contains('│')).collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(
            rows[0].contains("ID") && rows[0].contains("REASON"),
            "{text}"
        );
        assert!(
            rows[1].contains("non-payment") && rows[1].contains('5'),
            "{text}"
        );
        assert!(
            rows[2].contains("unlimited") && rows[2].contains(" - "),
            "{text}"
        );
    }

    #[test]
    fn secret_settings_are_hidden() {
        let server = json!({
            "name": "r1",
            "secrets": ["password"],
            "settings": {"host": "db", "password": "hunter2", "token": {"$sealed": "AAAA"}},
        });
        let shown = redacted(&server);
        assert_eq!(shown["settings"]["host"], "db");
        assert_eq!(shown["settings"]["password"], HIDDEN);
        assert_eq!(shown["settings"]["token"], HIDDEN);
        assert!(!render_record(&shown).contains("hunter2"));
    }

    #[test]
    fn job_password_parameters_are_hidden() {
        let job = json!({"id": 3, "params": {"new_password": "hunter2", "reason": "admin"}});
        let shown = redacted(&job);
        assert_eq!(shown["params"]["new_password"], HIDDEN);
        assert_eq!(shown["params"]["reason"], "admin");
    }

    #[test]
    fn cut_columns_stay_on_one_short_line() {
        let columns = [col("ID", "/id"), col("ERROR", "/e").cut(10)];
        let items = [json!({"id": 1, "e": "connection\nrefused by the remote"})];
        let text = render_list(&items, &columns);
        assert!(text.contains("connection…"), "{text}");
        assert!(!text.contains("refused"), "{text}");
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(one_line(" a\n b  c "), "a b c");
    }
}
