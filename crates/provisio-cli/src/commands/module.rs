//! `provisio module ...`: the installed modules, their capabilities and settings schemas.

use serde_json::Value;

use super::Ctx;
use crate::output::{self, cell, col, Column, Format};

#[derive(clap::Subcommand, Debug)]
pub enum ModuleCmd {
    /// List the modules this Provisio has
    List,
    /// Show a module's capabilities and the settings it takes for servers, products and services
    Show { name: String },
}

const COLUMNS: &[Column] = &[
    col("NAME", "/name"),
    col("VERSION", "/version"),
    col("CAPABILITIES", "/capabilities"),
    col("DESCRIPTION", "/description"),
];

/// The schemas a module declares, with the words used for them in headings.
const SCHEMAS: [(&str, &str); 3] = [
    ("server_schema", "server settings"),
    ("product_schema", "product settings"),
    ("service_schema", "service settings"),
];

/// Field keys shown in their own columns, or not at all; every other key is a rule.
const NOT_RULES: [&str; 8] = [
    "name",
    "label",
    "type",
    "required",
    "default",
    "help",
    "required_when",
    "forbidden_when",
];

pub async fn run(cmd: ModuleCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        ModuleCmd::List => {
            let answer = ctx.api.list_modules().await?;
            output::print_list(ctx.output, &answer.items, COLUMNS, "modules")
        }
        ModuleCmd::Show { name } => {
            let module = serde_json::to_value(ctx.api.get_module(&name).await?)?;
            match ctx.output {
                Format::Json => output::print_json(&module),
                Format::Table => output::emit(&render_module(&module)),
            }
        }
    }
}

/// A heading with the module's identity and capabilities, then one table per schema.
fn render_module(module: &Value) -> String {
    let text = |key: &str| module.get(key).map_or_else(String::new, |v| cell(v, ""));
    let mut out = format!("{} {}", text("name"), text("version"));
    let description = text("description");
    if !description.is_empty() {
        out.push_str(&format!(": {description}"));
    }
    out.push('\n');
    out.push_str(&format!(
        "capabilities: {}\n",
        names(module.get("capabilities"))
    ));
    out.push_str(&format!(
        "custom actions: {}\n",
        names(module.get("custom_actions"))
    ));
    for (key, heading) in SCHEMAS {
        out.push('\n');
        out.push_str(&render_schema(heading, module.get(key)));
    }
    out.trim_end().to_string()
}

fn render_schema(heading: &str, schema: Option<&Value>) -> String {
    let fields = schema
        .and_then(|s| s.get("fields"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let extra = schema
        .and_then(|s| s.get("allow_extra"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut out = String::from(heading);
    if extra {
        out.push_str(" (other keys are accepted too)");
    }
    if fields.is_empty() {
        out.push_str(": none\n");
        return out;
    }
    out.push_str(":\n");
    let mut t = output::table();
    t.set_header(["NAME", "TYPE", "REQUIRED", "DEFAULT", "RULES", "HELP"]);
    for field in fields {
        let get = |key: &str| field.get(key).map_or_else(String::new, |v| cell(v, ""));
        let required = field.get("required").and_then(Value::as_bool) == Some(true);
        t.add_row(vec![
            get("name"),
            get("type"),
            if required { "yes" } else { "no" }.to_string(),
            field
                .get("default")
                .map_or_else(String::new, |v| cell(v, "null")),
            rules(field),
            get("help"),
        ]);
    }
    out.push_str(&t.to_string());
    out.push('\n');
    out
}

/// A field's type-specific rules and conditions, e.g. `min 1; max 65535`.
fn rules(field: &Value) -> String {
    let Some(map) = field.as_object() else {
        return String::new();
    };
    let mut rules: Vec<String> = map
        .iter()
        .filter(|(key, value)| !NOT_RULES.contains(&key.as_str()) && !value.is_null())
        .map(|(key, value)| format!("{} {}", key.replace('_', " "), cell(value, "null")))
        .collect();
    let conditions = [
        ("required_when", "required when"),
        ("forbidden_when", "not allowed when"),
    ];
    for (key, words) in conditions {
        if let Some(condition) = map.get(key).filter(|c| !c.is_null()) {
            let other = condition
                .get("field")
                .map_or_else(String::new, |v| cell(v, ""));
            let equals = condition
                .get("equals")
                .map_or_else(String::new, Value::to_string);
            rules.push(format!("{words} {other} = {equals}"));
        }
    }
    rules.join("; ")
}

/// Capabilities or custom actions as a comma-separated list of their names.
fn names(list: Option<&Value>) -> String {
    let names: Vec<String> = list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|item| match item.get("name") {
            Some(name) => cell(name, ""),
            None => cell(item, ""),
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn module() -> Value {
        json!({
            "name": "radius", "version": "1.0.0", "description": "FreeRADIUS SQL",
            "capabilities": ["create", "suspend", "usage"],
            "custom_actions": [{"name": "reset-session", "description": "..."}],
            "server_schema": {"fields": [
                {"name": "port", "label": "Port", "type": "integer", "min": 1, "max": 65535,
                 "required": true, "default": 6060, "help": "TCP port"},
                {"name": "throttle_mode", "label": "Throttle", "type": "enum",
                 "values": ["always", "specified_time"], "required": false},
                {"name": "throttle_from", "label": "From", "type": "time_of_day",
                 "required": false,
                 "required_when": {"field": "throttle_mode", "equals": "specified_time"}},
            ], "allow_extra": false},
            "product_schema": {"fields": [], "allow_extra": true},
        })
    }

    #[test]
    fn rules_list_bounds_values_and_conditions() {
        let fields = module()["server_schema"]["fields"].clone();
        assert_eq!(rules(&fields[0]), "min 1; max 65535");
        assert_eq!(rules(&fields[1]), "values always, specified_time");
        assert_eq!(
            rules(&fields[2]),
            r#"required when throttle_mode = "specified_time""#
        );
    }

    #[test]
    fn a_module_shows_capabilities_and_every_schema() {
        let text = render_module(&module());
        assert!(text.starts_with("radius 1.0.0: FreeRADIUS SQL\n"), "{text}");
        assert!(
            text.contains("capabilities: create, suspend, usage"),
            "{text}"
        );
        assert!(text.contains("custom actions: reset-session"), "{text}");
        assert!(text.contains("server settings:"), "{text}");
        assert!(text.contains("TCP port") && text.contains("6060"), "{text}");
        assert!(
            text.contains("product settings (other keys are accepted too): none"),
            "{text}"
        );
        assert!(text.contains("service settings: none"), "{text}");
    }
}
