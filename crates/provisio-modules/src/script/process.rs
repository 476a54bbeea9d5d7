//! Running one executable: request on stdin, bounded capture of stdout and stderr, a clean
//! environment, and a deadline enforced on the whole process group.

use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How much of stdout and of stderr is kept; the rest is read and dropped so that a chatty
/// executable never blocks on a full pipe.
pub(crate) const CAPTURE_LIMIT: usize = 4 * 1024 * 1024;

/// The only variables of the engine's environment an executable sees. Everything else (the
/// database URL, cloud credentials, …) stays with the engine.
const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];
const FALLBACK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What a finished process left behind.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Captured,
    pub stderr: Captured,
}

#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub bytes: Vec<u8>,
    /// More was written than [`CAPTURE_LIMIT`].
    pub truncated: bool,
}

#[derive(Debug)]
pub(crate) enum RunError {
    /// The process could not be started.
    Spawn(io::Error),
    /// Reading, writing or waiting failed after the start.
    Io(io::Error),
    /// The deadline passed; the process group has been killed.
    TimedOut,
}

/// Runs `program` in `cwd` (its own process group), writes `stdin` to it and closes it, and
/// waits at most `timeout` for it to exit and close its output.
pub(crate) async fn run(
    program: &Path,
    cwd: &Path,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<Finished, RunError> {
    run_with_args(program, &[], cwd, stdin, timeout).await
}

/// [`run`] with arguments. They are visible to every user of the machine (`ps`), so they
/// never carry secrets: those go on stdin.
pub(crate) async fn run_with_args(
    program: &Path,
    args: &[&std::ffi::OsStr],
    cwd: &Path,
    stdin: Vec<u8>,
    timeout: Duration,
) -> Result<Finished, RunError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own lets a timeout kill whatever the executable started, not just
        // the executable.
        .process_group(0)
        .kill_on_drop(true);
    for name in INHERITED_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        } else if name == "PATH" {
            cmd.env(name, FALLBACK_PATH);
        }
    }

    let mut child = spawn_retrying_busy(&mut cmd)
        .await
        .map_err(RunError::Spawn)?;
    let mut group = GroupGuard(child.id().and_then(|pid| i32::try_from(pid).ok()));

    let child_stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let feed = async move {
        if let Some(mut pipe) = child_stdin {
            match pipe.write_all(&stdin).await {
                // An executable may answer without reading its input (e.g. a fixed error).
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(e),
                _ => {}
            }
            // Dropping the pipe closes it: the executable sees end of input.
        }
        Ok(())
    };
    let work = async {
        let (fed, out, err, status) =
            tokio::join!(feed, capture(stdout), capture(stderr), child.wait());
        fed?;
        Ok::<_, io::Error>(Finished {
            status: status?,
            stdout: out?,
            stderr: err?,
        })
    };

    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(finished)) => {
            // The executable exited and every holder of its pipes closed them; anything it
            // left running in the background is its own business.
            group.disarm();
            Ok(finished)
        }
        Ok(Err(e)) => Err(RunError::Io(e)),
        Err(_) => {
            group.kill();
            // Reap the executable so it does not linger as a zombie; after SIGKILL this is
            // immediate.
            let _ = child.wait().await;
            Err(RunError::TimedOut)
        }
    }
}

/// Reads a pipe to its end, keeping the first [`CAPTURE_LIMIT`] bytes.
async fn capture<R: AsyncRead + Unpin>(pipe: Option<R>) -> io::Result<Captured> {
    let mut captured = Captured::default();
    let Some(mut pipe) = pipe else {
        return Ok(captured);
    };
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = pipe.read(&mut chunk).await?;
        if n == 0 {
            return Ok(captured);
        }
        let room = CAPTURE_LIMIT - captured.bytes.len();
        if n > room {
            captured.truncated = true;
        }
        captured.bytes.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// Kills the executable's process group when the call ends without the group having
/// finished on its own: on timeout, and also when the caller drops the call (the engine's
/// own deadline), which `kill_on_drop` alone would handle only for the executable itself.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // The group id is the executable's pid, which cannot be reused while the
            // unreaped executable or any member of its group still exists.
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns, retrying briefly on ETXTBSY ("text file busy"). Another thread of this process
/// may fork while a module file is being written or replaced; until that child execs, it
/// holds the file open for writing and the kernel refuses to execute it. The window is
/// short, so a few quick retries are enough.
async fn spawn_retrying_busy(cmd: &mut Command) -> io::Result<tokio::process::Child> {
    let mut delay = Duration::from_millis(5);
    for _ in 0..6 {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    cmd.spawn()
}
