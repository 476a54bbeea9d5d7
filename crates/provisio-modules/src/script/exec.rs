//! Running an executable from a confined directory for callers other than the module
//! (script handlers): the same path rules, clean environment and process-group timeout.

use std::path::Path;
use std::time::Duration;

use super::{path, process};

/// What the executable left behind: exit code (`None` when killed by a signal) and output.
#[derive(Debug)]
pub struct ExecOutput {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why it could not be run to the end; the message never holds stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// The path is outside the directory, missing or not executable, or spawning failed.
    NotRunnable(String),
    Io(String),
    TimedOut(Duration),
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRunnable(m) => f.write_str(m),
            Self::Io(m) => write!(f, "lost contact with the executable: {m}"),
            Self::TimedOut(d) => write!(f, "timed out after {}s and was killed", d.as_secs_f64()),
        }
    }
}

impl std::error::Error for ExecError {}

/// Runs `executable` (relative to `dir`, which it may not leave) with `stdin` and waits at
/// most `timeout`.
pub async fn run_confined(
    dir: &Path,
    executable: &str,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<ExecOutput, ExecError> {
    let resolved =
        path::resolve_executable(dir, executable).map_err(|e| ExecError::NotRunnable(e.message))?;
    match process::run(&resolved.program, &resolved.dir, stdin, timeout).await {
        Ok(f) => Ok(ExecOutput {
            code: f.status.code(),
            stdout: f.stdout.bytes,
            stderr: f.stderr.bytes,
        }),
        Err(process::RunError::Spawn(e)) => Err(ExecError::NotRunnable(format!(
            "executable {executable:?} could not be started: {e}"
        ))),
        Err(process::RunError::Io(e)) => Err(ExecError::Io(e.to_string())),
        Err(process::RunError::TimedOut) => Err(ExecError::TimedOut(timeout)),
    }
}

/// Checks that `executable` names a runnable file inside `dir`, for refusing a bad handler
/// when it is stored rather than when it first runs.
pub fn check_confined(dir: &Path, executable: &str) -> Result<(), String> {
    path::resolve_executable(dir, executable)
        .map(|_| ())
        .map_err(|e| e.message)
}
