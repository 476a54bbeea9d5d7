//! The `whmcs` modules: an existing WHMCS server module file
//! (`<modules_dir>/servers/NAME/NAME.php`) run with `php` under the `script` module's
//! confinement, one Provisio module `whmcs-NAME` per file. The runner
//! (`runner.php`, embedded) stands in for the parts of WHMCS a self-contained module uses;
//! `docs/modules/whmcs.md` has the mapping and what is not provided.

mod params;
pub mod schema;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use provisio_core::module::{
    Action, ActionReply, ActionRequest, Capability, Module, ModuleError, ModuleInfo, RemoteAccount,
    Secrets,
};
use provisio_core::settings::{Field, Settings, SettingsSchema};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::script::{path, process};
use schema::ConfigOption;

/// The runner, passed with `php -r` (its text holds no secrets; the request goes on stdin).
const RUNNER: &str = include_str!("runner.php");
/// The interpreter, found on `PATH` (the only variable of the engine's environment, with
/// `HOME` and `LANG`, that the process sees).
pub const PHP: &str = "php";
const DEFAULT_TIMEOUT_SECONDS: i64 = 30;
const MAX_TIMEOUT_SECONDS: i64 = 3600;
/// How long reading a module's declarations at start-up may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(20);
const EXCERPT_CHARS: usize = 500;

/// The WHMCS functions that map onto a Provisio capability.
const FUNCTIONS: [(&str, Capability); 10] = [
    ("CreateAccount", Capability::Create),
    ("SuspendAccount", Capability::Suspend),
    ("UnsuspendAccount", Capability::Unsuspend),
    ("TerminateAccount", Capability::Terminate),
    ("ChangePassword", Capability::ChangePassword),
    ("ChangePackage", Capability::ChangePackage),
    ("Renew", Capability::Renew),
    ("TestConnection", Capability::TestConnection),
    ("ListAccounts", Capability::ListAccounts),
    ("ServiceSingleSignOn", Capability::LoginUrl),
];

/// The runner's answer.
#[derive(Debug, Default, Deserialize)]
struct Reply {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    threw: Option<String>,
    #[serde(default)]
    fatal: Option<String>,
    #[serde(default)]
    missing: Option<String>,
    #[serde(default)]
    logs: Vec<LogEntry>,
    #[serde(default)]
    outputs: Settings,
    #[serde(default)]
    printed: String,
    /// PHP's warnings and notices, secrets removed.
    #[serde(skip)]
    stderr: String,
    // describe
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    config_options: Option<Value>,
    #[serde(default)]
    admin_buttons: Option<Value>,
    #[serde(default)]
    client_buttons: Option<Value>,
}

/// One `logModuleCall` entry, already scrubbed of the module's `$replaceVars`.
#[derive(Debug, Deserialize)]
struct LogEntry {
    #[serde(default)]
    action: String,
    #[serde(default)]
    request: String,
    #[serde(default)]
    response: String,
    #[serde(default)]
    processed: String,
}

/// One WHMCS server module file.
pub struct WhmcsModule {
    info: ModuleInfo,
    /// The WHMCS name, the prefix of its functions.
    name: String,
    /// The file, relative to the modules directory (resolved again at every call, so a
    /// file replaced by a link outside the directory is refused then too).
    relative: String,
    modules_dir: PathBuf,
    php: PathBuf,
    options: Vec<ConfigOption>,
    /// Custom action name => function suffix, from the custom button arrays.
    buttons: BTreeMap<String, String>,
}

/// A custom action's name for a button function (`resetQuota` -> `reset_quota`).
fn action_name(function: &str) -> String {
    let mut out = String::new();
    for c in function.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// Finds `<modules_dir>/servers/NAME/NAME.php` files and reads each one's declarations
/// with `php`. A file that cannot be described is skipped with a warning naming why, so
/// one broken module does not stop the others.
pub fn discover(modules_dir: &Path, php: &Path) -> Vec<WhmcsModule> {
    let servers = modules_dir.join("servers");
    let Ok(entries) = std::fs::read_dir(&servers) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.starts_with(|c: char| c.is_ascii_lowercase())
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|n| servers.join(n).join(format!("{n}.php")).is_file())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        match WhmcsModule::describe_blocking(modules_dir, php, &name) {
            Ok(m) => out.push(m),
            Err(why) => tracing::warn!(module = %name, error = %why, "WHMCS module skipped"),
        }
    }
    out
}

