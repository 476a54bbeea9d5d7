//! Event types (`service.suspend.succeeded`) and the wildcard patterns handlers and webhooks
//! subscribe with, plus the catalogue of events Provisio emits.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

use crate::text::TextError;

/// Longest event type or pattern, in characters; long enough for any dotted name we emit
/// while keeping subscriptions small in storage and logs.
pub const MAX_LEN: usize = 100;

const WILDCARD: &str = "*";

/// Every event Provisio emits. Kept as text so it can be listed in the API and docs as is;
/// a test checks each entry parses as an [`EventType`].
pub const CATALOGUE: &[&str] = &[
    "client.create.before",
    "client.update.before",
    "client.delete.before",
    "client.created",
    "client.updated",
    "client.deleted",
    "client.archived",
    "client.custom_fields_updated",
    "client.balance_nonnegative",
    "client.balance_nonpositive",
    "service.create.before",
    "service.create.succeeded",
    "service.create.failed",
    "service.suspend.before",
    "service.suspend.succeeded",
    "service.suspend.failed",
    "service.unsuspend.before",
    "service.unsuspend.succeeded",
    "service.unsuspend.failed",
    "service.terminate.before",
    "service.terminate.succeeded",
    "service.terminate.failed",
    "service.change_password.before",
    "service.change_password.succeeded",
    "service.change_password.failed",
    "service.change_package.before",
    "service.change_package.succeeded",
    "service.change_package.failed",
    "service.renew.before",
    "service.renew.succeeded",
    "service.renew.failed",
    "service.usage_updated",
    "service.usage_exceeded",
    "service.imported",
    "service.status_corrected",
    "audit.drift_found",
    "handler.disabled",
    "server.created",
    "server.updated",
    "server.deleted",
    "product.created",
    "product.updated",
    "product.deleted",
    "handler.created",
    "handler.updated",
    "handler.deleted",
    "rule.created",
    "rule.updated",
    "rule.deleted",
    "service.updated",
];

fn err(rule: &'static str, message: impl Into<String>) -> TextError {
    TextError {
        rule,
        message: message.into(),
    }
}

