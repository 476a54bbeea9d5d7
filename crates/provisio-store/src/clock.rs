//! The one clock of a node: its local time corrected by the measured offset of the
//! database's clock, so that every node sharing a database reads leases and due times on
//! the database's time, whatever its own clock says.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

/// Offsets up to this are the round trip's noise, not a clock worth a warning.
pub const WARN_OFFSET: Duration = Duration::seconds(1);

/// The time a store stamps and compares with: the local clock plus the database's offset
/// from it, measured at connect and again by [`crate::Store::sync_clock`]. Clones share the
/// offset.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Added to the system clock: non-zero only where a test plays a node whose clock is off.
    local_skew: Duration,
    /// Off only where a test shows what an uncorrected node would do.
    corrects: bool,
    /// The database's clock minus the local one, in microseconds.
    offset_micros: AtomicI64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system clock, corrected once measured.
    pub fn system() -> Self {
        Self::skewed(Duration::zero())
    }

    /// A local clock `skew` ahead of the system's (behind when negative), as on a node whose
    /// clock is off: for tests of nodes that disagree. It is corrected like any other.
    pub fn skewed(skew: Duration) -> Self {
        Self(Arc::new(Inner {
            local_skew: skew,
            corrects: true,
            offset_micros: AtomicI64::new(0),
        }))
    }

    /// The same local clock, never corrected: measurements are taken but not applied. Only
    /// for tests that show the hazard the correction removes.
    pub fn uncorrected(self) -> Self {
        Self(Arc::new(Inner {
            local_skew: self.0.local_skew,
            corrects: false,
            offset_micros: AtomicI64::new(0),
        }))
    }

    /// This node's own idea of the time.
    pub fn local_now(&self) -> DateTime<Utc> {
        self.local_at(system_now())
    }

    /// What this node's clock reads when the system's reads `system`.
    pub(crate) fn local_at(&self, system: DateTime<Utc>) -> DateTime<Utc> {
        system + self.0.local_skew
    }

    /// The database's time as this node best knows it.
    pub fn now(&self) -> DateTime<Utc> {
        self.local_now() + self.offset()
    }

    /// The correction applied: the database's clock minus the local one.
    pub fn offset(&self) -> Duration {
        Duration::microseconds(self.0.offset_micros.load(Ordering::Relaxed))
    }

    /// Applies a measured offset (unless this clock is [`Clock::uncorrected`]).
    pub(crate) fn set_offset(&self, offset: Duration) {
        if self.0.corrects {
            let micros = offset.num_microseconds().unwrap_or(0);
            self.0.offset_micros.store(micros, Ordering::Relaxed);
        }
    }
}

/// The machine's clock, which is also a local SQLite file's.
#[allow(clippy::disallowed_methods)] // The one reading of the system clock.
pub(crate) fn system_now() -> DateTime<Utc> {
    Utc::now()
}

/// One reading of the database's clock between two readings of the local one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub sent: DateTime<Utc>,
    pub database: DateTime<Utc>,
    pub received: DateTime<Utc>,
}

impl Sample {
    fn round_trip(&self) -> Duration {
        self.received - self.sent
    }
}

/// The database's clock minus the local one, from the sample with the shortest round trip
/// (the least room for error): the database read its clock somewhere between sending and
/// receiving, so the midpoint is off by at most half that round trip. `None` without a
/// usable sample (a local clock that went backwards during one).
pub fn offset_from(samples: &[Sample]) -> Option<Duration> {
    let best = samples
        .iter()
        .filter(|s| s.round_trip() >= Duration::zero())
        .min_by_key(|s| s.round_trip())?;
    let midpoint = best.sent + best.round_trip() / 2;
    Some(best.database - midpoint)
}

/// Warns when this node's clock is more than [`WARN_OFFSET`] off the database's: harmless
/// for leases (they follow the database's clock), but worth a look at the node's time sync.
pub fn warn_if_off(offset: Duration) {
    if offset.abs() > WARN_OFFSET {
        let secs = offset.num_milliseconds() as f64 / 1000.0;
        // The offset is the database's minus ours: negative means this node runs ahead.
        let (by, way) = if secs < 0.0 {
            (-secs, "ahead of")
        } else {
            (secs, "behind")
        };
        tracing::warn!(
            offset_seconds = secs,
            "this node's clock is {by:.1} s {way} the database's; leases and due times follow the database's clock"
        );
    }
}

/// Readings per measurement: the shortest of a few round trips is usually a quiet one.
pub(crate) const SAMPLES: usize = 3;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests compare with the system clock.
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn the_offset_is_taken_at_the_midpoint_of_the_quickest_round_trip() {
        let samples = [
            // Slow: 400 ms round trip, midpoint 200; read 90 s later.
            Sample {
                sent: at(0),
                database: at(90_300),
                received: at(400),
            },
            // Quick: 10 ms round trip, midpoint 1005; read 90.005 s ahead of it.
            Sample {
                sent: at(1000),
                database: at(91_010),
                received: at(1010),
            },
        ];
        assert_eq!(offset_from(&samples), Some(Duration::milliseconds(90_005)));
        let behind = [Sample {
            sent: at(0),
            database: at(-89_990),
            received: at(20),
        }];
        assert_eq!(offset_from(&behind), Some(Duration::milliseconds(-90_000)));
    }

    #[test]
    fn a_local_clock_going_backwards_gives_no_offset() {
        let samples = [Sample {
            sent: at(50),
            database: at(10),
            received: at(0),
        }];
        assert_eq!(offset_from(&samples), None);
        assert_eq!(offset_from(&[]), None);
    }

    #[test]
    fn a_skewed_clock_is_corrected_by_its_offset_unless_told_not_to() {
        let ahead = Clock::skewed(Duration::seconds(90));
        let drift = (ahead.local_now() - Utc::now() - Duration::seconds(90)).abs();
        assert!(drift < Duration::seconds(1), "{drift}");
        ahead.set_offset(Duration::seconds(-90));
        assert!((ahead.now() - Utc::now()).abs() < Duration::seconds(1));
        // Clones share the correction.
        assert_eq!(ahead.clone().offset(), Duration::seconds(-90));

        let raw = Clock::skewed(Duration::seconds(90)).uncorrected();
        raw.set_offset(Duration::seconds(-90));
        assert_eq!(raw.offset(), Duration::zero());
        assert!(raw.now() - Utc::now() > Duration::seconds(89));
    }
}
