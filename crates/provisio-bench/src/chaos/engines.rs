//! The chaos run's engines: real `provisio serve` processes on fixed loopback ports, started,
//! signalled (SIGKILL or SIGTERM), waited for and started again with the same config and
//! port, with the peak resident memory of every process they ran.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub struct EngineProc {
    pub name: &'static str,
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    /// The largest VmHWM (peak resident set) seen in any process of this engine, in KiB.
    pub peak_kib: u64,
    pub starts: u32,
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port nothing listens on right now. The engine keeps it across restarts; the
/// listener sets SO_REUSEADDR, so connections left in TIME_WAIT do not block a restart.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// The peak resident set of a process in KiB, from `/proc/PID/status` (Linux).
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl EngineProc {
    pub fn new(name: &'static str, bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            port: free_port()?,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            child: None,
            peak_kib: 0,
            starts: 0,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// Starts `provisio serve` and waits until `/healthz` answers (bounded).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(log, "---- start {} ----", self.starts + 1)?;
        let child = Command::new(&self.bin)
            .args(["serve", "--config", "chaos.toml", "--listen"])
            .arg(format!("127.0.0.1:{}", self.port))
            .current_dir(&self.dir)
            .env_remove("PROVISIO_DATABASE_URL")
            .env("PROVISIO_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = http
                .get(format!("{}/healthz", self.base_url()))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    self.child = None;
                    bail!(
                        "engine {} exited with {status} while starting; see {}",
                        self.name,
                        self.log_path().display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("engine {} did not answer /healthz within 90 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads the running process's peak memory into `peak_kib`.
    pub fn sample(&mut self) {
        if let Some(kib) = self.child.as_ref().and_then(|c| vm_hwm_kib(c.id())) {
            self.peak_kib = self.peak_kib.max(kib);
        }
    }

    /// Sends `signal` (`KILL` or `TERM`) and waits for the process to end. A process still
    /// there after `term_wait` (draining too long) is killed; returns whether that was needed.
    pub async fn stop(&mut self, signal: &str, term_wait: Duration) -> anyhow::Result<bool> {
        self.sample();
        let Some(mut child) = self.child.take() else {
            return Ok(false);
        };
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .context("running kill")?;
        if !sent.success() {
            bail!("kill -{signal} {} failed", child.id());
        }
        let deadline = Instant::now() + term_wait;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(false);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}
