//! Templates of the `http` module: minijinja over the action request, with strict undefined
//! variables, typed JSON leaves and error messages that never carry a rendered value.

use base64::Engine as _;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value as Jinja};
use serde_json::Value;

/// The variables a template may start from, besides `response` where it is offered.
pub(crate) const ROOTS: [&str; 7] = [
    "action",
    "idempotency_key",
    "server",
    "product",
    "service",
    "client",
    "params",
];

/// The formatter's own error, which quotes nothing and so may be shown.
const NULL_PRINTED: &str = "a null value cannot be printed (use `x or ''` for an empty text)";

/// The variables a rendering sees, kept both as JSON (to explain an undefined variable) and
/// as a minijinja value (to render without serialising again per template).
pub(crate) struct Context {
    json: Value,
    jinja: Jinja,
}

impl Context {
    /// `root` must be a JSON object: the serialised action request, possibly with `response`.
    pub(crate) fn new(root: Value) -> Self {
        let jinja = Jinja::from_serialize(&root);
        Self { json: root, jinja }
    }
}

/// Why a template did not render. `Display` names what went wrong, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenderError(String);

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A configured minijinja environment, shared by every call of the module.
pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub(crate) fn new() -> Self {
        let mut env = Environment::new();
        // A typo in a variable name must fail the action, not send an empty value to the
        // remote (e.g. `DELETE /users/` instead of `DELETE /users/alice`).
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Debug mode copies the render state (service password included) into errors.
        env.set_debug(false);
        env.set_formatter(|out, state, value| {
            // Printing a JSON null would write `none`; an explicit error is safer for the
            // same reason as strict undefined variables.
            if value.is_none() {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    NULL_PRINTED,
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.add_filter("urlencode", urlencode);
        env.add_filter("b64encode", b64encode);
        Self { env }
    }

    /// Checks that a template compiles and starts only from known variables (`roots`).
    /// The message is for a person configuring the server.
    pub(crate) fn check(&self, source: &str, roots: &[&str]) -> Result<(), String> {
        let template = self
            .env
            .template_from_str(source)
            .map_err(|e| compile_message(&e))?;
        unknown_root(template.undeclared_variables(false), roots, &self.env)
    }

    /// Like [`Templates::check`], for the expression inside a typed leaf.
    pub(crate) fn check_expression(&self, expr: &str, roots: &[&str]) -> Result<(), String> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| compile_message(&e))?;
        unknown_root(compiled.undeclared_variables(false), roots, &self.env)
    }

    /// Renders a text template.
    pub(crate) fn render(&self, source: &str, ctx: &Context) -> Result<String, RenderError> {
        let template = self
            .env
            .template_from_str(source)
            .map_err(|e| RenderError(compile_message(&e)))?;
        template
            .render(&ctx.jinja)
            .map_err(|e| explain(&e, template.undeclared_variables(true), ctx))
    }

    /// Renders every string leaf of a JSON value; a leaf that is exactly one `{{ expr }}`
    /// becomes the expression's JSON value. On failure, returns the path of the leaf below
    /// `value` (`user.name`, `items.0`) with the error.
    pub(crate) fn render_json(
        &self,
        value: &Value,
        ctx: &Context,
    ) -> Result<Value, (String, RenderError)> {
        match value {
            Value::String(text) => match sole_expression(text) {
                Some(expr) => self.eval(expr, ctx),
                None => self.render(text, ctx).map(Value::String),
            }
            .map_err(|e| (String::new(), e)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    self.render_json(item, ctx)
                        .map_err(|(path, e)| (join(&i.to_string(), &path), e))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(key, item)| match self.render_json(item, ctx) {
                    Ok(v) => Ok((key.clone(), v)),
                    Err((path, e)) => Err((join(key, &path), e)),
                })
                .collect::<Result<serde_json::Map<_, _>, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn eval(&self, expr: &str, ctx: &Context) -> Result<Value, RenderError> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| RenderError(compile_message(&e)))?;
        let names = || compiled.undeclared_variables(true);
        let value = compiled
            .eval(&ctx.jinja)
            .map_err(|e| explain(&e, names(), ctx))?;
        if value.is_undefined() {
            let e = minijinja::Error::from(ErrorKind::UndefinedError);
            return Err(explain(&e, names(), ctx));
        }
        serde_json::to_value(&value)
            .map_err(|_| RenderError("the value cannot be written as JSON".into()))
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// The expression of a text that is exactly one `{{ … }}` (whitespace control allowed).
pub(crate) fn sole_expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    if ["{{", "}}", "{%", "%}", "{#", "#}"]
        .iter()
        .any(|tag| inner.contains(tag))
    {
        return None;
    }
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    Some(inner.trim())
}

fn join(head: &str, tail: &str) -> String {
    if tail.is_empty() {
        head.to_string()
    } else {
        format!("{head}.{tail}")
    }
}

/// A syntax error with its line; the detail describes the syntax, not context values.
fn compile_message(e: &minijinja::Error) -> String {
    let mut message = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        message.push_str(&format!(" (line {line})"));
    }
    message
}