impl WhmcsModule {
    /// Reads `NAME`'s declarations. Runs on a thread of its own with a small runtime, so
    /// that it works whether or not the caller is inside one (start-up builds the registry
    /// from synchronous code).
    pub fn describe_blocking(modules_dir: &Path, php: &Path, name: &str) -> Result<Self, String> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("no runtime to run php: {e}"))?;
                rt.block_on(Self::describe(modules_dir, php, name))
            })
            .join()
            .unwrap_or_else(|_| Err("describing the module panicked".into()))
        })
    }

    /// Reads `NAME`'s declarations: its functions, `_MetaData`, `_ConfigOptions` and the
    /// custom button arrays.
    pub async fn describe(modules_dir: &Path, php: &Path, name: &str) -> Result<Self, String> {
        let relative = format!("servers/{name}/{name}.php");
        let suffixes: Vec<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
        let request = json!({"describe": suffixes});
        let reply = run_runner(
            modules_dir,
            php,
            &relative,
            name,
            request,
            DESCRIBE_TIMEOUT,
            &[],
        )
        .await
        .map_err(|e| e.message)?;
        if let Some(why) = reply.fatal.or(reply.threw) {
            return Err(format!("loading {relative} failed: {why}"));
        }
        let (product_schema, options) =
            schema::from_config_options(reply.config_options.as_ref().unwrap_or(&Value::Null))?;
        let mut capabilities: Vec<Capability> = FUNCTIONS
            .iter()
            .filter(|(f, _)| reply.functions.iter().any(|g| g == f))
            .map(|(_, c)| *c)
            .collect();
        // WHMCS has no single-account lookup; the listing answers it.
        if capabilities.contains(&Capability::ListAccounts) {
            capabilities.push(Capability::Lookup);
        }
        let mut buttons = BTreeMap::new();
        for arr in [&reply.admin_buttons, &reply.client_buttons]
            .into_iter()
            .flatten()
        {
            if let Value::Object(m) = arr {
                for function in m.values().filter_map(Value::as_str) {
                    let action = action_name(function);
                    if !matches!(Action::parse(&action), Ok(Action::Custom(_))) {
                        return Err(format!(
                            "custom button function {function:?} does not make a custom action name"
                        ));
                    }
                    buttons.insert(action, function.to_string());
                }
            }
        }
        let display = reply
            .metadata
            .as_ref()
            .and_then(|m| m.get("DisplayName"))
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_string();
        let info = ModuleInfo {
            name: format!("whmcs-{name}"),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!("The WHMCS server module {display} ({relative}), run with php."),
            capabilities,
            custom_actions: buttons.keys().cloned().collect(),
            server_schema: server_schema(),
            product_schema,
            // Service settings stand in for WHMCS's per-service custom fields, which only
            // the module knows.
            service_schema: SettingsSchema::new(vec![]).allow_extra(),
        };
        Ok(Self {
            info,
            name: name.to_string(),
            relative,
            modules_dir: modules_dir.to_path_buf(),
            php: php.to_path_buf(),
            options,
            buttons,
        })
    }

    /// The WHMCS function an action calls.
    fn function_for(&self, action: &Action) -> Result<String, ModuleError> {
        let suffix = match action {
            Action::Create => "CreateAccount",
            Action::Suspend => "SuspendAccount",
            Action::Unsuspend => "UnsuspendAccount",
            Action::Terminate => "TerminateAccount",
            Action::ChangePassword => "ChangePassword",
            Action::ChangePackage => "ChangePackage",
            Action::Renew => "Renew",
            Action::TestConnection => "TestConnection",
            Action::ListAccounts | Action::Lookup => "ListAccounts",
            Action::LoginUrl => "ServiceSingleSignOn",
            Action::Custom(name) => {
                return self.buttons.get(name.as_str()).cloned().ok_or_else(|| {
                    ModuleError::permanent(format!("{} has no custom button for {name}", self.name))
                })
            }
            other => {
                return Err(ModuleError::permanent(format!(
                    "WHMCS modules have no function for {other}"
                )))
            }
        };
        Ok(suffix.to_string())
    }
}

fn server_schema() -> SettingsSchema {
    SettingsSchema::new(vec![
        Field::string("hostname", "Hostname").help("WHMCS's serverhostname."),
        Field::string("ip", "IP address").help("WHMCS's serverip."),
        Field::string("username", "Username").help("WHMCS's serverusername."),
        Field::secret("password", "Password").help("WHMCS's serverpassword; stored encrypted."),
        Field::secret("access_hash", "Access hash").help("WHMCS's serveraccesshash (an API token); stored encrypted."),
        Field::boolean("secure", "Secure").default_value(true).help("WHMCS's serversecure; also sets serverhttpprefix."),
        Field::integer("port", "Port", Some(1), Some(65535)).help("WHMCS's serverport."),
        Field::integer("timeout_seconds", "Timeout (seconds)", Some(1), Some(MAX_TIMEOUT_SECONDS))
            .default_value(DEFAULT_TIMEOUT_SECONDS)
            .help("After this long php's process group is killed and the attempt counts as an unknown outcome."),
    ])
}

