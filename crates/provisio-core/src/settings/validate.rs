//! Checking settings against their schema: normalising each value, applying defaults and
//! conditions, and collecting every problem rather than stopping at the first.

use std::collections::HashSet;
use std::fmt::Display;

use regex::Regex;
use serde_json::Value;

use super::bytes::{format_bytes, parse_bytes};
use super::{rule, Condition, Field, FieldError, FieldKind, Settings, SettingsSchema};

/// What a settings object stands for, which decides the checks that make sense on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The full effective settings of a record: defaults are applied to absent fields, then
    /// `required`, `required_when` and `forbidden_when` are enforced.
    Complete,
    /// A fragment that overrides or patches other settings: only the fields present are
    /// checked and normalised; nothing is required, defaulted or conditional, because the
    /// rest lives elsewhere and is checked once the pieces are merged.
    Partial,
}

/// Where a declared field stands while its settings are being validated.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Absent,
    Given(Value),
    Defaulted(Value),
    /// Given but rejected: conditions that look at it can be decided neither way.
    Invalid,
}

impl SettingsSchema {
    /// The declared field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// The names of the fields that hold secrets, which callers seal before storing and
    /// redact before showing.
    pub fn secret_fields(&self) -> impl Iterator<Item = &str> + '_ {
        self.fields
            .iter()
            .filter(|field| matches!(field.kind, FieldKind::Secret))
            .map(|field| field.name.as_str())
    }

    /// Whether the setting `name` holds a secret: a field declared `secret`, or, where the
    /// schema lets undeclared keys through, an undeclared key whose name looks like a
    /// credential ([`looks_like_credential`]). A declared field of another type is taken at
    /// its word.
    pub fn is_secret_name(&self, name: &str) -> bool {
        match self.field(name) {
            Some(field) => matches!(field.kind, FieldKind::Secret),
            None => self.allow_extra && super::looks_like_credential(name),
        }
    }

    /// The names of `settings` whose string values are sealed at rest and kept out of what
    /// is shown: the declared secret fields and the undeclared credential-like keys.
    pub fn secret_names<'a>(
        &'a self,
        settings: &'a Settings,
    ) -> impl Iterator<Item = &'a str> + 'a {
        settings
            .iter()
            .filter(|(name, value)| value.is_string() && self.is_secret_name(name))
            .map(|(name, _)| name.as_str())
    }

    /// Checks the schema itself: unique field names, patterns that compile, conditions that
    /// name other existing fields with values they can hold, valid defaults, non-empty enums
    /// and bounds in order. Modules' tests call this so a broken schema never ships.
    ///
    /// The error lists every problem, separated by `; `.
    pub fn check(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        for field in &self.fields {
            let name = &field.name;
            if name.is_empty() {
                problems.push(format!("the field labelled {:?} has no name", field.label));
            }
            if !names.insert(name.as_str()) {
                problems.push(format!("{name}: declared more than once"));
            }
            problems.extend(
                check_kind(&field.kind)
                    .into_iter()
                    .map(|problem| format!("{name}: {problem}")),
            );
            if let Some(default) = &field.default {
                if let Err(errors) = normalise(field, default) {
                    problems.push(format!(
                        "{name}: the default {default} is invalid ({})",
                        messages(&errors)
                    ));
                }
            }
            for (what, condition) in [
                ("required_when", &field.required_when),
                ("forbidden_when", &field.forbidden_when),
            ] {
                let Some(condition) = condition else { continue };
                match self.field(&condition.field) {
                    None => problems.push(format!(
                        "{name}: {what} names {:?}, which is not a field",
                        condition.field
                    )),
                    Some(other) if other.name == *name => {
                        problems.push(format!("{name}: {what} refers to the field itself"))
                    }
                    Some(other) if !condition.equals.is_null() => {
                        if let Err(errors) = normalise(other, &condition.equals) {
                            problems.push(format!(
                                "{name}: {what} compares {} with {}, a value it cannot hold ({})",
                                other.name,
                                condition.equals,
                                messages(&errors)
                            ));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Validates `input` and returns it normalised (see [`FieldKind`] for each type's
    /// normal form), or every problem found, in the order the schema declares its fields,
    /// with undeclared keys last.
    ///
    /// A `null` value counts as absent. An empty string or email list counts as missing for
    /// `required`, `required_when` and `forbidden_when`, and is not checked against patterns
    /// or lengths, since forms and panels send empty values for fields left unset. An empty
    /// secret is dropped altogether, as there is nothing to seal. Declared fields come out in
    /// schema order, followed by any extra keys (with [`SettingsSchema::allow_extra`]).
    pub fn validate(&self, input: &Settings, mode: Mode) -> Result<Settings, Vec<FieldError>> {
        let mut errors: Vec<(usize, FieldError)> = Vec::new();
        let mut slots: Vec<Slot> = self
            .fields
            .iter()
            .enumerate()
            .map(|(index, field)| match input.get(&field.name) {
                None | Some(Value::Null) => Slot::Absent,
                Some(value) => match normalise(field, value) {
                    Ok(Some(value)) => Slot::Given(value),
                    Ok(None) => Slot::Absent,
                    Err(found) => {
                        errors.extend(found.into_iter().map(|error| (index, error)));
                        Slot::Invalid
                    }
                },
            })
            .collect();

        let mut extra = Settings::new();
        for (key, value) in input {
            if self.field(key).is_some() {
                continue;
            }
            if self.allow_extra {
                extra.insert(key.clone(), value.clone());
            } else {
                let error = field_error(key, rule::UNKNOWN_FIELD, "is not a known setting");
                errors.push((self.fields.len(), error));
            }
        }

        if mode == Mode::Complete {
            self.apply_defaults(&mut slots, &mut errors);
            self.apply_conditions(&mut slots, &mut errors);
        }

        if !errors.is_empty() {
            // Stable, so each field's own errors keep the order they were found in.
            errors.sort_by_key(|(index, _)| *index);
            return Err(errors.into_iter().map(|(_, error)| error).collect());
        }
        let mut output: Settings = self
            .fields
            .iter()
            .zip(slots)
            .filter_map(|(field, slot)| match slot {
                Slot::Given(value) | Slot::Defaulted(value) => Some((field.name.clone(), value)),
                Slot::Absent | Slot::Invalid => None,
            })
            .collect();
        output.extend(extra);
        Ok(output)
    }

    fn apply_defaults(&self, slots: &mut [Slot], errors: &mut Vec<(usize, FieldError)>) {
        for (index, (field, slot)) in self.fields.iter().zip(slots.iter_mut()).enumerate() {
            let (Slot::Absent, Some(default)) = (&slot, &field.default) else {
                continue;
            };
            // Defaults go through the same normalisation as input, so a default written as
            // "10 GB" or "yes" in the schema ends up in normal form like everything else.
            *slot = match normalise(field, default) {
                Ok(Some(value)) => Slot::Defaulted(value),
                Ok(None) => Slot::Absent,
                Err(found) => {
                    errors.extend(found.into_iter().map(|error| (index, error)));
                    Slot::Invalid
                }
            };
        }
    }

    fn apply_conditions(&self, slots: &mut [Slot], errors: &mut Vec<(usize, FieldError)>) {
        // Every condition is decided on the settings as they stand after defaults, before
        // any default is withdrawn below, so the outcome does not depend on field order.
        let mut withdrawn = Vec::new();
        for (index, field) in self.fields.iter().enumerate() {
            let forbidden_by = field
                .forbidden_when
                .as_ref()
                .filter(|condition| self.holds(condition, slots) == Some(true));
            if let Some(condition) = forbidden_by {
                match &slots[index] {
                    Slot::Given(value) if !is_blank(&field.kind, value) => {
                        let error = field_error(
                            &field.name,
                            rule::NOT_APPLICABLE,
                            format!("not applicable when {}", describe(condition)),
                        );
                        errors.push((index, error));
                    }
                    // A default for a field that does not apply is not a setting anyone made.
                    Slot::Defaulted(_) => withdrawn.push(index),
                    _ => {}
                }
                continue;
            }

            let missing = match &slots[index] {
                Slot::Absent => true,
                Slot::Given(value) | Slot::Defaulted(value) => is_blank(&field.kind, value),
                Slot::Invalid => false,
            };
            if !missing {
                continue;
            }
            if field.required {
                errors.push((index, field_error(&field.name, rule::REQUIRED, "required")));
            } else if let Some(condition) = &field.required_when {
                if self.holds(condition, slots) == Some(true) {
                    let error = field_error(
                        &field.name,
                        rule::REQUIRED_WHEN,
                        format!("required when {}", describe(condition)),
                    );
                    errors.push((index, error));
                }
            }
        }
        for index in withdrawn {
            slots[index] = Slot::Absent;
        }
    }

    /// Whether `condition` holds, or `None` when it cannot be told because the field it looks
    /// at is undeclared or was itself rejected (its own error already says what is wrong).
    fn holds(&self, condition: &Condition, slots: &[Slot]) -> Option<bool> {
        let index = self
            .fields
            .iter()
            .position(|field| field.name == condition.field)?;
        match &slots[index] {
            Slot::Invalid => None,
            Slot::Absent => Some(condition.equals.is_null()),
            Slot::Given(value) | Slot::Defaulted(value) => {
                // Compare normal forms, so `equals: true` matches "yes" and `equals: "1 KB"`
                // matches 1024.
                let expected = normalise(&self.fields[index], &condition.equals)
                    .ok()
                    .flatten();
                Some(*value == expected.unwrap_or_else(|| condition.equals.clone()))
            }
        }
    }
}

/// The schema problems of one field's type-specific rules.
fn check_kind(kind: &FieldKind) -> Vec<String> {
    let mut problems = Vec::new();
    match kind {
        FieldKind::String {
            pattern,
            min_length,
            max_length,
        } => {
            if let Some(Err(error)) = pattern.as_deref().map(anchored) {
                problems.push(format!("the pattern does not compile: {error}"));
            }
            if let (Some(min), Some(max)) = (min_length, max_length) {
                if min > max {
                    problems.push(format!("min_length {min} exceeds max_length {max}"));
                }
            }
        }
        FieldKind::Integer {
            min: Some(min),
            max: Some(max),
        } if min > max => problems.push(format!("min {min} exceeds max {max}")),
        FieldKind::Bytes {
            min: Some(min),
            max: Some(max),
        } if min > max => problems.push(format!("min {min} exceeds max {max}")),
        FieldKind::Enum { values } => {
            if values.is_empty() {
                problems.push("the enumeration has no values".to_string());
            }
            let mut seen = HashSet::new();
            for value in values {
                if !seen.insert(value) {
                    problems.push(format!("the value {value:?} is listed twice"));
                }
            }
        }
        FieldKind::Url { schemes } if schemes.is_empty() => {
            problems.push("no URL scheme is allowed".to_string());
        }
        _ => {}
    }
    problems
}

/// Checks one present, non-null value and returns its normal form; `Ok(None)` means the
/// value amounts to nothing and the field is to be treated as absent.
fn normalise(field: &Field, value: &Value) -> Result<Option<Value>, Vec<FieldError>> {
    let name = field.name.as_str();
    let one = |error: FieldError| vec![error];
    let normal = match &field.kind {
        FieldKind::String {
            pattern,
            min_length,
            max_length,
        } => {
            let Value::String(text) = value else {
                return Err(one(type_error(name, "must be a string")));
            };
            check_string(name, text, pattern.as_deref(), *min_length, *max_length)?;
            value.clone()
        }
        FieldKind::Secret => match value {
            Value::String(text) if text.is_empty() => return Ok(None),
            Value::String(_) => value.clone(),
            Value::Object(_) if is_sealed(value) => value.clone(),
            _ => {
                let message = "must be a non-empty string or a sealed secret";
                return Err(one(type_error(name, message)));
            }
        },
        FieldKind::Integer { min, max } => {
            Value::from(integer(name, value, *min, *max).map_err(one)?)
        }
        FieldKind::Boolean => Value::Bool(boolean(name, value).map_err(one)?),
        FieldKind::Enum { values } => {
            let allowed = values
                .iter()
                .map(|value| format!("{value:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            match value {
                Value::String(text) if values.contains(text) => value.clone(),
                Value::String(text) => {
                    let message = format!("{text:?} is not one of {allowed}");
                    return Err(one(field_error(name, rule::ENUM, message)));
                }
                _ => {
                    let message = format!("must be a string, one of {allowed}");
                    return Err(one(type_error(name, message)));
                }
            }
        }
        FieldKind::EmailList => Value::from(email_list(name, value)?),
        FieldKind::Bytes { min, max } => Value::from(bytes(name, value, *min, *max).map_err(one)?),
        FieldKind::TimeOfDay => Value::from(time_of_day(name, value).map_err(one)?),
        FieldKind::Url { schemes } => Value::from(url(name, value, schemes).map_err(one)?),
        FieldKind::Json => match value {
            Value::Object(_) | Value::Array(_) => value.clone(),
            _ => {
                return Err(one(type_error(
                    name,
                    "must be a JSON object or array".to_string(),
                )))
            }
        },
    };
    Ok(Some(normal))
}

fn check_string(
    name: &str,
    text: &str,
    pattern: Option<&str>,
    min_length: Option<usize>,
    max_length: Option<usize>,
) -> Result<(), Vec<FieldError>> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let mut errors = Vec::new();
    let length = text.chars().count();
    if let Some(min) = min_length.filter(|min| length < *min) {
        let message = format!("must be at least {min} characters long");
        errors.push(field_error(name, rule::MIN_LENGTH, message));
    }
    if let Some(max) = max_length.filter(|max| length > *max) {
        let message = format!("must be at most {max} characters long");
        errors.push(field_error(name, rule::MAX_LENGTH, message));
    }
    if let Some(pattern) = pattern {
        match anchored(pattern) {
            Ok(regex) if regex.is_match(text) => {}
            Ok(_) => {
                let message = format!("{text:?} does not match the pattern {pattern}");
                errors.push(field_error(name, rule::PATTERN, message));
            }
            Err(error) => {
                let message =
                    format!("cannot be checked, the schema's pattern is invalid: {error}");
                errors.push(field_error(name, rule::PATTERN, message));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Compiles `pattern` so that it has to match the whole value, as a schema author expects
/// from a format such as a hostname, not merely somewhere inside it.
fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    // Compiled alone first, so that a pattern such as `a)|(b` cannot escape the group.
    Regex::new(pattern)?;
    Regex::new(&format!(r"\A(?:{pattern})\z"))
}

/// Whether a secret's value is one that [`crate::secret`] has already sealed, so that settings
/// read back from the store validate without being sealed twice.
fn is_sealed(value: &Value) -> bool {
    crate::secret::as_sealed(value).is_some_and(|sealed| !sealed.0.is_empty())
}

fn integer(
    name: &str,
    value: &Value,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<i64, FieldError> {
    // i128 holds every i64 and u64, so out-of-range input gets the bounds message rather
    // than a type error.
    let number: i128 = match value {
        Value::Number(number) => match (number.as_i64(), number.as_u64()) {
            (Some(n), _) => n.into(),
            (None, Some(n)) => n.into(),
            (None, None) => return Err(type_error(name, "must be an integer")),
        },
        Value::String(text) => {
            let text = text.trim();
            let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(type_error(name, "must be an integer"));
            }
            text.parse()
                .map_err(|_| type_error(name, "must be an integer that fits in 64 bits"))?
        }
        _ => return Err(type_error(name, "must be an integer")),
    };
    if let Some(min) = min.filter(|min| number < i128::from(*min)) {
        return Err(field_error(
            name,
            rule::MIN,
            format!("must be at least {min}"),
        ));
    }
    if let Some(max) = max.filter(|max| number > i128::from(*max)) {
        return Err(field_error(
            name,
            rule::MAX,
            format!("must be at most {max}"),
        ));
    }
    i64::try_from(number).map_err(|_| type_error(name, "must be an integer that fits in 64 bits"))
}

fn boolean(name: &str, value: &Value) -> Result<bool, FieldError> {
    let parsed = match value {
        Value::Bool(flag) => Some(*flag),
        Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or_else(|| {
        type_error(
            name,
            "must be a boolean (true/false, yes/no, on/off or 1/0)",
        )
    })
}

fn email_list(name: &str, value: &Value) -> Result<Vec<String>, Vec<FieldError>> {
    let not_a_list = || vec![type_error(name, "must be a list of email addresses")];
    let items: Vec<String> = match value {
        Value::String(text) if text.trim().is_empty() => Vec::new(),
        Value::String(text) => text
            .split(',')
            .map(|item| item.trim().to_string())
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(|item| item.trim().to_string()))
            .collect::<Option<_>>()
            .ok_or_else(not_a_list)?,
        _ => return Err(not_a_list()),
    };
    let mut errors = Vec::new();
    if items.iter().any(String::is_empty) {
        errors.push(field_error(name, rule::EMAIL, "contains an empty address"));
    }
    for item in items
        .iter()
        .filter(|item| !item.is_empty() && !is_plausible_email(item))
    {
        let message = format!("{item:?} is not a valid email address");
        errors.push(field_error(name, rule::EMAIL, message));
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

/// A deliberately loose check: full RFC 5322 allows addresses no mail relay a hosting
/// company uses will take, and the real test is whether mail arrives.
fn is_plausible_email(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    !local.is_empty()
        && !address.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(label_ok)
}

fn bytes(name: &str, value: &Value, min: Option<u64>, max: Option<u64>) -> Result<u64, FieldError> {
    let count = match value {
        Value::Number(number) => match (number.as_u64(), number.as_i64()) {
            (Some(count), _) => count,
            (None, Some(_)) => return Err(field_error(name, rule::BYTES, "must not be negative")),
            (None, None) => {
                let message = "must be a whole number of bytes or a size such as \"1.5 GB\"";
                return Err(field_error(name, rule::BYTES, message));
            }
        },
        Value::String(text) => {
            parse_bytes(text).map_err(|problem| field_error(name, rule::BYTES, problem))?
        }
        _ => {
            return Err(type_error(
                name,
                "must be a size, such as 1024 or \"10 GB\"",
            ))
        }
    };
    if let Some(min) = min.filter(|min| count < *min) {
        let message = format!("must be at least {}", human_bytes(min));
        return Err(field_error(name, rule::MIN, message));
    }
    if let Some(max) = max.filter(|max| count > *max) {
        let message = format!("must be at most {}", human_bytes(max));
        return Err(field_error(name, rule::MAX, message));
    }
    Ok(count)
}

/// `9999 GB (10736344498176 bytes)`: the unit the operator thinks in and the exact number
/// the value is compared with.
fn human_bytes(count: u64) -> String {
    let formatted = format_bytes(count);
    if formatted.ends_with(" bytes") {
        formatted
    } else {
        format!("{formatted} ({count} bytes)")
    }
}

fn time_of_day(name: &str, value: &Value) -> Result<String, FieldError> {
    let valid = |hours: u64, minutes: u64| hours < 24 && minutes < 60;
    let problem = |shown: String| {
        let message = format!("{shown} is not a time of day; use HHMM, e.g. 0130 or 1740");
        field_error(name, rule::TIME_OF_DAY, message)
    };
    match value {
        Value::String(text) => {
            let text = text.trim();
            let hhmm = (text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse::<u64>().ok())
                .flatten()
                .filter(|hhmm| valid(hhmm / 100, hhmm % 100));
            hhmm.map(|_| text.to_string())
                .ok_or_else(|| problem(format!("{text:?}")))
        }
        // TOML and JSON writers drop the leading zero of 0130, so a number is read as HHMM.
        Value::Number(number) => number
            .as_u64()
            .filter(|hhmm| *hhmm <= 2359 && valid(hhmm / 100, hhmm % 100))
            .map(|hhmm| format!("{hhmm:04}"))
            .ok_or_else(|| problem(number.to_string())),
        _ => Err(type_error(
            name,
            "must be a time of day as HHMM, e.g. 0130 or 1740",
        )),
    }
}

fn url(name: &str, value: &Value, schemes: &[String]) -> Result<String, FieldError> {
    let Value::String(text) = value else {
        return Err(type_error(name, "must be a URL"));
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    let parsed = url::Url::parse(text).map_err(|error| {
        field_error(
            name,
            rule::URL,
            format!("{text:?} is not a valid URL ({error})"),
        )
    })?;
    if !schemes
        .iter()
        .any(|scheme| scheme.eq_ignore_ascii_case(parsed.scheme()))
    {
        let message = format!("must be a URL with the scheme {}", schemes.join(" or "));
        return Err(field_error(name, rule::URL_SCHEME, message));
    }
    Ok(text.to_string())
}

/// Only text-like values can be empty-but-present; a `0` or `false` is a real setting.
fn is_blank(kind: &FieldKind, value: &Value) -> bool {
    match (kind, value) {
        (FieldKind::String { .. } | FieldKind::Url { .. }, Value::String(text)) => {
            text.trim().is_empty()
        }
        (FieldKind::EmailList, Value::Array(items)) => items.is_empty(),
        _ => false,
    }
}

/// `throttle_mode is "specified_time"`.
fn describe(condition: &Condition) -> String {
    format!("{} is {}", condition.field, condition.equals)
}

fn field_error(field: &str, rule: &str, message: impl Display) -> FieldError {
    FieldError {
        field: field.to_string(),
        rule: rule.to_string(),
        message: format!("{field}: {message}"),
    }
}

fn type_error(field: &str, message: impl Display) -> FieldError {
    field_error(field, rule::TYPE, message)
}

fn messages(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|error| error.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn settings(value: Value) -> Settings {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn one(field: Field, value: Value) -> Result<Settings, Vec<FieldError>> {
        let schema = SettingsSchema::new(vec![field]);
        schema.check().expect("test schema is valid");
        schema.validate(&settings(json!({ "f": value })), Mode::Partial)
    }

    fn accepted(field: Field, value: Value) -> Value {
        match one(field, value.clone()) {
            Ok(mut out) => out.remove("f").expect("field kept"),
            Err(errors) => panic!("{value} rejected: {errors:?}"),
        }
    }

    /// The single error for `value`, after checking it names the field.
    fn rejected(field: Field, value: Value) -> FieldError {
        let errors = one(field, value.clone()).expect_err(&format!("{value} accepted"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let error = errors.into_iter().next().unwrap();
        assert_eq!(error.field, "f");
        assert!(error.message.starts_with("f: "), "{}", error.message);
        error
    }

    fn rule_of(field: Field, value: Value) -> String {
        rejected(field, value).rule
    }

    #[test]
    fn strings_are_checked_whole_against_the_pattern_and_lengths() {
        let code = || Field::string("f", "F").pattern("[a-z]+[0-9]");
        assert_eq!(accepted(code(), json!("abc1")), json!("abc1"));
        // Unanchored, `[a-z]+[0-9]` would find a match inside both of these.
        assert_eq!(rule_of(code(), json!("abc12")), rule::PATTERN);
        assert_eq!(rule_of(code(), json!("-abc1")), rule::PATTERN);
        let alternation = || Field::string("f", "F").pattern("a|b");
        assert_eq!(rule_of(alternation(), json!("ab")), rule::PATTERN);
        assert_eq!(accepted(alternation(), json!("b")), json!("b"));

        let sized = || Field::string("f", "F").min_length(2).max_length(3);
        assert_eq!(accepted(sized(), json!("né")), json!("né"));
        assert_eq!(accepted(sized(), json!("日本語")), json!("日本語"));
        assert_eq!(rule_of(sized(), json!("x")), rule::MIN_LENGTH);
        assert_eq!(rule_of(sized(), json!("abcd")), rule::MAX_LENGTH);
        assert_eq!(rule_of(sized(), json!(12)), rule::TYPE);
        assert_eq!(rejected(sized(), json!(12)).message, "f: must be a string");
        // Blank means unset, so formats do not apply to it.
        assert_eq!(accepted(code(), json!("")), json!(""));
    }

    #[test]
    fn secrets_accept_text_or_a_sealed_marker() {
        let secret = || Field::secret("f", "F");
        assert_eq!(accepted(secret(), json!("hunter2")), json!("hunter2"));
        let sealed = json!({ "$sealed": "bm9uY2UrY2lwaGVy/w==" });
        assert_eq!(accepted(secret(), sealed.clone()), sealed);
        assert_eq!(one(secret(), json!("")).unwrap(), Settings::new());
        for bad in [
            json!({ "$sealed": "abc", "extra": 1 }),
            json!({ "$sealed": 5 }),
            json!({ "$sealed": "" }),
            json!({ "$sealed": "not base64!" }),
            json!({ "sealed": "abc" }),
            json!(42),
            json!(["a"]),
        ] {
            assert_eq!(rule_of(secret(), bad), rule::TYPE);
        }
        let schema = SettingsSchema::new(vec![
            Field::string("user", "User"),
            secret(),
            Field::secret("key", "Key"),
        ]);
        assert_eq!(schema.secret_fields().collect::<Vec<_>>(), ["f", "key"]);
    }

    #[test]
    fn integers_accept_numbers_and_numeric_strings_within_inclusive_bounds() {
        let port = || Field::integer("f", "F", Some(1), Some(65535));
        assert_eq!(accepted(port(), json!(1)), json!(1));
        assert_eq!(accepted(port(), json!(65535)), json!(65535));
        assert_eq!(accepted(port(), json!("6060")), json!(6060));
        assert_eq!(accepted(port(), json!(" +42 ")), json!(42));
        let error = rejected(port(), json!(0));
        assert_eq!(
            (error.rule.as_str(), error.message.as_str()),
            (rule::MIN, "f: must be at least 1")
        );
        let error = rejected(port(), json!("70000"));
        assert_eq!(
            (error.rule.as_str(), error.message.as_str()),
            (rule::MAX, "f: must be at most 65535")
        );
        assert_eq!(rule_of(port(), json!(u64::MAX)), rule::MAX);
        let error = rejected(port(), json!("abc"));
        assert_eq!(
            (error.rule.as_str(), error.message.as_str()),
            (rule::TYPE, "f: must be an integer")
        );
        for bad in [
            json!(1.5),
            json!("1.0"),
            json!(""),
            json!("-"),
            json!("1 2"),
            json!(true),
        ] {
            assert_eq!(rule_of(port(), bad), rule::TYPE);
        }
        let any = || Field::integer("f", "F", None, None);
        assert_eq!(accepted(any(), json!("-17")), json!(-17));
        assert_eq!(rule_of(any(), json!(u64::MAX)), rule::TYPE);
        assert_eq!(rule_of(any(), json!("99999999999999999999")), rule::TYPE);
    }

    #[test]
    fn booleans_accept_the_usual_spellings() {
        let flag = || Field::boolean("f", "F");
        for yes in [
            json!(true),
            json!("true"),
            json!("YES"),
            json!("On"),
            json!("1"),
        ] {
            assert_eq!(accepted(flag(), yes), json!(true));
        }
        for no in [
            json!(false),
            json!("False"),
            json!("no"),
            json!("OFF"),
            json!("0"),
        ] {
            assert_eq!(accepted(flag(), no), json!(false));
        }
        for bad in [json!("maybe"), json!(""), json!(1), json!([])] {
            assert_eq!(rule_of(flag(), bad), rule::TYPE);
        }
    }

    #[test]
    fn enumerations_list_the_allowed_values() {
        let protocol = || Field::enumeration("f", "F", &["http", "https"]);
        assert_eq!(accepted(protocol(), json!("https")), json!("https"));
        let error = rejected(protocol(), json!("ftp"));
        assert_eq!(error.rule, rule::ENUM);
        assert_eq!(error.message, r#"f: "ftp" is not one of "http", "https""#);
        assert_eq!(rule_of(protocol(), json!("HTTP")), rule::ENUM);
        assert_eq!(rule_of(protocol(), json!(1)), rule::TYPE);
    }

    #[test]
    fn email_lists_become_arrays() {
        let emails = || Field::email_list("f", "F");
        assert_eq!(
            accepted(emails(), json!(" a@example.com ,b.c+d@mail.example.org")),
            json!(["a@example.com", "b.c+d@mail.example.org"])
        );
        assert_eq!(
            accepted(emails(), json!(["x@example.com"])),
            json!(["x@example.com"])
        );
        assert_eq!(accepted(emails(), json!("  ")), json!([]));
        let error = rejected(emails(), json!("ops@example.com, not-an-email"));
        assert_eq!(error.rule, rule::EMAIL);
        assert_eq!(
            error.message,
            r#"f: "not-an-email" is not a valid email address"#
        );
        for bad in [
            "a@b",
            "@example.com",
            "a@.example.com",
            "a@example..com",
            "a@@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@-x.com",
        ] {
            assert_eq!(rule_of(emails(), json!(bad)), rule::EMAIL, "{bad}");
        }
        assert_eq!(
            rule_of(emails(), json!("a@example.com,,b@example.com")),
            rule::EMAIL
        );
        assert_eq!(rule_of(emails(), json!("a@example.com,")), rule::EMAIL);
        assert_eq!(rule_of(emails(), json!(["a@example.com", 3])), rule::TYPE);
        assert_eq!(rule_of(emails(), json!(5)), rule::TYPE);
        let errors = one(emails(), json!("x, y@example.com, z")).unwrap_err();
        assert_eq!(errors.len(), 2, "each bad address is reported: {errors:?}");
    }

    #[test]
    fn byte_sizes_become_integers_with_readable_bounds() {
        const GB: u64 = 1 << 30;
        let rate = || Field::bytes("f", "F", Some(1024), Some(9999 * GB));
        assert_eq!(accepted(rate(), json!("10 GB")), json!(10 * GB));
        assert_eq!(accepted(rate(), json!(1024)), json!(1024));
        assert_eq!(accepted(rate(), json!("9999 GB")), json!(9999 * GB));
        assert_eq!(accepted(rate(), json!("1.5 GB")), json!(GB + GB / 2));
        let error = rejected(rate(), json!("1000"));
        assert_eq!(error.rule, rule::MIN);
        assert_eq!(error.message, "f: must be at least 1 KB (1024 bytes)");
        let error = rejected(rate(), json!("10000 GB"));
        assert_eq!(error.rule, rule::MAX);
        assert_eq!(
            error.message,
            "f: must be at most 9999 GB (10736344498176 bytes)"
        );
        let small = || Field::bytes("f", "F", Some(1000), None);
        assert_eq!(
            rejected(small(), json!(999)).message,
            "f: must be at least 1000 bytes"
        );
        for bad in [
            json!("lots"),
            json!("10 XB"),
            json!(-1),
            json!(1.5),
            json!("-1 GB"),
        ] {
            assert_eq!(rule_of(rate(), bad), rule::BYTES);
        }
        assert_eq!(rule_of(rate(), json!(true)), rule::TYPE);
    }

    #[test]
    fn times_of_day_are_four_digit_hhmm() {
        let time = || Field::time_of_day("f", "F");
        for good in ["0000", "0130", "1740", "2359"] {
            assert_eq!(accepted(time(), json!(good)), json!(good));
        }
        assert_eq!(accepted(time(), json!(130)), json!("0130"));
        assert_eq!(accepted(time(), json!(0)), json!("0000"));
        assert_eq!(accepted(time(), json!(2359)), json!("2359"));
        for bad in [
            json!("2460"),
            json!("2400"),
            json!("1760"),
            json!("130"),
            json!("25:00"),
            json!("01:30"),
            json!("+130"),
            json!(""),
            json!(2400),
            json!(1299.5),
            json!(175),
            json!(-1),
        ] {
            assert_eq!(rule_of(time(), bad.clone()), rule::TIME_OF_DAY, "{bad}");
        }
        assert!(rejected(time(), json!("2460")).message.contains("\"2460\""));
        assert_eq!(rule_of(time(), json!(true)), rule::TYPE);
    }

    #[test]
    fn urls_are_parsed_and_their_scheme_checked() {
        let web = || Field::url("f", "F");
        let given = json!("  https://panel.example.com:2087/api?x=1 ");
        assert_eq!(
            accepted(web(), given),
            json!("https://panel.example.com:2087/api?x=1")
        );
        assert_eq!(rule_of(web(), json!("not a url")), rule::URL);
        assert_eq!(rule_of(web(), json!("/relative/path")), rule::URL);
        let error = rejected(web(), json!("ftp://files.example.com"));
        assert_eq!(error.rule, rule::URL_SCHEME);
        assert_eq!(
            error.message,
            "f: must be a URL with the scheme http or https"
        );
        assert_eq!(
            accepted(web(), json!("HTTP://example.com")),
            json!("HTTP://example.com")
        );
        let sftp = || Field::url("f", "F").schemes(&["sftp"]);
        assert_eq!(accepted(sftp(), json!("sftp://h/x")), json!("sftp://h/x"));
        assert_eq!(rule_of(sftp(), json!("https://h/x")), rule::URL_SCHEME);
        assert_eq!(rule_of(web(), json!(80)), rule::TYPE);
    }

    fn throttle_schema() -> SettingsSchema {
        SettingsSchema::new(vec![
            Field::string("host", "Host").required(),
            Field::integer("port", "Port", Some(1), Some(65535)).default_value(6060),
            Field::boolean("throttle", "Throttle").default_value("no"),
            Field::enumeration("mode", "Mode", &["always", "specified_time"]),
            Field::time_of_day("from", "From").required_when("mode", "specified_time"),
            Field::bytes("rate", "Rate", None, None).required_when("throttle", true),
            Field::enumeration("action", "Action", &["reseller", "customer"])
                .default_value("customer"),
            Field::string("reseller", "Reseller").forbidden_when("action", "reseller"),
            Field::boolean("report", "Report")
                .default_value(true)
                .forbidden_when("action", "reseller"),
        ])
    }

    #[test]
    fn complete_settings_get_defaults_and_come_out_in_schema_order() {
        let schema = throttle_schema();
        schema.check().unwrap();
        let input = settings(json!({ "rate": null, "host": "h", "throttle": "off" }));
        let out = schema.validate(&input, Mode::Complete).unwrap();
        assert_eq!(
            Value::Object(out.clone()),
            json!({ "host": "h", "port": 6060, "throttle": false, "action": "customer", "report": true })
        );
        assert_eq!(
            out.keys().collect::<Vec<_>>(),
            ["host", "port", "throttle", "action", "report"]
        );
        // Given values win over defaults.
        let input = settings(json!({ "host": "h", "port": "8080" }));
        assert_eq!(
            schema.validate(&input, Mode::Complete).unwrap()["port"],
            json!(8080)
        );
    }

    #[test]
    fn required_fields_must_be_present_and_not_blank() {
        let schema = throttle_schema();
        for input in [json!({}), json!({ "host": null }), json!({ "host": "   " })] {
            let errors = schema
                .validate(&settings(input), Mode::Complete)
                .unwrap_err();
            assert_eq!(errors, [field_error("host", rule::REQUIRED, "required")]);
            assert_eq!(errors[0].message, "host: required");
        }
    }

    #[test]
    fn conditions_look_at_normalised_values() {
        let schema = throttle_schema();
        let input = settings(json!({ "host": "h", "mode": "specified_time", "throttle": "YES" }));
        let errors = schema.validate(&input, Mode::Complete).unwrap_err();
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.rule.as_str()))
            .collect();
        assert_eq!(
            found,
            [("from", rule::REQUIRED_WHEN), ("rate", rule::REQUIRED_WHEN)]
        );
        assert_eq!(
            errors[0].message,
            r#"from: required when mode is "specified_time""#
        );
        assert_eq!(errors[1].message, "rate: required when throttle is true");

        let input = settings(json!({ "host": "h", "mode": "always", "throttle": "0" }));
        assert!(schema.validate(&input, Mode::Complete).is_ok());
        let input = settings(json!({ "host": "h", "mode": "specified_time", "from": 130 }));
        let out = schema.validate(&input, Mode::Complete).unwrap();
        assert_eq!(out["from"], json!("0130"));
    }

    #[test]
    fn a_condition_on_a_rejected_field_is_not_decided() {
        let schema = throttle_schema();
        let input = settings(json!({ "host": "h", "throttle": "perhaps" }));
        let errors = schema.validate(&input, Mode::Complete).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            (errors[0].field.as_str(), errors[0].rule.as_str()),
            ("throttle", rule::TYPE)
        );
    }

    #[test]
    fn forbidden_fields_are_rejected_and_their_defaults_withdrawn() {
        let schema = throttle_schema();
        let input = settings(json!({ "host": "h", "action": "reseller", "reseller": "acme" }));
        let errors = schema.validate(&input, Mode::Complete).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].rule, rule::NOT_APPLICABLE);
        assert_eq!(
            errors[0].message,
            r#"reseller: not applicable when action is "reseller""#
        );

        // An empty value is what a form sends for an untouched field: not a setting.
        let input = settings(json!({ "host": "h", "action": "reseller", "reseller": "" }));
        let out = schema.validate(&input, Mode::Complete).unwrap();
        assert!(
            !out.contains_key("report"),
            "default of a forbidden field is withdrawn"
        );

        let input = settings(json!({ "host": "h", "action": "customer", "reseller": "acme" }));
        let out = schema.validate(&input, Mode::Complete).unwrap();
        assert_eq!(
            (&out["reseller"], &out["report"]),
            (&json!("acme"), &json!(true))
        );
    }

    #[test]
    fn unknown_fields_are_errors_unless_extras_are_allowed() {
        let schema = throttle_schema();
        let input = settings(json!({ "zeta": 1, "host": "h", "alpha": null }));
        let errors = schema.validate(&input, Mode::Partial).unwrap_err();
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.rule.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("zeta", rule::UNKNOWN_FIELD),
                ("alpha", rule::UNKNOWN_FIELD)
            ]
        );
        assert_eq!(errors[0].message, "zeta: is not a known setting");

        let schema = throttle_schema().allow_extra();
        let input = settings(json!({ "zeta": { "deep": [1] }, "host": "h", "alpha": null }));
        let out = schema.validate(&input, Mode::Complete).unwrap();
        assert_eq!(out["zeta"], json!({ "deep": [1] }));
        assert_eq!(out["alpha"], Value::Null);
        assert_eq!(out.keys().next_back().map(String::as_str), Some("alpha"));
    }

    #[test]
    fn every_error_is_reported_in_schema_order() {
        let schema = throttle_schema();
        let input = settings(json!({
            "bogus": true,
            "reseller": "acme",
            "rate": "many",
            "port": 0,
            "action": "reseller",
            "mode": "specified_time",
        }));
        let errors = schema.validate(&input, Mode::Complete).unwrap_err();
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.rule.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("host", rule::REQUIRED),
                ("port", rule::MIN),
                ("from", rule::REQUIRED_WHEN),
                ("rate", rule::BYTES),
                ("reseller", rule::NOT_APPLICABLE),
                ("bogus", rule::UNKNOWN_FIELD),
            ]
        );
    }

    #[test]
    fn partial_settings_check_only_what_is_present() {
        let schema = throttle_schema();
        let input =
            settings(json!({ "mode": "specified_time", "reseller": "acme", "action": "reseller" }));
        let out = schema.validate(&input, Mode::Partial).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({ "mode": "specified_time", "action": "reseller", "reseller": "acme" })
        );
        let input = settings(json!({ "port": "99999", "throttle": null }));
        let errors = schema.validate(&input, Mode::Partial).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].rule, rule::MAX);
        assert_eq!(
            schema.validate(&Settings::new(), Mode::Partial),
            Ok(Settings::new())
        );
    }

    #[test]
    fn field_finds_declared_fields() {
        let schema = throttle_schema();
        assert_eq!(schema.field("port").map(|f| f.label.as_str()), Some("Port"));
        assert!(schema.field("nope").is_none());
    }

    #[test]
    fn check_finds_schema_mistakes() {
        let problems = |fields: Vec<Field>| SettingsSchema::new(fields).check().unwrap_err();
        assert!(
            problems(vec![Field::boolean("a", "A"), Field::boolean("a", "A")])
                .contains("more than once")
        );
        assert!(problems(vec![Field::string("a", "A").pattern("(unclosed")])
            .contains("does not compile"));
        assert!(
            problems(vec![Field::string("a", "A").pattern("a)|(b")]).contains("does not compile")
        );
        assert!(problems(vec![Field::enumeration("a", "A", &[])]).contains("no values"));
        assert!(problems(vec![Field::enumeration("a", "A", &["x", "x"])]).contains("twice"));
        assert!(
            problems(vec![Field::integer("a", "A", None, None).default_value("x")])
                .contains("default")
        );
        assert!(problems(vec![Field::integer("a", "A", Some(5), Some(1))]).contains("exceeds"));
        assert!(problems(vec![Field::bytes("a", "A", Some(5), Some(1))]).contains("exceeds"));
        assert!(
            problems(vec![Field::time_of_day("a", "A").default_value("2500")]).contains("default")
        );
        assert!(problems(vec![Field::url("a", "A").schemes(&[])]).contains("scheme"));
        assert!(
            problems(vec![Field::boolean("a", "A").required_when("b", true)])
                .contains("not a field")
        );
        assert!(
            problems(vec![Field::boolean("a", "A").forbidden_when("a", true)]).contains("itself")
        );
        let unreachable = vec![
            Field::enumeration("mode", "Mode", &["x"]),
            Field::boolean("a", "A").required_when("mode", "y"),
        ];
        assert!(problems(unreachable).contains("cannot hold"));
        let all = problems(vec![
            Field::enumeration("a", "A", &[]),
            Field::enumeration("a", "A", &[]),
        ]);
        assert_eq!(all.matches("; ").count(), 2, "{all}");
        throttle_schema().check().unwrap();
        SettingsSchema::default().check().unwrap();
    }

    #[test]
    fn schemas_round_trip_through_json() {
        let schema = throttle_schema().allow_extra();
        let json = serde_json::to_value(&schema).unwrap();
        assert_eq!(json["fields"][1]["type"], "integer");
        let back: SettingsSchema = serde_json::from_value(json).unwrap();
        assert_eq!(back, schema);
    }
}
