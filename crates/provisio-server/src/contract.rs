//! Completes the OpenAPI document with the answers every operation shares, so that what the
//! document promises is what the server does: the problems the key check, the extractors and
//! the request bounds answer, in `application/problem+json`, and bodies that may be left out.
//!
//! Each operation's own annotation declares its success answers and the problems only its
//! handler knows (409 for a conflict, 404 for a body's reference); the rest follows from the
//! operation's shape here, once, so that no new operation can forget them.

use serde_json::{json, Map, Value};

/// The media type of every error answer (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

const PROBLEM_REF: &str = "#/components/schemas/Problem";

/// Why each shared status is answered, for the document's readers.
fn reason(status: u16) -> &'static str {
    match status {
        400 => "A path or query parameter, or the JSON itself, is malformed; `errors` names the parameter",
        401 => "No API key, or one that is unknown, revoked or expired",
        403 => "The key's role may not make this request; `roles` names the roles that may",
        404 => "No such record, or one outside the key's scope",
        405 => "The path does not take this method",
        409 => "The request conflicts with the record's state or another record, or its `Idempotency-Key` was used for another request (rule `reused`) or is still running (rule `in_progress`, with `Retry-After`)",
        413 => "The body is larger than `max_body_bytes`",
        415 => "The body is not sent as `application/json`",
        422 => "The body has invalid fields; `errors` names each field and the rule it broke",
        429 => "Too many failed authentications from this address; retry after `Retry-After` seconds",
        500 => "The server failed; the cause is in its log, never in the answer",
        503 => "Too many requests at once (`[http] max_concurrent_requests`) or one took longer than `request_timeout_seconds`; retry after `Retry-After` seconds",
        _ => "A problem",
    }
}

fn problem_content() -> Value {
    json!({ PROBLEM_JSON: { "schema": { "$ref": PROBLEM_REF } } })
}

/// The shared answers, once each under `components/responses`; operations refer to them.
const SHARED: [u16; 11] = [400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503];

fn shared_name(status: u16) -> String {
    format!("Problem{status}")
}

fn shared_ref(status: u16) -> Value {
    json!({ "$ref": format!("#/components/responses/{}", shared_name(status)) })
}

fn problem_response(status: u16) -> Value {
    let mut r = json!({ "description": reason(status), "content": problem_content() });
    if status == 429 || status == 503 {
        r["headers"] = json!({
            "Retry-After": {
                "description": "Seconds to wait before trying again",
                "required": true,
                "schema": { "type": "integer", "minimum": 1 }
            }
        });
    }
    r
}

/// Adds the shared problems to every `/v1` operation, answers every error in
/// problem+json, and turns `Option<T>` bodies (`oneOf: [null, T]`) into optional bodies of
/// `T`: the server reads a missing body as the default and refuses a JSON `null`.
pub fn complete(doc: &mut Value) {
    if let Some(root) = doc.as_object_mut() {
        let components = root.entry("components").or_insert_with(|| json!({}));
        let responses = components
            .as_object_mut()
            .expect("components is an object")
            .entry("responses")
            .or_insert_with(|| json!({}));
        for status in SHARED {
            responses[shared_name(status)] = problem_response(status);
        }
    }
    flatten_tagged_alls(doc);
    let in_bodies = body_schemas(doc);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, schema) in schemas.iter_mut() {
            if in_bodies.contains(name) {
                close_tagged_variants(schema);
            }
        }
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "put" | "post" | "delete" | "patch") {
                continue;
            }
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            complete_operation(path, method == "post", op);
        }
    }
}

/// The paging parameters every listing reads through `routes::page`.
fn page_bounds(op: &mut Map<String, Value>) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params.iter_mut().filter(|p| p["in"] == "query") {
        let name = p["name"].as_str().unwrap_or("").to_string();
        let schema = &mut p["schema"];
        match name.as_str() {
            "limit" => {
                schema["minimum"] = json!(1);
                schema["maximum"] = json!(provisio_core::page::PageRequest::MAX_LIMIT);
            }
            // A cursor is the id the last page ended at, as the server wrote it.
            "cursor" => schema["pattern"] = json!("^[0-9]{0,18}$"),
            _ => {}
        }
    }
}

fn complete_operation(path: &str, post: bool, op: &mut Map<String, Value>) {
    page_bounds(op);
    let params = op
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_path_param = params.iter().any(|p| p["in"] == "path");
    let has_query = params.iter().any(|p| p["in"] == "query");
    let has_body = if let Some(body) = op.get_mut("requestBody") {
        optional_body(body);
        true
    } else {
        false
    };
    let keyed = path.starts_with("/v1/");

    let mut shared: Vec<u16> = vec![500];
    if keyed {
        shared.extend([401, 403, 429, 503]);
    }
    if has_path_param {
        // A path id that is not a number is 400; one that names nothing is 404.
        shared.extend([400, 404]);
    }
    if has_query {
        shared.push(400);
    }
    if has_body {
        shared.extend([400, 413, 415, 422]);
    }
    if post && keyed {
        // Every POST takes an `Idempotency-Key`, whose reuse or overlap is a 409.
        shared.push(409);
    }

    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    for status in shared {
        responses
            .entry(status.to_string())
            .or_insert_with(|| shared_ref(status));
    }
    for (status, response) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if !is_error || response.get("$ref").is_some() {
            continue;
        }
        let code: u16 = status.parse().unwrap_or(0);
        let r = response.as_object_mut().expect("a response is an object");
        // Annotations write `body = Problem`, which utoipa files under application/json.
        r.insert("content".into(), problem_content());
        let generic = r
            .get("description")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if generic {
            r.insert("description".into(), json!(reason(code)));
        }
        if code == 429 || code == 503 {
            if let Some(h) = problem_response(code).get("headers") {
                r.insert("headers".into(), h.clone());
            }
        }
    }
    // Sorted statuses read better, and keep the committed document's diff small.
    let sorted: Map<String, Value> = {
        let mut v: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().collect()
    };
    *responses = sorted;
}

