//! The `radius` module's settings: the schemas it declares, the checks a schema cannot
//! express (attribute lists), and their parsing into typed values for one call.

use std::time::Duration;

use provisio_core::settings::{rule, Field, FieldError, Settings, SettingsSchema};
use serde_json::Value;

pub const DEFAULT_TIMEOUT_SECONDS: i64 = 10;
pub const DEFAULT_MAX_CONNECTIONS: i64 = 4;
pub const DEFAULT_SUSPEND_GROUP: &str = "disabled";

/// Group names and usernames are limited to the characters FreeRADIUS's `sql` module passes
/// through unescaped (its default `safe_characters`): anything else is escaped before the
/// lookup (`=2C` for a comma) and would never match the row written here.
pub const SAFE_CHARACTERS: &str =
    "@abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_: /";
const GROUP_PATTERN: &str = r"[A-Za-z0-9@._:-][A-Za-z0-9@._: /-]{0,63}";
/// The longest value a RADIUS attribute (and the schema's `value` column) holds.
pub const MAX_VALUE_LEN: usize = 253;

/// How passwords are written to `radcheck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAttribute {
    Cleartext,
    Ssha2_256,
    Ssha2_512,
}

impl PasswordAttribute {
    pub const NAMES: [&'static str; 3] = [
        "Cleartext-Password",
        "SSHA2-256-Password",
        "SSHA2-512-Password",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cleartext => Self::NAMES[0],
            Self::Ssha2_256 => Self::NAMES[1],
            Self::Ssha2_512 => Self::NAMES[2],
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Cleartext-Password" => Self::Cleartext,
            "SSHA2-256-Password" => Self::Ssha2_256,
            "SSHA2-512-Password" => Self::Ssha2_512,
            _ => return None,
        })
    }
}

/// How a suspension is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendMethod {
    /// Membership of the suspend group at priority 0, whose check is `Auth-Type := Reject`.
    Group,
    /// `Auth-Type := Reject` in the user's own `radcheck` rows.
    Check,
}

/// One RADIUS attribute row to write: `attribute op value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeRow {
    pub attribute: String,
    pub op: &'static str,
    pub value: String,
}

/// The server settings of one call.
pub struct ServerConfig {
    pub database_url: String,
    pub password_attribute: PasswordAttribute,
    pub suspend_method: SuspendMethod,
    pub suspend_group: String,
    pub timeout: Duration,
    pub max_connections: u32,
}

/// What a product (a package) says about its RADIUS group.
#[derive(Debug, Clone)]
pub struct Package {
    pub group: String,
    pub manage_group: bool,
    pub reply: Vec<AttributeRow>,
    pub check: Vec<AttributeRow>,
    pub data_cap: Option<u64>,
}

pub fn server_schema() -> SettingsSchema {
    SettingsSchema::new(vec![
        Field::secret("database_url", "Database URL")
            .required()
            .help("The FreeRADIUS database: sqlite:///var/lib/radius/radius.db or postgres://user:password@host:5432/radius. Stored encrypted, since it may hold a password."),
        Field::enumeration("password_attribute", "Password attribute", &PasswordAttribute::NAMES)
            .default_value("Cleartext-Password")
            .help("How passwords are stored in radcheck. Cleartext-Password works with every authentication method (PAP, CHAP, MS-CHAP); the salted hashes work with PAP only."),
        Field::enumeration("suspend_method", "Suspend method", &["group", "check"])
            .default_value("group")
            .help("group: membership of suspend_group at priority 0, whose radgroupcheck rejects; check: Auth-Type := Reject in the user's radcheck."),
        Field::string("suspend_group", "Suspend group")
            .pattern(GROUP_PATTERN)
            .default_value(DEFAULT_SUSPEND_GROUP)
            .help("The group a suspended user joins when suspend_method is group."),
        Field::integer("timeout_seconds", "Timeout (seconds)", Some(1), Some(300))
            .default_value(DEFAULT_TIMEOUT_SECONDS)
            .help("How long connecting and one action may take."),
        Field::integer("max_connections", "Connections", Some(1), Some(50))
            .default_value(DEFAULT_MAX_CONNECTIONS)
            .help("Most database connections the module keeps open to this server."),
    ])
}

