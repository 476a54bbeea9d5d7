//! Typed settings schemas that modules declare for servers, products and services, and their validation.
//!
//! A schema parses untrusted JSON into normalised settings (bytes become integers, email
//! lists become arrays, defaults are filled in) or returns every problem at once, each
//! naming the field and the rule it broke.

mod bytes;
mod validate;

pub use bytes::parse_bytes;
pub use validate::Mode;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A JSON object of settings, as stored and as sent to modules.
pub type Settings = serde_json::Map<String, Value>;

/// The settings a module accepts for one kind of record (server, product or service).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SettingsSchema {
    pub fields: Vec<Field>,
    /// Accept keys the schema does not name, as free-form JSON (the `script` module passes
    /// them through to the executable, which alone knows what they mean).
    #[serde(default)]
    pub allow_extra: bool,
}

/// One declared setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Field {
    pub name: String,
    pub label: String,
    #[serde(flatten)]
    pub kind: FieldKind,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub help: String,
    /// The field becomes required when the condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_when: Option<Condition>,
    /// The field must be absent when the condition holds ("not applicable for …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbidden_when: Option<Condition>,
}

/// The type of a setting and its type-specific rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldKind {
    /// Text, kept as given; `pattern` must match the whole value, lengths count characters.
    String {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_length: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_length: Option<usize>,
    },
    /// Encrypted at rest, never shown back. A non-empty string, or an already sealed
    /// `{"$sealed": "<base64>"}` object, which passes through unchanged.
    Secret,
    /// A JSON integer or a string of digits with an optional sign; normalised to an integer.
    Integer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<i64>,
    },
    /// A JSON boolean or `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` in any case;
    /// normalised to a boolean.
    Boolean,
    /// One of `values`, exactly as written there.
    Enum { values: Vec<String> },
    /// Comma-separated email addresses (or a JSON array); normalised to an array.
    EmailList,
    /// A size in bytes: `1024`, `"10 GB"`; normalised to an integer number of bytes.
    /// Units are binary (1 KB = 1024 bytes), see [`parse_bytes`].
    Bytes {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<u64>,
    },
    /// Hundred-hour time of day, `HHMM` (`0130`, `1740`); the integer `130` is read as `0130`.
    /// Normalised to the four-digit string.
    TimeOfDay,
    /// An absolute URL whose scheme is one of `schemes`; normalised to the trimmed string.
    Url {
        #[serde(default = "default_url_schemes")]
        schemes: Vec<String>,
    },
    /// A JSON object or array whose inner rules the module checks itself
    /// (`Module::check_settings`), e.g. the `http` module's per-action requests.
    Json,
}

fn default_url_schemes() -> Vec<String> {
    vec!["http".into(), "https".into()]
}

/// `field` has the value `equals` (after defaults are applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Condition {
    pub field: String,
    pub equals: Value,
}

/// The word parts of a setting name that mark a credential. A part is what lies between
/// `_`, `-`, `.`, spaces and lower-to-upper case changes (`apiKey` is `api` and `key`).
const CREDENTIAL_PARTS: &[&str] = &[
    "password",
    "passwords",
    "passwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "tokens",
    "key",
    "keys",
    "credential",
    "credentials",
];

