//! The committed OpenAPI document matches the code (`UPDATE_OPENAPI=1` rewrites it).

use std::path::PathBuf;

use serde_json::Value;

#[test]
fn openapi_document_is_fresh() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let current = serde_json::to_string_pretty(&provisio_server::openapi()).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p provisio-server openapi` and commit it"
    );
}

#[test]
fn every_v1_operation_is_documented_with_problems() {
    let doc = serde_json::to_value(provisio_server::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/clients",
        "/v1/servers",
        "/v1/products",
        "/v1/services",
        "/v1/modules",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["summary"].is_string() || op["description"].is_string(),
                "{method} {path} undocumented"
            );
            assert!(
                op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|k| k.starts_with('2')),
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

/// Follows a `$ref` inside the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling reference {r}")),
        None => v,
    }
}

/// Every object schema reachable from `v` that lists properties, with where it was reached.
fn objects<'a>(
    doc: &'a Value,
    v: &'a Value,
    at: String,
    seen: &mut Vec<String>,
    out: &mut Vec<(String, &'a Value)>,
) {
    if let Some(r) = v["$ref"].as_str() {
        if seen.iter().any(|s| s == r) {
            return;
        }
        seen.push(r.to_string());
        return objects(doc, resolve(doc, v), format!("{at}>{r}"), seen, out);
    }
    if v.get("properties").is_some() {
        out.push((at.clone(), v));
    }
    for (name, p) in v["properties"].as_object().into_iter().flatten() {
        objects(doc, p, format!("{at}.{name}"), seen, out);
    }
    for k in ["oneOf", "anyOf", "allOf"] {
        for (i, s) in v[k].as_array().into_iter().flatten().enumerate() {
            objects(doc, s, format!("{at}/{k}[{i}]"), seen, out);
        }
    }
    for k in ["items", "additionalProperties"] {
        if v[k].is_object() {
            objects(doc, &v[k], format!("{at}[]"), seen, out);
        }
    }
}

#[test]
fn every_operation_declares_the_answers_the_server_gives() {
    let doc = provisio_server::openapi();
    let problem = &doc["components"]["schemas"]["Problem"];
    for f in ["type", "title", "status", "detail"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == f),
            "Problem.{f}"
        );
    }
    let field = &doc["components"]["schemas"]["FieldProblem"];
    for f in ["field", "rule", "message"] {
        assert!(field["properties"].get(f).is_some(), "FieldProblem.{f}");
    }
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let what = format!("{} {path}", method.to_uppercase());
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if path.starts_with("/v1/") {
                for s in ["401", "403", "429", "503"] {
                    assert!(has(s), "{what}: {s} undeclared for a keyed operation");
                }
            }
            if params.iter().any(|p| p["in"] == "path") {
                assert!(
                    has("400") && has("404"),
                    "{what}: a path id can be malformed or unknown"
                );
            }
            if params.iter().any(|p| p["in"] == "query") {
                assert!(has("400"), "{what}: a query can be malformed");
            }
            if let Some(body) = op.get("requestBody") {
                for s in ["400", "413", "415", "422"] {
                    assert!(
                        has(s),
                        "{what}: {s} undeclared for an operation with a body"
                    );
                }
                assert!(
                    body["required"].is_boolean(),
                    "{what}: say whether the body may be left out"
                );
                for (media, c) in body["content"].as_object().unwrap() {
                    let variants = c["schema"]["oneOf"].as_array().cloned().unwrap_or_default();
                    assert!(
                        !variants.iter().any(|v| v["type"] == "null"),
                        "{what} {media}: a body that may be left out is optional, not null"
                    );
                    let mut found = Vec::new();
                    objects(
                        &doc,
                        &c["schema"],
                        what.clone(),
                        &mut Vec::new(),
                        &mut found,
                    );
                    for (at, o) in found {
                        assert_eq!(
                            o["additionalProperties"], false,
                            "{at}: bodies refuse unknown fields, so the schema must say so"
                        );
                    }
                }
            }
            for (status, r) in responses {
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                let r = resolve(&doc, r);
                let content = r["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{what} {status}: no content"));
                assert_eq!(
                    content.keys().collect::<Vec<_>>(),
                    ["application/problem+json"],
                    "{what} {status}: errors are problem+json"
                );
                assert_eq!(
                    content["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{what} {status}"
                );
                if status == "429" || status == "503" {
                    assert!(
                        r["headers"]["Retry-After"].is_object(),
                        "{what} {status}: Retry-After"
                    );
                }
            }
        }
    }
    assert!(operations >= 70, "{operations} operations");
}
