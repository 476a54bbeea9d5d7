//! Templates of the `http` module: minijinja over the action request, with strict undefined
//! variables, typed JSON leaves and error messages that never carry a rendered value.

use base64::Engine as _;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value as Jinja};
use serde_json::Value;

use crate::render::TemplateLimits;

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

/// Around a value printed in a URL template, its bytes in hex between: private-use
/// characters, refused in the template itself, so a value can never forge a boundary.
const VALUE_OPEN: char = '\u{E000}';
const VALUE_CLOSE: char = '\u{E001}';

fn null_printed() -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, NULL_PRINTED)
}

/// What both environments share: the same rules and the same limits.
fn environment(limits: &TemplateLimits) -> Environment<'static> {
    let mut env = Environment::new();
    // A typo in a variable name must fail the action, not send an empty value to the
    // remote (e.g. `DELETE /users/` instead of `DELETE /users/alice`).
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Debug mode copies the render state (service password included) into errors.
    env.set_debug(false);
    limits.apply(&mut env);
    env.add_filter("urlencode", urlencode);
    env.add_filter("b64encode", b64encode);
    env
}

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

/// The configured minijinja environments, shared by every call of the module: one for
/// headers, query values, bodies and cursors, one for URLs (whose values are encoded).
pub(crate) struct Templates {
    env: Environment<'static>,
    url_env: Environment<'static>,
    limits: TemplateLimits,
}

impl Templates {
    pub(crate) fn new() -> Self {
        Self::with_limits(TemplateLimits::default())
    }

    pub(crate) fn with_limits(limits: TemplateLimits) -> Self {
        let mut env = environment(&limits);
        env.set_formatter(|out, state, value| {
            // Printing a JSON null would write `none`; an explicit error is safer for the
            // same reason as strict undefined variables.
            if value.is_none() {
                return Err(null_printed());
            }
            minijinja::escape_formatter(out, state, value)
        });
        let mut url_env = environment(&limits);
        url_env.set_formatter(|out, state, value| {
            if value.is_none() {
                return Err(null_printed());
            }
            // A safe value (`| safe`, `| urlencode`) is URL text already; any other is
            // wrapped for `assemble_url`, which encodes it for where it landed.
            if value.is_safe() {
                return minijinja::escape_formatter(out, state, value);
            }
            let text = value.to_string();
            let mut marked = String::with_capacity(text.len() * 2 + 2);
            marked.push(VALUE_OPEN);
            for byte in text.bytes() {
                marked.push_str(&format!("{byte:02x}"));
            }
            marked.push(VALUE_CLOSE);
            out.write_str(&marked).map_err(minijinja::Error::from)
        });
        Self {
            env,
            url_env,
            limits,
        }
    }

    pub(crate) fn limits(&self) -> &TemplateLimits {
        &self.limits
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
        self.render_in(&self.env, source, ctx)
    }

    /// Renders a URL template: every value is percent-encoded, in the path as exactly one
    /// segment and after `?` as one query component, so no value can change the path or
    /// the query (see [`assemble_url`]).
    pub(crate) fn render_url(&self, source: &str, ctx: &Context) -> Result<String, RenderError> {
        let marked = self.render_in(&self.url_env, source, ctx)?;
        assemble_url(&marked).map_err(RenderError)
    }