/// Whether a setting called `name` looks like it holds a credential, so that it is sealed
/// and masked although no schema declares it: one of its word parts is one of
/// [`CREDENTIAL_PARTS`], or ends with one of them other than `key` (`dbpassword`,
/// `authtoken`, `clientsecret`), or is `apikey`. `key` must be a whole part, because many
/// ordinary words end with it (`hockey`, `monkey`) or start with it (`keyboard`).
pub fn looks_like_credential(name: &str) -> bool {
    let mut parts: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if matches!(c, '_' | '-' | '.' | ' ') {
            parts.push(std::mem::take(&mut current));
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower {
            parts.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    parts.push(current);
    parts.iter().any(|part| {
        part == "apikey"
            || CREDENTIAL_PARTS
                .iter()
                .any(|word| part == word || (!word.starts_with("key") && part.ends_with(word)))
    })
}

impl SettingsSchema {
    /// A schema accepting exactly `fields`, in this order (errors are reported in it too).
    pub fn new(fields: Vec<Field>) -> Self {
        SettingsSchema {
            fields,
            allow_extra: false,
        }
    }

    /// Also accept undeclared keys and pass them through unchanged.
    pub fn allow_extra(mut self) -> Self {
        self.allow_extra = true;
        self
    }
}

/// Builders, so that modules can declare their schemas as short static code:
///
/// ```
/// use provisio_core::settings::{Field, SettingsSchema};
///
/// let schema = SettingsSchema::new(vec![
///     Field::integer("port", "Port", Some(1), Some(65535)).default_value(6060),
///     Field::enumeration("throttle_mode", "Throttle", &["always", "specified_time"]),
///     Field::time_of_day("throttle_from", "Throttle from")
///         .required_when("throttle_mode", "specified_time"),
/// ]);
/// assert!(schema.check().is_ok());
/// ```
impl Field {
    /// An optional field without default, help or conditions.
    pub fn new(name: impl Into<String>, label: impl Into<String>, kind: FieldKind) -> Self {
        Field {
            name: name.into(),
            label: label.into(),
            kind,
            required: false,
            default: None,
            help: String::new(),
            required_when: None,
            forbidden_when: None,
        }
    }

    /// Free text; see [`Field::pattern`], [`Field::min_length`] and [`Field::max_length`].
    pub fn string(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(
            name,
            label,
            FieldKind::String {
                pattern: None,
                min_length: None,
                max_length: None,
            },
        )
    }

    /// A password or key: encrypted at rest and never shown back.
    pub fn secret(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(name, label, FieldKind::Secret)
    }

    /// A whole number within the inclusive bounds.
    pub fn integer(
        name: impl Into<String>,
        label: impl Into<String>,
        min: Option<i64>,
        max: Option<i64>,
    ) -> Self {
        Self::new(name, label, FieldKind::Integer { min, max })
    }

    /// A yes/no switch.
    pub fn boolean(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(name, label, FieldKind::Boolean)
    }

    /// One of a fixed list of strings.
    pub fn enumeration(name: impl Into<String>, label: impl Into<String>, values: &[&str]) -> Self {
        let values = values.iter().map(|v| v.to_string()).collect();
        Self::new(name, label, FieldKind::Enum { values })
    }

    /// Email addresses, comma-separated or as a JSON array.
    pub fn email_list(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(name, label, FieldKind::EmailList)
    }

    /// A size, within inclusive bounds in bytes (units are binary: 1 KB = 1024 bytes).
    pub fn bytes(
        name: impl Into<String>,
        label: impl Into<String>,
        min: Option<u64>,
        max: Option<u64>,
    ) -> Self {
        Self::new(name, label, FieldKind::Bytes { min, max })
    }

    /// A time of day as `HHMM`.
    pub fn time_of_day(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(name, label, FieldKind::TimeOfDay)
    }

    /// An absolute URL, `http` or `https` unless [`Field::schemes`] says otherwise.
    pub fn url(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(
            name,
            label,
            FieldKind::Url {
                schemes: default_url_schemes(),
            },
        )
    }

    /// The field must be given (after defaults) whenever the settings are complete.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The value used when the field is absent from complete settings.
    pub fn default_value(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// A sentence shown next to the field in forms and `describe` output.
    pub fn help(mut self, help: &str) -> Self {
        self.help = help.to_string();
        self
    }

    /// A regular expression the whole value must match (it is anchored for you).
    ///
    /// # Panics
    /// If the field is not a string field: schemas are static code, so this is a typo.
    pub fn pattern(mut self, regex: &str) -> Self {
        match &mut self.kind {
            FieldKind::String { pattern, .. } => *pattern = Some(regex.to_string()),
            other => panic!(
                "{}: a pattern needs a string field, not {other:?}",
                self.name
            ),
        }
        self
    }

    /// The least number of characters of a string field.
    ///
    /// # Panics
    /// If the field is not a string field.
    pub fn min_length(mut self, chars: usize) -> Self {
        match &mut self.kind {
            FieldKind::String { min_length, .. } => *min_length = Some(chars),
            other => panic!(
                "{}: a minimum length needs a string field, not {other:?}",
                self.name
            ),
        }
        self
    }

    /// The greatest number of characters of a string field.
    ///
    /// # Panics
    /// If the field is not a string field.
    pub fn max_length(mut self, chars: usize) -> Self {
        match &mut self.kind {
            FieldKind::String { max_length, .. } => *max_length = Some(chars),
            other => panic!(
                "{}: a maximum length needs a string field, not {other:?}",
                self.name
            ),
        }
        self
    }

    /// A JSON object or array, checked further by the module.
    pub fn json(name: impl Into<String>, label: impl Into<String>) -> Self {
        Self::new(name, label, FieldKind::Json)
    }

    /// The URL schemes a URL field accepts, replacing `http` and `https`.
    ///
    /// # Panics
    /// If the field is not a URL field.
    pub fn schemes(mut self, allowed: &[&str]) -> Self {
        match &mut self.kind {
            FieldKind::Url { schemes } => {
                *schemes = allowed.iter().map(|s| s.to_ascii_lowercase()).collect()
            }
            other => panic!("{}: schemes need a URL field, not {other:?}", self.name),
        }
        self
    }

    /// The field is required when `field` has the value `equals` (after defaults).
    pub fn required_when(mut self, field: &str, equals: impl Into<Value>) -> Self {
        self.required_when = Some(Condition::new(field, equals));
        self
    }

    /// The field must be absent when `field` has the value `equals` (after defaults).
    pub fn forbidden_when(mut self, field: &str, equals: impl Into<Value>) -> Self {
        self.forbidden_when = Some(Condition::new(field, equals));
        self
    }
}

impl Condition {
    pub fn new(field: &str, equals: impl Into<Value>) -> Self {
        Condition {
            field: field.to_string(),
            equals: equals.into(),
        }
    }
}

/// One problem with one field. `field` is the setting's name (callers prefix it with the
/// path of the settings object, e.g. `settings.throttle_from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    /// A stable machine-readable rule name, see [`rule`].
    pub rule: String,
    /// One sentence for a person, naming the field and the rule.
    pub message: String,
}

/// The rule names a [`FieldError`] may carry.
pub mod rule {
    pub const REQUIRED: &str = "required";
    pub const TYPE: &str = "type";
    pub const PATTERN: &str = "pattern";
    pub const MIN_LENGTH: &str = "min_length";
    pub const MAX_LENGTH: &str = "max_length";
    pub const MIN: &str = "min";
    pub const MAX: &str = "max";
    pub const ENUM: &str = "enum";
    pub const EMAIL: &str = "email";
    pub const BYTES: &str = "bytes";
    pub const TIME_OF_DAY: &str = "time_of_day";
    pub const URL: &str = "url";
    pub const URL_SCHEME: &str = "url_scheme";
    pub const REQUIRED_WHEN: &str = "required_when";
    pub const NOT_APPLICABLE: &str = "not_applicable";
    pub const UNKNOWN_FIELD: &str = "unknown_field";
}
