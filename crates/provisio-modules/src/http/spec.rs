//! The per-action request specs of an `http` server (`settings.actions`): one parser that
//! both builds the spec a call uses and reports every structural problem with its exact
//! field path (`actions.create.url`) for `check_settings`.

use std::collections::BTreeMap;

use provisio_core::module::Action;
use provisio_core::settings::{rule as core_rule, FieldError};
use reqwest::Method;
use serde_json::{Map, Value};

use super::template::{sole_expression, Templates, ROOTS};

/// Rule names this module adds to those of `provisio_core::settings::rule`.
pub mod rule {
    /// A template that does not compile or names an unknown variable.
    pub const TEMPLATE: &str = "template";
    /// A JSON pointer that does not start with `/` or has a bad `~` escape.
    pub const POINTER: &str = "pointer";
    /// An HTTP status outside 100..=599.
    pub const STATUS_CODE: &str = "status_code";
    /// An HTTP status listed in more than one `errors` class.
    pub const DUPLICATE: &str = "duplicate";
    /// A header name that HTTP does not allow.
    pub const HEADER_NAME: &str = "header_name";
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Keys that map the response of one particular action, with that action.
const REPLY_KEYS: [(&str, &str); 4] = [
    ("account", "lookup"),
    ("accounts", "list_accounts"),
    ("usage", "usage"),
    ("login_url", "login_url"),
];

/// How to send one action and read its answer.
#[derive(Debug, Clone)]
pub(crate) struct ActionSpec {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub success: Success,
    pub errors: ErrorRules,
    pub outputs: Vec<(String, String)>,
    pub reply: ReplyMap,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Success {
    /// `None`: any 2xx.
    pub status: Option<Vec<u16>>,
    /// The value at the pointer must equal the JSON value.
    pub condition: Option<(String, Value)>,
}

impl Success {
    pub(crate) fn accepts(&self, status: u16) -> bool {
        match &self.status {
            Some(list) => list.contains(&status),
            None => (200..300).contains(&status),
        }
    }
}

/// Overrides of the default classification of failing statuses.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorRules {
    pub transient: Vec<u16>,
    pub permanent: Vec<u16>,
    pub unknown: Vec<u16>,
    /// `lookup` only: statuses that mean "no such account".
    pub not_found: Vec<u16>,
}

/// What to read from a successful answer, besides `outputs`.
#[derive(Debug, Clone)]
pub(crate) enum ReplyMap {
    Nothing,
    Account(AccountMap),
    Accounts { map: AccountMap, next: Option<Next> },
    Usage { map: UsageMap, next: Option<Next> },
    LoginUrl(String),
}

/// Pointers into one account object, found at `pointer` (the whole body when `None`).
#[derive(Debug, Clone)]
pub(crate) struct AccountMap {
    pub pointer: Option<String>,
    pub username: String,
    pub status: Option<String>,
    /// Remote status values (as text: `true`, `0`, `ACTIVE`) to Provisio's names.
    pub statuses: BTreeMap<String, String>,
    pub package: Option<String>,
}

/// Where the cursor of the next page comes from.
#[derive(Debug, Clone)]
pub(crate) enum Next {
    Pointer(String),
    /// Rendered with the request and `response` (the parsed body); empty means no next page.
    Template(String),
}

#[derive(Debug, Clone)]
pub(crate) struct UsageMap {
    pub pointer: Option<String>,
    pub username: String,
    pub metrics: Vec<(String, MetricMap)>,
}

#[derive(Debug, Clone)]
pub(crate) struct MetricMap {
    pub used: String,
    pub limit: Option<String>,
    pub unit: Option<String>,
}

/// Checks the whole `actions` setting; empty when it is fine.
pub(crate) fn check_actions(templates: &Templates, actions: &Value) -> Vec<FieldError> {
    let mut c = Checker::new(templates);
    let Some(map) = c.object("actions", actions) else {
        return c.errors;
    };
    for (name, spec) in map {
        let path = format!("actions.{name}");
        // Any key that is not a standard action is a custom action, named by the one rule.
        if let Err(e) = Action::parse(name) {
            c.fail(&path, core_rule::PATTERN, e.to_string());
            continue;
        }
        c.action(name, spec);
    }
    c.errors
}

/// Parses one action's spec; the errors are those [`check_actions`] reports for it.
pub(crate) fn parse_action(
    templates: &Templates,
    name: &str,
    spec: &Value,
) -> Result<ActionSpec, Vec<FieldError>> {
    let mut c = Checker::new(templates);
    match c.action(name, spec) {
        Some(parsed) if c.errors.is_empty() => Ok(parsed),
        _ => Err(c.errors),
    }
}

/// Collects errors while parsing, so one pass reports everything.
struct Checker<'t> {
    templates: &'t Templates,
    errors: Vec<FieldError>,
}