    fn render_in(
        &self,
        env: &Environment<'static>,
        source: &str,
        ctx: &Context,
    ) -> Result<String, RenderError> {
        let template = env
            .template_from_str(source)
            .map_err(|e| RenderError(compile_message(&e)))?;
        self.limits
            .render(&template, &ctx.jinja)
            .map_err(|e| self.explain(&e, template.undeclared_variables(true), ctx))
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
            .map_err(|e| self.explain(&e, names(), ctx))?;
        if value.is_undefined() {
            let e = minijinja::Error::from(ErrorKind::UndefinedError);
            return Err(self.explain(&e, names(), ctx));
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

impl Templates {
    /// Describes a render error without its detail, which may quote a value (a filter that
    /// could not convert its input, say). An undefined variable is named by finding which
    /// of the template's dotted names the context lacks: names come from the template.
    fn explain(
        &self,
        e: &minijinja::Error,
        names: std::collections::HashSet<String>,
        ctx: &Context,
    ) -> RenderError {
        if let Some(limit) = self.limits.message(e) {
            return RenderError(limit);
        }
        explain(e, names, ctx)
    }
}

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

/// Percent-encodes everything but RFC 3986 unreserved characters, `/` included. The result
/// is marked safe, so a URL template does not encode it twice.
fn urlencode(value: &str) -> Jinja {
    Jinja::from_safe_string(percent_encode(value))
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_encoded(&mut out, value.as_bytes());
    out
}

fn push_encoded(out: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// Turns a rendered URL template into the URL text: each marked value percent-encoded
/// (everything but RFC 3986 unreserved characters, so `/`, `?`, `#`, `%` and `&` too). A
/// value before the first `?` or `#` of the template's own text is thus one path segment
/// or part of one; after it, one query component.
///
/// What encoding cannot stop is refused: a path segment that is `.` or `..` (URL parsers
/// resolve even `%2E%2E`, so it would move up the path) and a value that renders empty
/// as a whole segment (`/users/` instead of `/users/alice`). Messages quote no value.
fn assemble_url(marked: &str) -> Result<String, String> {
    let mut out = String::with_capacity(marked.len());
    let mut in_path = true;
    let mut empty_at = Vec::new();
    let mut rest = marked;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            VALUE_OPEN => {
                let end = rest.find(VALUE_CLOSE).ok_or_else(reserved_character)?;
                let bytes = decode_hex(&rest[..end]).ok_or_else(reserved_character)?;
                rest = &rest[end + VALUE_CLOSE.len_utf8()..];
                if in_path && bytes.is_empty() {
                    empty_at.push(out.len());
                }
                push_encoded(&mut out, &bytes);
            }
            VALUE_CLOSE => return Err(reserved_character()),
            '?' | '#' => {
                in_path = false;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    let path_end = out.find(['?', '#']).unwrap_or(out.len());
    let path_start = authority_end(&out);
    for at in empty_at {
        let before = out[..at].chars().next_back();
        let after = out[at..].chars().next();
        let starts = at == path_start || before == Some('/');
        let ends = at == path_end || after == Some('/');
        if starts && ends {
            return Err("a value in the URL path is empty, which would change the path                         (the segment it stands for would disappear)"
                .into());
        }
    }
    let dot_segment = out[path_start.min(path_end)..path_end]
        .split('/')
        .any(|segment| {
            matches!(
                segment.to_ascii_lowercase().as_str(),
                "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
            )
        });
    if dot_segment {
        return Err("the URL path has a `.` or `..` segment, which would move the request                     up the path; such a value cannot be sent as a path segment"
            .into());
    }
    Ok(out)
}

/// Where the path of an absolute `http(s)://host` URL starts; 0 for a relative one.
fn authority_end(url: &str) -> usize {
    let lower = url.trim_start().to_ascii_lowercase();
    let offset = url.len() - url.trim_start().len();
    for scheme in ["http://", "https://"] {
        if lower.starts_with(scheme) {
            let after = offset + scheme.len();
            return url[after..]
                .find(['/', '?', '#'])
                .map_or(url.len(), |i| after + i);
        }
    }
    0
}

fn reserved_character() -> String {
    "the URL contains a character reserved by the renderer (U+E000 or U+E001)".into()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
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

    #[test]
    fn url_values_are_one_segment_or_one_query_component() {
        let t = Templates::new();
        let c = ctx(
            json!({"service": {"username": "../admin?x=1#y", "id": 7, "dot": "..",
                                       "empty": "", "plain": "a.b", "sp": "a b&c=d"}}),
        );
        let url = |src: &str| t.render_url(src, &c);
        assert_eq!(
            url("/users/{{ service.username }}/keys").unwrap(),
            "/users/..%2Fadmin%3Fx%3D1%23y/keys"
        );
        assert_eq!(
            url("/users/{{ service.id }}?q={{ service.sp }}&v={{ service.plain }}").unwrap(),
            "/users/7?q=a%20b%26c%3Dd&v=a.b"
        );
        assert_eq!(
            url("https://h.example:8443/u/{{ service.plain }}").unwrap(),
            "https://h.example:8443/u/a.b"
        );
        // Encoded once, whether or not the old `urlencode` is still there.
        assert_eq!(
            url("/u/{{ service.sp | urlencode }}").unwrap(),
            url("/u/{{ service.sp }}").unwrap()
        );
        assert_eq!(
            url("/{{ 'v2/x' | safe }}/{{ service.plain }}").unwrap(),
            "/v2/x/a.b"
        );
        for bad in [
            "/users/{{ service.dot }}",
            "/users/{{ service.dot }}/x",
            "/users/{{ '.' }}?a=1",
            "https://h/{{ service.dot }}",
        ] {
            let e = url(bad).unwrap_err().to_string();
            assert!(e.contains("`..` segment"), "{bad}: {e}");
        }
        let e = url("/users/{{ service.empty }}").unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        assert!(url("/users/{{ service.empty }}x").is_ok());
        assert_eq!(url("/users?x={{ service.empty }}").unwrap(), "/users?x=");
        let e = url("/users/\u{E000}zz").unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn limits_fail_with_a_clear_message() {
        let t = Templates::with_limits(TemplateLimits {
            fuel: 1000,
            max_output_bytes: 10_000,
        });
        let c = ctx(json!({}));
        let bomb =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let e = t.render(bomb, &c).unwrap_err().to_string();
        assert_eq!(
            e,
            "the template ran out of fuel: it does too much work (limit 1000)"
        );
        let e = t.render_url(bomb, &c).unwrap_err().to_string();
        assert!(e.contains("ran out of fuel"), "{e}");
        let (_, e) = t
            .render_json(
                &json!({"a": ["{% for i in range(100000) %}{{ i }}{% endfor %}"]}),
                &c,
            )
            .unwrap_err();
        assert!(e.to_string().contains("ran out of fuel"), "{e}");
        let e = t.render("{{ 'x' * 10001 }}", &c).unwrap_err().to_string();
        assert_eq!(e, "the template's output exceeds 10000 bytes");
    }
}
