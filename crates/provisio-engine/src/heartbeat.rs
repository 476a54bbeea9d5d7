//! The heartbeats of a process's loops, for readiness: each loop registers when it starts,
//! beats once per iteration, and is marked stopped when it ends (its [`Pulse`] drops).
//! A loop is late when it has not beaten for twice its usual gap plus a grace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Extra time a loop gets past twice its gap before it counts as late: a slow database
/// turn is not a stalled loop.
pub const GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Beat {
    last: Instant,
    gap: Duration,
    stopped: bool,
}

/// The loops of one engine and when each last completed an iteration.
#[derive(Default, Clone)]
pub struct Heartbeats {
    loops: Arc<Mutex<BTreeMap<&'static str, Beat>>>,
}

/// What is wrong with one loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopProblem {
    pub name: &'static str,
    pub problem: String,
}

/// A loop's handle on its heartbeat; dropping it marks the loop stopped.
pub struct Pulse {
    loops: Arc<Mutex<BTreeMap<&'static str, Beat>>>,
    name: &'static str,
}

impl Pulse {
    /// The loop completed an iteration.
    pub fn beat(&self) {
        if let Some(b) = self.loops.lock().unwrap().get_mut(self.name) {
            b.last = Instant::now();
        }
    }
}

impl Drop for Pulse {
    fn drop(&mut self) {
        if let Some(b) = self.loops.lock().unwrap().get_mut(self.name) {
            b.stopped = true;
        }
    }
}

impl Heartbeats {
    /// Registers the loop `name`, which beats at least every `gap` while healthy.
    pub fn register(&self, name: &'static str, gap: Duration) -> Pulse {
        self.loops.lock().unwrap().insert(
            name,
            Beat {
                last: Instant::now(),
                gap,
                stopped: false,
            },
        );
        Pulse {
            loops: self.loops.clone(),
            name,
        }
    }

    /// Every registered loop and how long since it last beat.
    pub fn report(&self, now: Instant) -> Vec<(&'static str, Duration, bool)> {
        self.loops
            .lock()
            .unwrap()
            .iter()
            .map(|(n, b)| (*n, now.saturating_duration_since(b.last), b.stopped))
            .collect()
    }

    /// The loops that stopped or are late at `now`.
    pub fn problems(&self, now: Instant) -> Vec<LoopProblem> {
        self.loops
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(name, b)| {
                let since = now.saturating_duration_since(b.last);
                let allowed = b.gap * 2 + GRACE;
                if b.stopped {
                    Some(LoopProblem {
                        name,
                        problem: "stopped".into(),
                    })
                } else if since > allowed {
                    Some(LoopProblem {
                        name,
                        problem: format!(
                            "no iteration for {} s (allowed {} s)",
                            since.as_secs(),
                            allowed.as_secs()
                        ),
                    })
                } else {
                    None
                }
            })
            .collect()
    }
}

/// What readiness found: every check's name with its problem, when it has one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// `(check, problem)` for every check that failed.
    pub problems: Vec<(String, String)>,
    /// Every loop this process runs, with seconds since its last iteration.
    pub loops: Vec<(String, u64)>,
}

impl crate::Engine {
    /// The loops' heartbeats of this process.
    pub fn heartbeats(&self) -> &Heartbeats {
        &self.heartbeats
    }

    /// Whether this process can do its work: the database answers and is migrated, this
    /// node holds the database's current secret key, and every loop it started completed
    /// an iteration recently.
    pub async fn readiness(&self) -> Readiness {
        let mut problems = Vec::new();
        match self.store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => {
                match crate::secret_keys::follow(self.store.as_ref(), &self.cipher).await {
                    Ok((_, false)) => {}
                    Ok((_, true)) => problems.push((
                        "secret_key".into(),
                        "the database's current secret key is not in this node's key file".into(),
                    )),
                    Err(e) => problems.push(("secret_key".into(), format!("checking failed: {e}"))),
                }
            }
            Ok(pending) => problems.push((
                "database".into(),
                format!("migrations not applied: {pending:?}"),
            )),
            Err(e) => problems.push(("database".into(), format!("does not answer: {e}"))),
        }
        let now = Instant::now();
        for p in self.heartbeats.problems(now) {
            problems.push((format!("loop:{}", p.name), p.problem));
        }
        let loops = self
            .heartbeats
            .report(now)
            .into_iter()
            .map(|(n, since, _)| (n.to_string(), since.as_secs()))
            .collect();
        Readiness {
            ready: problems.is_empty(),
            problems,
            loops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_late_past_twice_its_gap_and_the_grace_and_stopped_once_dropped() {
        let hb = Heartbeats::default();
        let start = Instant::now();
        let worker = hb.register("worker", Duration::from_secs(1));
        let _clock = hb.register("clock", Duration::from_secs(30));
        assert!(hb.problems(start).is_empty());
        // 40 s on: the worker (allowed 32 s) is late, the clock (allowed 90 s) is not.
        let later = start + Duration::from_secs(40);
        let p = hb.problems(later);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].name, "worker");
        assert!(p[0].problem.starts_with("no iteration for"), "{p:?}");
        drop(worker);
        let p = hb.problems(Instant::now());
        assert_eq!(
            p,
            vec![LoopProblem {
                name: "worker",
                problem: "stopped".into()
            }]
        );
    }

    #[test]
    fn a_beat_makes_a_late_loop_current_again() {
        let hb = Heartbeats::default();
        let pulse = hb.register("rules", Duration::from_millis(1));
        let later = Instant::now() + Duration::from_secs(31);
        assert_eq!(hb.problems(later).len(), 1);
        std::thread::sleep(Duration::from_millis(5));
        pulse.beat();
        // A beat moves `last` forward by the time slept: measured from it, not from start.
        let report = hb.report(Instant::now());
        assert!(report[0].1 < Duration::from_secs(1), "{report:?}");
    }
}