impl<'t> Checker<'t> {
    fn new(templates: &'t Templates) -> Self {
        Self {
            templates,
            errors: Vec::new(),
        }
    }

    fn fail(&mut self, field: &str, rule: &str, message: impl std::fmt::Display) {
        self.errors.push(FieldError {
            field: field.to_string(),
            rule: rule.to_string(),
            message: format!("{field}: {message}"),
        });
    }

    fn action(&mut self, name: &str, spec: &Value) -> Option<ActionSpec> {
        let path = format!("actions.{name}");
        let map = self.object(&path, spec)?;
        let reply_key = REPLY_KEYS
            .iter()
            .find(|(_, action)| *action == name)
            .map(|(key, _)| *key);
        for key in map.keys() {
            let common = [
                "method", "url", "headers", "query", "body", "success", "errors", "outputs",
            ];
            if common.contains(&key.as_str()) || Some(key.as_str()) == reply_key {
                continue;
            }
            let field = format!("{path}.{key}");
            match REPLY_KEYS.iter().find(|(k, _)| k == key) {
                Some((_, only)) => self.fail(
                    &field,
                    core_rule::NOT_APPLICABLE,
                    format!("applies only to the {only} action"),
                ),
                None => self.fail(&field, core_rule::UNKNOWN_FIELD, "is not a known key"),
            }
        }

        let method = self.method(&path, map.get("method"));
        let url = match map.get("url") {
            None => {
                self.fail(&format!("{path}.url"), core_rule::REQUIRED, "required");
                None
            }
            Some(v) => self.template(&format!("{path}.url"), v),
        };
        let headers = self.headers(&format!("{path}.headers"), map.get("headers"));
        let query = self.templates_map(&format!("{path}.query"), map.get("query"));
        let body = map.get("body").map(|b| {
            self.body(&format!("{path}.body"), b);
            b.clone()
        });
        let success = self.success(&format!("{path}.success"), map.get("success"));
        let errors = self.error_rules(&format!("{path}.errors"), map.get("errors"), name);
        let outputs = self.outputs(&format!("{path}.outputs"), map.get("outputs"));
        let reply = match reply_key {
            None => Some(ReplyMap::Nothing),
            Some(key) => {
                let field = format!("{path}.{key}");
                match map.get(key) {
                    None => {
                        self.fail(&field, core_rule::REQUIRED, "required");
                        None
                    }
                    Some(v) => self.reply(&field, key, v),
                }
            }
        };
        Some(ActionSpec {
            method: method?,
            url: url?,
            headers: headers?,
            query: query?,
            body,
            success: success?,
            errors: errors?,
            outputs: outputs?,
            reply: reply?,
        })
    }