/// Runs the runner on `relative` with `request` on stdin.
async fn run_runner(
    modules_dir: &Path,
    php: &Path,
    relative: &str,
    name: &str,
    mut request: Value,
    timeout: Duration,
    secrets: &[&str],
) -> Result<Reply, ModuleError> {
    let resolved = path::resolve_file(modules_dir, relative)?;
    request["file"] = json!(resolved.program.to_string_lossy());
    request["module"] = json!(name);
    let stdin = serde_json::to_vec(&request)
        .map_err(|_| ModuleError::permanent("the request could not be encoded as JSON"))?;
    let code = RUNNER.trim_start_matches("<?php").trim_start();
    let cwd = resolved
        .program
        .parent()
        .unwrap_or(&resolved.dir)
        .to_path_buf();
    let args: [&OsStr; 4] = [
        OsStr::new("-d"),
        OsStr::new("display_errors=stderr"),
        OsStr::new("-r"),
        OsStr::new(code),
    ];
    let finished = match process::run_with_args(php, &args, &cwd, stdin, timeout).await {
        Ok(f) => f,
        Err(process::RunError::Spawn(e)) => {
            return Err(ModuleError::permanent(format!(
                "could not start {} for {relative}: {e} (is php installed?)",
                php.display()
            )))
        }
        Err(process::RunError::Io(e)) => {
            return Err(ModuleError::unknown(format!(
                "lost contact with php running {relative}: {e}; the remote may have acted"
            )))
        }
        Err(process::RunError::TimedOut) => {
            return Err(ModuleError::unknown(format!(
                "{relative} timed out after {}s and was killed; the remote may have acted",
                timeout.as_secs()
            )))
        }
    };
    let stdout = String::from_utf8_lossy(&finished.stdout.bytes);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let stderr = excerpt(&String::from_utf8_lossy(&finished.stderr.bytes), secrets);
    match serde_json::from_str::<Reply>(last) {
        Ok(reply) => Ok(Reply { stderr, ..reply }),
        Err(_) => Err(ModuleError::unknown(format!(
            "php gave no answer for {relative} ({}); the remote may have acted; stderr: {}",
            finished.status,
            if stderr.is_empty() {
                "(empty)".into()
            } else {
                stderr
            }
        ))),
    }
}

/// The end of `text` (where PHP says what failed), secrets taken out first so the cut
/// cannot split one.
fn excerpt(text: &str, secrets: &[&str]) -> String {
    let clean = provisio_core::module::redact(text.trim(), secrets);
    let n = clean.chars().count();
    clean
        .chars()
        .skip(n.saturating_sub(EXCERPT_CHARS))
        .collect()
}

#[async_trait::async_trait]
impl Module for WhmcsModule {
    fn info(&self) -> &ModuleInfo {
        &self.info
    }

    async fn call(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        let secrets = crate::secrets_of(self, request);
        let function = self.function_for(&request.action)?;
        let timeout_seconds = request
            .server
            .settings
            .get("timeout_seconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
            .clamp(1, MAX_TIMEOUT_SECONDS);
        let params = params::build(&self.name, &self.options, request);
        let body = json!({"function": function, "params": params});
        let reply = run_runner(
            &self.modules_dir,
            &self.php,
            &self.relative,
            &self.name,
            body,
            Duration::from_secs(timeout_seconds.unsigned_abs()),
            &secrets.as_strs(),
        )
        .await
        .map_err(|e| read_only_is_transient(&request.action, e))?;
        self.surface(request, &function, &reply, &secrets);
        self.outcome(request, &function, reply)
    }
}

/// A read that ended without an answer changed nothing, so trying again later is all
/// there is to it (as with the `script` module).
fn read_only_is_transient(action: &Action, e: ModuleError) -> ModuleError {
    if action.is_read_only() && e.kind == provisio_core::module::ErrorKind::Unknown {
        ModuleError::transient(e.message.replace("; the remote may have acted", ""))
    } else {
        e
    }
}

impl WhmcsModule {
    /// Puts the module's `logModuleCall` entries (and anything it printed) into Provisio's
    /// log, with the call's secrets taken out on top of the module's own `$replaceVars`.
    fn surface(&self, request: &ActionRequest, function: &str, reply: &Reply, secrets: &Secrets) {
        for entry in &reply.logs {
            tracing::info!(
                module = %self.info.name,
                function,
                job_action = %request.action,
                server = request.server.id,
                service = request.service.as_ref().map(|s| s.id),
                call = %secrets.redact(&entry.action),
                request = %secrets.redact(&entry.request),
                response = %secrets.redact(&entry.response),
                processed = %secrets.redact(&entry.processed),
                "logModuleCall"
            );
        }
        if !reply.stderr.is_empty() {
            tracing::debug!(
                module = %self.info.name,
                function,
                stderr = %reply.stderr,
                "php wrote to stderr"
            );
        }
        if !reply.printed.trim().is_empty() {
            tracing::debug!(
                module = %self.info.name,
                function,
                printed = %secrets.redact(&reply.printed),
                "WHMCS module printed output"
            );
        }
    }

