//! Reading an `http` answer: success or a classified error, then the reply fields
//! (outputs, account, page of accounts, usage, login URL) copied by JSON pointer.

use provisio_core::module::{
    ActionReply, ErrorKind, Metric, ModuleError, RemoteAccount, UsageReport,
};
use serde_json::Value;

use super::exchange::Answer;
use super::spec::{AccountMap, ActionSpec, ErrorRules, MetricMap, Next, ReplyMap, UsageMap};
use super::template::{Context, Templates};
use super::Secrets;

/// At most this many characters of a response body go into an error message.
const EXCERPT_CHARS: usize = 300;

/// Everything needed to turn an answer into a reply or an error.
pub(crate) struct Reading<'a> {
    pub action: &'a str,
    /// `POST /users`, for messages.
    pub target: String,
    /// Read-only actions can be retried safely when their answer is unusable; others
    /// already took effect (the status said so) and must be looked up instead.
    pub read_only: bool,
    pub spec: &'a ActionSpec,
    pub secrets: &'a Secrets,
    pub templates: &'a Templates,
    /// The request as JSON, for `next_template`.
    pub request: &'a Value,
    /// Whether error messages may quote the answer's body.
    pub show_body: bool,
}

/// Classifies a status the success rule did not accept.
pub(crate) fn classify(rules: &ErrorRules, status: u16) -> ErrorKind {
    if rules.transient.contains(&status) {
        ErrorKind::Transient
    } else if rules.unknown.contains(&status) {
        ErrorKind::Unknown
    } else if rules.permanent.contains(&status) {
        ErrorKind::Permanent
    } else if status == 429 || status >= 500 {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    }
}

impl Reading<'_> {
    pub(crate) fn read(&self, answer: Answer) -> Result<ActionReply, ModuleError> {
        let status = answer.status;
        let spec = self.spec;
        if spec.errors.not_found.contains(&status) {
            // Only lookup has a not_found list: the remote has no such account.
            return Ok(ActionReply::default());
        }
        if !spec.success.accepts(status) {
            let kind = classify(&spec.errors, status);
            let message = self.with_excerpt(self.http(status), answer.body.as_deref().ok());
            return Err(ModuleError { kind, message });
        }
        let needs_body = spec.success.condition.is_some()
            || !spec.outputs.is_empty()
            || !matches!(spec.reply, ReplyMap::Nothing);
        if !needs_body {
            return Ok(ActionReply::default());
        }
        let raw = match &answer.body {
            Ok(raw) => raw,
            Err(e) => return Err(self.unusable(status, &e.to_string())),
        };
        let body: Value = serde_json::from_slice(raw)
            .map_err(|_| self.unusable(status, "the response is not JSON"))?;

        if let Some((pointer, expected)) = &spec.success.condition {
            if body.pointer(pointer) != Some(expected) {
                let head = format!(
                    "{}: the response does not confirm success ({pointer} is not {expected})",
                    self.http(status)
                );
                return Err(ModuleError::permanent(self.with_excerpt(head, Some(raw))));
            }
        }

        let mut reply = ActionReply::default();
        let fail = |why: String| self.unusable(status, &why);
        if let ReplyMap::Account(map) = &spec.reply {
            reply.account = lookup(&body, map).map_err(fail)?;
            // An empty search has no account to read outputs from; their pointers lead
            // into the account, so their absence is not an unusable answer.
            if reply.account.is_none() {
                return Ok(reply);
            }
        }
        for (name, pointer) in &spec.outputs {
            let value = body.pointer(pointer).ok_or_else(|| {
                let why = format!("output {name}: {pointer} is not in the response");
                self.unusable(status, &why)
            })?;
            reply.outputs.insert(name.clone(), value.clone());
        }
        match &spec.reply {
            ReplyMap::Nothing | ReplyMap::Account(_) => {}
            ReplyMap::Accounts { map, next } => {
                reply.accounts = accounts(&body, map).map_err(fail)?;
                reply.next = self.next(&body, next.as_ref(), status)?;
            }
            ReplyMap::Usage { map, next } => {
                reply.usage = usage(&body, map).map_err(fail)?;
                reply.next = self.next(&body, next.as_ref(), status)?;
            }
            ReplyMap::LoginUrl(pointer) => match body.pointer(pointer) {
                Some(Value::String(url)) if !url.is_empty() => reply.url = Some(url.clone()),
                _ => return Err(fail(format!("login_url: {pointer} is not a text"))),
            },
        }
        Ok(reply)
    }

    fn http(&self, status: u16) -> String {
        format!("{}: HTTP {status} from {}", self.action, self.target)
    }

    /// The answer arrived with a success status but cannot be used.
    fn unusable(&self, status: u16, why: &str) -> ModuleError {
        let message = format!("{}: {why}", self.http(status));
        if self.read_only {
            ModuleError::transient(message)
        } else {
            ModuleError::unknown(format!(
                "{message}; the remote accepted the request, so the outcome is unknown"
            ))
        }
    }

    /// `head` plus a redacted, shortened, one-line excerpt of the body.
    fn with_excerpt(&self, head: String, body: Option<&[u8]>) -> String {
        let Some(body) = body.filter(|b| self.show_body && !b.is_empty()) else {
            return head;
        };
        // Redact before shortening: a cut could otherwise leave the start of a secret.
        let text = self.secrets.redact(&String::from_utf8_lossy(body));
        let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut excerpt: String = one_line.chars().take(EXCERPT_CHARS).collect();
        if excerpt.len() < one_line.len() {
            excerpt.push('…');
        }
        format!("{head}: {excerpt}")
    }

    fn next(
        &self,
        body: &Value,
        next: Option<&Next>,
        status: u16,
    ) -> Result<Option<String>, ModuleError> {
        let cursor = match next {
            None => None,
            Some(Next::Pointer(pointer)) => match body.pointer(pointer) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => {
                    let why = format!("next: {pointer} is not a text or number");
                    return Err(self.unusable(status, &why));
                }
            },
            Some(Next::Template(template)) => {
                let mut root = self.request.clone();
                if let Value::Object(map) = &mut root {
                    map.insert("response".into(), body.clone());
                }
                let rendered = self
                    .templates
                    .render(template, &Context::new(root))
                    .map_err(|e| {
                        ModuleError::permanent(format!(
                            "{}: template actions.{}.{}.next_template: {e}",
                            self.action,
                            self.action,
                            if self.action == "usage" {
                                "usage"
                            } else {
                                "accounts"
                            }
                        ))
                    })?;
                Some(rendered.trim().to_string())
            }
        };
        // A cursor that repeats or cycles is the caller's to catch: it sees every page
        // (`provisio_engine`'s paging guard), one call sees only its own.
        Ok(cursor.filter(|c| !c.is_empty()))
    }
}