    fn object<'v>(&mut self, field: &str, value: &'v Value) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            _ => {
                self.fail(field, core_rule::TYPE, "must be a JSON object");
                None
            }
        }
    }

    /// Reports keys of an object other than `allowed`.
    fn only_keys(&mut self, field: &str, map: &Map<String, Value>, allowed: &[&str]) {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                let message = format!("is not a known key (known: {})", allowed.join(", "));
                self.fail(&format!("{field}.{key}"), core_rule::UNKNOWN_FIELD, message);
            }
        }
    }

    fn string<'v>(&mut self, field: &str, value: &'v Value) -> Option<&'v str> {
        match value {
            Value::String(s) => Some(s),
            _ => {
                self.fail(field, core_rule::TYPE, "must be a string");
                None
            }
        }
    }

    fn method(&mut self, path: &str, value: Option<&Value>) -> Option<Method> {
        let field = format!("{path}.method");
        let Some(value) = value else {
            self.fail(&field, core_rule::REQUIRED, "required");
            return None;
        };
        let text = self.string(&field, value)?;
        let upper = text.to_ascii_uppercase();
        if !METHODS.contains(&upper.as_str()) {
            let message = format!("must be one of {}", METHODS.join(", "));
            self.fail(&field, core_rule::ENUM, message);
            return None;
        }
        Method::from_bytes(upper.as_bytes()).ok()
    }

    fn template(&mut self, field: &str, value: &Value) -> Option<String> {
        self.template_with(field, value, &ROOTS)
    }

    fn template_with(&mut self, field: &str, value: &Value, roots: &[&str]) -> Option<String> {
        let text = self.string(field, value)?;
        match self.templates.check(text, roots) {
            Ok(()) => Some(text.to_string()),
            Err(message) => {
                self.fail(field, rule::TEMPLATE, message);
                None
            }
        }
    }

    /// An optional object of text templates, kept in order.
    fn templates_map(
        &mut self,
        field: &str,
        value: Option<&Value>,
    ) -> Option<Vec<(String, String)>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let map = self.object(field, value)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (key, v) in map {
            match self.template(&format!("{field}.{key}"), v) {
                Some(t) => out.push((key.clone(), t)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn headers(&mut self, field: &str, value: Option<&Value>) -> Option<Vec<(String, String)>> {
        let Some(Value::Object(map)) = value else {
            return self.templates_map(field, value);
        };
        let mut ok = true;
        for name in map.keys() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                let message = "is not a valid HTTP header name";
                self.fail(&format!("{field}.{name}"), rule::HEADER_NAME, message);
                ok = false;
            }
        }
        let headers = self.templates_map(field, value);
        if ok {
            headers
        } else {
            None
        }
    }

    /// Checks every string leaf of a body template; typed leaves as expressions.
    fn body(&mut self, field: &str, value: &Value) {
        match value {
            Value::String(text) => {
                let checked = match sole_expression(text) {
                    Some(expr) => self.templates.check_expression(expr, &ROOTS),
                    None => self.templates.check(text, &ROOTS),
                };
                if let Err(message) = checked {
                    self.fail(field, rule::TEMPLATE, message);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.body(&format!("{field}.{i}"), item);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    self.body(&format!("{field}.{key}"), item);
                }
            }
            _ => {}
        }
    }

    fn pointer(&mut self, field: &str, value: &Value) -> Option<String> {
        let text = self.string(field, value)?;
        if !text.starts_with('/') {
            self.fail(field, rule::POINTER, "a JSON pointer must start with /");
            return None;
        }
        // RFC 6901: `~` only as `~0` (a tilde) or `~1` (a slash).
        let bad_escape = text
            .split('~')
            .skip(1)
            .any(|rest| !rest.starts_with(['0', '1']));
        if bad_escape {
            self.fail(field, rule::POINTER, "~ must be followed by 0 or 1");
            return None;
        }
        Some(text.to_string())
    }

    fn optional_pointer(&mut self, field: &str, value: Option<&Value>) -> Option<Option<String>> {
        match value {
            None => Some(None),
            Some(v) => self.pointer(field, v).map(Some),
        }
    }

    fn required_pointer(&mut self, field: &str, value: Option<&Value>) -> Option<String> {
        match value {
            None => {
                self.fail(field, core_rule::REQUIRED, "required");
                None
            }
            Some(v) => self.pointer(field, v),
        }
    }

    fn statuses(&mut self, field: &str, value: &Value) -> Option<Vec<u16>> {
        let Value::Array(items) = value else {
            self.fail(
                field,
                core_rule::TYPE,
                "must be an array of HTTP status codes",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match item.as_u64() {
                Some(code @ 100..=599) => out.push(code as u16),
                Some(_) => {
                    let message = "must be an HTTP status code from 100 to 599";
                    self.fail(&format!("{field}.{i}"), rule::STATUS_CODE, message);
                    ok = false;
                }
                None => {
                    let message = "must be an HTTP status code (an integer)";
                    self.fail(&format!("{field}.{i}"), core_rule::TYPE, message);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn success(&mut self, field: &str, value: Option<&Value>) -> Option<Success> {
        let Some(value) = value else {
            return Some(Success::default());
        };
        let map = self.object(field, value)?;
        self.only_keys(field, map, &["status", "pointer", "equals"]);
        let status = match map.get("status") {
            None => Some(None),
            Some(v) => self.statuses(&format!("{field}.status"), v).map(Some),
        };
        let pointer = self.optional_pointer(&format!("{field}.pointer"), map.get("pointer"));
        let equals = map.get("equals").cloned();
        if equals.is_some() && map.get("pointer").is_none() {
            let message = "required when success.equals is given";
            self.fail(&format!("{field}.pointer"), core_rule::REQUIRED, message);
            return None;
        }
        let condition = pointer?.map(|p| (p, equals.unwrap_or(Value::Bool(true))));
        Some(Success {
            status: status?,
            condition,
        })
    }

    fn error_rules(
        &mut self,
        field: &str,
        value: Option<&Value>,
        action: &str,
    ) -> Option<ErrorRules> {
        let is_lookup = action == "lookup";
        let default_not_found = if is_lookup { vec![404] } else { Vec::new() };
        let Some(value) = value else {
            return Some(ErrorRules {
                not_found: default_not_found,
                ..ErrorRules::default()
            });
        };
        let map = self.object(field, value)?;
        let mut rules = ErrorRules::default();
        let mut ok = true;
        let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
        for (key, v) in map {
            let sub = format!("{field}.{key}");
            let slot = match key.as_str() {
                "transient" => &mut rules.transient,
                "permanent" => &mut rules.permanent,
                "unknown" => &mut rules.unknown,
                "not_found" if is_lookup => &mut rules.not_found,
                "not_found" => {
                    self.fail(&sub, core_rule::NOT_APPLICABLE, "applies only to lookup");
                    ok = false;
                    continue;
                }
                _ => {
                    let message =
                        "is not a known key (known: transient, permanent, unknown, not_found)";
                    self.fail(&sub, core_rule::UNKNOWN_FIELD, message);
                    ok = false;
                    continue;
                }
            };
            let Some(codes) = self.statuses(&sub, v) else {
                ok = false;
                continue;
            };
            for code in &codes {
                if let Some(other) = seen.insert(*code, key) {
                    let message = format!("{code} is also listed in {field}.{other}");
                    self.fail(&sub, rule::DUPLICATE, message);
                    ok = false;
                }
            }
            *slot = codes;
        }
        if is_lookup && !map.contains_key("not_found") {
            rules.not_found = default_not_found;
        }
        ok.then_some(rules)
    }

    fn outputs(&mut self, field: &str, value: Option<&Value>) -> Option<Vec<(String, String)>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let map = self.object(field, value)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (name, v) in map {
            match self.pointer(&format!("{field}.{name}"), v) {
                Some(p) => out.push((name.clone(), p)),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn reply(&mut self, field: &str, key: &str, value: &Value) -> Option<ReplyMap> {
        match key {
            "account" => self
                .account(field, value, false)
                .map(|(m, _)| ReplyMap::Account(m)),
            "accounts" => self
                .account(field, value, true)
                .map(|(map, next)| ReplyMap::Accounts { map, next }),
            "usage" => self
                .usage(field, value)
                .map(|(map, next)| ReplyMap::Usage { map, next }),
            _ => self.pointer(field, value).map(ReplyMap::LoginUrl),
        }
    }

    /// An account mapping; with `paged`, also `next` or `next_template`.
    fn account(
        &mut self,
        field: &str,
        value: &Value,
        paged: bool,
    ) -> Option<(AccountMap, Option<Next>)> {
        let map = self.object(field, value)?;
        let mut known = vec!["pointer", "username", "status", "statuses", "package"];
        if paged {
            known.extend(["next", "next_template"]);
        }
        let before = self.errors.len();
        self.only_keys(field, map, &known);
        let pointer = self.optional_pointer(&format!("{field}.pointer"), map.get("pointer"));
        let username = self.required_pointer(&format!("{field}.username"), map.get("username"));
        let status = self.optional_pointer(&format!("{field}.status"), map.get("status"));
        let package = self.optional_pointer(&format!("{field}.package"), map.get("package"));
        let statuses = self.status_names(&format!("{field}.statuses"), map.get("statuses"));
        let next = self.next(field, map);
        if self.errors.len() > before {
            return None;
        }
        let account = AccountMap {
            pointer: pointer?,
            username: username?,
            status: status?,
            statuses: statuses?,
            package: package?,
        };
        Some((account, next))
    }

    /// The next-page cursor of a paged mapping: `next` (a pointer) or `next_template`.
    fn next(&mut self, field: &str, map: &serde_json::Map<String, Value>) -> Option<Next> {
        match (map.get("next"), map.get("next_template")) {
            (Some(_), Some(_)) => {
                let message = "not applicable when next is given";
                self.fail(
                    &format!("{field}.next_template"),
                    core_rule::NOT_APPLICABLE,
                    message,
                );
                None
            }
            (Some(p), None) => self.pointer(&format!("{field}.next"), p).map(Next::Pointer),
            (None, Some(t)) => {
                let mut roots = ROOTS.to_vec();
                roots.push("response");
                self.template_with(&format!("{field}.next_template"), t, &roots)
                    .map(Next::Template)
            }
            (None, None) => None,
        }
    }

    fn status_names(
        &mut self,
        field: &str,
        value: Option<&Value>,
    ) -> Option<BTreeMap<String, String>> {
        let Some(value) = value else {
            return Some(BTreeMap::new());
        };
        let map = self.object(field, value)?;
        let mut out = BTreeMap::new();
        for (remote, local) in map {
            let local = self.string(&format!("{field}.{remote}"), local)?;
            out.insert(remote.clone(), local.to_string());
        }
        Some(out)
    }

    /// A usage mapping, paged like `accounts` when `next` or `next_template` is given.
    fn usage(&mut self, field: &str, value: &Value) -> Option<(UsageMap, Option<Next>)> {
        let map = self.object(field, value)?;
        let before = self.errors.len();
        self.only_keys(
            field,
            map,
            &["pointer", "username", "metrics", "next", "next_template"],
        );
        let next = self.next(field, map);
        let pointer = self.optional_pointer(&format!("{field}.pointer"), map.get("pointer"));
        let username = self.required_pointer(&format!("{field}.username"), map.get("username"));
        let metrics_field = format!("{field}.metrics");
        let mut metrics = Vec::new();
        match map.get("metrics") {
            None => self.fail(&metrics_field, core_rule::REQUIRED, "required"),
            Some(v) => {
                if let Some(m) = self.object(&metrics_field, v) {
                    for (name, spec) in m {
                        if let Some(metric) = self.metric(&format!("{metrics_field}.{name}"), spec)
                        {
                            metrics.push((name.clone(), metric));
                        }
                    }
                }
            }
        }
        if self.errors.len() > before {
            return None;
        }
        Some((
            UsageMap {
                pointer: pointer?,
                username: username?,
                metrics,
            },
            next,
        ))
    }

    /// A metric: a pointer to the used amount, or `{"used", "limit", "unit"}`.
    fn metric(&mut self, field: &str, value: &Value) -> Option<MetricMap> {
        if value.is_string() {
            return self.pointer(field, value).map(|used| MetricMap {
                used,
                limit: None,
                unit: None,
            });
        }
        let Value::Object(map) = value else {
            let message = "must be a JSON pointer or an object with used, limit and unit";
            self.fail(field, core_rule::TYPE, message);
            return None;
        };
        self.only_keys(field, map, &["used", "limit", "unit"]);
        let used = self.required_pointer(&format!("{field}.used"), map.get("used"));
        let limit = self.optional_pointer(&format!("{field}.limit"), map.get("limit"));
        let unit = match map.get("unit") {
            None => Some(None),
            Some(v) => self
                .string(&format!("{field}.unit"), v)
                .map(|u| Some(u.to_string())),
        };
        Some(MetricMap {
            used: used?,
            limit: limit?,
            unit: unit?,
        })
    }
}
