//! The `script` module: runs a local executable that speaks JSON on stdin and stdout, so a
//! module can be written in any language. The protocol is documented in
//! `docs/modules/script.md`; this file declares the settings and turns one call into one run.

pub mod exec;
pub(crate) mod path;
pub(crate) mod process;
mod reply;

use std::path::{Path, PathBuf};
use std::time::Duration;

use provisio_core::module::{
    Action, ActionReply, ActionRequest, Capability, Module, ModuleError, ModuleInfo,
};
use provisio_core::settings::{Field, Settings, SettingsSchema};
use serde_json::Value;

use process::RunError;

const DEFAULT_TIMEOUT_SECONDS: i64 = 30;
const MAX_TIMEOUT_SECONDS: i64 = 3600;
/// Longest stderr excerpt put into an error when the executable gave no reply.
const STDERR_EXCERPT_CHARS: usize = 500;

/// Runs executables found in one modules directory.
pub struct ScriptModule {
    info: ModuleInfo,
    modules_dir: PathBuf,
}

impl ScriptModule {
    /// A module whose executables live in `modules_dir` (also their working directory).
    pub fn new(modules_dir: PathBuf) -> Self {
        let server_schema = SettingsSchema::new(vec![
            Field::string("executable", "Executable")
                .required()
                .pattern(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*")
                .help("Path of the executable, relative to the configured modules directory; paths outside it are refused."),
            Field::integer("timeout_seconds", "Timeout (seconds)", Some(1), Some(MAX_TIMEOUT_SECONDS))
                .default_value(DEFAULT_TIMEOUT_SECONDS)
                .help("After this long the process group is killed and the attempt counts as an unknown outcome."),
            Field::secret("api_secret", "API secret")
                .help("A credential handed to the executable in server.settings; stored encrypted."),
        ])
        .allow_extra();
        // The executable alone knows what its product and service settings mean, so any
        // keys pass through to it.
        let product_schema = SettingsSchema::new(vec![]).allow_extra();
        let service_schema = SettingsSchema::new(vec![]).allow_extra();
        Self {
            info: ModuleInfo {
                name: "script".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                description: "Runs a local executable with a JSON request on stdin and a JSON reply on stdout.".into(),
                capabilities: Capability::lifecycle_and(&[Capability::Lookup, Capability::ListAccounts, Capability::Usage, Capability::TestConnection]),
                custom_actions: vec![],
                server_schema,
                product_schema,
                service_schema,
            },
            modules_dir,
        }
    }

    pub fn modules_dir(&self) -> &Path {
        &self.modules_dir
    }
}

impl Default for ScriptModule {
    fn default() -> Self {
        Self::new(PathBuf::from("modules"))
    }
}

/// Adds the string values of `settings` whose name says they are secret. Nested objects
/// (e.g. `params.new_product`) are searched by name.
fn collect_secrets<'a>(settings: &'a Settings, out: &mut Vec<&'a str>) {
    for (key, value) in settings {
        match value {
            Value::String(s) if sensitive_name(key) => out.push(s),
            Value::Object(inner) => collect_secrets(inner, out),
            _ => {}
        }
    }
}

fn sensitive_name(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
}

#[async_trait::async_trait]
impl Module for ScriptModule {
    fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// Undeclared settings pass through to the executable and may be credentials too, so
    /// any whose name says so (`new_password`, `db_password`, `token`, …) counts as secret.
    fn more_secrets(&self, request: &ActionRequest) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(service) = &request.service {
            collect_secrets(&service.settings, &mut out);
        }
        collect_secrets(&request.server.settings, &mut out);
        collect_secrets(&request.product.settings, &mut out);
        collect_secrets(&request.params, &mut out);
        out.into_iter().map(str::to_string).collect()
    }

    async fn call(&self, request: &ActionRequest) -> Result<ActionReply, ModuleError> {
        // Secrets are taken out where excerpts are cut, before the cut could split one; the
        // registry's layer redacts whatever else leaves.
        let secrets = crate::secrets_of(self, request);
        self.run(request, &secrets.as_strs()).await
    }
}

