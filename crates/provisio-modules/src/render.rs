//! Bounded minijinja rendering, shared by the `http` module and email handlers: every render
//! has a fuel budget and an output cap, and runs on the blocking pool, so a template that
//! does too much work fails with a clear error instead of stalling the async workers.

use std::sync::{Arc, OnceLock};

use minijinja::{Environment, ErrorKind, Template};
use serde::Serialize;
use tokio::sync::Semaphore;

/// Instructions one render may execute. Real provisioning templates take a few hundred to a
/// few thousand; a loop over a few thousand items still fits.
pub const DEFAULT_FUEL: u64 = 200_000;

/// Bytes one render may write.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// The detail of the error a capped render fails with; never shown as is.
const OUTPUT_TOO_LARGE: &str = "the template output is too large";

/// How much work and output one render may take (`[templates]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// minijinja fuel: roughly the number of instructions one render may execute.
    pub fuel: u64,
    pub max_output_bytes: usize,
}

impl Default for TemplateLimits {
    fn default() -> Self {
        Self {
            fuel: DEFAULT_FUEL,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

impl TemplateLimits {
    /// Gives `env` the fuel budget (per render: minijinja refills it for each one).
    pub fn apply(&self, env: &mut Environment<'_>) {
        env.set_fuel(Some(self.fuel.max(1)));
    }

    /// The message for an error that one of the limits caused, `None` for any other error.
    /// It names the limit, never anything the template produced.
    pub fn message(&self, e: &minijinja::Error) -> Option<String> {
        if e.kind() == ErrorKind::OutOfFuel {
            return Some(format!(
                "the template ran out of fuel: it does too much work (limit {})",
                self.fuel
            ));
        }
        (e.detail() == Some(OUTPUT_TOO_LARGE)).then(|| {
            format!(
                "the template's output exceeds {} bytes",
                self.max_output_bytes
            )
        })
    }

    /// Renders `template`, stopping as soon as the output passes `max_output_bytes`.
    pub fn render<S: Serialize>(
        &self,
        template: &Template<'_, '_>,
        ctx: S,
    ) -> Result<String, minijinja::Error> {
        let mut out = Capped {
            buf: Vec::new(),
            max: self.max_output_bytes,
            over: false,
        };
        match template.render_captured_to(ctx, &mut out) {
            // Templates write whole `str`s, so the bytes are UTF-8.
            Ok(_) => Ok(String::from_utf8_lossy(&out.buf).into_owned()),
            Err(_) if out.over => Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                OUTPUT_TOO_LARGE,
            )),
            Err(e) => Err(e),
        }
    }
}

struct Capped {
    buf: Vec<u8>,
    max: usize,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            self.over = true;
            return Err(std::io::Error::other(OUTPUT_TOO_LARGE));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders at once: at most one per core, so a burst of heavy templates cannot take every
/// core from the API and the loops.
fn renders() -> Arc<Semaphore> {
    static RENDERS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    RENDERS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Arc::new(Semaphore::new(cores.max(1)))
        })
        .clone()
}

/// Runs `work` (rendering, parsing a large answer) on the blocking pool. A panic inside is
/// resumed here, so callers' panic guards treat it as before. The permit travels with the
/// work: a caller that gives up waiting does not free a slot while the render still runs.
pub async fn off_runtime<T, F>(work: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let permit = renders()
        .acquire_owned()
        .await
        .map_err(|_| "the renderer is shut down".to_string())?;
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    });
    match task.await {
        Ok(value) => Ok(value),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err("the render was cancelled: the process is stopping".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(limits: &TemplateLimits) -> Environment<'static> {
        let mut env = Environment::new();
        limits.apply(&mut env);
        env
    }

    #[test]
    fn a_loop_bomb_runs_out_of_fuel_quickly() {
        let limits = TemplateLimits::default();
        let env = env(&limits);
        let t = env
            .template_from_str(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            )
            .unwrap();
        let started = std::time::Instant::now();
        let e = limits.render(&t, ()).unwrap_err();
        let took = started.elapsed();
        eprintln!("bomb stopped after {took:?}");
        assert_eq!(
            limits.message(&e).as_deref(),
            Some("the template ran out of fuel: it does too much work (limit 200000)")
        );
        assert!(took < std::time::Duration::from_secs(1), "{took:?}");
        // An ordinary loop fits.
        let t = env
            .template_from_str("{% for i in range(2000) %}{{ i }},{% endfor %}")
            .unwrap();
        assert!(limits.render(&t, ()).unwrap().starts_with("0,1,2,"));
    }

    #[test]
    fn output_is_capped() {
        let limits = TemplateLimits {
            max_output_bytes: 1000,
            ..TemplateLimits::default()
        };
        let env = env(&limits);
        let t = env
            .template_from_str("{% for i in range(200) %}{{ 'abcdefgh' }}{% endfor %}")
            .unwrap();
        let e = limits.render(&t, ()).unwrap_err();
        assert_eq!(
            limits.message(&e).as_deref(),
            Some("the template's output exceeds 1000 bytes")
        );
        let t = env.template_from_str("{{ 'é' * 500 }}").unwrap();
        assert_eq!(limits.render(&t, ()).unwrap().len(), 1000);
    }

    #[tokio::test]
    async fn off_runtime_returns_and_resumes_panics() {
        assert_eq!(off_runtime(|| 6 * 7).await.unwrap(), 42);
        let caught = tokio::spawn(off_runtime(|| -> u8 { panic!("boom") })).await;
        assert!(caught.unwrap_err().is_panic());
    }
}
