//! A WHMCS module's `_ConfigOptions` as a Provisio product settings schema, and the order
//! that turns product settings back into `configoption1`…`configoptionN`.

use provisio_core::settings::{Field, SettingsSchema};
use serde_json::Value;

/// WHMCS passes at most this many `configoptionN`.
pub const MAX_CONFIG_OPTIONS: usize = 24;

/// How one product setting becomes a `configoptionN` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionKind {
    /// Passed as written.
    Text,
    /// A yesno: `"on"` when true, `""` when false, as WHMCS's checkbox does.
    YesNo,
}

/// One entry of `_ConfigOptions`, in declaration order.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigOption {
    /// The Provisio setting name.
    pub name: String,
    pub kind: OptionKind,
}

/// The settings name of a WHMCS label: lowercase words joined by `_` ("Package Name" ->
/// `package_name`); `None` when nothing usable is left.
pub fn setting_name(label: &str) -> Option<String> {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_string();
    out.starts_with(|c: char| c.is_ascii_lowercase())
        .then_some(out)
}

/// The schema and the option order of `declared` (the decoded return value of
/// `_ConfigOptions`: label => `{Type, Default, Description, Options}`), or what is wrong.
pub fn from_config_options(
    declared: &Value,
) -> Result<(SettingsSchema, Vec<ConfigOption>), String> {
    let entries = match declared {
        Value::Null => return Ok((SettingsSchema::new(vec![]), vec![])),
        // PHP encodes an empty array as a JSON list.
        Value::Array(a) if a.is_empty() => return Ok((SettingsSchema::new(vec![]), vec![])),
        Value::Object(m) => m,
        other => {
            return Err(format!(
                "_ConfigOptions returned {other}, not an array of label => options"
            ))
        }
    };
    if entries.len() > MAX_CONFIG_OPTIONS {
        return Err(format!(
            "_ConfigOptions declares {} fields; WHMCS allows {MAX_CONFIG_OPTIONS}",
            entries.len()
        ));
    }
    let mut fields = Vec::new();
    let mut order = Vec::new();
    for (i, (label, spec)) in entries.iter().enumerate() {
        let position = i + 1;
        let spec = spec.as_object().ok_or_else(|| {
            format!("_ConfigOptions entry {label:?} is not an array of Type, Default, …")
        })?;
        let name = setting_name(label)
            .filter(|n| !order.iter().any(|o: &ConfigOption| &o.name == n))
            .unwrap_or_else(|| format!("configoption{position}"));
        let kind = spec
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or("text")
            .to_ascii_lowercase();
        let default = spec.get("Default").filter(|d| !is_blank(d));
        let mut help = spec
            .get("Description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !help.is_empty() {
            help.push(' ');
        }
        help.push_str(&format!("(WHMCS configoption{position}, {kind})"));
        let (field, option_kind) = match kind.as_str() {
            "password" => (Field::secret(&name, label), OptionKind::Text),
            "yesno" => {
                let on = default.is_some_and(is_on);
                (
                    Field::boolean(&name, label).default_value(on),
                    OptionKind::YesNo,
                )
            }
            "dropdown" | "radio" => {
                let values = option_values(spec.get("Options"))
                    .map_err(|why| format!("_ConfigOptions entry {label:?}: {why}"))?;
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                let mut f = Field::enumeration(&name, label, &refs);
                if let Some(d) = default.and_then(scalar).filter(|d| values.contains(d)) {
                    f = f.default_value(d);
                }
                (f, OptionKind::Text)
            }
            // text, textarea, and the types only WHMCS's own screens know.
            _ => {
                let mut f = Field::string(&name, label);
                if let Some(d) = default.and_then(scalar) {
                    f = f.default_value(d);
                }
                (f, OptionKind::Text)
            }
        };
        fields.push(field.help(&help));
        order.push(ConfigOption {
            name,
            kind: option_kind,
        });
    }
    let schema = SettingsSchema::new(fields);
    schema
        .check()
        .map_err(|e| format!("_ConfigOptions does not make a valid schema: {e}"))?;
    Ok((schema, order))
}

fn is_blank(v: &Value) -> bool {
    matches!(v, Value::Null) || v.as_str().is_some_and(str::is_empty)
}

fn is_on(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() == Some(1),
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "on" | "yes" | "1" | "true"),
        _ => false,
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The values of a dropdown or radio: WHMCS accepts a comma-separated string, a list, or
/// value => label pairs (the value is what the module receives).
fn option_values(options: Option<&Value>) -> Result<Vec<String>, String> {
    let values: Vec<String> = match options {
        Some(Value::String(s)) => s
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
        Some(Value::Array(a)) => a.iter().filter_map(scalar).collect(),
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    if values.is_empty() {
        return Err("a dropdown or radio needs Options".into());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisio_core::settings::FieldKind;
    use serde_json::json;

    #[test]
    fn every_whmcs_type_maps_to_a_field_in_declaration_order() {
        let declared = json!({
            "Package Name": {"Type": "text", "Size": "25", "Default": "basic"},
            "API Password": {"Type": "password"},
            "Send Mail": {"Type": "yesno", "Default": "on"},
            "Action": {"Type": "dropdown", "Options": "Signup Reseller,Signup Customer"},
            "Region": {"Type": "radio", "Options": {"eu": "Europe", "us": "America"}, "Default": "eu"},
            "Notes": {"Type": "textarea", "Rows": "3"},
            "!!!": {"Type": "text"}
        });
        let (schema, order) = from_config_options(&declared).unwrap();
        let names: Vec<&str> = order.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "package_name",
                "api_password",
                "send_mail",
                "action",
                "region",
                "notes",
                "configoption7"
            ]
        );
        let kind = |n: &str| schema.field(n).unwrap().kind.clone();
        assert!(matches!(kind("package_name"), FieldKind::String { .. }));
        assert_eq!(kind("api_password"), FieldKind::Secret);
        assert_eq!(kind("send_mail"), FieldKind::Boolean);
        assert_eq!(
            kind("action"),
            FieldKind::Enum {
                values: vec!["Signup Reseller".into(), "Signup Customer".into()]
            }
        );
        assert_eq!(
            kind("region"),
            FieldKind::Enum {
                values: vec!["eu".into(), "us".into()]
            }
        );
        assert_eq!(schema.field("region").unwrap().default, Some(json!("eu")));
        assert_eq!(
            schema.field("send_mail").unwrap().default,
            Some(json!(true))
        );
        assert_eq!(order[2].kind, OptionKind::YesNo);
        assert!(schema
            .field("notes")
            .unwrap()
            .help
            .contains("configoption6"));
    }

    #[test]
    fn bad_declarations_say_which_entry_is_wrong() {
        let err = from_config_options(&json!({"Plan": {"Type": "dropdown"}})).unwrap_err();
        assert!(err.contains("\"Plan\"") && err.contains("Options"), "{err}");
        let err = from_config_options(&json!("nope")).unwrap_err();
        assert!(err.contains("_ConfigOptions returned"), "{err}");
        let many: serde_json::Map<String, Value> = (0..25)
            .map(|i| (format!("F{i}"), json!({"Type": "text"})))
            .collect();
        let err = from_config_options(&Value::Object(many)).unwrap_err();
        assert!(err.contains("allows 24"), "{err}");
        assert!(from_config_options(&json!([])).unwrap().1.is_empty());
    }
}