impl ScriptModule {
    async fn run(
        &self,
        request: &ActionRequest,
        secrets: &[&str],
    ) -> Result<ActionReply, ModuleError> {
        let settings = &request.server.settings;
        let executable = settings
            .get("executable")
            .and_then(Value::as_str)
            .ok_or_else(|| ModuleError::permanent("the server has no `executable` setting"))?;
        // Settings were validated against the schema; the clamp only guards hand-made ones.
        let timeout_seconds = settings
            .get("timeout_seconds")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
            .clamp(1, MAX_TIMEOUT_SECONDS);
        let resolved = path::resolve_executable(&self.modules_dir, executable)?;
        let stdin = serde_json::to_vec(request)
            .map_err(|_| ModuleError::permanent("the request could not be encoded as JSON"))?;

        tracing::debug!(
            action = %request.action,
            server = request.server.id,
            executable,
            "running script module"
        );
        let finished = match process::run(
            &resolved.program,
            &resolved.dir,
            stdin,
            Duration::from_secs(timeout_seconds.unsigned_abs()),
        )
        .await
        {
            Ok(finished) => finished,
            Err(RunError::Spawn(e)) => return Err(spawn_error(executable, &e)),
            // It started, so it may have acted before the pipe broke.
            Err(RunError::Io(e)) => {
                return Err(ModuleError::unknown(format!(
                    "lost contact with executable {executable:?}: {e}; the remote may have acted"
                )))
            }
            Err(RunError::TimedOut) => {
                return Err(ModuleError::unknown(format!(
                    "executable {executable:?} timed out after {timeout_seconds}s and was killed; the remote may have acted"
                )))
            }
        };

        let parsed = if finished.stdout.truncated {
            Err(reply::NotAReply(format!(
                "stdout exceeded {} MiB",
                process::CAPTURE_LIMIT / (1024 * 1024)
            )))
        } else {
            reply::parse(&finished.stdout.bytes, &request.action, secrets)
        };
        match parsed {
            Ok(outcome) => {
                if outcome.is_ok() && !finished.status.success() {
                    // The reply is the contract; the status is only worth a note.
                    tracing::warn!(
                        executable,
                        status = %finished.status,
                        "script module replied ok but exited unsuccessfully"
                    );
                }
                outcome
            }
            Err(reply::NotAReply(why)) => {
                let stderr =
                    reply::stderr_excerpt(&finished.stderr.bytes, secrets, STDERR_EXCERPT_CHARS);
                let stderr = if stderr.is_empty() {
                    "(empty)".to_string()
                } else {
                    stderr
                };
                let head = format!(
                    "executable {executable:?} gave no valid reply ({why}), {}",
                    finished.status
                );
                Err(no_reply(&request.action, head, &stderr))
            }
        }
    }
}

/// A run that started but left no reply. The executable may have changed the remote before
/// it died (killed, crashed, exited early), so a change is an unknown outcome that the
/// engine looks up rather than repeats. A read changed nothing and a lookup would tell
/// nothing more, so trying again later is all there is to it.
fn no_reply(action: &Action, head: String, stderr: &str) -> ModuleError {
    if action.is_read_only() {
        ModuleError::transient(format!("{head}; stderr: {stderr}"))
    } else {
        // The stderr excerpt stays last: its end is where a traceback says what failed.
        ModuleError::unknown(format!(
            "{head}; the remote may have acted; stderr: {stderr}"
        ))
    }
}

/// A program that cannot be started will not start on a retry either, unless the failure is
/// about resources (process or file limits).
fn spawn_error(executable: &str, e: &std::io::Error) -> ModuleError {
    let message = format!("could not start executable {executable:?}: {e}");
    let hopeless = matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    ) || e.raw_os_error() == Some(libc::ENOEXEC);
    if hopeless {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (is the interpreter named on its #! line installed?)"
        } else {
            ""
        };
        ModuleError::permanent(format!("{message}{hint}"))
    } else {
        ModuleError::transient(message)
    }
}