/// `Ok(None)` when the mapped object is absent or null (an empty search result).
fn lookup(body: &Value, map: &AccountMap) -> Result<Option<RemoteAccount>, String> {
    let item = match &map.pointer {
        Some(pointer) => body.pointer(pointer),
        None => Some(body),
    };
    match item {
        None | Some(Value::Null) => Ok(None),
        Some(item) => account(item, map, "account").map(Some),
    }
}

fn accounts(body: &Value, map: &AccountMap) -> Result<Vec<RemoteAccount>, String> {
    // A missing list is an error, never an empty page: an audit that reads "no accounts"
    // would report every service as drifted.
    let items = list(body, map.pointer.as_deref(), "accounts")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| account(item, map, &format!("accounts item {i}")))
        .collect()
}

fn list<'b>(body: &'b Value, pointer: Option<&str>, what: &str) -> Result<&'b Vec<Value>, String> {
    let found = match pointer {
        Some(p) => body.pointer(p),
        None => Some(body),
    };
    match found {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(format!(
            "{what}: {} is not an array in the response",
            pointer.unwrap_or("the body")
        )),
    }
}

fn account(item: &Value, map: &AccountMap, what: &str) -> Result<RemoteAccount, String> {
    let username = match item.pointer(&map.username) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(format!("{what}: username {} is not a text", map.username)),
    };
    let status =
        text_at(item, map.status.as_deref()).map(|s| map.statuses.get(&s).cloned().unwrap_or(s));
    let package = text_at(item, map.package.as_deref());
    Ok(RemoteAccount {
        username,
        status,
        package,
    })
}

/// A scalar as text (`true`, `3`, `active`); absent, null or structured values give `None`.
fn text_at(item: &Value, pointer: Option<&str>) -> Option<String> {
    match item.pointer(pointer?)? {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn usage(body: &Value, map: &UsageMap) -> Result<Vec<UsageReport>, String> {
    let items = list(body, map.pointer.as_deref(), "usage")?;
    let mut reports = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let username = match item.pointer(&map.username) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(format!(
                    "usage item {i}: username {} is not a text",
                    map.username
                ))
            }
        };
        let mut metrics = std::collections::BTreeMap::new();
        for (name, m) in &map.metrics {
            if let Some(metric) = metric(item, m)
                .map_err(|p| format!("usage item {i}: metric {name}: {p} is not a number"))?
            {
                metrics.insert(name.clone(), metric);
            }
        }
        reports.push(UsageReport { username, metrics });
    }
    Ok(reports)
}

/// `Ok(None)` when the remote reports nothing for the metric; `Err(pointer)` for a value
/// that is not a number.
fn metric(item: &Value, map: &MetricMap) -> Result<Option<Metric>, String> {
    let Some(used) = number_at(item, &map.used)? else {
        return Ok(None);
    };
    let limit = match &map.limit {
        Some(p) => number_at(item, p)?,
        None => None,
    };
    Ok(Some(Metric {
        used,
        limit,
        unit: map.unit.clone(),
    }))
}

fn number_at(item: &Value, pointer: &str) -> Result<Option<f64>, String> {
    match item.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| pointer.to_string()),
        Some(_) => Err(pointer.to_string()),
    }
}
