//! Reading an executable's stdout as a protocol reply, and keeping secrets out of whatever
//! text of it ends up in an error.

use provisio_core::module::{
    redact, Action, ActionReply, ErrorKind, ModuleError, RemoteAccount, UsageReport,
};
use provisio_core::settings::Settings;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Longest module error message kept; the engine stores it on the job.
const MESSAGE_LIMIT: usize = 1000;

/// Why stdout is not a reply at all (as opposed to a reply of the wrong shape). The text
/// never quotes the output, which may hold anything.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NotAReply(pub String);

/// Parses stdout. `Ok(Ok(_))` is a success, `Ok(Err(_))` an error the executable reported
/// (or a success reply that breaks the protocol), `Err(_)` output that is no reply at all.
pub(crate) fn parse(
    stdout: &[u8],
    action: &Action,
    secrets: &[&str],
) -> Result<Result<ActionReply, ModuleError>, NotAReply> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(NotAReply("printed nothing on stdout".into()));
    }
    // serde_json's syntax errors give a position, never the offending text.
    let value: Value = serde_json::from_slice(stdout)
        .map_err(|e| NotAReply(format!("stdout is not one JSON value ({e})")))?;
    let Value::Object(reply) = value else {
        return Err(NotAReply("stdout is JSON but not an object".into()));
    };
    match reply.get("ok") {
        Some(Value::Bool(true)) => Ok(success(&reply, action).map_err(|problem| {
            ModuleError::permanent(format!(
                "the executable's reply to {action} does not follow the protocol: {problem}"
            ))
        })),
        Some(Value::Bool(false)) => Ok(Err(failure(&reply, secrets))),
        _ => Err(NotAReply("the reply has no boolean `ok`".into())),
    }
}

/// The fields of a success reply. Fields that answer the action are required, so that a
/// script that forgot them is not read as "no account" or "no accounts", which the engine
/// would act on (recreate, report everything as drift).
fn success(reply: &Settings, action: &Action) -> Result<ActionReply, String> {
    let required = match action {
        Action::Lookup => Some("account"),
        Action::ListAccounts => Some("accounts"),
        Action::Usage => Some("usage"),
        Action::LoginUrl => Some("url"),
        _ => None,
    };
    if let Some(field) = required {
        if !reply.contains_key(field) {
            return Err(format!("`{field}` is missing"));
        }
    }

    let outputs = match present(reply, "outputs") {
        None => Settings::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err("`outputs` must be an object".into()),
    };
    let account = match present(reply, "account") {
        None => None,
        Some(v) => Some(typed::<RemoteAccount>(v, "`account`", ACCOUNT_SHAPE)?),
    };
    let accounts = list::<RemoteAccount>(reply, "accounts", ACCOUNT_SHAPE)?;
    let usage = list::<UsageReport>(reply, "usage", USAGE_SHAPE)?;
    let next = string(reply, "next")?;
    let url = string(reply, "url")?;
    Ok(ActionReply {
        outputs,
        account,
        accounts,
        next,
        usage,
        url,
    })
}

const ACCOUNT_SHAPE: &str =
    "an object with a string `username` and optional string `status` and `package`";
const USAGE_SHAPE: &str =
    "an object with a string `username` and `metrics` mapping names to {\"used\": number, \"limit\": number|null, \"unit\": string|null}";

/// A field's value, with `null` read as absent.
fn present<'a>(reply: &'a Settings, field: &str) -> Option<&'a Value> {
    reply.get(field).filter(|v| !v.is_null())
}

fn typed<T: DeserializeOwned>(value: &Value, what: &str, shape: &str) -> Result<T, String> {
    // serde's message would quote the offending value, which may be anything; name the
    // field and the expected shape instead.
    serde_json::from_value(value.clone()).map_err(|_| format!("{what} must be {shape}"))
}

fn list<T: DeserializeOwned>(reply: &Settings, field: &str, shape: &str) -> Result<Vec<T>, String> {
    match present(reply, field) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| typed(item, &format!("`{field}[{i}]`"), shape))
            .collect(),
        Some(_) => Err(format!("`{field}` must be an array")),
    }
}