    fn outcome(
        &self,
        request: &ActionRequest,
        function: &str,
        reply: Reply,
    ) -> Result<ActionReply, ModuleError> {
        let full = format!("{}_{function}", self.name);
        let failed = |why: String| {
            read_only_is_transient(
                &request.action,
                ModuleError::unknown(format!("{full} {why}; the remote may have acted")),
            )
        };
        if let Some(why) = reply.fatal {
            return Err(failed(format!("stopped with a fatal error: {why}")));
        }
        if let Some(why) = reply.threw {
            return Err(failed(format!("threw {why}")));
        }
        if let Some(missing) = reply.missing {
            return Err(ModuleError::permanent(format!("{missing} is not defined")));
        }
        let result = reply.result.unwrap_or(Value::Null);
        match &request.action {
            Action::TestConnection => {
                success_array(&full, &result, "error")?;
                Ok(ActionReply::default())
            }
            Action::LoginUrl => {
                success_array(&full, &result, "errorMsg")?;
                let url = result
                    .get("redirectTo")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ModuleError::permanent(format!("{full} returned no redirectTo"))
                    })?;
                Ok(ActionReply {
                    url: Some(url.to_string()),
                    ..ActionReply::default()
                })
            }
            Action::ListAccounts | Action::Lookup => {
                success_array(&full, &result, "error")?;
                let accounts = accounts(&full, &result)?;
                if request.action == Action::Lookup {
                    let wanted = request.service.as_ref().map(|s| s.username.as_str());
                    return Ok(ActionReply {
                        account: accounts
                            .into_iter()
                            .find(|a| Some(a.username.as_str()) == wanted),
                        ..ActionReply::default()
                    });
                }
                Ok(ActionReply {
                    accounts,
                    ..ActionReply::default()
                })
            }
            _ => match result {
                Value::String(s) if s == "success" => Ok(ActionReply {
                    outputs: reply.outputs,
                    ..ActionReply::default()
                }),
                Value::String(s) if !s.trim().is_empty() => {
                    Err(ModuleError::permanent(format!("{full}: {s}")))
                }
                other => Err(failed(format!(
                    "returned {} instead of \"success\" or an error message",
                    shape(&other)
                ))),
            },
        }
    }
}

fn shape(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "an empty string",
        Value::Array(_) | Value::Object(_) => "an array",
    }
}

/// Checks a `['success' => bool, ERROR_KEY => string]` answer.
fn success_array(full: &str, result: &Value, error_key: &str) -> Result<(), ModuleError> {
    match result.get("success") {
        Some(Value::Bool(true)) => Ok(()),
        Some(Value::Bool(false)) => {
            let why = result
                .get(error_key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("no reason given");
            Err(ModuleError::permanent(format!("{full}: {why}")))
        }
        _ => Err(ModuleError::transient(format!(
            "{full} returned {} without a boolean success",
            shape(result)
        ))),
    }
}

/// `_ListAccounts`' `accounts`: `username`, `status` (WHMCS's `Status::ACTIVE`, …) and
/// `product` (the package).
fn accounts(full: &str, result: &Value) -> Result<Vec<RemoteAccount>, ModuleError> {
    let list = match result.get("accounts") {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Object(m)) => m.values().cloned().collect(),
        None => Vec::new(),
        Some(_) => {
            return Err(ModuleError::transient(format!(
                "{full} returned accounts that are not a list"
            )))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_string);
            let username = field("username").filter(|u| !u.is_empty()).ok_or_else(|| {
                ModuleError::transient(format!("{full}: account {i} has no username"))
            })?;
            Ok(RemoteAccount {
                username,
                status: field("status").map(|s| s.to_ascii_lowercase()),
                package: field("product"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn button_functions_become_snake_case_action_names() {
        assert_eq!(action_name("resetQuota"), "reset_quota");
        assert_eq!(action_name("ResetQuota"), "reset_quota");
        assert_eq!(action_name("reset_quota"), "reset_quota");
        assert_eq!(action_name("Re-Send Mail"), "re_send_mail");
    }
}
