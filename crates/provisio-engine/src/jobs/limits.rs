//! Per-server limits a worker keeps in memory: a token bucket for actions per second and a
//! circuit breaker that stops sending to a server after repeated transient failures.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use provisio_core::ServerId;

/// How the breaker behaves.
#[derive(Debug, Clone)]
pub struct BreakerOptions {
    /// Consecutive transient failures that open the breaker.
    pub failures_to_open: u32,
    /// How long it stays open before one probe is let through.
    pub open_for: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is out; its outcome closes or re-opens the breaker.
    Probing,
}

#[derive(Debug)]
struct ServerLimit {
    rate: Option<u32>,
    tokens: f64,
    refilled: Instant,
    failures: u32,
    breaker: BreakerState,
    /// A moving mean of the server's call times, in seconds (`None` before the first).
    call_secs: Option<f64>,
}

/// Limits for every server this worker sends to.
#[derive(Debug, Default)]
pub struct Limits {
    servers: HashMap<ServerId, ServerLimit>,
    options: BreakerOptions,
}

impl BreakerState {
    /// The name the console shows and the store keeps: `closed`, `open`, `half-open`.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::Probing => "half-open",
        }
    }
}

impl Limits {
    pub fn new(options: BreakerOptions) -> Self {
        Self {
            servers: HashMap::new(),
            options,
        }
    }

    fn entry(&mut self, server: ServerId, now: Instant) -> &mut ServerLimit {
        self.servers.entry(server).or_insert(ServerLimit {
            rate: None,
            tokens: 0.0,
            refilled: now,
            failures: 0,
            breaker: BreakerState::Closed,
            call_secs: None,
        })
    }

    /// Records how long one call to the server took.
    pub fn took(&mut self, server: ServerId, call: std::time::Duration, now: Instant) {
        let l = self.entry(server, now);
        let t = call.as_secs_f64();
        l.call_secs = Some(l.call_secs.map_or(t, |m| m + (t - m) / 16.0));
    }

    /// The servers worth holding `n` jobs ahead for: those nothing but `max_concurrent`
    /// limits (no rate, breaker closed) whose calls take at least `min_call` on average.
    /// Below that a claim (a millisecond or a few) is no small part of a call, and the
    /// places a finished call frees are as quickly refilled by the next claim.
    pub fn standby(&self, n: u32, min_call: std::time::Duration) -> HashMap<ServerId, u32> {
        if n == 0 {
            return HashMap::new();
        }
        self.servers
            .iter()
            .filter(|(_, l)| {
                l.rate.is_none()
                    && l.breaker == BreakerState::Closed
                    && l.call_secs.is_some_and(|m| m >= min_call.as_secs_f64())
            })
            .map(|(id, _)| (*id, n))
            .collect()
    }

    /// Sets a server's rate (actions per second; `None` is unlimited).
    pub fn configure(&mut self, server: ServerId, rate: Option<u32>, now: Instant) {
        let e = self.entry(server, now);
        if e.rate != rate {
            e.tokens = rate.map(f64::from).unwrap_or(0.0);
        }
        e.rate = rate;
    }

    /// Whether the server's rate has been configured (or seen) yet.
    pub fn knows(&self, server: ServerId) -> bool {
        self.servers.contains_key(&server)
    }

    fn refill(l: &mut ServerLimit, now: Instant) {
        if let Some(rate) = l.rate {
            let elapsed = now.saturating_duration_since(l.refilled).as_secs_f64();
            // A burst of at most one second's worth keeps the average honest.
            l.tokens = (l.tokens + elapsed * f64::from(rate)).min(f64::from(rate.max(1)));
        }
        l.refilled = now;
    }

    /// What this worker may start now per server, for servers it limits at all.
    pub fn allowance(&mut self, now: Instant) -> HashMap<ServerId, u32> {
        let mut out = HashMap::new();
        for (id, l) in self.servers.iter_mut() {
            Self::refill(l, now);
            let by_breaker = match l.breaker {
                BreakerState::Closed => None,
                BreakerState::Open { until } if now >= until => Some(1),
                BreakerState::Open { .. } | BreakerState::Probing => Some(0),
            };
            let by_rate = l.rate.map(|_| l.tokens.floor().max(0.0) as u32);
            let cap = match (by_breaker, by_rate) {
                (Some(b), Some(r)) => Some(b.min(r)),
                (Some(b), None) => Some(b),
                (None, r) => r,
            };
            if let Some(c) = cap {
                out.insert(*id, c);
            }
        }
        out
    }