fn unknown_root(
    names: std::collections::HashSet<String>,
    roots: &[&str],
    env: &Environment<'_>,
) -> Result<(), String> {
    let mut unknown: Vec<_> = names
        .into_iter()
        .filter(|n| !roots.contains(&n.as_str()) && env.globals().all(|(g, _)| g != n))
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(name) => Err(format!(
            "unknown variable `{name}` (variables: {})",
            roots.join(", ")
        )),
    }
}

/// Describes a render error without its detail, which may quote a value (a filter that
/// could not convert its input, say). An undefined variable is named by finding which of
/// the template's dotted names the context lacks: names come from the template, not data.
fn explain(
    e: &minijinja::Error,
    names: std::collections::HashSet<String>,
    ctx: &Context,
) -> RenderError {
    let at_line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
    if e.kind() == ErrorKind::UndefinedError {
        let mut names: Vec<_> = names.into_iter().collect();
        names.sort();
        if let Some(missing) = names.iter().find(|n| !defined(&ctx.json, n)) {
            return RenderError(format!("undefined variable `{missing}`{at_line}"));
        }
        return RenderError(format!("undefined value{at_line}"));
    }
    if e.detail() == Some(NULL_PRINTED) {
        return RenderError(format!("{NULL_PRINTED}{at_line}"));
    }
    RenderError(format!("{}{at_line}", e.kind()))
}

fn defined(root: &Value, dotted: &str) -> bool {
    let mut at = root;
    for part in dotted.split('.') {
        match at.get(part) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// Percent-encodes everything but RFC 3986 unreserved characters, `/` included, so a value
/// can be placed in one path segment.
fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn b64encode(value: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(v: Value) -> Context {
        Context::new(v)
    }

    #[test]
    fn sole_expression_only_for_one_tag() {
        assert_eq!(sole_expression("{{ a.b }}"), Some("a.b"));
        assert_eq!(sole_expression("{{- a -}}"), Some("a"));
        assert_eq!(sole_expression("{{ a }}{{ b }}"), None);
        assert_eq!(sole_expression("x{{ a }}"), None);
        assert_eq!(sole_expression(" {{ a }}"), None);
    }

    #[test]
    fn typed_leaves_keep_their_type() {
        let t = Templates::new();
        let c = ctx(json!({"product": {"settings": {"quota": 100, "tags": ["a"]}}}));
        let body = json!({"q": "{{ product.settings.quota }}", "s": "n={{ product.settings.quota }}",
                          "t": ["{{ product.settings.tags }}"], "k": 5});
        assert_eq!(
            t.render_json(&body, &c).unwrap(),
            json!({"q": 100, "s": "n=100", "t": [["a"]], "k": 5})
        );
    }

    #[test]
    fn undefined_variables_are_named_not_valued() {
        let t = Templates::new();
        let c = ctx(json!({"service": {"username": "alice", "password": "hunter22"}}));
        let e = t
            .render("{{ service.password }}/{{ service.usernme }}", &c)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "undefined variable `service.usernme` (line 1)"
        );
        let (path, e) = t
            .render_json(&json!({"a": [1, "{{ service.nope }}"]}), &c)
            .unwrap_err();
        assert_eq!(path, "a.1");
        assert!(e.to_string().contains("service.nope"), "{e}");
        assert!(!e.to_string().contains("hunter22"));
    }

    #[test]
    fn default_filter_covers_undefined_and_null_is_refused() {
        let t = Templates::new();
        let c = ctx(json!({"params": {}, "service": null}));
        assert_eq!(
            t.render("[{{ params.cursor | default('') }}]", &c).unwrap(),
            "[]"
        );
        assert!(t.render("{{ service.username }}", &c).is_err());
        let c = ctx(json!({"params": {"x": null}}));
        assert!(t
            .render("{{ params.x }}", &c)
            .unwrap_err()
            .to_string()
            .contains("null"));
        assert_eq!(t.render("{{ params.x or '' }}", &c).unwrap(), "");
    }

    #[test]
    fn checks_syntax_and_roots() {
        let t = Templates::new();
        assert!(t.check("{{ service.username }}", &ROOTS).is_ok());
        assert!(t.check("{{ range(3) | join(',') }}", &ROOTS).is_ok());
        assert!(t
            .check("{{ servce.username }}", &ROOTS)
            .unwrap_err()
            .contains("servce"));
        assert!(t.check("{{ service.username", &ROOTS).is_err());
    }

    #[test]
    fn filters() {
        let t = Templates::new();
        let c = ctx(json!({"v": "a b/c"}));
        assert_eq!(t.render("{{ v | urlencode }}", &c).unwrap(), "a%20b%2Fc");
        assert_eq!(t.render("{{ 'u:p' | b64encode }}", &c).unwrap(), "dTpw");
    }
}
