//! Request extractors that answer bad input with problem+json naming the field, where axum's
//! own answer plain text: JSON bodies (strict, size-limited), query strings and path ids.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body, parsed strictly; errors name the JSON path of the bad field.
pub struct Json<T>(pub T);

/// The largest body this request may send, set per route by the router (batches may send
/// more than single records).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let mime = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = match req.extensions().get::<BodyLimit>().copied() {
            Some(BodyLimit(limit)) => axum::body::to_bytes(req.into_body(), limit)
                .await
                .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE),
            None => Bytes::from_request(req, state)
                .await
                .map_err(|r| r.status()),
        };
        let bytes = bytes.map_err(|status| {
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    "Body too large",
                    "the request body is larger than this server accepts (max_body_bytes)",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad-body",
                    "Unreadable body",
                    "the request body could not be read",
                )
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// A JSON body that may be left out entirely (no body, or an empty one): then `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
            || !req.headers().contains_key(header::CONTENT_TYPE)
                && !req.headers().contains_key(header::CONTENT_LENGTH)
                && !req.headers().contains_key(header::TRANSFER_ENCODING);
        if empty {
            return Ok(OptionalJson(T::default()));
        }
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| OptionalJson(v))
    }
}

/// serde_json appends " at line L column C"; a field path is more use to an API caller.
fn strip_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

/// The first backquoted name in a serde message (`unknown field `x``).
fn quoted_name(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// serde quotes the offending value ("invalid type: string \"…\", expected u32"); the value
/// may be a secret sent to the wrong field, so only what was expected is repeated.
fn without_value(msg: &str) -> String {
    if msg.starts_with("invalid type")
        || msg.starts_with("invalid value")
        || msg.starts_with("invalid length")
    {
        if let Some(i) = msg.find(", expected ") {
            return format!("must be {}", &msg[i + ", expected ".len()..]);
        }
        return "has the wrong type".into();
    }
    msg.to_string()
}

/// Parses JSON bytes into `T`, turning serde's errors into field problems.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    // Every body of this API is an object; serde would also read a struct from an array
    // of its fields in order, which no document promises.
    if !value.is_object() {
        return Err(ApiError::bad_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "body",
            "type",
            "must be a JSON object",
        ));
    }
    if let Some(path) = nul_at(&value, String::new()) {
        return Err(nul_problem(StatusCode::UNPROCESSABLE_ENTITY, &path));
    }
    integral_floats(&mut value);
    let result: Result<T, _> = serde_path_to_error::deserialize(value);
    let e = match result {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let path = e.path().to_string();
    Err(field_problem(
        &path,
        &e.into_inner().to_string(),
        StatusCode::UNPROCESSABLE_ENTITY,
    ))
}

/// [`parse_json`] for a value already parsed as JSON (one item of a batch, whose body
/// [`parse_json`] already checked for NULs and integral floats).
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "item",
            "type",
            "must be a JSON object",
        ));
    }
    let result: Result<T, _> = serde_path_to_error::deserialize(value);
    result.map_err(|e| {
        let path = e.path().to_string();
        field_problem(
            &path,
            &e.into_inner().to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    })
}

/// Where a string (or a key) holds U+0000, as a dotted path. PostgreSQL stores no NUL in
/// text or JSONB, and no field of this API has a use for one, so every input refuses it
/// the same way on both databases.
fn nul_at(v: &serde_json::Value, at: String) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        serde_json::Value::String(s) if s.contains('\0') => {
            Some(if at.is_empty() { "body".into() } else { at })
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_at(x, join(&i.to_string()))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                Some(if at.is_empty() {
                    "body".into()
                } else {
                    at.clone()
                })
            } else {
                nul_at(x, join(k))
            }
        }),
        _ => None,
    }
}

pub(crate) fn nul_problem(status: StatusCode, field: &str) -> ApiError {
    ApiError::bad_field(
        status,
        field,
        "nul",
        "must not contain NUL (U+0000) characters",
    )
}

/// JSON Schema counts `5.0` as an integer (a number with no fraction), and so do the
/// clients that send it; serde does not, so such numbers are made integers before the body
/// is read.
fn integral_floats(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // Within ±2^53 a float holds every integer exactly; beyond, it is no id or count.
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 {
                *v = serde_json::Value::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral_floats),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral_floats),
        _ => {}
    }
}

/// Turns a serde error at `path` into a problem naming the field and the rule.
fn field_problem(path: &str, msg: &str, status: StatusCode) -> ApiError {
    let msg = strip_position(msg);
    let top = path == "." || path.is_empty();
    let join = |name: &str| {
        // serde_path_to_error already ends the path with an unknown field's own name.
        if top {
            name.to_string()
        } else if path == name || path.ends_with(&format!(".{name}")) {
            path.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    let (field, rule, message) = if msg.starts_with("unknown field") {
        let name = quoted_name(msg).unwrap_or("?");
        (
            join(name),
            "unknown_field",
            "is not a known field".to_string(),
        )
    } else if msg.starts_with("missing field") {
        let name = quoted_name(msg).unwrap_or("?");
        (join(name), "required", "is required".to_string())
    } else {
        let field = if top {
            "body".to_string()
        } else {
            path.to_string()
        };
        (field, "type", without_value(msg))
    };
    ApiError::bad_field(status, &field, rule, message)
}

/// A query string, parsed strictly (unknown parameters are refused).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or("");
        let pairs = form_urlencoded::parse(q.as_bytes());
        if let Some((name, _)) = pairs
            .clone()
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(nul_problem(
                StatusCode::BAD_REQUEST,
                &name.replace('\0', ""),
            ));
        }
        let de = serde_urlencoded::Deserializer::new(pairs);
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                field_problem(&path, &e.into_inner().to_string(), StatusCode::BAD_REQUEST)
            })
    }
}

/// Parses a numeric path id, naming the parameter when it is not one.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().map_err(|_| {
        ApiError::bad_field(
            StatusCode::BAD_REQUEST,
            "id",
            "type",
            format!("must be an integer, got '{raw}'"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        port: Option<u16>,
    }

    #[test]
    fn names_fields_in_errors() {
        let e = parse_json::<Body>(br#"{"name": "x", "bogus": 1}"#).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let e = format!("{e:?}");
        assert!(e.contains("bogus"), "{e}");
        let e = format!(
            "{:?}",
            parse_json::<Body>(br#"{"name": "x", "port": "abc"}"#).unwrap_err()
        );
        assert!(e.contains("field: \"port\""), "{e}");
        let e = format!("{:?}", parse_json::<Body>(br#"{}"#).unwrap_err());
        assert!(e.contains("field: \"name\""), "{e}");
        assert_eq!(
            parse_json::<Body>(b"{nope").unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let b = parse_json::<Body>(br#"{"name": "x", "port": 8080.0}"#).unwrap();
        assert_eq!(b.port, Some(8080));
        assert!(parse_json::<Body>(br#"{"name": "x", "port": 80.5}"#).is_err());
        let e = format!(
            "{:?}",
            parse_json::<Body>(br#"{"name": "a\u0000b"}"#).unwrap_err()
        );
        assert!(
            e.contains("field: \"name\"") && e.contains("rule: \"nul\""),
            "{e}"
        );
    }
}