fn is_name_segment(segment: &str) -> bool {
    let mut bytes = segment.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks length and that every segment is a name (or, for patterns, `*`). `what` names the
/// kind of value in messages so API clients see which field's rule they broke.
fn check(s: &str, what: &str, wildcards: bool) -> Result<(), TextError> {
    if s.is_empty() {
        return Err(err("required", "must not be empty"));
    }
    if s.len() > MAX_LEN {
        return Err(err(
            "max_length",
            format!("must be at most {MAX_LEN} characters"),
        ));
    }
    let ok = s
        .split('.')
        .all(|seg| is_name_segment(seg) || (wildcards && seg == WILDCARD));
    if ok {
        return Ok(());
    }
    let segment = if wildcards {
        "a lower-case name or `*`"
    } else {
        "a lower-case name"
    };
    Err(err(
        "pattern",
        format!(
            "'{s}' is not a valid {what}: dot-separated segments, each {segment} \
             (a letter a-z, then a-z, 0-9 or _)"
        ),
    ))
}

/// The name of an event: dot-separated segments, each a lower-case letter followed by
/// lower-case letters, digits or `_` (`[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*`), at most
/// [`MAX_LEN`] characters. Most are `subject.what` or `subject.action.phase`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "service.suspend.succeeded")]
pub struct EventType(String);

impl EventType {
    pub fn parse(s: &str) -> Result<Self, TextError> {
        check(s, "event type", false)?;
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether Provisio emits this event, i.e. it is listed in [`CATALOGUE`].
    pub fn is_catalogued(&self) -> bool {
        CATALOGUE.contains(&self.as_str())
    }

    fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

/// A subscription to a set of event types: the [`EventType`] grammar where any whole segment
/// may also be `*`.
///
/// Matching goes segment by segment:
/// - a `*` in the middle (or the first of several segments) matches exactly one segment, so
///   `client.*.x` matches `client.a.x` but not `client.a.b.x`, and `*.created` matches
///   `client.created`;
/// - a `*` as the last segment matches one or more remaining segments, so `service.*` matches
///   both `service.usage_updated` and `service.suspend.before` (subscribers of a subject want
///   all of it, however deeply its events nest) but not `service` itself;
/// - a lone `*` therefore matches every event;
/// - any other segment matches only itself, and without a trailing `*` the event must have
///   exactly as many segments as the pattern.
///
/// Partial wildcards such as `serv*` are refused rather than treated literally.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "service.*")]
pub struct EventPattern(String);

impl EventPattern {
    pub fn parse(s: &str) -> Result<Self, TextError> {
        check(s, "event pattern", true)?;
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `event` is one of the events this pattern subscribes to (rules on the type).
    pub fn matches(&self, event: &EventType) -> bool {
        let (head, last) = match self.0.rsplit_once('.') {
            Some((head, last)) => (Some(head), last),
            None => (None, self.0.as_str()),
        };
        let mut events = event.segments();
        let head_matches = head.is_none_or(|head| {
            head.split('.')
                .all(|p| events.next().is_some_and(|e| p == WILDCARD || p == e))
        });
        if !head_matches {
            return false;
        }
        match events.next() {
            None => false,
            Some(_) if last == WILDCARD => true,
            Some(e) => e == last && events.next().is_none(),
        }
    }
}

/// An exact event type is a pattern matching only itself.
impl From<EventType> for EventPattern {
    fn from(event: EventType) -> Self {
        Self(event.0)
    }
}

macro_rules! string_impls {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = TextError;
            fn try_from(v: String) -> Result<Self, TextError> {
                Self::parse(&v)
            }
        }
        impl FromStr for $name {
            type Err = TextError;
            fn from_str(s: &str) -> Result<Self, TextError> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_impls!(EventType);
string_impls!(EventPattern);

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, event: &str) -> bool {
        EventPattern::parse(pattern)
            .unwrap()
            .matches(&EventType::parse(event).unwrap())
    }

    #[test]
    fn trailing_wildcard_takes_one_or_more_segments() {
        assert!(matches("service.*", "service.usage_updated"));
        assert!(matches("service.*", "service.suspend.before"));
        assert!(!matches("service.*", "service"));
        assert!(!matches("service.*", "client.created"));
    }

    #[test]
    fn inner_wildcard_takes_exactly_one_segment() {
        assert!(matches("service.*.failed", "service.renew.failed"));
        assert!(!matches("service.*.failed", "service.renew.x.failed"));
        assert!(!matches("service.*.failed", "service.failed"));
        assert!(matches("*.created", "client.created"));
        assert!(!matches("*.created", "client.x.created"));
    }

    #[test]
    fn exact_patterns_need_the_same_length() {
        assert!(matches("client.created", "client.created"));
        assert!(!matches("client", "client.created"));
        assert!(!matches("client.created.now", "client.created"));
        assert!(matches("*", "handler.disabled"));
    }

    #[test]
    fn serde_goes_through_parse() {
        let p: EventPattern = serde_json::from_str(r#""service.*""#).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""service.*""#);
        assert!(serde_json::from_str::<EventType>(r#""service.*""#).is_err());
        let e: EventType = "client.created".parse().unwrap();
        assert!(e.is_catalogued());
        assert!(EventPattern::from(e.clone()).matches(&e));
    }
}

/// Identifies a stored event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(transparent)]
pub struct EventId(pub i64);

/// Something that happened, as stored: written in the same transaction as the change that
/// caused it, so no change goes unannounced. Payloads never hold secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: EventId,
    pub kind: EventType,
    pub at: chrono::DateTime<chrono::Utc>,
    /// What it is about: `client:7`, `service:12`.
    pub subject: String,
    pub payload: serde_json::Value,
    /// Who caused it; `None` for events stored before actors were recorded.
    pub actor: Option<crate::access::Actor>,
    /// Rule firings between the outside world and this event (0: none).
    pub depth: u32,
}

/// An event about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: EventType,
    pub subject: String,
    pub payload: serde_json::Value,
    /// Who caused it; when `None`, the store records the actor of the task that writes it.
    pub actor: Option<crate::access::Actor>,
    /// Its causation depth; when `None`, that of the task that writes it.
    pub depth: Option<u32>,
}

impl NewEvent {
    /// An event of a catalogued type; panics on a type outside the catalogue's grammar,
    /// since event types are fixed in code.
    pub fn new(kind: &str, subject: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: EventType::parse(kind).expect("event types in code are valid"),
            subject: subject.into(),
            payload,
            actor: None,
            depth: None,
        }
    }
}