/// A struct that flattens a tagged enum (`Field` with its `FieldKind`) comes out of utoipa
/// as `allOf: [enum, struct]`, which client generators cannot build a type from; it is the
/// same as one object per variant holding the struct's properties too, which they can.
fn flatten_tagged_alls(doc: &mut Value) {
    let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let variants_of = |part: &Value| -> Option<Vec<Value>> {
        let name = part["$ref"]
            .as_str()?
            .strip_prefix("#/components/schemas/")?;
        let variants = schemas.get(name)?["oneOf"].as_array()?;
        variants
            .iter()
            .all(|v| v["type"] == "object")
            .then(|| variants.clone())
    };
    for (name, schema) in &schemas {
        let Some([first, rest]) = schema["allOf"].as_array().map(Vec::as_slice) else {
            continue;
        };
        let Some(variants) = variants_of(first) else {
            continue;
        };
        if rest["type"] != "object" {
            continue;
        }
        let merged: Vec<Value> = variants
            .into_iter()
            .map(|mut v| {
                let extra = rest["properties"].as_object().cloned().unwrap_or_default();
                if !v["properties"].is_object() {
                    v["properties"] = json!({});
                }
                if let Some(own) = v["properties"].as_object_mut() {
                    own.extend(extra);
                }
                let mut required: Vec<Value> =
                    v["required"].as_array().cloned().unwrap_or_default();
                required.extend(rest["required"].as_array().cloned().unwrap_or_default());
                v["required"] = Value::Array(required);
                v
            })
            .collect();
        let mut flat = json!({ "oneOf": merged });
        if let Some(d) = schema.get("description") {
            flat["description"] = d.clone();
        }
        doc["components"]["schemas"][name] = flat;
    }
}

/// The names of the component schemas that request bodies use, directly or inside others.
fn body_schemas(doc: &Value) -> std::collections::BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    if let Some(name) = r.strip_prefix("#/components/schemas/") {
                        out.push(name.to_string());
                    }
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut todo = Vec::new();
    for item in doc["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for op in item.as_object().into_iter().flat_map(|o| o.values()) {
            refs(&op["requestBody"], &mut todo);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            refs(&doc["components"]["schemas"][&name], &mut todo);
        }
    }
    seen
}

/// utoipa leaves `deny_unknown_fields` out of the variants of a tagged enum. The tagged enums
/// of request bodies refuse unknown fields (`RuleAction`, `OnExceed`; schemathesis's negative
/// cases would catch one that did not).
fn close_tagged_variants(schema: &mut Value) {
    let Some(variants) = schema.get_mut("oneOf").and_then(Value::as_array_mut) else {
        return;
    };
    for v in variants {
        let is_object = v.get("properties").is_some() && v["type"] == "object";
        if is_object && v.get("additionalProperties").is_none() {
            v["additionalProperties"] = json!(false);
        }
    }
}

/// `Option<T>` as a body means "may be left out" (the `OptionalJson` extractor), not
/// "may be `null`": the document says so with `required: false` and the plain `T`.
fn optional_body(body: &mut Value) {
    let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    let mut was_nullable = false;
    for media in content.values_mut() {
        let Some(schema) = media.get_mut("schema") else {
            continue;
        };
        let Some(variants) = schema.get("oneOf").and_then(Value::as_array) else {
            continue;
        };
        let rest: Vec<&Value> = variants.iter().filter(|v| v["type"] != "null").collect();
        if rest.len() == 1 && variants.len() == 2 {
            *schema = rest[0].clone();
            was_nullable = true;
        }
    }
    if was_nullable {
        body["required"] = json!(false);
    } else if body.get("required").is_none() {
        // The `Json` extractor refuses a missing body (415), so a plain body is required.
        body["required"] = json!(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_an_operation_from_its_shape() {
        let mut doc = json!({"paths": {"/v1/things/{id}": {"post": {
            "parameters": [{"name": "id", "in": "path"}],
            "requestBody": {"content": {"application/json": {"schema":
                {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/T"}]}}}},
            "responses": {"200": {"description": ""},
                "409": {"description": "", "content": {"application/json": {"schema": {"$ref": PROBLEM_REF}}}}}
        }}}});
        complete(&mut doc);
        let op = &doc["paths"]["/v1/things/{id}"]["post"];
        let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        assert_eq!(
            statuses,
            ["200", "400", "401", "403", "404", "409", "413", "415", "422", "429", "500", "503"]
        );
        assert!(op["responses"]["409"]["content"]["application/json"].is_null());
        assert_eq!(
            op["responses"]["401"]["$ref"],
            "#/components/responses/Problem401"
        );
        assert_eq!(
            doc["components"]["responses"]["Problem503"]["headers"]["Retry-After"]["required"],
            true
        );
        assert_eq!(
            op["responses"]["409"]["content"][PROBLEM_JSON]["schema"]["$ref"],
            PROBLEM_REF
        );
        assert_eq!(op["requestBody"]["required"], false);
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/T"
        );
    }
}