fn string(reply: &Settings, field: &str) -> Result<Option<String>, String> {
    match present(reply, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{field}` must be a string or null")),
    }
}

/// The error an executable reported. A missing or unrecognised kind is read as unknown: the
/// engine then looks the account up instead of guessing whether a retry is safe.
fn failure(reply: &Settings, secrets: &[&str]) -> ModuleError {
    let error = reply.get("error").and_then(Value::as_object);
    let kind = match error.and_then(|e| e.get("kind")).and_then(Value::as_str) {
        Some("transient") => ErrorKind::Transient,
        Some("permanent") => ErrorKind::Permanent,
        _ => ErrorKind::Unknown,
    };
    let message = match error.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => clip(&redact(m.trim(), secrets), MESSAGE_LIMIT),
        _ => "the executable reported an error without a message".into(),
    };
    ModuleError { kind, message }
}

/// The first `max` characters of `text`, marked when cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The last `max` characters of stderr, secrets removed first so that a cut cannot leave
/// part of one behind. The end is kept because that is where tracebacks say what failed.
pub(crate) fn stderr_excerpt(stderr: &[u8], secrets: &[&str], max: usize) -> String {
    let text = redact(&String::from_utf8_lossy(stderr), secrets);
    let text = text.trim();
    let chars = text.chars().count();
    if chars <= max {
        return text.to_string();
    }
    let start = text
        .char_indices()
        .nth(chars - (max - 1))
        .map_or(0, |(at, _)| at);
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: Value, action: Action) -> Result<Result<ActionReply, ModuleError>, NotAReply> {
        parse(v.to_string().as_bytes(), &action, &["hunter22"])
    }

    #[test]
    fn non_replies_are_told_apart_from_replies() {
        assert!(parse(b" \n", &Action::Create, &[]).is_err());
        assert!(parse(b"Traceback", &Action::Create, &[]).is_err());
        assert!(parsed(json!([1]), Action::Create).is_err());
        assert!(parsed(json!({"ok": "yes"}), Action::Create).is_err());
        assert!(parsed(json!({"outputs": {}}), Action::Create).is_err());
    }

    #[test]
    fn the_field_that_answers_a_query_is_required() {
        let err = parsed(json!({"ok": true}), Action::Lookup)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(
            err.message.contains("`account` is missing"),
            "{}",
            err.message
        );
        let reply = parsed(json!({"ok": true, "account": null}), Action::Lookup)
            .unwrap()
            .unwrap();
        assert_eq!(reply.account, None);
        assert!(parsed(json!({"ok": true}), Action::ListAccounts)
            .unwrap()
            .is_err());
        assert!(parsed(json!({"ok": true}), Action::Create).unwrap().is_ok());
    }

    #[test]
    fn shape_errors_name_the_field_without_quoting_the_value() {
        let err = parsed(json!({"ok": true, "accounts": [{"username": "a"}, {"username": "hunter22-x"}, {"name": "sEcReT"}]}), Action::ListAccounts)
            .unwrap()
            .unwrap_err();
        assert!(err.message.contains("`accounts[2]`"), "{}", err.message);
        assert!(!err.message.contains("sEcReT"));
        let err = parsed(json!({"ok": true, "outputs": "sEcReT"}), Action::Create)
            .unwrap()
            .unwrap_err();
        assert!(!err.message.contains("sEcReT"));
    }

    #[test]
    fn reported_errors_keep_their_kind_and_lose_their_secrets() {
        let err = parsed(
            json!({"ok": false, "error": {"kind": "transient", "message": "bad hunter22"}}),
            Action::Create,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(err, ModuleError::transient("bad [redacted]"));
        let err = parsed(
            json!({"ok": false, "error": {"kind": "odd"}}),
            Action::Create,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unknown);
        let err = parsed(
            json!({"ok": false, "error": {"kind": "permanent", "message": "x".repeat(5000)}}),
            Action::Create,
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(err.message.chars().count(), MESSAGE_LIMIT + 1);
    }

    #[test]
    fn stderr_excerpts_keep_the_end_and_redact_before_cutting() {
        let stderr = format!("{}hunter22 at the end", "é".repeat(600));
        let excerpt = stderr_excerpt(stderr.as_bytes(), &["hunter22"], 500);
        assert_eq!(excerpt.chars().count(), 500);
        assert!(excerpt.starts_with('…'));
        assert!(excerpt.ends_with("[redacted] at the end"));
        assert_eq!(stderr_excerpt(b"  short\n", &[], 500), "short");
    }
}