pub fn product_schema() -> SettingsSchema {
    SettingsSchema::new(vec![
        Field::string("group", "Group")
            .required()
            .pattern(GROUP_PATTERN)
            .help("The RADIUS group (radusergroup) that stands for this package."),
        Field::json("reply_attributes", "Reply attributes")
            .help(r#"The group's radgroupreply rows, e.g. {"Mikrotik-Rate-Limit": "10M/10M", "Session-Timeout": 86400}; an array value writes one row per item."#),
        Field::json("check_attributes", "Check attributes")
            .help(r#"The group's radgroupcheck rows, e.g. {"Simultaneous-Use": 1}."#),
        Field::boolean("manage_group", "Manage group")
            .default_value(true)
            .help("Write the group's radgroupreply and radgroupcheck rows from this product on create and change_package; off leaves them to an administrator."),
        Field::bytes("data_cap", "Data cap", Some(1), None)
            .help("Reported as the limit of the data metric in usage (e.g. \"100 GB\"); not enforced by the module."),
    ])
}

pub fn service_schema() -> SettingsSchema {
    SettingsSchema::new(vec![Field::json("reply_attributes", "Reply attributes")
        .help(
            r#"The user's own radreply rows, e.g. {"Framed-IP-Address": "192.0.2.10"}."#,
        )])
}

/// The rules of attribute lists, for [`crate::radius::RadiusModule::check_settings`].
pub fn check_attributes(settings: &Settings, field: &str) -> Vec<FieldError> {
    match settings.get(field) {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => match attribute_rows(field, value) {
            Ok(_) => Vec::new(),
            Err(e) => vec![e],
        },
    }
}

/// Reads `{"Attr": value | [values]}` into rows: a single value is set (`:=`), every item
/// of an array is appended (`+=`), so multi-valued attributes keep all their values.
fn attribute_rows(field: &str, value: &Value) -> Result<Vec<AttributeRow>, FieldError> {
    let error = |rule: &str, message: String| FieldError {
        field: field.to_string(),
        rule: rule.to_string(),
        message,
    };
    let Value::Object(map) = value else {
        return Err(error(
            rule::TYPE,
            format!("{field} must be an object of attribute names and values"),
        ));
    };
    let mut rows = Vec::new();
    for (attribute, v) in map {
        if !is_attribute_name(attribute) {
            return Err(error(
                rule::PATTERN,
                format!("{field}: {attribute:?} is not a RADIUS attribute name (letters, digits and dashes)"),
            ));
        }
        let (op, values): (&'static str, Vec<&Value>) = match v {
            Value::Array(items) if !items.is_empty() => ("+=", items.iter().collect()),
            Value::Array(_) => {
                return Err(error(
                    rule::TYPE,
                    format!("{field}.{attribute}: an empty list writes nothing"),
                ))
            }
            other => (":=", vec![other]),
        };
        for v in values {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(error(
                        rule::TYPE,
                        format!("{field}.{attribute}: a value must be text, a number or a boolean"),
                    ))
                }
            };
            if text.is_empty() || text.len() > MAX_VALUE_LEN || text.chars().any(char::is_control) {
                return Err(error(
                    rule::MAX_LENGTH,
                    format!("{field}.{attribute}: a value must be 1 to {MAX_VALUE_LEN} bytes without control characters"),
                ));
            }
            rows.push(AttributeRow {
                attribute: attribute.clone(),
                op,
                value: text,
            });
        }
    }
    Ok(rows)
}

/// RADIUS attribute names as the dictionaries spell them (`Mikrotik-Rate-Limit`). Anything
/// else would make FreeRADIUS fail the whole lookup of every user of the group.
fn is_attribute_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Why settings handed to a call cannot be used. Schemas were checked when the records
/// were stored, so this only happens with hand-made or outdated settings: permanent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadSettings(pub String);

fn text<'a>(settings: &'a Settings, key: &str) -> Option<&'a str> {
    settings.get(key).and_then(Value::as_str)
}

impl ServerConfig {
    pub fn parse(settings: &Settings) -> Result<Self, BadSettings> {
        let database_url = text(settings, "database_url")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BadSettings("the server has no database_url setting".into()))?
            .to_string();
        let password_attribute = match text(settings, "password_attribute") {
            None => PasswordAttribute::Cleartext,
            Some(name) => PasswordAttribute::parse(name).ok_or_else(|| {
                BadSettings(format!("password_attribute {name:?} is not supported"))
            })?,
        };
        let suspend_method = match text(settings, "suspend_method") {
            None | Some("group") => SuspendMethod::Group,
            Some("check") => SuspendMethod::Check,
            Some(other) => {
                return Err(BadSettings(format!(
                    "suspend_method {other:?} is not group or check"
                )))
            }
        };
        let suspend_group = text(settings, "suspend_group")
            .unwrap_or(DEFAULT_SUSPEND_GROUP)
            .to_string();
        check_name("suspend_group", &suspend_group).map_err(BadSettings)?;
        let timeout = settings
            .get("timeout_seconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
            .clamp(1, 300);
        let max_connections = settings
            .get("max_connections")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_MAX_CONNECTIONS)
            .clamp(1, 50);
        Ok(Self {
            database_url,
            password_attribute,
            suspend_method,
            suspend_group,
            timeout: Duration::from_secs(timeout.unsigned_abs()),
            max_connections: max_connections as u32,
        })
    }
}

impl Package {
    /// `what` names the settings in messages (`product`, `params.new_product`).
    pub fn parse(settings: &Settings, what: &str) -> Result<Self, BadSettings> {
        let group = text(settings, "group")
            .ok_or_else(|| BadSettings(format!("{what} has no group setting")))?
            .to_string();
        check_name(&format!("{what}.group"), &group).map_err(BadSettings)?;
        let rows = |field: &str| -> Result<Vec<AttributeRow>, BadSettings> {
            match settings.get(field) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(v) => attribute_rows(field, v)
                    .map_err(|e| BadSettings(format!("{what}.{}", e.message))),
            }
        };
        Ok(Self {
            reply: rows("reply_attributes")?,
            check: rows("check_attributes")?,
            manage_group: settings
                .get("manage_group")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            data_cap: settings.get("data_cap").and_then(Value::as_u64),
            group,
        })
    }
}

/// The service's own reply rows.
pub fn service_reply(settings: &Settings) -> Result<Vec<AttributeRow>, BadSettings> {
    match settings.get("reply_attributes") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => attribute_rows("reply_attributes", v)
            .map_err(|e| BadSettings(format!("service.{}", e.message))),
    }
}

/// A username or group name FreeRADIUS will look up exactly as written.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{what} must be 1 to 64 characters"));
    }
    if let Some(c) = name.chars().find(|c| !SAFE_CHARACTERS.contains(*c)) {
        return Err(format!(
            "{what} contains {c:?}, which FreeRADIUS's sql module escapes, so the account could never be found"
        ));
    }
    Ok(())
}