    /// The servers whose `max_per_second` allows no start now (after [`Limits::allowance`]
    /// refilled them): their claims are being held back.
    pub fn rate_exhausted(&self) -> Vec<ServerId> {
        self.servers
            .iter()
            .filter(|(_, l)| l.rate.is_some() && l.tokens < 1.0)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Records that an action was started on `server`; returns the breaker's new state when
    /// this start is an open breaker's probe.
    pub fn started(&mut self, server: ServerId, now: Instant) -> Option<BreakerState> {
        let l = self.entry(server, now);
        Self::refill(l, now);
        if l.rate.is_some() {
            l.tokens -= 1.0;
        }
        if let BreakerState::Open { until } = l.breaker {
            if now >= until {
                l.breaker = BreakerState::Probing;
                return Some(l.breaker);
            }
        }
        None
    }

    /// Records the outcome of an action: `true` for success or a permanent error (the server
    /// answered), `false` for a transient or unknown failure.
    pub fn finished(
        &mut self,
        server: ServerId,
        healthy: bool,
        now: Instant,
    ) -> Option<BreakerState> {
        let open_for = self.options.open_for;
        let to_open = self.options.failures_to_open;
        let l = self.entry(server, now);
        let before = l.breaker;
        if healthy {
            l.failures = 0;
            l.breaker = BreakerState::Closed;
        } else {
            l.failures += 1;
            if l.breaker == BreakerState::Probing || l.failures >= to_open {
                l.breaker = BreakerState::Open {
                    until: now + open_for,
                };
            }
        }
        (before != l.breaker).then_some(l.breaker)
    }

    pub fn state(&self, server: ServerId) -> Option<BreakerState> {
        self.servers.get(&server).map(|l| l.breaker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_tokens_refill_per_second() {
        let t0 = Instant::now();
        let mut l = Limits::default();
        let s = ServerId(1);
        l.configure(s, Some(10), t0);
        assert_eq!(l.allowance(t0)[&s], 10);
        for _ in 0..10 {
            l.started(s, t0);
        }
        assert_eq!(l.allowance(t0)[&s], 0);
        assert_eq!(l.allowance(t0 + Duration::from_millis(500))[&s], 5);
        // Unlimited servers are not in the allowance map.
        l.configure(ServerId(2), None, t0);
        assert!(!l.allowance(t0).contains_key(&ServerId(2)));
    }

    #[test]
    fn standby_only_for_slow_servers_without_rate_or_open_breaker() {
        let t0 = Instant::now();
        let mut l = Limits::new(BreakerOptions {
            failures_to_open: 1,
            open_for: Duration::from_secs(10),
        });
        let (slow, quick, rated, broken) = (ServerId(1), ServerId(2), ServerId(3), ServerId(4));
        for s in [slow, quick, rated, broken] {
            l.configure(s, None, t0);
        }
        l.configure(rated, Some(100), t0);
        let min = Duration::from_millis(5);
        assert!(l.standby(8, min).is_empty(), "no call seen yet");
        for _ in 0..20 {
            l.took(slow, Duration::from_millis(50), t0);
            l.took(quick, Duration::from_micros(300), t0);
            l.took(rated, Duration::from_millis(50), t0);
            l.took(broken, Duration::from_millis(50), t0);
        }
        l.finished(broken, false, t0);
        assert_eq!(l.standby(8, min), HashMap::from([(slow, 8)]));
        assert!(l.standby(0, min).is_empty(), "0 turns it off");
        // The mean follows the calls: a server that became quick loses its standby.
        for _ in 0..100 {
            l.took(slow, Duration::from_millis(1), t0);
        }
        assert!(l.standby(8, min).is_empty());
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let t0 = Instant::now();
        let mut l = Limits::new(BreakerOptions {
            failures_to_open: 3,
            open_for: Duration::from_secs(10),
        });
        let s = ServerId(1);
        l.configure(s, None, t0);
        for _ in 0..2 {
            l.finished(s, false, t0);
        }
        assert!(!l.allowance(t0).contains_key(&s), "still closed");
        l.finished(s, false, t0);
        assert_eq!(l.allowance(t0)[&s], 0, "open");
        let later = t0 + Duration::from_secs(11);
        assert_eq!(l.allowance(later)[&s], 1, "one probe");
        assert_eq!(l.started(s, later), Some(BreakerState::Probing));
        assert_eq!(l.state(s), Some(BreakerState::Probing));
        assert_eq!(l.allowance(later)[&s], 0, "only one probe");
        l.finished(s, false, later);
        assert!(
            matches!(l.state(s), Some(BreakerState::Open { .. })),
            "a failed probe re-opens"
        );
        let later = later + Duration::from_secs(11);
        l.started(s, later);
        assert_eq!(l.finished(s, true, later), Some(BreakerState::Closed));
        assert_eq!(l.state(s), Some(BreakerState::Closed));
    }
}
